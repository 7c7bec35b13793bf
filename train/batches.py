"""Duration-bucketed batches from a worker's segment stream, and their collation into tensors.

A batch holds rows of one duration bucket up to a budget of audio seconds (after cropping) and never
two rows of one segment (a positive must be the only positive of its row: CLSP's labels assume it).
Batch plans depend only on row metadata, so a resumed run rebuilds the plans it had already trained
on without decoding audio and continues at the next one: no row repeated, none skipped.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from annotate.audio import SAMPLE_RATE, decode_flac, flac_frames
from train.perturb import Perturber
from train.shards import Caption, RowLocation, SegmentRecord, SegmentStream, ShardContractError, read_audio


@dataclass(frozen=True)
class SamplerState:
    """Where a worker's stream stands: the epoch and how many batches of it were trained on."""

    epoch: int = 0
    batches: int = 0


@dataclass
class Batch:
    # [B, T] float32 zero-padded 16 kHz crops, or None where the loader left decoding to the step:
    # a frozen encoder that caches its outputs needs only the crops it has not encoded (`waveforms`)
    audio: torch.Tensor | None
    audio_lens: torch.Tensor  # [B] int64 samples of each crop
    audio_rows: list[RowLocation]  # each row's segment in its shard, to decode it from if `audio` is None
    segment_samples: list[int]  # each row's whole segment, as its duration_s gives it
    texts: list[str]  # one caption per row
    second_texts: list[str]  # another caption of the same row (multi-positive stage)
    perturbed_texts: list[str | None]  # the caption with one attribute flipped, where one could be
    tags: dict[str, list[str | None]]
    groups: list[str]  # source or speaker id, for masking same-group negatives
    segment_ids: list[str]
    audio_keys: list[tuple[str, int, int]]  # (segment, crop start, samples): what a frozen encoder saw

    def waveforms(self, rows: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The padded crops of `rows` (every row by default) and their lengths, decoded here if the
        loader did not."""
        if rows is None and self.audio is not None:
            return self.audio, self.audio_lens
        rows = list(range(len(self.texts))) if rows is None else rows
        lens = self.audio_lens[rows]
        if self.audio is not None:
            return self.audio[rows, : int(lens.max())], lens
        flacs = read_audio([self.audio_rows[i] for i in rows])
        waves = [
            decode_crop(flac, *self.audio_keys[i], self.segment_samples[i])
            for i, flac in zip(rows, flacs, strict=True)
        ]
        audio, _ = pad(waves)
        return audio.to(lens.device), lens

    def __getstate__(self) -> dict[str, object]:
        # From a loader process the lengths travel as a list: a tensor, however small, is handed over
        # as a file descriptor the loader's sharing thread must send while its collating holds the GIL.
        return {**self.__dict__, "audio_lens": self.audio_lens.tolist()}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state, audio_lens=torch.tensor(state["audio_lens"], dtype=torch.int64))

    def pin_memory(self) -> Batch:
        """Page-locked host tensors (the DataLoader calls this), so the copy to the GPU overlaps the step."""
        if self.audio is not None:
            self.audio = self.audio.pin_memory()
        self.audio_lens = self.audio_lens.pin_memory()
        return self


class BatchPlanner:
    """Groups a stream into per-bucket batches with an audio-seconds budget."""

    def __init__(self, edges_s: Sequence[float], budget_s: float, max_rows: int, max_crop_s: float) -> None:
        self.edges_s = sorted(edges_s)
        self.budget_s, self.max_rows, self.max_crop_s = budget_s, max_rows, max_crop_s

    def plans(self, records: Iterator[SegmentRecord]) -> Iterator[list[SegmentRecord]]:
        buckets: list[list[SegmentRecord]] = [[] for _ in range(len(self.edges_s) + 1)]
        waiting: list[list[SegmentRecord]] = [[] for _ in buckets]  # repeats of a segment already in
        for record in records:
            index = bisect.bisect_right(self.edges_s, record.duration_s)
            bucket = buckets[index]
            if any(r.segment_id == record.segment_id for r in bucket):
                waiting[index].append(record)
                continue
            bucket.append(record)
            if self._full(bucket):
                yield bucket
                buckets[index] = bucket = []
                held, waiting[index] = waiting[index], []
                for again in held:
                    if any(r.segment_id == again.segment_id for r in bucket):
                        waiting[index].append(again)
                    else:
                        bucket.append(again)
        # The epoch's leftovers, shortest bucket first; a lone row teaches nothing contrastive, and
        # rows still waiting are extra copies (class balancing) of segments already trained on.
        for bucket in buckets:
            if len(bucket) >= 2:
                yield bucket

    def _full(self, bucket: list[SegmentRecord]) -> bool:
        seconds = sum(min(r.duration_s, self.max_crop_s) for r in bucket)
        longest = min(max(r.duration_s for r in bucket), self.max_crop_s)
        return len(bucket) >= self.max_rows or seconds + longest > self.budget_s


def epoch_plans(stream: SegmentStream, planner: BatchPlanner, state: SamplerState):
    """(state after the plan, plan) from `state` on, forever: epochs follow each other."""
    epoch, skip = state.epoch, state.batches
    while True:
        done = 0
        for plan in planner.plans(stream.epoch(epoch)):
            done += 1
            if done <= skip:
                continue  # already trained on before the checkpoint
            yield SamplerState(epoch, done), plan
        if done == 0:
            raise ValueError("a worker's part of the data holds fewer than 2 usable segments")
        epoch, skip = epoch + 1, 0


def _pick(
    captions: tuple[Caption, ...], granularity: str | None, rng: random.Random, avoid: str | None = None
):
    pool = [c for c in captions if granularity is None or c.granularity == granularity]
    pool = [c for c in pool if c.text != avoid] or pool or list(captions)
    return rng.choice(pool).text


def choose_captions(record: SegmentRecord, task: int, rng: random.Random) -> tuple[str, str]:
    """First and second caption of a row. Task 0: any two (single-positive stages use the first);
    task 1: global + fine; task 2: two different fine views (CLSP's multi-positive tasks)."""
    if task == 0:
        first = _pick(record.captions, None, rng)
        return first, _pick(record.captions, None, rng, avoid=first)
    if task == 1:
        first = _pick(record.captions, "global", rng)
        return first, _pick(record.captions, "fine", rng, avoid=first)
    first = _pick(record.captions, "fine", rng)
    return first, _pick(record.captions, "fine", rng, avoid=first)


def crop(samples: int, max_samples: int, rng: random.Random) -> tuple[int, int]:
    """A random window of at most `max_samples` in a segment of `samples`: (start, length)."""
    if samples <= max_samples:
        return 0, samples
    return rng.randrange(samples - max_samples + 1), max_samples


def decode_crop(flac: bytes, segment_id: str, start: int, length: int, samples: int) -> np.ndarray:
    """The crop [start, start + length) of a segment's FLAC, which must hold `samples`: crops are drawn
    from duration_s before any audio is read, so a shard whose audio disagrees is refused here."""
    held = flac_frames(flac)
    if held != samples:
        raise ShardContractError(
            f"{segment_id}: its audio holds {held} samples, its duration_s says {samples}"
        )
    return decode_flac(flac, start, length)


def pad(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded batch and exact lengths (the masks downstream come from these lengths)."""
    lens = torch.tensor([w.size for w in waves], dtype=torch.int64)
    audio = torch.zeros(len(waves), int(lens.max()))
    for i, wave in enumerate(waves):
        audio[i, : wave.size] = torch.from_numpy(wave)
    return audio, lens


def collate(
    plan: list[SegmentRecord],
    *,
    task: int,
    rng: random.Random,
    max_crop_s: float,
    perturber: Perturber | None,
    tag_names: tuple[str, ...],
    group_by: str,
    decode: bool = True,
) -> Batch:
    """A plan's rows as a batch; `decode=False` leaves the audio to `Batch.waveforms` (the crops are
    drawn all the same, from each segment's duration_s, so a batch is the same either way)."""
    max_samples = int(max_crop_s * SAMPLE_RATE)
    crops = [crop(r.samples, max_samples, rng) for r in plan]
    lens = torch.tensor([length for _, length in crops], dtype=torch.int64)
    audio = None
    if decode:
        flacs = (
            [r.flac for r in plan]
            if all(r.flac is not None for r in plan)
            else read_audio([r.location for r in plan])
        )
        waves = [
            decode_crop(f, r.segment_id, *c, r.samples) for f, r, c in zip(flacs, plan, crops, strict=True)
        ]
        audio = pad(waves)[0]
    pairs = [choose_captions(r, task, rng) for r in plan]
    texts = [first for first, _ in pairs]
    return Batch(
        audio=audio,
        audio_lens=lens,
        audio_rows=[r.location for r in plan],
        segment_samples=[r.samples for r in plan],
        texts=texts,
        second_texts=[second for _, second in pairs],
        perturbed_texts=[
            perturber.perturb(text, r.tags, rng) if perturber else None
            for text, r in zip(texts, plan, strict=True)
        ],
        tags={name: [r.tags.get(name) for r in plan] for name in tag_names},
        groups=[
            (r.speaker or r.source_id)
            if group_by == "speaker"
            else r.source_id
            if group_by == "source"
            else r.segment_id
            for r in plan
        ],
        segment_ids=[r.segment_id for r in plan],
        audio_keys=[(r.segment_id, start, length) for r, (start, length) in zip(plan, crops, strict=True)],
    )
