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

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import soxr

from annotate.audio import SAMPLE_RATE
from pipeline.config import RunConfig, load_config
from pipeline.contract import FAILURES_SCHEMA, SOURCES_SCHEMA, shard_schema_with_metadata
from pipeline.rundir import RunDirectory
from pipeline.runner import Executor, RunReport, _init_ray, annotate
from pipeline.stages import StageChain, build_stage_specs, group_by_resources

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


def read_shards(out: Path) -> pa.Table:
    paths = sorted((out / "shards").glob("part-*.parquet"))
    schema = shard_schema_with_metadata()
    return pa.concat_tables([pq.read_table(p).cast(schema) for p in paths])


def loadavg() -> float:
    return os.getloadavg()[0]


# -- (a) and (b): annotate through Ray and in a plain loop ---------------------------------------------
@dataclass
class PipelineRun:
    executor: str
    wall_s: float
    audio_s: float
    inputs: int
    segments: int
    failures: int
    shards: int
    shard_sha256: list[str] = field(repr=False)
    load_before: float = 0.0


def run_pipeline(config: RunConfig, corpus: Path, out: Path, executor: Executor) -> PipelineRun:
    load = loadavg()
    report: RunReport = annotate(config, fresh_dir(out), inputs=[str(corpus)], executor=executor)
    totals = report.totals
    return PipelineRun(
        executor=executor,
        wall_s=report.wall_s,
        audio_s=report.audio_s_processed,
        inputs=report.inputs_processed,
        segments=int(totals.get("segments", 0)),
        failures=int(totals.get("failures", 0)),
        shards=int(totals.get("shards", 0)),
        shard_sha256=shard_digests(out),
        load_before=load,
    )


def warm_driver(config: RunConfig) -> float:
    """Import and set up the stages once in this process, so no local run pays the first torch import."""
    with stopwatch() as elapsed:
        for group in group_by_resources(build_stage_specs(config)):
            StageChain(group)
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
            f"{result.audio_s / result.wall_s:6.1f}x real time  inputs {result.inputs}  "
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


def write_ours(table: pa.Table, root: Path, config: RunConfig, fsync: bool) -> int:
    run = RunDirectory.open(root, config.processing_hash(), {}, fsync)
    commit = run.commit(
        table,
        SOURCES_SCHEMA.empty_table(),
        FAILURES_SCHEMA.empty_table(),
        {},
        config.write.row_group_rows,
        config.write.compression,
    )
    assert commit.shard is not None
    return int(commit.shard["bytes"])


def write_raw(table: pa.Table, root: Path, config: RunConfig | None) -> int:
    root.mkdir(parents=True)
    path = root / "raw.parquet"
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


def bench_writes(table: pa.Table, config: RunConfig, scratch: Path, reps: int) -> dict[str, WriteVariant]:
    writers: dict[str, Callable[[Path], int]] = {
        "ours_fsync": lambda root: write_ours(table, root, config, fsync=True),
        "ours_nofsync": lambda root: write_ours(table, root, config, fsync=False),
        "raw_same": lambda root: write_raw(table, root, config),
        "raw_default": lambda root: write_raw(table, root, None),
    }
    variants = {name: WriteVariant(name) for name in writers}
    names = list(writers)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order every repetition
            root = fresh_dir(scratch / name)
            with stopwatch() as elapsed:
                size = writers[name](root)
            variants[name].seconds.append(elapsed())
            variants[name].file_bytes = size
            shutil.rmtree(root)
    return variants


# -- report ----------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def summarize(
    corpus_s: float,
    files: int,
    ray_init_s: float,
    warm_s: float,
    runs: list[PipelineRun],
    table: pa.Table,
    writes: dict[str, WriteVariant],
) -> dict[str, Any]:
    ray_walls = [r.wall_s for r in runs if r.executor == "ray"]
    ray_wall = statistics.median(ray_walls)
    ratios = overhead_ratios(runs)
    data_bytes = table.nbytes
    mbps = {name: variant.mb_per_s(data_bytes) for name, variant in writes.items()}
    write_ratio_fsync = mbps["ours_fsync"] / mbps["raw_same"]
    write_ratio_nofsync = mbps["ours_nofsync"] / mbps["raw_same"]
    digests = {tuple(r.shard_sha256) for r in runs}
    return {
        "corpus_minutes": corpus_s / 60,
        "corpus_files": files,
        "ray_init_s": ray_init_s,
        "driver_warmup_s": warm_s,
        "throughput": {
            "ray_wall_s": ray_walls,
            "x_realtime_excl_init": corpus_s / ray_wall,
            "x_realtime_incl_init": corpus_s / (ray_wall + ray_init_s),
            "goal": GOAL_REALTIME,
            "met": corpus_s / ray_wall >= GOAL_REALTIME,
            "met_incl_init": corpus_s / (ray_wall + ray_init_s) >= GOAL_REALTIME,
        },
        "ray_overhead": {
            "runs": [{k: v for k, v in asdict(r).items() if k != "shard_sha256"} for r in runs],
            "ratios": ratios,
            "median": statistics.median(ratios),
            "goal": GOAL_RAY_OVERHEAD,
            "met": statistics.median(ratios) <= GOAL_RAY_OVERHEAD,
            "outputs_identical": len(digests) == 1,
        },
        "shard_write": {
            "rows": table.num_rows,
            "arrow_mb": data_bytes / MB,
            "reps": len(writes["ours_fsync"].seconds),
            "mb_per_s": mbps,
            "seconds": {name: v.seconds for name, v in writes.items()},
            "file_mb": {name: v.file_bytes / MB for name, v in writes.items()},
            "ratio_fsync": write_ratio_fsync,
            "ratio_nofsync": write_ratio_nofsync,
            "ratio_ours_vs_raw_default_fsync": mbps["ours_fsync"] / mbps["raw_default"],
            "goal": GOAL_WRITE_RATIO,
            "met_fsync": write_ratio_fsync >= GOAL_WRITE_RATIO,
            "met_nofsync": write_ratio_nofsync >= GOAL_WRITE_RATIO,
        },
        "loadavg_end": loadavg(),
    }


def print_table(s: dict[str, Any]) -> None:
    t, o, w = s["throughput"], s["ray_overhead"], s["shard_write"]
    mbps = w["mb_per_s"]
    rows = [
        ("corpus", f"{s['corpus_minutes']:.2f} min in {s['corpus_files']} files", ""),
        ("Ray init", f"{s['ray_init_s']:.2f} s", ""),
        ("driver warm-up (untimed)", f"{s['driver_warmup_s']:.2f} s", ""),
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
        ("(b) Ray / local ratios", ", ".join(f"{r:.3f}" for r in o["ratios"]), ""),
        ("(b) Ray / local median", f"{o['median']:.3f}", f"<= {o['goal']}: {verdict(o['met'])}"),
        ("(b) Ray and local shards identical", "yes" if o["outputs_identical"] else "NO", ""),
        ("(c) table written", f"{w['rows']} rows, {w['arrow_mb']:.1f} MB Arrow, {w['reps']} reps", ""),
        ("(c) ours, fsync on", f"{mbps['ours_fsync']:.1f} MB/s", ""),
        ("(c) ours, fsync off", f"{mbps['ours_nofsync']:.1f} MB/s", ""),
        ("(c) raw, same settings", f"{mbps['raw_same']:.1f} MB/s", ""),
        ("(c) raw, pyarrow defaults", f"{mbps['raw_default']:.1f} MB/s", ""),
        ("(c) ours/raw, fsync on", f"{w['ratio_fsync']:.3f}", f">= {w['goal']}: {verdict(w['met_fsync'])}"),
        (
            "(c) ours/raw, fsync off",
            f"{w['ratio_nofsync']:.3f}",
            f">= {w['goal']}: {verdict(w['met_nofsync'])}",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    print("  ".join(h.ljust(widths[i]) for i, h in enumerate(("figure", "value", "goal"))))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    print(f"(load average at the end: {s['loadavg_end']:.2f}; MB/s are Arrow MB of the table per second)")


# -- main ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=12.0, help="minutes of corpus audio (at least)")
    parser.add_argument("--file-s", type=float, default=60.0, help="length of each corpus file, seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (corpus and run dirs)")
    parser.add_argument("--pairs", type=int, default=2, help="ray/local pairs for (b), alternating order")
    parser.add_argument("--write-reps", type=int, default=5, help="repetitions of each shard-write variant")
    parser.add_argument("--rows-per-shard", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


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

    with stopwatch() as elapsed:
        _init_ray(config.ray)
    ray_init_s = elapsed()
    print(f"Ray init: {ray_init_s:.2f} s ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)", flush=True)
    try:
        print(f"(a)+(b): {args.pairs} ray/local pairs on the same corpus", flush=True)
        runs = run_pairs(config, corpus, workdir / "runs", args.pairs)
    finally:
        ray.shutdown()

    first_ray = next(n for n, e in enumerate(pair_orders(args.pairs)) if e == "ray")
    table = read_shards(workdir / "runs" / f"{first_ray:02d}-ray")
    print(f"(c): writing {table.num_rows} shard rows ({table.nbytes / MB:.1f} MB Arrow)", flush=True)
    writes = bench_writes(table, config, workdir / "write", args.write_reps)
    return summarize(corpus_s, files, ray_init_s, warm_s, runs, table, writes)


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
