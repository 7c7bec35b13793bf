"""Errors a user can cause end in one line on stderr with what to do and the right exit code
(2: usage, 1: runtime, 130: interrupted); runtime tracebacks go to a log file named on that line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import EXAMPLES, REPO

STYLECAPS = str(REPO / ".venv" / "bin" / "stylecaps")
DEMO_CONFIG = str(REPO / "configs" / "demo.yaml")
FEW_CLIPS = sorted(str(p) for p in (EXAMPLES / "corpus").glob("espeak_en-us_m3_*.flac"))[:3]


def run_cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STYLECAPS, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs
    )


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A small file system the test mounts (root only), for read-only and full-disk cases."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_out_that_is_a_file_is_a_usage_error(tmp_path):
    out = tmp_path / "run"
    out.write_text("not a folder")
    result = run_cli("annotate", "-c", DEMO_CONFIG, "--input", FEW_CLIPS[0], "--out", str(out))
    assert result.returncode == 2
    assert "is a file, not a run directory" in one_error_line(result.stderr)


def test_out_on_a_read_only_disk_is_a_usage_error(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        result = run_cli("annotate", "-c", DEMO_CONFIG, "--input", FEW_CLIPS[0], "--out", str(disk / "run"))
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "cannot create the run directory" in line and "read-only" in line


def test_an_unknown_config_key_is_a_usage_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("segment:\n  min_seconds: 3\n")
    result = run_cli("annotate", "-c", str(config), "--input", FEW_CLIPS[0], "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "unknown key 'segment.min_seconds'" in one_error_line(result.stderr)


def test_a_run_in_use_refuses_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    code = "from pipeline.lock import RunLock; import time\n" + (
        f"lock = RunLock({str(out)!r}, 'stylecaps annotate (other terminal)').acquire(); "
        "print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([str(REPO / ".venv/bin/python"), "-c", code], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        result = run_cli("annotate", "-c", DEMO_CONFIG, "--input", FEW_CLIPS[0], "--out", str(out))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"is in use by pid {holder.pid}" in line and "other terminal" in line and "--wait" in line


def test_inputs_may_follow_the_options_and_one_input_option(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "annotate", "-c", DEMO_CONFIG, "--executor", "local", "-q", "--out", str(out), "--input", *FEW_CLIPS
    )
    assert result.returncode == 0, result.stderr
    ledger = pq.read_table(out / "sources.parquet").column("input_path").to_pylist()
    assert sorted(ledger) == sorted(str(Path(p).resolve()) for p in FEW_CLIPS)
    assert list((out / "logs").glob("annotate-*.log"))


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_space(tmp_path):
    with tmpfs(tmp_path / "small", "size=3m") as disk:
        out = disk / "run"
        command = ["annotate", "-c", DEMO_CONFIG, "--executor", "local", "-q", "--out", str(out),
                   "--input", str(EXAMPLES / "manifest.jsonl")]  # fmt: skip
        full = run_cli(*command)
        assert full.returncode == 1, full.stderr
        line = one_error_line(full.stderr)
        assert "no space left on the device" in line and "run the same command again to resume" in line
        log = Path(re.search(r"\(details: (\S+)\)", line).group(1))
        assert "Traceback" in log.read_text()
        committed = json.loads((out / "manifest.json").read_text())["totals"]["inputs"]
        assert 0 < committed < 51
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = run_cli(*command)
        assert resumed.returncode == 0, resumed.stderr
        assert f"{committed} inputs were already done" in resumed.stdout
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["complete"] is True and manifest["totals"]["inputs"] == 51
        checked = run_cli("verify-run", str(out))
        assert checked.returncode == 0, checked.stdout


@pytest.mark.slow
def test_sigint_commits_what_is_complete_says_how_to_resume_and_the_rerun_finishes(demo_run, tmp_path):
    config = tmp_path / "small_shards.yaml"
    config.write_text(Path(DEMO_CONFIG).read_text().replace("rows_per_shard: 20", "rows_per_shard: 4"))
    out = tmp_path / "run"
    command = [STYLECAPS, "annotate", "-c", str(config), "--input", str(EXAMPLES / "manifest.jsonl"),
               "--out", str(out), "-q"]  # fmt: skip
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _committed(out) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert driver.poll() is None, "the run ended before it could be interrupted"
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            driver.kill()
    assert driver.returncode == 130
    line = one_error_line(stderr)
    assert "interrupted" in line and "run the same command again to resume" in line
    assert not (out / "writer.lock").exists()
    interrupted = json.loads((out / "manifest.json").read_text())
    assert interrupted["complete"] is False

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    ids = pq.read_table(out / "shards", columns=["segment_id"]).column("segment_id").to_pylist()
    expected = pq.read_table(demo_run.out / "shards", columns=["segment_id"]).column("segment_id").to_pylist()
    assert sorted(ids) == sorted(expected)


def _committed(out: Path) -> bool:
    try:
        return bool(json.loads((out / "manifest.json").read_text())["commits"])
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def test_verify_run_of_a_folder_that_is_not_a_run_is_a_usage_error(tmp_path):
    result = run_cli("verify-run", str(tmp_path))
    assert result.returncode == 2
    assert "holds no manifest.json" in one_error_line(result.stderr)


def test_environment_sees_no_stray_log_for_usage_errors(tmp_path):
    before = set(Path("/tmp").glob("stylecaps-*.log"))
    run_cli("annotate", "-c", str(tmp_path / "missing.yaml"), "--input", FEW_CLIPS[0])
    assert set(Path("/tmp").glob("stylecaps-*.log")) == before
    assert os.path.exists(FEW_CLIPS[0])
