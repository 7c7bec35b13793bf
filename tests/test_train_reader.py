"""The training reader: contract checks, caption policy, per-worker streaming, shuffling, class
balancing, batch plans and their resumption, padding."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import shutil
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from annotate.audio import decode_flac
from pipeline.contract import CONTRACT_VERSION
from pipeline.layers import read_with_captions
from tests.train_data import write_run
from train.batches import BatchPlanner, SamplerState, choose_captions, collate, crop, epoch_plans, pad
from train.perturb import Perturber
from train.shards import (
    CaptionPolicy,
    SegmentStream,
    ShardContractError,
    ShardSet,
    is_heldout,
    iter_split,
    usable_captions,
)


def all_records(run):
    return list(iter_split(ShardSet([run]), CaptionPolicy(), "all", 0.0))


def test_a_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(ShardContractError, match=r"holds no manifest\.json"):
        ShardSet([tmp_path])


def test_only_the_shards_the_manifest_lists_are_read(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    # A leftover file in shards/ that no commit lists: an interrupted run's, never training data.
    shutil.copy(run / "shards" / "part-00000.parquet", run / "shards" / "part-00099.parquet")
    records = all_records(run)
    assert len(records) == 24 and len({r.segment_id for r in records}) == 24


def test_a_1x_shard_is_refused_before_any_row_naming_the_file_and_both_versions(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    path = run / "shards" / "part-00001.parquet"
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata)
    metadata[b"stylecaps"] = json.dumps(
        {**json.loads(metadata[b"stylecaps"]), "contract_version": "1.1"}
    ).encode()
    pq.write_table(table.replace_schema_metadata(metadata), path)
    with pytest.raises(ShardContractError) as caught:
        ShardSet([run])
    assert str(caught.value) == f"{path}: contract 1.1, this stylecaps reads {CONTRACT_VERSION}"


def test_a_shard_without_a_needed_column_is_refused(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    path = run / "shards" / "part-00002.parquet"
    table = pq.read_table(path)
    pq.write_table(
        table.drop_columns(["duration_s", "tags"]).replace_schema_metadata(table.schema.metadata), path
    )
    with pytest.raises(ShardContractError) as caught:
        ShardSet([run])
    stages = "ingest, segment, cut, measure, caption, verify"
    assert str(caught.value) == f"{path}: no column(s) duration_s, tags: the run's stages were {stages}"


def test_only_passed_captions_of_the_wanted_granularities_are_used(tmp_path):
    run = write_run(tmp_path / "run", sources=2, reject_view=1)
    record = all_records(run)[0]
    assert [(c.granularity, c.view) for c in record.captions] == [("fine", 0), ("fine", 2), ("global", 0)]
    raw = read_with_captions(run, columns=[]).column("captions").to_pylist()[0]
    assert len(usable_captions(raw, CaptionPolicy(verified_only=False))) == 4
    assert [c.view for c in usable_captions(raw, CaptionPolicy(granularities=("fine",)))] == [0, 2]


def test_tags_and_their_values_come_from_the_shards(synthetic_run):
    shards = ShardSet([synthetic_run])
    assert shards.tag_names == (
        "gender",
        "gender_source",
        "pitch",
        "pitch_variation",
        "speaking_rate",
        "loudness",
        "phonation",
    )
    values = shards.tag_values()
    assert values["pitch"] == ["high", "low", "medium"] and values["phonation"] == ["modal"]
    assert values["gender"] == ["female", "male"]


def test_the_holdout_split_is_by_source_and_stable():
    ids = [f"source-{i}" for i in range(2000)]
    held = [i for i in ids if is_heldout(i, 0.25)]
    assert 0.22 < len(held) / len(ids) < 0.28
    assert held == [i for i in ids if is_heldout(i, 0.25)]
    assert not any(is_heldout(i, 0.0) for i in ids)


def test_workers_read_disjoint_parts_that_cover_the_training_split_once(synthetic_run):
    shards = ShardSet([synthetic_run])
    parts = [
        [
            r.segment_id
            for r in SegmentStream(shards, CaptionPolicy(), rank=k, world=2, holdout_fraction=0.3).epoch(0)
        ]
        for k in range(2)
    ]
    train = [r.segment_id for r in iter_split(shards, CaptionPolicy(), "train", 0.3)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(train)
    heldout = {r.source_id for r in iter_split(shards, CaptionPolicy(), "heldout", 0.3)}
    assert heldout and not heldout & {s.split("_")[0] for s in parts[0] + parts[1]}


def test_the_shuffle_mixes_sources_and_changes_per_epoch_but_not_per_run(synthetic_run):
    stream = SegmentStream(ShardSet([synthetic_run]), CaptionPolicy(), seed=3, buffer_rows=8)
    first = [r.segment_id for r in stream.epoch(0)]
    file_order = [r.segment_id for r in all_records(synthetic_run)]
    assert sorted(first) == sorted(file_order) and first != file_order
    sources = [s.split("_")[0] for s in first]
    # Written source by source (3 segments each); shuffled, neighbours rarely share a source.
    assert sum(a == b for a, b in itertools.pairwise(sources)) < 8
    assert first == [r.segment_id for r in stream.epoch(0)]
    assert first != [r.segment_id for r in stream.epoch(1)]


def test_records_read_without_audio_are_kept_for_later_epochs_up_to_the_budget(synthetic_run):
    def reads_per_epoch(with_audio: bool) -> tuple[list[list[str]], list[int]]:
        shards = ShardSet([synthetic_run])
        read, reads = shards.read, []

        def counted(ref, columns=None):
            reads.append(ref)
            return read(ref, columns)

        shards.read = counted
        stream = SegmentStream(shards, CaptionPolicy(), seed=2, with_audio=with_audio, cache_rows=6)
        orders, counts = [], []
        for epoch in range(4):
            if epoch == 3:
                stream.forget_records()
            before = len(reads)
            orders.append([r.segment_id for r in stream.epoch(epoch)])
            counts.append(len(reads) - before)
        return orders, counts

    kept_orders, kept_reads = reads_per_epoch(with_audio=False)
    read_orders, read_reads = reads_per_epoch(with_audio=True)
    # 8 row groups of 3 rows: a budget of 6 rows keeps the first 2 read (until forgotten); audio never
    assert kept_reads == [8, 6, 6, 8] and read_reads == [8, 8, 8, 8]
    assert kept_orders == read_orders  # the same records, in the same shuffled order


def test_class_balancing_evens_out_a_tag_on_each_workers_own_rows(tmp_path):
    run = write_run(tmp_path / "run", sources=12, segments_per_source=3, rows_per_shard=3, row_group_rows=3)
    shards = ShardSet([run])
    for rank in range(2):
        stream = SegmentStream(
            shards, CaptionPolicy(), rank=rank, world=2, balance_tag="speaking_rate", seed=1
        )
        own = Counter(
            r.tags["speaking_rate"]
            for r in SegmentStream(shards, CaptionPolicy(), rank=rank, world=2, seed=1).epoch(0)
        )
        factors = stream.repeat_factors(0)
        assert factors == {value: max(own.values()) / count for value, count in own.items()}
        drawn = Counter()
        for epoch in range(20):  # the fractional repeats are seeded draws: average over epochs
            stream_epoch = SegmentStream(
                shards, CaptionPolicy(), rank=rank, world=2, balance_tag="speaking_rate", seed=epoch
            )
            drawn.update(r.tags["speaking_rate"] for r in stream_epoch.epoch(0))
        shares = np.array(list(drawn.values())) / sum(drawn.values())
        assert shares.max() - shares.min() < 0.08, drawn


def test_more_workers_than_row_groups_is_a_clear_error(synthetic_run):
    with pytest.raises(ShardContractError, match="8 row groups cannot feed 9 workers"):
        SegmentStream(ShardSet([synthetic_run]), CaptionPolicy(), world=9)


def test_batches_keep_the_budget_one_bucket_and_one_row_per_segment(synthetic_run):
    shards = ShardSet([synthetic_run])
    stream = SegmentStream(shards, CaptionPolicy(), balance_tag="pitch", buffer_rows=6)
    planner = BatchPlanner([4.0], budget_s=12.0, max_rows=5, max_crop_s=5.0)
    plans = list(planner.plans(stream.epoch(0)))
    assert plans
    for plan in plans:
        ids = [r.segment_id for r in plan]
        assert len(ids) == len(set(ids)) and 2 <= len(plan) <= 5
        assert sum(min(r.duration_s, 5.0) for r in plan) <= 12.0
        assert len({r.duration_s > 4.0 for r in plan}) == 1


def test_resuming_from_a_sampler_state_continues_with_the_next_batch(synthetic_run):
    stream = SegmentStream(ShardSet([synthetic_run]), CaptionPolicy(), seed=5, buffer_rows=6)
    planner = BatchPlanner([4.0], budget_s=12.0, max_rows=4, max_crop_s=5.0)
    run = epoch_plans(stream, planner, SamplerState())
    uninterrupted = [next(run) for _ in range(12)]  # crosses into the next epochs
    state = uninterrupted[4][0]
    resumed = epoch_plans(stream, planner, state)
    for (want_state, want), (got_state, got) in zip(uninterrupted[5:], resumed, strict=False):
        assert want_state == got_state
        assert [r.segment_id for r in want] == [r.segment_id for r in got]
    assert {s.epoch for s, _ in uninterrupted} >= {0, 1}


def test_padding_keeps_exact_lengths_and_zero_tails():
    audio, lens = pad([np.ones(5, np.float32), np.ones(3, np.float32) * 2])
    assert lens.tolist() == [5, 3]
    assert torch.equal(audio, torch.tensor([[1.0] * 5, [2, 2, 2, 0, 0]]))


def test_crops_are_random_windows_of_the_maximum_length():
    starts = {crop(100, 30, random.Random(seed)) for seed in range(2000)}
    assert {length for _, length in starts} == {30}
    assert {start for start, _ in starts} == set(range(71))  # every window, none past the end
    assert crop(100, 200, random.Random(0)) == (0, 100)


def plain_collate(plan, *, max_crop_s: float, seed: int = 0, decode: bool = True):
    """A single-positive batch without perturbation or groups."""
    return collate(
        plan,
        task=0,
        rng=random.Random(seed),
        max_crop_s=max_crop_s,
        perturber=None,
        tag_names=(),
        group_by="segment",
        decode=decode,
    )


def test_a_batch_left_undecoded_reads_and_decodes_the_same_crops_on_demand(synthetic_run):
    shards = ShardSet([synthetic_run])
    stream = SegmentStream(shards, CaptionPolicy(), buffer_rows=4, with_audio=False)
    plan = list(itertools.islice(stream.epoch(0), 5))
    assert all(r.flac is None for r in plan)  # read without the audio column
    made = {decode: plain_collate(plan, max_crop_s=1.5, seed=3, decode=decode) for decode in (True, False)}
    decoded, lazy = made[True], made[False]
    assert lazy.audio is None and lazy.audio_keys == decoded.audio_keys and lazy.texts == decoded.texts
    assert torch.equal(lazy.audio_lens, decoded.audio_lens)
    assert any(start > 0 for _, start, _ in decoded.audio_keys)  # some rows were cropped
    whole = {r.segment_id: decode_flac(r.flac) for r in all_records(synthetic_run)}
    for i, (segment_id, start, length) in enumerate(decoded.audio_keys):
        assert np.array_equal(decoded.audio[i, :length].numpy(), whole[segment_id][start : start + length])
    rows = [3, 1]
    audio, lens = lazy.waveforms(rows)
    expected, expected_lens = decoded.waveforms(rows)
    assert torch.equal(lens, expected_lens) and torch.equal(audio, expected)


def test_audio_that_disagrees_with_duration_s_is_refused_when_decoded(synthetic_run):
    record = all_records(synthetic_run)[0]
    short = dataclasses.replace(record, duration_s=record.duration_s + 0.5)
    with pytest.raises(ShardContractError, match=f"{record.segment_id}: its audio holds"):
        plain_collate([short, all_records(synthetic_run)[1]], max_crop_s=30.0)


def test_collate_picks_captions_by_task_and_flips_an_attribute(synthetic_run):
    shards = ShardSet([synthetic_run])
    plan = all_records(synthetic_run)[:4]
    batch = collate(
        plan,
        task=1,
        rng=random.Random(0),
        max_crop_s=3.0,
        perturber=Perturber(
            {"pitch": {"low": ["low"], "medium": ["mid-range"], "high": ["high"]}}, shards.tag_names
        ),
        tag_names=shards.tag_names,
        group_by="source",
    )
    assert batch.audio.shape[0] == 4 and int(batch.audio_lens.max()) <= 3 * 16000
    for record, first, second in zip(plan, batch.texts, batch.second_texts, strict=True):
        granularity = {c.text: c.granularity for c in record.captions}
        assert (granularity[first], granularity[second]) == ("global", "fine")
    assert batch.groups == [r.source_id for r in plan]
    assert batch.tags["pitch"] == [r.tags["pitch"] for r in plan]
    two = [choose_captions(plan[0], 2, random.Random(i)) for i in range(5)]
    assert all(a != b for a, b in two)


def test_perturbation_flips_one_known_attribute_only():
    perturber = Perturber(
        {
            "pitch": {"low": ["low", "deep"], "high": ["high", "bright"]},
            "gender": {"female": ["female"], "male": ["male"]},
        },
        tag_names=("pitch", "loudness"),  # no gender tag in these shards: gender words stay
    )
    text = "A deep, low voice. A male speaker."
    flipped = perturber.perturb(text, {"pitch": "low"}, random.Random(0))
    assert flipped == "A bright, high voice. A male speaker."
    assert perturber.perturb(text, {"pitch": None}, random.Random(0)) is None
    with_gender = Perturber({"gender": {"female": ["female"], "male": ["male"]}}, ("gender",))
    assert with_gender.perturb("A Male speaker.", {"gender": "male"}, random.Random(0)) == "A Female speaker."


def test_the_default_lexicon_flips_a_captioners_gender_words_together():
    from train.config import PerturbConfig

    perturber = Perturber(PerturbConfig().lexicon, ("gender",))
    text = "A male speaker pitches his voice high for a man."
    flipped = perturber.perturb(text, {"gender": "male"}, random.Random(0))
    assert flipped == "A female speaker pitches her voice high for a woman."
