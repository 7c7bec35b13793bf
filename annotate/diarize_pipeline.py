"""Full pyannote diarization from a local pipeline folder (speaker-diarization-community-1 or 3.1 layout).

pyannote's pipeline takes the whole waveform: the source is decoded in blocks into one preallocated
float32 array, so memory is 4 bytes x 16000 x seconds (230 MB per hour) plus the pipeline's own.
Meant for GPUs; on CPU its embedding model costs several times real time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
from pydantic import Field

from annotate.audio import SAMPLE_RATE, iter_mono_16k
from annotate.base import StrictConfig
from annotate.diarize import SourceTurns, SpeakerTurn


class PyannotePipelineConfig(StrictConfig):
    pipeline_dir: Path = Field(description="Local folder with config.yaml and the sub-model folders.")
    device: str = "cpu"
    decode_block_s: float = Field(default=60.0, gt=0)


class PyannotePipelineDiarizer:
    def __init__(self, config: PyannotePipelineConfig) -> None:
        self.config = config
        self._pipeline = None

    def setup(self) -> None:
        import torch

        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # no telemetry (and no network)
        from pyannote.audio import Pipeline

        folder = Path(self.config.pipeline_dir)
        if not (folder / "config.yaml").is_file():
            raise FileNotFoundError(f"no pyannote pipeline at {folder} (config.yaml missing)")
        pipeline = Pipeline.from_pretrained(folder)
        if pipeline is None:
            raise ValueError(f"pyannote could not build a pipeline from {folder}")
        self._pipeline = pipeline.to(torch.device(self.config.device))

    def turns(self, path: str | Path) -> SourceTurns:
        import torch

        if self._pipeline is None:
            self.setup()
        waveform = _whole_mono_16k(path, self.config.decode_block_s)
        output = self._pipeline({"waveform": torch.from_numpy(waveform)[None], "sample_rate": SAMPLE_RATE})
        exclusive = getattr(output, "exclusive_speaker_diarization", None)
        full = getattr(output, "speaker_diarization", output)  # 3.x pipelines return an Annotation
        if exclusive is None:
            exclusive = _exclusive(full)
        total = waveform.size
        turns = _annotation_turns(exclusive, total)
        overlap = [
            (round(s.start * SAMPLE_RATE), min(round(s.end * SAMPLE_RATE), total))
            for s in full.get_overlap().support()
        ]
        overlap = [(a, b) for a, b in overlap if a < b]
        return SourceTurns(total, _cut_out(turns, overlap), overlap)


def _whole_mono_16k(path: str | Path, block_s: float) -> np.ndarray:
    """The source in one array, filled block by block (no list of blocks plus a concatenated copy)."""
    try:
        info = sf.info(str(path))
        expected = round(info.frames * SAMPLE_RATE / info.samplerate)
    except sf.LibsndfileError:
        expected = 0  # formats only ffmpeg reads: grow as needed
    waveform = np.zeros(expected, dtype=np.float32)
    filled = 0
    for block in iter_mono_16k(path, block_s):
        if filled + block.size > waveform.size:
            waveform = np.concatenate((waveform, np.zeros(max(block.size, waveform.size), np.float32)))
        waveform[filled : filled + block.size] = block
        filled += block.size
    return waveform[:filled]


def _exclusive(annotation):
    """One speaker at a time where the pipeline gives no exclusive output: overlapped speech removed."""
    overlap = annotation.get_overlap()
    return annotation.extrude(overlap)


def _annotation_turns(annotation, total: int) -> list[SpeakerTurn]:
    """Sorted turns with labels renamed spk0, spk1, ... by first appearance."""
    names: dict[str, str] = {}
    turns = []
    for segment, _, label in sorted(annotation.itertracks(yield_label=True), key=lambda t: t[0].start):
        start = max(0, round(segment.start * SAMPLE_RATE))
        end = min(total, round(segment.end * SAMPLE_RATE))
        if start < end:
            turns.append(SpeakerTurn(start, end, names.setdefault(label, f"spk{len(names)}")))
    return turns


def _cut_out(turns: list[SpeakerTurn], regions: list[tuple[int, int]]) -> list[SpeakerTurn]:
    """Turns minus the overlap regions, and any remaining overlap between turns given to the earlier
    one (rounding to samples can make neighbours touch or cross by a sample)."""
    result: list[SpeakerTurn] = []
    for turn in turns:
        pieces = [(turn.start, turn.end)]
        for a, b in regions:
            pieces = [p for s, e in pieces for p in ((s, min(e, a)), (max(s, b), e)) if p[0] < p[1]]
        for start, end in pieces:
            if result and start < result[-1].end:
                start = result[-1].end
            if start < end:
                result.append(SpeakerTurn(start, end, turn.speaker))
    return result
