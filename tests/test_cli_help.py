"""The command line's help: every command documents its key options.

`stylecaps --help` runs as the installed console script; the subcommands run in-process (each real
subprocess pays a multi-second import of the audio stack)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import REPO

ENV = {"COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}


def flat(text: str) -> str:
    """Help text without rich's box drawing and with runs of spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env=ENV)
    return result.exit_code, flat(result.stdout), result.stderr


def test_console_script_help_lists_every_command():
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "stylecaps"), "--help"],
        env={**os.environ, **ENV, "RAY_AUTH_MODE": "disabled"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    text = flat(proc.stdout)
    assert "Usage: stylecaps" in text
    for command in ("annotate", "recaption", "reverify", "layers", "export", "summary", "config", "check"):
        assert re.search(rf"\b{command}\b", text), command
    assert "Segment, caption and verify audio into Parquet shards" in text
    assert "Traceback" not in proc.stderr


def test_annotate_help_documents_config_input_out_and_resuming():
    code, text, _ = invoke("annotate", "--help")
    assert code == 0
    assert "annotate [OPTIONS]" in text
    for option in ("--config", "-c", "--input", "-i", "--out", "-o", "--executor", "--quiet"):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), option
    assert "resumes" in text
    assert "failures.parquet" in text
    assert "repeatable" in text  # --input may be given several times


def test_layer_commands_document_their_options_and_what_they_never_do():
    code, text, _ = invoke("recaption", "--help")
    assert code == 0 and "--config" in text and "never rewritten" in text and "resumes" in text
    code, text, _ = invoke("reverify", "--help")
    assert code == 0 and "--captions" in text and "resumes" in text
    code, text, _ = invoke("export", "parquet", "--help")
    assert code == 0
    for option in ("--out", "--captions", "--verdicts"):
        assert option in text
    assert "default: every set of the run" in text and "only version" in text


def test_summary_help_documents_the_run_directory_argument():
    code, text, _ = invoke("summary", "--help")
    assert code == 0
    assert re.search(r"summary \[OPTIONS\] [{<]?run[}>]?", text, re.IGNORECASE)
    assert "A run directory." in text and "[required]" in text
    assert "summary table" in text


def test_config_help_documents_the_config_option():
    code, text, _ = invoke("config", "--help")
    assert code == 0
    assert re.search(r"(?<![\w-])--config(?![\w-])", text)
    assert "Validate a config and print it with every default filled in." in text
    assert "configs/demo.yaml" in text


def test_check_help_documents_captions_config_gender_and_json():
    code, text, _ = invoke("check", "--help")
    assert code == 0
    for option in ("--caption", "--config", "--gender", "--granularity", "--json"):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), option
    assert "repeatable" in text and "as a run would judge them" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["annotate"], "Missing option '--config'"),
        (["config"], "Missing option '--config'"),
        (["summary"], "Missing argument 'run'"),
        (["annotate", "--config", "x.yaml", "--bogus"], "No such option: --bogus"),
    ],
)
def test_usage_errors_exit_2_with_a_message(args, message):
    code, _, err = invoke(*args)
    assert code == 2
    assert message.lower() in flat(err).lower()


def test_summary_of_a_folder_without_manifest_exits_2(tmp_path):
    code, _, err = invoke("summary", str(tmp_path))
    assert code == 2
    assert "holds no manifest.json" in flat(err)
