"""Measured features → style tags through documented, configurable bins.

Pitch is binned within a voice register (lower / upper, split at `register_split_hz`) so that a
high male voice and a low female voice are both described the way a listener would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated

from pydantic import Field, model_validator

from annotate.acoustics import AcousticFeatures
from annotate.base import StrictConfig

Bounds = tuple[float, float]


class TagBins(StrictConfig):
    """Each pair is (upper edge of the low bin, lower edge of the high bin)."""

    register_split_hz: Annotated[float, Field(gt=0)] = 160.0
    lower_register_pitch_hz: Bounds = (95.0, 130.0)
    upper_register_pitch_hz: Bounds = (180.0, 235.0)
    pitch_variation_st: Bounds = (1.2, 3.5)
    articulation_rate_sps: Bounds = (4.0, 6.2)
    loudness_lufs: Bounds = (-27.0, -18.0)

    @model_validator(mode="after")
    def _ordered(self) -> TagBins:
        for name in (
            "lower_register_pitch_hz",
            "upper_register_pitch_hz",
            "pitch_variation_st",
            "articulation_rate_sps",
            "loudness_lufs",
        ):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: the low edge {low} is above the high edge {high}")
        return self


@dataclass(frozen=True)
class StyleTags:
    pitch: str | None  # low | medium | high
    pitch_variation: str | None  # monotone | moderate | expressive
    speaking_rate: str | None  # slow | measured | fast
    loudness: str | None  # soft | moderate | loud
    phonation: str  # whispered | modal

    def as_row(self) -> dict[str, str | None]:
        return asdict(self)


TAG_NAMES = tuple(StyleTags.__dataclass_fields__)


def _bin(value: float | None, bounds: Bounds, words: tuple[str, str, str]) -> str | None:
    if value is None:
        return None
    low, high = bounds
    return words[0] if value < low else words[2] if value > high else words[1]


def tag(features: AcousticFeatures, bins: TagBins, whisper_voiced_ratio: float) -> StyleTags:
    whispered = features.voiced_ratio < whisper_voiced_ratio
    pitch_bounds = (
        bins.lower_register_pitch_hz
        if features.pitch_median_hz is None or features.pitch_median_hz < bins.register_split_hz
        else bins.upper_register_pitch_hz
    )
    return StyleTags(
        pitch=_bin(features.pitch_median_hz, pitch_bounds, ("low", "medium", "high")),
        pitch_variation=_bin(
            features.pitch_std_st, bins.pitch_variation_st, ("monotone", "moderate", "expressive")
        ),
        speaking_rate=_bin(
            features.articulation_rate_sps, bins.articulation_rate_sps, ("slow", "measured", "fast")
        ),
        loudness=_bin(features.loudness_lufs, bins.loudness_lufs, ("soft", "moderate", "loud")),
        phonation="whispered" if whispered else "modal",
    )
