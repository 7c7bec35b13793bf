"""The rules verifier: every check fails on a crafted caption with a reason, passes on a clean one;
its config; and the acoustic captioner's whole phrase bank against it, with measurements that agree
with the tags (the measured_* rules have their own tests in test_measured_rules.py)."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from annotate.captioner import AcousticCaptioner, AcousticCaptionerConfig
from annotate.tags import StyleTags, TagBins
from verify.rules import ALL_CHECKS, VERIFIER, RulesVerifier, RulesVerifierConfig

TEXT_CHECKS = [check for check in ALL_CHECKS if not check.startswith("measured_")]

CLEAN_FINE = (
    "The speaker has a low, deep voice and talks at a slow, deliberate pace. The intonation rises and "
    "falls moderately, and the speaker's volume stays gentle, giving a calm and composed impression."
)
CLEAN_GLOBAL = "A low-pitched voice speaks slowly and softly."
CLEAN_TAIL = (
    "The intonation rises and falls moderately, and the speaker's volume stays gentle, giving a calm and "
    "composed impression."
)
TRANSCRIPT = "The library opens at nine every weekday morning, so the reading list grows quickly."


@pytest.fixture(scope="module")
def verifier():
    return RulesVerifier(RulesVerifierConfig())


def fine(text: str) -> dict:
    return {"text": text, "granularity": "fine"}


def padded(phrase: str) -> str:
    """A clean fine caption with `phrase` inserted, long enough for the length check."""
    text = f"The speaker has a low, deep voice and {phrase}. {CLEAN_TAIL}"
    assert len(text) >= 128
    return text


def test_clean_captions_pass_every_check(verifier):
    assert 128 <= len(CLEAN_FINE) <= 768
    for caption in (fine(CLEAN_FINE), {"text": CLEAN_GLOBAL, "granularity": "global"}):
        verdict = verifier.verdict(caption, TRANSCRIPT)
        assert verdict == {"passed": True, "failed_checks": [], "reasons": [], "verifier": VERIFIER}
    assert VERIFIER == "rules/2"


@pytest.mark.parametrize(
    "phrase",
    [
        'says "hello there" warmly',
        "says “hello there” warmly",
        "says „hello there“ warmly",
        "says «hello there» warmly",
        "says 'hello there' warmly",
        "says ‘hello there’ warmly",
    ],
)
def test_quotation_marks_fail_no_quotes(verifier, phrase):
    verdict = verifier.verdict(fine(padded(phrase)))
    assert verdict["passed"] is False
    assert verdict["failed_checks"] == ["no_quotes"]
    assert verdict["reasons"] == ["contains quotation marks"]


@pytest.mark.parametrize("phrase", ["keeps the speaker's tone even", "keeps the speaker’s tone even"])
def test_apostrophes_inside_words_are_not_quotes(verifier, phrase):
    verdict = verifier.verdict(fine(padded(phrase)))
    assert "no_quotes" not in verdict["failed_checks"]


def test_three_transcript_words_in_a_row_fail_no_transcript(verifier):
    caption = fine(padded("mentions that the library opens at nine"))
    verdict = verifier.verdict(caption, TRANSCRIPT)
    assert verdict["failed_checks"] == ["no_transcript"]
    assert verdict["reasons"] == [
        "repeats the transcript: library opens at; opens at nine; the library opens"
    ]


def test_transcript_match_ignores_case_and_punctuation(verifier):
    caption = fine(padded("mentions Weekday, Morning! So opening hours"))
    verdict = verifier.verdict(caption, TRANSCRIPT)
    assert verdict["failed_checks"] == ["no_transcript"]
    assert verdict["reasons"] == ["repeats the transcript: weekday morning so"]


def test_two_transcript_words_or_no_transcript_pass(verifier):
    caption = fine(padded("mentions the library hours"))  # shares "the library" only
    assert verifier.verdict(caption, TRANSCRIPT)["passed"] is True
    quoting = fine(padded("mentions that the library opens at nine"))
    assert verifier.verdict(quoting, None)["passed"] is True
    assert verifier.verdict(quoting, "")["passed"] is True


def test_shared_phrases_of_function_words_are_not_transcript_quotes(verifier):
    transcript = "She left it in the middle of the road and walked on."
    caption = fine(padded("lingers in the middle of each phrase"))
    assert verifier.verdict(caption, transcript)["passed"] is True  # "in the middle" has one content word
    strict = RulesVerifier(RulesVerifierConfig(transcript_min_content_words=1))
    verdict = strict.verdict(caption, transcript)
    assert verdict["failed_checks"] == ["no_transcript"]
    assert verdict["reasons"] == ["repeats the transcript: in the middle; the middle of"]


def test_transcript_ngram_size_is_configurable():
    strict = RulesVerifier(RulesVerifierConfig(transcript_ngram=2, transcript_min_content_words=1))
    caption = fine(padded("mentions the library hours"))
    verdict = strict.verdict(caption, TRANSCRIPT)
    assert verdict["failed_checks"] == ["no_transcript"]
    assert verdict["reasons"] == ["repeats the transcript: the library"]


@pytest.mark.parametrize(
    ("phrase", "found"),
    [
        ("talks over background music", "background, music"),
        ("talks in a noisy room", "noisy, room"),
        ("sounds clear, though the recording quality is poor", "recording"),
        ("sounds close to the microphone with some reverb", "microphone, reverb"),
        ("sounds muffled by Traffic outside", "traffic"),
        ("sounds thin, like low-quality audio", "low-quality"),
    ],
)
def test_setting_and_recording_words_fail_no_background(verifier, phrase, found):
    verdict = verifier.verdict(fine(padded(phrase)))
    assert verdict["failed_checks"] == ["no_background"]
    assert verdict["reasons"] == [f"background or recording words: {found}"]


@pytest.mark.parametrize(
    ("phrase", "found"),
    [
        ("shows no emotion", "no"),
        ("speaks without hesitation", "without"),
        ("speaks, lacking energy", "lacking"),
        ("speaks free from strain", "free from"),
        ("isn't hurried", "isn't"),
        ("does not rush", "not"),
        ("never pauses", "never"),
    ],
)
def test_negations_fail_no_absence(verifier, phrase, found):
    verdict = verifier.verdict(fine(padded(phrase)))
    assert verdict["failed_checks"] == ["no_absence"]
    assert verdict["reasons"] == [f"absence (negation) words: {found}"]


def test_words_containing_negation_letters_pass_no_absence(verifier):
    caption = fine(padded("notes each syllable, noting the nominal knots of nothingness"))
    assert "no_absence" not in verifier.verdict(caption)["failed_checks"]


@pytest.mark.parametrize(
    ("phrase", "found"),
    [
        ("is one of two speakers", "speakers"),
        ("is heard in a conversation", "conversation"),
        ("answers another speaker", "another speaker"),
        ("joins in unison", "in unison"),
    ],
)
def test_several_voices_fail_single_speaker(verifier, phrase, found):
    verdict = verifier.verdict(fine(padded(phrase)))
    assert verdict["failed_checks"] == ["single_speaker"]
    assert verdict["reasons"] == [f"multiple-speaker words: {found}"]


def test_length_bounds_depend_on_granularity(verifier):
    short_fine = fine("A low voice speaks slowly and softly throughout the passage, calm and composed.")
    verdict = verifier.verdict(short_fine)
    assert verdict["failed_checks"] == ["length"]
    assert verdict["reasons"] == [f"{len(short_fine['text'])} characters, below the minimum of 128"]

    long_fine = fine(" ".join([CLEAN_FINE] * 4))
    assert len(long_fine["text"]) > 768
    verdict = verifier.verdict(long_fine)
    assert verdict["failed_checks"] == ["length"]
    assert verdict["reasons"] == [f"{len(long_fine['text'])} characters, above the maximum of 768"]

    tiny_global = {"text": "A voice speaks softly.", "granularity": "global"}
    assert verifier.verdict(tiny_global)["reasons"] == ["22 characters, below the minimum of 32"]
    # The fine bounds do not apply to a global caption, and the global bounds set no maximum.
    assert verifier.verdict({"text": short_fine["text"], "granularity": "global"})["passed"] is True
    assert verifier.verdict({"text": long_fine["text"], "granularity": "global"})["passed"] is True


def test_exact_length_edges(verifier):
    base = CLEAN_FINE[:127]
    assert verifier.verdict(fine(base))["failed_checks"] == ["length"]
    assert "length" not in verifier.verdict(fine(base + "x"))["failed_checks"]
    long_base = (CLEAN_FINE * 5)[:768]
    assert "length" not in verifier.verdict(fine(long_base))["failed_checks"]
    assert "length" in verifier.verdict(fine(long_base + "x"))["failed_checks"]


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\r"])
def test_line_breaks_fail_no_newlines(verifier, brk):
    verdict = verifier.verdict(fine(CLEAN_FINE.replace(". ", "." + brk, 1)))
    assert verdict["failed_checks"] == ["no_newlines"]
    assert verdict["reasons"] == ["contains a line break"]


def test_failed_checks_are_reported_in_check_order(verifier):
    text = 'Two speakers say "hello" over background noise, without pauses.\nShort.'
    verdict = verifier.verdict(fine(text), "they say hello over there")
    assert verdict["failed_checks"] == TEXT_CHECKS  # no measurements: the measured_* checks pass
    assert len(verdict["reasons"]) == 7
    assert verdict["reasons"][1] == "repeats the transcript: say hello over"
    assert verdict["reasons"][2] == "background or recording words: background, noise"
    assert verdict["passed"] is False and verdict["verifier"] == "rules/2"


def test_checks_subset_disables_the_others():
    only_quotes = RulesVerifier(RulesVerifierConfig(checks=["no_quotes"]))
    text = "Two speakers talk over background music.\nShort."
    assert only_quotes.verdict(fine(text), text)["passed"] is True
    assert only_quotes.verdict(fine('He says "hi".'))["failed_checks"] == ["no_quotes"]
    reordered = RulesVerifier(RulesVerifierConfig(checks=["length", "no_background"]))
    assert reordered.verdict(fine(text))["failed_checks"] == ["length", "no_background"]


def test_extra_terms_extend_the_lists():
    plain = RulesVerifier(RulesVerifierConfig())
    extra = RulesVerifier(
        RulesVerifierConfig(
            extra_background_terms=["podcast", "Call Centre"], extra_multi_speaker_terms=["duet"]
        )
    )
    for phrase, check in (
        ("sounds like a podcast host", "no_background"),
        ("sounds like a call centre agent", "no_background"),
        ("sings a duet", "single_speaker"),
    ):
        caption = fine(padded(phrase))
        assert plain.verdict(caption)["passed"] is True
        assert extra.verdict(caption)["failed_checks"] == [check]


def test_unknown_check_id_is_a_validation_error():
    with pytest.raises(ValidationError, match="checks"):
        RulesVerifierConfig(checks=["no_quotes", "no_emoji"])
    with pytest.raises(ValidationError):
        RulesVerifierConfig(transcript_ngram=0)
    with pytest.raises(ValidationError):
        RulesVerifierConfig(colour="red")


def test_call_fills_the_verdict_of_every_caption_with_the_row_transcript(verifier):
    rows = [
        {
            "segment_id": "a",
            "transcript": TRANSCRIPT,
            "captions": [
                {**fine(CLEAN_FINE), "verdict": None},
                {**fine(padded("says that the library opens at nine")), "verdict": None},
            ],
        },
        {"segment_id": "b", "captions": [{"text": CLEAN_GLOBAL, "granularity": "global", "verdict": None}]},
    ]
    out = verifier(rows)
    assert [[c["verdict"]["passed"] for c in row["captions"]] for row in out] == [[True, False], [True]]
    assert out[0]["captions"][1]["verdict"]["failed_checks"] == ["no_transcript"]
    assert rows[0]["captions"][0]["verdict"] is None  # the input rows are not modified


# --- the phrase bank against the verifier ------------------------------------------------------------

GENDER = ("female", "male", "unknown")
PITCH = (None, "low", "medium", "high")
VARIATION = (None, "monotone", "moderate", "expressive")
RATE = (None, "slow", "measured", "fast")
LOUDNESS = (None, "soft", "moderate", "loud")
PHONATION = ("modal", "whispered")
BINS = TagBins()


def every_tag_combination():
    for gender, *combo in itertools.product(GENDER, PITCH, VARIATION, RATE, LOUDNESS, PHONATION):
        yield StyleTags(gender, "estimated", *combo)


def inside(level: str | None, bounds: tuple[float, float], levels: tuple[str, str, str]) -> float | None:
    """A number in the middle of the level's bin (the edges' mean for the middle bin)."""
    if level is None:
        return None
    low, high = bounds
    return {levels[0]: low - 1.0, levels[1]: (low + high) / 2, levels[2]: high + 1.0}[level]


def measurements(tags: StyleTags) -> dict:
    """Row columns that the measure stage would have tagged this way."""
    pitch_hz = BINS.pitch_hz(tags.gender)
    return {
        "tags": tags.as_row(),
        "gender_confidence": 0.5 if tags.gender == "unknown" else 0.99,
        "pitch_median_hz": inside(tags.pitch, pitch_hz, ("low", "medium", "high")),
        "articulation_rate_sps": inside(
            tags.speaking_rate, BINS.articulation_rate_sps, ("slow", "measured", "fast")
        ),
        "alpha_ratio_db": inside(tags.loudness, BINS.alpha_ratio_db, ("soft", "moderate", "loud")),
    }


@pytest.fixture(scope="module")
def all_verdicts(verifier):
    """(tags, text, verdict) for every tag combination: 5 fine views (seeds 0..4) and the global one."""
    captioner = AcousticCaptioner(AcousticCaptionerConfig(views=5, seed=0))
    return [
        (tags, caption["text"], verifier.verdict(caption, TRANSCRIPT, measurements(tags)))
        for tags in every_tag_combination()
        for caption in captioner.captions("0123456789abcdef_000001000_000009000", tags)
    ]


def test_phrase_bank_passes_every_content_check(all_verdicts):
    assert len(all_verdicts) == 3 * 4 * 4 * 4 * 4 * 2 * 6
    failures = [
        (tags, text, verdict["reasons"])
        for tags, text, verdict in all_verdicts
        if set(verdict["failed_checks"]) - {"length"}
    ]
    assert failures == []


def test_phrase_bank_passes_every_check_when_rate_and_loudness_are_measured(all_verdicts):
    """measure() gives both for any segment of 0.4 s or more with an audible level."""
    failures = [
        (tags, text, verdict["reasons"])
        for tags, text, verdict in all_verdicts
        if tags.speaking_rate is not None and tags.loudness is not None and not verdict["passed"]
    ]
    assert failures == []


def test_every_caption_of_every_tag_combination_passes_the_verifier(all_verdicts):
    failures = [
        (tags, text, verdict["reasons"]) for tags, text, verdict in all_verdicts if not verdict["passed"]
    ]
    assert failures == []
