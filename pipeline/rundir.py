"""The run directory and its commit protocol.

    RUN/
      writer.lock              who is writing the run now (pipeline.lock)
      config.yaml              the resolved config of the latest invocation
      manifest.json            layout and contract version, config hash, commits, shards (rows, bytes,
                               sha256), totals, invocations
      shards/part-00000.parquet ...    shard rows (see pipeline.contract), deterministic names
      journal/00000.sources.parquet    per commit: the inputs finished in it (the ledger)
      journal/00000.failures.parquet   per commit: failed inputs and segments
      journal/00000.open.parquet       per commit: inputs still open, and how far they are committed
      journal/00000.dropped.parquet    per commit: segments a stage dropped, with the reason
      captions/<set>/part-00000.parquet      the caption sets and verdict versions beside the audio:
      verdicts/<version>/part-00000.parquet  row for row with their shard (pipeline.layers)
      sources.parquet, failures.parquet, dropped.parquet  all journals together, written at the end
      logs/                    one log per invocation (tracebacks of errors)

A shard is written row group by row group to a hidden temporary file (`shards/.part-00000.parquet.tmp`:
pyarrow's and HF datasets' folder readers skip dot files). A commit renames the shard and its journals
into place and only then rewrites manifest.json (itself through a rename): the manifest is the single
commit point. Before the manifest is replaced, the writer checks it still holds the run's lock. Opening
a run directory (always under its lock) removes every file under shards/ and journal/ that the manifest
does not list: the leftovers of an interrupted commit. Readers read the shards the manifest lists.
Every shard of a run has one schema: a run whose shards have another contract major version or another
column set than this invocation's stages make is not extended.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline.contract import (
    CONTRACT_VERSION,
    DROPPED_SCHEMA,
    FAILURES_SCHEMA,
    OPEN_SOURCES_SCHEMA,
    SOURCES_SCHEMA,
    ShardContract,
    same_major,
)
from pipeline.errors import UsageError
from pipeline.layers import (
    LayerInfo,
    add_part,
    listed_parts,
    part_path,
    register,
    remove_part,
    remove_unlisted_parts,
    split_captions,
)
from pipeline.lock import LOCK_NAME

MANIFEST = "manifest.json"
LAYOUT_VERSION = 2
_AUDIO_LEAF = "audio.bytes"
_OWN_NAMES = {"shards", "journal", "captions", "verdicts", "logs", "config.yaml", MANIFEST, LOCK_NAME}


class RunDirError(UsageError):
    """The directory cannot be used for this run (a file, foreign content, another config)."""


def merge_stats(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Add counters, recursing into nested count maps."""
    out = dict(total)
    for key, value in part.items():
        if isinstance(value, dict):
            out[key] = merge_stats(out.get(key, {}), value)
        else:
            out[key] = out.get(key, 0) + value
    return out


class _HashingWriter:
    """A binary file that sha256-hashes what passes through, so a shard is never read back.

    Hashing runs on a second thread (hashlib releases the GIL on large buffers), overlapping with
    Parquet encoding; a one-worker pool keeps the chunks in order.
    """

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-sha256")
        self._sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        chunk = bytes(data)  # the caller may reuse its buffer once write returns
        self._hasher.submit(self._sha256.update, chunk)
        self.size += len(chunk)
        return self._file.write(chunk)

    def flush(self) -> None:
        self._file.flush()

    def close(self, fsync: bool = False) -> str:
        """Close the file and return the hex sha256 of everything written."""
        if not self.closed:
            self.closed = True
            try:
                self._file.flush()
                if fsync:
                    os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._hasher.shutdown(wait=True)
        return self._sha256.hexdigest()


@cache
def _parquet_leaves(schema: pa.Schema) -> list[str]:
    """Parquet's leaf column paths (audio.bytes, captions.list.element.text, ...) of a schema."""
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer)
    parquet_schema = pq.ParquetFile(io.BytesIO(buffer.getvalue())).schema
    return [parquet_schema.column(i).path for i in range(len(parquet_schema))]


def _hidden_temporary(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


class ShardFile:
    """One shard being written: rows are buffered up to a row group, then encoded to a hidden temporary
    file, so memory holds at most one row group whatever the shard's size."""

    def __init__(
        self, final: Path, schema: pa.Schema, row_group_rows: int, compression: str, fsync: bool
    ) -> None:
        self.final = final
        self.temporary = _hidden_temporary(final)
        self.schema = schema
        self.rows = 0
        self._row_group_rows = row_group_rows
        self._fsync = fsync
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        # FLAC bytes neither compress nor dictionary-encode, and min/max statistics on them are useless;
        # every other leaf column gets all three. Parquet applies these settings per leaf column.
        others = [leaf for leaf in _parquet_leaves(schema) if leaf != _AUDIO_LEAF]
        self._sink = _HashingWriter(self.temporary)
        self._writer = pq.ParquetWriter(
            self._sink,
            schema,
            compression={**dict.fromkeys(others, compression), _AUDIO_LEAF: "none"},
            use_dictionary=others,
            write_statistics=others,
        )

    def append(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        while self._buffered >= self._row_group_rows:
            self._write_row_groups(whole_only=True)

    def _write_row_groups(self, whole_only: bool) -> None:
        table = pa.concat_tables(self._buffer)
        cut = table.num_rows - table.num_rows % self._row_group_rows if whole_only else table.num_rows
        if cut:
            self._writer.write_table(table.slice(0, cut), row_group_size=self._row_group_rows)
        rest = table.slice(cut)
        self._buffer, self._buffered = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

    def write_row_group(self, table: pa.Table) -> None:
        """Write `table` as one row group of its own (a layer part copies its shard's row groups)."""
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows

    def finish(self) -> dict[str, Any]:
        """Write what is buffered, close the file; return its manifest entry (without the path)."""
        if self._buffered:
            self._write_row_groups(whole_only=False)
        self._writer.close()
        sha256 = self._sink.close(fsync=self._fsync)
        return {"rows": self.rows, "bytes": self._sink.size, "sha256": sha256}

    def abort(self) -> None:
        """Close and delete the temporary file (after an error: a full disk gets its space back)."""
        with contextlib.suppress(Exception):  # the file is deleted whatever state it is in
            self._writer.close()
        with contextlib.suppress(OSError):
            self._sink.close()
        self.temporary.unlink(missing_ok=True)


class SegmentFiles:
    """A shard being written and, row for row and row group for row group, the parts of the layers the
    run's caption and verify stages write beside it (pipeline.layers)."""

    def __init__(self, shard: ShardFile, layers: list[tuple[LayerInfo, ShardFile]]) -> None:
        self.shard = shard
        self.layers = layers

    @property
    def rows(self) -> int:
        return self.shard.rows

    def append(self, table: pa.Table) -> None:
        """Stream rows of segments (ok rows, with their captions and verdicts) into the files."""
        self.shard.append(table.select(self.shard.schema.names).cast(self.shard.schema))
        if self.layers:
            parts = split_captions(table)
            for info, file in self.layers:
                file.append(parts[info.kind].cast(file.schema))

    def files(self) -> list[ShardFile]:
        return [self.shard, *(file for _, file in self.layers)]

    def abort(self) -> None:
        for file in self.files():
            file.abort()


@dataclass
class Commit:
    index: int
    shard: dict[str, Any] | None  # {path, rows, bytes, sha256}
    journal: dict[str, dict[str, Any]]  # kind (sources, failures, open, dropped) → {path, bytes, sha256}
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> Commit:
        if "journal" not in entry:  # layout 1: journal paths without checksums, no open journal
            journal = {kind: {"path": entry[kind]} for kind in ("sources", "failures")}
            return cls(entry["index"], entry["shard"], journal, entry.get("stats", {}))
        return cls(**entry)


@dataclass(frozen=True)
class ResumeState:
    """What earlier invocations left: inputs to skip, inputs to continue, source ids already owned."""

    done_inputs: set[str]
    open_inputs: dict[str, dict[str, Any]]  # input_path → its OPEN_SOURCES_SCHEMA row
    source_owners: dict[str, str]  # source_id → the input path that wrote it


class RunDirectory:
    def __init__(
        self,
        root: Path,
        commits: list[Commit],
        manifest: dict[str, Any],
        contract: ShardContract,
        fsync: bool,
        fence: Callable[[], None] | None,
        layers: tuple[LayerInfo, ...] = (),
    ) -> None:
        self.root = root
        self.commits = commits
        self.contract = contract  # the schema of every shard this run writes
        self.layers = layers  # the caption set and verdict version written beside each shard
        self._manifest = manifest
        self._fsync = fsync
        self._fence = fence
        # Running sums, so a commit adds its own stats instead of re-adding every earlier commit's.
        self._stats: dict[str, Any] = {}
        for commit in commits:
            self._stats = merge_stats(self._stats, commit.stats)

    # -- opening -----------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        root: str | Path,
        config_hash: str,
        resolved_config: dict[str, Any],
        contract: ShardContract,
        fsync: bool = False,
        fence: Callable[[], None] | None = None,
        invocation: dict[str, Any] | None = None,
        layers: tuple[LayerInfo, ...] = (),
    ) -> RunDirectory:
        """Open (or create) a run directory; the caller holds its lock (pipeline.lock.RunLock). `layers`
        are the caption set and verdict version this config writes beside every shard."""
        root = Path(root)
        if ("captions" in contract.columns_schema.names) != bool(layers):
            raise ValueError("a contract with captions needs the layers they are written to, and only it")
        manifest_path = root / MANIFEST
        if manifest_path.exists():
            manifest = read_manifest(root)
            if manifest.get("config_hash") != config_hash:
                raise RunDirError(
                    f"{root} was made with another processing config (hash {manifest.get('config_hash')}, "
                    f"this one is {config_hash}); use a new --out"
                )
            commits = [Commit.from_manifest(c) for c in manifest["commits"]]
            _check_extendable(root, manifest, commits, contract)
            manifest = {k: v for k, v in manifest.items() if k not in {"shards", "totals", "commits"}}
        else:
            foreign = [p.name for p in root.iterdir() if p.name not in _OWN_NAMES and p.name[0] != "."]
            if foreign:
                raise RunDirError(
                    f"{root} is not empty and holds no {MANIFEST} (it has {foreign[0]}): "
                    "not a stylecaps run; use a new --out"
                )
            manifest = {
                "layout_version": LAYOUT_VERSION,
                "contract_version": CONTRACT_VERSION,
                "config_hash": config_hash,
                "created": time.time(),
                "invocations": [],
            }
            commits = []
        manifest["layout_version"] = LAYOUT_VERSION
        if invocation is not None:
            manifest["invocations"] = [*manifest.get("invocations", []), invocation]
        for info in layers:
            register(manifest, info, written_by="annotate")
        for sub in ("shards", "journal"):
            (root / sub).mkdir(exist_ok=True)
        run = cls(root, commits, manifest, contract, fsync, fence, layers)
        run._remove_uncommitted()
        write_text_atomically(root / "config.yaml", yaml.safe_dump(resolved_config, sort_keys=False), fsync)
        return run

    def listed_files(self) -> set[Path]:
        listed = {self.root / c.shard["path"] for c in self.commits if c.shard}
        listed |= {self.root / path for path in listed_parts(self._manifest)}
        return listed | {self.root / entry["path"] for c in self.commits for entry in c.journal.values()}

    def _remove_uncommitted(self) -> None:
        keep = self.listed_files()
        for sub in ("shards", "journal"):
            for path in (self.root / sub).iterdir():
                if path not in keep:
                    path.unlink()
        remove_unlisted_parts(self.root, self._manifest)

    # -- state of earlier commits ------------------------------------------------------------------------
    def _journal(self, kind: str, schema: pa.Schema) -> pa.Table:
        tables = [
            pq.read_table(self.root / c.journal[kind]["path"], schema=schema)
            for c in self.commits
            if kind in c.journal
        ]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def sources(self) -> pa.Table:
        return self._journal("sources", SOURCES_SCHEMA)

    def failures(self) -> pa.Table:
        return self._journal("failures", FAILURES_SCHEMA)

    def dropped(self) -> pa.Table:
        return self._journal("dropped", DROPPED_SCHEMA)

    def open_sources(self) -> pa.Table:
        """The inputs open at the last commit (a long source committed in parts)."""
        last = self.commits[-1] if self.commits else None
        if last is None or "open" not in last.journal:
            return OPEN_SOURCES_SCHEMA.empty_table()
        return pq.read_table(self.root / last.journal["open"]["path"], schema=OPEN_SOURCES_SCHEMA)

    def resume_state(self) -> ResumeState:
        ledger = self.sources().select(["input_path", "source_id", "source_path", "outcome"]).to_pylist()
        open_rows = self.open_sources().to_pylist()
        owners = {row["source_id"]: row["input_path"] for row in ledger if row["outcome"] == "segmented"}
        owners |= {row["source_id"]: row["input_path"] for row in open_rows if row["source_id"]}
        return ResumeState(
            done_inputs={row["input_path"] for row in ledger},
            open_inputs={row["input_path"]: row for row in open_rows},
            source_owners=owners,
        )

    def totals(self) -> dict[str, Any]:
        shards = [c.shard for c in self.commits if c.shard]
        last_open = self.commits[-1].journal.get("open", {}) if self.commits else {}
        return {
            **self._stats,
            "shards": len(shards),
            "rows": sum(s["rows"] for s in shards),
            "open_inputs": last_open.get("rows", 0),
        }

    # -- committing --------------------------------------------------------------------------------------
    def new_shard(self, row_group_rows: int, compression: str) -> SegmentFiles:
        index = sum(1 for c in self.commits if c.shard)
        shard = f"shards/part-{index:05d}.parquet"

        def file(relative: str, schema: pa.Schema) -> ShardFile:
            (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
            return ShardFile(self.root / relative, schema, row_group_rows, compression, self._fsync)

        layers = [(info, file(part_path(info, shard), info.parquet_schema(shard))) for info in self.layers]
        return SegmentFiles(file(shard, self.contract.parquet_schema), layers)

    def commit(
        self,
        shard: SegmentFiles | None,
        sources: pa.Table,
        failures: pa.Table,
        open_sources: pa.Table,
        dropped: pa.Table,
        stats: dict[str, Any],
    ) -> Commit:
        """Make a shard (if it has rows) and the journals of one commit part of the run.

        Every file is written under a hidden temporary name first; then all are renamed into place and
        the manifest is replaced. If anything fails before the manifest is, the files of this commit are
        removed again: an unlisted file is never left visible."""
        index = len(self.commits)
        staged: list[tuple[Path, Path]] = []  # (temporary, final)
        try:
            shard_entry, parts = None, []
            if shard is not None:
                entries = [(file, file.finish()) for file in shard.files()]
                if shard.rows:
                    staged += [(file.temporary, file.final) for file, _ in entries]
                    shard_entry, *parts = [
                        {"path": file.final.relative_to(self.root).as_posix(), **entry}
                        for file, entry in entries
                    ]
                else:
                    for file, _ in entries:
                        file.temporary.unlink()
            journal = {}
            tables = (
                ("sources", sources),
                ("failures", failures),
                ("open", open_sources),
                ("dropped", dropped),
            )
            for kind, table in tables:
                journal[kind], temporary = self._write_small(table, f"journal/{index:05d}.{kind}.parquet")
                staged.append((temporary, self.root / journal[kind]["path"]))
            commit = Commit(index=index, shard=shard_entry, journal=journal, stats=stats)
            if self._fence is not None:
                self._fence()  # a writer that lost its lock must not replace the manifest
            for temporary, final in staged:
                os.replace(temporary, final)
            before = self._stats
            self.commits.append(commit)
            self._stats = merge_stats(before, stats)
            for (info, _), part in zip(shard.layers if shard else [], parts, strict=True):
                add_part(self._manifest, info, shard_entry["path"], part)
            self._write_manifest(complete=False)
        except BaseException:
            if self.commits and self.commits[-1].index == index:
                self.commits.pop()
                self._stats = before
                for (info, _), _part in zip(shard.layers if shard else [], parts, strict=False):
                    remove_part(self._manifest, info, shard_entry["path"])
            for temporary, final in staged:
                temporary.unlink(missing_ok=True)
                final.unlink(missing_ok=True)
            raise
        return commit

    def _write_small(self, table: pa.Table, relative: str) -> tuple[dict[str, Any], Path]:
        """Write a small table to a hidden temporary; return its manifest entry and the temporary path."""
        temporary = _hidden_temporary(self.root / relative)
        sink = _HashingWriter(temporary)
        try:
            pq.write_table(table, sink)
        finally:
            sha256 = sink.close(fsync=self._fsync)
        return {"path": relative, "rows": table.num_rows, "bytes": sink.size, "sha256": sha256}, temporary

    def _write_manifest(self, complete: bool) -> None:
        shards = [c.shard for c in self.commits if c.shard]
        if not complete:
            self._manifest.pop("ledger", None)  # the whole-run tables are rewritten when it completes
        manifest = {
            **self._manifest,
            "updated": time.time(),
            "complete": complete,
            "shards": shards,
            "totals": self.totals(),
            "commits": [asdict(c) for c in self.commits],
        }
        write_text_atomically(self.root / MANIFEST, json.dumps(manifest, indent=1), self._fsync)

    def finish(self) -> None:
        """Write the whole-run ledger, failures and dropped tables and mark the manifest complete."""
        ledger = {}
        for kind, table in (
            ("sources", self.sources()),
            ("failures", self.failures()),
            ("dropped", self.dropped()),
        ):
            ledger[kind], temporary = self._write_small(table, f"{kind}.parquet")
            os.replace(temporary, self.root / ledger[kind]["path"])
        self._manifest["ledger"] = ledger
        if self._fence is not None:
            self._fence()
        self._write_manifest(complete=True)


def _check_extendable(
    root: Path, manifest: dict[str, Any], commits: list[Commit], contract: ShardContract
) -> None:
    """Refuse to add shards of another contract major version or column set to a run (readers rely on
    every shard of a run having one schema)."""
    version = manifest.get("contract_version", "1.0")
    if not same_major(version):
        raise RunDirError(
            f"{root} holds contract {version} shards, this stylecaps writes {CONTRACT_VERSION}: "
            "use a new --out"
        )
    first = next((root / c.shard["path"] for c in commits if c.shard), None)
    if first is None:
        return
    try:
        committed = pq.read_schema(first).remove_metadata()
    except (OSError, pa.ArrowInvalid) as error:
        raise RunDirError(f"{first}: cannot read its schema ({error}); run stylecaps verify-run") from None
    if not committed.equals(contract.shard_schema):
        ours, theirs = set(contract.shard_schema.names), set(committed.names)
        differences = [
            *(f"+{name}" for name in contract.shard_schema.names if name not in theirs),
            *(f"-{name}" for name in committed.names if name not in ours),
            *(f"~{f.name}" for f in committed if f.name in ours and f != contract.shard_schema.field(f.name)),
        ]
        raise RunDirError(
            f"{root} holds shards with other columns than this config's stages make "
            f"({', '.join(differences) or 'same names, other order'}): use a new --out"
        )


def write_text_atomically(path: Path, text: str, fsync: bool) -> None:
    temporary = _hidden_temporary(path)
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    os.replace(temporary, path)


def new_layer_part(root: Path, info: LayerInfo, shard: str, compression: str, fsync: bool) -> ShardFile:
    """The part of a layer for one shard of an existing run (recaption, reverify), written row group by
    row group as its shard's (ShardFile.write_row_group)."""
    final = root / part_path(info, shard)
    final.parent.mkdir(parents=True, exist_ok=True)
    return ShardFile(final, info.parquet_schema(shard), 1 << 30, compression, fsync)


def commit_layer_part(
    root: Path,
    manifest: dict[str, Any],
    info: LayerInfo,
    shard: str,
    part: ShardFile,
    fsync: bool,
    fence: Callable[[], None],
) -> None:
    """Commit a layer's part for one shard: rename it into place, then list it in the manifest (the
    commit point). The caller holds the run's lock; `manifest` is the run's, updated in place."""
    entry = {"path": part.final.relative_to(root).as_posix(), **part.finish()}
    try:
        fence()  # a writer that lost its lock must not replace the manifest
        os.replace(part.temporary, part.final)
        add_part(manifest, info, shard, entry)
        manifest["updated"] = time.time()
        write_text_atomically(root / MANIFEST, json.dumps(manifest, indent=1), fsync)
    except BaseException:
        remove_part(manifest, info, shard)
        part.temporary.unlink(missing_ok=True)
        part.final.unlink(missing_ok=True)
        raise


def register_layer(
    root: Path,
    manifest: dict[str, Any],
    info: LayerInfo,
    written_by: str,
    fsync: bool,
    fence: Callable[[], None],
) -> dict[str, Any]:
    """List a new layer in an existing run's manifest (or find it there, to resume) and delete its parts
    that an interrupted commit left unlisted; return its manifest entry."""
    entry = register(manifest, info, written_by)
    remove_unlisted_parts(root, manifest)
    fence()
    write_text_atomically(root / MANIFEST, json.dumps(manifest, indent=1), fsync)
    return entry


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{root} holds no {MANIFEST}: not a stylecaps run directory") from None
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path} is not valid JSON (line {error.lineno}): the run is damaged") from None


def listed_shards(root: str | Path) -> list[Path]:
    """The committed shards of a run, in order: what every reader reads (never a folder glob).

    `datasets.load_dataset("parquet", data_files=[str(p) for p in listed_shards(run)])`"""
    root = Path(root)
    return [root / shard["path"] for shard in read_manifest(root)["shards"]]
