"""`stylecaps train` and `stylecaps evaluate ...` (registered on the main app in pipeline/cli.py)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.config import ConfigError

console = Console(stderr=True)
stdout = Console()

evaluate_app = typer.Typer(
    help="Evaluate an exported model: retrieval, zero-shot classification, prompt ranking, "
    "style similarity, best-of-N reranking.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _user_errors() -> tuple[type[Exception], ...]:
    from train.checkpoint import CheckpointMismatch
    from train.evaluate import EvaluationInputError
    from train.shards import ShardContractError

    return (ConfigError, ShardContractError, EvaluationInputError, CheckpointMismatch, FileNotFoundError)


def train(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Training config (YAML), e.g. configs/train-demo.yaml.")
    ],
    runs: Annotated[
        list[Path] | None,
        typer.Option("--run", "-r", help="Run directory to train from; repeatable; replaces data.runs."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Training folder: checkpoints, TensorBoard logs (default: runs/<config name>).",
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option("--export", "-e", help="Where to export the trained model (default: <out>/model)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Ray Train workers (replaces the config's 'workers').")
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop after this many minutes (with a checkpoint and an export).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster instead of starting one.")
    ] = None,
) -> None:
    """Train a speech-text dual encoder on the shards of one or more runs, on Ray Train.

    Re-running the same command on the same --out resumes from the newest checkpoint, mid-epoch,
    without repeating or skipping a batch.
    """
    from train.config import load_train_config, parse_train_config
    from train.launch import launch

    try:
        values = load_train_config(config).model_dump(mode="json")
        values.update(
            {k: v for k, v in {"workers": workers, "max_minutes": max_minutes}.items() if v is not None}
        )
        if runs:
            values["data"]["runs"] = [str(r) for r in runs]
        train_config = parse_train_config(values, origin="command line")
        from train.shards import ShardSet

        data = train_config.data
        shards = ShardSet(data.runs, data.captions, data.verdicts)  # a bad run fails here, before Ray starts
        for run, selection in shards.selections.items():
            stdout.print(f"{run}: {selection}", soft_wrap=True, highlight=False)
        out = out or Path("runs") / config.stem
        export = export or out / "model"
        launch(train_config, out, export, ray_address=ray_address)
    except _user_errors() as error:
        raise _fail(str(error)) from None
    stdout.print(f"model exported to {export}")


# -- evaluate -------------------------------------------------------------------------------------------

ModelArgument = Annotated[Path, typer.Argument(help="An exported model folder (stylecaps train --export).")]
ManifestOption = Annotated[
    Path | None,
    typer.Option(
        "--manifest", "-m", help="CSV/JSONL with a path column and the named fields (instead of runs)."
    ),
]
RunOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--run", "-r", help="Run directory (repeatable); default: the runs the model was trained on."
    ),
]
SplitOption = Annotated[
    str,
    typer.Option(
        help="Which segments of the runs: 'heldout' (the model's held-out sources), 'train' or 'all'."
    ),
]
AudioRootOption = Annotated[
    Path | None, typer.Option(help="Folder that relative manifest paths start at (default: the manifest's).")
]
PathColumnOption = Annotated[str, typer.Option(help="The manifest column that names the audio file.")]
UnseenOption = Annotated[
    bool,
    typer.Option(
        help="With --manifest: only clips whose source the model did not train on (source_id, content hash)."
    ),
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")]


def _model_and_clips(model_path, manifest, runs, split, audio_root, path_column, unseen=False):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from train.evaluate import EvaluationInputError, clips_from_manifest, clips_from_runs, training_sources
    from train.export import load_model, read_description

    if split not in ("heldout", "train", "all"):
        raise EvaluationInputError(f"--split must be heldout, train or all, not '{split}'")
    description = read_description(model_path)
    data = description.get("data", {})
    if manifest is not None:
        seen = training_sources(data["runs"], data["holdout_fraction"]) if unseen else None
        clips = clips_from_manifest(manifest, audio_root, path_column, exclude_sources=seen)
    else:
        layers = {"captions": data.get("captions"), "verdicts": data.get("verdicts")}  # the model's
        chosen = [str(r) for r in runs] if runs else data.get("runs", [])
        clips = clips_from_runs(
            chosen,
            split,
            data.get("holdout_fraction", 0.0),
            **({} if runs else layers),
            report=lambda line: stdout.print(line, soft_wrap=True, highlight=False),
        )
    return load_model(model_path), clips


def _write_json(path: Path | None, figures: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(
            json.dumps(
                figures, indent=1, default=lambda v: v.tolist() if isinstance(v, np.ndarray) else str(v)
            )
        )


def _figures_table(title: str, columns: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    metrics = list(next(iter(columns.values())))
    for metric in metrics:
        table.add_row(metric, *(f"{values.get(metric, float('nan')):.3f}" for values in columns.values()))
    return table


@evaluate_app.command()
def retrieval(
    model: ModelArgument,
    run: RunOption = None,
    split: SplitOption = "heldout",
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", "-m", help="CSV/JSONL of (audio path, caption) pairs instead of runs."),
    ] = None,
    caption_column: Annotated[str, typer.Option(help="The manifest column holding the caption.")] = "caption",
    audio_root: AudioRootOption = None,
    path_column: PathColumnOption = "path",
    json_out: JsonOption = None,
) -> None:
    """Text→audio and audio→text retrieval: R@1/5/10, mAP@10 and median rank, next to chance;
    global and fine-grained captions separately (runs) or the manifest's captions."""
    from train.evaluate import field_values
    from train.evaluate import retrieval as run_retrieval

    try:
        loaded, clips = _model_and_clips(model, manifest, run, split, audio_root, path_column)
        if manifest is not None:
            for clip, text in zip(clips, field_values(clips, caption_column), strict=True):
                clip.captions = {"given": str(text)}
        granularities = sorted({g for clip in clips for g in clip.captions})
        figures = {g: run_retrieval(loaded, clips, g) for g in granularities}
    except _user_errors() as error:
        raise _fail(str(error)) from None
    for granularity, result in figures.items():
        n = int(result["clips"]["n"])
        columns = {k: result[k] for k in ("text_to_audio", "audio_to_text", "chance")}
        stdout.print(_figures_table(f"retrieval, {granularity} captions, {n} clips", columns))
    _write_json(json_out, figures)


@evaluate_app.command("zero-shot")
def zero_shot(
    model: ModelArgument,
    label: Annotated[
        str, typer.Option(help="The field holding the true class (e.g. gender, emotion, metadata.gender).")
    ],
    template: Annotated[
        list[str] | None,
        typer.Option(help="Prompt template with {} for the class name; repeatable (averaged)."),
    ] = None,
    class_name: Annotated[
        list[str] | None,
        typer.Option("--class", help="The classes (repeatable); default: those in the data."),
    ] = None,
    manifest: ManifestOption = None,
    run: RunOption = None,
    split: SplitOption = "heldout",
    audio_root: AudioRootOption = None,
    path_column: PathColumnOption = "path",
    unseen: UnseenOption = False,
    png: Annotated[Path | None, typer.Option(help="Write the confusion matrix here as a PNG.")] = None,
    json_out: JsonOption = None,
) -> None:
    """Zero-shot classification by prompts: WA, UA (mean per-class recall) and the confusion matrix."""
    from train.evaluate import zero_shot as run_zero_shot
    from train.metrics import save_confusion_png

    templates = template or ["A {} speaker.", "A speaker in a {} tone."]
    try:
        loaded, clips = _model_and_clips(model, manifest, run, split, audio_root, path_column, unseen)
        result = run_zero_shot(loaded, clips, label, templates, class_name)
    except _user_errors() as error:
        raise _fail(str(error)) from None
    stdout.print(
        f"zero-shot {label}: WA {result['WA']:.3f}  UA {result['UA']:.3f}  "
        f"(chance: WA {result['chance_WA']:.3f}, UA {1 / len(result['classes']):.3f}; {result['n']} clips)"
    )
    confusion = Table(title="rows: true, columns: predicted")
    confusion.add_column("")
    for name in result["classes"]:
        confusion.add_column(name, justify="right")
    for name, row in zip(result["classes"], result["confusion"], strict=True):
        confusion.add_row(name, *map(str, row))
    stdout.print(confusion)
    if png is not None:
        save_confusion_png(result["confusion"], result["classes"], str(png), f"zero-shot {label}")
    _write_json(json_out, result)


@evaluate_app.command()
def rank(
    model: ModelArgument,
    value: Annotated[
        str, typer.Option(help="The numeric field to rank against (e.g. f0_median_hz, pitch_median_hz).")
    ],
    high: Annotated[str, typer.Option(help="Prompt for the high end.")] = "A high-pitched voice.",
    low: Annotated[str, typer.Option(help="Prompt for the low end.")] = "A low-pitched voice.",
    within: Annotated[
        str | None, typer.Option(help="Correlate within each group of this field (e.g. gender).")
    ] = None,
    manifest: ManifestOption = None,
    run: RunOption = None,
    split: SplitOption = "heldout",
    audio_root: AudioRootOption = None,
    path_column: PathColumnOption = "path",
    unseen: UnseenOption = False,
    json_out: JsonOption = None,
) -> None:
    """Spearman and Pearson between sim(audio, HIGH) - sim(audio, LOW) and a measured value."""
    from train.evaluate import prompt_ranking

    try:
        loaded, clips = _model_and_clips(model, manifest, run, split, audio_root, path_column, unseen)
        result = prompt_ranking(loaded, clips, value, high, low, within)
    except _user_errors() as error:
        raise _fail(str(error)) from None
    stdout.print(_figures_table(f"'{high}' vs '{low}' against {value} (chance: 0)", result))
    _write_json(json_out, result)


@evaluate_app.command()
def similarity(
    model: ModelArgument,
    manifest: Annotated[
        Path, typer.Option("--manifest", "-m", help="CSV/JSONL of (audio path, caption, rating).")
    ],
    caption_column: Annotated[str, typer.Option(help="The column holding the caption.")] = "caption",
    rating_column: Annotated[str, typer.Option(help="The column holding the human rating.")] = "rating",
    audio_root: AudioRootOption = None,
    path_column: PathColumnOption = "path",
    json_out: JsonOption = None,
) -> None:
    """Style similarity: the model's (audio, caption) scores against human ratings (Pearson, Spearman)."""
    from train.evaluate import style_similarity

    try:
        loaded, clips = _model_and_clips(model, manifest, None, "all", audio_root, path_column)
        result = style_similarity(loaded, clips, caption_column, rating_column)
    except _user_errors() as error:
        raise _fail(str(error)) from None
    stdout.print(_figures_table("style similarity against ratings", {"model": result}))
    _write_json(json_out, result)


@evaluate_app.command()
def rerank(
    model: ModelArgument,
    manifest: Annotated[
        Path, typer.Option("--manifest", "-m", help="CSV/JSONL of (caption, candidate audio path) rows.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="CSV to write: the manifest's rows with score and rank.")
    ],
    caption_column: Annotated[str, typer.Option(help="The column holding the caption.")] = "caption",
    audio_root: AudioRootOption = None,
    path_column: PathColumnOption = "path",
) -> None:
    """Best-of-N (ParaSpeechCLAP's TTS reward): rank each caption's candidate audios by similarity."""
    from train.evaluate import rerank as run_rerank

    try:
        loaded, clips = _model_and_clips(model, manifest, None, "all", audio_root, path_column)
        rows = run_rerank(loaded, clips, caption_column)
    except _user_errors() as error:
        raise _fail(str(error)) from None
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    best = sum(1 for row in rows if row["rank"] == 1)
    stdout.print(f"scored {len(rows)} candidates for {best} captions → {out}")
