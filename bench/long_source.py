"""Benchmark of per-segment commits: memory on long sources, and throughput, before and after.

Side by side in one run, each annotate in a fresh process (bench/annotate_probe.py), the code of this
checkout ("after") against an older commit checked out into a temporary git worktree ("before",
default: 09cc0cd, the foundation that committed whole sources):

  (a) peak resident memory of the driver and of each Ray worker on a 1-hour and a 4-hour source;
      goal (after): the 4-hour figure within 10% of the 1-hour one, for the driver and every worker;
  (b) throughput: wall time of "before" / wall time of "after" on a corpus of distinct files
      (`--minutes`), runs alternating before, after, after, before; goal >= 0.95.

The long sources are the bundled example clips in a seeded random order with 0.3-2 s pauses, written as
16 kHz FLAC block by block (a 4-hour file never sits in memory).

    RAY_AUTH_MODE=disabled .venv/bin/python bench/long_source.py [--hours 1 4] [--minutes 24] [--json f]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from pipeline_cpu import PAUSE_S, build_corpus, load_clips  # noqa: E402

from annotate.audio import SAMPLE_RATE  # noqa: E402

BASELINE = "09cc0cd"
SEED = 20261123
GOAL_MEMORY_GROWTH = 1.10
GOAL_THROUGHPUT = 0.95


def write_long_source(path: Path, hours: float, seed: int = SEED) -> float:
    """Clips with random pauses for `hours`, streamed to FLAC; returns the duration in seconds."""
    clips = load_clips(REPO / "examples" / "corpus")
    rng = random.Random(seed)
    target = hours * 3600 * SAMPLE_RATE
    written = 0
    with sf.SoundFile(path, "w", samplerate=SAMPLE_RATE, channels=1, format="FLAC", subtype="PCM_16") as out:
        while written < target:
            clip = clips[rng.randrange(len(clips))]
            pause = np.zeros(round(rng.uniform(*PAUSE_S) * SAMPLE_RATE), dtype=np.float32)
            out.write(np.concatenate([clip, pause]))
            written += clip.size + pause.size
    return written / SAMPLE_RATE


def probe(code: Path, inputs: list[Path], out: Path) -> dict[str, Any]:
    command = [sys.executable, str(REPO / "bench" / "annotate_probe.py"), "--code", str(code),
               "--config", str(code / "configs" / "demo.yaml"), "--out", str(out)]  # fmt: skip
    for path in inputs:
        command += ["--input", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=code, check=False)
    if done.returncode != 0:
        raise SystemExit(f"annotate failed in {code}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_workers(result: dict[str, Any]) -> dict[str, float]:
    """The stage pools' workers (Ray Data's MapWorker actors), without idle pool processes."""
    return {name: mb for name, mb in result["worker_peak_mb"].items() if "MapWorker" in name}


def memory_figures(code: dict[str, Path], scratch: Path, hours: list[float]) -> dict[str, Any]:
    sources = {}
    for h in hours:
        sources[h] = scratch / f"long-{h:g}h.flac"
        seconds = write_long_source(sources[h], h)
        print(f"built a {seconds / 3600:.2f} h source ({sources[h].stat().st_size / 1e6:.0f} MB)", flush=True)
    figures: dict[str, Any] = {}
    for version, root in code.items():
        for h in hours:
            result = probe(root, [sources[h]], scratch / f"run-{version}-{h:g}h")
            figures[f"{version} {h:g}h"] = result
            workers = stage_workers(result)
            print(
                f"{version:>6} {h:g} h: driver {result['driver_peak_mb']:.0f} MB, workers "
                + ", ".join(f"{mb:.0f} MB" for mb in workers.values())
                + f"; {result['shards']} shards, {result['audio_s'] / result['wall_s']:.0f}x real time",
                flush=True,
            )
    return figures


def growth(figures: dict[str, Any], version: str, hours: list[float]) -> dict[str, float]:
    short, long = figures[f"{version} {min(hours):g}h"], figures[f"{version} {max(hours):g}h"]
    return {
        "driver": long["driver_peak_mb"] / short["driver_peak_mb"],
        "workers": max(stage_workers(long).values()) / max(stage_workers(short).values()),
    }


def throughput_figures(code: dict[str, Path], scratch: Path, minutes: float) -> dict[str, Any]:
    corpus = scratch / "corpus"
    audio_s = build_corpus(corpus, minutes, file_s=60)
    walls: dict[str, list[float]] = {"before": [], "after": []}
    for index, version in enumerate(["before", "after", "after", "before"]):
        result = probe(code[version], [corpus], scratch / f"throughput-{index}-{version}")
        walls[version].append(result["wall_s"])
        print(f"{version:>6}: {result['wall_s']:.1f} s for {audio_s / 60:.1f} min of audio", flush=True)
    return {
        "audio_s": audio_s,
        "walls": walls,
        "ratio": statistics.median(walls["before"]) / statistics.median(walls["after"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", default=BASELINE, help="Commit of the 'before' code.")
    parser.add_argument("--hours", type=float, nargs=2, default=[1.0, 4.0])
    parser.add_argument("--minutes", type=float, default=24.0, help="Corpus of the throughput runs.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stylecaps-bench-") as tmp:
        scratch = Path(tmp)
        baseline = scratch / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline],
                       cwd=REPO, check=True, capture_output=True)  # fmt: skip
        try:
            code = {"before": baseline, "after": REPO}
            memory = memory_figures(code, scratch, args.hours)
            throughput = throughput_figures(code, scratch, args.minutes)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO, check=False)
    summary = {
        "memory": memory,
        "growth": {version: growth(memory, version, args.hours) for version in ("before", "after")},
        "throughput": throughput,
    }
    after = summary["growth"]["after"]
    before = summary["growth"]["before"]
    print(
        f"(a) {max(args.hours):g} h / {min(args.hours):g} h peak memory, after: driver "
        f"{after['driver']:.3f}, workers {after['workers']:.3f} (goal <= {GOAL_MEMORY_GROWTH}); "
        f"before: driver {before['driver']:.3f}, workers {before['workers']:.3f}"
    )
    print(f"(b) throughput after / before: {throughput['ratio']:.3f} (goal >= {GOAL_THROUGHPUT})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
