"""Measured speaking-style features of one segment (signal processing only, no decisions).

- pitch: Praat's autocorrelation tracker (parselmouth), median in Hz and variability as the standard
  deviation in semitones around the median;
- rate: syllable nuclei counted on the intensity envelope (after de Jong & Wempe 2009: intensity
  peaks standing at least `min_dip_db` above their surroundings, above a silence threshold, voiced
  unless the segment is whispered), per second of speech span (first to last sounding frame, so
  leading and trailing silence does not count, pauses inside do) and per second of articulation
  (the span less its silent pauses of `min_pause_s` or more); nothing in it depends on the language;
- formant dispersion: the mean spacing of F1-F4 (Burg, over the loudest voiced frames), fitted as
  F_i = (2i - 1) / 2 * dispersion (Reby & McComb 2003); it scales inversely with vocal-tract length;
- alpha ratio: energy 1-5 kHz over 50 Hz-1 kHz in dB (eGeMAPS, Eyben et al. 2016), the median over
  voiced sounding frames; it rises with vocal effort and does not change with recording gain;
- loudness: ITU-R BS.1770 integrated loudness (pyloudnorm), in LUFS: the recording level, kept as
  information, not used for any tag;
- voiced ratio: voiced pitch frames among frames above the silence threshold (low for whisper).

Every threshold is relative to the segment's own loudest frames, so a gain change moves none of the
measures except `loudness_lufs`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Annotated

import numpy as np
import parselmouth
import pyloudnorm
from parselmouth.praat import call
from pydantic import Field
from scipy.signal import find_peaks

from annotate.audio import SAMPLE_RATE
from annotate.base import StrictConfig


class AcousticsConfig(StrictConfig):
    pitch_floor_hz: Annotated[float, Field(gt=0)] = 60.0
    pitch_ceiling_hz: Annotated[float, Field(gt=0)] = Field(
        default=700.0, description="High enough for high-arousal female speech (RAVDESS reaches 650 Hz)."
    )
    silence_db_below_peak: Annotated[float, Field(gt=0)] = Field(
        default=25.0, description="Frames quieter than the loudest (99th percentile) by more are silence."
    )
    speech_span_db_below_peak: Annotated[float, Field(gt=0)] = Field(
        default=40.0,
        description="The speech span runs from the first to the last frame within this much of the loudest: "
        "it reaches below the silence threshold, since weak consonants at its edges are speech.",
    )
    min_dip_db: Annotated[float, Field(gt=0)] = Field(
        default=3.0, description="A syllable nucleus stands out at least this much from its surroundings."
    )
    min_pause_s: Annotated[float, Field(gt=0)] = Field(
        default=0.3,
        description="Silences this long or longer inside the speech are pauses (de Jong & Wempe).",
    )
    whisper_voiced_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.25, description="Below this voiced ratio a segment counts as whispered."
    )
    formant_ceiling_hz: Annotated[float, Field(gt=0)] = Field(
        default=5500.0, description="Burg formant search range: 5.5 formants below this frequency."
    )


@dataclass(frozen=True)
class AcousticFeatures:
    pitch_median_hz: float | None
    pitch_std_st: float | None
    syllable_count: float  # syllable nuclei found
    speech_rate_sps: float | None
    articulation_rate_sps: float | None
    loudness_lufs: float | None
    voiced_ratio: float
    formant_dispersion_hz: float | None
    alpha_ratio_db: float | None

    def as_row(self) -> dict[str, float | None]:
        return asdict(self)


FEATURE_NAMES = tuple(AcousticFeatures.__dataclass_fields__)
_MIN_VOICED_FRAMES = 10
_TIME_STEP_S = 0.01
_FORMANT_TIME_STEP_S = 0.02  # formants only feed a median: half the frames, same answer, less time
_FORMANT_WINDOW_S = 10.0  # ... and the middle 10 s of a longer segment give that median as well
_FORMANTS = (1, 2, 3, 4)
_SPECTRUM_FRAME = 512  # 32 ms at 16 kHz
_ALPHA_LOW_HZ, _ALPHA_SPLIT_HZ, _ALPHA_HIGH_HZ = 50.0, 1000.0, 5000.0


def measure(wave: np.ndarray, config: AcousticsConfig) -> AcousticFeatures:
    sound = parselmouth.Sound(wave.astype(np.float64), sampling_frequency=SAMPLE_RATE)
    pitch = sound.to_pitch_ac(
        time_step=_TIME_STEP_S, pitch_floor=config.pitch_floor_hz, pitch_ceiling=config.pitch_ceiling_hz
    )
    intensity = sound.to_intensity(minimum_pitch=config.pitch_floor_hz, time_step=_TIME_STEP_S)
    level_db = intensity.values[0]
    level_times = intensity.xs()
    all_f0 = pitch.selected_array["frequency"]
    voiced_at_level = _voiced_at(level_times, pitch.xs(), all_f0)

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
    span_s, articulation_s = _speech_time(
        sounding,
        level_db > np.quantile(level_db, 0.99) - config.speech_span_db_below_peak,
        round(config.min_pause_s / _TIME_STEP_S),
    )

    # Whisper has no voiced frames: formants and tilt then come from the sounding frames.
    analysed = sounding if whispered else sounding & voiced_at_level
    return AcousticFeatures(
        pitch_median_hz=pitch_median,
        pitch_std_st=pitch_std,
        syllable_count=float(nuclei.size),
        speech_rate_sps=nuclei.size / span_s if span_s > 0 else None,
        articulation_rate_sps=nuclei.size / articulation_s if articulation_s > 0 else None,
        loudness_lufs=_loudness(wave),
        voiced_ratio=voiced_ratio,
        formant_dispersion_hz=_formant_dispersion(sound, level_times, level_db, analysed, config),
        alpha_ratio_db=_alpha_ratio(wave, level_times, analysed),
    )


def _speech_time(sounding: np.ndarray, audible: np.ndarray, min_pause_frames: int) -> tuple[float, float]:
    """(span, articulation time) in seconds: first to last audible frame, and that span less the
    silent runs of at least `min_pause_frames` inside it (shorter ones are stop closures and the like)."""
    frames = np.flatnonzero(audible)
    if frames.size == 0:
        return 0.0, 0.0
    inside = sounding[frames[0] : frames[-1] + 1]
    changes = np.flatnonzero(np.diff(np.concatenate(([1], inside, [1])).astype(np.int8)))
    runs = changes[1::2] - changes[0::2]  # lengths of the silent runs inside the span
    paused = int(runs[runs >= min_pause_frames].sum())
    return inside.size * _TIME_STEP_S, (inside.size - paused) * _TIME_STEP_S


def _voiced_at(times: np.ndarray, pitch_times: np.ndarray, f0: np.ndarray) -> np.ndarray:
    return np.interp(times, pitch_times, (f0 > 0).astype(np.float64)) > 0.5


def _formant_dispersion(
    sound: parselmouth.Sound,
    level_times: np.ndarray,
    level_db: np.ndarray,
    analysed: np.ndarray,
    config: AcousticsConfig,
) -> float | None:
    """Mean formant spacing over the louder half of the analysed frames (vowel cores, where the
    tracker is reliable), from the per-formant medians."""
    if analysed.sum() < _MIN_VOICED_FRAMES:
        return None
    loud_enough = analysed & (level_db >= np.median(level_db[analysed]))
    if sound.duration > _FORMANT_WINDOW_S:
        start = (sound.duration - _FORMANT_WINDOW_S) / 2
        sound = sound.extract_part(from_time=start, to_time=start + _FORMANT_WINDOW_S, preserve_times=True)
    # Praat's own resampling to twice the ceiling costs a third of the stage's time, but a faster
    # resampler (soxr) shifts the dispersion by about 20 Hz against the method the gender's
    # reference values and spreads were checked with.
    formant = sound.to_formant_burg(
        time_step=_FORMANT_TIME_STEP_S, max_number_of_formants=5.5, maximum_formant=config.formant_ceiling_hz
    )
    times = np.asarray(formant.ts())
    keep = np.interp(times, level_times, loud_enough.astype(np.float64)) > 0.5
    if keep.sum() < 3:
        return None
    medians = []
    for number in _FORMANTS:
        track = call(formant, "To Matrix", number).values[0][keep]
        track = track[np.isfinite(track) & (track > 0)]
        medians.append(float(np.median(track)) if track.size else math.nan)
    positions = np.array([(2 * n - 1) / 2 for n in _FORMANTS])
    found = np.isfinite(medians)
    if found.sum() < 3:
        return None
    values = np.array(medians)[found]
    return float(np.sum(values * positions[found]) / np.sum(positions[found] ** 2))


def _alpha_ratio(wave: np.ndarray, level_times: np.ndarray, analysed: np.ndarray) -> float | None:
    """Median over the analysed frames of 10 log10(E[1-5 kHz] / E[50 Hz-1 kHz])."""
    starts = np.round((level_times[analysed] * SAMPLE_RATE) - _SPECTRUM_FRAME / 2).astype(int)
    starts = starts[(starts >= 0) & (starts + _SPECTRUM_FRAME <= wave.size)]
    if starts.size < _MIN_VOICED_FRAMES:
        return None
    frames = wave[starts[:, None] + np.arange(_SPECTRUM_FRAME)] * np.hanning(_SPECTRUM_FRAME)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(_SPECTRUM_FRAME, 1 / SAMPLE_RATE)
    low = power[:, (freqs >= _ALPHA_LOW_HZ) & (freqs < _ALPHA_SPLIT_HZ)].sum(axis=1)
    high = power[:, (freqs >= _ALPHA_SPLIT_HZ) & (freqs < _ALPHA_HIGH_HZ)].sum(axis=1)
    valid = (low > 0) & (high > 0)
    if valid.sum() < _MIN_VOICED_FRAMES:
        return None
    return float(np.median(10 * np.log10(high[valid] / low[valid])))


def _loudness(wave: np.ndarray) -> float | None:
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    if wave.size < int(0.4 * SAMPLE_RATE):  # BS.1770 gating needs one 400 ms block
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = meter.integrated_loudness(wave.astype(np.float64))
    return float(value) if math.isfinite(value) else None
