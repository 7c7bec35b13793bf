"""Benchmark of the `vllm` captioner: the pipeline against calling `LLM.generate` directly.

In one run, on the example corpus's segments (or `--input`), with `--model` (default: the tiny random
Qwen3-Omni Instruct that `make tiny-models` builds; its text is noise, its token counts are real):

  (1) engine start: the captioner stage's setup (processor, prompts, `vllm.LLM`), reported apart;
  (2) direct: `LLM.generate` on exactly the requests the stage builds (the prompts, decoded audio,
      seeds and sampling of every segment's K fine views and global view), engine already up;
  (3) stage: the captioner stage called on the segment rows in batches of `--batch-size` on the same
      engine (FLAC decode, requests, cleaning, records); (2) and (3) alternate, twice each;
  (4) pipeline: `stylecaps annotate` on Ray of the same inputs with the vllm captioner and, beside it,
      with the acoustic one (the same pipeline without the LLM); the pipeline's captioning time is
      wall(vllm) - wall(acoustic) - engine start;
  (5) recaption: `stylecaps recaption` on Ray of the run (4) wrote with the vllm captioner, with the same
      config but the caption base seed (`caption.vllm.seed`), so a new caption set of every segment
      from the run's shards (no decoding of sources, no segmentation); timed as (4) times annotate
      (wall clock around the call, Ray start included), in this process.
Ratios printed: stage / direct and pipeline / direct (goal <= 1.2 once the engine is up); recaption /
annotate with the same (vllm) captioner (goal <= 0.5), as measured and with the engine start (1)
subtracted from both (each run starts its engine); audio hours per device-hour and output tokens/s
of the direct run (per GPU on GPUs: `--tensor-parallel-size`).

    RAY_AUTH_MODE=disabled .venv/bin/python bench/caption_llm.py             # CPU, tiny model
    # GPU, real weights (vllm installed with the `llm` extra), one GPU per engine:
    python bench/caption_llm.py --model /models/Qwen3-Omni-30B-A3B-Instruct --dtype bfloat16 \\
        --max-model-len 16384 --max-tokens 256 --gpus 1 --input /data/clips/
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

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from long_source import probe_config  # noqa: E402

from annotate.audio import SAMPLE_RATE, decode_flac  # noqa: E402
from annotate.vllm_captioner import VllmCaptioner  # noqa: E402
from pipeline.config import load_config, parse_config  # noqa: E402
from pipeline.layer_runs import recaption  # noqa: E402
from pipeline.rundir import listed_shards  # noqa: E402

GOAL = 1.2
GOAL_RECAPTION = 0.5  # recaption / annotate with the same captioner: no decode, no segmentation
RECAPTION_SEED = 1  # caption.vllm.seed of the recaption run (annotate's is the default, 0)
CPU_ENV = {  # as configs/demo-llm.yaml gives its workers
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def pipeline_config(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "configs" / "demo-llm.yaml").read_text())
    config.pop("sources")
    config["verify"] = {"backend": "rules"}  # the captioner alone differs between the two runs
    config["caption"] = {"backend": backend, "vllm": captioner_config(args)} if backend == "vllm" else {}
    config["ray"]["stages"]["caption"] |= {"batch_size": args.batch_size, "num_gpus": args.gpus}
    del config["ray"]["stages"]["verify"]
    if args.gpus:
        config["ray"]["stages"]["caption"].pop("runtime_env")
        config["ray"].pop("num_cpus")
    return config


def captioner_config(args: argparse.Namespace) -> dict[str, Any]:
    engine_args = {"distributed_executor_backend": "uni"} if not args.gpus else {}
    return {
        "views": args.views,
        "max_tokens": args.max_tokens,
        "engine": {
            "model": args.model,
            "dtype": args.dtype,
            "max_model_len": args.max_model_len,
            "enforce_eager": not args.gpus,
            "tensor_parallel_size": max(1, args.gpus),
            "engine_args": engine_args,
        },
    }


def timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(REPO / "models" / "tiny" / "qwen3-omni-instruct"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per engine (tensor parallel); 0: CPU")
    parser.add_argument("--input", default=str(REPO / "examples" / "manifest.jsonl"))
    args = parser.parse_args()
    if not args.gpus:
        for key, value in CPU_ENV.items():
            os.environ.setdefault(key, value)

    with tempfile.TemporaryDirectory(prefix="caption-llm-bench-") as tmp:
        folder = Path(tmp)
        walls = {}
        for backend in ("acoustic", "vllm"):
            config_path = folder / f"{backend}.yaml"
            config_path.write_text(yaml.safe_dump(pipeline_config(args, backend)))
            walls[backend] = probe_config(REPO, config_path, [Path(args.input)], folder / backend)["wall_s"]
            print(f"pipeline, {backend:8s} captioner: {walls[backend]:7.1f} s", flush=True)
        config = pipeline_config(args, "vllm")
        config["caption"]["vllm"]["seed"] = RECAPTION_SEED  # a new caption set id, nothing else differs
        config_path = folder / "recaption.yaml"
        config_path.write_text(yaml.safe_dump(config))
        run_config = load_config(config_path)
        recaption_s, report = timed(lambda: recaption(folder / "vllm", run_config, executor="ray"))
        print(
            f"recaption, {'vllm':7s} captioner: {recaption_s:7.1f} s "
            f"({report.segments} segments into caption set {report.layer.id})",
            flush=True,
        )
        rows = [
            row for shard in listed_shards(folder / "acoustic") for row in pq.read_table(shard).to_pylist()
        ]
        if report.segments != len(rows) or report.failed:
            done = f"{report.segments} of {len(rows)} segments, {report.failed} failed"
            raise SystemExit(f"recaption captioned {done}")

    stage = VllmCaptioner(
        parse_config({"caption": {"backend": "vllm", "vllm": captioner_config(args)}}).caption.vllm
    )
    engine_s, _ = timed(stage.setup)
    print(f"engine start (processor + vllm.LLM): {engine_s:.1f} s", flush=True)
    segments = [(row["segment_id"], decode_flac(row["audio"]["bytes"]), None) for row in rows]
    requests, params, _ = stage.requests(segments)
    audio_s = sum(wave.size for _, wave, _ in segments) / SAMPLE_RATE
    batches = [
        [dict(row, captions=[]) for row in rows[i : i + args.batch_size]]
        for i in range(0, len(rows), args.batch_size)
    ]
    direct, staged, tokens = [], [], 0
    for name in ("direct", "stage", "stage", "direct"):
        if name == "direct":
            seconds, outputs = timed(lambda: stage._llm.generate(requests, params, use_tqdm=False))
            direct.append(seconds)
            tokens = sum(len(sample.token_ids) for output in outputs for sample in output.outputs)
        else:
            seconds, _ = timed(lambda: [stage(batch) for batch in batches])
            staged.append(seconds)
        print(f"{name:6s} {seconds:7.2f} s", flush=True)
    stage.teardown()

    direct_s, stage_s = statistics.median(direct), statistics.median(staged)
    pipeline_s = walls["vllm"] - walls["acoustic"] - engine_s
    devices = max(1, args.gpus)
    figures = {
        "segments": len(rows),
        "audio_s": audio_s,
        "engine_start_s": engine_s,
        "direct_s": direct_s,
        "stage_over_direct": stage_s / direct_s,
        "pipeline_over_direct": pipeline_s / direct_s,
        "output_tokens_per_s": tokens / direct_s,
        "audio_hours_per_device_hour": audio_s / (direct_s * devices),
    }
    print(
        f"{len(rows)} segments, {audio_s / 60:.1f} min of audio, {tokens} output tokens; "
        f"direct {direct_s:.2f} s: {figures['output_tokens_per_s']:.0f} tokens/s, "
        f"{figures['audio_hours_per_device_hour']:.1f} audio hours per {'GPU' if args.gpus else 'CPU'}-hour"
    )
    annotate_s = walls["vllm"]
    figures |= {
        "annotate_s": annotate_s,
        "recaption_s": recaption_s,
        "recaption_over_annotate": recaption_s / annotate_s,
        "recaption_over_annotate_less_engine_start": (recaption_s - engine_s) / (annotate_s - engine_s),
    }
    ratios = [  # name, goal, the wall times it divides
        ("stage_over_direct", GOAL, ""),
        ("pipeline_over_direct", GOAL, ""),
        (
            "recaption_over_annotate",
            GOAL_RECAPTION,
            f"; recaption {recaption_s:.1f} s / annotate {annotate_s:.1f} s, same captioner",
        ),
        (
            "recaption_over_annotate_less_engine_start",
            GOAL_RECAPTION,
            f"; (recaption {recaption_s:.1f} - engine start {engine_s:.1f}) s"
            f" / (annotate {annotate_s:.1f} - {engine_s:.1f}) s",
        ),
    ]
    for name, goal, walls_divided in ratios:
        verdict = "met" if figures[name] <= goal else "NOT met"
        print(f"{name.replace('_', ' ')}: {figures[name]:.2f} (goal <= {goal}: {verdict}){walls_divided}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
