"""The measured_* rules: captions held against the segment's measurements. Plain statements that
contradict confident measurements fail; negations, hedges, comparisons and changes do not; and the
false-flag and catch rates on hand-written true and false captions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from annotate.captioner import AcousticCaptioner, AcousticCaptionerConfig
from annotate.tags import StyleTags, TagBins
from verify.measured import ClaimReader, MeasuredChecks, MeasuredChecksConfig
from verify.rules import RulesVerifier, RulesVerifierConfig

READER = ClaimReader()
MEASURED = ("measured_gender", "measured_pitch", "measured_rate", "measured_loudness")


def row(gender: str, source: str, confidence: float, hz: float, rate: float, alpha: float) -> dict:
    """A segment's measurement columns and tags as the measure stage writes them (default bins)."""
    bins = TagBins()
    low, high = bins.pitch_hz(gender)  # type: ignore[arg-type]
    pitch = "low" if hz < low else "high" if hz > high else "medium"
    speed = "slow" if rate < 3.5 else "fast" if rate > 5.5 else "measured"
    effort = "soft" if alpha < -13.6 else "loud" if alpha > -10.1 else "moderate"
    tags = StyleTags(gender, source, pitch, "moderate", speed, effort, "modal")  # type: ignore[arg-type]
    return {
        "tags": tags.as_row(),
        "gender_confidence": confidence,
        "pitch_median_hz": hz,
        "articulation_rate_sps": rate,
        "alpha_ratio_db": alpha,
    }


# A high, fast, loud woman (gender given); a low, slow, soft man (estimated, sure); an ordinary voice
# of unknown gender.
WOMAN = row("female", "given", 1.0, 265.0, 6.3, -7.0)
MAN = row("male", "estimated", 0.99, 92.0, 2.9, -16.0)
UNKNOWN = row("unknown", "estimated", 0.7, 170.0, 4.5, -12.0)


def measured_failures(text: str, measurements: dict, config: RulesVerifierConfig | None = None) -> list[str]:
    verifier = RulesVerifier(config or RulesVerifierConfig(checks=list(MEASURED)))
    return verifier.verdict({"text": text, "granularity": "fine"}, None, measurements)["failed_checks"]


# --- reading claims -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "attribute", "level"),
    [
        ("A deep male voice.", "gender", "male"),
        ("She speaks clearly.", "gender", "female"),
        ("A deep male voice.", "pitch", "low"),
        ("The pitch is high, a high-pitched and bright voice.", "pitch", "high"),
        ("He talks rapidly.", "rate", "fast"),
        ("The words come slowly and quietly.", "rate", "slow"),
        ("The words come slowly and quietly.", "loudness", "soft"),
        ("She is shouting.", "loudness", "loud"),
    ],
)
def test_plain_statements_are_claims(text, attribute, level):
    assert READER.claims(text, attribute) == level


@pytest.mark.parametrize(
    ("text", "attribute"),
    [
        ("The pace starts slow, then speeds up.", "rate"),
        ("The delivery is not particularly fast.", "rate"),
        ("It isn't loud.", "loudness"),
        ("The voice is slightly higher than average, but the pitch is never shrill.", "pitch"),
        ("A voice neither deep nor high in pitch.", "pitch"),
        ("Speech that is somewhat slow.", "rate"),
        ("It is a bit quiet.", "loudness"),
        ("The tempo becomes rapid toward the end.", "rate"),
        ("The voice is lower than a typical low voice.", "pitch"),
        ("It alternates between fast and slow phrases.", "rate"),
        ("Fast in some phrases and slow in others.", "rate"),  # both extremes stated
        ("Fast at first, slow later on, and very slow by the end.", "rate"),
        ("The speaker may be a man.", "gender"),
        ("The intonation swings widely between high and low points.", "pitch"),  # not pitch level words
        ("This theme, then manner and the human touch.", "gender"),  # his, he, man inside other words
        ("It is soft-edged and full of breath.", "loudness"),
    ],
)
def test_negated_hedged_compared_changing_or_contrasting_mentions_are_not_claims(text, attribute):
    assert READER.claims(text, attribute) is None


# --- the rules ------------------------------------------------------------------------------------


def test_a_deep_male_voice_fails_for_a_high_female_speaker():
    text = "A deep male voice speaks."
    assert measured_failures(text, WOMAN) == ["measured_gender", "measured_pitch"]
    verdict = RulesVerifier(RulesVerifierConfig(checks=list(MEASURED))).verdict(
        {"text": text, "granularity": "fine"}, None, WOMAN
    )
    assert verdict["reasons"] == [
        "says male, the speaker is female (given)",
        "says low pitch, measured median F0 265 Hz (low below 193 Hz, high above 231 Hz for a woman)",
    ]


def test_rapid_fails_for_a_clearly_slow_speaker_and_soft_for_a_loud_one():
    assert measured_failures("He talks rapidly.", MAN) == ["measured_rate"]
    assert measured_failures("She speaks softly.", WOMAN) == ["measured_loudness"]
    verdict = RulesVerifier(RulesVerifierConfig(checks=["measured_rate"])).verdict(
        {"text": "He talks rapidly.", "granularity": "fine"}, None, MAN
    )
    assert verdict["reasons"] == [
        "says fast, measured articulation_rate_sps 2.90 (slow below 3.5, fast above 5.5 syllables/s)"
    ]


def test_an_unknown_or_unsure_gender_and_a_middle_bin_never_fail():
    assert measured_failures("A man speaks quickly and loudly in a deep voice.", UNKNOWN) == []
    unsure = {**MAN, "gender_confidence": 0.8}  # tagged male but below gender_min_confidence (0.9)
    assert measured_failures("A woman speaks.", unsure) == []
    assert measured_failures("A woman speaks.", MAN) == ["measured_gender"]


def test_no_measurements_no_failure():
    assert measured_failures("A deep male voice shouts rapidly.", {}) == []
    no_pitch = {**WOMAN, "pitch_median_hz": None}
    assert measured_failures("A deep voice.", no_pitch) == []


def test_a_contradiction_must_clear_the_margin_beyond_the_bin_edge():
    just_slow = {**MAN, "articulation_rate_sps": 3.3}  # slow (< 3.5) but within the 0.3 margin
    assert measured_failures("He talks rapidly.", just_slow) == []
    assert measured_failures("He talks rapidly.", {**MAN, "articulation_rate_sps": 3.1}) == ["measured_rate"]
    just_low = {**MAN, "pitch_median_hz": 104.0}  # low for a man (< 108 Hz) but within one semitone
    assert measured_failures("A high-pitched voice.", just_low) == []
    assert measured_failures("A high-pitched voice.", {**MAN, "pitch_median_hz": 100.0}) == ["measured_pitch"]
    zero_margin = RulesVerifierConfig(
        checks=list(MEASURED), measured=MeasuredChecksConfig(rate_margin_sps=0, pitch_margin_st=0)
    )
    assert measured_failures("He talks rapidly.", just_slow, zero_margin) == ["measured_rate"]
    assert measured_failures("A high-pitched voice.", just_low, zero_margin) == ["measured_pitch"]


def test_pitch_edges_follow_the_bins_given_to_the_verifier():
    wide = MeasuredChecks(MeasuredChecksConfig(pitch_margin_st=0), TagBins(female_pitch_hz=(150.0, 300.0)))
    assert wide.pitch("A deep voice.", WOMAN) is None  # 265 Hz is medium in these bins
    assert MeasuredChecks(MeasuredChecksConfig(pitch_margin_st=0), TagBins()).pitch("A deep voice.", WOMAN)


def test_config_bounds():
    with pytest.raises(ValidationError):
        MeasuredChecksConfig(gender_min_confidence=0.3)
    with pytest.raises(ValidationError):
        MeasuredChecksConfig(rate_margin_sps=-1)
    with pytest.raises(ValidationError):
        RulesVerifierConfig(measured={"margin": 1})


# --- hand-written true and false captions ----------------------------------------------------------

TRUE_CAPTIONS = [
    (WOMAN, "A woman speaks quickly and loudly in a high-pitched voice."),
    (WOMAN, "Her bright, high voice races along; she is nearly shouting, fast and forceful."),
    (WOMAN, "The speaker starts slow, then speeds up, never soft, and slightly higher than average."),
    (WOMAN, "A female speaker delivers the line at a brisk tempo, with a shrill edge and a loud voice."),
    (WOMAN, "Not particularly deep, not slow either: a lively woman, emphatic and rapid."),
    (MAN, "A man with a deep, low-pitched voice speaks slowly and softly."),
    (MAN, "His voice is quiet and unhurried, a bass murmur drawn out over each word."),
    (MAN, "The male speaker is not loud at all and hardly fast, with a low voice."),
    (MAN, "He sounds calm; the tempo is leisurely, though it becomes quicker toward the end."),
    (MAN, "A soft-spoken man, slower than average, deep in tone."),
    (UNKNOWN, "The speaker talks at an ordinary pace in a mid-range voice."),
    (UNKNOWN, "A man speaks quickly and loudly in a deep voice."),  # nothing measured is sure enough
    (UNKNOWN, "A woman with a high-pitched voice speaks softly and slowly."),
]
FALSE_CAPTIONS = [
    (WOMAN, "A man speaks.", {"measured_gender"}),
    (WOMAN, "A deep male voice speaks slowly.", {"measured_gender", "measured_pitch", "measured_rate"}),
    (
        WOMAN,
        "She speaks softly and slowly in a low voice.",
        {"measured_loudness", "measured_rate", "measured_pitch"},
    ),
    (WOMAN, "The speaker whispers quietly, unhurried and gentle.", {"measured_loudness", "measured_rate"}),
    (WOMAN, "He talks at a sluggish pace.", {"measured_gender", "measured_rate"}),
    (MAN, "A woman speaks.", {"measured_gender"}),
    (MAN, "A high-pitched, squeaky voice.", {"measured_pitch"}),
    (MAN, "He is shouting rapidly.", {"measured_loudness", "measured_rate"}),
    (MAN, "Her voice is loud and forceful.", {"measured_gender", "measured_loudness"}),
    (
        MAN,
        "A hurried, booming delivery from a girl.",
        {"measured_rate", "measured_loudness", "measured_gender"},
    ),
]


def test_true_captions_pass_and_false_ones_fail_on_exactly_the_contradicted_attributes():
    false_flags = [(text, failed) for m, text in TRUE_CAPTIONS if (failed := measured_failures(text, m))]
    assert false_flags == []  # false-flag rate 0 / 13
    misses = [
        (text, want, set(got))
        for m, text, want in FALSE_CAPTIONS
        if set(got := measured_failures(text, m)) != want
    ]
    assert misses == []  # every contradicted attribute caught, nothing else: 23 / 23


def test_the_acoustic_captions_of_extreme_tags_fail_against_the_opposite_measurements():
    """The rules read what the acoustic captioner writes: its captions of one extreme are caught
    against measurements of the other."""
    captioner = AcousticCaptioner(AcousticCaptionerConfig(views=5))
    woman_tags = StyleTags(**{**WOMAN["tags"], "pitch_variation": "moderate"})
    man_tags = StyleTags(**{**MAN["tags"], "pitch_variation": "moderate"})
    for tags, opposite in ((woman_tags, MAN), (man_tags, WOMAN)):
        for caption in captioner.captions("s_000000000_000005000", tags):
            assert set(measured_failures(caption["text"], opposite)) == set(MEASURED), caption["text"]
