"""The acoustic captioner: it words the measure stage's tags (gender first, as CLSP's captions do)
into seeded caption views with provenance, and measures nothing itself."""

from __future__ import annotations

import re

import pytest

from annotate.captioner import AcousticCaptioner, AcousticCaptionerConfig
from annotate.phrasing import (
    CLOSERS,
    LOUDNESS,
    OPENERS,
    POSSESSIVES,
    PROMPT_HASH,
    PROMPT_ID,
    RATE,
    RELATIVE,
    SUBJECTS,
    VARIATION,
)
from annotate.tags import StyleTags

# --- captions() -----------------------------------------------------------------------------------

TAGS = StyleTags("female", "given", "low", "monotone", "slow", "soft", "modal")
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
    assert captions[-1]["text"] == (
        "A female speaker with a low-pitched voice speaks slowly and softly, "
        "with a flat, monotone intonation."
    )
    no_global = AcousticCaptioner(AcousticCaptionerConfig(views=2, seed=10, global_view=False))
    fine = no_global.captions(SEGMENT, TAGS)
    assert [c["granularity"] for c in fine] == ["fine", "fine"]
    assert [c["text"] for c in fine] == [c["text"] for c in captions[:2]]


def test_captions_carry_provenance():
    for caption in AcousticCaptioner(AcousticCaptionerConfig()).captions(SEGMENT, TAGS):
        assert caption["backend"] == "acoustic"
        assert caption["model"] == "stylecaps-acoustic/1"
        assert caption["prompt_id"] == PROMPT_ID == "acoustic-templates/v2"
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


def _openers(key: str, gender: str) -> list[str]:
    words = {"subject": SUBJECTS[gender], "possessive": POSSESSIVES[gender], "relative": RELATIVE[gender]}
    return [template.format(**words) for template in OPENERS[key]]


def test_fine_caption_describes_every_tag_from_its_bank():
    captioner = AcousticCaptioner(AcousticCaptionerConfig(views=8, global_view=False))
    for caption in captioner.captions(SEGMENT, TAGS):
        sentences = _sentences(caption["text"])
        assert sentences[0] in _openers("low", "female")
        assert sentences[0].startswith("A female speaker ") and "for a woman" in sentences[0]
        banks = (VARIATION["monotone"], RATE["slow"], LOUDNESS["soft"])
        assert sorted(next(i for i, bank in enumerate(banks) if s in bank) for s in sentences[1:4]) == [
            0,
            1,
            2,
        ]
        closers = [c.format(impression="calm, gentle and restrained") for c in CLOSERS]
        assert sentences[4] in closers and len(sentences) == 5


@pytest.mark.parametrize(
    ("gender", "subject", "global_start"),
    [
        ("female", "A female speaker ", "A female speaker with a high-pitched voice speaks"),
        ("male", "A male speaker ", "A male speaker with a high-pitched voice speaks"),
        ("unknown", "The speaker ", "A high-pitched voice speaks"),
    ],
)
def test_captions_open_with_the_gender_and_say_pitch_relative_to_it(gender, subject, global_start):
    tags = StyleTags(gender, "estimated", "high", "moderate", "measured", "moderate", "modal")
    captions = AcousticCaptioner(AcousticCaptionerConfig(views=6)).captions(SEGMENT, tags)
    for caption in captions[:-1]:
        assert caption["text"].startswith(subject)
        assert _sentences(caption["text"])[0] in _openers("high", gender)
    assert captions[-1]["text"].startswith(global_start)
    if gender == "unknown":
        assert not re.search(
            r"\b(?:woman|man|female|male|she|he|her|his)\b", " ".join(c["text"] for c in captions)
        )


def test_whispered_captions_say_whisper():
    whispered = StyleTags("female", "given", None, None, "fast", "loud", "whispered")
    captions = AcousticCaptioner(AcousticCaptionerConfig(views=3)).captions(SEGMENT, whispered)
    for caption in captions[:3]:
        assert _sentences(caption["text"])[0] in _openers("whispered", "female")
        assert "urgent and excited, almost secretive" in caption["text"]
    assert captions[3]["text"] == (
        "A female speaker with a whispering voice speaks quickly and loudly, in a hushed, breathy manner."
    )


# --- the stage ------------------------------------------------------------------------------------


def test_captioner_words_the_row_tags_and_measures_nothing():
    """No audio at all: the captioner reads the measure stage's tags from the row."""
    row = {"segment_id": SEGMENT, "audio": None, "tags": TAGS.as_row()}
    [out] = AcousticCaptioner(AcousticCaptionerConfig())([row])
    assert out["tags"] == row["tags"] and out["audio"] is None
    assert [c["granularity"] for c in out["captions"]] == ["fine", "fine", "fine", "global"]
    assert out["captions"][-1]["text"].startswith("A female speaker with a low-pitched voice speaks slowly")
    assert out["captions"] == AcousticCaptioner(AcousticCaptionerConfig()).captions(SEGMENT, TAGS)
