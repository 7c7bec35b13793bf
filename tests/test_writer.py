"""The shard writer and run directory, fed synthetic stream rows: per-segment commits, shard sizes,
resuming inside a long source, replays, duplicates, hidden temporaries and leftovers."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotate.audio import encode_flac
from annotate.base import dropped_row
from pipeline.config import RunConfig, WriteConfig
from pipeline.contract import stream_table
from pipeline.layers import annotate_layers
from pipeline.rundir import RunDirectory, RunDirError, listed_shards
from pipeline.writer import ShardWriter
from tests.conftest import default_contract

FLAC = encode_flac(np.zeros(1600, dtype=np.float32))
CONTRACT = default_contract()
LAYERS = annotate_layers(RunConfig())


def stream(rows: list[dict]) -> pa.Table:
    return stream_table(rows, CONTRACT.stream_schema)


def segment(source: str, index: int, status: str = "ok", source_id: str | None = None) -> dict:
    sid = source_id or f"id-{source}"
    row = {
        "input_path": f"/in/{source}.wav",
        "source_path": f"{source}.wav",
        "source_id": sid,
        "status": status,
        "segment_id": f"{sid}_{index:09d}",
        "start_s": float(index),
        "end_s": index + 0.9,
        "duration_s": 0.9,
        "audio": {"bytes": FLAC, "path": "x.flac"} if status == "ok" else None,
        "captions": [],
    }
    if status == "failed":
        row |= {"error_stage": "caption", "error_type": "ValueError", "error_message": "bad"}
    return row


def end(source: str, outcome: str = "segmented", source_id: str | None = None) -> dict:
    return {
        "input_path": f"/in/{source}.wav",
        "source_path": f"{source}.wav",
        "source_id": source_id or f"id-{source}",
        "status": "end",
        "outcome": outcome,
        "source_duration_s": 60.0,
        "dropped_speech_s": 0.0,
    }


def open_run(root, rows_per_shard: int = 10, row_group_rows: int = 4) -> tuple[RunDirectory, ShardWriter]:
    run = RunDirectory.open(root, "hash", {"config": 1}, CONTRACT, layers=LAYERS)
    return run, ShardWriter(run, WriteConfig(rows_per_shard=rows_per_shard, row_group_rows=row_group_rows))


def shard_ids(root) -> list[str]:
    return [i for path in listed_shards(root) for i in pq.read_table(path)["segment_id"].to_pylist()]


def test_a_long_source_is_committed_in_parts_of_rows_per_shard(tmp_path):
    run, writer = open_run(tmp_path)
    rows = [segment("long", i) for i in range(25)]
    for start in range(0, 25, 7):  # batches that do not align with shards
        writer.add(stream(rows[start : start + 7]))
    assert [c.shard["rows"] for c in run.commits] == [10, 10]  # committed before the source ended
    assert run.open_sources().to_pylist()[0]["last_start_s"] == 19.0
    writer.add(stream([end("long")]))
    writer.close(fed={"/in/long.wav"})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [10, 10, 5]
    assert manifest["complete"] is True and manifest["totals"]["segments"] == 25
    assert shard_ids(tmp_path) == [f"id-long_{i:09d}" for i in range(25)]
    first = pq.ParquetFile(listed_shards(tmp_path)[0])
    assert [first.metadata.row_group(i).num_rows for i in range(first.num_row_groups)] == [4, 4, 2]
    [ledger] = pq.read_table(tmp_path / "sources.parquet").to_pylist()
    assert ledger["outcome"] == "segmented" and ledger["segments"] == 25


def test_a_run_killed_inside_a_long_source_resumes_after_its_last_committed_segment(tmp_path):
    run, writer = open_run(tmp_path)
    writer.add(stream([segment("long", i) for i in range(13)] + [segment("long", 13, "failed")]))
    assert len(run.commits) == 1  # 10 rows committed, 3 ok + 1 failed still pending: then the kill

    run, writer = open_run(tmp_path)  # the next invocation
    assert writer.resume_after_s("/in/long.wav") == 9.0
    assert writer.done_inputs == set()
    replay = [segment("long", i) for i in range(13)] + [segment("long", 13, "failed")]  # all again
    writer.add(stream([*replay, *[segment("long", i) for i in range(14, 18)], end("long")]))
    writer.close(fed={"/in/long.wav"})
    assert shard_ids(tmp_path) == [f"id-long_{i:09d}" for i in range(18) if i != 13]
    [ledger] = pq.read_table(tmp_path / "sources.parquet").to_pylist()
    assert (ledger["segments"], ledger["failed_segments"]) == (17, 1)
    assert len(pq.read_table(tmp_path / "failures.parquet")) == 1


def test_rows_replayed_within_a_run_are_written_once(tmp_path):
    _, writer = open_run(tmp_path)
    rows = [segment("a", i) for i in range(6)]
    writer.add(stream(rows[:4]))
    writer.add(stream(rows))  # a retried task starts the source again
    writer.add(stream([end("a")]))
    writer.close(fed={"/in/a.wav"})
    assert shard_ids(tmp_path) == [f"id-a_{i:09d}" for i in range(6)]


def test_a_second_input_with_the_same_content_is_a_duplicate_source_and_writes_nothing(tmp_path):
    _, writer = open_run(tmp_path)
    writer.add(stream([segment("a", 0, source_id="same"), end("a", source_id="same")]))
    writer.add(stream([segment("b", 0, source_id="same"), end("b", source_id="same")]))
    writer.close(fed={"/in/a.wav", "/in/b.wav"})
    assert shard_ids(tmp_path) == ["same_000000000"]
    ledger = {r["source_path"]: r for r in pq.read_table(tmp_path / "sources.parquet").to_pylist()}
    assert ledger["b.wav"]["outcome"] == "failed" and ledger["b.wav"]["segments"] == 0
    [failure] = pq.read_table(tmp_path / "failures.parquet").to_pylist()
    assert failure["error_type"] == "DuplicateSource" and "/in/a.wav" in failure["message"]


def test_inputs_without_segments_are_committed_every_rows_per_shard_inputs(tmp_path):
    run, writer = open_run(tmp_path, rows_per_shard=3)
    writer.add(stream([end(f"silent{i}", "no_speech") for i in range(7)]))
    assert [len(pq.read_table(tmp_path / c.journal["sources"]["path"])) for c in run.commits] == [3, 3]
    assert all(c.shard is None for c in run.commits)
    writer.close(fed={f"/in/silent{i}.wav" for i in range(7)})
    assert run.totals()["outcomes"] == {"no_speech": 7}


def test_a_source_without_its_end_row_is_an_error_at_close(tmp_path):
    _, writer = open_run(tmp_path)
    writer.add(stream([segment("a", 0)]))
    with pytest.raises(RuntimeError, match="1 inputs ended without their end row"):
        writer.close(fed={"/in/a.wav"})


def test_an_open_shard_is_a_hidden_temporary_that_folder_readers_skip_and_reopening_removes(tmp_path):
    run, writer = open_run(tmp_path, rows_per_shard=100, row_group_rows=2)
    writer.add(stream([segment("a", i) for i in range(5)]))  # two row groups on disk, no commit
    temporaries = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert temporaries == [".part-00000.parquet.tmp"]
    assert pq.read_table(tmp_path / "shards").num_rows == 0  # a folder read sees no uncommitted row
    (tmp_path / "shards" / "part-00007.parquet").write_bytes(b"unlisted")  # a commit killed mid-way
    run, _ = open_run(tmp_path)
    assert list((tmp_path / "shards").iterdir()) == []
    assert run.listed_files() == set()


def test_a_failed_commit_removes_its_temporary_shard(tmp_path, monkeypatch):
    run, writer = open_run(tmp_path, rows_per_shard=3)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run, "_write_manifest", full_disk)
    with pytest.raises(OSError):
        writer.add(stream([segment("a", i) for i in range(3)]))
    assert list((tmp_path / "shards").iterdir()) == []
    assert list((tmp_path / "journal").iterdir()) == []
    assert not (tmp_path / "manifest.json").exists() and run.commits == []


def test_a_folder_with_foreign_files_is_not_made_a_run(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(RunDirError, match=r"holds no manifest\.json .*holiday\.jpg"):
        RunDirectory.open(tmp_path, "hash", {}, CONTRACT, layers=LAYERS)


def test_another_processing_config_is_refused(tmp_path):
    _, writer = open_run(tmp_path)
    writer.close(fed=set())
    with pytest.raises(RunDirError, match="another processing config"):
        RunDirectory.open(tmp_path, "other-hash", {}, CONTRACT, layers=LAYERS)


def test_the_manifest_totals_include_the_commit_that_wrote_them(tmp_path):
    _, writer = open_run(tmp_path, rows_per_shard=3)
    writer.add(stream([segment("a", 0), end("a"), segment("b", 0), end("b"), segment("c", 0)]))
    totals = json.loads((tmp_path / "manifest.json").read_text())["totals"]
    assert (totals["inputs"], totals["segments"], totals["open_inputs"], totals["rows"]) == (2, 3, 1, 3)


def dropped(source: str, index: int, reason: str, score: float | None = None) -> dict:
    return dropped_row(segment(source, index), "speaker_consistency", reason, score)


def test_dropped_segments_are_journaled_per_source_with_their_reasons_not_written_to_shards(tmp_path):
    run, writer = open_run(tmp_path)
    rows = [
        segment("a", 0),
        dropped("a", 1, "speaker_inconsistent", 0.41),
        segment("a", 2),
        dropped("a", 3, "overlap"),
    ]
    writer.add(stream([*rows, end("a"), dropped("b", 0, "too_short"), segment("b", 1), end("b")]))
    writer.close(fed={"/in/a.wav", "/in/b.wav"})
    assert shard_ids(tmp_path) == ["id-a_000000000", "id-a_000000002", "id-b_000000001"]
    journal = pq.read_table(tmp_path / "dropped.parquet").to_pylist()
    assert [(r["segment_id"], r["stage"], r["reason"], r["score"]) for r in journal] == [
        ("id-a_000000001", "speaker_consistency", "speaker_inconsistent", 0.41),
        ("id-a_000000003", "speaker_consistency", "overlap", None),
        ("id-b_000000000", "speaker_consistency", "too_short", None),
    ]
    assert journal[0]["start_s"] == 1.0 and journal[0]["end_s"] == 1.9
    ledger = {r["source_path"]: r for r in pq.read_table(tmp_path / "sources.parquet").to_pylist()}
    assert [
        (ledger[s]["outcome"], ledger[s]["segments"], ledger[s]["dropped_segments"])
        for s in ("a.wav", "b.wav")
    ] == [
        ("segmented", 2, 2),
        ("segmented", 1, 1),
    ]
    totals = run.totals()
    assert totals["dropped"] == 3 and totals["segments"] == 3
    assert totals["dropped_by_reason"] == {"speaker_inconsistent": 1, "overlap": 1, "too_short": 1}


def test_a_source_whose_every_segment_is_dropped_completes_as_all_dropped(tmp_path):
    run, writer = open_run(tmp_path)
    # The segmenter cut three segments; a later stage dropped them all. The end row alone closes the
    # source: nothing waits for the three segments it started with.
    writer.add(stream([dropped("a", i, "speaker_inconsistent", 0.3) for i in range(3)] + [end("a")]))
    writer.close(fed={"/in/a.wav"})
    [ledger] = pq.read_table(tmp_path / "sources.parquet").to_pylist()
    assert (ledger["outcome"], ledger["segments"], ledger["dropped_segments"]) == ("all_dropped", 0, 3)
    assert run.totals()["outcomes"] == {"all_dropped": 1} and listed_shards(tmp_path) == []


def test_dropped_segments_of_a_resumed_source_are_counted_once(tmp_path):
    run, writer = open_run(tmp_path, rows_per_shard=3)
    first = [
        segment("a", 0),
        dropped("a", 1, "overlap"),
        segment("a", 2),
        segment("a", 3),
        dropped("a", 4, "overlap"),
    ]
    writer.add(stream(first))
    assert len(run.commits) == 1  # committed at segment 3; the drop of segment 4 is lost with the kill

    run, writer = open_run(tmp_path, rows_per_shard=3)
    replay = [*first, segment("a", 5), end("a")]
    writer.add(stream(replay))
    writer.close(fed={"/in/a.wav"})
    [ledger] = pq.read_table(tmp_path / "sources.parquet").to_pylist()
    assert (ledger["segments"], ledger["dropped_segments"]) == (4, 2)
    assert [r["segment_id"] for r in pq.read_table(tmp_path / "dropped.parquet").to_pylist()] == [
        "id-a_000000001",
        "id-a_000000004",
    ]
    assert run.totals()["dropped"] == 2


def test_the_summary_counts_dropped_segments_per_reason(tmp_path):
    from rich.console import Console

    from pipeline.summary import summary_table

    _, writer = open_run(tmp_path)
    writer.add(
        stream([dropped("a", 0, "too_short"), dropped("a", 1, "too_short"), segment("a", 2), end("a")])
    )
    writer.close(fed={"/in/a.wav"})
    console = Console(width=100, record=True)
    console.print(summary_table(json.loads((tmp_path / "manifest.json").read_text())["totals"]))
    text = console.export_text()
    assert re.search(r"segments dropped\s+│\s+2", text) and re.search(r"too_short\s+│\s+2", text), text
