"""CPU benchmark of the annotate pipeline: throughput, Ray overhead and shard-writing speed.

The machine this runs on is usually shared, so every figure that has a goal is a ratio of
measurements taken side by side in one run (alternating order), never an absolute time compared
with a number from another day:

  (a) whole pipeline throughput on Ray: seconds of input audio per wall second (goal >= 30x),
      with and without the start of the Ray cluster;
  (b) Ray overhead: wall time of `annotate(executor="ray")` / `annotate(executor="local")` on the same
      corpus, pairs run as ray, local, local, ray, ... (goal <= 1.15);
  (c) shard writing: the project's commit path (RunDirectory + commit: sha256, fsync, manifest) versus
      a raw `pyarrow.parquet.write_table`, in MB/s of Arrow data (goal ours/raw >= 0.8).

The corpus is built from the bundled example clips: files of about `--file-s` seconds, each a seeded
random sequence of clips with seeded random pauses, so every file has distinct content (the writer
rejects byte-identical sources as duplicates).

    RAY_AUTH_MODE=disabled .venv/bin/python bench/pipeline_cpu.py [--minutes 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile as sf
import soxr

from annotate.audio import SAMPLE_RATE
from pipeline import runner
from pipeline.config import RunConfig, load_config
from pipeline.contract import (
    DROPPED_SCHEMA,
    FAILURES_SCHEMA,
    LAYER_COLUMNS,
    OPEN_SOURCES_SCHEMA,
    SOURCES_SCHEMA,
    ShardContract,
    StageColumns,
)
from pipeline.rundir import RunDirectory
from pipeline.runner import Executor, RunReport, _init_ray
from pipeline.stages import StageChain, build_stage_specs, group_by_declaration

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "corpus"
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
SEED = 20240611
PAUSE_S = (0.3, 2.0)
MB = 1e6

GOAL_REALTIME = 30.0
GOAL_RAY_OVERHEAD = 1.15
GOAL_WRITE_RATIO = 0.8


# -- corpus ----------------------------------------------------------------------------------------------
def load_clips(folder: Path) -> list[np.ndarray]:
    """Every example clip as 16 kHz mono float32, in sorted file order."""
    clips = []
    for path in sorted(folder.glob("*.flac")):
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
        mono = wave.mean(axis=1, dtype=np.float32)
        if rate != SAMPLE_RATE:
            mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
        clips.append(mono)
    if not clips:
        raise SystemExit(f"no example clips under {folder}")
    return clips


def compose_file(clips: list[np.ndarray], target_s: float, rng: random.Random) -> np.ndarray:
    """Clips in a random order (no clip twice while unused ones remain) with random pauses between."""
    parts: list[np.ndarray] = []
    samples = 0
    order: list[int] = []
    while samples < target_s * SAMPLE_RATE:
        if not order:
            order = rng.sample(range(len(clips)), len(clips))
        if parts:
            pause = np.zeros(round(rng.uniform(*PAUSE_S) * SAMPLE_RATE), dtype=np.float32)
            parts.append(pause)
            samples += pause.size
        clip = clips[order.pop()]
        parts.append(clip)
        samples += clip.size
    return np.concatenate(parts)


def build_corpus(folder: Path, minutes: float, file_s: float, seed: int = SEED) -> float:
    """Write at least `minutes` of distinct 16 kHz FLAC files; return their total duration in seconds."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    clips = load_clips(EXAMPLES)
    rng = random.Random(seed)
    total = 0.0
    index = 0
    while total < minutes * 60:
        wave = compose_file(clips, file_s, rng)
        sf.write(str(folder / f"bench-{index:04d}.flac"), wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        total += wave.size / SAMPLE_RATE
        index += 1
    return total


# -- helpers ---------------------------------------------------------------------------------------------
@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """`with stopwatch() as elapsed:` ... `elapsed()` is the block's wall time once it has ended."""
    started = time.perf_counter()
    ended: list[float] = []
    yield lambda: (ended[0] if ended else time.perf_counter()) - started
    ended.append(time.perf_counter())


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def bench_config(rows_per_shard: int) -> RunConfig:
    config = load_config(DEMO_CONFIG)
    return config.model_copy(
        update={"write": config.write.model_copy(update={"rows_per_shard": rows_per_shard})}
    )


def shard_digests(out: Path) -> list[str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [shard["sha256"] for shard in manifest["shards"]]


def run_contract(config: RunConfig) -> ShardContract:
    """The run's shard contract less its caption layers: the writes compared here are of shard rows
    (audio and measurements); captions and verdicts go to small files beside them."""
    full = ShardContract.of(build_stage_specs(config))
    return ShardContract(
        tuple(
            StageColumns(s.stage, tuple(c for c in s.columns if c.name not in LAYER_COLUMNS))
            for s in full.stages
        )
    )


def read_shards(out: Path, config: RunConfig) -> pa.Table:
    paths = sorted((out / "shards").glob("part-*.parquet"))
    schema = run_contract(config).parquet_schema
    return pa.concat_tables([pq.read_table(p).cast(schema) for p in paths])


def loadavg() -> float:
    return os.getloadavg()[0]


# -- (a) and (b): annotate through Ray and in a plain loop ---------------------------------------------
@dataclass
class PipelineRun:
    executor: str
    wall_s: float
    first_output_s: float  # from the call to the first table reaching the writer: start-up cost
    audio_s: float
    inputs: int
    segments: int
    failures: int
    shards: int
    shard_sha256: list[str] = field(repr=False)
    load_before: float = 0.0


@contextmanager
def first_output_probe() -> Iterator[list[float]]:
    """Wrap the runner's two executors to note when their first table comes out (diagnostic only)."""
    marks: list[float] = []

    def timed(iterate: Callable[..., Iterator[pa.Table]]) -> Callable[..., Iterator[pa.Table]]:
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[pa.Table]:
            for table in iterate(*args, **kwargs):
                if not marks:
                    marks.append(time.perf_counter())
                yield table

        return wrapper

    with (
        mock.patch.object(runner, "iter_ray", timed(runner.iter_ray)),
        mock.patch.object(runner, "iter_local", timed(runner.iter_local)),
    ):
        yield marks


def run_pipeline(config: RunConfig, corpus: Path, out: Path, executor: Executor) -> PipelineRun:
    load = loadavg()
    fresh_dir(out)
    with first_output_probe() as marks:
        started = time.perf_counter()
        report: RunReport = runner.annotate(config, out, inputs=[str(corpus)], executor=executor)
    totals = report.totals
    return PipelineRun(
        executor=executor,
        wall_s=report.wall_s,
        first_output_s=(marks[0] - started) if marks else float("nan"),
        audio_s=report.audio_s_processed,
        inputs=report.inputs_processed,
        segments=int(totals.get("segments", 0)),
        failures=int(totals.get("failures", 0)),
        shards=int(totals.get("shards", 0)),
        shard_sha256=shard_digests(out),
        load_before=load,
    )


def warm_driver(config: RunConfig) -> float:
    """Import and set up the stages (and the writer's schema, which imports HF datasets) once in this
    process, so the first run of either executor does not pay one-time imports the other one skips."""
    with stopwatch() as elapsed:
        for group in group_by_declaration(build_stage_specs(config)):
            StageChain(group)
        _ = run_contract(config).parquet_schema
    return elapsed()


def actor_cold_start(config: RunConfig) -> float:
    """Seconds until a fresh Ray actor has built the first stage group (process, imports, model load):
    what every `annotate(executor="ray")` pays before its first output, at least once."""
    import ray

    group = group_by_declaration(build_stage_specs(config))[0]

    @ray.remote(num_cpus=group[0].resources.num_cpus)
    class Probe:
        def __init__(self, specs: list[Any]) -> None:
            self.chain = StageChain(specs)

        def ready(self) -> bool:
            return True

    with stopwatch() as elapsed:
        probe = Probe.remote(group)  # type: ignore[attr-defined]
        ray.get(probe.ready.remote())
    ray.kill(probe)
    return elapsed()


def pair_orders(pairs: int) -> list[Executor]:
    """ray, local, local, ray, ray, local, ..."""
    order: list[Executor] = []
    for index in range(pairs):
        order += ["ray", "local"] if index % 2 == 0 else ["local", "ray"]
    return order


def run_pairs(config: RunConfig, corpus: Path, runs_dir: Path, pairs: int) -> list[PipelineRun]:
    results = []
    for number, executor in enumerate(pair_orders(pairs)):
        result = run_pipeline(config, corpus, runs_dir / f"{number:02d}-{executor}", executor)
        print(
            f"  run {number}: {executor:5s} wall {result.wall_s:7.2f} s  "
            f"{result.audio_s / result.wall_s:6.1f}x real time  first output {result.first_output_s:5.2f} s  "
            f"inputs {result.inputs}  "
            f"segments {result.segments}  failures {result.failures}  shards {result.shards}  "
            f"load avg before {result.load_before:.2f}",
            flush=True,
        )
        results.append(result)
    return results


def overhead_ratios(results: list[PipelineRun]) -> list[float]:
    ray_runs = [r for r in results if r.executor == "ray"]
    local_runs = [r for r in results if r.executor == "local"]
    return [r.wall_s / loc.wall_s for r, loc in zip(ray_runs, local_runs, strict=True)]


# -- (c): shard writing ----------------------------------------------------------------------------------
@dataclass
class WriteVariant:
    name: str
    seconds: list[float] = field(default_factory=list)
    file_bytes: int = 0

    def mb_per_s(self, data_bytes: int) -> float:
        return data_bytes / MB / statistics.median(self.seconds)


Writer = Callable[[], int]


def write_ours(table: pa.Table, root: Path, config: RunConfig, fsync: bool) -> Writer:
    """The writer's path: one commit of the table as a shard (+ journal, manifest) into a run directory
    opened beforehand (opening a run directory is a once-per-run cost, not writing throughput)."""
    run = RunDirectory.open(root, config.processing_hash(), {}, run_contract(config), fsync)

    def commit() -> int:
        shard = run.new_shard(config.write.row_group_rows, config.write.compression)
        shard.append(table)
        entry = run.commit(
            shard,
            SOURCES_SCHEMA.empty_table(),
            FAILURES_SCHEMA.empty_table(),
            OPEN_SOURCES_SCHEMA.empty_table(),
            DROPPED_SCHEMA.empty_table(),
            {},
        )
        assert entry.shard is not None
        return int(entry.shard["bytes"])

    return commit


def write_shard_only(table: pa.Table, root: Path, config: RunConfig) -> Writer:
    """Diagnostic: only the shard file of a commit (hashing sink, fsync, rename), no journal or manifest."""
    run = RunDirectory.open(root, config.processing_hash(), {}, run_contract(config), True)

    def shard() -> int:
        shard_file = run.new_shard(config.write.row_group_rows, config.write.compression).shard
        shard_file.append(table)
        entry = shard_file.finish()
        shard_file.temporary.replace(shard_file.final)
        return int(entry["bytes"])

    return shard


def write_raw(table: pa.Table, root: Path, config: RunConfig | None) -> Writer:
    """`pq.write_table` to a path: with the run's row groups and compression, or pyarrow's defaults."""
    root.mkdir(parents=True)
    path = root / "raw.parquet"

    def raw() -> int:
        if config is None:
            pq.write_table(table, path)
        else:
            compression = config.write.compression
            pq.write_table(
                table,
                path,
                row_group_size=config.write.row_group_rows,
                compression=None if compression == "none" else compression,
            )
        return path.stat().st_size

    return raw


def sha256_only(table: pa.Table, root: Path) -> Writer:
    """Diagnostic: the sha256 of a shard-sized buffer alone, the floor of any checksumming writer."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    data = buffer.getvalue().to_pybytes()

    def digest() -> int:
        hashlib.sha256(data).hexdigest()
        return len(data)

    return digest


def bench_writes(table: pa.Table, config: RunConfig, scratch: Path, reps: int) -> dict[str, WriteVariant]:
    preparers: dict[str, Callable[[Path], Writer]] = {
        "ours_fsync": lambda root: write_ours(table, root, config, fsync=True),
        "ours_nofsync": lambda root: write_ours(table, root, config, fsync=False),
        "shard_file_only": lambda root: write_shard_only(table, root, config),
        "raw_same": lambda root: write_raw(table, root, config),
        "raw_default": lambda root: write_raw(table, root, None),
        "sha256_only": lambda root: sha256_only(table, root),
    }
    variants = {name: WriteVariant(name) for name in preparers}
    names = list(preparers)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order every repetition
            root = fresh_dir(scratch / name)
            writer = preparers[name](root)
            with stopwatch() as elapsed:
                size = writer()
            variants[name].seconds.append(elapsed())
            variants[name].file_bytes = size
            shutil.rmtree(root, ignore_errors=True)
    return variants


def fresh_audio(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    """The table with the audio bytes replaced by random bytes of the same lengths.

    A copy of the rows must not repeat the audio values: Parquet's dictionary encoding (pyarrow's
    default, which our writer turns off for audio) would shrink the repeats to nearly nothing and make
    the raw writer look far faster than on real, distinct audio. FLAC does not compress either, so
    random bytes of the same length cost what the real bytes cost.
    """
    audio = table.column("audio").combine_chunks()
    lengths = pc.binary_length(audio.field("bytes")).to_numpy(zero_copy_only=False)
    data = pa.array([rng.bytes(int(n)) for n in lengths], type=pa.binary())
    fresh = pa.StructArray.from_arrays([data, audio.field("path")], fields=list(audio.type))
    return table.set_column(table.schema.get_field_index("audio"), table.schema.field("audio"), fresh)


def tile(table: pa.Table, min_mb: float, seed: int = SEED) -> pa.Table:
    """The rows repeated until the table holds at least `min_mb` of Arrow data (so fixed costs stop
    dominating), each repetition after the first with fresh audio bytes."""
    copies = max(1, int(np.ceil(min_mb * MB / max(table.nbytes, 1))))
    rng = np.random.default_rng(seed)
    parts = [table] + [fresh_audio(table, rng) for _ in range(copies - 1)]
    return pa.concat_tables(parts).combine_chunks()


def write_figures(table: pa.Table, writes: dict[str, WriteVariant]) -> dict[str, Any]:
    mbps = {name: variant.mb_per_s(table.nbytes) for name, variant in writes.items()}
    ratio_fsync = mbps["ours_fsync"] / mbps["raw_same"]
    ratio_nofsync = mbps["ours_nofsync"] / mbps["raw_same"]
    return {
        "rows": table.num_rows,
        "arrow_mb": table.nbytes / MB,
        "reps": len(writes["ours_fsync"].seconds),
        "mb_per_s": mbps,
        "seconds": {name: v.seconds for name, v in writes.items()},
        "file_mb": {name: v.file_bytes / MB for name, v in writes.items()},
        "ratio_fsync": ratio_fsync,
        "ratio_nofsync": ratio_nofsync,
        "ratio_shard_file_only": mbps["shard_file_only"] / mbps["raw_same"],
        "ratio_fsync_vs_raw_default": mbps["ours_fsync"] / mbps["raw_default"],
        "goal": GOAL_WRITE_RATIO,
        "met_fsync": ratio_fsync >= GOAL_WRITE_RATIO,
        "met_nofsync": ratio_nofsync >= GOAL_WRITE_RATIO,
    }


# -- report ----------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


@dataclass
class Startup:
    ray_init_s: float
    ray_data_import_s: float
    driver_warmup_s: float
    actor_cold_start_s: list[float] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return self.ray_init_s + self.ray_data_import_s


def summarize(
    corpus_s: float, files: int, startup: Startup, runs: list[PipelineRun], writes: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    ray_walls = [r.wall_s for r in runs if r.executor == "ray"]
    local_walls = [r.wall_s for r in runs if r.executor == "local"]
    ray_wall = statistics.median(ray_walls)
    ratios = overhead_ratios(runs)
    excl, incl = corpus_s / ray_wall, corpus_s / (ray_wall + startup.total_s)
    return {
        "corpus_minutes": corpus_s / 60,
        "corpus_files": files,
        "startup": {**asdict(startup), "total_s": startup.total_s},
        "throughput": {
            "ray_wall_s": ray_walls,
            "x_realtime_excl_init": excl,
            "x_realtime_incl_init": incl,
            "local_x_realtime": corpus_s / statistics.median(local_walls),
            "goal": GOAL_REALTIME,
            "met": excl >= GOAL_REALTIME,
            "met_incl_init": incl >= GOAL_REALTIME,
        },
        "ray_overhead": {
            "first_output_s": {
                executor: statistics.median(r.first_output_s for r in runs if r.executor == executor)
                for executor in ("ray", "local")
            },
            "runs": [{k: v for k, v in asdict(r).items() if k != "shard_sha256"} for r in runs],
            "ratios": ratios,
            "median": statistics.median(ratios),
            "goal": GOAL_RAY_OVERHEAD,
            "met": statistics.median(ratios) <= GOAL_RAY_OVERHEAD,
            "outputs_identical": len({tuple(r.shard_sha256) for r in runs}) == 1,
        },
        "shard_write": writes,
        "loadavg_end": loadavg(),
    }


def write_rows(label: str, w: dict[str, Any]) -> list[tuple[str, str, str]]:
    mbps = w["mb_per_s"]
    goal = f">= {w['goal']}: "
    return [
        (f"(c) {label}", f"{w['rows']} rows, {w['arrow_mb']:.1f} MB Arrow, {w['reps']} reps", ""),
        ("    ours, fsync on", f"{mbps['ours_fsync']:.1f} MB/s", ""),
        ("    ours, fsync off", f"{mbps['ours_nofsync']:.1f} MB/s", ""),
        ("    shard file only (diagnostic)", f"{mbps['shard_file_only']:.1f} MB/s", ""),
        ("    raw, same settings", f"{mbps['raw_same']:.1f} MB/s", ""),
        ("    raw, pyarrow defaults", f"{mbps['raw_default']:.1f} MB/s", ""),
        ("    sha256 alone (diagnostic)", f"{mbps['sha256_only']:.1f} MB/s", ""),
        ("    ours/raw, fsync on", f"{w['ratio_fsync']:.3f}", goal + verdict(w["met_fsync"])),
        ("    ours/raw, fsync off", f"{w['ratio_nofsync']:.3f}", goal + verdict(w["met_nofsync"])),
        ("    shard file only/raw", f"{w['ratio_shard_file_only']:.3f}", ""),
        ("    ours (fsync on)/raw defaults", f"{w['ratio_fsync_vs_raw_default']:.3f}", ""),
    ]


def print_table(s: dict[str, Any]) -> None:
    t, o, up = s["throughput"], s["ray_overhead"], s["startup"]
    rows = [
        ("corpus", f"{s['corpus_minutes']:.2f} min in {s['corpus_files']} files", ""),
        ("Ray init (ray.init)", f"{up['ray_init_s']:.2f} s", ""),
        ("import ray.data (first use)", f"{up['ray_data_import_s']:.2f} s", ""),
        ("driver warm-up (untimed)", f"{up['driver_warmup_s']:.2f} s", ""),
        (
            "(a) x real time, excl. init",
            f"{t['x_realtime_excl_init']:.1f}x (median Ray wall)",
            f">= {t['goal']:.0f}x: {verdict(t['met'])}",
        ),
        (
            "(a) x real time, incl. init",
            f"{t['x_realtime_incl_init']:.1f}x",
            f">= {t['goal']:.0f}x: {verdict(t['met_incl_init'])}",
        ),
        ("    (local executor, for reference)", f"{t['local_x_realtime']:.1f}x", ""),
        ("(b) Ray / local ratios", ", ".join(f"{r:.3f}" for r in o["ratios"]), ""),
        ("(b) Ray / local median", f"{o['median']:.3f}", f"<= {o['goal']}: {verdict(o['met'])}"),
        (
            "(b) first output after (median)",
            f"ray {o['first_output_s']['ray']:.2f} s, local {o['first_output_s']['local']:.2f} s",
            "",
        ),
        ("    Ray actor cold start", ", ".join(f"{t:.2f} s" for t in up["actor_cold_start_s"]), ""),
        ("(b) Ray and local shards identical", "yes" if o["outputs_identical"] else "NO", ""),
    ]
    for label, figures in s["shard_write"].items():
        rows += write_rows(label, figures)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    print("  ".join(h.ljust(widths[i]) for i, h in enumerate(("figure", "value", "goal"))).rstrip())
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    print(f"(load average at the end: {s['loadavg_end']:.2f}; MB/s are Arrow MB of the table per second)")


# -- main ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=48.0, help="minutes of corpus audio (at least)")
    parser.add_argument("--file-s", type=float, default=60.0, help="length of each corpus file, seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (corpus and run dirs)")
    parser.add_argument("--pairs", type=int, default=2, help="ray/local pairs for (b), alternating order")
    parser.add_argument("--write-reps", type=int, default=15, help="repetitions of each shard-write variant")
    parser.add_argument("--tile-mb", type=float, default=64.0, help="(c) also on the rows repeated to this")
    parser.add_argument("--rows-per-shard", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def start_ray(config: RunConfig) -> tuple[float, float]:
    """Start the cluster once; return (ray.init seconds, seconds to import ray.data)."""
    with stopwatch() as init:
        _init_ray(config.ray)
    with stopwatch() as data_import:
        import ray.data  # noqa: F401 - paid once per process, by the first Ray run otherwise
    return init(), data_import()


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import ray

    config = bench_config(args.rows_per_shard)
    corpus = workdir / "corpus"
    with stopwatch() as elapsed:
        corpus_s = build_corpus(corpus, args.minutes, args.file_s)
    files = len(list(corpus.glob("*.flac")))
    built = f"{corpus_s / 60:.2f} min of audio in {files} files ({elapsed():.1f} s to build)"
    print(f"corpus: {built}", flush=True)

    warm_s = warm_driver(config)
    print(f"driver warm-up (stage set-up in this process, not timed below): {warm_s:.2f} s", flush=True)
    startup = Startup(*start_ray(config), driver_warmup_s=warm_s)
    cpus = ray.cluster_resources().get("CPU", 0)
    print(
        f"Ray init: {startup.ray_init_s:.2f} s, import ray.data: {startup.ray_data_import_s:.2f} s "
        f"({cpus:.0f} CPUs)",
        flush=True,
    )
    try:
        print(f"(a)+(b): {args.pairs} ray/local pairs on the same corpus", flush=True)
        runs = run_pairs(config, corpus, workdir / "runs", args.pairs)
        startup.actor_cold_start_s = [actor_cold_start(config) for _ in range(2)]
        cold = ", ".join(f"{t:.2f}" for t in startup.actor_cold_start_s)
        print(f"Ray actor cold start (fresh actor building the stage group): {cold} s", flush=True)
    finally:
        ray.shutdown()

    first_ray = next(n for n, e in enumerate(pair_orders(args.pairs)) if e == "ray")
    table = read_shards(workdir / "runs" / f"{first_ray:02d}-ray", config)
    tables = {"as produced": table, f"tiled to >= {args.tile_mb:g} MB": tile(table, args.tile_mb)}
    writes = {}
    for label, data in tables.items():
        print(f"(c) {label}: {data.num_rows} shard rows, {data.nbytes / MB:.1f} MB Arrow", flush=True)
        variants = bench_writes(data, config, workdir / "write", args.write_reps)
        writes[label] = write_figures(data, variants)
    return summarize(corpus_s, files, startup, runs, writes)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stylecaps-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir: {workdir}  (load average at start: {loadavg():.2f})", flush=True)
    try:
        summary = run_benchmark(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
