"""Two `stylecaps annotate` processes on one run directory (two terminals, an overlapping cron job):
the second refuses at once naming the first, or with --wait runs after it; nothing committed by one is
overwritten or unlisted by the other."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import EXAMPLES, REPO

STYLECAPS = str(REPO / ".venv" / "bin" / "stylecaps")
DEMO_CONFIG = str(REPO / "configs" / "demo.yaml")


@pytest.fixture
def halves(tmp_path) -> tuple[Path, Path]:
    """The example manifest split in two disjoint manifests."""
    lines = (EXAMPLES / "manifest.jsonl").read_text().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    for path, part in ((first, lines[:25]), (second, lines[25:])):
        path.write_text("".join(line.replace('"path": "', f'"path": "{EXAMPLES}/') for line in part))
    return first, second


def start(manifest: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    command = [STYLECAPS, "annotate", "-c", DEMO_CONFIG, "--executor", "local", "-q",
               "--input", str(manifest), "--out", str(out), *extra]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lock(out: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not (out / "writer.lock").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.05)


def ledger_inputs(out: Path) -> set[str]:
    return set(pq.read_table(out / "sources.parquet").column("input_path").to_pylist())


def shard_entries(out: Path) -> list[dict]:
    return json.loads((out / "manifest.json").read_text())["shards"]


def verified(out: Path) -> None:
    check = subprocess.run([STYLECAPS, "verify-run", str(out)], capture_output=True, text=True, cwd=REPO)
    assert check.returncode == 0, check.stdout


@pytest.mark.slow
def test_a_second_run_with_other_inputs_refuses_at_once_then_waits_and_adds_its_own(halves, tmp_path):
    first, second = halves
    out = tmp_path / "run"
    a = start(first, out)
    wait_for_lock(out, a)
    refused = start(second, out)
    waiting = start(second, out, "--wait")
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 1
    assert f"is in use by pid {a.pid} on " in stderr and "--wait" in stderr
    assert a.poll() is None  # refused while the first one still ran

    assert a.wait(timeout=600) == 0
    after_a = shard_entries(out)
    bytes_after_a = {entry["path"]: (out / entry["path"]).read_bytes() for entry in after_a}
    _, stderr = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, stderr
    assert f"waiting: {out} is in use by pid {a.pid}" in " ".join(stderr.split())

    final = shard_entries(out)
    assert final[: len(after_a)] == after_a  # the first run's shards stay listed, with the same checksums
    assert all((out / path).read_bytes() == data for path, data in bytes_after_a.items())
    assert len(ledger_inputs(out)) == 51
    assert json.loads((out / "manifest.json").read_text())["totals"]["segments"] == 51
    verified(out)


@pytest.mark.slow
def test_a_second_run_with_the_same_inputs_refuses_or_with_wait_finds_everything_done(halves, tmp_path):
    first, _ = halves
    out = tmp_path / "run"
    a = start(first, out)
    wait_for_lock(out, a)
    refused = start(first, out)
    waiting = start(first, out, "--wait")
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 1 and "is in use by pid" in stderr and "Traceback" not in stderr
    assert a.wait(timeout=600) == 0
    before = shard_entries(out)
    stdout, stderr = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, stderr
    assert "25 inputs were already done and skipped" in stdout
    assert shard_entries(out) == before
    verified(out)
