"""The rules verifier: the FCaps checklist as deterministic rules with stable ids, and the
`measured_*` rules that hold a caption against the segment's measurements (verify/measured.py).

Each caption gets a verdict {passed, failed_checks, reasons, verifier}. A rejected caption stays
in the shard with its verdict; nothing is dropped here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field

from annotate.base import BatchStage, Row, StrictConfig
from annotate.tags import TagBins
from verify.measured import MeasuredChecks, MeasuredChecksConfig

CheckId = Literal[
    "no_quotes",
    "no_transcript",
    "no_background",
    "no_absence",
    "single_speaker",
    "length",
    "no_newlines",
    "measured_gender",
    "measured_pitch",
    "measured_rate",
    "measured_loudness",
]
ALL_CHECKS: tuple[CheckId, ...] = get_args(CheckId)
VERIFIER = "rules/2"  # 2: the measured_* checks

BACKGROUND_TERMS = (
    "background",
    "environment",
    "ambient",
    "ambience",
    "noise",
    "noisy",
    "music",
    "musical accompaniment",
    "reverb",
    "reverberation",
    "echo",
    "echoing",
    "room",
    "studio",
    "recording",
    "recorded",
    "microphone",
    "mic",
    "audio quality",
    "sound quality",
    "low quality",
    "high quality",
    "low-quality",
    "high-quality",
    "static",
    "hiss",
    "hum",
    "distortion",
    "distorted",
    "clipping",
    "compression artifacts",
    "bitrate",
    "channel",
    "traffic",
    "wind",
    "crowd noise",
    "applause",
    "laughter in the",
)
ABSENCE_PATTERNS = (
    r"\bno\b",
    r"\bnot\b",
    r"\bnone\b",
    r"\bnever\b",
    r"\bwithout\b",
    r"\black(?:s|ing)?\b",
    r"\bfree (?:from|of)\b",
    r"\babsen(?:t|ce)\b",
    r"\bdevoid\b",
    r"\bn't\b",
    r"\w+n't\b",
)
MULTI_SPEAKER_TERMS = (
    "speakers",
    "two voices",
    "several voices",
    "multiple voices",
    "other voices",
    "another voice",
    "another speaker",
    "second speaker",
    "other speaker",
    "multiple people",
    "several people",
    "two people",
    "conversation",
    "dialogue",
    "dialog",
    "interview",
    "take turns",
    "taking turns",
    "chorus",
    "in unison",
)
# Straight and typographic double quotes, guillemets, and single quotes that open or close a quote
# (an apostrophe inside a word, as in speaker's, is not a quotation mark).
# Function words: a shared phrase made of these ("in the middle of") is language, not a quoted transcript.
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "he",
        "she",
        "they",
        "we",
        "you",
        "i",
        "me",
        "him",
        "her",
        "them",
        "us",
        "my",
        "your",
        "his",
        "their",
        "our",
        "so",
        "than",
        "then",
        "too",
        "very",
        "can",
        "will",
        "would",
        "should",
        "could",
        "may",
        "might",
        "must",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "not",
        "no",
        "into",
        "over",
        "under",
        "up",
        "down",
        "out",
        "off",
        "about",
        "after",
        "before",
        "while",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "what",
        "how",
        "all",
        "any",
        "each",
        "some",
        "more",
        "most",
        "other",
        "such",
        "only",
        "own",
        "same",
        "just",
        "also",
    }
)
QUOTE_PATTERN = r"[\"“”„«»‹›]|(?<!\w)['‘’]|['‘’](?!\w)"


class LengthBounds(StrictConfig):
    min_chars: Annotated[int, Field(ge=0)]
    max_chars: Annotated[int, Field(gt=0)] | None = None


class RulesVerifierConfig(StrictConfig):
    checks: list[CheckId] = Field(default_factory=lambda: list(ALL_CHECKS))
    fine_length: LengthBounds = LengthBounds(min_chars=128, max_chars=768)
    global_length: LengthBounds = LengthBounds(min_chars=32)
    transcript_ngram: Annotated[int, Field(ge=1)] = Field(
        default=3, description="A run of this many consecutive transcript words in a caption fails it ..."
    )
    transcript_min_content_words: Annotated[int, Field(ge=0)] = Field(
        default=2, description="... when at least this many of them are not function words."
    )
    extra_background_terms: list[str] = Field(default_factory=list)
    extra_multi_speaker_terms: list[str] = Field(default_factory=list)
    measured: MeasuredChecksConfig = MeasuredChecksConfig()


def _term_pattern(terms: tuple[str, ...] | list[str]) -> re.Pattern[str]:
    alternatives = sorted((re.escape(t) for t in terms), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


Check = Callable[[dict[str, Any], str | None, Row], str | None]


class RulesVerifier(BatchStage):  # fills each caption's verdict: no column of its own
    name: ClassVar[str] = "verify"

    def __init__(self, config: RulesVerifierConfig, bins: TagBins | None = None) -> None:
        """`bins`: the measure stage's tag bins, which the measured_* rules judge margins against."""
        self.config = config
        measured = MeasuredChecks(config.measured, bins or TagBins())
        self._background = _term_pattern(BACKGROUND_TERMS + tuple(config.extra_background_terms))
        self._multi = _term_pattern(MULTI_SPEAKER_TERMS + tuple(config.extra_multi_speaker_terms))
        self._absence = re.compile("|".join(ABSENCE_PATTERNS), re.IGNORECASE)
        self._quote = re.compile(QUOTE_PATTERN)
        self._checks: dict[CheckId, Check] = {
            "no_quotes": lambda c, t, r: self._no_quotes(c),
            "no_transcript": lambda c, t, r: self._no_transcript(c, t),
            "no_background": lambda c, t, r: self._found(
                self._background, c["text"], "background or recording"
            ),
            "no_absence": lambda c, t, r: self._found(self._absence, c["text"], "absence (negation)"),
            "single_speaker": lambda c, t, r: self._found(self._multi, c["text"], "multiple-speaker"),
            "length": lambda c, t, r: self._length(c),
            "no_newlines": lambda c, t, r: (
                "contains a line break" if re.search(r"[\r\n]", c["text"]) else None
            ),
            "measured_gender": lambda c, t, r: measured.gender(c["text"], r),
            "measured_pitch": lambda c, t, r: measured.pitch(c["text"], r),
            "measured_rate": lambda c, t, r: measured.rate(c["text"], r),
            "measured_loudness": lambda c, t, r: measured.loudness(c["text"], r),
        }

    def setup(self) -> None:
        """Rules need no model."""

    def teardown(self) -> None:
        """Nothing to release."""

    def verdict(
        self, caption: dict[str, Any], transcript: str | None = None, measurements: Row | None = None
    ) -> dict[str, Any]:
        """`measurements`: the segment's row (numbers and tags of the measure stage), if any."""
        failed, reasons = [], []
        for check in self.config.checks:
            reason = self._checks[check](caption, transcript, measurements or {})
            if reason is not None:
                failed.append(check)
                reasons.append(reason)
        return {"passed": not failed, "failed_checks": failed, "reasons": reasons, "verifier": VERIFIER}

    def __call__(self, rows: list[Row]) -> list[Row]:
        """Every caption judged, except one already rejected upstream (a captioner's degenerate output),
        which keeps its verdict."""
        return [
            {
                **row,
                "captions": [
                    caption
                    if caption.get("verdict") is not None and not caption["verdict"]["passed"]
                    else {**caption, "verdict": self.verdict(caption, row.get("transcript"), row)}
                    for caption in row["captions"]
                ],
            }
            for row in rows
        ]

    @staticmethod
    def _found(pattern: re.Pattern[str], text: str, what: str) -> str | None:
        hits = sorted({m.group(0).lower() for m in pattern.finditer(text)})
        return f"{what} words: {', '.join(hits)}" if hits else None

    def _no_quotes(self, caption: dict[str, Any]) -> str | None:
        return "contains quotation marks" if self._quote.search(caption["text"]) else None

    def _no_transcript(self, caption: dict[str, Any], transcript: str | None) -> str | None:
        if not transcript:
            return None
        n = self.config.transcript_ngram
        shared = {
            gram
            for gram in _ngrams(_words(caption["text"]), n) & _ngrams(_words(transcript), n)
            if sum(word not in STOPWORDS for word in gram) >= self.config.transcript_min_content_words
        }
        if not shared:
            return None
        return "repeats the transcript: " + "; ".join(" ".join(gram) for gram in sorted(shared)[:3])

    def _length(self, caption: dict[str, Any]) -> str | None:
        bounds = self.config.global_length if caption["granularity"] == "global" else self.config.fine_length
        size = len(caption["text"])
        if size < bounds.min_chars:
            return f"{size} characters, below the minimum of {bounds.min_chars}"
        if bounds.max_chars is not None and size > bounds.max_chars:
            return f"{size} characters, above the maximum of {bounds.max_chars}"
        return None
