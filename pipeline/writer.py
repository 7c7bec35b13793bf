"""The shard writer: routes stream rows to shards, the ledger and the failures table, and commits.

Rows are written as they arrive, in order: an ok segment row goes into the open shard (encoded row group
by row group), a failed one into the failures table, a dropped one (a stage judged it unfit) into the
dropped journal with its reason, and a source's end row records the source in the ledger. A source is
complete when its end row arrives, however many of its segments were dropped or failed on the way: no
count is announced ahead. A commit happens when the shard holds `rows_per_shard` rows, when as many
inputs finished without filling it, and at the end. So the driver holds at most one row group whatever
a source's length, a long source is committed in parts, and every shard respects `rows_per_shard`.

Inputs still open at a commit are journaled with their progress (the start of their last committed
segment); a resumed run continues them after it. Rows of a source arrive by increasing start, so a row
at or before the last one seen of its source (a retried task, or a segment an earlier run committed) is
dropped. A source whose content hash another input already wrote is a DuplicateSource failure: its rows
are dropped and it is recorded once, as failed. The ingest stage refuses most copies before any model
sees them; when parallel ingest workers let a later-listed copy through first, this check, in listing
order, decides, so the same inputs always keep the same copy.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from annotate.base import (
    OUTCOME_ALL_DROPPED,
    OUTCOME_FAILED,
    OUTCOME_SEGMENTED,
    STATUS_DROPPED,
    STATUS_FAILED,
    STATUS_OK,
    failed_row,
    is_source_end,
)
from annotate.ingest import DUPLICATE_SOURCE, duplicate_message
from pipeline.config import WriteConfig
from pipeline.contract import (
    DROPPED_SCHEMA,
    FAILURES_SCHEMA,
    OPEN_SOURCES_SCHEMA,
    SOURCES_SCHEMA,
)
from pipeline.rundir import RunDirectory, SegmentFiles, merge_stats

_ROUTING_COLUMNS = [
    "input_path",
    "status",
    "outcome",
    "source_id",
    "source_path",
    "segment_id",
    "start_s",
    "end_s",
    "source_duration_s",
    "dropped_speech_s",
    "error_stage",
    "error_type",
    "error_message",
    "drop_stage",
    "drop_reason",
    "drop_score",
]


@dataclass
class _OpenSource:
    """An input the writer has rows of but not yet its end row."""

    input_path: str
    source_path: str | None
    source_id: str | None
    last_start_s: float = -math.inf
    segments: int = 0
    failed_segments: int = 0
    dropped_segments: int = 0
    duplicate_of: str | None = None  # the input that wrote this content first

    def progress(self) -> dict[str, Any]:
        return {
            "input_path": self.input_path,
            "source_path": self.source_path,
            "source_id": self.source_id,
            "last_start_s": self.last_start_s,
            "segments": self.segments,
            "failed_segments": self.failed_segments,
            "dropped_segments": self.dropped_segments,
        }


def dropped_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_path": row["input_path"],
        "source_id": row.get("source_id"),
        "segment_id": row.get("segment_id"),
        "start_s": row.get("start_s"),
        "end_s": row.get("end_s"),
        "stage": row.get("drop_stage"),
        "reason": row.get("drop_reason"),
        "score": row.get("drop_score"),
    }


def failure_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row.get("segment_id") or row.get("source_id") or row["input_path"],
        "input_path": row["input_path"],
        "source_path": row.get("source_path"),
        "source_id": row.get("source_id"),
        "segment_id": row.get("segment_id"),
        "stage": row.get("error_stage"),
        "error_type": row.get("error_type"),
        "message": row.get("error_message"),
    }


def caption_stats(shard: pa.Table) -> dict[str, Any]:
    """Caption and verdict counts of segment rows, computed column-wise (none when no stage captions)."""
    if "captions" not in shard.column_names:
        return {}
    captions = pc.list_flatten(shard.column("captions"))
    if len(captions) == 0:
        return {"captions": 0, "passed": 0, "rejected": 0, "rejected_by_check": {}}
    verdicts = pc.struct_field(captions, "verdict")
    passed = pc.fill_null(pc.struct_field(verdicts, "passed"), False)
    n_passed = pc.sum(passed).as_py() or 0
    checks = pc.list_flatten(pc.struct_field(verdicts, "failed_checks"))
    by_check = {str(row["values"]): int(row["counts"]) for row in pc.value_counts(checks).to_pylist()}
    return {
        "captions": len(captions),
        "passed": n_passed,
        "rejected": len(captions) - n_passed,
        "rejected_by_check": by_check,
    }


class ShardWriter:
    def __init__(self, run: RunDirectory, config: WriteConfig) -> None:
        self.run = run
        self.config = config
        state = run.resume_state()
        self.done_inputs = state.done_inputs  # what a resumed run skips
        self._open: dict[str, _OpenSource] = {
            path: _OpenSource(
                path,
                row["source_path"],
                row["source_id"],
                row["last_start_s"],
                row["segments"],
                row["failed_segments"],
                row["dropped_segments"] or 0,
            )
            for path, row in state.open_inputs.items()
        }
        self._owners = dict(state.source_owners)  # source_id → the input that wrote it first
        self._shard: SegmentFiles | None = None
        self._batch: pa.Table | None = None  # the batch being routed
        self._pending_ok: list[int] = []  # its rows bound for the shard, in order
        self._sources: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._dropped: list[dict[str, Any]] = []
        self._stats: dict[str, Any] = {}
        self.finished_inputs = 0

    def resume_after_s(self, input_path: str) -> float | None:
        """Where a partly committed input continues (None: from its start)."""
        source = self._open.get(input_path)
        return None if source is None or source.last_start_s == -math.inf else source.last_start_s

    # -- rows ------------------------------------------------------------------------------------------
    def add(self, batch: pa.Table) -> None:
        self._batch = batch
        try:
            for index, row in enumerate(batch.select(_ROUTING_COLUMNS).to_pylist()):
                self._route(index, row)
            self._flush_ok()
        finally:
            self._batch, self._pending_ok = None, []

    def _route(self, index: int, row: dict[str, Any]) -> None:
        source = self._open.get(row["input_path"])
        if source is None:
            source = self._open[row["input_path"]] = _OpenSource(
                row["input_path"], row.get("source_path"), row.get("source_id")
            )
        if is_source_end(row):
            self._claim(source, row)
            self._end(source, row)
            return
        if row["start_s"] <= source.last_start_s:
            return  # replayed by a retried task, or committed by an earlier run
        if not self._claim(source, row):
            return
        source.last_start_s = row["start_s"]
        if row["status"] == STATUS_OK:
            source.segments += 1
            self._pending_ok.append(index)
            if self._shard_rows() >= self.config.rows_per_shard:
                self.commit()
        elif row["status"] == STATUS_DROPPED:
            source.dropped_segments += 1
            self._dropped.append(dropped_record(row))
            self._stats = merge_stats(
                self._stats, {"dropped": 1, "dropped_by_reason": {row["drop_reason"]: 1}}
            )
        else:
            source.failed_segments += 1
            self._failures.append(failure_record(row))
            self._stats = merge_stats(self._stats, _failure_stats([row["error_type"]]))

    def _claim(self, source: _OpenSource, row: dict[str, Any]) -> bool:
        """Register the source's content id on its first decoded row; False for a duplicate."""
        if source.duplicate_of is not None:
            return False
        source_id = row.get("source_id")
        if source_id is None or (row["status"] == STATUS_FAILED and row.get("segment_id") is None):
            return True
        source.source_id = source_id
        owner = self._owners.setdefault(source_id, source.input_path)
        if owner != source.input_path:
            source.duplicate_of = owner
            return False
        return True

    def _end(self, source: _OpenSource, row: dict[str, Any]) -> None:
        del self._open[source.input_path]
        self.finished_inputs += 1
        failures = []
        if source.duplicate_of is not None:
            outcome = OUTCOME_FAILED
            message = duplicate_message(source.source_id, source.duplicate_of)
            failed = failed_row({**row, "segment_id": None}, "ingest", message, DUPLICATE_SOURCE)
            failures.append(failure_record(failed))
        elif row["status"] == STATUS_FAILED:
            outcome = OUTCOME_FAILED
            failures.append(failure_record(row))
        elif source.segments == 0 and source.dropped_segments and row["outcome"] == OUTCOME_SEGMENTED:
            outcome = OUTCOME_ALL_DROPPED  # segments were cut, but no stage kept one
        else:
            outcome = row["outcome"] or OUTCOME_SEGMENTED
        self._sources.append(
            {
                "input_path": source.input_path,
                "source_path": row.get("source_path") or source.source_path,
                "source_id": row.get("source_id") or source.source_id,
                "outcome": outcome,
                "duration_s": row.get("source_duration_s"),
                "segments": 0 if source.duplicate_of else source.segments,
                "failed_segments": source.failed_segments,
                "dropped_segments": source.dropped_segments,
                "dropped_speech_s": row.get("dropped_speech_s"),
            }
        )
        self._failures.extend(failures)
        self._stats = merge_stats(
            self._stats,
            {
                "inputs": 1,
                "outcomes": {outcome: 1},
                "audio_s": row.get("source_duration_s") or 0.0,
                "dropped_speech_s": row.get("dropped_speech_s") or 0.0,
                **_failure_stats([f["error_type"] for f in failures]),
            },
        )
        if len(self._sources) >= self.config.rows_per_shard:
            self.commit()  # inputs without segments (failures, silence) must reach the ledger too

    # -- the shard -------------------------------------------------------------------------------------
    def _shard_rows(self) -> int:
        return (self._shard.rows if self._shard else 0) + len(self._pending_ok)

    def _flush_ok(self) -> None:
        if not self._pending_ok or self._batch is None:
            return
        table = self._batch.take(self._pending_ok)
        self._pending_ok = []
        if self._shard is None:
            config = self.config
            self._shard = self.run.new_shard(config.row_group_rows, config.compression)
        self._shard.append(table)
        self._stats = merge_stats(
            self._stats,
            {"segments": table.num_rows, "segment_audio_s": pc.sum(table["duration_s"]).as_py() or 0.0},
        )
        self._stats = merge_stats(self._stats, caption_stats(table))

    # -- committing ------------------------------------------------------------------------------------
    def commit(self) -> None:
        """Commit everything received so far: the shard, finished inputs, failures, open inputs' progress."""
        self._flush_ok()
        if self._shard is None and not self._sources and not self._failures and not self._dropped:
            return
        shard, self._shard = self._shard, None
        try:
            self.run.commit(
                shard,
                pa.Table.from_pylist(self._sources, schema=SOURCES_SCHEMA),
                pa.Table.from_pylist(self._failures, schema=FAILURES_SCHEMA),
                pa.Table.from_pylist(
                    [s.progress() for s in self._open.values() if s.last_start_s > -math.inf],
                    schema=OPEN_SOURCES_SCHEMA,
                ),
                pa.Table.from_pylist(self._dropped, schema=DROPPED_SCHEMA),
                self._stats,
            )
        except BaseException:
            if shard is not None:
                shard.abort()
            raise
        self._sources, self._failures, self._dropped, self._stats = [], [], [], {}

    def abort(self) -> None:
        """Drop what is not committed (its temporary shard file too); the run resumes from the last commit."""
        if self._shard is not None:
            self._shard.abort()
            self._shard = None

    def close(self, fed: set[str]) -> None:
        """Commit the rest and mark the run complete; every input fed in this invocation must have ended."""
        unfinished = sorted(path for path in self._open if path in fed)
        if unfinished:
            raise RuntimeError(f"{len(unfinished)} inputs ended without their end row: {unfinished[:3]}")
        self.commit()
        self.run.finish()


def _failure_stats(error_types: list[str]) -> dict[str, Any]:
    if not error_types:
        return {}
    return {"failures": len(error_types), "failures_by_type": dict(Counter(error_types))}
