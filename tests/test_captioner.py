"""The acoustic captioner: tag binning, seeded caption wording with provenance, and measured features
of real espeak speech that move the way the synthesis parameters say."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from pydantic import ValidationError

from annotate.acoustics import AcousticFeatures, AcousticsConfig, measure
from annotate.audio import encode_flac, read_mono_16k
from annotate.captioner import AcousticCaptioner, AcousticCaptionerConfig
from annotate.phrasing import (
    CLOSERS,
    LOUDNESS,
    OPENERS,
    PROMPT_HASH,
    PROMPT_ID,
    RATE,
    VARIATION,
)
from annotate.tags import StyleTags, TagBins, tag
from tests.conftest import SENTENCES, speak

BINS = TagBins()
WHISPER = 0.25
NEUTRAL = AcousticFeatures(
    pitch_median_hz=110.0,
    pitch_std_st=2.0,
    speech_rate_sps=4.5,
    articulation_rate_sps=5.0,
    loudness_lufs=-22.0,
    voiced_ratio=0.8,
)
EPS = 1e-6


def tags_for(**changes) -> StyleTags:
    return tag(replace(NEUTRAL, **changes), BINS, WHISPER)


# --- tag() ----------------------------------------------------------------------------------------


def test_neutral_features_give_the_middle_words():
    assert tags_for() == StyleTags("medium", "moderate", "measured", "moderate", "modal")


@pytest.mark.parametrize(
    ("hz", "word"),
    [
        (60.0, "low"),
        (95.0 - EPS, "low"),
        (95.0, "medium"),  # an edge belongs to the middle bin
        (95.0 + EPS, "medium"),
        (130.0 - EPS, "medium"),
        (130.0, "medium"),
        (130.0 + EPS, "high"),
        (160.0 - EPS, "high"),  # still the lower register: high for a low voice
        (160.0, "low"),  # the split starts the upper register
        (180.0 - EPS, "low"),
        (180.0 + EPS, "medium"),
        (235.0 - EPS, "medium"),
        (235.0 + EPS, "high"),
        (400.0, "high"),
    ],
)
def test_pitch_is_binned_within_its_register(hz, word):
    assert tags_for(pitch_median_hz=hz).pitch == word


@pytest.mark.parametrize(
    ("field", "attribute", "bounds", "words"),
    [
        ("pitch_std_st", "pitch_variation", (1.2, 3.5), ("monotone", "moderate", "expressive")),
        ("articulation_rate_sps", "speaking_rate", (4.0, 6.2), ("slow", "measured", "fast")),
        ("loudness_lufs", "loudness", (-27.0, -18.0), ("soft", "moderate", "loud")),
    ],
)
def test_each_feature_is_binned_at_its_bounds(field, attribute, bounds, words):
    low, high = bounds
    expected = {
        low - EPS: words[0],
        low + EPS: words[1],
        high - EPS: words[1],
        high + EPS: words[2],
    }
    for value, word in expected.items():
        assert getattr(tags_for(**{field: value}), attribute) == word, (field, value)


def test_speech_rate_is_not_the_rate_that_is_binned():
    assert tags_for(speech_rate_sps=1.0).speaking_rate == "measured"
    assert tags_for(articulation_rate_sps=1.0).speaking_rate == "slow"


def test_missing_features_give_missing_tags():
    missing = AcousticFeatures(None, None, None, None, None, voiced_ratio=0.9)
    assert tag(missing, BINS, WHISPER) == StyleTags(None, None, None, None, "modal")


@pytest.mark.parametrize(("ratio", "phonation"), [(0.0, "whispered"), (0.2499, "whispered"), (0.25, "modal")])
def test_whispered_below_the_voiced_ratio_threshold(ratio, phonation):
    assert tags_for(voiced_ratio=ratio).phonation == phonation
    assert tag(replace(NEUTRAL, voiced_ratio=ratio), BINS, 0.0).phonation == "modal"  # threshold 0: never


def test_custom_bins_move_the_edges():
    bins = TagBins(
        register_split_hz=120.0, lower_register_pitch_hz=(80.0, 100.0), loudness_lufs=(-40.0, -30.0)
    )
    features = replace(NEUTRAL, pitch_median_hz=110.0, loudness_lufs=-35.0)
    assert tag(features, bins, WHISPER).pitch == "high"
    assert tag(replace(features, pitch_median_hz=125.0), bins, WHISPER).pitch == "low"  # upper register
    assert tag(features, bins, WHISPER).loudness == "moderate"
    with pytest.raises(ValidationError, match="loudness_lufs"):
        TagBins(loudness_lufs=(-10.0, -20.0))


# --- captions() -----------------------------------------------------------------------------------

TAGS = StyleTags("low", "monotone", "slow", "soft", "modal")
SEGMENT = "0123456789abcdef_000001000_000009000"


def test_views_and_global_caption_with_their_seeds():
    captioner = AcousticCaptioner(AcousticCaptionerConfig(views=3, seed=10))
    captions = captioner.captions(SEGMENT, TAGS)
    assert [(c["granularity"], c["view"], c["seed"]) for c in captions] == [
        ("fine", 0, 10),
        ("fine", 1, 11),
        ("fine", 2, 12),
        ("global", 0, 10),
    ]
    assert (
        captions[-1]["text"]
        == "A low-pitched voice speaks slowly and softly, with a flat, monotone intonation."
    )
    no_global = AcousticCaptioner(AcousticCaptionerConfig(views=2, seed=10, global_view=False))
    fine = no_global.captions(SEGMENT, TAGS)
    assert [c["granularity"] for c in fine] == ["fine", "fine"]
    assert [c["text"] for c in fine] == [c["text"] for c in captions[:2]]


def test_captions_carry_provenance():
    for caption in AcousticCaptioner(AcousticCaptionerConfig()).captions(SEGMENT, TAGS):
        assert caption["backend"] == "acoustic"
        assert caption["model"] == "stylecaps-acoustic/1"
        assert caption["prompt_id"] == PROMPT_ID == "acoustic-templates/v1"
        assert caption["prompt_hash"] == PROMPT_HASH
        assert re.fullmatch(r"[0-9a-f]{16}", caption["prompt_hash"])
        assert caption["sampling"] == "{}" and caption["verdict"] is None


def test_wording_is_deterministic_per_segment_and_seed():
    config = AcousticCaptionerConfig(views=4, seed=0)
    first = AcousticCaptioner(config).captions(SEGMENT, TAGS)
    again = AcousticCaptioner(config).captions(SEGMENT, TAGS)
    assert first == again
    assert len({c["text"] for c in first if c["granularity"] == "fine"}) > 1  # views differ

    def fine_texts(segment: str, seed: int) -> list[str]:
        captions = AcousticCaptioner(AcousticCaptionerConfig(views=4, seed=seed)).captions(segment, TAGS)
        return [c["text"] for c in captions if c["granularity"] == "fine"]

    assert any(fine_texts(SEGMENT, seed) != fine_texts(SEGMENT, 0) for seed in range(1, 6))
    others = [f"0123456789abcdef_{i:09d}_{i + 5000:09d}" for i in range(5)]
    assert any(fine_texts(other, 0) != fine_texts(SEGMENT, 0) for other in others)


def _sentences(text: str) -> list[str]:
    return [part if part.endswith(".") else part + "." for part in re.split(r"(?<=\.) ", text)]


def test_fine_caption_describes_every_tag_from_its_bank():
    captioner = AcousticCaptioner(AcousticCaptionerConfig(views=8, global_view=False))
    for caption in captioner.captions(SEGMENT, TAGS):
        sentences = _sentences(caption["text"])
        assert sentences[0] in OPENERS["low"]
        banks = (VARIATION["monotone"], RATE["slow"], LOUDNESS["soft"])
        assert sorted(next(i for i, bank in enumerate(banks) if s in bank) for s in sentences[1:4]) == [
            0,
            1,
            2,
        ]
        closers = [c.format(impression="calm, gentle and restrained") for c in CLOSERS]
        assert sentences[4] in closers and len(sentences) == 5


def test_whispered_captions_say_whisper():
    whispered = StyleTags(None, None, "fast", "loud", "whispered")
    captions = AcousticCaptioner(AcousticCaptionerConfig(views=3)).captions(SEGMENT, whispered)
    for caption in captions[:3]:
        assert _sentences(caption["text"])[0] in OPENERS["whispered"]
        assert "urgent and excited, almost secretive" in caption["text"]
    assert captions[3]["text"] == "A whispering voice speaks quickly and loudly, in a hushed, breathy manner."


# --- measure() on real speech -----------------------------------------------------------------------

TEXT = SENTENCES.split(". ")[0] + "."  # one sentence, ~5 s at the default rate


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("voices")
    cache: dict[tuple[str, ...], AcousticFeatures] = {}

    def features(*espeak_args: str) -> AcousticFeatures:
        if espeak_args not in cache:
            path = speak(folder / f"voice{len(cache)}.wav", TEXT, *espeak_args)
            cache[espeak_args] = measure(read_mono_16k(path), AcousticsConfig())
        return cache[espeak_args]

    return features


def test_espeak_pitch_parameter_moves_the_median_pitch(measured):
    low, high = measured("-p", "20"), measured("-p", "80")
    assert low.pitch_median_hz is not None and high.pitch_median_hz is not None
    assert high.pitch_median_hz > 1.4 * low.pitch_median_hz
    assert 60 < low.pitch_median_hz < 110 and 110 < high.pitch_median_hz < 200


def test_espeak_speed_parameter_moves_the_articulation_rate(measured):
    slow, fast = measured("-s", "110"), measured("-s", "240")
    assert fast.articulation_rate_sps > 1.5 * slow.articulation_rate_sps
    assert fast.speech_rate_sps > 1.5 * slow.speech_rate_sps


def test_espeak_amplitude_parameter_moves_the_loudness(measured):
    soft, loud = measured("-a", "40"), measured("-a", "190")
    assert loud.loudness_lufs - soft.loudness_lufs > 8
    assert tag(soft, BINS, WHISPER).loudness == "soft" and tag(loud, BINS, WHISPER).loudness == "loud"


def test_whisper_voice_has_a_low_voiced_ratio_and_no_pitch(measured):
    whisper, normal = measured("-v", "en-us+whisperf"), measured("-v", "en-us")
    assert whisper.voiced_ratio < 0.25 < 0.5 < normal.voiced_ratio
    assert whisper.pitch_median_hz is None and whisper.pitch_std_st is None
    assert normal.pitch_median_hz is not None
    assert whisper.articulation_rate_sps is not None and whisper.articulation_rate_sps > 2
    assert tag(whisper, BINS, WHISPER).phonation == "whispered"
    assert tag(normal, BINS, WHISPER).phonation == "modal"


def test_captioner_call_adds_features_tags_and_captions(tmp_path):
    wave = read_mono_16k(speak(tmp_path / "row.wav", TEXT, "-p", "20", "-s", "110"))
    row = {"segment_id": SEGMENT, "audio": {"bytes": encode_flac(wave), "path": f"{SEGMENT}.flac"}}
    [out] = AcousticCaptioner(AcousticCaptionerConfig())([row])
    assert out["segment_id"] == SEGMENT and out["audio"] is row["audio"]
    assert set(out["tags"]) == {"pitch", "pitch_variation", "speaking_rate", "loudness", "phonation"}
    assert out["tags"]["pitch"] == "low" and out["tags"]["speaking_rate"] == "slow"
    assert out["pitch_median_hz"] < 95
    assert [c["granularity"] for c in out["captions"]] == ["fine", "fine", "fine", "global"]
    assert out["captions"][-1]["text"].startswith("A low-pitched voice speaks slowly")
