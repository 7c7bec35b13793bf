"""Vocal separation with demucs, streamed: a source of any length becomes a 16 kHz mono vocals FLAC.

The model (an htdemucs-family bag loaded from a local folder through demucs's own
`get_model(name, repo=Path)`) runs on windows of `chunk_s` seconds plus `context_s` seconds of the next
chunk; consecutive windows overlap by `context_s`, and the overlap is crossfaded linearly. Window starts
fall on the stride of demucs's own internal split, so inside a window the model sees the same
segments as it would on the whole file. Memory is bounded by the window, not by the file: the decoded
window at the model's rate and channels, its four stems, and the crossfade tail.

Like demucs's command line, the input is normalised by the mean and standard deviation of its mono
mix, which takes one extra decode pass (no model) over the file before separating.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import soundfile as sf
import soxr
from pydantic import Field, model_validator

from annotate.audio import SAMPLE_RATE, iter_audio
from annotate.base import BatchStage, Row, StrictConfig

VOCALS = "vocals"


class DemucsConfig(StrictConfig):
    name: str = Field(default="htdemucs", description="The model's name in its repo folder (<name>.yaml).")
    repo: Path = Field(description="Local folder with the model files (demucs's repo layout).")
    device: str = "cpu"
    chunk_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="Audio separated per window (rounded to demucs's internal stride)."
    )
    context_s: Annotated[float, Field(ge=0)] = Field(
        default=8.0, description="Overlap between windows, crossfaded (at least one model segment)."
    )
    overlap: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.25, description="demucs's own overlap between its internal segments."
    )
    shifts: Annotated[int, Field(ge=0)] = Field(
        default=0, description="demucs's random time shifts averaged (0: deterministic; 1+ slower)."
    )
    decode_block_s: Annotated[float, Field(gt=0)] = 30.0


@dataclass(frozen=True)
class SeparationResult:
    path: Path
    samples: int  # at 16 kHz
    model_rate: int


class DemucsSeparator:
    def __init__(self, config: DemucsConfig) -> None:
        self.config = config
        self._model = None

    def setup(self) -> None:
        from demucs.pretrained import get_model

        repo = Path(self.config.repo)
        if not repo.is_dir():
            raise FileNotFoundError(f"demucs model folder {repo} does not exist")
        model = get_model(self.config.name, repo=repo)
        if VOCALS not in model.sources:
            raise ValueError(f"demucs model {self.config.name!r} has no {VOCALS} stem: {model.sources}")
        self._model = model.eval()

    def _geometry(self) -> tuple[int, int]:
        """(chunk, context) in model samples: multiples of demucs's internal stride."""
        model = self._model
        segment = int(model.samplerate * min(float(m.segment) for m in getattr(model, "models", [model])))
        stride = int((1 - self.config.overlap) * segment)
        chunk = max(1, round(self.config.chunk_s * model.samplerate / stride)) * stride
        context = -(-round(self.config.context_s * model.samplerate) // stride) * stride
        return chunk, context

    def separate_file(self, src: str | Path, dst: str | Path) -> SeparationResult:
        """Write the vocals of `src` to `dst` as 16 kHz mono 16-bit FLAC; as long as `src` at 16 kHz."""
        if self._model is None:
            self.setup()
        model = self._model
        rate, channels = model.samplerate, model.audio_channels
        block_s = self.config.decode_block_s
        mean, std = _mix_statistics(iter_audio(src, block_s, rate, 1))
        target = _length_at_16k(src)
        resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        written = 0
        model_samples = 0
        dst = Path(dst)
        with sf.SoundFile(dst, "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as out:

            def write(wave: np.ndarray, last: bool = False) -> None:
                nonlocal written
                samples = resampler.resample_chunk(wave, last=last)
                if target is not None:
                    samples = samples[: max(0, target - written)]
                out.write(np.clip(samples, -1.0, 1.0))
                written += samples.size

            for vocals in self._vocals(iter_audio(src, block_s, rate, channels), mean, std):
                model_samples += vocals.size
                write(vocals)
            write(np.zeros(0, dtype=np.float32), last=True)
            expected = target if target is not None else round(model_samples * SAMPLE_RATE / rate)
            if written < expected:  # resampling rounding: pad the last sample or so
                out.write(np.zeros(expected - written, dtype=np.float32))
                written = expected
        return SeparationResult(dst, written, rate)

    def _vocals(self, blocks: Iterable[np.ndarray], mean: float, std: float) -> Iterator[np.ndarray]:
        """Mono vocals at the model's rate, window by window, crossfaded over the context."""
        chunk, context = self._geometry()
        fade_in = np.linspace(0.0, 1.0, context + 2, dtype=np.float32)[1:-1]
        tail = np.zeros(0, dtype=np.float32)
        for window, is_last in _windows(blocks, chunk, context):
            vocals = self._separate((window - mean) / std) * std + mean
            head = min(tail.size, vocals.size)
            vocals[:head] = tail[:head] * (1 - fade_in[:head]) + vocals[:head] * fade_in[:head]
            if is_last:
                yield vocals
                return
            tail = vocals[chunk:].copy()
            yield vocals[:chunk]

    def _separate(self, window: np.ndarray) -> np.ndarray:
        """(frames, channels) at the model's rate → mono vocals (frames,)."""
        import torch
        from demucs.apply import apply_model

        model = self._model
        mix = torch.from_numpy(np.ascontiguousarray(window.T))[None]
        with torch.no_grad():
            stems = apply_model(
                model,
                mix,
                shifts=self.config.shifts,
                split=True,
                overlap=self.config.overlap,
                device=self.config.device,
            )
        vocals = stems[0, model.sources.index(VOCALS)]
        return vocals.mean(dim=0).cpu().numpy().astype(np.float32)


def _windows(blocks: Iterable[np.ndarray], chunk: int, context: int) -> Iterator[tuple[np.ndarray, bool]]:
    """Windows of chunk + context frames starting every `chunk` frames; the last one is shorter and
    flagged. Holds at most one window plus one decode block."""
    buffer: np.ndarray | None = None
    for block in blocks:
        buffer = block if buffer is None else np.concatenate((buffer, block))
        while buffer.shape[0] > chunk + context:
            yield buffer[: chunk + context], False
            buffer = buffer[chunk:]
    if buffer is not None and buffer.shape[0]:
        yield buffer, True


def _mix_statistics(blocks: Iterable[np.ndarray]) -> tuple[float, float]:
    """Mean and standard deviation of the mono mix (as demucs's command line normalises)."""
    count, total, squares = 0, 0.0, 0.0
    for block in blocks:
        count += block.size
        total += float(block.sum(dtype=np.float64))
        squares += float(np.square(block, dtype=np.float64).sum())
    if count == 0:
        return 0.0, 1.0
    mean = total / count
    std = (max(squares / count - mean * mean, 0.0)) ** 0.5
    return mean, std if std > 1e-8 else 1.0


def _length_at_16k(path: str | Path) -> int | None:
    """The file's length at 16 kHz as `annotate.audio.iter_mono_16k` decodes it (soxr streams round
    frames x 16000 / rate), when libsndfile knows it; None for formats only ffmpeg reads."""
    try:
        info = sf.info(str(path))
    except sf.LibsndfileError:
        return None
    return round(info.frames * SAMPLE_RATE / info.samplerate)


class SeparateConfig(StrictConfig):
    backend: Literal["none", "demucs"] = "none"
    demucs: DemucsConfig | None = Field(
        default=None, description="The demucs backend's model (required there)."
    )
    work_dir: Path | None = Field(
        default=None,
        description="Where the vocals of sources being processed are written (removed once cut); default "
        "<run>/work/separated. On a cluster, a folder every node sees (the run directory usually is).",
    )

    @model_validator(mode="after")
    def _model_given(self) -> SeparateConfig:
        if self.backend == "demucs" and self.demucs is None:
            raise ValueError("backend demucs needs separate.demucs.repo (a local model folder)")
        return self


class SeparateStage(BatchStage):
    """Source rows in; the same rows out with `audio_path` set to their vocals (16 kHz mono FLAC), which
    every later stage decodes instead of the input (annotate.base.audio_path_of)."""

    name: ClassVar[str] = "separate"

    def __init__(self, config: DemucsConfig, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.separator = DemucsSeparator(config)

    def setup(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.separator.setup()

    def teardown(self) -> None:
        self.separator = DemucsSeparator(self.separator.config)  # the loaded model goes with the old one

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [self._separated(row) for row in rows]

    def _separated(self, row: Row) -> Row:
        # Named by content: a resumed or retried source overwrites its own file, never another's.
        vocals = self.work_dir / f"{row['source_id']}.vocals.flac"
        self.separator.separate_file(row["input_path"], vocals)
        return {**row, "audio_path": str(vocals)}
