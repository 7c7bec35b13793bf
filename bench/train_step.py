"""Training step benchmarks, measured side by side in one run (ratios; our CPU machines are shared).

(a) shards / memory: the step time when batches come from the shards (read, shuffled, planned, cropped
    and collated by the loader, as training does: on the training process between steps, or in one
    loader process beside it) over the step time on the same batches already collated in memory; in
    alternating order, for the CPU default (configs/train-demo.yaml) and a larger config (a trainable
    from-scratch conv+transformer), each with three loader settings: on the training process (the demo
    config's), one loader process beside the step's 2 torch threads, one loader process with a core of
    its own (1 torch thread: the in-memory step then has 1 thread too). Goal <= 1.10. Steady state: both
    time steps 2..N of a block of at least --min-block-s (the loader's start, a fork and its first
    batch, is reported apart), the frozen encoders' caches hold every crop and the loader keeps every
    row's record (data.cache_rows), as from the second epoch of training on. The CPU default is also
    timed cold (both emptied before every block: the first epoch), where the step reads, decodes and
    encodes every crop itself and the loader reads every row group.
(b) samples per second of each config, from shards.
(c) Ray Train with 2 workers over 1 worker on the same global batch, for both configs with the demo
    config's loader setting (2 workers get half the audio seconds each, 1 CPU each against 2): the
    ratio of training throughput, the median over steps 21-80 of each run of the samples/s the loop
    logs to TensorBoard (wall time per step, data included).

    RAY_AUTH_MODE=disabled .venv/bin/python bench/train_step.py --json bench-train.json
    (default: the runs `make demo` trains on, runs/demo and runs/demo-voices; --run RUN, repeated, for others)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch  # noqa: E402

from train.batches import Batch, SamplerState  # noqa: E402
from train.config import TrainConfig, load_train_config  # noqa: E402
from train.loop import TrainingSession  # noqa: E402

LARGER_AUDIO = {
    "kind": "conv_transformer",
    "trainable": True,
    "n_mels": 80,
    "width": 256,
    "layers": 4,
    "heads": 4,
}


def configs(runs: list[str]) -> dict[str, dict[str, TrainConfig]]:
    """The CPU default and the larger config, each with the demo config's loader setting first (the
    cold and Ray figures use it), then one loader process beside 2 torch threads, then one loader
    process with a core of its own (1 torch thread)."""
    base = load_train_config(REPO / "configs" / "train-demo.yaml").model_dump(mode="json")
    base["data"]["runs"] = runs
    base["max_minutes"] = None
    own = base["data"]["loader_workers"]
    settings = {
        "loader on the training process" if own == 0 else f"loader_workers {own}": (own, 2),
        "loader_workers 1": (1, 2),
        "loader_workers 1, 1 torch thread": (1, 1),
    }
    made: dict[str, dict[str, TrainConfig]] = {}
    for name, audio in (
        ("cpu default (frozen GE2E + MiniLM)", None),
        ("larger (trainable conv+transformer)", LARGER_AUDIO),
    ):
        model = base["model"] if audio is None else {**base["model"], "audio": audio}
        made[name] = {
            setting: TrainConfig(
                **{
                    **base,
                    "model": model,
                    "cpus_per_worker": threads,
                    "data": {**base["data"], "loader_workers": workers},
                }
            )
            for setting, (workers, threads) in settings.items()
        }
    return made


def timed_steps(session: TrainingSession, batches: Iterator[tuple[SamplerState, Batch]], steps: int):
    """Seconds for steps 2..`steps` (the first one starts the source), rows in them, and the seconds the
    source took to hand over its first batch."""
    started = time.perf_counter()
    _, first = next(batches)
    first_batch_s = time.perf_counter() - started
    session.step(first, 0)
    rows, started = 0, time.perf_counter()
    for step, (_, batch) in zip(range(1, steps), batches, strict=False):
        session.step(batch, step)
        rows += len(batch.texts)
    return time.perf_counter() - started, rows, first_batch_s


def shards_over_memory(
    config: TrainConfig, steps: int, pairs: int, min_block_s: float, cold: bool = False
) -> dict[str, Any]:
    torch.set_num_threads(config.cpus_per_worker)
    session = TrainingSession(config)
    session.standardise()
    session.model.train()
    start = SamplerState()

    def first_batches(count: int) -> list[tuple[SamplerState, Batch]]:
        made = list(itertools.islice(session.batches(0, start), count))
        for _, batch in made:  # cold, the step encodes every crop: in memory they are decoded up front
            if cold and batch.audio is None:
                batch.audio = batch.waveforms()[0]
        return made

    in_memory = first_batches(steps)
    if not cold:  # a pass over the batches we time, so frozen encoders' caches hold every crop either way
        timed_steps(session, iter(in_memory), steps)
        seconds, _, _ = timed_steps(session, iter(in_memory), steps)
        wanted = math.ceil(min_block_s / (seconds / (steps - 1)))  # a block long enough to be steady
        if wanted > steps:
            steps, in_memory = wanted, first_batches(wanted)
            timed_steps(session, iter(in_memory), steps)
    times: dict[str, list[float]] = {"shards": [], "memory": []}
    first_batch: list[float] = []
    rows = 0
    for order in [("shards", "memory"), ("memory", "shards")] * pairs:
        for kind in order:
            if cold:
                session.model.forget_cached_features()
                session.stream.forget_records()
            if kind == "memory":
                seconds, rows, _ = timed_steps(session, iter(in_memory), steps)
            else:
                loader = session.loader(0, start)
                seconds, rows, first_s = timed_steps(session, loader, steps)
                first_batch.append(first_s)
                del loader
            times[kind].append(seconds)
    ratios = [s / m for s, m in zip(times["shards"], times["memory"], strict=True)]
    timed = steps - 1
    return {
        "step_ms_shards": 1000 * statistics.median(times["shards"]) / timed,
        "step_ms_memory": 1000 * statistics.median(times["memory"]) / timed,
        "shards_over_memory": statistics.median(ratios),
        "ratios": ratios,
        "samples_per_s_shards": rows / statistics.median(times["shards"]),
        "rows_per_batch": rows / timed,
        "loader_first_batch_s": statistics.median(first_batch),
        "steps_per_block": steps,
        "torch_threads": config.cpus_per_worker,
        "loader_workers": config.data.loader_workers,
    }


def ray_samples_per_s(config: TrainConfig, steps: int, skip: int) -> float:
    """Median samples/s (every worker's rows over each step's wall time, data wait included: the
    loop's TensorBoard scalar, logged every step here) after the first `skip` steps (Ray's start,
    standardisation and the first epoch's encoding)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from train.launch import launch

    with tempfile.TemporaryDirectory() as folder:
        launch(config.model_copy(update={"log_every": 1}), folder, export=None, stop_at=steps)
        events = EventAccumulator(str(Path(folder) / "tensorboard"))
        events.Reload()
        values = [e.value for e in events.Scalars("samples_per_s") if e.step > skip]
    return statistics.median(values)


def ray_two_over_one(config: TrainConfig, steps: int, skip: int) -> dict[str, Any]:
    budget = config.data.batch_audio_s
    one = config.model_copy(update={"workers": 1, "cpus_per_worker": 2})
    two = config.model_copy(
        update={
            "workers": 2,
            "cpus_per_worker": 1,
            "data": config.data.model_copy(update={"batch_audio_s": budget / 2}),
        }
    )
    rates = {}
    for name, variant in (("1 worker", one), ("2 workers", two)):
        rates[name] = ray_samples_per_s(variant, steps, skip)
        print(
            f"  Ray Train {name}: {rates[name]:.1f} samples/s (median of steps {skip + 1}-{steps})",
            flush=True,
        )
    return {
        "samples_per_s_1_worker": rates["1 worker"],
        "samples_per_s_2_workers": rates["2 workers"],
        "two_over_one": rates["2 workers"] / rates["1 worker"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="append", help="a run to train from (repeat; default: the demo's)")
    parser.add_argument("--steps", type=int, default=20, help="least steps per timed block")
    parser.add_argument(
        "--min-block-s", type=float, default=3.0, help="least seconds per warm timed block (more steps)"
    )
    parser.add_argument("--pairs", type=int, default=2, help="alternating (shards, memory) pairs")
    parser.add_argument("--ray-steps", type=int, default=80, help="steps of each Ray Train run in (c)")
    parser.add_argument("--ray-skip", type=int, default=20, help="first steps of (c) left out (start-up)")
    parser.add_argument("--no-ray", action="store_true", help="leave out (c)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    figures: dict[str, Any] = {}
    models = configs(args.run or [str(REPO / "runs" / name) for name in ("demo", "demo-voices")])
    owns = {model: next(iter(settings.items())) for model, settings in models.items()}
    default_name, (default_setting, default) = next(iter(owns.items()))
    runs = [
        (f"{model}, {setting}", config, False)
        for model, settings in models.items()
        for setting, config in settings.items()
    ]
    runs.append((f"{default_name}, {default_setting}, cold caches", default, True))
    for name, config, cold in runs:
        figures[name] = shards_over_memory(config, args.steps, args.pairs, args.min_block_s, cold)
        row = figures[name]
        print(
            f"{name}: step {row['step_ms_shards']:.1f} ms from shards, "
            f"{row['step_ms_memory']:.1f} ms in memory, "
            f"shards/memory {row['shards_over_memory']:.3f} (goal <= 1.10; blocks {row['ratios']}), "
            f"{row['samples_per_s_shards']:.1f} samples/s, {row['rows_per_batch']:.1f} rows/batch, "
            f"loader's first batch {row['loader_first_batch_s']:.2f} s, "
            f"{row['steps_per_block']} steps/block, "
            f"{row['torch_threads']} torch threads, loader_workers {row['loader_workers']}",
            flush=True,
        )
    if not args.no_ray:
        for model, (setting, config) in owns.items():
            figures[f"ray, {model}"] = ray = ray_two_over_one(config, args.ray_steps, args.ray_skip)
            print(
                f"Ray Train 2 workers / 1 worker, {model}, {setting}, same global batch, samples/s: "
                f"{ray['two_over_one']:.3f}",
                flush=True,
            )
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
