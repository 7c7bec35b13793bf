"""Speaker gender from the voice: median F0 together with formant dispersion (vocal-tract length).

F0 alone calls high-arousal male speech female (RAVDESS men shout at 250-360 Hz), but their vocal
tracts stay long: women's formants lie about 17% higher than men's (Fant 1966), and formant
dispersion barely moves with pitch. The score is the log-likelihood ratio of two Gaussian cues on a
semitone scale with equal spreads for both genders,

    score = sum over cues of (mu_female - mu_male) / sigma^2 * (x - (mu_female + mu_male) / 2),

so P(female) = sigmoid(score). The means come from the literature, not from our calibration data:
- F0: 205 Hz (women) and 116 Hz (men), mean speaking F0 at normal pitch and loudness
  (Holmberg, Hillman & Perkell 1989, J. Voice 3(4); Traunmüller & Eriksson 1995 give 210 / 120 Hz);
- formant dispersion: 1119 Hz (women) and 959 Hz (men), the Reby & McComb (2003) fit of the mean
  F1-F3 of Peterson & Barney's (1952) ten vowels.
The spreads are wide on purpose: F0 moves with emotion within a speaker (4 semitones, twice the
between-speaker spread Holmberg et al. report), formant dispersion with the vowels and measurement
noise of a few seconds of speech (0.7 semitones); both were chosen among a few values on the
calibration set's tuning half (RAVDESS actors 1-12). A segment is `unknown`, not a guess, when its
probability for the likelier gender stays below `min_confidence` or when the two cues point to
different genders (a shouting man: high F0, long vocal tract). A missing cue (no F0 in whisper)
drops out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from annotate.base import StrictConfig

Gender = Literal["female", "male", "unknown"]


class GenderConfig(StrictConfig):
    female_f0_hz: Annotated[float, Field(gt=0)] = 205.0
    male_f0_hz: Annotated[float, Field(gt=0)] = 116.0
    f0_spread_st: Annotated[float, Field(gt=0)] = Field(
        default=4.0, description="Within-gender spread of a segment's median F0, in semitones."
    )
    female_formant_dispersion_hz: Annotated[float, Field(gt=0)] = 1119.0
    male_formant_dispersion_hz: Annotated[float, Field(gt=0)] = 959.0
    formant_dispersion_spread_st: Annotated[float, Field(gt=0)] = Field(
        default=0.7, description="Within-gender spread of a segment's formant dispersion, in semitones."
    )
    min_confidence: Annotated[float, Field(ge=0.5, le=1)] = Field(
        default=0.9, description="Below this probability for the likelier gender, the gender is unknown."
    )


def _semitones(hz: float) -> float:
    return 12 * math.log2(hz)


def _cue(value: float | None, female: float, male: float, spread_st: float) -> float:
    if value is None or value <= 0:
        return 0.0
    mu_f, mu_m = _semitones(female), _semitones(male)
    return (mu_f - mu_m) / spread_st**2 * (_semitones(value) - (mu_f + mu_m) / 2)


@dataclass(frozen=True)
class GenderEstimate:
    female_probability: float
    cues_agree: bool  # no cue points to the other gender than the sum of both

    @property
    def confidence(self) -> float:
        """The probability of the likelier gender."""
        return max(self.female_probability, 1 - self.female_probability)


def estimate(
    pitch_median_hz: float | None, formant_dispersion_hz: float | None, config: GenderConfig
) -> GenderEstimate:
    cues = (
        _cue(pitch_median_hz, config.female_f0_hz, config.male_f0_hz, config.f0_spread_st),
        _cue(
            formant_dispersion_hz,
            config.female_formant_dispersion_hz,
            config.male_formant_dispersion_hz,
            config.formant_dispersion_spread_st,
        ),
    )
    score = sum(cues)
    probability = 1 / (1 + math.exp(-max(-50.0, min(50.0, score))))
    return GenderEstimate(probability, all(cue * score >= 0 for cue in cues))


def decide(estimated: GenderEstimate, config: GenderConfig) -> Gender:
    """The likelier gender, or unknown when unsure or when the cues disagree."""
    if not estimated.cues_agree or estimated.confidence < config.min_confidence:
        return "unknown"
    return "female" if estimated.female_probability >= 0.5 else "male"
