"""Benchmark of the CPU front end (configs/diarize-cpu.yaml) against the silero-only pipeline.

Side by side in one run, each annotate in a fresh process (bench/annotate_probe.py, Ray with the
machine's CPUs), on two-speaker recordings of real voices (scripts/two_voices.py):

  (a) real-time factor of the whole diarize-cpu pipeline (ingest, pyannote segmentation + GE2E
      clustering, speaker consistency, cut, measure, caption, verify) on `--minutes` (10) of audio in
      `--files` (2) recordings, Ray start included; goal >= 20x on 2 cores (a source is diarized by one
      worker, so one file uses one core: `--files 1` shows the single-core figure). Beside it the
      silero-only pipeline (configs/demo.yaml) on the same files and the ratio of the median wall
      times, `--repeats` (3) runs of each in the order silero, diarize, diarize, silero, silero,
      diarize (a VM's noise moves single runs by 20%); then diarize-cpu on twice the audio (as many
      more files): the start of Ray and of each worker weighs half as much there. The segmentation model's
      TorchScript export, made once per machine on first use (annotate/segmentation_export.py), is
      made before the timed runs, with its cost printed;
  (b) peak private resident memory (RssAnon) of the driver and of each stage worker with diarize-cpu on
      a `--hours` (2) file and on a file a quarter as long: goal under 2 GB each, and not growing with
      the file's length (ratio long / short printed).

    RAY_AUTH_MODE=disabled .venv/bin/python bench/frontend_cpu.py [--minutes 10] [--hours 2] [--json f]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))
from long_source import describe, probe_config, stage_workers  # noqa: E402
from two_voices import write_two_voices  # noqa: E402

DIARIZE = REPO / "configs" / "diarize-cpu.yaml"
SILERO = REPO / "configs" / "demo.yaml"
GOAL_REAL_TIME = 20.0
GOAL_MEMORY_MB = 2048.0


def run(config: Path, audio: list[Path], out: Path) -> dict[str, Any]:
    return probe_config(REPO, config, audio, out)


def prepare_segmentation_export() -> None:
    """What the first diarize-cpu run on a machine does once: export the segmentation model."""
    import time

    from annotate.segmentation_windows import SegmentationModel
    from pipeline.config import parse_config, read_yaml

    started = time.perf_counter()
    SegmentationModel(parse_config(read_yaml(DIARIZE)).segment.diarize_cpu.segmentation)
    print(f"segmentation export ready ({time.perf_counter() - started:.1f} s, once per machine)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each pipeline (median taken)")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    prepare_segmentation_export()
    with tempfile.TemporaryDirectory(prefix="frontend-bench-") as tmp:
        folder = Path(tmp)
        doubled = [folder / f"two_voices_{index}.flac" for index in range(2 * args.files)]
        for index, path in enumerate(doubled):  # distinct pauses: distinct content, no duplicate sources
            write_two_voices(path, args.minutes * 60 / args.files, pause_s=0.4 + 0.05 * index)
        audio = doubled[: args.files]
        walls: dict[str, list[float]] = {"silero": [], "diarize": []}
        order = ("silero", "diarize", "diarize", "silero") * args.repeats
        for index, name in enumerate(order[: 2 * args.repeats]):
            result = run(SILERO if name == "silero" else DIARIZE, audio, folder / f"run{index}")
            walls[name].append(result["wall_s"])
            audio_s = result["audio_s"]
            print(
                f"{name:8s} {result['wall_s']:7.1f} s  {audio_s / result['wall_s']:6.1f}x real time  "
                f"{result['segments']} segments",
                flush=True,
            )
        diarize_s, silero_s = statistics.median(walls["diarize"]), statistics.median(walls["silero"])
        figures["real_time_diarize"] = audio_s / diarize_s
        figures["real_time_silero"] = audio_s / silero_s
        figures["diarize_over_silero"] = diarize_s / silero_s
        verdict = "met" if figures["real_time_diarize"] >= GOAL_REAL_TIME else "NOT met"
        print(
            f"(a) diarize-cpu {figures['real_time_diarize']:.1f}x real time (goal >= {GOAL_REAL_TIME:.0f}x: "
            f"{verdict}); silero-only {figures['real_time_silero']:.1f}x; wall diarize / silero "
            f"{figures['diarize_over_silero']:.2f}",
            flush=True,
        )
        twice = run(DIARIZE, doubled, folder / "run-doubled")
        figures["real_time_diarize_doubled"] = twice["audio_s"] / twice["wall_s"]
        print(
            f"(a) diarize-cpu on {twice['audio_s'] / 60:.0f} minutes in {len(doubled)} files: "
            f"{figures['real_time_diarize_doubled']:.1f}x real time",
            flush=True,
        )

        memory: dict[str, dict[str, Any]] = {}
        for label, hours in (("short", args.hours / 4), ("long", args.hours)):
            source = folder / f"{label}.flac"
            write_two_voices(source, hours * 3600)
            result = run(DIARIZE, [source], folder / f"memory-{label}")
            memory[label] = {
                "driver": result["driver"],
                "workers": stage_workers(result),
                "wall_s": result["wall_s"],
            }
            print(
                f"{hours:.2f} h: driver {describe(memory[label]['driver'])}, workers "
                f"{describe(memory[label]['workers'])}, {result['audio_s'] / result['wall_s']:.1f}x",
                flush=True,
            )
            source.unlink()
        for role in ("driver", "workers"):
            long_mb, short_mb = memory["long"][role]["private_mb"], memory["short"][role]["private_mb"]
            figures[f"{role}_private_mb"] = long_mb
            figures[f"{role}_growth"] = long_mb / short_mb
            verdict = "met" if long_mb < GOAL_MEMORY_MB else "NOT met"
            print(
                f"(b) {role}: {long_mb:.0f} MB private on {args.hours:g} h (goal < {GOAL_MEMORY_MB:.0f}: "
                f"{verdict}); {args.hours:g} h / {args.hours / 4:g} h = {long_mb / short_mb:.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
