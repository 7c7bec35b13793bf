"""Captions checked against the segment's measurements: the `measured_*` rules.

A caption fails `measured_gender`, `measured_pitch`, `measured_rate` or `measured_loudness` when it
states a level of the attribute that contradicts the measure stage's numbers with enough confidence:
the other gender when the gender was given or estimated with `gender_min_confidence`; the opposite
extreme of pitch, rate or vocal effort when the measured number lies at least a margin beyond the
edge of that extreme's bin. A middle bin, a missing measurement or an unknown gender never fails.

Only plain statements count. A mention is ignored when its clause negates, hedges, compares or
describes a change ("not particularly fast", "slightly higher than average", "starts slow, then
speeds up"), and an attribute is ignored when the caption states both of its extremes. The rules read
only the row's columns, so they check a caption from any backend.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from annotate.base import StrictConfig
from annotate.tags import TagBins

# Words that state one level of an attribute, "|"-separated (base forms only: a comparative compares).
GENDER_TERMS = {
    "female": "female|woman|women|woman's|feminine|girl|lady|she|her|hers|herself",
    "male": "male|man|men|man's|masculine|boy|guy|gentleman|he|him|his|himself",
}
PITCH_TERMS = {
    "high": "high-pitched|high pitched|high pitch|high-pitch|pitched high|high voice|voice high|high register"
    "|shrill|squeaky",
    "low": "low-pitched|low pitched|low pitch|low-pitch|pitched low|low voice|voice low|low register|deep"
    "|deep-voiced|bass",
}
RATE_TERMS = {
    "fast": "fast|fast-paced|quick|quickly|rapid|rapidly|hurried|hurriedly|brisk|briskly|swift|swiftly"
    "|rushed",
    "slow": "slow|slowly|slow-paced|unhurried|leisurely|sluggish|drawn-out|drawn out|plodding",
}
LOUDNESS_TERMS = {
    "loud": "loud|loudly|shouting|shouts|shouted|yelling|yells|booming|forceful|forcefully",
    "soft": "soft|softly|soft-spoken|quiet|quietly|hushed|low in volume|low volume|barely audible",
}
# A clause with any of these does not state its attribute plainly.
QUALIFIERS = "|".join(
    (
        # negation
        "not|no|never|neither|nor|without|hardly|barely|scarcely|far from|rather than|instead of|lack|lacks"
        "|lacking",
        # hedges
        "slightly|somewhat|a bit|a little|a touch|fairly|mildly|moderately|relatively|rather|almost|nearly"
        "|at times|sometimes|occasionally|perhaps|maybe|possibly|seems|seem|may|might|tends|borderline",
        # comparison
        "than|compared|comparison|average|typical|usual|more|less",
        # change over time
        "starts|start|starting|begins|begin|beginning|becomes|become|becoming|turns|gradually|increasingly"
        "|later|at first|toward the end|towards the end|by the end|until|speeds up|slows down|shifts"
        "|alternates|alternating|varies|varying",
    )
)
CLAUSE_BREAK = r"[.;:!?,()]|\b(?:but|then|while|whereas|although|though|yet|and then)\b"


class MeasuredChecksConfig(StrictConfig):
    gender_min_confidence: Annotated[float, Field(ge=0.5, le=1)] = Field(
        default=0.9, description="A caption's gender fails only against a gender at least this sure."
    )
    pitch_margin_st: Annotated[float, Field(ge=0)] = Field(
        default=1.0, description="How far beyond the pitch bin edge (semitones) a contradiction must be."
    )
    rate_margin_sps: Annotated[float, Field(ge=0)] = Field(
        default=0.3, description="How far beyond the rate bin edge (syllables/s) a contradiction must be."
    )
    effort_margin_db: Annotated[float, Field(ge=0)] = Field(
        default=1.0,
        description="How far beyond the vocal-effort (alpha ratio) bin edge a contradiction must be.",
    )


def _pattern(terms: str) -> re.Pattern[str]:
    """Any of the terms as whole words (a hyphen or apostrophe does not end a word here)."""
    alternatives = sorted((re.escape(term) for term in terms.split("|")), key=len, reverse=True)
    return re.compile(r"(?<![\w'-])(?:" + "|".join(alternatives) + r")(?![\w'-])", re.IGNORECASE)


class ClaimReader:
    """The levels a caption plainly states, per attribute."""

    def __init__(self) -> None:
        self._clause_break = re.compile(CLAUSE_BREAK, re.IGNORECASE)
        self._qualifier = re.compile(r"n't\b|\b(?:" + QUALIFIERS + r")\b", re.IGNORECASE)
        self._terms = {
            attribute: {level: _pattern(terms) for level, terms in lexicon.items()}
            for attribute, lexicon in (
                ("gender", GENDER_TERMS),
                ("pitch", PITCH_TERMS),
                ("rate", RATE_TERMS),
                ("loudness", LOUDNESS_TERMS),
            )
        }

    def clauses(self, text: str) -> list[str]:
        return [clause for clause in self._clause_break.split(text) if clause and clause.strip()]

    def claims(self, text: str, attribute: str) -> str | None:
        """The one level the caption states plainly, or None (no plain statement, or both extremes)."""
        stated = {
            level
            for clause in self.clauses(text)
            if not self._qualifier.search(clause)
            for level, pattern in self._terms[attribute].items()
            if pattern.search(clause)
        }
        return stated.pop() if len(stated) == 1 else None


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


class MeasuredChecks:
    """The four `measured_*` rules over a caption text and its row's measurements."""

    def __init__(self, config: MeasuredChecksConfig, bins: TagBins) -> None:
        self.config = config
        self.bins = bins
        self.reader = ClaimReader()

    def gender(self, text: str, row: Mapping[str, Any]) -> str | None:
        tags = row.get("tags") or {}
        measured, confidence = tags.get("gender"), _number(row, "gender_confidence")
        claimed = self.reader.claims(text, "gender")
        if claimed is None or measured not in ("female", "male") or claimed == measured:
            return None
        if confidence is None or confidence < self.config.gender_min_confidence:
            return None
        how = "given" if tags.get("gender_source") == "given" else f"estimated, confidence {confidence:.2f}"
        return f"says {claimed}, the speaker is {measured} ({how})"

    def pitch(self, text: str, row: Mapping[str, Any]) -> str | None:
        tags = row.get("tags") or {}
        hz = _number(row, "pitch_median_hz")
        claimed = self.reader.claims(text, "pitch")
        if claimed is None or hz is None:
            return None
        gender = tags.get("gender") if tags.get("gender") in ("female", "male") else "unknown"
        low, high = self.bins.pitch_hz(gender)
        margin = 2 ** (self.config.pitch_margin_st / 12)
        if (claimed == "high" and hz < low / margin) or (claimed == "low" and hz > high * margin):
            words = {"female": "a woman", "male": "a man", "unknown": "a voice of unknown gender"}
            edges = f"low below {low:.0f} Hz, high above {high:.0f} Hz for {words[gender]}"
            return f"says {claimed} pitch, measured median F0 {hz:.0f} Hz ({edges})"
        return None

    def rate(self, text: str, row: Mapping[str, Any]) -> str | None:
        return self._extreme(
            text,
            row,
            "rate",
            "articulation_rate_sps",
            self.bins.articulation_rate_sps,
            self.config.rate_margin_sps,
            ("slow", "fast"),
            "syllables/s",
        )

    def loudness(self, text: str, row: Mapping[str, Any]) -> str | None:
        return self._extreme(
            text,
            row,
            "loudness",
            "alpha_ratio_db",
            self.bins.alpha_ratio_db,
            self.config.effort_margin_db,
            ("soft", "loud"),
            "dB",
        )

    def _extreme(
        self,
        text: str,
        row: Mapping[str, Any],
        attribute: str,
        column: str,
        bounds: tuple[float, float],
        margin: float,
        levels: tuple[str, str],
        unit: str,
    ) -> str | None:
        value = _number(row, column)
        claimed = self.reader.claims(text, attribute)
        if claimed is None or value is None:
            return None
        low, high = bounds
        if (claimed == levels[1] and value < low - margin) or (
            claimed == levels[0] and value > high + margin
        ):
            return (
                f"says {claimed}, measured {column} {value:.2f} ({levels[0]} below {low:g}, "
                f"{levels[1]} above {high:g} {unit})"
            )
        return None
