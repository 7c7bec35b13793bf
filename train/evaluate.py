"""Evaluate an exported model the way the papers do: retrieval, zero-shot classification, style
similarity against ratings, ranking by a prompt pair, and best-of-N reranking.

Clips come from a run directory (a split of its segments, through the shard reader) or from a CSV /
JSONL manifest whose `path` column names audio files (relative paths start at the manifest's
folder, or at `audio_root`); every other column is a field the commands can name.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annotate.audio import content_id, decode_flac, read_mono_16k
from train.batches import pad
from train.metrics import (
    classification_scores,
    correlations,
    ranks_of_truth,
    retrieval_chance,
    retrieval_scores,
)
from train.model import DualEncoder
from train.shards import CaptionPolicy, ShardSet, Split, is_heldout, iter_split


class EvaluationInputError(ValueError):
    """A manifest or field the evaluation cannot use; the message is one line."""


@dataclass
class Clip:
    key: str
    wave: np.ndarray
    fields: dict[str, Any] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)  # granularity → caption (first usable view)


def clips_from_runs(
    runs: Sequence[str | Path],
    split: Split,
    holdout_fraction: float,
    captions: list[str] | None = None,
    verdicts: list[str] | None = None,
    report: Callable[[str], None] | None = None,
) -> list[Clip]:
    """The runs' segments of a split with their first usable caption per granularity, from the caption
    sets and verdict versions named (default: train.shards' rule), said to `report` run by run."""
    shards = ShardSet(list(runs), captions, verdicts)
    for run, selection in shards.selections.items():
        if report is not None:
            report(f"{run}: {selection}")
    clips = []
    for record in iter_split(shards, CaptionPolicy(), split, holdout_fraction):
        captions: dict[str, str] = {}
        for caption in sorted(record.captions, key=lambda c: c.view):
            captions.setdefault(caption.granularity, caption.text)
        fields = {**record.fields, "speaker": record.speaker, "source_id": record.source_id}
        clips.append(Clip(record.segment_id, decode_flac(record.flac), fields, captions))
    if not clips:
        raise EvaluationInputError(f"the {split} split of {', '.join(map(str, runs))} holds no segment")
    return clips


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"{path}: no such manifest")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    if not rows:
        raise EvaluationInputError(f"{path}: the manifest has no rows")
    return rows


def training_sources(runs: Sequence[str | Path], holdout_fraction: float) -> set[str]:
    """The source ids a model trained on (the runs' sources outside the held-out split)."""
    shards = ShardSet(list(runs))
    ids = {sid for ref in shards.row_groups for sid in shards.read(ref, ["source_id"]).column(0).to_pylist()}
    return {sid for sid in ids if not is_heldout(sid, holdout_fraction)}


def clips_from_manifest(
    path: str | Path,
    audio_root: str | Path | None = None,
    path_column: str = "path",
    exclude_sources: set[str] | None = None,
) -> list[Clip]:
    """The manifest's clips; with `exclude_sources`, only those whose source id (the manifest's
    source_id, else the file's content hash, as annotation computes it) is not in the set."""
    rows = read_manifest(path)
    if path_column not in rows[0]:
        raise EvaluationInputError(f"{path}: no '{path_column}' column (columns: {', '.join(rows[0])})")
    root = Path(audio_root) if audio_root else Path(path).parent
    clips = []
    for row in rows:
        audio_path = Path(row[path_column])
        audio_path = audio_path if audio_path.is_absolute() else root / audio_path
        if not audio_path.is_file():
            raise EvaluationInputError(f"{path}: audio file {audio_path} does not exist")
        source_id = row.get("source_id") or (content_id(audio_path) if exclude_sources is not None else None)
        if exclude_sources is not None and source_id in exclude_sources:
            continue
        clips.append(Clip(str(row[path_column]), read_mono_16k(audio_path), dict(row)))
    if not clips:
        raise EvaluationInputError(f"{path}: no clip left (every source was seen in training)")
    return clips


def field_values(clips: list[Clip], name: str) -> list[Any]:
    missing = [c.key for c in clips if name not in c.fields]
    if missing:
        known = sorted(clips[0].fields)
        raise EvaluationInputError(f"no field '{name}' for {missing[0]} (fields: {', '.join(known)})")
    return [c.fields[name] for c in clips]


@torch.no_grad()
def embed_clips(model: DualEncoder, clips: list[Clip], batch_size: int = 16) -> np.ndarray:
    """Audio embeddings in clip order, batched by length so padding stays small."""
    order = sorted(range(len(clips)), key=lambda i: clips[i].wave.size)
    out = np.zeros((len(clips), model.config.embed_dim), dtype=np.float32)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        audio, lens = pad([clips[i].wave for i in chunk])
        embeddings, _, _ = model(audio=audio.to(device), audio_lens=lens.to(device))
        out[chunk] = embeddings.float().cpu().numpy()
    return out


@torch.no_grad()
def embed_texts(model: DualEncoder, texts: list[str], batch_size: int = 64) -> np.ndarray:
    parts = [
        model(text=texts[i : i + batch_size])[1].float().cpu().numpy()
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts)


def retrieval(model: DualEncoder, clips: list[Clip], granularity: str) -> dict[str, dict[str, float]]:
    """Text→audio and audio→text retrieval over the clips that have a caption of this granularity."""
    usable = [c for c in clips if granularity in c.captions]
    if len(usable) < 2:
        raise EvaluationInputError(f"fewer than 2 clips with a {granularity} caption")
    audio = embed_clips(model, usable)
    text = embed_texts(model, [c.captions[granularity] for c in usable])
    truth = np.arange(len(usable))
    return {
        "text_to_audio": retrieval_scores(ranks_of_truth(text @ audio.T, truth)),
        "audio_to_text": retrieval_scores(ranks_of_truth(audio @ text.T, truth)),
        "chance": retrieval_chance(len(usable)),
        "clips": {"n": float(len(usable))},
    }


def class_prompts(model: DualEncoder, classes: list[str], templates: list[str]) -> np.ndarray:
    """One embedding per class: the normalised mean over the templates (CLAP's prompt ensemble)."""
    vectors = []
    for name in classes:
        embedded = embed_texts(model, [t.format(name) for t in templates]).mean(axis=0)
        vectors.append(embedded / np.linalg.norm(embedded))
    return np.stack(vectors)


def zero_shot(
    model: DualEncoder,
    clips: list[Clip],
    label: str,
    templates: list[str],
    classes: list[str] | None = None,
    audio: np.ndarray | None = None,
) -> dict[str, Any]:
    """`audio`: the clips' embeddings when the caller already has them (several evaluations)."""
    truth = [str(v) for v in field_values(clips, label)]
    keep = [i for i, v in enumerate(truth) if v not in ("", "None", "nan")]
    truth = [truth[i] for i in keep]
    classes = classes or sorted(set(truth))
    if len(classes) < 2:
        raise EvaluationInputError(f"'{label}' has fewer than 2 classes among the clips")
    audio = (embed_clips(model, clips) if audio is None else audio)[keep]
    predicted = [classes[j] for j in (audio @ class_prompts(model, classes, templates).T).argmax(axis=1)]
    scores = classification_scores(truth, predicted, classes)
    return {
        **scores,
        "classes": classes,
        "n": len(truth),
        "chance_WA": max(truth.count(c) for c in classes) / len(truth),
    }


def prompt_ranking(
    model: DualEncoder,
    clips: list[Clip],
    value: str,
    high: str,
    low: str,
    within: str | None = None,
    audio: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Spearman/Pearson between sim(audio, high) - sim(audio, low) and a numeric field, over all
    clips and within each group of `within` (pitch within gender: between genders pitch is trivial)."""
    numbers = np.array([float(v) if v not in (None, "") else np.nan for v in field_values(clips, value)])
    groups = [str(g) for g in field_values(clips, within)] if within else ["all"] * len(clips)
    audio = embed_clips(model, clips) if audio is None else audio
    prompts = embed_texts(model, [high, low])
    score = audio @ prompts[0] - audio @ prompts[1]
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        if not np.isnan(numbers[i]):
            by_group[group].append(i)
    out = {group: correlations(score[idx], numbers[idx]) for group, idx in sorted(by_group.items())}
    valid = ~np.isnan(numbers)
    if within:
        out["all"] = correlations(score[valid], numbers[valid])
    return out


def style_similarity(model: DualEncoder, clips: list[Clip], caption: str, rating: str) -> dict[str, float]:
    """Cosine of each (audio, caption) pair against human ratings."""
    texts = [str(t) for t in field_values(clips, caption)]
    ratings = np.array([float(r) for r in field_values(clips, rating)])
    scores = (embed_clips(model, clips) * embed_texts(model, texts)).sum(axis=1)
    return correlations(scores, ratings)


def rerank(model: DualEncoder, clips: list[Clip], caption: str) -> list[dict[str, Any]]:
    """Best-of-N: the candidate audios of each caption ranked by similarity (rank 1 = best)."""
    texts = [str(t) for t in field_values(clips, caption)]
    scores = (embed_clips(model, clips) * embed_texts(model, texts)).sum(axis=1)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(texts):
        groups[text].append(i)
    rows = []
    for text, members in groups.items():
        for rank, i in enumerate(sorted(members, key=lambda i: -scores[i]), start=1):
            rows.append({**clips[i].fields, caption: text, "score": float(scores[i]), "rank": rank})
    return rows
