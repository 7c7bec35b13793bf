"""The shard writer: routes stream rows to shards, the ledger and the failures table, and commits.

Rows of one input are held back until all of them have arrived (the segment stage tells how many
to expect), so a commit always holds whole sources and a resumed run never duplicates a segment.
A source whose content hash was already written (a copy of another input) is recorded as a
failure of type DuplicateSource instead of being written twice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import WriteConfig
from pipeline.contract import (
    FAILURES_SCHEMA,
    OUTCOME_FAILED,
    OUTCOME_NO_SPEECH,
    OUTCOME_SEGMENTED,
    SHARD_SCHEMA,
    SOURCES_SCHEMA,
    STATUS_FAILED,
    STATUS_NO_SPEECH,
    STATUS_OK,
    shard_schema_with_metadata,
)
from pipeline.rundir import RunDirectory, merge_stats

_ROUTING_COLUMNS = [
    "input_path",
    "status",
    "source_segments",
    "source_id",
    "source_path",
    "segment_id",
    "source_duration_s",
    "dropped_speech_s",
    "error_stage",
    "error_type",
    "error_message",
]


@dataclass
class _OpenSource:
    expected: int | None = None
    parts: list[tuple[pa.Table, list[dict[str, Any]]]] = field(default_factory=list)

    @property
    def received(self) -> int:
        return sum(len(rows) for _, rows in self.parts)


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
    """Caption and verdict counts of shard rows, computed column-wise."""
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
        self._schema = shard_schema_with_metadata()
        self._open: dict[str, _OpenSource] = defaultdict(_OpenSource)
        ledger = run.sources().select(["input_path", "source_id", "source_path", "outcome"]).to_pylist()
        self.done_inputs = {row["input_path"] for row in ledger}  # what a resumed run skips
        self._seen_sources = {
            row["source_id"]: row["source_path"] for row in ledger if row["outcome"] == OUTCOME_SEGMENTED
        }
        self._shard_parts: list[pa.Table] = []
        self._shard_rows = 0
        self._sources: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._stats: dict[str, Any] = {}
        self.finished_inputs = 0

    def add(self, batch: pa.Table) -> None:
        routing = batch.select(_ROUTING_COLUMNS).to_pylist()
        by_input: dict[str, list[int]] = defaultdict(list)
        for index, row in enumerate(routing):
            by_input[row["input_path"]].append(index)
        for input_path, indices in by_input.items():
            pending = self._open[input_path]
            rows = [routing[i] for i in indices]
            pending.parts.append((batch.take(indices), rows))
            if rows[0]["status"] != STATUS_OK and rows[0].get("segment_id") is None:
                pending.expected = len(rows)  # a source-level outcome is a single row
            elif rows[0].get("source_segments") is not None:
                pending.expected = rows[0]["source_segments"]
            if pending.expected is not None and pending.received >= pending.expected:
                self._finish_source(input_path, self._open.pop(input_path))
        # Inputs without segments (failures, silence) commit too, so a resumed run need not redo them.
        if self._shard_rows >= self.config.rows_per_shard or len(self._sources) >= self.config.rows_per_shard:
            self.commit()

    def _finish_source(self, input_path: str, source: _OpenSource) -> None:
        self.finished_inputs += 1
        rows = [row for _, part_rows in source.parts for row in part_rows]
        first = rows[0]
        ledger = {
            "input_path": input_path,
            "source_path": first.get("source_path"),
            "source_id": first.get("source_id"),
            "duration_s": first.get("source_duration_s"),
            "dropped_speech_s": first.get("dropped_speech_s"),
            "segments": 0,
        }
        if first["status"] == STATUS_FAILED and first.get("segment_id") is None:
            self._record_source(ledger, OUTCOME_FAILED, [failure_record(first)])
            return
        if first["status"] == STATUS_NO_SPEECH:
            self._record_source(ledger, OUTCOME_NO_SPEECH, [])
            return
        original = self._seen_sources.get(first["source_id"])
        if original is not None:
            duplicate = {
                **first,
                "segment_id": None,
                "error_stage": "ingest",
                "error_type": "DuplicateSource",
                "error_message": f"source {first['source_id']} was already written from {original} "
                "(same content hash, or the same source_id in a manifest)",
            }
            self._record_source(ledger, OUTCOME_FAILED, [failure_record(duplicate)])
            return
        self._seen_sources[first["source_id"]] = first.get("source_path")
        failures = [failure_record(row) for row in rows if row["status"] == STATUS_FAILED]
        for table, part_rows in source.parts:
            ok = [i for i, row in enumerate(part_rows) if row["status"] == STATUS_OK]
            if ok:
                self._shard_parts.append(table.take(ok).select(SHARD_SCHEMA.names))
                self._shard_rows += len(ok)
        ledger["segments"] = sum(1 for row in rows if row["status"] == STATUS_OK)
        self._record_source(ledger, OUTCOME_SEGMENTED, failures)

    def _record_source(self, ledger: dict[str, Any], outcome: str, failures: list[dict[str, Any]]) -> None:
        self._sources.append({**ledger, "outcome": outcome})
        self._failures.extend(failures)
        self._stats = merge_stats(
            self._stats,
            {
                "inputs": 1,
                "outcomes": {outcome: 1},
                "audio_s": ledger["duration_s"] or 0.0,
                "dropped_speech_s": ledger["dropped_speech_s"] or 0.0,
                "failures": 0 if not failures else len(failures),
                "failures_by_type": dict(Counter(f["error_type"] for f in failures)),
            },
        )

    def commit(self) -> None:
        """Write what is complete so far as one commit (a shard if there are rows)."""
        if not self._sources:
            return
        shard = None
        stats = dict(self._stats)
        if self._shard_parts:
            shard = pa.concat_tables(self._shard_parts).cast(self._schema)
            stats = merge_stats(
                stats, {"segments": shard.num_rows, "segment_audio_s": pc.sum(shard["duration_s"]).as_py()}
            )
            stats = merge_stats(stats, caption_stats(shard))
        self.run.commit(
            shard,
            pa.Table.from_pylist(self._sources, schema=SOURCES_SCHEMA),
            pa.Table.from_pylist(self._failures, schema=FAILURES_SCHEMA),
            stats,
            self.config.row_group_rows,
            self.config.compression,
        )
        self._shard_parts, self._shard_rows = [], 0
        self._sources, self._failures, self._stats = [], [], {}

    def close(self) -> None:
        if self._open:
            raise RuntimeError(f"{len(self._open)} inputs ended incomplete: {sorted(self._open)[:3]}")
        self.commit()
        self.run.finish()
