"""Training step benchmarks, measured side by side in one run (ratios; our CPU machines are shared).

(a) shards / memory: the step time when batches come from the shards (read, shuffled, planned, FLAC
    decoded, collated on the prefetch thread, as training does) over the step time on the same
    batches already collated in memory; in alternating order, for the CPU default and a larger
    config (a trainable from-scratch conv+transformer). Goal <= 1.10.
(b) samples per second of each config, from shards.
(c) Ray Train with 2 workers over 1 worker on the same global batch (2 workers get half the audio
    seconds each): steady-state step time from two runs of each (N1 and N2 steps: the difference
    cancels Ray's start, model loading and standardisation).

    RAY_AUTH_MODE=disabled .venv/bin/python bench/train_step.py --run runs/demo --json bench-train.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch  # noqa: E402

from train.batches import SamplerState  # noqa: E402
from train.config import TrainConfig, load_train_config  # noqa: E402
from train.loop import TrainingSession  # noqa: E402
from train.prefetch import Prefetcher  # noqa: E402

LARGER_AUDIO = {
    "kind": "conv_transformer",
    "trainable": True,
    "n_mels": 80,
    "width": 256,
    "layers": 4,
    "heads": 4,
}


def configs(run: str) -> dict[str, TrainConfig]:
    base = load_train_config(REPO / "configs" / "train-demo.yaml").model_dump(mode="json")
    base["data"]["runs"] = [run]
    base["max_minutes"] = None
    larger = {**base, "model": {**base["model"], "audio": LARGER_AUDIO}}
    return {
        "cpu default (frozen GE2E + MiniLM)": TrainConfig(**base),
        "larger (trainable conv+transformer)": TrainConfig(**larger),
    }


def timed_steps(session: TrainingSession, batches, first_step: int) -> tuple[float, int]:
    rows, started = 0, time.perf_counter()
    for offset, batch in enumerate(batches):
        session.step(batch, first_step + offset)
        rows += len(batch.texts)
    return time.perf_counter() - started, rows


def shards_over_memory(config: TrainConfig, steps: int, pairs: int) -> dict[str, Any]:
    torch.set_num_threads(config.cpus_per_worker)
    session = TrainingSession(config)
    session.standardise()
    session.model.train()
    # Warm-up: one pass over the batches we time, so frozen encoders' caches hold every crop either way.
    start = SamplerState()
    warm = [batch for _, (_, batch) in zip(range(steps), session.batches(0, start), strict=False)]
    timed_steps(session, warm, 0)
    in_memory = [batch for _, (_, batch) in zip(range(steps), session.batches(0, start), strict=False)]
    times: dict[str, list[float]] = {"shards": [], "memory": []}
    rows = 0
    for order in [("shards", "memory"), ("memory", "shards")] * pairs:
        for kind in order:
            if kind == "memory":
                seconds, rows = timed_steps(session, in_memory, 0)
            else:
                prefetched = Prefetcher(session.batches(0, start))
                seconds, rows = timed_steps(
                    session, (b for _, (_, b) in zip(range(steps), prefetched, strict=False)), 0
                )
                prefetched.close()
            times[kind].append(seconds)
    ratios = [s / m for s, m in zip(times["shards"], times["memory"], strict=True)]
    return {
        "step_ms_shards": 1000 * statistics.median(times["shards"]) / steps,
        "step_ms_memory": 1000 * statistics.median(times["memory"]) / steps,
        "shards_over_memory": statistics.median(ratios),
        "ratios": ratios,
        "samples_per_s_shards": rows / statistics.median(times["shards"]),
        "rows_per_batch": rows / steps,
    }


def ray_wall(config: TrainConfig, stop_at: int) -> float:
    from train.launch import launch

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        launch(config, folder, export=None, stop_at=stop_at)
        return time.perf_counter() - started


def ray_two_over_one(config: TrainConfig, short: int, long: int) -> dict[str, Any]:
    budget = config.data.batch_audio_s
    one = config.model_copy(update={"workers": 1, "cpus_per_worker": 2})
    two = config.model_copy(
        update={
            "workers": 2,
            "cpus_per_worker": 1,
            "data": config.data.model_copy(update={"batch_audio_s": budget / 2}),
        }
    )
    per_step = {}
    for name, variant in (("1 worker", one), ("2 workers", two)):
        walls = {n: ray_wall(variant, n) for n in (short, long)}
        per_step[name] = (walls[long] - walls[short]) / (long - short)
        print(f"  Ray Train {name}: {walls} s → {1000 * per_step[name]:.1f} ms/step", flush=True)
    return {
        "step_ms_1_worker": 1000 * per_step["1 worker"],
        "step_ms_2_workers": 1000 * per_step["2 workers"],
        "two_over_one": per_step["2 workers"] / per_step["1 worker"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default=str(REPO / "runs" / "demo"))
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--pairs", type=int, default=2, help="alternating (shards, memory) pairs")
    parser.add_argument("--ray-steps", type=int, nargs=2, default=(10, 40), help="the two run lengths of (c)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    figures: dict[str, Any] = {}
    candidates = configs(args.run)
    for name, config in candidates.items():
        figures[name] = shards_over_memory(config, args.steps, args.pairs)
        row = figures[name]
        print(
            f"{name}: step {row['step_ms_shards']:.0f} ms from shards, "
            f"{row['step_ms_memory']:.0f} ms in memory, "
            f"shards/memory {row['shards_over_memory']:.3f} (goal <= 1.10), "
            f"{row['samples_per_s_shards']:.1f} samples/s, {row['rows_per_batch']:.1f} rows/batch",
            flush=True,
        )
    default = next(iter(candidates.values()))
    figures["ray"] = ray_two_over_one(default, *args.ray_steps)
    print(
        f"Ray Train 2 workers / 1 worker, same global batch: {figures['ray']['two_over_one']:.3f}", flush=True
    )
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
