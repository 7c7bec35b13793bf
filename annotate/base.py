"""What every stage class shares: the strict config base, the batch-stage protocol, and the row
vocabulary (statuses, outcomes, failed and end-of-source rows), defined here and nowhere else.

A stage is a plain object: built from its config, `setup()` loads models once per worker, calling it
maps a batch of row dicts to rows (it may emit more or fewer rows than it got), and `teardown()`
releases what setup took when the worker shuts down (GPU memory, sessions, files). Row keys
are the stream columns of `pipeline.contract`; a stage reads the keys it needs and adds its own, which
it declares as Arrow fields in `columns` (a key no stage declares never reaches the shards).

Rows of one source travel in order: its segment rows, by increasing start, then exactly one end row
(status `end`) that carries the source's outcome. A source that fails before it has segments is one
failed row without a segment id, which is its end row too. A stage may drop a segment it judges unfit
(too short, two speakers): the row becomes a dropped row with the reason, accounted for in the run's
ledger instead of the shards. Only rows with status `ok` enter a stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Protocol, runtime_checkable

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

Row = dict[str, Any]

# Row statuses: `ok` rows are processed, the others pass through every stage untouched.
STATUS_OK, STATUS_FAILED, STATUS_END, STATUS_DROPPED = "ok", "failed", "end", "dropped"
# What became of a source (its end row's `outcome`, and the ledger's).
OUTCOME_SEGMENTED = "segmented"
OUTCOME_NO_SPEECH = "no_speech"  # no speech detected at all
OUTCOME_SPEECH_TOO_SHORT = "speech_too_short"  # speech, but no stretch reaches the minimum duration
OUTCOME_ALL_DROPPED = "all_dropped"  # segments, but a stage dropped every one of them
OUTCOME_FAILED = "failed"

_MAX_MESSAGE = 2000


def failed_row(row: Row, stage: str, error: BaseException | str, error_type: str | None = None) -> Row:
    """The row marked failed at `stage` with the error's type and message; its audio is dropped
    (the failures table keeps ids and positions, which locate the audio in the source)."""
    message = (str(error).strip() or repr(error))[:_MAX_MESSAGE]
    return {
        **row,
        "status": STATUS_FAILED,
        "audio": None,
        "error_stage": stage,
        "error_type": error_type or type(error).__name__,
        "error_message": message,
    }


def dropped_row(row: Row, stage: str, reason: str, score: float | None = None) -> Row:
    """The segment row dropped at `stage` for `reason` (`too_short`, `speaker_inconsistent`, `overlap`,
    ...) with the score the decision was made on, if any; its audio is dropped like a failed row's."""
    return {
        **row,
        "status": STATUS_DROPPED,
        "audio": None,
        "drop_stage": stage,
        "drop_reason": reason,
        "drop_score": score,
    }


def audio_path_of(row: Row) -> str:
    """The audio later stages decode: the separated vocals where a separation stage wrote them
    (`audio_path`), else the input file."""
    return row.get("audio_path") or row["input_path"]


def end_row(source: Row, outcome: str) -> Row:
    """The last row of a source: no segment, the source's outcome and bookkeeping."""
    return {**source, "status": STATUS_END, "outcome": outcome, "segment_id": None, "audio": None}


def is_source_end(row: Row) -> bool:
    """Whether the row closes its source (an end row, or a source that failed as a whole)."""
    status = row.get("status", STATUS_OK)
    return status == STATUS_END or (status == STATUS_FAILED and row.get("segment_id") is None)


class StrictConfig(BaseModel):
    """Config base: unknown keys are errors, values are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchStage(Protocol):
    """Stage classes subclass it (or StreamingStage), so one that adds no shard column inherits `columns`."""

    name: ClassVar[str]
    # The shard columns the stage adds to the core ones (pipeline.contract.CORE_COLUMNS).
    columns: ClassVar[tuple[pa.Field, ...]] = ()

    def setup(self) -> None: ...

    def __call__(self, rows: list[Row]) -> list[Row]: ...

    def teardown(self) -> None: ...


@runtime_checkable
class StreamingStage(BatchStage, Protocol):
    """A stage that turns one row into many (a source into its segments) can also hand them out one
    by one, so a long source never sits whole in memory. It raises, if at all, before its first row;
    later errors come out as failed rows, and its last row is the source's end row."""

    def stream(self, row: Row) -> Iterator[Row]: ...
