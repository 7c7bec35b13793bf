"""The one reader of shards for training and evaluation.

It reads only the shards a run's manifest lists (committed ones), checks each file's contract
version and the columns training needs before any row is read, and streams row group by row group,
so memory is bounded by a row group, the shuffle buffer and the records kept for later epochs (at most
`cache_rows`, never audio), not by the corpus.

A run keeps its captions beside the audio (pipeline.layers): each shard row group is read with the
same row group of the chosen caption sets and verdict versions joined in as `captions`; which ones is
`pipeline.layers.choose`'s rule (every set, each with its only verdict version, unless named), printed
by the commands that read them. An export (`stylecaps export parquet`) is read as it is: its shards
carry their captions.

`segment_record` is the single place where a shard row becomes (segment, usable captions).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from annotate.audio import SAMPLE_RATE
from pipeline.contract import contract_problem
from pipeline.layers import LayerError, LayerJoin, choose
from pipeline.rundir import RunDirError, listed_shards, read_manifest

NEEDED_COLUMNS = ("segment_id", "source_id", "speaker", "duration_s", "audio", "tags")
# what a training record needs (the measured numbers and metadata are for evaluation)
TRAINING_COLUMNS = (*NEEDED_COLUMNS, "captions")
_NUMERIC_COLUMNS = ("pitch_median_hz", "pitch_std_st", "articulation_rate_sps", "loudness_lufs")
Split = Literal["train", "heldout", "all"]


class ShardContractError(ValueError):
    """A run or shard the trainer cannot read: no manifest, another contract version, missing columns."""


@dataclass(frozen=True)
class Caption:
    text: str
    granularity: str  # fine | global
    view: int


@dataclass(frozen=True)
class RowLocation:
    """Where a segment's row is: its audio can be read from there when a record was read without it."""

    path: Path
    row_group: int
    row: int


@dataclass(frozen=True)
class SegmentRecord:
    segment_id: str
    source_id: str
    speaker: str | None
    duration_s: float
    flac: bytes | None  # None when read without the audio column (then `read_audio([location])`)
    tags: dict[str, str | None]
    captions: tuple[Caption, ...]
    location: RowLocation
    fields: dict[str, Any] = field(default_factory=dict)  # measured numbers and metadata.* for evaluation

    @property
    def samples(self) -> int:
        """The segment's length in 16 kHz samples, from duration_s (checked against the audio when
        it is decoded: `train.batches.decode_crop`)."""
        return round(self.duration_s * SAMPLE_RATE)


@dataclass(frozen=True)
class CaptionPolicy:
    verified_only: bool = True
    granularities: tuple[str, ...] = ("fine", "global")


@dataclass(frozen=True)
class RowGroupRef:
    path: Path
    index: int
    rows: int
    run: Path  # the run (or export) directory the shard is listed in


def usable_captions(captions: list[dict[str, Any]] | None, policy: CaptionPolicy) -> tuple[Caption, ...]:
    return tuple(
        Caption(c["text"], c["granularity"], c["view"] if c["view"] is not None else 0)
        for c in captions or []
        if c["granularity"] in policy.granularities
        and (not policy.verified_only or bool(c["verdict"] and c["verdict"]["passed"]))
    )


def segment_record(row: dict[str, Any], policy: CaptionPolicy, location: RowLocation) -> SegmentRecord | None:
    """A shard row (at `location`) as a training record, or None when it has no usable caption."""
    captions = usable_captions(row["captions"], policy)
    if not captions:
        return None
    fields = {name: row.get(name) for name in _NUMERIC_COLUMNS}
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    fields.update({f"metadata.{key}": value for key, value in metadata.items()})
    fields.update({f"tags.{key}": value for key, value in (row["tags"] or {}).items()})
    return SegmentRecord(
        segment_id=row["segment_id"],
        source_id=row["source_id"],
        speaker=row["speaker"],
        duration_s=row["duration_s"],
        flac=row["audio"]["bytes"] if "audio" in row else None,
        tags=dict(row["tags"] or {}),
        captions=captions,
        location=location,
        fields=fields,
    )


def read_audio(locations: Sequence[RowLocation]) -> list[bytes]:
    """The FLAC bytes of the rows at `locations`, in order (each row group's audio column read once)."""
    by_row_group: dict[tuple[Path, int], list[RowLocation]] = {}
    for where in locations:
        by_row_group.setdefault((where.path, where.row_group), []).append(where)
    found: dict[RowLocation, bytes] = {}
    for (path, index), places in by_row_group.items():
        column = pq.ParquetFile(path).read_row_group(index, columns=["audio"]).column("audio")
        found |= {where: column[where.row]["bytes"].as_py() for where in places}
    return [found[where] for where in locations]


def is_heldout(source_id: str, fraction: float) -> bool:
    """A stable split by source: the same sources are held out on every machine and every run."""
    if fraction <= 0:
        return False
    value = int.from_bytes(hashlib.sha256(source_id.encode()).digest()[:8], "big") / 2**64
    return value < fraction


class ShardSet:
    """The shards of one or more runs (or exports), opened (footers only) and checked, with the caption
    sets and verdict versions chosen in each run (`captions` / `verdicts`: ids; default: the rule of
    pipeline.layers.choose); `selections` says what was chosen, per run."""

    def __init__(
        self, runs: list[str | Path], captions: list[str] | None = None, verdicts: list[str] | None = None
    ) -> None:
        if not runs:
            raise ShardContractError("no run directories given (data.runs or --run)")
        self.row_groups: list[RowGroupRef] = []
        self._footers: dict[Path, pq.FileMetaData] = {}  # parsed once: a row group read opens the file only
        self._joins: dict[Path, LayerJoin] = {}
        self.selections: dict[Path, str] = {}
        tag_names: tuple[str, ...] | None = None
        for run in map(Path, runs):
            self._choose(run, captions, verdicts)
            for path in self._listed_shards(run):
                file = pq.ParquetFile(path)
                self._check(file.schema_arrow, path)
                self._footers[path] = file.metadata
                names = tuple(f.name for f in file.schema_arrow.field("tags").type)
                if tag_names is not None and names != tag_names:
                    raise ShardContractError(
                        f"{path}: tags {names} differ from the other shards' {tag_names}"
                    )
                tag_names = names
                if "captions" not in file.schema_arrow.names and run not in self._joins:
                    raise ShardContractError(f"{path}: no captions and no caption sets in {run}")
                self.row_groups += [
                    RowGroupRef(path, i, file.metadata.row_group(i).num_rows, run)
                    for i in range(file.num_row_groups)
                ]
        if not self.row_groups:
            raise ShardContractError(f"no committed shards in {', '.join(map(str, runs))}")
        self.tag_names: tuple[str, ...] = tag_names or ()

    def _choose(self, run: Path, captions: list[str] | None, verdicts: list[str] | None) -> None:
        try:
            manifest = read_manifest(run)
            if manifest.get("kind") == "export":
                self.selections[run] = "an export: " + manifest["selection"]
                return
            selection = choose(manifest, captions, verdicts)
        except (RunDirError, LayerError) as error:
            raise ShardContractError(str(error)) from None
        if selection.sets:
            self._joins[run] = LayerJoin(run, manifest, selection)
        self.selections[run] = selection.describe()

    @staticmethod
    def _listed_shards(run: Path) -> list[Path]:
        try:
            return listed_shards(run)
        except RunDirError as error:
            raise ShardContractError(str(error)) from None

    @staticmethod
    def _check(schema: pa.Schema, path: Path) -> None:
        problem = contract_problem(schema, NEEDED_COLUMNS)
        if problem is not None:
            raise ShardContractError(f"{path}: {problem}")

    def read(self, ref: RowGroupRef, columns: list[str] | None = None) -> pa.Table:
        """A row group, with `captions` joined from the run's chosen layers when asked for (all columns,
        or `columns` naming it)."""
        file = pq.ParquetFile(ref.path, metadata=self._footers[ref.path])
        join = self._joins.get(ref.run)
        wants_captions = columns is None or "captions" in columns
        if columns is not None:
            columns = [c for c in columns if c in file.schema_arrow.names]
        if join is None or not wants_captions:
            return file.read_row_group(ref.index, columns=columns)
        return join.read(file, ref.path.relative_to(ref.run).as_posix(), ref.index, columns)

    def records(
        self, ref: RowGroupRef, policy: CaptionPolicy, columns: list[str] | None = None
    ) -> Iterator[SegmentRecord]:
        """The row group's rows that have a usable caption, as records (of `columns`, default all)."""
        for row_index, row in enumerate(self.read(ref, columns).to_pylist()):
            record = segment_record(row, policy, RowLocation(ref.path, ref.index, row_index))
            if record is not None:
                yield record

    def tag_values(self) -> dict[str, list[str]]:
        """Every value each tag takes in these shards (read from the tags column only), sorted."""
        values: dict[str, set[str]] = {name: set() for name in self.tag_names}
        for ref in self.row_groups:
            for tags in self.read(ref, ["tags"]).column("tags").to_pylist():
                for name, value in (tags or {}).items():
                    if value is not None:
                        values[name].add(value)
        return {name: sorted(found) for name, found in values.items()}


def iter_split(shards: ShardSet, policy: CaptionPolicy, split: Split, holdout_fraction: float):
    """Every record of a split, in shard order (evaluation; training uses SegmentStream)."""
    for ref in shards.row_groups:
        for record in shards.records(ref, policy):
            if split == "all" or is_heldout(record.source_id, holdout_fraction) == (split == "heldout"):
                yield record


class SegmentStream:
    """One worker's part of the training split, epoch by epoch, in a seeded shuffled order.

    Row groups are shuffled per epoch and dealt round-robin to the workers; a shuffle buffer then
    mixes rows across the row groups a worker reads (shards are written source by source, so file
    order would put one source's segments side by side). With `balance_tag`, each row is repeated
    by a seeded repeat factor so every class of that tag comes about as often as the largest one,
    counted on this worker's own rows of the epoch (correct per worker, whatever the split).

    Read without audio, a row group's records are kept for the next epochs up to `cache_rows` rows
    (about 4 KB a row with 4 captions), as tf.data's `cache()` does: from the second epoch on, the
    loader draws them from memory instead of reading three Parquet files a row group (shard and
    caption/verdict parts), the largest part of its work (bench/train_step.py). Row groups past the
    budget are read every epoch; audio is never kept.
    """

    def __init__(
        self,
        shards: ShardSet,
        policy: CaptionPolicy,
        *,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        buffer_rows: int = 512,
        holdout_fraction: float = 0.0,
        balance_tag: str | None = None,
        with_audio: bool = True,
        cache_rows: int = 0,
    ) -> None:
        if len(shards.row_groups) < world:
            raise ShardContractError(
                f"{len(shards.row_groups)} row groups cannot feed {world} workers: "
                "write smaller row groups (write.row_group_rows) or use fewer workers"
            )
        if balance_tag is not None and balance_tag not in shards.tag_names:
            raise ShardContractError(
                f"balance_tag '{balance_tag}' is not a tag of these shards {shards.tag_names}"
            )
        self.shards, self.policy = shards, policy
        self.rank, self.world, self.seed = rank, world, seed
        self.buffer_rows, self.holdout_fraction, self.balance_tag = buffer_rows, holdout_fraction, balance_tag
        # without audio, records are light to read and to hand between processes; read_audio fetches it
        self.columns = [c for c in TRAINING_COLUMNS if with_audio or c != "audio"]
        self.cache_rows = 0 if with_audio else cache_rows
        self._kept: dict[RowGroupRef, list[SegmentRecord]] = {}
        self._kept_rows = 0

    def forget_records(self) -> None:
        """Drop the kept records: the next epoch reads every row group again, as the first one did."""
        self._kept.clear()
        self._kept_rows = 0

    def records(self, ref: RowGroupRef) -> list[SegmentRecord]:
        """A row group's records, from memory once kept (records are immutable)."""
        kept = self._kept.get(ref)
        if kept is not None:
            return kept
        records = list(self.shards.records(ref, self.policy, self.columns))
        if self._kept_rows + ref.rows <= self.cache_rows:
            self._kept[ref] = records
            self._kept_rows += ref.rows
        return records

    def row_groups_of(self, epoch: int) -> list[RowGroupRef]:
        order = list(self.shards.row_groups)
        random.Random(f"{self.seed}:row-groups:{epoch}").shuffle(order)
        return order[self.rank :: self.world]

    def _in_split(self, source_id: str) -> bool:
        return not is_heldout(source_id, self.holdout_fraction)

    def repeat_factors(self, epoch: int) -> dict[str | None, float]:
        """Class → repeat factor on this worker's rows of the epoch (only the tags column is read)."""
        counts: Counter[str | None] = Counter()
        for ref in self.row_groups_of(epoch):
            table = self.shards.read(ref, ["source_id", "tags"])
            for source_id, tags in zip(
                table.column("source_id").to_pylist(), table.column("tags").to_pylist(), strict=True
            ):
                if self._in_split(source_id):
                    counts[(tags or {}).get(self.balance_tag)] += 1
        largest = max(counts.values(), default=1)
        return {value: largest / count for value, count in counts.items()}

    def _copies(self, record: SegmentRecord, factors: dict[str | None, float], epoch: int) -> int:
        factor = factors.get(record.tags.get(self.balance_tag or ""), 1.0)
        whole, fraction = math.floor(factor), factor - math.floor(factor)
        draw = random.Random(f"{self.seed}:repeat:{epoch}:{record.segment_id}").random()
        return whole + (1 if draw < fraction else 0)

    def epoch(self, epoch: int) -> Iterator[SegmentRecord]:
        rng = random.Random(f"{self.seed}:shuffle:{epoch}:{self.rank}")
        factors = self.repeat_factors(epoch) if self.balance_tag else {}
        buffer: list[SegmentRecord] = []
        for ref in self.row_groups_of(epoch):
            for record in self.records(ref):
                if not self._in_split(record.source_id):
                    continue
                for _ in range(self._copies(record, factors, epoch) if self.balance_tag else 1):
                    buffer.append(record)
                    if len(buffer) >= self.buffer_rows:
                        yield _pop_random(buffer, rng)
        while buffer:
            yield _pop_random(buffer, rng)


def _pop_random(buffer: list[SegmentRecord], rng: random.Random) -> SegmentRecord:
    index = rng.randrange(len(buffer))
    buffer[index], buffer[-1] = buffer[-1], buffer[index]
    return buffer.pop()
