"""The run directory and its commit protocol.

    RUN/
      config.yaml              the resolved config of the run
      manifest.json            contract version, config hash, commits, shards (rows, bytes, sha256), totals
      shards/part-00000.parquet ...    shard rows (see pipeline.contract), deterministic names
      journal/00000.sources.parquet    per commit: what became of each input finished in it
      journal/00000.failures.parquet   per commit: failed inputs and segments
      sources.parquet, failures.parquet  all journals together, written when a run finishes

A commit writes its files under temporary names, renames them into place, and only then rewrites
manifest.json (itself through a rename): the manifest is the single commit point. On re-opening,
files the manifest does not list are leftovers of an interrupted run and are removed, and the
inputs listed in committed journals are skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline.contract import CONTRACT_VERSION, FAILURES_SCHEMA, SOURCES_SCHEMA

MANIFEST = "manifest.json"
_AUDIO_LEAF = "audio.bytes"
LAYOUT_VERSION = 1


class RunDirError(Exception):
    """The directory cannot be used for this run (foreign content, other config)."""


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
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._hasher.shutdown(wait=True)
            self.closed = True
        return self._sha256.hexdigest()


@cache
def _parquet_leaves(schema: pa.Schema) -> list[str]:
    """Parquet's leaf column paths (audio.bytes, captions.list.element.text, ...) of a schema."""
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer)
    parquet_schema = pq.ParquetFile(io.BytesIO(buffer.getvalue())).schema
    return [parquet_schema.column(i).path for i in range(len(parquet_schema))]


@dataclass
class Commit:
    index: int
    shard: dict[str, Any] | None
    sources: str
    failures: str
    stats: dict[str, Any] = field(default_factory=dict)


class RunDirectory:
    def __init__(self, root: Path, commits: list[Commit], manifest: dict[str, Any], fsync: bool) -> None:
        self.root = root
        self.commits = commits
        self._manifest = manifest
        self._fsync = fsync
        # Running sums, so a commit adds its own stats instead of re-adding every earlier commit's.
        self._stats: dict[str, Any] = {}
        for commit in commits:
            self._stats = merge_stats(self._stats, commit.stats)

    # -- opening -----------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, root: str | Path, config_hash: str, resolved_config: dict[str, Any], fsync: bool = False
    ) -> RunDirectory:
        root = Path(root)
        manifest_path = root / MANIFEST
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("config_hash") != config_hash:
                raise RunDirError(
                    f"{root} was made with another processing config (hash {manifest.get('config_hash')}, "
                    f"this one is {config_hash}); use a new --out"
                )
            commits = [Commit(**c) for c in manifest["commits"]]
        else:
            if root.exists() and any(
                p.name not in {"shards", "journal", "config.yaml"} for p in root.iterdir()
            ):
                raise RunDirError(f"{root} exists, is not empty and holds no {MANIFEST}: not a stylecaps run")
            manifest = {
                "layout_version": LAYOUT_VERSION,
                "contract_version": CONTRACT_VERSION,
                "config_hash": config_hash,
                "created": time.time(),
            }
            commits = []
        for sub in ("shards", "journal"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        run = cls(root, commits, manifest, fsync)
        run._remove_uncommitted()
        (root / "config.yaml").write_text(yaml.safe_dump(resolved_config, sort_keys=False))
        return run

    def _remove_uncommitted(self) -> None:
        keep = {self.root / c.sources for c in self.commits} | {self.root / c.failures for c in self.commits}
        keep |= {self.root / c.shard["path"] for c in self.commits if c.shard}
        for sub in ("shards", "journal"):
            for path in (self.root / sub).iterdir():
                if path not in keep:
                    path.unlink()

    # -- state of earlier commits ------------------------------------------------------------------------
    def _journal(self, kind: str, schema: pa.Schema) -> pa.Table:
        tables = [pq.read_table(self.root / getattr(c, kind), schema=schema) for c in self.commits]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def sources(self) -> pa.Table:
        return self._journal("sources", SOURCES_SCHEMA)

    def failures(self) -> pa.Table:
        return self._journal("failures", FAILURES_SCHEMA)

    def totals(self) -> dict[str, Any]:
        shards = [c.shard for c in self.commits if c.shard]
        return {**self._stats, "shards": len(shards), "rows": sum(s["rows"] for s in shards)}

    # -- committing --------------------------------------------------------------------------------------
    def commit(
        self,
        shard: pa.Table | None,
        sources: pa.Table,
        failures: pa.Table,
        stats: dict[str, Any],
        row_group_rows: int,
        compression: str,
    ) -> Commit:
        index = len(self.commits)
        shard_entry = None
        if shard is not None and shard.num_rows:
            shard_index = sum(1 for c in self.commits if c.shard)
            shard_entry = self._write_shard(
                shard, f"shards/part-{shard_index:05d}.parquet", row_group_rows, compression
            )
        commit = Commit(
            index=index,
            shard=shard_entry,
            sources=self._write_small(sources, f"journal/{index:05d}.sources.parquet"),
            failures=self._write_small(failures, f"journal/{index:05d}.failures.parquet"),
            stats=stats,
        )
        self.commits.append(commit)
        self._stats = merge_stats(self._stats, stats)
        self._write_manifest(complete=False)
        return commit

    def _write_shard(
        self, table: pa.Table, relative: str, row_group_rows: int, compression: str
    ) -> dict[str, Any]:
        final = self.root / relative
        temporary = final.with_name(final.name + ".tmp")
        # FLAC bytes neither compress nor dictionary-encode, and min/max statistics on them are useless;
        # every other leaf column gets all three. Parquet applies these settings per leaf column.
        others = [leaf for leaf in _parquet_leaves(table.schema) if leaf != _AUDIO_LEAF]
        codec = "none" if compression == "none" else compression
        sink = _HashingWriter(temporary)
        try:
            pq.write_table(
                table,
                sink,
                row_group_size=row_group_rows,
                compression={**dict.fromkeys(others, codec), _AUDIO_LEAF: "none"},
                use_dictionary=others,
                write_statistics=others,
            )
        finally:
            sha256 = sink.close(fsync=self._fsync)
        os.replace(temporary, final)
        return {"path": relative, "rows": table.num_rows, "bytes": sink.size, "sha256": sha256}

    def _write_small(self, table: pa.Table, relative: str) -> str:
        final = self.root / relative
        temporary = final.with_name(final.name + ".tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, final)
        return relative

    def _write_manifest(self, complete: bool) -> None:
        shards = [c.shard for c in self.commits if c.shard]
        manifest = {
            **self._manifest,
            "updated": time.time(),
            "complete": complete,
            "shards": shards,
            "totals": self.totals(),
            "commits": [c.__dict__ for c in self.commits],
        }
        path = self.root / MANIFEST
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "w") as handle:
            json.dump(manifest, handle, indent=1)
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
        self._manifest = {k: v for k, v in manifest.items() if k not in {"shards", "totals", "commits"}}

    def finish(self) -> None:
        """Write the whole-run ledger and failures table and mark the manifest complete."""
        for name, table in (("sources.parquet", self.sources()), ("failures.parquet", self.failures())):
            self._write_small(table, name)
        self._write_manifest(complete=True)
