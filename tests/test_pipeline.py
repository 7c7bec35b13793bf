"""End to end on a real local Ray cluster: the example corpus → shards, read back with pyarrow and
HF datasets; the manifest's checksums; captions that are true to the generating parameters."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
from tag_accuracy import GAIN_PAIR, tag_accuracy

from annotate.measure import MEASUREMENT_NAMES
from annotate.tags import TAG_NAMES
from pipeline.config import load_config
from pipeline.contract import CONTRACT_VERSION, ShardContract, contract_of
from pipeline.layers import read_with_captions
from pipeline.stages import build_stage_specs
from tests.conftest import EXAMPLES, REPO


def test_every_input_is_accounted_for(demo_run):
    totals = demo_run.totals
    outcomes = totals["outcomes"]
    assert totals["inputs"] == 51 == sum(outcomes.values())
    assert outcomes.get("failed", 0) == 0
    assert outcomes["segmented"] >= 49
    assert totals["segments"] == totals["rows"] >= outcomes["segmented"]
    assert totals["captions"] == totals["segments"] * 4  # 3 fine views + 1 global
    assert totals["passed"] + totals["rejected"] == totals["captions"]


def test_shards_match_the_manifest(demo_run):
    manifest = json.loads((demo_run.out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["contract_version"] == CONTRACT_VERSION
    contract = ShardContract.of(build_stage_specs(load_config(REPO / "configs" / "demo.yaml")))
    assert [s["path"] for s in manifest["shards"]] == [
        f"shards/part-{i:05d}.parquet" for i in range(len(manifest["shards"]))
    ]
    for shard in manifest["shards"]:
        data = (demo_run.out / shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
        file = pq.ParquetFile(demo_run.out / shard["path"])
        assert file.metadata.num_rows == shard["rows"]
        assert all(file.metadata.row_group(i).num_rows <= 100 for i in range(file.num_row_groups))
        assert file.schema_arrow.equals(contract.shard_schema)
        assert file.schema_arrow.metadata == contract.parquet_schema.metadata
        assert contract_of(file.schema_arrow)["contract_version"] == CONTRACT_VERSION


def test_segments_are_in_range_unique_and_decodable(demo_run):
    table = pq.read_table(demo_run.out / "shards")
    ids = table.column("segment_id").to_pylist()
    assert len(ids) == len(set(ids))
    durations = np.array(table.column("duration_s").to_pylist())
    assert durations.min() >= 3.0 and durations.max() <= 30.0
    import io

    import soundfile as sf

    row = table.slice(0, 1).to_pylist()[0]
    wave, rate = sf.read(io.BytesIO(row["audio"]["bytes"]))
    assert rate == 16000 and wave.ndim == 1
    assert abs(len(wave) / rate - row["duration_s"]) < 0.002


def test_hf_datasets_decodes_the_audio_column(demo_run):
    import datasets

    shards = sorted(str(p) for p in (demo_run.out / "shards").glob("*.parquet"))
    dataset = datasets.load_dataset("parquet", data_files=shards, split="train")
    assert isinstance(dataset.features["audio"], datasets.Audio)
    example = dataset[0]
    decoded = example["audio"]
    samples = decoded.get_all_samples() if hasattr(decoded, "get_all_samples") else None
    if samples is not None:  # datasets >= 4 returns a torchcodec AudioDecoder
        assert samples.sample_rate == 16000
        assert abs(samples.data.shape[-1] / 16000 - example["duration_s"]) < 0.002
    else:
        assert decoded["sampling_rate"] == 16000
    assert "captions" not in dataset.features  # beside the audio, in the run's caption set
    assert example["tags"]["phonation"] in {"modal", "whispered"}


def test_captions_carry_provenance_and_every_acoustic_caption_passes(demo_run):
    table = read_with_captions(demo_run.out, columns=["segment_id"])
    for row in table.to_pylist():
        fine = [c for c in row["captions"] if c["granularity"] == "fine"]
        assert [c["seed"] for c in fine] == [0, 1, 2]
        assert len({c["text"] for c in fine}) >= 2  # views differ in wording
        for caption in row["captions"]:
            assert caption["backend"] == "acoustic" and caption["prompt_hash"]
            assert caption["verdict"]["passed"], (caption["text"], caption["verdict"])


def test_tags_are_true_to_the_generating_parameters(demo_run):
    scores = tag_accuracy(demo_run.out, EXAMPLES / "labels.csv")
    # The contrasts the captions must get right: every clip of each contrast set. espeak's -a is
    # recording gain, not effort: its -a 40 and -a 190 clips must get the same loudness tag.
    for attribute in ("pitch", "phonation", "gender", GAIN_PAIR):
        assert scores[attribute]["correct"] == scores[attribute]["total"], scores[attribute]["misses"]
    assert scores[GAIN_PAIR]["total"] == 4
    assert scores["speaking_rate"]["correct"] >= 0.9 * scores["speaking_rate"]["total"]
    rate_misses = {(want, got) for _, want, got in scores["speaking_rate"]["misses"]}
    assert ("slow", "fast") not in rate_misses and ("fast", "slow") not in rate_misses


def test_every_tag_is_stored_with_the_numbers_behind_it(demo_run):
    """The measure stage's columns reach the shards; the manifest's gender is used, not estimated."""
    table = pq.read_table(demo_run.out / "shards")
    assert set(MEASUREMENT_NAMES) <= set(table.column_names)
    assert table.schema.field("tags").type.names == list(TAG_NAMES)
    for row in table.select(["tags", "gender_confidence", "pitch_median_hz", "voiced_ratio"]).to_pylist():
        assert row["tags"]["gender_source"] == "given" and row["gender_confidence"] == 1.0
        assert row["tags"]["gender"] in ("female", "male")
        assert (row["tags"]["pitch"] is None) == (row["pitch_median_hz"] is None)
        assert (row["tags"]["phonation"] == "whispered") == (row["voiced_ratio"] < 0.25)


def test_the_ray_run_and_the_plain_loop_write_the_same_rows(demo_run, tmp_path):
    from pipeline.runner import annotate

    local = annotate(
        load_config(REPO / "configs" / "demo.yaml"),
        tmp_path / "local",
        inputs=[str(EXAMPLES / "manifest.jsonl")],
        executor="local",
    )
    columns = ["segment_id", "start_s", "end_s", "tags"]
    ray_rows = read_with_captions(demo_run.out, columns=columns).to_pylist()
    local_rows = read_with_captions(local.out, columns=columns).to_pylist()
    assert ray_rows == local_rows


def test_the_training_reader_streams_verified_captions(demo_run):
    from annotate.audio import decode_flac
    from train.shards import CaptionPolicy, ShardSet, iter_split

    shards = ShardSet([demo_run.out])
    segments = list(iter_split(shards, CaptionPolicy(granularities=("fine",)), "all", 0.0))
    assert len(segments) == demo_run.totals["segments"]  # every acoustic caption passes
    assert all(len(s.captions) == 3 for s in segments)
    assert abs(decode_flac(segments[0].flac).size / 16000 - segments[0].duration_s) < 0.002
    global_only = iter_split(shards, CaptionPolicy(granularities=("global",)), "all", 0.0)
    assert all(len(s.captions) == 1 for s in global_only)
