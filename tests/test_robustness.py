"""Nothing lost: bad inputs end in shards or in failures.parquet with a reason, and an interrupted run
(driver SIGKILLed) resumes to the same segments as an uninterrupted one, without duplicates."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipeline.rundir import listed_shards
from tests.conftest import EXAMPLES, REPO, SENTENCES, speak

STYLECAPS = str(REPO / ".venv" / "bin" / "stylecaps")
DEMO_CONFIG = str(REPO / "configs" / "demo.yaml")


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STYLECAPS, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _speech(tmp: Path) -> tuple[np.ndarray, int]:
    wave, rate = sf.read(speak(tmp / "speech.wav", SENTENCES, "-v", "en-us+m3"), dtype="float32")
    return wave, rate


def _long_file(path: Path, speech: np.ndarray, rate: int, minutes: float) -> None:
    """Speech with pauses for `minutes`, written block by block."""
    pause = np.zeros(int(1.5 * rate), dtype=np.float32)
    unit = np.concatenate([speech, pause])
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        for _ in range(int(minutes * 60 * rate / unit.size) + 1):
            out.write(unit)


def make_bad_inputs(folder: Path, tmp: Path) -> dict[str, Path]:
    speech, rate = _speech(tmp)
    folder.mkdir()
    inputs: dict[str, Path] = {}

    def put(name: str, wave: np.ndarray, sample_rate: int, **kwargs) -> None:
        inputs[name] = folder / kwargs.pop("filename", f"{name}.wav")
        sf.write(inputs[name], wave, sample_rate, **kwargs)

    put("ok_flac", speech, rate, filename="ok.flac")
    corrupt = bytearray((folder / "ok.flac").read_bytes())
    corrupt[200:] = np.random.default_rng(0).integers(0, 256, len(corrupt) - 200, dtype=np.uint8).tobytes()
    inputs["corrupt"] = folder / "corrupt.flac"
    inputs["corrupt"].write_bytes(bytes(corrupt))
    inputs["empty"] = folder / "empty.wav"
    inputs["empty"].write_bytes(b"")
    inputs["text"] = folder / "notes.wav"
    inputs["text"].write_text("these are meeting notes, not audio\n" * 20)
    put("silence", np.zeros(10 * 16000, dtype=np.float32), 16000)
    from scipy.signal import resample_poly

    put("rate_8k", resample_poly(speech, 8000, rate).astype(np.float32), 8000)
    stereo48 = resample_poly(speech, 48000, rate).astype(np.float32)
    put("stereo_48k", np.stack([stereo48, 0.5 * stereo48], axis=1), 48000)
    put("float32", speech, rate, subtype="FLOAT")
    with_nan = speech.copy()
    with_nan[len(with_nan) // 2] = np.nan
    put("nan", with_nan, rate, subtype="FLOAT")
    odd = folder / "dir with spaces" / "ünïcødé spéech ✓.wav"
    odd.parent.mkdir()
    sf.write(odd, speech * 0.8, rate)
    inputs["odd_path"] = odd
    _long_file(folder / "thirty_minutes.flac", speech, rate, minutes=30)
    inputs["thirty_minutes"] = folder / "thirty_minutes.flac"
    shutil.copy(folder / "ok.flac", folder / "ok_copy.flac")
    inputs["copy"] = folder / "ok_copy.flac"
    return inputs


@pytest.mark.slow
def test_bad_inputs_end_in_shards_or_failures_and_the_summary_reconciles(tmp_path):
    inputs = make_bad_inputs(tmp_path / "in", tmp_path)
    out = tmp_path / "run"
    # The folder, plus one of its files named a second time.
    result = run_cli("annotate", "--config", DEMO_CONFIG, "--input", str(tmp_path / "in"),
                     "--input", str(inputs["ok_flac"]), "--out", str(out), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # Ray's own console output goes to the run's log
    assert "inputs" in result.stdout and "audio seconds per wall second" in result.stdout

    rows = pq.read_table(out / "sources.parquet").to_pylist()
    ledger = {Path(r["input_path"]).name: r for r in rows if "#repeat" not in r["input_path"]}
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    listed = len(inputs) + 1
    assert len(rows) == listed  # every listing accounted for exactly once
    outcomes = {r["outcome"] for r in rows}
    assert outcomes <= {"segmented", "no_speech", "speech_too_short", "failed"}
    manifest = json.loads((out / "manifest.json").read_text())
    totals = manifest["totals"]
    assert totals["inputs"] == listed == sum(totals["outcomes"].values())
    assert (
        totals["outcomes"].get("failed", 0)
        == sum(1 for r in rows if r["outcome"] == "failed")
        == len({f["input_path"] for f in failures if f["segment_id"] is None})
    )

    def failure_of(name: str) -> dict:
        matches = [f for f in failures if Path(f["input_path"]).name == inputs[name].name]
        assert matches, f"{name} has no failure record"
        return matches[0]

    assert (
        failure_of("empty")["error_type"] == "AudioDecodeError" and "empty" in failure_of("empty")["message"]
    )
    assert failure_of("text")["error_type"] == "AudioDecodeError"
    assert failure_of("nan")["error_type"] == "NonFiniteAudioError" and "NaN" in failure_of("nan")["message"]
    assert (
        failure_of("copy")["error_type"] == "DuplicateSource" and "ok.flac" in failure_of("copy")["message"]
    )
    assert any(f["error_type"] == "DuplicateInput" for f in failures)
    assert all(f["message"] and f["stage"] for f in failures)
    assert ledger["silence.wav"]["outcome"] == "no_speech"
    for name in ("ok_flac", "rate_8k", "stereo_48k", "float32", "odd_path", "thirty_minutes"):
        assert ledger[inputs[name].name]["outcome"] == "segmented", name
    assert ledger["corrupt.flac"]["outcome"] in {
        "segmented",
        "failed",
    }  # decodable noise or an error: never lost
    assert abs(ledger["thirty_minutes.flac"]["duration_s"] - 1800) < 15

    shard = pq.read_table(out / "shards")
    long_rows = [
        r for r in shard.select(["source_path", "duration_s"]).to_pylist() if "thirty" in r["source_path"]
    ]
    assert len(long_rows) > 60 and all(3.0 <= r["duration_s"] <= 30.0 for r in long_rows)
    assert "ünïcødé spéech ✓.wav" in " ".join(shard.column("source_path").to_pylist())
    ids = shard.column("segment_id").to_pylist()
    assert len(ids) == len(set(ids)) == totals["segments"]


def _segment_ids(run: Path) -> list[str]:
    """The committed segment ids in shard order (read through the manifest, as every reader must)."""
    return [i for shard in listed_shards(run) for i in pq.read_table(shard)["segment_id"].to_pylist()]


def _commits(run: Path) -> int:
    try:
        return len(json.loads((run / "manifest.json").read_text())["commits"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def kill_after_two_commits(command: list[str], out: Path) -> None:
    """Run `command` and SIGKILL it, with the Ray processes it started, once two commits are in."""
    driver = subprocess.Popen(command, cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while _commits(out) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert driver.poll() is None, "the run ended before it could be interrupted"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_segments_without_duplicates(demo_run, tmp_path):
    config = tmp_path / "small_shards.yaml"
    config.write_text(Path(DEMO_CONFIG).read_text().replace("rows_per_shard: 20", "rows_per_shard: 3"))
    out = tmp_path / "run"
    command = [STYLECAPS, "annotate", "--config", str(config), "--input", str(EXAMPLES / "manifest.jsonl"),
               "--out", str(out), "--quiet"]  # fmt: skip
    kill_after_two_commits(command, out)
    interrupted = json.loads((out / "manifest.json").read_text())
    assert interrupted["complete"] is False
    assert 0 < len(_segment_ids(out)) < demo_run.totals["segments"]

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already done and skipped" in resumed.stdout

    ids = _segment_ids(out)
    assert len(ids) == len(set(ids))
    assert set(ids) == set(_segment_ids(demo_run.out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["totals"]["inputs"] == 51
    listed = {p.name for p in (out / "shards").iterdir()}
    assert listed == {Path(s["path"]).name for s in manifest["shards"]}  # no leftover of the killed run
    for shard in manifest["shards"]:
        assert hashlib.sha256((out / shard["path"]).read_bytes()).hexdigest() == shard["sha256"]
    ledger = pq.read_table(out / "sources.parquet").column("input_path").to_pylist()
    assert len(ledger) == len(set(ledger)) == 51

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "51 inputs were already done" in again.stdout
    assert json.loads((out / "manifest.json").read_text())["shards"] == manifest["shards"]


def _open_inputs(run: Path) -> int:
    try:
        return json.loads((run / "manifest.json").read_text())["totals"].get("open_inputs", 0)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.mark.slow
def test_a_run_killed_inside_a_long_source_resumes_after_its_last_committed_segment(tmp_path):
    speech, rate = _speech(tmp_path)
    long_file = tmp_path / "ten_minutes.flac"
    _long_file(long_file, speech, rate, minutes=10)
    config = tmp_path / "small_shards.yaml"
    config.write_text(Path(DEMO_CONFIG).read_text().replace("rows_per_shard: 20", "rows_per_shard: 5"))
    uninterrupted = tmp_path / "whole"
    whole = run_cli("annotate", "-c", str(config), "--executor", "local", "-q", "--input", str(long_file),
                    "--out", str(uninterrupted))  # fmt: skip
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "run"
    command = [STYLECAPS, "annotate", "--config", str(config), "--input", str(long_file),
               "--out", str(out), "--quiet"]  # fmt: skip
    kill_after_two_commits(command, out)
    assert _open_inputs(out) == 1  # killed inside the one source, with part of it committed
    [progress] = pq.read_table(out / json.loads((out / "manifest.json").read_text())["commits"][-1]["journal"]
                               ["open"]["path"]).to_pylist()  # fmt: skip
    committed = _segment_ids(out)
    assert progress["segments"] == len(committed) >= 10

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ids = _segment_ids(out)
    assert ids[: len(committed)] == committed  # nothing committed was rewritten
    assert ids == _segment_ids(uninterrupted)  # and nothing is missing or repeated
    [ledger] = pq.read_table(out / "sources.parquet").to_pylist()
    assert ledger["segments"] == len(ids) and ledger["outcome"] == "segmented"
    assert all(entry["rows"] <= 5 for entry in json.loads((out / "manifest.json").read_text())["shards"])
    checked = run_cli("verify-run", str(out))
    assert checked.returncode == 0, checked.stdout
