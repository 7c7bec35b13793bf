"""`stylecaps verify-run`: check a run directory before training on it.

Recomputes the sha256, size and row count of every file the manifest lists (shards, journals, the
whole-run ledger, caption set and verdict version parts), reads each shard's contract version, finds
files under shards/, journal/, captions/ and verdicts/ that the manifest does not list, reconciles the
ledger: inputs and outcomes against the totals, shard rows per source against the segments the ledger
gives each source, segment ids unique across shards, failures against the counts; and checks that
every layer part lines up with its shard. Reads the manifest once and never writes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contract import (
    DROPPED_SCHEMA,
    FAILURES_SCHEMA,
    OPEN_SOURCES_SCHEMA,
    SOURCES_SCHEMA,
    contract_problem,
)
from pipeline.layers import CAPTIONS, MANIFEST_KEYS, VERDICTS, layers_of
from pipeline.lock import lock_holder
from pipeline.rundir import LAYOUT_VERSION, Commit, read_manifest

_CHUNK = 1 << 22


@dataclass
class RunCheck:
    root: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_checked: int = 0
    bytes_checked: int = 0
    shard_rows: int = 0
    inputs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(root: Path, entry: dict[str, Any], what: str) -> list[str]:
    """Problems of one listed file (missing, size, sha256, row count), each starting with its path."""
    path = root / entry["path"]
    if not path.is_file():
        return [f"{entry['path']}: listed as {what} but missing"]
    problems = []
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        problems.append(f"{entry['path']}: {size} bytes, the manifest says {entry['bytes']}")
    if "sha256" in entry and _sha256(path) != entry["sha256"]:
        problems.append(f"{entry['path']}: sha256 differs from the manifest's (changed or corrupt)")
    if not problems and "rows" in entry:
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowInvalid) as error:
            return [f"{entry['path']}: not a readable Parquet file ({error})"]
        if rows != entry["rows"]:
            problems.append(f"{entry['path']}: {rows} rows, the manifest says {entry['rows']}")
    return problems


def _listed(commits: list[Commit], manifest: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    files = []
    for commit in commits:
        if commit.shard:
            files.append((commit.shard, "a shard"))
        files.extend((entry, f"the {kind} journal") for kind, entry in commit.journal.items())
    if manifest.get("complete"):
        ledger = manifest.get("ledger", {})
        files.extend((entry, f"the whole-run {kind} table") for kind, entry in ledger.items())
    for kind in MANIFEST_KEYS:
        for layer_id, layer in layers_of(manifest, kind).items():
            files.extend((part, f"a part of {kind} {layer_id}") for part in layer["parts"].values())
    return files


def _check_layers(check: RunCheck, root: Path, manifest: dict[str, Any], damaged: set[str]) -> None:
    """Each layer part lines up with its shard (row groups and segment ids), and a verdict version's
    part holds one verdict per caption of its set's part."""
    for kind in MANIFEST_KEYS:
        for layer in layers_of(manifest, kind).values():
            for shard, part in layer["parts"].items():
                if part["path"] in damaged or shard in damaged or not (root / shard).is_file():
                    continue
                problem = _misaligned(root / shard, root / part["path"])
                if problem is None and kind == VERDICTS:
                    judged = (
                        layers_of(manifest, CAPTIONS)
                        .get(layer["caption_set"], {})
                        .get("parts", {})
                        .get(shard)
                    )
                    problem = (
                        _verdicts_misfit(root / judged["path"], root / part["path"])
                        if judged
                        else (f"its caption set {layer['caption_set']} has no part for {shard}")
                    )
                if problem is not None:
                    check.problems.append(f"{part['path']}: {problem}")


def _misaligned(shard: Path, part: Path) -> str | None:
    shard_file, part_file = pq.ParquetFile(shard), pq.ParquetFile(part)
    sizes = [shard_file.metadata.row_group(i).num_rows for i in range(shard_file.num_row_groups)]
    part_sizes = [part_file.metadata.row_group(i).num_rows for i in range(part_file.num_row_groups)]
    if sizes != part_sizes:
        return f"row groups of {part_sizes} rows, its shard's are {sizes}"
    ids = pq.read_table(shard, columns=["segment_id"])["segment_id"]
    if ids != pq.read_table(part, columns=["segment_id"])["segment_id"]:
        return f"other segment ids than {shard.name}, or in another order"
    return None


def _verdicts_misfit(captions: Path, verdicts: Path) -> str | None:
    counted = pc.list_value_length(pq.read_table(captions, columns=["captions"])["captions"]).fill_null(0)
    judged = pc.list_value_length(pq.read_table(verdicts, columns=["verdicts"])["verdicts"]).fill_null(0)
    misfits = pc.sum(pc.and_(pc.not_equal(counted, judged), pc.not_equal(judged, 0))).as_py()
    return f"{misfits} segments with another number of verdicts than captions" if misfits else None


def _read_journals(root: Path, commits: list[Commit], kind: str, schema: pa.Schema) -> pa.Table:
    tables = [
        pq.read_table(root / c.journal[kind]["path"], schema=schema) for c in commits if kind in c.journal
    ]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def verify_run(root: str | Path) -> RunCheck:
    root = Path(root)
    manifest = read_manifest(root)
    check = RunCheck(root)
    if manifest.get("layout_version", 1) > LAYOUT_VERSION:
        version = manifest["layout_version"]
        check.problems.append(f"layout version {version} is newer than this stylecaps ({LAYOUT_VERSION})")
        return check
    commits = [Commit.from_manifest(c) for c in manifest["commits"]]
    listed = _listed(commits, manifest)

    # 1. every listed file: present, same size, same sha256, same row count
    damaged = set()
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL
        results = pool.map(lambda item: _check_file(root, *item), listed)
        for (entry, _), problems in zip(listed, results, strict=True):
            check.problems.extend(problems)
            if problems:
                damaged.add(entry["path"])
    check.files_checked = len(listed)
    check.bytes_checked = sum(entry.get("bytes", 0) for entry, _ in listed)

    # 2. nothing unlisted under shards/, journal/ and the layers' folders (a live writer's temporary
    # files excepted)
    holder, alive = lock_holder(root)
    names = {entry["path"] for entry, _ in listed}
    folders = [root / "shards", root / "journal"]
    folders += [folder for kind in MANIFEST_KEYS for folder in sorted((root / kind).glob("*"))]
    for folder in folders:
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            relative = path.relative_to(root).as_posix()
            if relative in names:
                continue
            if alive and path.name.startswith("."):
                writer = holder.describe() if holder else "a writer"
                check.notes.append(f"{relative}: being written by {writer}")
            else:
                check.problems.append(
                    f"{relative}: not listed in the manifest (left by an interrupted commit; the next "
                    "annotate, recaption or reverify on this run removes it)"
                )

    # 3. the ledger reconciles with the shards and the totals
    shards = [(c.shard["path"], root / c.shard["path"]) for c in commits if c.shard]
    readable = [(path, file) for path, file in shards if path not in damaged]
    if len(readable) < len(shards):
        check.notes.append("row counts are not reconciled: some shards failed their checks")
    _reconcile(check, root, manifest, commits, readable, len(readable) == len(shards))

    # 4. caption sets and verdict versions line up with the shards
    _check_layers(check, root, manifest, damaged)
    return check


def _reconcile(
    check: RunCheck,
    root: Path,
    manifest: dict[str, Any],
    commits: list[Commit],
    shards: list[tuple[str, Path]],
    all_shards_readable: bool,
) -> None:
    totals = manifest.get("totals", {})
    ledger = _read_journals(root, commits, "sources", SOURCES_SCHEMA).to_pylist()
    failures = _read_journals(root, commits, "failures", FAILURES_SCHEMA).to_pylist()
    last = commits[-1] if commits else None
    open_rows = (
        pq.read_table(root / last.journal["open"]["path"], schema=OPEN_SOURCES_SCHEMA).to_pylist()
        if last is not None and "open" in last.journal
        else []
    )
    check.inputs = len(ledger)

    def compare(what: str, manifest_says: Any, found: Any, where: str) -> None:
        if manifest_says != found:
            check.problems.append(f"{what}: the manifest's totals say {manifest_says}, {where} {found}")

    repeated = [path for path, n in Counter(r["input_path"] for r in ledger).items() if n > 1]
    if repeated:
        check.problems.append(f"the ledger holds {len(repeated)} inputs more than once, e.g. {repeated[0]}")
    compare("inputs", totals.get("inputs", 0), len(ledger), "the ledger holds")
    outcomes = {k: v for k, v in totals.get("outcomes", {}).items() if v}
    compare("outcomes", outcomes, dict(Counter(r["outcome"] for r in ledger)), "the ledger has")
    compare("failures", totals.get("failures", 0), len(failures), "the failures journals hold")
    dropped = _read_journals(root, commits, "dropped", DROPPED_SCHEMA).num_rows
    compare("dropped", totals.get("dropped", 0), dropped, "the dropped journals hold")
    counted = sum(r["dropped_segments"] or 0 for r in ledger) + sum(
        r["dropped_segments"] or 0 for r in open_rows
    )
    if counted != dropped:
        check.problems.append(f"the ledger counts {counted} dropped segments, the dropped journals {dropped}")
    counted = sum(r["failed_segments"] or 0 for r in ledger) + sum(r["failed_segments"] for r in open_rows)
    in_table = sum(1 for f in failures if f["segment_id"] is not None)
    if counted != in_table:
        check.problems.append(f"the ledger counts {counted} failed segments, the failures table {in_table}")

    expected: Counter[str] = Counter()  # source_id → shard rows the ledger and open journal account for
    for row in ledger:
        if row["outcome"] == "segmented" and row["segments"]:
            expected[row["source_id"]] += row["segments"]
    for row in open_rows:
        expected[row["source_id"]] += row["segments"]
    found: Counter[str] = Counter()
    ids: set[str] = set()
    repeats = 0
    for _, path in shards:
        problem = contract_problem(pq.read_schema(path))
        if problem is not None:
            check.problems.append(f"{path.name}: {problem}")
        table = pq.read_table(path, columns=["segment_id", "source_id"])
        check.shard_rows += table.num_rows
        found.update(table["source_id"].to_pylist())
        for segment_id in table["segment_id"].to_pylist():
            repeats += segment_id in ids
            ids.add(segment_id)
    if repeats:
        check.problems.append(f"{repeats} segment ids appear more than once across the shards")
    if all_shards_readable:
        compare("segments", totals.get("segments", 0), check.shard_rows, "the shards hold")
        differing = sorted(k for k in set(found) | set(expected) if found[k] != expected[k])
        if differing:
            first = differing[0]
            check.problems.append(
                f"{len(differing)} sources have other shard row counts than the ledger gives them, "
                f"e.g. {first}: {found[first]} rows, ledger {expected[first]}"
            )
    if open_rows:
        check.notes.append(f"{len(open_rows)} inputs are committed in part (a rerun resumes them)")
    if not manifest.get("complete"):
        check.notes.append("the last invocation did not finish (interrupted or still running)")
