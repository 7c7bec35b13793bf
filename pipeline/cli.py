"""The `stylecaps` command line."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.config import ConfigError, RunConfig, load_config
from pipeline.errors import StylecapsError, describe_os_error
from pipeline.layers import annotate_layers
from pipeline.rundir import RunDirError, read_manifest
from pipeline.runlog import InvocationLog
from pipeline.summary import summary_table
from train import cli as train_cli

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


def _fail(message: str, code: int = 2, details: str | None = None) -> typer.Exit:
    # soft_wrap: one line whatever the terminal width; escape: brackets in paths are not markup.
    where = f" (details: {details})" if details else ""
    console.print(f"[bold red]error:[/] {escape(message)}{escape(where)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def _quiet_ray_data_console() -> None:
    """Ray Data's INFO lines on the console repeat what our progress bar and summary say; its
    session log file keeps them."""
    import ray.data  # noqa: F401 - importing it installs the 'ray.data' logger's handlers

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)
            # We switch Ray's bars off on purpose; its warning about that would only confuse.
            handler.addFilter(lambda record: not record.getMessage().startswith("Progress bars disabled"))


@contextlib.contextmanager
def _one_line_errors(command: str, resumable: bool) -> Iterator[InvocationLog]:
    """Turn every error into one line on stderr and an exit code (2: usage, 1: runtime, 130: SIGINT);
    the traceback of a runtime error goes to the invocation's log, named on that line."""
    invocation_log = InvocationLog(command)
    invocation_log.capture_stderr()
    console.file = invocation_log.console
    resume = "; what was committed is kept: run the same command again to resume" if resumable else ""
    try:
        yield invocation_log
    except StylecapsError as error:
        details = invocation_log.exception(str(error)) if error.exit_code == 1 else None
        raise _fail(str(error), error.exit_code, details) from None
    except OSError as error:
        details = invocation_log.exception("runtime error")
        raise _fail(describe_os_error(error) + resume, 1, details) from None
    except KeyboardInterrupt:
        raise _fail("interrupted" + resume, 130) from None
    except Exception as error:
        details = invocation_log.exception("unexpected error")
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise _fail(f"unexpected {type(error).__name__}: {first_line}{resume}", 1, details) from None
    finally:
        invocation_log.close()
        console.file = sys.stderr


ExecutorOption = Annotated[
    str,
    typer.Option(
        help="'ray' (Ray Data, the default) or 'local' (same stages in a plain loop, for debugging)."
    ),
]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait", help="If another process is writing the run directory, wait for it instead of stopping."
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
RunArgument = Annotated[Path, typer.Argument(help="A run directory (made by stylecaps annotate).")]


def _progress(verb: str, unit: str, quiet: bool) -> Progress:
    return Progress(
        TextColumn(f"[bold]{verb}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )


InputArguments = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="INPUT",
        help="Inputs given without --input (as many as you like, e.g. from a shell glob).",
        show_default=False,
    ),
]


@app.command()
def annotate(
    config: ConfigOption,
    input_arguments: InputArguments = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="PATH",
            help="Audio file, folder (recursive), glob, or CSV/JSONL manifest with a 'path' column; "
            "repeatable (--input a --input b; more paths may follow the options); replaces the "
            "config's sources.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<config name>).")
    ] = None,
    executor: ExecutorOption = "ray",
    wait: WaitOption = False,
    quiet: QuietOption = False,
) -> None:
    """Segment, caption and verify audio into Parquet shards in a run directory.

    Re-running the same command on the same --out resumes: finished inputs are skipped, a long input
    continues after its last committed segment, and no segment is written twice. Failed inputs and
    segments go to failures.parquet with their reason. One process writes a run directory at a time;
    Ctrl-C commits what is complete and stops.
    """
    from pipeline.runner import annotate as run_annotate

    if executor not in ("ray", "local"):
        raise _fail(f"--executor must be 'ray' or 'local', not '{executor}'")
    given = [*(inputs or []), *(input_arguments or [])]
    with _one_line_errors("annotate", resumable=True) as invocation_log:
        _quiet_ray_data_console()
        run_config = load_config(config)
        out = out or Path("runs") / config.stem
        with _progress("annotating", "inputs", quiet) as progress:
            task = progress.add_task("inputs", total=None)
            report = run_annotate(
                run_config,
                out,
                inputs=given or None,
                executor=executor,  # type: ignore[arg-type]
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
                wait=wait,
                on_wait=lambda holder: console.print(
                    f"waiting: {escape(str(out))} is in use by {escape(holder.describe())}", soft_wrap=True
                ),
                on_open=invocation_log.move_into,
            )
    stdout.print(
        summary_table(report.totals, report.wall_s, report.audio_s_processed, title=f"stylecaps run {out}")
    )
    if report.inputs_skipped:
        stdout.print(f"resumed: {report.inputs_skipped} inputs were already done and skipped")
    caption_set, verdict_version = annotate_layers(run_config)
    stdout.print(
        f"captions in caption set {caption_set.id}, verdicts in verdict version {verdict_version.id} "
        f"(stylecaps layers {out})",
        soft_wrap=True,
        highlight=False,
    )


def _layer_command(
    command: str, run: Path, config: Path, executor: str, wait: bool, quiet: bool, captions: str | None = None
) -> None:
    from pipeline.layer_runs import recaption as run_recaption
    from pipeline.layer_runs import reverify as run_reverify

    if executor not in ("ray", "local"):
        raise _fail(f"--executor must be 'ray' or 'local', not '{executor}'")
    with _one_line_errors(command, resumable=True) as invocation_log:
        _quiet_ray_data_console()
        run_config = load_config(config)
        read_manifest(run)
        invocation_log.move_into(run)
        with _progress(command.removesuffix("e") + "ing", "shards", quiet) as progress:
            task = progress.add_task("shards", total=None)
            options = {
                "executor": executor,
                "on_progress": lambda done, total: progress.update(task, completed=done, total=total),
                "wait": wait,
            }
            if captions is None:
                report = run_recaption(run, run_config, **options)  # type: ignore[arg-type]
            else:
                report = run_reverify(run, run_config, captions, **options)  # type: ignore[arg-type]
    what = "caption set" if report.layer.kind == "captions" else "verdict version"
    written = report.shards - report.shards_before
    stdout.print(
        f"{what} {report.layer.id}: {report.segments} segments in {written} shards "
        f"written ({report.failed} failed, recorded with their error) in {report.wall_s:.1f} s; "
        f"{report.shards_before} shards already had it",
        soft_wrap=True,
    )


@app.command()
def recaption(
    run: RunArgument,
    config: ConfigOption,
    executor: ExecutorOption = "ray",
    wait: WaitOption = False,
    quiet: QuietOption = False,
) -> None:
    """Add a caption set to every segment of a run, with the config's caption section (and its
    ray.stages.caption declaration), reading the audio from the run's shards.

    The set's id is caption.set_id, else <backend>-<hash of the caption section>. Files holding audio
    are never rewritten: the set is new files beside them. Re-running the same command resumes at the
    first shard without the set's part."""
    _layer_command("recaption", run, config, executor, wait, quiet)


@app.command()
def reverify(
    run: RunArgument,
    config: ConfigOption,
    captions: Annotated[str, typer.Option("--captions", help="The caption set to judge (its id).")],
    executor: ExecutorOption = "ray",
    wait: WaitOption = False,
    quiet: QuietOption = False,
) -> None:
    """Add a verdict version for a caption set of a run, with the config's verify section (rules, then
    the LLM checklist agent when verify.backend says).

    The version's id is verify.version_id, else <backend>-<hash of the verify section, the tag bins and
    the set>. Re-running the same command resumes at the first shard without the version's part."""
    _layer_command("reverify", run, config, executor, wait, quiet, captions)


@app.command()
def layers(run: RunArgument) -> None:
    """List a run's caption sets and verdict versions (provenance, shards covered) and which of them
    readers (export, train) use when none is named."""
    from pipeline.layers import CAPTIONS, VERDICTS, LayerError, choose, layers_of

    try:
        manifest = read_manifest(run)
    except RunDirError as error:
        raise _fail(str(error)) from None
    shards = len(manifest.get("shards", []))
    for kind, label in ((CAPTIONS, "caption set"), (VERDICTS, "verdict version")):
        for layer_id, entry in layers_of(manifest, kind).items():
            judges = f", judges {entry['caption_set']}" if kind == VERDICTS else ""
            stdout.print(
                f"{label} {layer_id}: backend {entry['backend']}, model {entry['model']}{judges}, written by "
                f"{entry['written_by']}, {len(entry['parts'])} of {shards} shards",
                soft_wrap=True,
                highlight=False,
            )
    try:
        stdout.print(f"default: {choose(manifest).describe()}", soft_wrap=True, highlight=False)
    except LayerError as error:
        stdout.print(f"default: none ({error})", soft_wrap=True, highlight=False)


export_app = typer.Typer(help="Write a run out in another layout.", no_args_is_help=True)


@export_app.command("parquet")
def export_parquet_command(
    run: RunArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="A new (or empty) folder for the export.")],
    captions: Annotated[
        list[str] | None,
        typer.Option(
            "--captions", help="A caption set to include (repeatable); default: every set of the run."
        ),
    ] = None,
    verdicts: Annotated[
        list[str] | None,
        typer.Option(
            "--verdicts",
            help="The verdict version to join for its set (repeatable, one per set); default: each set's "
            "only version (a set with several needs one named).",
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Write self-contained Parquet shards: one row per segment with its audio and a `captions` list
    joined from the chosen caption sets and verdict versions, each caption naming its set. Loadable with
    datasets.load_dataset("parquet", data_files=...) and trainable with data.runs: [OUT]."""
    from pipeline.export import export_parquet

    with _one_line_errors("export", resumable=False), _progress("exporting", "shards", quiet) as progress:
        task = progress.add_task("shards", total=None)
        report = export_parquet(
            run,
            out,
            captions,
            verdicts,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    stdout.print(f"using {report.selection.describe()}", soft_wrap=True, highlight=False)
    stdout.print(
        f"{out}: {report.shards} shards, {report.rows} segments, {report.captions} captions", soft_wrap=True
    )


@app.command()
def summary(run: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Print the summary table of a run directory from its manifest."""
    try:
        manifest = read_manifest(run)
    except RunDirError as error:
        raise _fail(str(error)) from None
    state = "complete" if manifest.get("complete") else "incomplete (interrupted or running)"
    stdout.print(summary_table(manifest["totals"], title=f"stylecaps run {run}: {state}"))


@app.command("verify-run")
def verify_run_command(run: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Check a run directory before training on it: recompute every listed file's sha256, size and
    row count, find files the manifest does not list, and reconcile the ledger with the shards.

    Exits 0 when everything holds, 1 with one line per problem otherwise."""
    from pipeline.verify_run import verify_run

    with _one_line_errors("verify-run", resumable=False):
        check = verify_run(run)
    for note in check.notes:
        stdout.print(f"note: {escape(note)}", soft_wrap=True)
    for problem in check.problems:
        stdout.print(f"problem: {escape(problem)}", soft_wrap=True)
    counts = (
        f"{check.files_checked} files ({check.bytes_checked / 1e6:,.1f} MB), {check.inputs} inputs, "
        f"{check.shard_rows} shard rows"
    )
    if check.problems:
        stdout.print(f"{run}: {len(check.problems)} problems in {counts}", soft_wrap=True)
        raise typer.Exit(code=1)
    stdout.print(f"{run}: ok ({counts} checked)", soft_wrap=True)


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


# Training and evaluation live in train/; registered here so `stylecaps` is one command.
app.command()(train_cli.train)
app.add_typer(train_cli.evaluate_app, name="evaluate")
app.add_typer(export_app, name="export")

if __name__ == "__main__":
    app()
