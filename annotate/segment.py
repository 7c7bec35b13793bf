"""Segment stage: silero VAD speech regions → single-speaker segments of min_s..max_s seconds.

Two streaming passes over each source keep memory bounded for long files: the first computes the
VAD frame probabilities (32 ms frames, LSTM state carried across decode blocks), the second cuts
the planned segments out of the decoded stream and encodes them as FLAC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from annotate.audio import SAMPLE_RATE, content_id, encode_flac, iter_mono_16k
from annotate.base import (
    OUTCOME_NO_SPEECH,
    OUTCOME_SEGMENTED,
    OUTCOME_SPEECH_TOO_SHORT,
    STATUS_OK,
    Row,
    StreamingStage,
    StrictConfig,
    end_row,
    failed_row,
)

FRAME_SAMPLES = 512  # silero's frame at 16 kHz
_CONTEXT_SAMPLES = 64
_MAX_FRAMES_PER_CALL = 512


class SegmenterConfig(StrictConfig):
    backend: Literal["silero"] = "silero"
    min_s: Annotated[float, Field(gt=0)] = 3.0
    max_s: Annotated[float, Field(gt=0)] = 30.0
    merge_gap_s: Annotated[float, Field(ge=0)] = Field(
        default=1.5, description="Speech regions closer than this join one segment (if it stays <= max_s)."
    )
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    min_speech_ms: Annotated[int, Field(ge=0)] = 250
    min_silence_ms: Annotated[int, Field(ge=0)] = 100
    speech_pad_ms: Annotated[int, Field(ge=0)] = 60
    decode_block_s: Annotated[float, Field(gt=0)] = 60.0

    @model_validator(mode="after")
    def _range_splittable(self) -> SegmenterConfig:
        if self.max_s < 2 * self.min_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least twice min_s ({self.min_s})")
        return self


@dataclass(frozen=True)
class Span:
    """Half-open sample range [start, end) at 16 kHz."""

    start: int
    end: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


@dataclass(frozen=True)
class SegmentPlan:
    segments: list[Span]
    dropped_speech_s: float  # speech in pieces shorter than min_s that no merge could save


def segment_id(source_id: str, span: Span) -> str:
    """Deterministic id from the source id and the span's start and end in milliseconds."""
    start_ms = round(span.start * 1000 / SAMPLE_RATE)
    end_ms = round(span.end * 1000 / SAMPLE_RATE)
    return f"{source_id}_{start_ms:09d}_{end_ms:09d}"


class SileroFrameScorer:
    """Per-frame speech probabilities of silero's sequence ONNX model over a block stream."""

    def __init__(self) -> None:
        from silero_vad import load_silero_vad

        self._session = load_silero_vad(sequence=True).session

    def probabilities(self, blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
        """Return (one probability per 512-sample frame, total samples seen)."""
        hidden = np.zeros((1, 1, 128), dtype=np.float32)
        cell = np.zeros((1, 1, 128), dtype=np.float32)
        context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)
        rest = np.zeros(0, dtype=np.float32)
        total = 0
        scores: list[np.ndarray] = []

        def run(frames: np.ndarray) -> None:
            nonlocal hidden, cell, context
            contexts = np.empty((len(frames), _CONTEXT_SAMPLES), dtype=np.float32)
            contexts[0] = context
            contexts[1:] = frames[:-1, -_CONTEXT_SAMPLES:]
            context = frames[-1, -_CONTEXT_SAMPLES:].copy()
            model_input = np.concatenate((contexts, frames), axis=1)
            for first in range(0, len(model_input), _MAX_FRAMES_PER_CALL):
                probs, hidden, cell = self._session.run(
                    ["speech_probs", "hn", "cn"],
                    {"input": model_input[first : first + _MAX_FRAMES_PER_CALL], "h": hidden, "c": cell},
                )
                scores.append(np.asarray(probs, dtype=np.float32).reshape(-1))

        for block in blocks:
            total += block.size
            samples = np.concatenate((rest, block)) if rest.size else block
            whole = samples.size // FRAME_SAMPLES * FRAME_SAMPLES
            rest = samples[whole:]
            if whole:
                run(samples[:whole].reshape(-1, FRAME_SAMPLES))
        if rest.size:  # the last partial frame, zero padded as silero does
            run(np.pad(rest, (0, FRAME_SAMPLES - rest.size))[None, :])
        probs = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
        return probs, total


def speech_regions(probs: np.ndarray, total_samples: int, config: SegmenterConfig) -> list[Span]:
    """silero's own hysteresis state machine over precomputed frame probabilities."""
    from silero_vad import get_speech_timestamps_from_probs

    stamps = get_speech_timestamps_from_probs(
        probs.tolist(),
        sampling_rate=SAMPLE_RATE,
        threshold=config.threshold,
        min_speech_duration_ms=config.min_speech_ms,
        min_silence_duration_ms=config.min_silence_ms,
        speech_pad_ms=config.speech_pad_ms,
        audio_length_samples=total_samples,
    )
    return [Span(int(s["start"]), int(s["end"])) for s in stamps]


def plan_segments(regions: Sequence[Span], probs: np.ndarray, config: SegmenterConfig) -> SegmentPlan:
    """Merge regions across short gaps, then split what is longer than max_s at its longest pauses."""
    min_len = round(config.min_s * SAMPLE_RATE)
    max_len = round(config.max_s * SAMPLE_RATE)
    max_gap = round(config.merge_gap_s * SAMPLE_RATE)
    segments: list[Span] = []
    dropped = 0
    for chunk in _chunks(regions, max_gap):
        for piece in _split(chunk, probs, min_len, max_len):
            if piece[-1].end - piece[0].start >= min_len:
                segments.append(Span(piece[0].start, piece[-1].end))
            else:
                dropped += sum(r.end - r.start for r in piece)
    return SegmentPlan(segments, dropped / SAMPLE_RATE)


def _chunks(regions: Sequence[Span], max_gap: int) -> Iterator[list[Span]]:
    chunk: list[Span] = []
    for region in regions:
        if chunk and region.start - chunk[-1].end > max_gap:
            yield chunk
            chunk = []
        chunk.append(region)
    if chunk:
        yield chunk


def _split(chunk: list[Span], probs: np.ndarray, min_len: int, max_len: int) -> list[list[Span]]:
    start, end = chunk[0].start, chunk[-1].end
    if end - start <= max_len:
        return [chunk]
    left, right = _best_cut(chunk, probs, min_len)
    return _split(left, probs, min_len, max_len) + _split(right, probs, min_len, max_len)


def _best_cut(chunk: list[Span], probs: np.ndarray, min_len: int) -> tuple[list[Span], list[Span]]:
    """Cut at the longest pause between regions that leaves min_len on both sides, else at the
    least speech-like frame inside a region (a dip in VAD probability)."""
    start, end = chunk[0].start, chunk[-1].end
    gaps = [
        (chunk[i + 1].start - chunk[i].end, i)
        for i in range(len(chunk) - 1)
        if chunk[i].end - start >= min_len and end - chunk[i + 1].start >= min_len
    ]
    if gaps:
        _, i = max(gaps)
        return chunk[: i + 1], chunk[i + 1 :]
    # Frame boundaries inside [start + min_len, end - min_len], so both sides keep min_len.
    lo_frame = -(-(start + min_len) // FRAME_SAMPLES)
    hi_frame = (end - min_len) // FRAME_SAMPLES + 1
    window = probs[lo_frame:hi_frame]
    cut = (lo_frame + int(np.argmin(window))) * FRAME_SAMPLES if window.size else start + min_len
    cut = min(max(cut, start + min_len), end - min_len)
    left = [r for r in chunk if r.end <= cut] + [Span(r.start, cut) for r in chunk if r.start < cut < r.end]
    right = [Span(cut, r.end) for r in chunk if r.start < cut < r.end] + [r for r in chunk if r.start >= cut]
    return left, right


def cut_segments(blocks: Iterable[np.ndarray], segments: Sequence[Span]) -> Iterator[tuple[Span, np.ndarray]]:
    """Yield each (sorted, non-overlapping) segment's samples from a block stream."""
    pending = iter(segments)
    current = next(pending, None)
    parts: list[np.ndarray] = []
    offset = 0
    for block in blocks:
        block_end = offset + block.size
        while current is not None and current.start < block_end:
            lo = max(current.start, offset) - offset
            hi = min(current.end, block_end) - offset
            parts.append(block[lo:hi])
            if current.end > block_end:
                break
            yield current, np.concatenate(parts)
            parts = []
            current = next(pending, None)
        offset = block_end
        if current is None:
            return
    if current is not None and parts:  # the stream ended inside the last segment
        yield Span(current.start, offset), np.concatenate(parts)


class SileroSegmenter(StreamingStage):
    """Source rows in; each source's segment rows out, then its end row (see annotate.base)."""

    name: ClassVar[str] = "segment"

    def __init__(self, config: SegmenterConfig) -> None:
        self.config = config
        self._scorer: SileroFrameScorer | None = None

    def setup(self) -> None:
        self._scorer = SileroFrameScorer()

    def teardown(self) -> None:
        self._scorer = None  # the ONNX session goes with its last reference

    def plan(self, path: str) -> tuple[SegmentPlan, int]:
        if self._scorer is None:
            self.setup()
        assert self._scorer is not None
        probs, total = self._scorer.probabilities(iter_mono_16k(path, self.config.decode_block_s))
        return plan_segments(speech_regions(probs, total, self.config), probs, self.config), total

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [segment for row in rows for segment in self.stream(row)]

    def stream(self, row: Row) -> Iterator[Row]:
        """The source's segment rows, by increasing start, then its end row.

        A resumed source (`resume_after_s` set) skips the segments that start at or before it: they
        were committed by an earlier run."""
        path = row["input_path"]
        source_id = row.get("source_id") or content_id(path)  # an id from the manifest wins
        plan, total = self.plan(path)  # errors here fail the whole source, before any row is out
        source = {
            **row,
            "source_id": source_id,
            "source_duration_s": total / SAMPLE_RATE,
            "dropped_speech_s": plan.dropped_speech_s,
        }
        if not plan.segments:
            yield end_row(source, OUTCOME_SPEECH_TOO_SHORT if plan.dropped_speech_s else OUTCOME_NO_SPEECH)
            return
        done_until = row.get("resume_after_s")
        todo = [s for s in plan.segments if done_until is None or s.start / SAMPLE_RATE > done_until]
        cut = 0
        try:
            for span, wave in cut_segments(iter_mono_16k(path, self.config.decode_block_s), todo):
                yield self._segment_row(source, span, wave)
                cut += 1
            error: Exception = EOFError("the audio ended before this segment (did the file change?)")
        except Exception as raised:  # the second pass broke: the planned segments not cut yet fail
            error = raised
        for span in todo[cut:]:
            yield failed_row(self._segment_row(source, span, None), self.name, error)
        yield end_row(source, OUTCOME_SEGMENTED)

    @staticmethod
    def _segment_row(source: Row, span: Span, wave: np.ndarray | None) -> Row:
        seg_id = segment_id(source["source_id"], span)
        return {
            **source,
            "status": STATUS_OK,
            "segment_id": seg_id,
            "start_s": span.start / SAMPLE_RATE,
            "end_s": span.end / SAMPLE_RATE,
            "duration_s": span.seconds,
            "audio": None if wave is None else {"bytes": encode_flac(wave), "path": f"{seg_id}.flac"},
        }
