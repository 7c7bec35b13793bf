"""`stylecaps recaption`, `reverify` and `export parquet` on a copy of the demo run (real Ray, real
stages): a new caption set and verdict version beside the audio, the audio files byte for byte as they
were, resuming after an interruption, failures recorded with their reason, and exports that HF datasets
and the trainer read."""

from __future__ import annotations

import hashlib
import shutil

import pyarrow.parquet as pq
import pytest

from annotate.captioner import AcousticCaptioner
from pipeline.config import load_config, parse_config
from pipeline.export import export_parquet
from pipeline.layer_runs import recaption, reverify
from pipeline.layers import CAPTIONS, LayerError, annotate_layers, layers_of, read_with_captions
from pipeline.rundir import listed_shards, read_manifest
from pipeline.runner import RunInterrupted
from pipeline.verify_run import verify_run
from tests.conftest import REPO
from train.shards import CaptionPolicy, ShardSet, iter_split

DEMO = load_config(REPO / "configs" / "demo.yaml")
RESEEDED = parse_config({**DEMO.model_dump(mode="json"), "caption": {"acoustic": {"views": 3, "seed": 7}}})


def audio_files(run) -> dict[str, str]:
    """sha256 of every file that holds audio: the shards."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (run / "shards").iterdir()}


@pytest.fixture
def run(demo_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(demo_run.out, copy)
    return copy


def test_recaption_adds_a_set_to_every_segment_and_leaves_the_audio_as_it_was(run, ray_cluster):
    before = audio_files(run)
    report = recaption(run, RESEEDED, executor="ray")
    manifest = read_manifest(run)
    assert report.segments == manifest["totals"]["segments"] and report.failed == 0
    original = annotate_layers(DEMO)[0].id
    assert set(layers_of(manifest, CAPTIONS)) == {original, report.layer.id}
    entry = layers_of(manifest, CAPTIONS)[report.layer.id]
    assert entry["written_by"] == "recaption" and list(entry["parts"]) == [
        s["path"] for s in manifest["shards"]
    ]
    rows = read_with_captions(run, captions=[report.layer.id], columns=["segment_id"]).to_pylist()
    assert [r["segment_id"] for r in rows] == [
        i for path in listed_shards(run) for i in pq.read_table(path)["segment_id"].to_pylist()
    ]
    for row in rows:
        assert [(c["granularity"], c["seed"]) for c in row["captions"]] == [
            ("fine", 7),
            ("fine", 8),
            ("fine", 9),
            ("global", 7),
        ]
        assert {c["caption_set"] for c in row["captions"]} == {report.layer.id}
        assert all(c["verdict"] is None for c in row["captions"])  # not verified yet
    assert audio_files(run) == before
    assert verify_run(run).ok
    again = recaption(run, RESEEDED, executor="ray")
    assert (again.shards_before, again.segments) == (report.shards, 0)  # done: nothing is redone


def test_reverify_judges_a_set_and_export_joins_every_set_each_caption_naming_it(run, ray_cluster, tmp_path):
    import datasets

    new_set = recaption(run, RESEEDED, executor="ray").layer.id
    version = reverify(run, RESEEDED, captions=new_set, executor="ray").layer
    assert version.provenance["caption_set"] == new_set
    original_set, original_version = (info.id for info in annotate_layers(DEMO))
    export = export_parquet(run, tmp_path / "export")
    assert export.selection.sets == ((original_set, original_version), (new_set, version.id))
    files = sorted(str(p) for p in (tmp_path / "export" / "shards").glob("*.parquet"))
    dataset = datasets.load_dataset("parquet", data_files=files, split="train")
    assert isinstance(dataset.features["audio"], datasets.Audio)
    shard_audio = [a["bytes"] for p in listed_shards(run) for a in pq.read_table(p)["audio"].to_pylist()]
    exported_audio = [a["bytes"] for p in files for a in pq.read_table(p)["audio"].to_pylist()]
    assert exported_audio == shard_audio
    for example in dataset.select_columns(["captions"]):
        names = [(c["caption_set"], c["verdict_version"]) for c in example["captions"]]
        assert names == [(original_set, original_version)] * 4 + [(new_set, version.id)] * 4
        assert all(c["verdict"]["passed"] for c in example["captions"])  # acoustic captions pass the rules
    # the trainer reads the export as it is, and a run's sets by id
    assert len(list(iter_split(ShardSet([tmp_path / "export"]), CaptionPolicy(), "all", 0.0))) == len(dataset)
    shards = ShardSet([run], captions=[new_set])
    assert shards.selections[run] == f"captions {new_set} with verdicts {version.id} (its only version)"
    records = list(iter_split(shards, CaptionPolicy(granularities=("fine",)), "all", 0.0))
    assert {c.text for r in records for c in r.captions} <= {
        c["text"]
        for row in read_with_captions(run, captions=[new_set], columns=[]).to_pylist()
        for c in row["captions"]
    }


def test_a_second_verdict_version_must_be_named_by_readers(run, ray_cluster, tmp_path):
    original_set = annotate_layers(DEMO)[0].id
    stricter = parse_config({**DEMO.model_dump(mode="json"), "verify": {"version_id": "rules-again"}})
    reverify(run, stricter, captions=original_set, executor="local")
    with pytest.raises(LayerError, match=f"caption set '{original_set}' has verdict versions"):
        export_parquet(run, tmp_path / "export")
    export = export_parquet(run, tmp_path / "export", verdicts=["rules-again"])
    assert export.selection.sets == ((original_set, "rules-again"),)


def test_an_interrupted_recaption_resumes_at_the_first_shard_without_its_part(
    run, demo_run, tmp_path, monkeypatch
):
    shards = listed_shards(run)
    second_shard = set(pq.read_table(shards[1])["segment_id"].to_pylist())
    real = AcousticCaptioner.__call__

    def interrupted(self, rows):
        if any(row["segment_id"] in second_shard for row in rows):
            raise KeyboardInterrupt
        return real(self, rows)

    monkeypatch.setattr(AcousticCaptioner, "__call__", interrupted)
    with pytest.raises(RunInterrupted, match="1 of 3 shards got their captions part"):
        recaption(run, RESEEDED, executor="local")
    set_id = annotate_layers(RESEEDED)[0].id
    assert list(layers_of(read_manifest(run), CAPTIONS)[set_id]["parts"]) == ["shards/part-00000.parquet"]
    assert sorted(p.name for p in (run / "captions" / set_id).iterdir()) == ["part-00000.parquet"]
    monkeypatch.setattr(AcousticCaptioner, "__call__", real)
    resumed = recaption(run, RESEEDED, executor="local")
    assert (resumed.shards_before, resumed.segments) == (
        1,
        demo_run.totals["segments"] - len(pq.read_table(shards[0])),
    )
    whole = tmp_path / "whole"
    shutil.copytree(demo_run.out, whole)
    recaption(whole, RESEEDED, executor="local")
    for shard in shards:
        name = f"captions/{set_id}/{shard.name}"
        assert pq.read_table(run / name) == pq.read_table(whole / name)


def test_a_segment_the_captioner_fails_on_is_recorded_with_its_reason_and_the_rest_go_on(run, monkeypatch):
    victim = pq.read_table(listed_shards(run)[0])["segment_id"][3].as_py()
    real = AcousticCaptioner.captions

    def captions(self, segment_id, tags):
        if segment_id == victim:
            raise ValueError("no tags to word")
        return real(self, segment_id, tags)

    monkeypatch.setattr(AcousticCaptioner, "captions", captions)
    report = recaption(run, RESEEDED, executor="local")
    assert report.failed == 1
    part = pq.read_table(run / "captions" / report.layer.id / "part-00000.parquet").to_pylist()
    failed = [row for row in part if row["error_type"]]
    assert [(r["segment_id"], r["error_type"], r["error_message"], r["captions"]) for r in failed] == [
        (victim, "ValueError", "no tags to word", None)
    ]
    assert sum(1 for row in part if row["captions"]) == len(part) - 1
    # judging that set: the failed segment has nothing to judge, the others get one verdict per caption
    monkeypatch.setattr(AcousticCaptioner, "captions", real)
    verified = reverify(run, RESEEDED, captions=report.layer.id, executor="local")
    assert (verified.failed, verified.segments) == (0, report.segments)
    verdicts = pq.read_table(run / "verdicts" / verified.layer.id / "part-00000.parquet").to_pylist()
    assert [len(row["verdicts"]) for row in verdicts] == [len(row["captions"] or []) for row in part]
