"""Run `annotate`: list inputs, skip what the run directory already holds, execute the stage
groups (on Ray Data, or in a plain loop for debugging and benchmarks) and commit through the writer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa

from annotate.base import STATUS_OK, Row
from pipeline.claims import ClaimsRegistry, RayClaims
from pipeline.config import SEGMENTS_PER_BATCH, RayConfig, RunConfig, SourceSpec, StageResources
from pipeline.contract import ShardContract, stream_table
from pipeline.errors import StylecapsError, UsageError, describe_os_error
from pipeline.layers import annotate_layers
from pipeline.lock import LockOwner, RunLock, command_line
from pipeline.rundir import RunDirectory, RunDirError
from pipeline.runlog import log
from pipeline.sources import list_sources
from pipeline.stages import StageChain, StageSetupError, StageSpec, build_stage_specs, group_by_declaration
from pipeline.writer import ShardWriter

if TYPE_CHECKING:
    import ray  # imported where used: `stylecaps --help` should not wait for Ray

Executor = Literal["ray", "local"]
_MAX_SOURCE_BLOCKS = 2000
_MAX_BLOCK_BYTES = 8 << 20  # a chunk of 32 segments of up to 30 s is about 3-5 MB of FLAC


@dataclass(frozen=True)
class RunReport:
    out: Path
    totals: dict[str, Any]
    inputs_listed: int
    inputs_skipped: int
    inputs_processed: int
    audio_s_processed: float
    wall_s: float


class _RayStageGroup:
    """Ray Data callable class: one worker of a stage group (set up once, then batch after batch).

    Each group gets a subclass carrying its specs and the run's stream schema as class attributes (see
    `_stage_group_class`): they travel with the pickled class, and the actor's name in Ray's logs says
    which stages it runs.
    """

    specs: ClassVar[list[StageSpec]] = []
    schema: ClassVar[pa.Schema]

    def __init__(self) -> None:
        self.chain = StageChain(self.specs)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        # A generator: Ray Data ships each chunk as its own block, so a long source streams out.
        for rows in self.chain.stream(batch.to_pylist(), SEGMENTS_PER_BATCH):
            yield stream_table(rows, self.schema)

    def __del__(self) -> None:
        # Ray Data 2.60 drops its reference to this object in the actor's __ray_shutdown__, when the
        # pool shuts down gracefully at the end of the run; a killed actor never gets here.
        chain = getattr(self, "chain", None)  # absent when a stage failed to set up
        if chain is not None:
            chain.teardown()


def _stage_group_class(specs: list[StageSpec], schema: pa.Schema) -> type[_RayStageGroup]:
    name = "Stages_" + "_".join(spec.name for spec in specs)
    return type(name, (_RayStageGroup,), {"specs": specs, "schema": schema})


def _init_ray(config: RayConfig) -> bool:
    """Start or join a cluster; return whether this call started it (and so must shut it down)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        return False
    address = config.address or os.environ.get("RAY_ADDRESS") or None
    ray.init(
        address=address,
        num_cpus=None if address else config.num_cpus,  # a running cluster has its own CPUs
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    return True


def _pool(group: list[StageSpec], sources: int) -> ray.data.ActorPoolStrategy:
    """The group's actor pool: as declared (a fixed size, or [min, max] autoscaling), else a fixed pool
    as large as the cluster's CPUs (GPUs for a GPU stage) allow. A fixed pool starts every worker (and
    loads its models) at once, instead of the second arriving when the first is already busy; a
    source-level group never needs more workers than there are sources.

    A source-level group takes one batch per worker at a time: Ray Data otherwise queues several on
    the first worker ready, and a whole source waits behind another there while a worker whose models
    took longer to load stays idle (two 5-minute files ran one after the other on one of two workers)."""
    import ray

    declared = group[0].resources
    in_flight = 1 if group[0].takes == "sources" else None
    if isinstance(declared.concurrency, tuple):
        return ray.data.ActorPoolStrategy(
            min_size=declared.concurrency[0],
            max_size=declared.concurrency[1],
            max_tasks_in_flight_per_actor=in_flight,
        )
    if declared.concurrency is not None:
        return ray.data.ActorPoolStrategy(size=declared.concurrency, max_tasks_in_flight_per_actor=in_flight)
    cluster = ray.cluster_resources()
    if declared.num_gpus > 0:
        size = max(1, int(cluster.get("GPU", 0) // declared.num_gpus))
    else:
        size = max(1, int(cluster.get("CPU", 1) // max(declared.num_cpus, 1e-6)))
    size = min(size, sources) if group[0].takes == "sources" else size
    return ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=in_flight)


def _remote_args(declared: StageResources) -> dict[str, Any]:
    """Ray's per-worker arguments of a declaration (map_batches passes them to each actor)."""
    args: dict[str, Any] = {"num_cpus": declared.num_cpus, "num_gpus": declared.num_gpus}
    if declared.resources:
        args["resources"] = dict(declared.resources)
    if declared.runtime_env is not None:
        args["runtime_env"] = declared.runtime_env
    return args


def _setup_error_of(error: Exception) -> StageSetupError | None:
    """Ray reports a worker whose stages could not set up as a dead actor with the worker's
    traceback as text; give back the StageSetupError it names, so callers see one clear error."""
    found = re.search(r"StageSetupError: (.+)", str(getattr(error, "error_msg", "") or error))
    return StageSetupError(found.group(1).strip()) if found else None


@contextlib.contextmanager
def ray_session(config: RayConfig) -> Iterator[None]:
    """Ray for the length of a run: joined or started here, and shut down if this run started it."""
    started = _init_ray(config)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def iter_ray(groups: list[list[StageSpec]], rows: list[Row], schema: pa.Schema) -> Iterator[pa.Table]:
    """The stage groups as Ray Data actor pools, one after the other, on a running Ray; tables of the
    stream `schema`."""
    import ray

    rows_per_block = max(1, math.ceil(len(rows) / _MAX_SOURCE_BLOCKS))
    blocks = [stream_table(rows[i : i + rows_per_block], schema) for i in range(0, len(rows), rows_per_block)]
    configure_ray_data()
    yield from through_groups_on_ray(ray.data.from_arrow(blocks), groups, schema, len(rows))


def configure_ray_data() -> None:
    """Ray Data's settings for our runs; call it before making a dataset (a dataset keeps the context
    it was made under)."""
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # same inputs, same shards
    context.enable_progress_bars = False  # the CLI shows one progress bar of its own
    # Ray Data merges what a generator UDF yields into blocks of up to 128 MiB by default, so a long
    # source would reach the driver as a few huge blocks; keep each chunk of segments its own block.
    context.target_max_block_size = _MAX_BLOCK_BYTES


def through_groups_on_ray(
    dataset: ray.data.Dataset,
    groups: list[list[StageSpec]],
    schema: pa.Schema,
    sources: int,
    keep: list[str] | None = None,
) -> Iterator[pa.Table]:
    """A dataset of stream rows through the stage groups' actor pools, in order; tables of `schema`, or
    of its `keep` columns only (selected on the workers, so the rest never reaches the driver).
    `sources` caps the pools of source-level groups; `dataset` was made after configure_ray_data()."""
    import ray

    if not dataset.context.execution_options.preserve_order:
        raise RuntimeError(
            "the dataset was made before configure_ray_data(): its rows could come back reordered"
        )
    for group in groups:
        dataset = dataset.map_batches(
            _stage_group_class(group, schema),
            batch_size=group[0].batch_size,
            batch_format="pyarrow",
            compute=_pool(group, sources),
            **_remote_args(group[0].resources),
        )
    if keep is not None:
        dataset = dataset.select_columns(keep)
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    except ray.exceptions.RayActorError as error:
        raise _setup_error_of(error) or error from None


def iter_local(groups: list[list[StageSpec]], rows: Iterable[Row], schema: pa.Schema) -> Iterator[pa.Table]:
    """The same stage objects in a plain loop, one source at a time (no Ray), as tables of the stream
    `schema`."""
    yield from through_groups_locally(([row] for row in rows), groups, schema)


def through_groups_locally(
    batches: Iterable[list[Row]], groups: list[list[StageSpec]], schema: pa.Schema
) -> Iterator[pa.Table]:
    """Batches of rows through the stage groups in a plain loop, in order; tables of `schema`."""
    chains = [StageChain(group) for group in groups]
    try:
        for batch in batches:
            for chunk in _through(chains, batch):
                yield stream_table(chunk, schema)
    finally:
        for chain in reversed(chains):
            chain.teardown()


def _through(chains: list[StageChain], rows: list[Row]) -> Iterator[list[Row]]:
    """Rows through the chains in turn, each streaming its output on to the next in chunks."""
    if not chains:
        yield rows
        return
    for chunk in chains[0].stream(rows, SEGMENTS_PER_BATCH):
        yield from _through(chains[1:], chunk)


class RunInterrupted(StylecapsError):
    """SIGINT stopped the run after committing what was complete; a rerun resumes."""

    exit_code = 130


@contextlib.contextmanager
def interrupts_between_commits() -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
    """SIGINT raises KeyboardInterrupt as usual, except inside a commit, where it waits for the commit
    to end: an interrupt never leaves a half-written commit behind. A second SIGINT while one waits
    stops at once (the run directory's commit protocol still holds)."""
    state = {"critical": False, "pending": False}

    def handler(signum: int, frame: object) -> None:
        if state["critical"] and not state["pending"]:
            state["pending"] = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical() -> Iterator[None]:
        state["critical"] = True
        try:
            yield
        finally:
            state["critical"] = False
        if state["pending"]:
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield contextlib.nullcontext  # signals reach only the main thread
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield critical
    finally:
        signal.signal(signal.SIGINT, previous)


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"--out {out} is a file, not a run directory") from None
    except NotADirectoryError:
        raise RunDirError(f"--out {out}: a part of its path is a file, not a folder") from None
    except OSError as error:
        raise RunDirError(f"cannot create the run directory {out}: {describe_os_error(error)}") from None
    if not out.is_dir():
        raise RunDirError(f"--out {out} is not a folder")


def annotate(
    config: RunConfig,
    out: str | Path,
    inputs: list[str] | None = None,
    executor: Executor = "ray",
    on_progress: Callable[[int, int], None] | None = None,
    wait: bool = False,
    on_wait: Callable[[LockOwner], None] | None = None,
    on_open: Callable[[Path], None] | None = None,
) -> RunReport:
    """Annotate the config's sources (or `inputs`) into the run directory `out`; resumable.

    Holds the run's lock throughout (RunLockedError if another process holds it, unless `wait`).
    SIGINT commits what is complete and raises RunInterrupted."""
    started = time.perf_counter()
    specs = [SourceSpec(path=p) for p in inputs] if inputs else config.sources
    if not specs:
        raise UsageError("no inputs: give --input or list sources in the config")
    rows = list_sources(specs)  # before touching `out`: a bad input leaves no run directory behind
    out = Path(out)
    contract = ShardContract.of(build_stage_specs(config, work_dir=out / "work"))  # a column conflict too
    _prepare_out(out)
    lock = RunLock(out, command_line(), config.lock.heartbeat_s, config.lock.stale_after_s)
    try:
        lock.acquire(wait=wait, on_wait=on_wait)
    except OSError as error:
        raise RunDirError(f"cannot lock the run directory {out}: {describe_os_error(error)}") from None
    try:
        return _annotate_locked(
            config, out, specs, rows, contract, executor, on_progress, lock, on_open, started
        )
    finally:
        lock.release()


def _annotate_locked(
    config: RunConfig,
    out: Path,
    specs: list[SourceSpec],
    rows: list[Row],
    contract: ShardContract,
    executor: Executor,
    on_progress: Callable[[int, int], None] | None,
    lock: RunLock,
    on_open: Callable[[Path], None] | None,
    started: float,
) -> RunReport:
    resolved = config.model_copy(update={"sources": specs})
    invocation = {"started": time.time(), **{k: getattr(lock.owner, k) for k in ("host", "pid", "command")}}
    run = RunDirectory.open(
        out,
        config.processing_hash(),
        resolved.model_dump(mode="json"),
        contract,
        config.write.fsync,
        fence=lock.check,
        invocation=invocation,
        layers=annotate_layers(config),
    )
    if on_open is not None:
        on_open(out)
    writer = ShardWriter(run, config.write)
    pending = [row for row in rows if row["input_path"] not in writer.done_inputs]
    for row in pending:
        row.setdefault("status", STATUS_OK)
        row["resume_after_s"] = writer.resume_after_s(row["input_path"])
    audio_before = run.totals().get("audio_s", 0.0)
    log.info("annotate %s: %d inputs listed, %d to do", out, len(rows), len(pending))
    with interrupts_between_commits() as critical:
        try:
            if pending:
                owners = run.resume_state().source_owners  # committed sources keep their ids
                with ray_session(config.ray) if executor == "ray" else contextlib.nullcontext():
                    listing = [row["input_path"] for row in pending]
                    registry = RayClaims if executor == "ray" else ClaimsRegistry
                    claims = registry(owners, listing)
                    groups = group_by_declaration(build_stage_specs(config, claims, out / "work"))
                    run_stages = iter_ray if executor == "ray" else iter_local
                    for table in run_stages(groups, pending, contract.stream_schema):
                        with critical():
                            writer.add(table)
                        if on_progress:
                            on_progress(writer.finished_inputs, len(pending))
            with critical():
                writer.close(fed={row["input_path"] for row in pending})
        except KeyboardInterrupt:
            with critical():
                writer.commit()  # everything received is complete rows: keep it
            totals = run.totals()
            raise RunInterrupted(
                f"interrupted: {totals.get('inputs', 0)} inputs and {totals.get('segments', 0)} segments are "
                f"committed in {out}; run the same command again to resume"
            ) from None
        except BaseException:
            writer.abort()
            raise
    totals = run.totals()
    log.info("annotate %s finished: %s", out, json.dumps(totals))
    return RunReport(
        out=out,
        totals=totals,
        inputs_listed=len(rows),
        inputs_skipped=len(rows) - len(pending),
        inputs_processed=len(pending),
        audio_s_processed=totals.get("audio_s", 0.0) - audio_before,
        wall_s=time.perf_counter() - started,
    )
