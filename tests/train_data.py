"""Training test data: small synthetic runs written through the real shard writer, and tiny random
encoders built with the real transformers classes (the tokenizer is MiniLM's, shipped offline)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from annotate.audio import SAMPLE_RATE, encode_flac
from annotate.base import end_row
from annotate.captioner import AcousticCaptioner, AcousticCaptionerConfig
from annotate.tags import StyleTags
from pipeline.config import RunConfig, WriteConfig
from pipeline.contract import stream_table
from pipeline.layers import annotate_layers
from pipeline.rundir import RunDirectory
from pipeline.writer import ShardWriter
from tests.conftest import default_contract

PITCHES = ("low", "medium", "high")
RATES = ("slow", "measured", "fast")


def tone(seconds: float, hz: float, seed: int) -> np.ndarray:
    """A harmonic tone with noise: cheap audio whose pitch differs by row."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 5))
    noise = np.random.default_rng(seed).normal(0, 0.02, t.size)
    return (0.2 * wave / 2 + noise).astype(np.float32)


def write_run(
    out: Path,
    sources: int = 8,
    segments_per_source: int = 3,
    rows_per_shard: int = 6,
    row_group_rows: int = 3,
    seed: int = 0,
    reject_view: int | None = None,
) -> Path:
    """A run directory of `sources` × `segments_per_source` segments (2–7 s tones), each with 3 fine
    captions and a global one worded from its tags; `reject_view` marks that fine view as failed."""
    rng = random.Random(seed)
    captioner = AcousticCaptioner(AcousticCaptionerConfig(views=3))
    out.mkdir(parents=True, exist_ok=True)
    contract = default_contract()
    run = RunDirectory.open(out, "test", {}, contract, fsync=False, layers=annotate_layers(RunConfig()))
    writer = ShardWriter(run, WriteConfig(rows_per_shard=rows_per_shard, row_group_rows=row_group_rows))
    fed: set[str] = set()
    for s in range(sources):
        source_id = f"src{s:03d}"
        rows: list[dict[str, Any]] = []
        start = 0.0
        for k in range(segments_per_source):
            duration = round(rng.uniform(2.0, 7.0), 3)
            pitch = PITCHES[(s + k) % 3]
            gender = "female" if s % 2 else "male"
            tags = StyleTags(gender, "given", pitch, "moderate", RATES[(s * 2 + k) % 3], "moderate", "modal")
            segment_id = f"{source_id}_{int(start * 1000):09d}_{int((start + duration) * 1000):09d}"
            captions = captioner.captions(segment_id, tags)
            for caption in captions:
                failed = caption["granularity"] == "fine" and caption["view"] == reject_view
                caption["verdict"] = {
                    "passed": not failed,
                    "failed_checks": ["length"] if failed else [],
                    "reasons": ["test"] if failed else [],
                    "verifier": "rules/1",
                }
            # Pitch words are relative to the gender's register, as the captioner's are.
            hz = {
                "male": {"low": 90.0, "medium": 120.0, "high": 150.0},
                "female": {"low": 170.0, "medium": 215.0, "high": 270.0},
            }[gender][pitch]
            rows.append(
                {
                    "input_path": f"/inputs/{source_id}.flac",
                    "status": "ok",
                    "source_duration_s": 100.0,
                    "dropped_speech_s": 0.0,
                    "segment_id": segment_id,
                    "source_id": source_id,
                    "source_path": f"{source_id}.flac",
                    "start_s": start,
                    "end_s": start + duration,
                    "duration_s": duration,
                    "speaker": f"speaker{s % 4}",
                    "audio": {"bytes": encode_flac(tone(duration, hz, s * 100 + k)), "path": None},
                    "pitch_median_hz": hz,
                    "tags": tags.as_row(),
                    "gender": gender,
                    "captions": captions,
                }
            )
            start += duration + 1.0
        source = {key: rows[0][key] for key in ("input_path", "source_id", "source_path")}
        rows.append(end_row({**source, "source_duration_s": 100.0, "dropped_speech_s": 0.0}, "segmented"))
        fed.add(source["input_path"])
        writer.add(stream_table(rows, contract.stream_schema))
    writer.close(fed)
    return out


def tiny_text_model(folder: Path) -> Path:
    """A 1-layer random BERT with MiniLM's tokenizer, saved as a local transformers folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from train.model import minilm_path

    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return folder


def tiny_config(runs: list[Path], text_path: Path, **overrides: Any) -> dict[str, Any]:
    """A training config of tiny random encoders that trains in seconds."""
    config: dict[str, Any] = {
        "data": {
            "runs": [str(r) for r in runs],
            "batch_audio_s": 30.0,
            "bucket_edges_s": [4.0],
            "shuffle_buffer": 8,
        },
        "model": {
            "audio": {
                "kind": "conv_transformer",
                "trainable": True,
                "n_mels": 16,
                "width": 32,
                "layers": 1,
                "heads": 2,
            },
            "text": {"kind": "hf", "path": str(text_path), "trainable": True},
            "hidden_dim": 32,
            "embed_dim": 16,
        },
        "stages": [
            {"name": "one", "steps": 3, "infonce": 1.0, "perturbation": 0.5, "tag_classification": 0.5},
            {"name": "two", "steps": 3, "infonce": 0.0, "multi_positive": 1.0, "hard_negative": 0.5},
        ],
        "optim": {"warmup_steps": 2},
        "checkpoint_every": 3,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config
