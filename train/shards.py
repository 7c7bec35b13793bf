"""The one reader of shards for training: stream verified (audio, caption) pairs from a run directory.

It reads the run's manifest (only committed shards), checks the contract's major version, and reads
row group by row group so memory stays bounded by one row group, not a shard.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.contract import CONTRACT_VERSION, contract_of

_COLUMNS = ["segment_id", "speaker", "duration_s", "audio", "captions"]


class ShardContractError(ValueError):
    """A shard written under an incompatible contract version."""


@dataclass(frozen=True)
class CaptionedSegment:
    segment_id: str
    speaker: str | None
    duration_s: float
    flac: bytes
    captions: list[str]  # the texts that passed verification, in view order


def shard_paths(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return [run_dir / shard["path"] for shard in manifest["shards"]]


def _check_contract(file: pq.ParquetFile, path: Path) -> None:
    version = contract_of(file.schema_arrow)["contract_version"]
    if version.split(".")[0] != CONTRACT_VERSION.split(".")[0]:
        raise ShardContractError(f"{path}: contract {version}, this reader reads {CONTRACT_VERSION}")


def iter_captioned_segments(
    run_dir: str | Path, granularity: str | None = "fine", verified_only: bool = True
) -> Iterator[CaptionedSegment]:
    """Segments with at least one usable caption of the given granularity (None: any)."""
    for path in shard_paths(run_dir):
        file = pq.ParquetFile(path)
        _check_contract(file, path)
        for group in range(file.num_row_groups):
            for row in file.read_row_group(group, columns=_COLUMNS).to_pylist():
                texts = [
                    c["text"]
                    for c in row["captions"]
                    if (granularity is None or c["granularity"] == granularity)
                    and (not verified_only or (c["verdict"] and c["verdict"]["passed"]))
                ]
                if texts:
                    yield CaptionedSegment(
                        row["segment_id"], row["speaker"], row["duration_s"], row["audio"]["bytes"], texts
                    )
