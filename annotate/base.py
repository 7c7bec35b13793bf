"""What every stage class shares: the strict config base and the batch-stage protocol.

A stage is a plain object: built from its config, `setup()` loads models once per worker, and
calling it maps a batch of row dicts to rows (it may emit more or fewer rows than it got). Row keys
are the stream columns of `pipeline.contract`; a stage reads the keys it needs and adds its own.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

Row = dict[str, Any]


class StrictConfig(BaseModel):
    """Config base: unknown keys are errors, values are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchStage(Protocol):
    name: ClassVar[str]

    def setup(self) -> None: ...

    def __call__(self, rows: list[Row]) -> list[Row]: ...
