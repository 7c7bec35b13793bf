"""The measure stage: tag bins (pitch within the gender), the gender estimate, the measures on real
espeak speech (pitch, rate, gain-invariant effort, whisper), and the stage on rows."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from annotate.acoustics import AcousticFeatures, AcousticsConfig, _speech_time, measure
from annotate.audio import encode_flac, read_mono_16k
from annotate.gender import GenderConfig, decide, estimate
from annotate.measure import MEASUREMENT_NAMES, MeasureConfig, MeasureStage, interpret, measure_segment
from annotate.tags import TAG_NAMES, StyleTags, TagBins, tag
from tests.conftest import SENTENCES, speak

BINS = TagBins()
WHISPER = 0.25
NEUTRAL = AcousticFeatures(
    pitch_median_hz=120.0,
    pitch_std_st=2.0,
    syllable_count=20.0,
    speech_rate_sps=4.0,
    articulation_rate_sps=4.5,
    loudness_lufs=-22.0,
    voiced_ratio=0.8,
    formant_dispersion_hz=960.0,
    alpha_ratio_db=-12.0,
)
EPS = 1e-6


def tags_for(gender: str = "male", **changes) -> StyleTags:
    return tag(replace(NEUTRAL, **changes), gender, "given", BINS, WHISPER)  # type: ignore[arg-type]


# --- tag() ----------------------------------------------------------------------------------------


def test_neutral_features_give_the_middle_words():
    assert tags_for() == StyleTags("male", "given", "medium", "moderate", "measured", "moderate", "modal")


@pytest.mark.parametrize(
    ("gender", "hz", "word"),
    [
        ("male", 108.0 - EPS, "low"),
        ("male", 108.0, "medium"),  # an edge belongs to the middle bin
        ("male", 134.0, "medium"),
        ("male", 134.0 + EPS, "high"),
        ("male", 190.0, "high"),
        ("female", 190.0, "low"),  # the same voice is low for a woman
        ("female", 193.0, "medium"),
        ("female", 231.0 + EPS, "high"),
        ("unknown", 108.0 - EPS, "low"),  # unknown: low only below the men's low edge
        ("unknown", 190.0, "medium"),
        ("unknown", 231.0, "medium"),  # ... high only above the women's high edge
        ("unknown", 231.0 + EPS, "high"),
    ],
)
def test_pitch_is_binned_relative_to_the_gender(gender, hz, word):
    assert tags_for(gender, pitch_median_hz=hz).pitch == word


@pytest.mark.parametrize(
    ("field", "attribute", "bounds", "words"),
    [
        ("pitch_std_st", "pitch_variation", (1.2, 3.5), ("monotone", "moderate", "expressive")),
        ("articulation_rate_sps", "speaking_rate", (3.5, 5.5), ("slow", "measured", "fast")),
        ("alpha_ratio_db", "loudness", (-13.6, -10.1), ("soft", "moderate", "loud")),
    ],
)
def test_each_number_is_binned_at_its_documented_bounds(field, attribute, bounds, words):
    low, high = bounds
    expected = {low - EPS: words[0], low + EPS: words[1], high - EPS: words[1], high + EPS: words[2]}
    for value, word in expected.items():
        assert getattr(tags_for(**{field: value}), attribute) == word, (field, value)


def test_loudness_follows_vocal_effort_not_recording_level():
    assert tags_for(loudness_lufs=-60.0).loudness == tags_for(loudness_lufs=-5.0).loudness == "moderate"


def test_missing_numbers_give_missing_tags():
    missing = AcousticFeatures(None, None, 0.0, None, None, None, 0.9, None, None)
    assert tag(missing, "unknown", "estimated", BINS, WHISPER) == StyleTags(
        "unknown", "estimated", None, None, None, None, "modal"
    )


@pytest.mark.parametrize(("ratio", "phonation"), [(0.0, "whispered"), (0.2499, "whispered"), (0.25, "modal")])
def test_whispered_below_the_voiced_ratio_threshold(ratio, phonation):
    assert tags_for(voiced_ratio=ratio).phonation == phonation


def test_custom_bins_move_the_edges_and_must_be_ordered():
    bins = TagBins(male_pitch_hz=(80.0, 100.0), alpha_ratio_db=(-20.0, -15.0))
    features = replace(NEUTRAL, pitch_median_hz=110.0, alpha_ratio_db=-12.0)
    assert tag(features, "male", "given", bins, WHISPER).pitch == "high"
    assert tag(features, "male", "given", bins, WHISPER).loudness == "loud"
    with pytest.raises(ValidationError, match="alpha_ratio_db"):
        TagBins(alpha_ratio_db=(-10.0, -20.0))


# --- the gender estimate --------------------------------------------------------------------------


def test_literature_means_decide_clear_voices_and_a_missing_cue_drops_out():
    config = GenderConfig()
    woman = estimate(205.0, 1119.0, config)
    man = estimate(116.0, 959.0, config)
    assert woman.female_probability > 0.99 and woman.cues_agree and decide(woman, config) == "female"
    assert man.female_probability < 0.01 and man.cues_agree and decide(man, config) == "male"
    midpoint = estimate(math.sqrt(205 * 116), math.sqrt(1119 * 959), config)
    assert midpoint.female_probability == pytest.approx(0.5) and decide(midpoint, config) == "unknown"
    whisper = estimate(None, 1119.0, config)  # no F0: the formants alone
    assert whisper.female_probability == pytest.approx(
        estimate(math.sqrt(205 * 116), 1119.0, config).female_probability
    )
    assert estimate(None, None, config).female_probability == 0.5


def test_a_shouting_man_is_unknown_not_female():
    """High F0 (emotion) with a long vocal tract (low formant dispersion): the cues disagree."""
    config = GenderConfig()
    shouting = estimate(330.0, 990.0, config)
    assert shouting.female_probability > 0.9  # F0 outweighs the formants ...
    assert not shouting.cues_agree and decide(shouting, config) == "unknown"  # ... so no guess


def test_min_confidence_sets_how_sure_a_decision_must_be():
    config = GenderConfig(min_confidence=0.9)
    near = estimate(175.0, 1050.0, config)
    assert near.cues_agree and near.female_probability > 0.5
    assert decide(near, config) == ("female" if near.confidence >= 0.9 else "unknown")
    strict = GenderConfig(min_confidence=near.confidence + 1e-9)
    assert decide(near, strict) == "unknown"
    with pytest.raises(ValidationError):
        GenderConfig(min_confidence=0.4)


def test_given_gender_wins_and_says_so():
    features = replace(NEUTRAL, pitch_median_hz=116.0, formant_dispersion_hz=959.0)  # a clear man
    given = interpret(features, "female", MeasureConfig())
    assert given.tags.gender == "female" and given.tags.gender_source == "given"
    assert given.gender_confidence == 1.0
    assert given.female_probability < 0.01  # the voice's own estimate is kept beside it
    assert given.tags.pitch == "low"  # 116 Hz is low for a woman
    estimated = interpret(features, None, MeasureConfig())
    assert estimated.tags.gender == "male" and estimated.tags.gender_source == "estimated"
    assert estimated.gender_confidence == pytest.approx(1 - estimated.female_probability)


# --- speech time ----------------------------------------------------------------------------------


def test_speech_time_spans_the_audible_frames_and_drops_long_pauses():
    sounding = np.array([0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 1, 1, 0, 0], dtype=bool)
    audible = np.array([0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0], dtype=bool)
    # span: frames 1..12; silent runs inside: [1] (1), [4..7] (4 >= 3: a pause), [9] (1), [12] (1)
    assert _speech_time(sounding, audible, 3) == pytest.approx((0.12, 0.08))
    assert _speech_time(sounding, sounding, 3) == pytest.approx((0.10, 0.06))
    assert _speech_time(np.zeros(5, dtype=bool), np.zeros(5, dtype=bool), 3) == (0.0, 0.0)


# --- measure() on real speech -----------------------------------------------------------------------

TEXT = SENTENCES.split(". ")[0] + "."  # one sentence, ~5 s at the default rate


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    folder = tmp_path_factory.mktemp("voices")
    cache: dict[tuple[str, ...], np.ndarray] = {}

    def wave(*espeak_args: str) -> np.ndarray:
        if espeak_args not in cache:
            cache[espeak_args] = read_mono_16k(speak(folder / f"voice{len(cache)}.wav", TEXT, *espeak_args))
        return cache[espeak_args]

    return wave


def features_of(wave: np.ndarray) -> AcousticFeatures:
    return measure(wave, AcousticsConfig())


def test_espeak_pitch_parameter_moves_the_median_pitch(voices):
    low, high = features_of(voices("-p", "20")), features_of(voices("-p", "80"))
    assert high.pitch_median_hz > 1.4 * low.pitch_median_hz
    assert 60 < low.pitch_median_hz < 108 < 134 < high.pitch_median_hz < 200  # low / high for a man


def test_espeak_speed_parameter_moves_the_rate_and_the_nuclei_count_the_syllables(voices):
    slow, fast = features_of(voices("-s", "110")), features_of(voices("-s", "240"))
    assert fast.speech_rate_sps > 1.5 * slow.speech_rate_sps
    assert fast.articulation_rate_sps > 1.5 * slow.articulation_rate_sps
    # "The li-bra-ry o-pens at nine ev-ery week-day mor-ning, and the read-ing room fills up quick-ly."
    assert abs(slow.syllable_count - 23) <= 2 and abs(fast.syllable_count - 23) <= 3


@pytest.mark.parametrize("db", [12.0, -12.0])
def test_a_gain_change_moves_only_the_recording_level(voices, db):
    """espeak's -a scales the waveform; so does a +-12 dB gain: effort, pitch, rate, gender stay."""
    wave = voices("-v", "en-us+f3")
    before, after = features_of(wave), features_of(wave * 10 ** (db / 20))
    assert after.loudness_lufs == pytest.approx(before.loudness_lufs + db, abs=0.05)
    for name in ("pitch_median_hz", "speech_rate_sps", "formant_dispersion_hz", "alpha_ratio_db"):
        assert getattr(after, name) == pytest.approx(getattr(before, name), rel=1e-3, abs=0.01), name
    config = MeasureConfig()
    assert interpret(after, None, config).tags == interpret(before, None, config).tags


def test_espeak_amplitude_is_gain_not_effort(voices):
    soft, loud = features_of(voices("-a", "40")), features_of(voices("-a", "190"))
    assert loud.loudness_lufs - soft.loudness_lufs > 8
    assert loud.alpha_ratio_db == pytest.approx(soft.alpha_ratio_db, abs=0.3)


@pytest.mark.parametrize(
    ("voice", "gender"), [("en-us+m3", "male"), ("en-us+f3", "female"), ("en-us+f4", "female")]
)
def test_gender_is_estimated_from_the_voice(voices, voice, gender):
    measured = measure_segment(voices("-v", voice), None, MeasureConfig())
    assert measured.tags.gender == gender and measured.tags.gender_source == "estimated"
    assert measured.gender_confidence >= 0.9


def test_whisper_voice_has_a_low_voiced_ratio_and_no_pitch(voices):
    whisper, normal = features_of(voices("-v", "en-us+whisperf")), features_of(voices("-v", "en-us"))
    assert whisper.voiced_ratio < 0.25 < 0.5 < normal.voiced_ratio
    assert whisper.pitch_median_hz is None and whisper.pitch_std_st is None
    assert normal.pitch_median_hz is not None
    assert whisper.speech_rate_sps is not None and whisper.speech_rate_sps > 2
    assert whisper.formant_dispersion_hz is not None and whisper.alpha_ratio_db is not None
    assert tag(whisper, "unknown", "estimated", BINS, WHISPER).phonation == "whispered"


def test_silence_gives_no_numbers_and_no_error():
    features = features_of(np.zeros(3 * 16_000, dtype=np.float32))
    assert features.pitch_median_hz is None and features.formant_dispersion_hz is None
    assert features.alpha_ratio_db is None


# --- the stage --------------------------------------------------------------------------------------


def test_stage_adds_every_measurement_column_and_the_tags(voices):
    wave = voices("-p", "20", "-s", "110")
    rows = [
        {"segment_id": "a", "audio": {"bytes": encode_flac(wave), "path": "a.flac"}, "gender": "male"},
        {"segment_id": "b", "audio": {"bytes": encode_flac(wave), "path": "b.flac"}, "gender": None},
    ]
    stage = MeasureStage(MeasureConfig())
    stage.setup()
    given, estimated = stage(rows)
    for out, row in ((given, rows[0]), (estimated, rows[1])):
        assert set(MEASUREMENT_NAMES) <= set(out) and set(out["tags"]) == set(TAG_NAMES)
        assert out["segment_id"] == row["segment_id"] and out["audio"] is row["audio"]
        assert "captions" not in out  # measuring is not captioning
    assert given["tags"]["gender_source"] == "given" and given["gender_confidence"] == 1.0
    assert given["tags"]["pitch"] == "low" and given["tags"]["speaking_rate"] == "slow"
    assert estimated["tags"]["gender_source"] == "estimated"
    same = [name for name in MEASUREMENT_NAMES if name != "gender_confidence"]
    assert [given[name] for name in same] == [estimated[name] for name in same]  # gender source aside
