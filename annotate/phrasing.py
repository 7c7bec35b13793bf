"""Worded captions from style tags: varied phrasings chosen by a seeded RNG.

Every phrase describes the voice only: no transcript, no setting or recording words, no statements
of absence, so a correct acoustic caption passes the rules verifier. Like CLSP's captions, a caption
opens with the speaker's gender ("A female speaker ..."); when the gender is unknown it says "The
speaker". Pitch words are relative to the gender ("low for a woman").
"""

from __future__ import annotations

import hashlib
import json
import random

from annotate.tags import StyleTags

# {subject}: "A female speaker" / "A male speaker" / "The speaker"; {possessive}: "her" / "his" / "their";
# {relative}: " for a woman" / " for a man" / "" (pitch is binned within the gender).
OPENERS: dict[str, list[str]] = {
    "low": [
        "{subject} has a low, deep voice{relative}, sitting near the bottom of {possessive} pitch range.",
        "{subject} talks in a deep, low-pitched voice{relative}, dark and grounded in tone.",
        "{subject} pitches {possessive} voice low{relative}, giving the words a heavy, resonant depth.",
    ],
    "medium": [
        "{subject} talks in a mid-range voice{relative}, neither deep nor high in pitch.",
        "{subject} speaks with a voice of moderate pitch{relative}, comfortably in the middle of the range.",
        "{subject} has an average pitch{relative}, balanced between low and high.",
    ],
    "high": [
        "{subject} has a bright, high-pitched voice{relative}, near the top of {possessive} pitch range.",
        "{subject} talks in a high-pitched, light voice{relative}, thin and airy in tone.",
        "{subject} pitches {possessive} voice high{relative}, giving the words a bright, piercing quality.",
    ],
    "whispered": [
        "{subject} whispers throughout, so the voice comes out as a breathy, hushed murmur.",
        "{subject} whispers every word, airy and breathy, keeping the voice to a hush.",
        "{subject} delivers the speech in a whisper, soft-edged and full of breath.",
    ],
    "unknown": [
        "{subject} uses a plain, everyday speaking voice for the whole passage, even in tone.",
        "{subject} carries the speech in a single, ordinary voice from start to end, steady in tone.",
    ],
}
SUBJECTS = {"female": "A female speaker", "male": "A male speaker", "unknown": "The speaker"}
POSSESSIVES = {"female": "her", "male": "his", "unknown": "their"}
RELATIVE = {"female": " for a woman", "male": " for a man", "unknown": ""}

VARIATION: dict[str, list[str]] = {
    "monotone": [
        "The intonation stays flat and monotone, with the pitch barely moving between phrases.",
        "Pitch movement is minimal, so the delivery sounds level, even and monotone.",
    ],
    "moderate": [
        "The intonation rises and falls moderately, following the phrasing in a natural way.",
        "Pitch moves a little across each phrase, giving a conversational, moderately varied melody.",
    ],
    "expressive": [
        "The intonation is expressive, swinging widely between high and low points.",
        "Pitch moves a great deal across each phrase, making the delivery lively and animated.",
    ],
}

RATE: dict[str, list[str]] = {
    "slow": [
        "The pace is slow and unhurried, with syllables drawn out and given plenty of time.",
        "Words come at a slow, deliberate tempo.",
    ],
    "measured": [
        "The speaking rate is measured and steady, at an ordinary conversational tempo.",
        "Words come at a moderate, even pace.",
    ],
    "fast": [
        "The pace is fast, with syllables following each other in quick succession.",
        "Words come at a rapid, hurried tempo.",
    ],
}

# Vocal effort, heard as how loud the voice is (not how loud the recording is).
LOUDNESS: dict[str, list[str]] = {
    "soft": [
        "The voice is soft and relaxed, spoken with little effort, as if to someone close by.",
        "The words come softly, with a gentle, subdued and effortless delivery.",
    ],
    "moderate": [
        "The voice is projected with a comfortable, moderate effort.",
        "The voice carries at an ordinary speaking volume.",
    ],
    "loud": [
        "The voice is loud and strongly projected, as if addressing a large group.",
        "The words are delivered loudly, with a forceful, emphatic projection.",
    ],
}

IMPRESSIONS: dict[tuple[str, str], str] = {
    ("slow", "soft"): "calm, gentle and restrained",
    ("slow", "moderate"): "calm and deliberate",
    ("slow", "loud"): "solemn and emphatic",
    ("measured", "soft"): "quiet and composed",
    ("measured", "moderate"): "composed and matter-of-fact",
    ("measured", "loud"): "confident and assertive",
    ("fast", "soft"): "hurried and intimate",
    ("fast", "moderate"): "brisk and energetic",
    ("fast", "loud"): "urgent and excited",
}

CLOSERS = [
    "Overall the delivery comes across as {impression}.",
    "Taken together, the speaking style feels {impression}.",
    "The overall impression is of a {impression} manner of speaking.",
]

PITCH_ADJECTIVES = {"low": "low-pitched", "medium": "mid-pitched", "high": "high-pitched"}
RATE_ADVERBS = {"slow": "slowly", "measured": "at a measured pace", "fast": "quickly"}
LOUDNESS_ADVERBS = {"soft": "softly", "moderate": "at a moderate volume", "loud": "loudly"}
VARIATION_PHRASES = {
    "monotone": "a flat, monotone intonation",
    "moderate": "a moderately varied intonation",
    "expressive": "a lively, expressive intonation",
}

PROMPT_ID = "acoustic-templates/v2"  # v2: gender, pitch relative to it, loudness as vocal effort
PROMPT_HASH = hashlib.sha256(
    json.dumps(
        [
            OPENERS,
            SUBJECTS,
            POSSESSIVES,
            RELATIVE,
            VARIATION,
            RATE,
            LOUDNESS,
            sorted(IMPRESSIONS.items()),
            CLOSERS,
            PITCH_ADJECTIVES,
            RATE_ADVERBS,
            LOUDNESS_ADVERBS,
            VARIATION_PHRASES,
        ],
        sort_keys=True,
    ).encode()
).hexdigest()[:16]


def _opener_key(tags: StyleTags) -> str:
    if tags.phonation == "whispered":
        return "whispered"
    return tags.pitch or "unknown"


def _opener(tags: StyleTags, rng: random.Random) -> str:
    template = rng.choice(OPENERS[_opener_key(tags)])
    return template.format(
        subject=SUBJECTS[tags.gender], possessive=POSSESSIVES[tags.gender], relative=RELATIVE[tags.gender]
    )


def fine_caption(tags: StyleTags, rng: random.Random) -> str:
    """A several-sentence description of every measured attribute, in a seeded order and wording."""
    middle = [
        rng.choice(bank[value])
        for bank, value in (
            (VARIATION, tags.pitch_variation),
            (RATE, tags.speaking_rate),
            (LOUDNESS, tags.loudness),
        )
        if value is not None
    ]
    rng.shuffle(middle)
    sentences = [_opener(tags, rng), *middle]
    impression = IMPRESSIONS.get((tags.speaking_rate or "measured", tags.loudness or "moderate"))
    if tags.phonation == "whispered":
        impression = f"{impression}, almost secretive"
    sentences.append(rng.choice(CLOSERS).format(impression=impression))
    return " ".join(sentences)


def global_caption(tags: StyleTags) -> str:
    """One sentence summarising the style."""
    if tags.phonation == "whispered":
        voice = "whispering voice"
    elif tags.pitch is not None:
        voice = f"{PITCH_ADJECTIVES[tags.pitch]} voice"
    else:
        voice = "voice"
    if tags.gender == "unknown":
        subject = f"A {voice}"
    else:
        subject = f"A {tags.gender} speaker" + ("" if voice == "voice" else f" with a {voice}")
    manner = [LOUDNESS_ADVERBS[tags.loudness]] if tags.loudness else []
    if tags.speaking_rate:
        manner.insert(0, RATE_ADVERBS[tags.speaking_rate])
    sentence = subject + (" speaks " + " and ".join(manner) if manner else " speaks")
    if tags.pitch_variation:
        return f"{sentence}, with {VARIATION_PHRASES[tags.pitch_variation]}."
    # Without a pitch contour (whisper, few voiced frames) the manner still makes a full sentence.
    return sentence + (
        ", in a hushed, breathy manner." if tags.phonation == "whispered" else ", in a plain manner."
    )
