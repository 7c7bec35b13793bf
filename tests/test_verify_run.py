"""`stylecaps verify-run`: a healthy run passes; each kind of damage is named."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contract import SOURCES_SCHEMA
from pipeline.verify_run import verify_run


@pytest.fixture
def run_copy(demo_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(demo_run.out, copy)
    return copy


def invoke(run):
    result = CliRunner().invoke(app, ["verify-run", str(run)], env={"COLUMNS": "300", "NO_COLOR": "1"})
    return result.exit_code, result.stdout


def test_a_healthy_run_passes_with_every_file_checked(run_copy):
    code, out = invoke(run_copy)
    assert code == 0, out
    manifest = json.loads((run_copy / "manifest.json").read_text())
    # each shard with its caption set and verdict version parts, 4 journals a commit, 3 whole-run tables
    listed = 3 * len(manifest["shards"]) + 4 * len(manifest["commits"]) + 3
    assert f"ok ({listed} files" in out and "51 inputs, 51 shard rows" in out


def test_a_flipped_byte_in_a_shard_is_caught(run_copy):
    shard = run_copy / "shards" / "part-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    code, out = invoke(run_copy)
    assert code == 1
    assert "problem: shards/part-00001.parquet: sha256 differs from the manifest's" in out
    assert "1 problems" in out


def test_an_unlisted_shard_is_a_problem(run_copy):
    shutil.copy(run_copy / "shards" / "part-00000.parquet", run_copy / "shards" / "part-00099.parquet")
    check = verify_run(run_copy)
    assert check.problems == [
        "shards/part-00099.parquet: not listed in the manifest (left by an interrupted commit; "
        "the next annotate, recaption or reverify on this run removes it)"
    ]


def test_a_missing_shard_and_totals_that_disagree_with_the_ledger_are_problems(run_copy):
    (run_copy / "shards" / "part-00002.parquet").unlink()
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["totals"]["inputs"] += 1
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_run(run_copy).problems
    assert "shards/part-00002.parquet: listed as a shard but missing" in problems
    assert "inputs: the manifest's totals say 52, the ledger holds 51" in problems
    assert len(problems) == 2  # row counts are not reconciled against a shard that is gone


def rewrite_first_source(run: Path, **fields: int) -> None:
    """Change the first ledger row and rewrite its journal with a matching checksum, as a buggy writer
    would: only reconciliation can tell."""
    journal = run / "journal" / "00000.sources.parquet"
    rows = pq.read_table(journal).to_pylist()
    rows[0] |= fields
    pq.write_table(pa.Table.from_pylist(rows, schema=SOURCES_SCHEMA), journal)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["commits"][0]["journal"]["sources"] |= {
        "sha256": hashlib.sha256(journal.read_bytes()).hexdigest(),
        "bytes": journal.stat().st_size,
    }
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_a_ledger_that_gives_a_source_more_segments_than_the_shards_hold_is_a_problem(run_copy):
    rewrite_first_source(run_copy, segments=2)
    [problem] = verify_run(run_copy).problems
    assert problem.startswith("1 sources have other shard row counts than the ledger gives them, e.g. ")
    assert problem.endswith(": 1 rows, ledger 2")


def test_a_ledger_that_counts_dropped_segments_the_journals_lack_is_a_problem(run_copy):
    rewrite_first_source(run_copy, dropped_segments=1)
    assert verify_run(run_copy).problems == ["the ledger counts 1 dropped segments, the dropped journals 0"]
