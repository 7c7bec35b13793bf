"""Ingest stage: the first stage every source meets. It names the source by its content, checks the
file decodes, and claims the name for this input, so a second copy of a source fails here as a
DuplicateSource before any model (separation, diarization) spends time on it.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from annotate.audio import content_id, iter_mono_16k
from annotate.base import BatchStage, Row, failed_row

DUPLICATE_SOURCE = "DuplicateSource"
_PROBE_BLOCK_S = 1.0  # decoding the first second catches an unreadable format, cheaply


class SourceClaims(Protocol):
    """Which input owns each source id in a run: the run's committed sources own theirs, and among the
    inputs of this invocation the one listed first."""

    def claim(self, source_id: str, input_path: str) -> str:
        """Claim `source_id` for `input_path`; return the input that owns it so far (this one, or one
        listed before it)."""
        ...


class IngestStage(BatchStage):
    name: ClassVar[str] = "ingest"

    def __init__(self, claims: SourceClaims) -> None:
        self.claims = claims

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [self._ingest(row) for row in rows]

    def _ingest(self, row: Row) -> Row:
        path = row["input_path"]
        next(iter(iter_mono_16k(path, _PROBE_BLOCK_S)), None)  # raises if the file does not decode
        source = {**row, "source_id": row.get("source_id") or content_id(path)}  # a manifest's id wins
        owner = self.claims.claim(source["source_id"], path)
        if owner != path:
            return failed_row(
                source, self.name, duplicate_message(source["source_id"], owner), DUPLICATE_SOURCE
            )
        return source


def duplicate_message(source_id: str, owner: str) -> str:
    """Why a copy is a DuplicateSource failure (here, and in the writer's check)."""
    return (
        f"source {source_id} is already in this run from {owner} "
        "(same content hash, or the same source_id in a manifest)"
    )
