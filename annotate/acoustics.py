"""Measured speaking-style features of one segment.

- pitch: Praat's autocorrelation tracker (parselmouth), median in Hz and variability as the standard
  deviation in semitones around the median;
- rate: syllable nuclei counted on the intensity envelope (after de Jong & Wempe 2009: intensity
  peaks at least `min_dip_db` above their surroundings, above a silence threshold, voiced unless the
  segment is whispered), per second of segment and per second of phonation;
- loudness: ITU-R BS.1770 integrated loudness (pyloudnorm), in LUFS;
- voiced ratio: voiced pitch frames among frames above the silence threshold (low for whisper).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Annotated

import numpy as np
import parselmouth
import pyloudnorm
from pydantic import Field
from scipy.signal import find_peaks

from annotate.audio import SAMPLE_RATE
from annotate.base import StrictConfig


class AcousticsConfig(StrictConfig):
    pitch_floor_hz: Annotated[float, Field(gt=0)] = 60.0
    pitch_ceiling_hz: Annotated[float, Field(gt=0)] = 500.0
    silence_db_below_peak: Annotated[float, Field(gt=0)] = 25.0
    min_dip_db: Annotated[float, Field(gt=0)] = 2.0
    whisper_voiced_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.25, description="Below this voiced ratio a segment counts as whispered."
    )


@dataclass(frozen=True)
class AcousticFeatures:
    pitch_median_hz: float | None
    pitch_std_st: float | None
    speech_rate_sps: float | None
    articulation_rate_sps: float | None
    loudness_lufs: float | None
    voiced_ratio: float

    def as_row(self) -> dict[str, float | None]:
        return asdict(self)


FEATURE_NAMES = tuple(AcousticFeatures.__dataclass_fields__)
_MIN_VOICED_FRAMES = 10
_TIME_STEP_S = 0.01


def measure(wave: np.ndarray, config: AcousticsConfig) -> AcousticFeatures:
    duration = wave.size / SAMPLE_RATE
    sound = parselmouth.Sound(wave.astype(np.float64), sampling_frequency=SAMPLE_RATE)
    pitch = sound.to_pitch_ac(
        time_step=_TIME_STEP_S, pitch_floor=config.pitch_floor_hz, pitch_ceiling=config.pitch_ceiling_hz
    )
    intensity = sound.to_intensity(minimum_pitch=config.pitch_floor_hz, time_step=_TIME_STEP_S)
    level_db = intensity.values[0]
    all_f0 = pitch.selected_array["frequency"]
    voiced_at_level = np.interp(intensity.xs(), pitch.xs(), (all_f0 > 0).astype(np.float64)) > 0.5

    threshold = np.quantile(level_db, 0.99) - config.silence_db_below_peak
    sounding = level_db > threshold
    voiced_ratio = float(np.mean(voiced_at_level[sounding])) if sounding.any() else 0.0
    whispered = voiced_ratio < config.whisper_voiced_ratio

    f0 = all_f0[all_f0 > 0]
    pitch_median = pitch_std = None
    if f0.size >= _MIN_VOICED_FRAMES and not whispered:
        pitch_median = float(np.median(f0))
        semitones = 12 * np.log2(f0 / pitch_median)
        pitch_std = float(np.std(np.clip(semitones, -12, 12)))  # clip octave errors of the tracker

    peaks, _ = find_peaks(level_db, height=threshold, prominence=config.min_dip_db)
    nuclei = peaks if whispered else peaks[voiced_at_level[peaks]]
    phonation_s = float(sounding.sum() * _TIME_STEP_S)
    speech_rate = nuclei.size / duration if duration > 0 else None
    articulation_rate = nuclei.size / phonation_s if phonation_s > 0 else None

    return AcousticFeatures(
        pitch_median_hz=pitch_median,
        pitch_std_st=pitch_std,
        speech_rate_sps=speech_rate,
        articulation_rate_sps=articulation_rate,
        loudness_lufs=_loudness(wave),
        voiced_ratio=voiced_ratio,
    )


def _loudness(wave: np.ndarray) -> float | None:
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    if wave.size < int(0.4 * SAMPLE_RATE):  # BS.1770 gating needs one 400 ms block
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = meter.integrated_loudness(wave.astype(np.float64))
    return float(value) if math.isfinite(value) else None
