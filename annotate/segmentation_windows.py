"""pyannote's segmentation model over a decoded block stream, in sliding windows.

The model (pyannote/segmentation, multi-label, 3 local speakers per 5 s window) scores each window's
frames with the probability that each of its local speakers talks. Windows start at multiples of a
step that is a whole number of model frames, so the frames of all windows fall on one grid
(`FrameGrid`) and per-window values can be averaged frame by frame. Only the current batch of windows
is held as audio; what is kept per window is its (frames x 3) scores, about 3.5 kB.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BeforeValidator, Field

from annotate.audio import SAMPLE_RATE
from annotate.base import StrictConfig
from annotate.diarize import FrameGrid


class PyannoteSegmentationConfig(StrictConfig):
    model_dir: Path | None = Field(
        default=None,
        description="Local segmentation checkpoint folder; default: the bundled pyannote/segmentation.",
    )
    device: str = "cpu"
    torchscript: bool = Field(
        default=True,
        description="On CPU, load a TorchScript export of the model (made once per checkpoint and checked "
        "against pyannote's model) instead of importing pyannote.audio in every worker (about 7 s each).",
    )
    torchscript_cache: Path | None = Field(
        default=None,
        description="Where exports are kept; default $STYLECAPS_CACHE/torchscript, else "
        "~/.cache/stylecaps/torchscript.",
    )
    step_s: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="Window hop (rounded to whole model frames); the window is the model's 5 s."
    )
    batch_size: Annotated[int, Field(ge=1)] = 32
    # pyannote's voice activity hyper-parameters for this model, tuned on DIHARD 3.
    onset: Annotated[float, Field(gt=0, lt=1)] = 0.767
    offset: Annotated[float, Field(gt=0, lt=1)] = 0.377
    min_duration_on_s: Annotated[float, Field(ge=0)] = 0.136
    min_duration_off_s: Annotated[float, Field(ge=0)] = 0.067
    decode_block_s: Annotated[float, Field(gt=0)] = 60.0


def keeps_step(step_s: float) -> BeforeValidator:
    """For a field whose default has another step than the model's own: a partial mapping given in
    config (`{batch_size: 8}`) keeps that step unless it names one."""

    def fill(value: object) -> object:
        return {"step_s": step_s, **value} if isinstance(value, dict) else value

    return BeforeValidator(fill)


@dataclass(frozen=True)
class Window:
    index: int
    start: int  # first sample (windows past the end of the source are zero padded)
    audio: np.ndarray  # (window_samples,) float32
    scores: np.ndarray  # (frames, local speakers) float32 probabilities


class SegmentationModel:
    """The loaded model and its geometry: window length, frame step and first frame centre (samples)."""

    def __init__(self, config: PyannoteSegmentationConfig) -> None:
        import torch

        from annotate.models import bundled_path
        from annotate.segmentation_export import load_segmentation, load_with_pyannote

        folder = Path(config.model_dir) if config.model_dir else bundled_path("pyannote-segmentation")
        if not folder.is_dir():
            raise FileNotFoundError(f"segmentation model folder {folder} does not exist")
        self.config = config
        self.device = torch.device(config.device)
        if self.device.type == "cpu" and config.torchscript:
            self.model, geometry = load_segmentation(folder, config.torchscript_cache)
        else:
            self.model, geometry = load_with_pyannote(folder, self.device)
        self.window_samples = geometry.window_samples
        self.frame_center = geometry.frame_center
        self.frame_step = geometry.frame_step
        self.frames_per_window = geometry.frames_per_window
        self.frames_per_hop = max(1, round(config.step_s * SAMPLE_RATE / self.frame_step))
        self.hop = self.frames_per_hop * self.frame_step
        if self.hop > self.window_samples:
            window_s = self.window_samples / SAMPLE_RATE
            raise ValueError(f"step_s {config.step_s} is longer than the model's {window_s} s window")

    def grid(self, total_samples: int) -> FrameGrid:
        return FrameGrid(self.frame_step, self.frame_center, total_samples)

    def windows(self, blocks: Iterable[np.ndarray]) -> Iterator[Window]:
        """Every window of the stream, scored; the last ones are zero padded to cover the end."""
        pending: list[tuple[int, np.ndarray]] = []
        for index, start, audio in self._cut(blocks):
            pending.append((start, audio))
            if len(pending) == self.config.batch_size:
                yield from self._score(index - len(pending) + 1, pending)
                pending = []
        if pending:
            yield from self._score(index - len(pending) + 1, pending)

    def _cut(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[int, int, np.ndarray]]:
        buffer = np.zeros(0, dtype=np.float32)
        buffer_start = 0  # source sample of buffer[0]
        index = 0
        total = 0
        for block in blocks:
            total += block.size
            buffer = np.concatenate((buffer, block))
            while index * self.hop + self.window_samples <= total:
                offset = index * self.hop - buffer_start
                yield index, index * self.hop, buffer[offset : offset + self.window_samples].copy()
                index += 1
            drop = index * self.hop - buffer_start  # samples no later window needs
            buffer, buffer_start = buffer[drop:], buffer_start + drop
        # Windows that reach past the end, until one covers the last sample (one at least).
        while index == 0 or (index - 1) * self.hop + self.window_samples < total:
            offset = index * self.hop - buffer_start
            audio = np.zeros(self.window_samples, dtype=np.float32)
            tail = buffer[offset:]
            audio[: tail.size] = tail
            yield index, index * self.hop, audio
            index += 1

    def _score(self, first: int, batch: list[tuple[int, np.ndarray]]) -> Iterator[Window]:
        import torch

        waves = torch.from_numpy(np.stack([audio for _, audio in batch]))[:, None]
        with torch.no_grad():
            scores = self.model(waves.to(self.device)).cpu().numpy()
        for offset, ((start, audio), window_scores) in enumerate(zip(batch, scores, strict=True)):
            yield Window(first + offset, start, audio, window_scores)


class FrameAverage:
    """Hamming-weighted average over overlapping windows of per-frame values (as pyannote aggregates):
    frames near a window's edges, where the model sees little context, weigh less."""

    def __init__(self, model: SegmentationModel, channels: int) -> None:
        self._model = model
        self._weights = np.hamming(model.frames_per_window + 2)[1:-1].astype(np.float64)  # no zero ends
        self._sums = np.zeros((0, channels))
        self._norms = np.zeros(0)

    def add(self, window_index: int, values: np.ndarray) -> None:
        first = window_index * self._model.frames_per_hop
        end = first + values.shape[0]
        if end > self._norms.size:
            grow = max(end, 2 * self._norms.size) - self._norms.size
            self._sums = np.concatenate((self._sums, np.zeros((grow, self._sums.shape[1]))))
            self._norms = np.concatenate((self._norms, np.zeros(grow)))
        self._sums[first:end] += values * self._weights[: values.shape[0], None]
        self._norms[first:end] += self._weights[: values.shape[0]]

    def result(self, frames: int) -> np.ndarray:
        """(frames, channels) averages; frames no window covered are 0."""
        sums = np.zeros((frames, self._sums.shape[1]))
        norms = np.ones(frames)
        covered = min(frames, self._norms.size)
        sums[:covered] = self._sums[:covered]
        norms[:covered] = np.where(self._norms[:covered] > 0, self._norms[:covered], 1.0)
        return sums / norms[:, None]


def hysteresis(scores: np.ndarray, onset: float, offset: float) -> np.ndarray:
    """Active from where a score rises above onset until it falls below offset; `scores` is
    (frames,) or (frames, channels), each channel on its own. The same as pyannote's
    `binarize_ndarray` (a test holds them equal), without importing pyannote.audio in a worker."""
    if scores.size == 0:
        return np.zeros(scores.shape, dtype=bool)
    columns = np.nan_to_num(scores.reshape(scores.shape[0], -1))
    on = columns > onset
    decided = on | (columns < offset)  # frames whose state does not depend on the previous one
    frames = np.arange(columns.shape[0])[:, None]
    last_decided = np.maximum.accumulate(np.where(decided, frames, -1), axis=0)
    # Before a channel's first decided frame, its first score against the thresholds' midpoint decides.
    initial = np.broadcast_to(columns[0] >= (onset + offset) / 2, columns.shape)
    held = np.take_along_axis(on, np.maximum(last_decided, 0), axis=0)
    return np.where(last_decided >= 0, held, initial).reshape(scores.shape)


def clean_durations(active: np.ndarray, min_on_frames: int, min_off_frames: int) -> np.ndarray:
    """Fill pauses shorter than min_off_frames, then remove activity shorter than min_on_frames
    (pyannote's order)."""
    from annotate.diarize import runs

    active = active.copy()
    for first, end, value in runs(active.astype(np.int8)):
        if not value and first > 0 and end < active.size and end - first < min_off_frames:
            active[first:end] = True
    for first, end, value in runs(active.astype(np.int8)):
        if value and end - first < min_on_frames:
            active[first:end] = False
    return active
