"""Several backends in one pipeline stage, run in turn on a batch: captioners that each add their views,
verifiers that each judge the captions (rules first, then an LLM). Each sees only the rows still ok
after the ones before it (a captioner may drop a segment)."""

from __future__ import annotations

from annotate.base import STATUS_OK, BatchStage, Row


class StagesInTurn(BatchStage):
    """Subclasses name the pipeline stage and its columns; the parts are built from its config."""

    def __init__(self, parts: list[BatchStage]) -> None:
        if not parts:
            raise ValueError(f"stage {self.name!r} needs at least one backend")
        self.parts = parts

    def setup(self) -> None:
        for part in self.parts:
            part.setup()

    def teardown(self) -> None:
        for part in reversed(self.parts):
            part.teardown()

    def __call__(self, rows: list[Row]) -> list[Row]:
        for part in self.parts:
            ok = [index for index, row in enumerate(rows) if row.get("status", STATUS_OK) == STATUS_OK]
            rows = list(rows)
            for index, row in zip(ok, part([rows[index] for index in ok]), strict=True):
                rows[index] = row
        return rows
