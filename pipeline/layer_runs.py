"""`stylecaps recaption` and `stylecaps reverify`: a new caption set, or a new verdict version of one,
beside the audio of an existing run.

The work is the run's committed shards, row group by row group. Each row group is read where it is
processed (a Ray task, or the loop with --executor local) together with, for reverify, the captions of
the set it judges; the caption (verify) stage runs on it under the config's `ray.stages` declaration,
as in annotate; the layer's part for a shard is written row group for row group as its shard and
committed (pipeline.rundir.commit_layer_part) when the shard's last row is back. A killed or interrupted
run resumes at the first shard without a committed part. Shards, which hold the audio, are only read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from annotate.base import STATUS_OK
from annotate.caption_types import CAPTIONS_COLUMN
from pipeline.config import RunConfig
from pipeline.contract import contract_problem, same_major, stream_schema, stream_table
from pipeline.errors import describe_os_error
from pipeline.layers import (
    CAPTIONS,
    LayerError,
    LayerInfo,
    caption_set_of,
    layers_of,
    split_captions,
    verdict_version_of,
)
from pipeline.lock import RunLock, command_line
from pipeline.rundir import (
    RunDirError,
    ShardFile,
    commit_layer_part,
    new_layer_part,
    read_manifest,
    register_layer,
)
from pipeline.runlog import log
from pipeline.runner import (
    Executor,
    RunInterrupted,
    configure_ray_data,
    interrupts_between_commits,
    ray_session,
    through_groups_locally,
    through_groups_on_ray,
)
from pipeline.stages import StageSpec, caption_spec, verify_spec


@dataclass(frozen=True)
class LayerReport:
    out: Path
    layer: LayerInfo
    shards: int  # in the run
    shards_before: int  # that already had their part (a resumed run)
    segments: int  # written by this invocation
    failed: int  # segments the stage failed on (recorded in the part with the error)
    wall_s: float


@dataclass(frozen=True)
class _RowGroup:
    shard: str  # run-relative path
    index: int
    segment_ids: list[str]
    judged_part: str | None  # reverify: the judged caption set's part for the shard (run-relative)


def recaption(
    run: str | Path,
    config: RunConfig,
    executor: Executor = "ray",
    on_progress: Callable[[int, int], None] | None = None,
    wait: bool = False,
) -> LayerReport:
    """Add the caption set of `config.caption` to every segment of the run `run` (resumable)."""
    return _add_layer(Path(run), config, caption_set_of(config.caption), None, executor, on_progress, wait)


def reverify(
    run: str | Path,
    config: RunConfig,
    captions: str,
    executor: Executor = "ray",
    on_progress: Callable[[int, int], None] | None = None,
    wait: bool = False,
) -> LayerReport:
    """Add the verdict version of `config.verify` for the caption set `captions` (resumable)."""
    manifest = read_manifest(run)
    if captions not in layers_of(manifest, CAPTIONS):
        names = ", ".join(sorted(layers_of(manifest, CAPTIONS))) or "none"
        raise LayerError(f"no caption set '{captions}' in {run}; it has {names}")
    info = verdict_version_of(config.verify, config.measure, captions)
    return _add_layer(Path(run), config, info, captions, executor, on_progress, wait)


def _add_layer(
    root: Path,
    config: RunConfig,
    info: LayerInfo,
    judged: str | None,
    executor: Executor,
    on_progress: Callable[[int, int], None] | None,
    wait: bool,
) -> LayerReport:
    started = time.perf_counter()
    read_manifest(root)  # a clear error before a lock file is made in a folder that is not a run
    lock = RunLock(root, command_line(), config.lock.heartbeat_s, config.lock.stale_after_s)
    try:
        lock.acquire(wait=wait)
    except OSError as error:
        raise RunDirError(f"cannot lock the run directory {root}: {describe_os_error(error)}") from None
    try:
        manifest = read_manifest(root)  # under the lock: what the last writer committed
        version = manifest.get("contract_version", "1.0")
        if not same_major(version):
            raise RunDirError(
                f"{root} holds contract {version} shards: this stylecaps cannot add layers to it"
            )
        written_by = "reverify" if judged else "recaption"
        entry = register_layer(root, manifest, info, written_by, config.write.fsync, lock.check)
        shards = [shard["path"] for shard in manifest["shards"]]
        judged_parts = {}
        if judged is not None:  # a verdict version covers what its caption set covers
            judged_parts = {
                shard: part["path"] for shard, part in layers_of(manifest, CAPTIONS)[judged]["parts"].items()
            }
            shards = [shard for shard in shards if shard in judged_parts]
        pending = [shard for shard in shards if shard not in entry["parts"]]
        log.info(
            "%s %s: layer %s, %d of %d shards to do", written_by, root, info.id, len(pending), len(shards)
        )
        segments, failed = 0, 0
        if pending:
            spec = verify_spec(config) if judged else caption_spec(config)
            work = _row_groups(root, pending, judged_parts)
            commit = _LayerCommitter(root, manifest, info, config, lock.check, work)
            with interrupts_between_commits() as critical:
                try:
                    with ray_session(config.ray) if executor == "ray" else contextlib.nullcontext():
                        for table in _processed(root, work, spec, executor):
                            with critical():
                                commit.add(table)
                            if on_progress:
                                on_progress(commit.shards_done, len(pending))
                    commit.check_finished()
                except KeyboardInterrupt:
                    commit.abort()
                    raise RunInterrupted(
                        f"interrupted: {commit.shards_done} of {len(pending)} shards got their {info.kind} "
                        f"part; run the same command again to resume"
                    ) from None
                except BaseException:
                    commit.abort()
                    raise
            segments, failed = commit.segments, commit.failed
    finally:
        lock.release()
    return LayerReport(
        out=root,
        layer=info,
        shards=len(shards),
        shards_before=len(shards) - len(pending),
        segments=segments,
        failed=failed,
        wall_s=time.perf_counter() - started,
    )


def _row_groups(root: Path, shards: list[str], judged_parts: dict[str, str]) -> list[_RowGroup]:
    """The row groups of `shards` with their segment ids (the only column read here) and, for reverify,
    the judged set's part of their shard (`judged_parts`), in order."""
    work = []
    for shard in shards:
        file = pq.ParquetFile(root / shard)
        problem = contract_problem(file.schema_arrow, ["segment_id", "audio"])
        if problem is not None:
            raise RunDirError(f"{root / shard}: {problem}")
        for index in range(file.num_row_groups):
            ids = file.read_row_group(index, columns=["segment_id"]).column("segment_id").to_pylist()
            work.append(_RowGroup(shard, index, ids, judged_parts.get(shard)))
    return work


def _stream_schema(root: Path, shard: str) -> pa.Schema:
    """What rows travel with: bookkeeping, the run's shard columns, and captions."""
    return stream_schema([*pq.read_schema(root / shard).remove_metadata(), CAPTIONS_COLUMN])


def load_row_group(
    root: Path, shard: str, index: int, judged_part: str | None, schema: pa.Schema
) -> pa.Table:
    """One shard row group as stream rows; for reverify, with the captions (their verdicts empty) of the
    judged set's part for the shard, `judged_part` (run-relative)."""
    rows = pq.ParquetFile(root / shard).read_row_group(index).to_pylist()
    if judged_part is not None:
        stored = (
            pq.ParquetFile(root / judged_part)
            .read_row_group(index, columns=["segment_id", "captions"])
            .to_pylist()
        )
        for row, captions in zip(rows, stored, strict=True):
            if captions["segment_id"] != row["segment_id"]:
                raise LayerError(f"{judged_part} does not line up with {shard}; run stylecaps verify-run")
            # a segment the captioner failed on has no captions to judge: none, not an error
            row["captions"] = [{**c, "verdict": None} for c in captions["captions"] or []]
    for row in rows:
        row["status"] = STATUS_OK
    return stream_table(rows, schema)


def _processed(root: Path, work: list[_RowGroup], spec: StageSpec, executor: Executor) -> Iterator[pa.Table]:
    """The stage's output on every row group of `work`, in order."""
    schema = _stream_schema(root, work[0].shard)
    if executor == "local":
        batches = (
            load_row_group(root, item.shard, item.index, item.judged_part, schema).to_pylist()
            for item in work
        )
        yield from through_groups_locally(batches, [[spec]], schema)
        return
    import ray

    items = [{"shard": item.shard, "index": item.index, "judged_part": item.judged_part} for item in work]
    configure_ray_data()
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _load_batch,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"root": str(root), "schema": schema},
    )
    # only what the layer's part is made of comes back to the driver, not the audio
    keep = ["segment_id", "captions", "error_type", "error_message"]
    yield from through_groups_on_ray(dataset, [[spec]], schema, sources=len(items), keep=keep)


def _load_batch(items: pa.Table, root: str, schema: pa.Schema) -> pa.Table:
    """Ray task: the row groups `items` names, loaded where the task runs (never on the driver)."""
    tables = [
        load_row_group(Path(root), item["shard"], item["index"], item["judged_part"], schema)
        for item in items.to_pylist()
    ]
    return pa.concat_tables(tables)


class _LayerCommitter:
    """Takes the stage's output in order, writes each shard's part row group for row group as the shard,
    and commits a part when its shard is whole."""

    def __init__(
        self,
        root: Path,
        manifest: dict[str, Any],
        info: LayerInfo,
        config: RunConfig,
        fence: Callable[[], None],
        work: list[_RowGroup],
    ) -> None:
        self.root, self.manifest, self.info = root, manifest, info
        self.config, self.fence = config, fence
        self.work = work
        self._next = 0  # the row group the next rows belong to
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._part: ShardFile | None = None  # the part of the shard being written
        self.shards_done = self.segments = self.failed = 0

    def add(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._buffered += table.num_rows
        while self._next < len(self.work) and self._buffered >= len(self.work[self._next].segment_ids):
            self._write(self.work[self._next])

    def _write(self, group: _RowGroup) -> None:
        rows = pa.concat_tables(self._buffer)
        size = len(group.segment_ids)
        taken, rest = rows.slice(0, size), rows.slice(size)
        self._buffer, self._buffered = [rest], rest.num_rows
        if taken.column("segment_id").to_pylist() != group.segment_ids:
            raise RuntimeError(f"rows of {group.shard} row group {group.index} came back out of order")
        part = split_captions(taken)[self.info.kind]
        if self._part is None:
            self._part = new_layer_part(
                self.root, self.info, group.shard, self.config.write.compression, self.config.write.fsync
            )
        self._part.write_row_group(part.cast(self._part.schema))
        self.segments += size
        self.failed += size - part.column("error_type").null_count
        self._next += 1
        if self._next == len(self.work) or self.work[self._next].shard != group.shard:
            part_file, self._part = self._part, None
            commit_layer_part(
                self.root,
                self.manifest,
                self.info,
                group.shard,
                part_file,
                self.config.write.fsync,
                self.fence,
            )
            self.shards_done += 1

    def check_finished(self) -> None:
        if self._next != len(self.work) or self._buffered:
            raise RuntimeError(
                f"the stage gave back rows for {self._next} of {len(self.work)} row groups "
                f"and {self._buffered} rows more"
            )

    def abort(self) -> None:
        """Delete the part being written: the run resumes at its shard."""
        if self._part is not None:
            self._part.abort()
            self._part = None
