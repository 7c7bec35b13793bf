"""Worded captions from style tags: varied phrasings chosen by a seeded RNG.

Every phrase describes the voice only: no transcript, no setting or recording words, no statements
of absence, so a correct acoustic caption passes the rules verifier.
"""

from __future__ import annotations

import hashlib
import json
import random

from annotate.tags import StyleTags

OPENERS: dict[str, list[str]] = {
    "low": [
        "The speaker has a low, deep voice that sits near the bottom of the pitch range.",
        "A deep, low-pitched voice carries the speech, dark and grounded in tone.",
        "The voice is pitched low, giving the words a heavy, resonant depth.",
    ],
    "medium": [
        "The speaker talks in a mid-range voice, neither deep nor high in pitch.",
        "A voice of moderate pitch carries the speech, sitting comfortably in the middle of the range.",
        "The pitch of the voice is average, balanced between low and high.",
    ],
    "high": [
        "The speaker has a high, bright voice that sits near the top of the pitch range.",
        "A high-pitched, light voice carries the speech with a thin and airy tone.",
        "The voice is pitched high, giving the words a bright, piercing quality.",
    ],
    "whispered": [
        "The speaker whispers throughout, so the voice comes out as a breathy, hushed murmur.",
        "Every word is whispered, airy and breathy, with the voice kept to a hush.",
        "The speech is delivered in a whisper, soft-edged and full of breath.",
    ],
    "unknown": [
        "The speaker uses a plain, everyday speaking voice for the whole passage, even in tone.",
        "A single, ordinary speaking voice carries the speech from start to end, steady in tone throughout.",
    ],
}

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

LOUDNESS: dict[str, list[str]] = {
    "soft": [
        "The voice is soft and low in volume, as if speaking gently to someone close by.",
        "Volume stays low, giving the speech a gentle, subdued presence.",
    ],
    "moderate": [
        "Volume sits at a comfortable, moderate level.",
        "The voice is projected at an ordinary speaking volume.",
    ],
    "loud": [
        "The voice is loud and strongly projected, as if addressing a large group.",
        "Volume is high, with a forceful, emphatic projection.",
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

PROMPT_ID = "acoustic-templates/v1"
PROMPT_HASH = hashlib.sha256(
    json.dumps(
        [
            OPENERS,
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
    sentences = [rng.choice(OPENERS[_opener_key(tags)]), *middle]
    impression = IMPRESSIONS.get((tags.speaking_rate or "measured", tags.loudness or "moderate"))
    if tags.phonation == "whispered":
        impression = f"{impression}, almost secretive"
    sentences.append(rng.choice(CLOSERS).format(impression=impression))
    return " ".join(sentences)


def global_caption(tags: StyleTags) -> str:
    """One sentence summarising the style."""
    if tags.phonation == "whispered":
        subject = "A whispering voice"
    elif tags.pitch is not None:
        subject = f"A {PITCH_ADJECTIVES[tags.pitch]} voice"
    else:
        subject = "A voice"
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
