"""The `stylecaps` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.config import ConfigError, RunConfig, load_config
from pipeline.rundir import MANIFEST, RunDirError
from pipeline.sources import SourceError
from pipeline.stages import StageSetupError
from pipeline.summary import summary_table

app = typer.Typer(
    help="Build verified speaking-style caption corpora (segment → caption → verify → Parquet shards) "
    "on a Ray cluster, and train speech-text encoders from them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
stdout = Console()

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Run config (YAML), e.g. configs/demo.yaml.")
]


def _fail(message: str) -> typer.Exit:
    # soft_wrap: one line whatever the terminal width; escape: brackets in paths are not markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _quiet_ray_data_console() -> None:
    """Ray Data's INFO lines on the console repeat what our progress bar and summary say; its
    session log file keeps them."""
    import ray.data  # noqa: F401 - importing it installs the 'ray.data' logger's handlers

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)
            # We switch Ray's bars off on purpose; its warning about that would only confuse.
            handler.addFilter(lambda record: not record.getMessage().startswith("Progress bars disabled"))


@app.command()
def annotate(
    config: ConfigOption,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="Audio file, folder (recursive), glob, or CSV/JSONL manifest with a "
            "'path' column; repeatable; replaces the config's sources.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<config name>).")
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            help="'ray' (Ray Data, the default) or 'local' (same stages in a plain loop, for debugging)."
        ),
    ] = "ray",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Segment, caption and verify audio into Parquet shards in a run directory.

    Re-running the same command on the same --out resumes: finished inputs are skipped and no
    segment is written twice. Failed inputs and segments go to failures.parquet with their reason.
    """
    from pipeline.runner import annotate as run_annotate

    _quiet_ray_data_console()

    if executor not in ("ray", "local"):
        raise _fail(f"--executor must be 'ray' or 'local', not '{executor}'")
    try:
        run_config = load_config(config)
        out = out or Path("runs") / config.stem
        with Progress(
            TextColumn("[bold]annotating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("inputs"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
            transient=True,
        ) as progress:
            task = progress.add_task("inputs", total=None)
            report = run_annotate(
                run_config,
                out,
                inputs=inputs,
                executor=executor,  # type: ignore[arg-type]
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except (ConfigError, SourceError, RunDirError, StageSetupError) as error:
        raise _fail(str(error)) from None
    stdout.print(
        summary_table(report.totals, report.wall_s, report.audio_s_processed, title=f"stylecaps run {out}")
    )
    if report.inputs_skipped:
        stdout.print(f"resumed: {report.inputs_skipped} inputs were already done and skipped")


@app.command()
def summary(run: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Print the summary table of a run directory from its manifest."""
    manifest_path = run / MANIFEST
    if not manifest_path.exists():
        raise _fail(f"{run} holds no {MANIFEST}")
    manifest = json.loads(manifest_path.read_text())
    state = "complete" if manifest.get("complete") else "incomplete (interrupted or running)"
    stdout.print(summary_table(manifest["totals"], title=f"stylecaps run {run}: {state}"))


@app.command()
def check(
    audio: Annotated[Path, typer.Argument(help="An audio file, measured whole as one segment.")],
    captions: Annotated[
        list[str] | None, typer.Option("--caption", help="A caption to verify; repeatable.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Run config: its measure and verify sections apply.")
    ] = None,
    gender: Annotated[
        str | None, typer.Option(help="The speaker's gender if known (female or male), as in a manifest.")
    ] = None,
    granularity: Annotated[str, typer.Option(help="'fine' or 'global': which length bounds apply.")] = "fine",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per caption per line.")] = False,
) -> None:
    """Measure one file and show each caption's verdict (passed, failed checks, reasons) and the
    measurements behind it, as a run would judge them."""
    from pipeline.check import CheckError, as_json_lines, as_text, check_captions

    if not captions:
        raise _fail("give at least one --caption")
    if gender not in (None, "female", "male"):
        raise _fail(f"--gender must be 'female' or 'male', not '{gender}'")
    if granularity not in ("fine", "global"):
        raise _fail(f"--granularity must be 'fine' or 'global', not '{granularity}'")
    try:
        run_config = load_config(config) if config else RunConfig()
        results = check_captions(audio, captions, run_config, gender, granularity)  # type: ignore[arg-type]
    except (ConfigError, CheckError) as error:
        raise _fail(str(error)) from None
    for line in as_json_lines(results) if as_json else as_text(results):
        typer.echo(line)


@app.command("config")
def show_config(config: ConfigOption) -> None:
    """Validate a config and print it with every default filled in."""
    try:
        run_config = load_config(config)
    except ConfigError as error:
        raise _fail(str(error)) from None
    # Plain text, not rich: the output must parse back as YAML whatever the paths and the width.
    typer.echo(yaml.safe_dump(run_config.model_dump(mode="json"), sort_keys=False), nl=False)
    typer.echo(f"# processing hash: {run_config.processing_hash()}")


if __name__ == "__main__":
    app()
