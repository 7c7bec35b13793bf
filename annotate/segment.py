"""Segment planning shared by every backend, silero VAD, and cutting planned segments from a stream.

silero's frame probabilities (32 ms frames, LSTM state carried across decode blocks) give speech
regions; `plan_regions` turns regions (silero's, or one speaker's turns) into segments of min_s..max_s
seconds; `cut_segments` takes planned segments out of a decoded block stream. Each pass streams, so
memory does not grow with a source's length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field, model_validator

from annotate.audio import SAMPLE_RATE
from annotate.base import StrictConfig
from annotate.plan import DROP_TOO_SHORT, DroppedSpeech, PlannedSegment, SourcePlan

FRAME_SAMPLES = 512  # silero's frame at 16 kHz
_CONTEXT_SAMPLES = 64
_MAX_FRAMES_PER_CALL = 512


class SegmenterConfig(StrictConfig):
    """The planner's duration range and gap merging (every backend), and silero's VAD parameters."""

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


@dataclass(frozen=True)
class FrameScores:
    """A speech probability per frame: frame i covers [offset + i * frame, offset + (i + 1) * frame)."""

    probs: np.ndarray
    frame: int = FRAME_SAMPLES
    offset: int = 0


def silero_plan(probs: np.ndarray, total_samples: int, config: SegmenterConfig) -> SourcePlan:
    """silero's speech regions merged across short gaps and split at their longest pauses (see
    plan_regions); pieces too short to keep are dropped with their reason."""
    regions = speech_regions(probs, total_samples, config)
    kept, short = plan_regions(regions, FrameScores(probs), config.min_s, config.max_s, config.merge_gap_s)
    return SourcePlan(
        total_samples,
        [PlannedSegment(span.start, span.end) for span in kept],
        [
            DroppedSpeech(p[0].start, p[-1].end, None, DROP_TOO_SHORT, sum(r.end - r.start for r in p))
            for p in short
        ],
    )


def plan_regions(
    regions: Sequence[Span], scores: FrameScores | None, min_s: float, max_s: float, merge_gap_s: float
) -> tuple[list[Span], list[list[Span]]]:
    """The planner behind every segmenter: regions (sorted, disjoint) closer than merge_gap_s join, what
    is longer than max_s is split at its longest pauses (else at its lowest speech score), and pieces
    reaching min_s become segments. Returns (segments, the pieces too short to keep)."""
    min_len, max_len = round(min_s * SAMPLE_RATE), round(max_s * SAMPLE_RATE)
    segments: list[Span] = []
    dropped: list[list[Span]] = []
    for chunk in _chunks(regions, round(merge_gap_s * SAMPLE_RATE)):
        for piece in _split(chunk, scores, min_len, max_len):
            if piece[-1].end - piece[0].start >= min_len:
                segments.append(Span(piece[0].start, piece[-1].end))
            else:
                dropped.append(piece)
    return segments, dropped


def _chunks(regions: Sequence[Span], max_gap: int) -> Iterator[list[Span]]:
    chunk: list[Span] = []
    for region in regions:
        if chunk and region.start - chunk[-1].end > max_gap:
            yield chunk
            chunk = []
        chunk.append(region)
    if chunk:
        yield chunk


def _split(chunk: list[Span], scores: FrameScores | None, min_len: int, max_len: int) -> list[list[Span]]:
    start, end = chunk[0].start, chunk[-1].end
    if end - start <= max_len:
        return [chunk]
    left, right = _best_cut(chunk, scores, min_len)
    return _split(left, scores, min_len, max_len) + _split(right, scores, min_len, max_len)


def _best_cut(chunk: list[Span], scores: FrameScores | None, min_len: int) -> tuple[list[Span], list[Span]]:
    """Cut at the longest pause between regions that leaves min_len on both sides, else at the
    least speech-like frame inside a region (a dip in VAD probability; the middle without scores)."""
    start, end = chunk[0].start, chunk[-1].end
    gaps = [
        (chunk[i + 1].start - chunk[i].end, i)
        for i in range(len(chunk) - 1)
        if chunk[i].end - start >= min_len and end - chunk[i + 1].start >= min_len
    ]
    if gaps:
        _, i = max(gaps)
        return chunk[: i + 1], chunk[i + 1 :]
    if scores is None:
        cut = (start + end) // 2
    else:
        # Frame boundaries inside [start + min_len, end - min_len], so both sides keep min_len.
        lo_frame = -(-(start + min_len - scores.offset) // scores.frame)
        hi_frame = (end - min_len - scores.offset) // scores.frame + 1
        window = scores.probs[max(lo_frame, 0) : max(hi_frame, 0)]
        found = max(lo_frame, 0) + int(np.argmin(window)) if window.size else None
        cut = scores.offset + found * scores.frame if found is not None else start + min_len
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
