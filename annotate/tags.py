"""Measured numbers → style tags through documented, configurable bins.

Every tag is binned on one stored number: pitch on `pitch_median_hz` with the edges of the speaker's
gender, pitch_variation on `pitch_std_st`, speaking_rate on `articulation_rate_sps`, loudness on
`alpha_ratio_db` (vocal effort), phonation on `voiced_ratio`, gender on `gender_confidence`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import model_validator

from annotate.acoustics import AcousticFeatures
from annotate.base import StrictConfig
from annotate.gender import Gender

Bounds = tuple[float, float]
GenderSource = Literal["given", "estimated"]


class TagBins(StrictConfig):
    """Each pair is (upper edge of the low bin, lower edge of the high bin); an edge belongs to the
    middle bin.

    Pitch edges are the geometric midpoints between the mean F0 of speakers asked to talk at low,
    normal and high pitch (Holmberg, Hillman & Perkell 1989: men 101 / 116 / 155 Hz, women
    182 / 205 / 261 Hz). A speaker of unknown gender is low only below the men's low edge and high
    only above the women's high edge.

    Speaking rate is the articulation rate (syllables per second without pauses). It is slow below the
    10th percentile of the neutral takes of the calibration set's tuning half (RAVDESS actors 1-12:
    3.44, rounded to 3.5; `scripts/calibration_report.py --tune` prints it). That corpus cannot place
    the fast edge: its fastest takes (about 4.8 syllables/s) are an ordinary tempo. The fast edge,
    5.5, lies between espeak-ng's 190 and 240 words per minute (articulation up to 5.3 and from 6.2).
    Vocal effort (alpha ratio) is binned at the terciles of the tuning half.
    """

    female_pitch_hz: Bounds = (193.0, 231.0)
    male_pitch_hz: Bounds = (108.0, 134.0)
    pitch_variation_st: Bounds = (1.2, 3.5)
    articulation_rate_sps: Bounds = (3.5, 5.5)
    alpha_ratio_db: Bounds = (-13.6, -10.1)

    @model_validator(mode="after")
    def _ordered(self) -> TagBins:
        for name in type(self).model_fields:
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: the low edge {low} is above the high edge {high}")
        return self

    def pitch_hz(self, gender: Gender) -> Bounds:
        if gender == "female":
            return self.female_pitch_hz
        if gender == "male":
            return self.male_pitch_hz
        return self.male_pitch_hz[0], self.female_pitch_hz[1]


@dataclass(frozen=True)
class StyleTags:
    gender: Gender
    gender_source: GenderSource
    pitch: str | None  # low | medium | high, for the gender
    pitch_variation: str | None  # monotone | moderate | expressive
    speaking_rate: str | None  # slow | measured | fast
    loudness: str | None  # soft | moderate | loud: vocal effort, not recording level
    phonation: str  # whispered | modal

    def as_row(self) -> dict[str, str | None]:
        return asdict(self)


TAG_NAMES = tuple(StyleTags.__dataclass_fields__)
LEVELS = {
    "pitch": ("low", "medium", "high"),
    "pitch_variation": ("monotone", "moderate", "expressive"),
    "speaking_rate": ("slow", "measured", "fast"),
    "loudness": ("soft", "moderate", "loud"),
}


def bin_value(value: float | None, bounds: Bounds, words: tuple[str, str, str]) -> str | None:
    if value is None:
        return None
    low, high = bounds
    return words[0] if value < low else words[2] if value > high else words[1]


def tag(
    features: AcousticFeatures,
    gender: Gender,
    gender_source: GenderSource,
    bins: TagBins,
    whisper_voiced_ratio: float,
) -> StyleTags:
    return StyleTags(
        gender=gender,
        gender_source=gender_source,
        pitch=bin_value(features.pitch_median_hz, bins.pitch_hz(gender), LEVELS["pitch"]),
        pitch_variation=bin_value(features.pitch_std_st, bins.pitch_variation_st, LEVELS["pitch_variation"]),
        speaking_rate=bin_value(
            features.articulation_rate_sps, bins.articulation_rate_sps, LEVELS["speaking_rate"]
        ),
        loudness=bin_value(features.alpha_ratio_db, bins.alpha_ratio_db, LEVELS["loudness"]),
        phonation="whispered" if features.voiced_ratio < whisper_voiced_ratio else "modal",
    )
