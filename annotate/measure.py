"""The measure stage: decode a segment, measure it, decide its gender, and tag it.

It runs before any captioner, so the numbers and tags are there for every backend: the acoustic
captioner words the tags, and the rules verifier's `measured_*` checks hold any caption against them.
A gender given in the manifest or source spec wins over the estimate (`gender_source`: given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from annotate.acoustics import FEATURE_NAMES, AcousticFeatures, AcousticsConfig, measure
from annotate.audio import decode_flac
from annotate.base import BatchStage, Row, StrictConfig
from annotate.gender import Gender, GenderConfig, decide, estimate
from annotate.tags import TAG_NAMES, GenderSource, StyleTags, TagBins, tag


class MeasureConfig(StrictConfig):
    acoustics: AcousticsConfig = AcousticsConfig()
    gender: GenderConfig = GenderConfig()
    bins: TagBins = TagBins()


@dataclass(frozen=True)
class Measurements:
    features: AcousticFeatures
    female_probability: float  # from the voice, also when the gender was given
    gender_confidence: float  # 1 when given; else the estimate's probability for its likelier gender
    tags: StyleTags

    def as_row(self) -> dict[str, Any]:
        return {
            **self.features.as_row(),
            "female_probability": self.female_probability,
            "gender_confidence": self.gender_confidence,
            "tags": self.tags.as_row(),
        }


MEASUREMENT_NAMES = (*FEATURE_NAMES, "female_probability", "gender_confidence")
TAGS_TYPE = pa.struct([pa.field(name, pa.string()) for name in TAG_NAMES])


def measure_segment(wave: np.ndarray, given_gender: str | None, config: MeasureConfig) -> Measurements:
    return interpret(measure(wave, config.acoustics), given_gender, config)


def interpret(features: AcousticFeatures, given_gender: str | None, config: MeasureConfig) -> Measurements:
    """The gender (given, else estimated) and the tags of measured features."""
    estimated = estimate(features.pitch_median_hz, features.formant_dispersion_hz, config.gender)
    gender: Gender
    source: GenderSource
    if given_gender in ("female", "male"):
        gender, source, confidence = given_gender, "given", 1.0  # type: ignore[assignment]
    else:
        gender, source, confidence = decide(estimated, config.gender), "estimated", estimated.confidence
    tags = tag(features, gender, source, config.bins, config.acoustics.whisper_voiced_ratio)
    return Measurements(features, estimated.female_probability, confidence, tags)


class MeasureStage(BatchStage):
    name: ClassVar[str] = "measure"
    columns: ClassVar[tuple[pa.Field, ...]] = (
        *(pa.field(name, pa.float64()) for name in MEASUREMENT_NAMES),
        pa.field("tags", TAGS_TYPE),
    )

    def __init__(self, config: MeasureConfig) -> None:
        self.config = config

    def setup(self) -> None:
        """Nothing to load: parselmouth and pyloudnorm are plain signal processing."""

    def teardown(self) -> None:
        """Nothing to release."""

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [
            {
                **row,
                **measure_segment(
                    decode_flac(row["audio"]["bytes"]), row.get("gender"), self.config
                ).as_row(),
            }
            for row in rows
        ]
