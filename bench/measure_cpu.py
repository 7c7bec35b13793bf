"""CPU benchmark of the measure stage and of the whole pipeline, before and after the measure stage.

"before" is the code of a baseline commit (default f7ea019: the acoustic captioner measured and
tagged inside the caption stage), checked out into a temporary `git worktree`; "after" is this
checkout. Both run the same way, side by side in one invocation, each in a fresh subprocess whose
imports come from its own code (PYTHONPATH), in alternating order (before, after, after, before ...):

  (a) the measure stage alone: seconds of segment audio per CPU second of one process (CPU time, so
      other load on a shared machine does not move it), over the segments
      the code's own segment stage cuts from the corpus (before: measure() + tag() of the captioner;
      after: MeasureStage, which adds the formant and alpha-ratio analyses and the gender estimate);
  (b) the whole pipeline (demo config, local Ray cluster with 2 CPUs): input audio seconds per wall
      second of `annotate` (Ray already started; its start is reported apart). Goal: >= 60x. Wall
      time moves with other load on the machine: the load average during each run is printed.

The corpus is bench/pipeline_cpu.py's: distinct files of example clips with pauses.

    RAY_AUTH_MODE=disabled .venv/bin/python bench/measure_cpu.py [--minutes 20] [--pairs 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BASELINE = "f7ea019"
GOAL_PIPELINE_REALTIME = 60.0
RAY_CPUS = 2


def _segments(code: Path, config: Any, corpus: Path) -> list[dict[str, Any]]:
    """The segment rows this code's own source-level stages cut from the corpus."""
    if (code / "annotate" / "cut.py").is_file():  # ingest, segment and cut stages
        from pipeline.stages import StageChain, build_stage_specs

        cut = StageChain([spec for spec in build_stage_specs(config) if spec.takes == "sources"])
    else:  # one segmenter stage decoded, planned and cut
        from annotate.segment import SileroSegmenter

        segmenter = SileroSegmenter(config.segment)
        segmenter.setup()

        def cut(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [row for source in sources for row in segmenter.stream(source)]

    rows = []
    for path in sorted(corpus.glob("*.flac")):
        source = {"input_path": str(path), "source_path": str(path), "gender": None, "status": "ok"}
        rows.extend(row for row in cut([source]) if row.get("status") == "ok")
    return rows


def _measure_stage(code: Path, config: Any) -> Any:
    """This code's measuring step as one callable on a batch of segment rows."""
    if (code / "annotate" / "measure.py").is_file():
        from annotate.measure import MeasureStage

        stage = MeasureStage(config.measure)
        stage.setup()
        return stage
    # The baseline measured and tagged inside the acoustic captioner: exactly that part of it.
    from annotate.acoustics import measure
    from annotate.audio import decode_flac
    from annotate.tags import tag

    acoustic = config.caption.acoustic

    def measure_and_tag(rows: list[dict[str, Any]]) -> list[Any]:
        return [
            tag(measure(decode_flac(row["audio"]["bytes"]), acoustic.acoustics), acoustic.bins, 0.25)
            for row in rows
        ]

    return measure_and_tag


def worker(code: Path, corpus: Path, scratch: Path) -> dict[str, float]:
    """Run inside a subprocess whose PYTHONPATH is `code`: time (a) and (b) with that code."""
    import annotate

    if Path(annotate.__file__).resolve().parent.parent != code.resolve():
        raise SystemExit(f"imported {annotate.__file__}, not the code under {code}")
    from pipeline.config import load_config
    from pipeline.runner import _init_ray
    from pipeline.runner import annotate as run_annotate

    config = load_config(code / "configs" / "demo.yaml")
    config = config.model_copy(
        update={
            "write": config.write.model_copy(update={"rows_per_shard": 200}),
            "ray": config.ray.model_copy(update={"num_cpus": RAY_CPUS}),
        }
    )
    rows = _segments(code, config, corpus)
    stage = _measure_stage(code, config)
    started = time.process_time()
    stage(rows)
    measure_s = time.process_time() - started

    started = time.perf_counter()
    _init_ray(config.ray)
    ray_start_s = time.perf_counter() - started
    report = run_annotate(config, scratch / "run", inputs=[str(corpus)], executor="ray")
    _assert_imported_from(code)
    return {
        "load_average_1min": os.getloadavg()[0],
        "segment_audio_s": sum(row["duration_s"] for row in rows),
        "measure_s": measure_s,
        "input_audio_s": report.audio_s_processed,
        "pipeline_s": report.wall_s,
        "ray_start_s": ray_start_s,
    }


def _assert_imported_from(code: Path) -> None:
    """The venv's editable install would serve any module the other code lacks: none may come from it."""
    ours = ("annotate", "pipeline", "verify", "train")
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in ours and path and not Path(path).resolve().is_relative_to(code.resolve()):
            raise SystemExit(f"{name} was imported from {path}, not from {code}")


def run_worker(code: Path, corpus: Path, scratch: Path) -> dict[str, float]:
    scratch.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_AUTH_MODE": "disabled"}
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(code),
        "--corpus",
        str(corpus),
        "--scratch",
        str(scratch),
    ]
    done = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker for {code} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    def median(label: str, numerator: str, denominator: str) -> float:
        return statistics.median(run[numerator] / run[denominator] for run in runs[label])

    figures: dict[str, Any] = {}
    for label in runs:
        figures[label] = {
            "measure_x_realtime": median(label, "segment_audio_s", "measure_s"),
            "pipeline_x_realtime": median(label, "input_audio_s", "pipeline_s"),
            "pipeline_x_realtime_with_ray_start": statistics.median(
                run["input_audio_s"] / (run["pipeline_s"] + run["ray_start_s"]) for run in runs[label]
            ),
            "runs": runs[label],
        }
    after, before = figures["after"], figures["before"]
    figures["measure_after_over_before"] = after["measure_x_realtime"] / before["measure_x_realtime"]
    figures["pipeline_after_over_before"] = after["pipeline_x_realtime"] / before["pipeline_x_realtime"]
    figures["pipeline_goal_met"] = after["pipeline_x_realtime"] >= GOAL_PIPELINE_REALTIME
    return figures


def print_table(figures: dict[str, Any], corpus_s: float, baseline: str) -> None:
    before, after = figures["before"], figures["after"]
    rows = [
        ("measure stage alone, x real time per CPU second", "measure_x_realtime"),
        (f"whole pipeline, x real time ({RAY_CPUS} CPUs, Ray started)", "pipeline_x_realtime"),
        ("whole pipeline, x real time, with the Ray start", "pipeline_x_realtime_with_ray_start"),
    ]
    print(f"corpus: {corpus_s / 60:.1f} min of audio; before = {baseline}, after = this checkout")
    loads = [run["load_average_1min"] for label in ("before", "after") for run in figures[label]["runs"]]
    print(f"load average (1 min) after each run: {', '.join(f'{load:.1f}' for load in loads)}")
    print(f"{'':56s} {'before':>8s} {'after':>8s} {'after/before':>13s}")
    for name, key in rows:
        print(f"{name:56s} {before[key]:8.1f} {after[key]:8.1f} {after[key] / before[key]:13.2f}")
    goal = "met" if figures["pipeline_goal_met"] else "NOT met"
    print(f"goal: pipeline >= {GOAL_PIPELINE_REALTIME:.0f}x real time on {RAY_CPUS} CPUs: {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="Corpus length (default 20).")
    parser.add_argument("--file-s", type=float, default=60.0, help="Length of each corpus file.")
    parser.add_argument("--pairs", type=int, default=2, help="before/after pairs (alternating order).")
    parser.add_argument("--baseline", default=BASELINE, help="Commit to compare with.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.corpus, args.scratch)))
        return

    sys.path.insert(0, str(REPO / "bench"))
    from pipeline_cpu import build_corpus

    with tempfile.TemporaryDirectory(prefix="stylecaps-measure-bench-") as tmp:
        workdir = Path(tmp)
        corpus_s = build_corpus(workdir / "corpus", args.minutes, args.file_s)
        baseline = workdir / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline],
            check=True,
            capture_output=True,
        )
        try:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            order = [("before", baseline), ("after", REPO), ("after", REPO), ("before", baseline)]
            for index in range(args.pairs):
                for label, code in order[(index % 2) * 2 : (index % 2) * 2 + 2]:
                    scratch = workdir / f"{label}-{len(runs[label])}"
                    runs[label].append(run_worker(code, workdir / "corpus", scratch))
                    print(f"  {label}: {runs[label][-1]}", file=sys.stderr)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)],
                check=False,
                capture_output=True,
            )
        figures = summarize(runs)
    print_table(figures, corpus_s, args.baseline)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k not in ("before", "after")}))


if __name__ == "__main__":
    main()
