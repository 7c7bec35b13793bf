"""Caption sets and verdict versions (pipeline.layers) as a mechanism: splitting stream rows into
layers, the layer parts annotate commits beside each shard, committing and cleaning parts, choosing
layers by id, and joining them back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotate.caption_types import CAPTIONS_COLUMN, STORED_CAPTION_TYPE, VERDICT_TYPE
from pipeline.config import RunConfig, parse_config
from pipeline.layers import (
    CAPTIONS,
    VERDICTS,
    LayerError,
    LayerInfo,
    LayerJoin,
    annotate_layers,
    caption_set_of,
    choose,
    layers_of,
    read_with_captions,
    register,
    split_captions,
)
from pipeline.rundir import (
    MANIFEST,
    RunDirectory,
    commit_layer_part,
    new_layer_part,
    read_manifest,
    register_layer,
)
from pipeline.verify_run import verify_run
from tests.conftest import default_contract


def caption(text: str, passed: bool | None = None) -> dict:
    verdict = (
        None if passed is None else {"passed": passed, "failed_checks": [], "reasons": [], "verifier": "t"}
    )
    return {"text": text, "granularity": "fine", "view": 0, "verdict": verdict}


def stream_rows() -> pa.Table:
    captions = [[caption("a0", True), caption("a1", False)], [caption("b0", True)], [caption("c0", True)] * 3]
    return pa.table(
        {
            "segment_id": ["a", "b", "c"],
            "captions": pa.array(captions, CAPTIONS_COLUMN.type),
            "error_type": pa.nulls(3, pa.string()),
            "error_message": pa.nulls(3, pa.string()),
        }
    )


# --- splitting --------------------------------------------------------------------------------------------


def test_split_keeps_each_rows_captions_when_the_rows_were_taken_out_of_order():
    # take() leaves the struct child with an offset; reading fields without it mixed rows' captions
    parts = split_captions(stream_rows().take([2, 0]).slice(1))
    assert parts[CAPTIONS].column("segment_id").to_pylist() == ["a"]
    assert [c["text"] for c in parts[CAPTIONS].column("captions").to_pylist()[0]] == ["a0", "a1"]
    assert "verdict" not in parts[CAPTIONS].schema.field("captions").type.value_type.names
    assert [v["passed"] for v in parts[VERDICTS].column("verdicts").to_pylist()[0]] == [True, False]


def test_a_row_a_stage_failed_on_keeps_its_error_and_no_captions():
    rows = stream_rows().to_pylist()
    rows[1] |= {"error_type": "ValueError", "error_message": "too long"}
    parts = split_captions(pa.Table.from_pylist(rows, schema=stream_rows().schema))
    for kind in (CAPTIONS, VERDICTS):
        failed = parts[kind].to_pylist()[1]
        assert failed[kind] is None and (failed["error_type"], failed["error_message"]) == (
            "ValueError",
            "too long",
        )


# --- ids, registering, choosing ---------------------------------------------------------------------------


def test_a_set_id_follows_its_config_and_a_given_id_wins():
    default = caption_set_of(RunConfig().caption)
    assert default.id == caption_set_of(RunConfig().caption).id and default.id.startswith("acoustic-")
    other = parse_config({"caption": {"acoustic": {"seed": 5}}}).caption
    assert caption_set_of(other).id != default.id
    named = parse_config({"caption": {"set_id": "fcaps-v2", "acoustic": {"seed": 5}}}).caption
    assert caption_set_of(named).id == "fcaps-v2"


def test_an_id_written_with_another_config_is_refused():
    manifest: dict = {}
    info = caption_set_of(RunConfig().caption)
    register(manifest, info, "annotate")
    clash = LayerInfo(CAPTIONS, info.id, {**info.provenance, "config_hash": "other"})
    with pytest.raises(LayerError, match=f"captions layer '{info.id}' exists with another config"):
        register(manifest, clash, "recaption")


def manifest_with(*layers: tuple[str, str, str | None]) -> dict:
    """(kind, id, judged set) in creation order."""
    manifest: dict = {}
    for created, (kind, layer_id, judged) in enumerate(layers):
        entry = {"config_hash": layer_id, **({"caption_set": judged} if judged else {})}
        register(manifest, LayerInfo(kind, layer_id, entry), "test")
        layers_of(manifest, kind)[layer_id]["created"] = created
    return manifest


def test_by_default_every_set_is_chosen_in_creation_order_with_its_only_version():
    manifest = manifest_with(
        (CAPTIONS, "new", None), (CAPTIONS, "old", None), (VERDICTS, "v1", "new"), (CAPTIONS, "bare", None)
    )
    layers_of(manifest, CAPTIONS)["old"]["created"] = -1
    selection = choose(manifest)
    assert selection.sets == (("old", None), ("new", "v1"), ("bare", None))
    assert selection.describe() == (
        "captions old with no verdicts; captions new with verdicts v1 (its only version); "
        "captions bare with no verdicts"
    )


def test_a_set_with_several_versions_needs_one_named_never_the_newest():
    manifest = manifest_with((CAPTIONS, "s", None), (VERDICTS, "v1", "s"), (VERDICTS, "v2", "s"))
    with pytest.raises(
        LayerError, match="caption set 's' has verdict versions v1, v2: name one with --verdicts"
    ):
        choose(manifest)
    assert choose(manifest, verdicts=["v1"]).sets == (("s", "v1"),)


def test_unknown_ids_and_versions_of_sets_not_chosen_are_errors():
    manifest = manifest_with((CAPTIONS, "s", None), (CAPTIONS, "t", None), (VERDICTS, "v", "s"))
    with pytest.raises(LayerError, match="no caption set 'x' in the run; it has s, t"):
        choose(manifest, captions=["x"])
    with pytest.raises(LayerError, match="no verdict version 'w' in the run; it has v"):
        choose(manifest, verdicts=["w"])
    with pytest.raises(LayerError, match="verdict version 'v' judges caption set 's', which is not chosen"):
        choose(manifest, captions=["t"], verdicts=["v"])


# --- parts beside the shards --------------------------------------------------------------------------------


def test_annotate_writes_a_part_per_shard_with_the_shards_row_groups_and_ids(synthetic_run):
    manifest = read_manifest(synthetic_run)
    caption_set, verdict_version = annotate_layers(RunConfig())
    for info in (caption_set, verdict_version):
        parts = layers_of(manifest, info.kind)[info.id]["parts"]
        assert list(parts) == [s["path"] for s in manifest["shards"]]
        for shard, part in parts.items():
            shard_file, part_file = (
                pq.ParquetFile(synthetic_run / shard),
                pq.ParquetFile(synthetic_run / part["path"]),
            )
            assert [part_file.metadata.row_group(i).num_rows for i in range(part_file.num_row_groups)] == [
                shard_file.metadata.row_group(i).num_rows for i in range(shard_file.num_row_groups)
            ]
            assert part_file.read(columns=["segment_id"]) == shard_file.read(columns=["segment_id"])
            ours = json.loads(part_file.schema_arrow.metadata[b"stylecaps"])
            assert (ours["layer"], ours["id"], ours["shard"]) == (info.kind, info.id, shard)
    assert layers_of(manifest, VERDICTS)[verdict_version.id]["caption_set"] == caption_set.id


def copy_run(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    return run


def test_opening_a_run_removes_layer_parts_the_manifest_does_not_list(synthetic_run, tmp_path):
    run = copy_run(synthetic_run, tmp_path)
    caption_set = annotate_layers(RunConfig())[0]
    leftover = run / "captions" / caption_set.id / "part-00009.parquet"
    hidden = run / "captions" / "another-set" / ".part-00000.parquet.tmp"
    hidden.parent.mkdir()
    for path in (leftover, hidden):
        path.write_bytes(b"interrupted")
    assert len(verify_run(run).problems) == 2
    RunDirectory.open(run, "test", {}, default_contract(), layers=annotate_layers(RunConfig()))
    assert not leftover.exists() and not hidden.exists()
    assert verify_run(run).ok


def new_set_part(run, shard: str, info: LayerInfo):
    """A part of `info` for `shard` whose captions are the shard's segment ids."""
    part = new_layer_part(run, info, shard, "zstd", fsync=False)
    for index in range(pq.ParquetFile(run / shard).num_row_groups):
        ids = pq.ParquetFile(run / shard).read_row_group(index, columns=["segment_id"])["segment_id"]
        captions = [[{"text": i, "granularity": "fine", "view": 0}] for i in ids.to_pylist()]
        errors = pa.nulls(len(ids), pa.string())
        table = {"segment_id": ids, "captions": captions, "error_type": errors, "error_message": errors}
        part.write_row_group(pa.Table.from_pydict(table, schema=part.schema))
    return part


def no_fence() -> None:
    pass


def test_a_committed_part_is_listed_and_joined_row_for_row(synthetic_run, tmp_path):
    run = copy_run(synthetic_run, tmp_path)
    manifest = read_manifest(run)
    info = LayerInfo(CAPTIONS, "ids", {"config_hash": "x"})
    register_layer(run, manifest, info, "test", fsync=False, fence=no_fence)
    shard = manifest["shards"][1]["path"]
    commit_layer_part(run, manifest, info, shard, new_set_part(run, shard, info), fsync=False, fence=no_fence)
    assert (
        layers_of(read_manifest(run), CAPTIONS)["ids"]["parts"][shard]["path"]
        == f"captions/ids/{Path(shard).name}"
    )
    table = read_with_captions(run, captions=["ids"], columns=["segment_id"])
    joined = {row["segment_id"]: [c["text"] for c in row["captions"]] for row in table.to_pylist()}
    in_shard = set(pq.read_table(run / shard)["segment_id"].to_pylist())
    assert joined == {i: ([i] if i in in_shard else []) for i in table["segment_id"].to_pylist()}
    assert verify_run(run).ok


def test_a_part_whose_commit_is_fenced_off_leaves_nothing(synthetic_run, tmp_path):
    run = copy_run(synthetic_run, tmp_path)
    manifest = read_manifest(run)
    info = LayerInfo(CAPTIONS, "ids", {"config_hash": "x"})
    register_layer(run, manifest, info, "test", fsync=False, fence=no_fence)
    before = (run / MANIFEST).read_text()
    shard = manifest["shards"][0]["path"]

    def lost_lock() -> None:
        raise RuntimeError("the lock is another writer's")

    with pytest.raises(RuntimeError):
        commit_layer_part(
            run, manifest, info, shard, new_set_part(run, shard, info), fsync=False, fence=lost_lock
        )
    assert list((run / "captions" / "ids").iterdir()) == []
    assert (run / MANIFEST).read_text() == before and layers_of(manifest, CAPTIONS)["ids"]["parts"] == {}


def test_a_part_that_does_not_line_up_with_its_shard_is_refused_when_read(synthetic_run, tmp_path):
    run = copy_run(synthetic_run, tmp_path)
    manifest = read_manifest(run)
    caption_set = annotate_layers(RunConfig())[0]
    parts = layers_of(manifest, CAPTIONS)[caption_set.id]["parts"]
    first, second = (run / parts[s["path"]]["path"] for s in manifest["shards"][:2])
    shutil.copyfile(second, first)  # another shard's rows, listed with their true checksum
    shard = manifest["shards"][0]["path"]
    parts[shard] |= {"sha256": hashlib.sha256(first.read_bytes()).hexdigest(), "bytes": first.stat().st_size}
    (run / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(LayerError, match=f"row group 0 does not line up with {shard}"):
        LayerJoin(run, manifest, choose(manifest)).captions(
            shard, 0, pq.ParquetFile(run / shard).read_row_group(0)["segment_id"]
        )
    problems = verify_run(run).problems
    assert (
        f"{parts[shard]['path']}: other segment ids than {Path(shard).name}, or in another order" in problems
    )


def test_captions_without_one_verdict_each_get_none_and_the_others_keep_theirs():
    from pipeline.layers import _verdicts_of

    verdict = {"passed": True, "failed_checks": [], "reasons": [], "verifier": "t"}
    captions = pa.array(
        [[{"text": "a"}, {"text": "b"}], None, [{"text": "c"}]], pa.list_(STORED_CAPTION_TYPE)
    )
    verdicts = pa.array([None, None, [verdict]], pa.list_(VERDICT_TYPE))  # the verifier failed on row 0
    assert _verdicts_of(captions, verdicts, 3).to_pylist() == [None, None, verdict]
    assert _verdicts_of(captions, None, 3).to_pylist() == [None, None, None]
