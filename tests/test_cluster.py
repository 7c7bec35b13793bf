"""`stylecaps annotate` against a Ray cluster started apart from it (`ray start --head`), joined through
`ray.address` in the config and through RAY_ADDRESS: the run completes and writes the same rows as the
plain loop."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.layers import read_with_captions
from pipeline.runner import annotate
from tests.conftest import EXAMPLES, REPO

BIN = REPO / ".venv" / "bin"
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
COLUMNS = ["segment_id", "source_id", "start_s", "end_s", "audio", "tags"]  # and the joined captions


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sessions(temp_dir: Path) -> Iterator[Path]:
    return (path for path in temp_dir.glob("session_*") if path.is_dir() and not path.is_symlink())


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, Path]]:
    """A head node of its own (2 CPUs), as a user starts one; yields its address and temp dir.

    `ray stop` is not used to end it: it kills every Ray process of the machine by name, other users'
    clusters included. `ray start --block` stays in the foreground and stops its own processes on
    SIGTERM; the process group it leads is killed after it, in case one outlived it."""
    port = _free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    command = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2",
               f"--temp-dir={temp_dir}",
               "--disable-usage-stats", "--include-dashboard=false", "--block"]  # fmt: skip
    head = subprocess.Popen(
        command,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    try:
        deadline = time.monotonic() + 120
        while not any(s.joinpath("logs", "raylet.out").exists() for s in _sessions(temp_dir)):
            assert head.poll() is None, f"ray start exited with {head.returncode}"
            assert time.monotonic() < deadline, "the head node did not start in 120 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        head.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Six example clips, as a manifest with absolute paths."""
    manifest = tmp_path_factory.mktemp("inputs") / "six.jsonl"
    lines = (EXAMPLES / "manifest.jsonl").read_text().splitlines()[:6]
    records = [{**json.loads(line), "path": str(EXAMPLES / json.loads(line)["path"])} for line in lines]
    manifest.write_text("".join(json.dumps(record) + "\n" for record in records))
    return manifest


@pytest.fixture(scope="module")
def local_rows(inputs, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("local") / "run"
    annotate(load_config(DEMO_CONFIG), out, inputs=[str(inputs)], executor="local")
    return _rows(out)


def _rows(run: Path) -> list[dict]:
    return read_with_captions(run, columns=COLUMNS).to_pylist()


def _drivers(temp_dir: Path) -> set[str]:
    """The driver processes the cluster has seen (each leaves its core-driver log in the session)."""
    return {log.name for session in _sessions(temp_dir) for log in session.glob("logs/python-core-driver-*")}


def _annotate_cli(config: Path, inputs: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(BIN / "stylecaps"), "annotate", "--config", str(config), "--input", str(inputs),
               "--out", str(out), "--quiet"]  # fmt: skip
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("joined_by", ["config", "environment"])
def test_annotate_joins_a_running_cluster_and_writes_what_a_local_run_writes(
    cluster, inputs, local_rows, tmp_path, joined_by
):
    address, temp_dir = cluster
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if joined_by == "config":
        data["ray"] = {"address": address}
    else:
        data["ray"] = {}  # no address: RAY_ADDRESS names the cluster
        env["RAY_ADDRESS"] = address
    config = tmp_path / "joined.yaml"
    config.write_text(yaml.safe_dump(data))
    drivers_before = _drivers(temp_dir)

    result = _annotate_cli(config, inputs, tmp_path / "run", env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_drivers(temp_dir) - drivers_before) == 1  # the run was a driver of that cluster
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["totals"]["inputs"] == 6 and manifest["totals"]["outcomes"] == {"segmented": 6}
    assert _rows(tmp_path / "run") == local_rows
    assert len(local_rows) >= 6
