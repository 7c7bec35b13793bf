"""What every stage class shares: the strict config base and the batch-stage protocol.

A stage is a plain object: built from its config, `setup()` loads models once per worker, and
calling it maps a batch of row dicts to rows (it may emit more or fewer rows than it got). Row keys
are the stream columns of `pipeline.contract`; a stage reads the keys it needs and adds its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

Row = dict[str, Any]


_MAX_MESSAGE = 2000


def failed_row(row: Row, stage: str, error: BaseException) -> Row:
    """The row marked failed at `stage` with the error's type and message; its audio is dropped
    (the failures table keeps ids and positions, which locate the audio in the source)."""
    message = str(error).strip() or repr(error)
    return {
        **row,
        "status": "failed",
        "audio": None,
        "error_stage": stage,
        "error_type": type(error).__name__,
        "error_message": message[:_MAX_MESSAGE],
    }


class StrictConfig(BaseModel):
    """Config base: unknown keys are errors, values are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchStage(Protocol):
    name: ClassVar[str]

    def setup(self) -> None: ...

    def __call__(self, rows: list[Row]) -> list[Row]: ...


@runtime_checkable
class StreamingStage(BatchStage, Protocol):
    """A stage that turns one row into many (a source into its segments) can also hand them out one
    by one, so a long source never sits whole in memory. It raises, if at all, before its first row;
    later errors come out as failed rows, so a source always yields the rows it announced."""

    def stream(self, row: Row) -> Iterator[Row]: ...
