"""Contract 3.0: a stage-free core plus the columns each stage declares (captions go beside the shards).
Schema assembly and its conflicts, the metadata every shard carries (read back with pyarrow and HF
datasets), and runs that cannot be extended by another contract or another column set."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotate.audio import SAMPLE_RATE, encode_flac
from annotate.base import end_row
from annotate.caption_stage import CaptionStage
from annotate.caption_types import CAPTIONS_COLUMN
from annotate.captioner import AcousticCaptioner
from annotate.measure import MEASUREMENT_NAMES, TAGS_TYPE, MeasureStage
from pipeline.config import RunConfig, WriteConfig, parse_config
from pipeline.contract import (
    BOOKKEEPING_COLUMNS,
    CONTRACT_VERSION,
    CORE_COLUMNS,
    ColumnConflictError,
    ShardContract,
    StageColumns,
    contract_of,
    stream_table,
)
from pipeline.rundir import RunDirectory, RunDirError, listed_shards
from pipeline.runner import annotate
from pipeline.stages import StageChain, build_stage_specs
from pipeline.summary import summary_table
from pipeline.verify_run import verify_run
from pipeline.writer import ShardWriter
from tests.conftest import EXAMPLES, REPO

CORE_NAMES = [f.name for f in CORE_COLUMNS]
SIMILARITY = pa.field("speaker_similarity", pa.float64())
LOUDNESS = pa.field("loudness_lufs", pa.float64())


def stages(*declared: tuple[str, tuple[pa.Field, ...]]) -> ShardContract:
    return ShardContract(tuple(StageColumns(name, columns) for name, columns in declared))


# --- assembly -----------------------------------------------------------------------------------------


def test_the_core_contract_module_imports_no_stage():
    tree = ast.parse((REPO / "pipeline" / "contract.py").read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert {name for name in imported if name.startswith(("annotate", "verify"))} == {"annotate.audio"}


def test_the_shard_schema_is_the_core_then_each_stage_columns_in_stage_order():
    contract = stages(
        ("segment", ()),
        ("speaker_consistency", (SIMILARITY,)),
        ("caption", (CAPTIONS_COLUMN,)),
        ("caption_llm", (CAPTIONS_COLUMN,)),  # a second captioner: same column, same type
    )
    assert contract.shard_schema.names == [*CORE_NAMES, "speaker_similarity"]  # captions: a layer beside
    assert contract.shard_schema.field("speaker_similarity") == SIMILARITY
    bookkeeping = [f.name for f in BOOKKEEPING_COLUMNS]
    assert contract.stream_schema.names == [*bookkeeping, *contract.shard_schema.names, "captions"]
    assert all(f.nullable for f in contract.stream_schema)  # failed and end rows have no segment id


def test_the_default_config_declares_measurements_tags_and_captions_without_building_a_stage(monkeypatch):
    def refuse(self):
        raise AssertionError("a stage was set up to read its columns")

    for stage in (MeasureStage, AcousticCaptioner):
        monkeypatch.setattr(stage, "setup", refuse)
    specs = build_stage_specs(
        parse_config({"asr": {"backend": "whisper"}, "speaker_consistency": {"enabled": True}})
    )
    assert {spec.name: [f.name for f in spec.columns] for spec in specs} == {
        "ingest": [],
        "segment": [],
        "speaker_consistency": ["speaker_similarity"],
        "cut": [],  # cuts what the plan says: the core columns
        "transcribe": [],  # fills the core transcript
        "measure": [*MEASUREMENT_NAMES, "tags"],
        "caption": ["captions"],
        "verify": [],  # fills the verdicts inside captions
    }
    schema = ShardContract.of(specs).shard_schema
    assert schema.names == [*CORE_NAMES, "speaker_similarity", *MEASUREMENT_NAMES, "tags"]
    assert schema.field("tags").type == TAGS_TYPE


def test_two_stages_declaring_one_column_with_different_types_is_an_error_naming_both():
    with pytest.raises(ColumnConflictError) as caught:
        stages(
            ("speaker_consistency", (SIMILARITY,)),
            ("diarize", (pa.field("speaker_similarity", pa.string()),)),
        )
    assert str(caught.value) == (
        "stage 'speaker_consistency' and stage 'diarize' both declare shard column 'speaker_similarity', "
        "as double and string: they cannot run in one config"
    )
    assert caught.value.exit_code == 2  # a usage (config) error


def test_a_stage_cannot_retype_a_core_column_or_declare_a_bookkeeping_one():
    with pytest.raises(
        ColumnConflictError, match=r"^the core and stage 'diarize' both declare shard column 'speaker'"
    ):
        stages(("diarize", (pa.field("speaker", pa.int64()),)))
    with pytest.raises(
        ColumnConflictError, match=r"^stage 'judge' declares column 'status', a bookkeeping column"
    ):
        stages(("judge", (pa.field("status", pa.string()),)))
    # Declaring a core column with its own type is no conflict (a diarizer that fills `speaker`).
    assert stages(("diarize", (pa.field("speaker", pa.string()),))).shard_schema.names == CORE_NAMES


def test_every_key_the_default_stages_put_on_a_row_is_a_stream_column():
    """A key no stage declares would be dropped silently on its way to the shards."""
    specs = build_stage_specs(RunConfig(speaker_consistency={"enabled": True, "threshold": 0.0}))
    names = set(ShardContract.of(specs).stream_schema.names)
    source = {
        "input_path": str(EXAMPLES / "corpus" / "espeak_en-us_m3_p50_s110_a100_13.flac"),
        "status": "ok",
    }
    rows = [row for chunk in StageChain(specs).stream([source], chunk_rows=4) for row in chunk]
    assert rows[0]["status"] == "ok" and rows[0]["captions"][0]["verdict"]  # every stage ran
    assert set().union(*rows) <= names


# --- shards on disk -------------------------------------------------------------------------------------


def _rows(source: str, count: int, similarity: bool) -> list[dict]:
    rows = []
    for index in range(count):
        wave = np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32) * 0.1
        rows.append(
            {
                "input_path": f"/in/{source}.wav",
                "status": "ok",
                "source_id": source,
                "source_path": f"{source}.wav",
                "segment_id": f"{source}_{index:09d}",
                "start_s": float(index),
                "end_s": index + 1.0,
                "duration_s": 1.0,
                "audio": {"bytes": encode_flac(wave), "path": None},
                "speaker_similarity": 0.5 + index / 10 if similarity else None,
            }
        )
    source_row = {"input_path": f"/in/{source}.wav", "source_id": source, "source_path": f"{source}.wav"}
    return [*rows, end_row({**source_row, "source_duration_s": float(count)}, "segmented")]


def write_run(root: Path, contract: ShardContract, sources: tuple[str, ...] = ("a",)) -> RunDirectory:
    root.mkdir(exist_ok=True)
    run = RunDirectory.open(root, "hash", {}, contract)
    writer = ShardWriter(run, WriteConfig(rows_per_shard=10, row_group_rows=2))
    for source in sources:
        writer.add(
            stream_table(
                _rows(source, 3, "speaker_similarity" in contract.shard_schema.names), contract.stream_schema
            )
        )
    writer.close(fed={f"/in/{source}.wav" for source in sources})
    return run


CONSISTENCY = stages(("segment", ()), ("speaker_consistency", (SIMILARITY,)))


def test_the_metadata_round_trips_through_pyarrow(tmp_path):
    write_run(tmp_path, CONSISTENCY)
    [path] = listed_shards(tmp_path)
    schema = pq.read_schema(path)
    assert schema.equals(CONSISTENCY.shard_schema) and schema.metadata == CONSISTENCY.parquet_schema.metadata
    assert contract_of(schema) == {
        "contract_version": CONTRACT_VERSION,
        "sample_rate": SAMPLE_RATE,
        "audio_codec": "flac/pcm16",
        "stages": [
            {"name": "segment", "columns": []},
            {"name": "speaker_consistency", "columns": ["speaker_similarity"]},
        ],
    }
    table = pq.read_table(path)
    assert table.column("speaker_similarity").to_pylist() == [0.5, 0.6, 0.7]
    assert json.loads((tmp_path / "manifest.json").read_text())["contract_version"] == CONTRACT_VERSION


def test_hf_datasets_decodes_the_audio_of_any_column_set(tmp_path):
    import datasets

    write_run(tmp_path / "run", CONSISTENCY)
    shards = [str(path) for path in listed_shards(tmp_path / "run")]
    dataset = datasets.load_dataset(
        "parquet", data_files=shards, split="train", cache_dir=str(tmp_path / "hf")
    )
    assert isinstance(dataset.features["audio"], datasets.Audio)
    assert dataset.features["speaker_similarity"] == datasets.Value("float64")
    decoded = dataset[1]["audio"]
    samples = decoded.get_all_samples()  # datasets >= 4: a torchcodec AudioDecoder
    assert samples.sample_rate == SAMPLE_RATE and samples.data.shape[-1] == SAMPLE_RATE
    assert dataset[1]["speaker_similarity"] == 0.6


def test_verify_run_and_the_summary_work_on_a_run_without_captions(tmp_path):
    run = write_run(tmp_path, stages(("segment", ())), sources=("a", "b"))
    check = verify_run(tmp_path)
    assert check.problems == [] and check.shard_rows == 6
    totals = run.totals()
    assert (totals["segments"], totals.get("captions")) == (6, None)
    assert summary_table(totals).row_count > 0


def test_verify_run_flags_a_shard_of_another_major_version(tmp_path):
    write_run(tmp_path, CONSISTENCY)
    [path] = listed_shards(tmp_path)
    table = pq.read_table(path)
    ours = {**contract_of(table.schema), "contract_version": "1.1"}
    pq.write_table(
        table.replace_schema_metadata({**table.schema.metadata, b"stylecaps": json.dumps(ours)}), path
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())  # as a writer of 1.1 would list it
    manifest["commits"][0]["shard"] |= {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_run(tmp_path).problems
    assert problems == [f"{path.name}: contract 1.1, this stylecaps reads {CONTRACT_VERSION}"]


# --- extending a run ----------------------------------------------------------------------------------


def test_a_run_is_not_extended_with_another_column_set(tmp_path):
    write_run(tmp_path, CONSISTENCY)
    with pytest.raises(RunDirError) as caught:
        RunDirectory.open(tmp_path, "hash", {}, stages(("segment", ()), ("measure", (LOUDNESS,))))
    assert str(caught.value) == (
        f"{tmp_path} holds shards with other columns than this config's stages make "
        "(+loudness_lufs, -speaker_similarity): use a new --out"
    )
    retyped = stages(("speaker_consistency", (pa.field("speaker_similarity", pa.float32()),)))
    with pytest.raises(RunDirError, match=r"\(~speaker_similarity\): use a new --out$"):
        RunDirectory.open(tmp_path, "hash", {}, retyped)
    assert RunDirectory.open(tmp_path, "hash", {}, CONSISTENCY).contract == CONSISTENCY  # same set: resumes


def test_annotate_refuses_to_extend_a_run_of_another_column_set_or_major_version(tmp_path, monkeypatch):
    config = RunConfig()
    clip = str(EXAMPLES / "corpus" / "espeak_en-us_m3_p50_s110_a100_13.flac")
    annotate(config, tmp_path, inputs=[clip], executor="local")
    other = str(EXAMPLES / "corpus" / "espeak_en-us_m3_p50_s110_a100_15.flac")
    # The same config after a code change: the measure stage now declares one more column.
    monkeypatch.setattr(MeasureStage, "columns", (*MeasureStage.columns, SIMILARITY))
    with pytest.raises(
        RunDirError, match=r"other columns than this config's stages make \(\+speaker_similarity\)"
    ):
        annotate(config, tmp_path, inputs=[clip, other], executor="local")
    monkeypatch.undo()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "contract_version": "1.1"}))
    with pytest.raises(RunDirError) as caught:
        annotate(config, tmp_path, inputs=[clip, other], executor="local")
    assert (
        str(caught.value)
        == f"{tmp_path} holds contract 1.1 shards, this stylecaps writes {CONTRACT_VERSION}: use a new --out"
    )
    assert len(listed_shards(tmp_path)) == 1  # nothing was added


def test_annotate_stops_on_a_column_conflict_before_making_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(CaptionStage, "columns", (*CaptionStage.columns, pa.field("tags", pa.string())))
    clip = str(EXAMPLES / "corpus" / "espeak_en-us_m3_p50_s110_a100_13.flac")
    with pytest.raises(
        ColumnConflictError, match=r"^stage 'measure' and stage 'caption' both declare shard column 'tags'"
    ):
        annotate(RunConfig(), tmp_path / "run", inputs=[clip], executor="local")
    assert not (tmp_path / "run").exists()
