"""Benchmark of per-segment commits: memory on long sources, and throughput, before and after.

Side by side in one run, each annotate in a fresh process (bench/annotate_probe.py), the code of this
checkout ("after") against an older commit checked out into a temporary git worktree ("before",
default: 09cc0cd, the foundation that committed whole sources):

  (a) peak private resident memory (RssAnon) of the driver and of the stage workers on a 1-hour and a
      4-hour source; goal (after): the 4-hour figure within 10% of the 1-hour one, for the driver and
      the workers. Shared object-store pages mapped in (RssShmem) and the kernel's high-water mark of
      all resident memory (VmHWM) are printed beside it (see bench/annotate_probe.py);
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
    return probe_config(code, code / "configs" / "demo.yaml", inputs, out)


def probe_config(code: Path, config: Path, inputs: list[Path], out: Path) -> dict[str, Any]:
    """One annotate of `inputs` with `config`, by the checkout `code`, in a fresh probed process."""
    command = [sys.executable, str(REPO / "bench" / "annotate_probe.py"), "--code", str(code),
               "--config", str(config), "--out", str(out)]  # fmt: skip
    for path in inputs:
        command += ["--input", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=code, check=False)
    if done.returncode != 0:
        raise SystemExit(f"annotate failed in {code}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_workers(result: dict[str, Any]) -> dict[str, float]:
    """The stage pools' workers (Ray Data's MapWorker actors), without idle pool processes: the
    highest of each figure over them."""
    peaks: dict[str, float] = {}
    for name, figures in result["workers"].items():
        if "MapWorker" in name:
            for key, value in figures.items():
                peaks[key] = max(peaks.get(key, 0.0), value)
    if set(peaks) != {"private_mb", "shared_mb", "hwm_mb"}:
        raise SystemExit(f"no stage worker's memory was sampled: {json.dumps(result['workers'])}")
    return peaks


def describe(figures: dict[str, float]) -> str:
    private, shared, hwm = figures["private_mb"], figures["shared_mb"], figures["hwm_mb"]
    return f"{private:.0f} MB private + {shared:.0f} shared (VmHWM {hwm:.0f})"


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
            print(
                f"{version:>6} {h:g} h: driver {describe(result['driver'])}; workers "
                f"{describe(stage_workers(result))}; {result['shards']} shards, "
                f"{result['audio_s'] / result['wall_s']:.0f}x real time",
                flush=True,
            )
    return figures


def growth(figures: dict[str, Any], version: str, hours: list[float]) -> dict[str, float]:
    short, long = figures[f"{version} {min(hours):g}h"], figures[f"{version} {max(hours):g}h"]
    return {
        f"{who} {key}": long_figures[key] / short_figures[key]
        for who, short_figures, long_figures in (
            ("driver", short["driver"], long["driver"]),
            ("workers", stage_workers(short), stage_workers(long)),
        )
        for key in ("private_mb", "hwm_mb")
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
    parser.add_argument(
        "--after",
        help="Commit of the 'after' code (default: this checkout). Later changes that are not about "
        "commits (e.g. more measurements per segment) move the throughput ratio; pin them out with this.",
    )
    parser.add_argument("--hours", type=float, nargs=2, default=[1.0, 4.0])
    parser.add_argument("--minutes", type=float, default=24.0, help="Corpus of the throughput runs.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stylecaps-bench-") as tmp:
        scratch = Path(tmp)
        code = {"before": scratch / "before", "after": scratch / "after" if args.after else REPO}
        commits = {"before": args.baseline, "after": args.after}
        checked_out = [version for version, commit in commits.items() if commit]
        try:
            for version in checked_out:
                subprocess.run(["git", "worktree", "add", "--detach", str(code[version]), commits[version]],
                               cwd=REPO, check=True, capture_output=True)  # fmt: skip
            memory = memory_figures(code, scratch, args.hours)
            throughput = throughput_figures(code, scratch, args.minutes)
        finally:
            for version in checked_out:
                remove = ["git", "worktree", "remove", "--force", str(code[version])]
                subprocess.run(remove, cwd=REPO, check=False)
    summary = {
        "memory": memory,
        "growth": {version: growth(memory, version, args.hours) for version in ("before", "after")},
        "throughput": throughput,
    }
    ratio = f"{max(args.hours):g} h / {min(args.hours):g} h"
    for version in ("after", "before"):
        shown = ", ".join(f"{key} {value:.3f}" for key, value in summary["growth"][version].items())
        print(f"(a) {version}: peak memory {ratio}: {shown} (goal, private: <= {GOAL_MEMORY_GROWTH})")
    print(f"(b) throughput after / before: {throughput['ratio']:.3f} (goal >= {GOAL_THROUGHPUT})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
