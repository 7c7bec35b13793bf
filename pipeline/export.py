"""`stylecaps export parquet`: self-contained shards of a run, its chosen caption sets and verdict
versions joined in as one `captions` column (each caption naming its set and verdict version).

    OUT/manifest.json              kind "export", the run it came from, the selection, the sets' and
                                   versions' provenance, the shards (rows, bytes, sha256)
    OUT/shards/part-00000.parquet  one row per segment, in the run's order, with the run's row groups

The files load with `datasets.load_dataset("parquet", data_files=...)` (audio decodes as an Audio
feature) and with the trainer (`data.runs: [OUT]`). Files are written under hidden temporary names and
renamed into place; the manifest comes last, so an export without one is incomplete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.contract import CONTRACT_VERSION, contract_problem, self_contained
from pipeline.layers import (
    CAPTIONS,
    EXPORTED_CAPTIONS,
    MANIFEST_KEYS,
    LayerJoin,
    Selection,
    choose,
    layers_of,
)
from pipeline.rundir import MANIFEST, RunDirError, ShardFile, read_manifest, write_text_atomically


@dataclass(frozen=True)
class ExportReport:
    out: Path
    selection: Selection
    shards: int
    rows: int
    captions: int


def export_parquet(
    run: str | Path,
    out: str | Path,
    captions: Sequence[str] | None = None,
    verdicts: Sequence[str] | None = None,
    compression: str = "zstd",
    on_progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Write the run's shards with the chosen layers joined in to `out` (a new or empty folder)."""
    run, out = Path(run), Path(out)
    manifest = read_manifest(run)
    selection = choose(manifest, captions, verdicts)
    if not selection.sets:
        raise RunDirError(f"{run} has no caption sets to export")
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"--out {out} is not empty: export into a new folder")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    join = LayerJoin(run, manifest, selection)
    listed, total_rows, total_captions = [], 0, 0
    for number, shard in enumerate(entry["path"] for entry in manifest["shards"]):
        source = pq.ParquetFile(run / shard)
        problem = contract_problem(source.schema_arrow, ["segment_id", "audio"])
        if problem is not None:
            raise RunDirError(f"{run / shard}: {problem}")
        schema = self_contained(source.schema_arrow, EXPORTED_CAPTIONS, {"layers": selection.as_metadata()})
        file = ShardFile(out / shard, schema, 1 << 30, compression, fsync=False)
        try:
            for index in range(source.num_row_groups):
                table = join.read(source, shard, index)
                total_captions += len(table["captions"].combine_chunks().flatten())
                file.write_row_group(table.cast(schema))
            entry = {"path": shard, **file.finish()}
        except BaseException:
            file.abort()
            raise
        file.temporary.rename(file.final)
        listed.append(entry)
        total_rows += entry["rows"]
        if on_progress:
            on_progress(number + 1, len(manifest["shards"]))
    chosen = {set_id for set_id, _ in selection.sets}
    versions = {version for _, version in selection.sets if version}
    export: dict[str, Any] = {
        "kind": "export",
        "contract_version": CONTRACT_VERSION,
        "exported_from": str(run.resolve()),
        "created": time.time(),
        "selection": selection.describe(),
        "layers": selection.as_metadata(),
        MANIFEST_KEYS[CAPTIONS]: _provenance(layers_of(manifest, CAPTIONS), chosen),
        MANIFEST_KEYS["verdicts"]: _provenance(layers_of(manifest, "verdicts"), versions),
        "shards": listed,
    }
    write_text_atomically(out / MANIFEST, json.dumps(export, indent=1), fsync=False)
    return ExportReport(out, selection, len(listed), total_rows, total_captions)


def _provenance(entries: dict[str, dict[str, Any]], chosen: set[str]) -> dict[str, dict[str, Any]]:
    return {
        key: {k: v for k, v in entry.items() if k != "parts"}
        for key, entry in entries.items()
        if key in chosen
    }
