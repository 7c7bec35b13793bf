"""The stage graph: per-stage declarations (`ray.default`, `ray.stages`), their fusion into actor pools,
a streaming stage anywhere in a group, teardown, and two pools with different resources on Ray."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from functools import partial
from typing import ClassVar

import pytest

from annotate.base import STATUS_OK, BatchStage, Row, dropped_row, end_row
from pipeline.config import STAGE_NAMES, ConfigError, StageResources, parse_config
from pipeline.contract import ShardContract
from pipeline.stages import StageChain, StageSpec, build_stage_specs, group_by_declaration
from tests.conftest import RAY_TEST_RESOURCE

CORE_STREAM = ShardContract().stream_schema  # the test stages add no column of their own

# --- declarations -------------------------------------------------------------------------------------


def test_a_stage_declaration_is_the_default_with_the_keys_the_stage_sets():
    config = parse_config(
        {
            "ray": {
                "default": {"num_cpus": 2, "batch_size": 8, "runtime_env": {"env_vars": {"A": "1"}}},
                "stages": {"caption": {"num_gpus": 0.25, "concurrency": [1, 4], "resources": {"big": 1}}},
            }
        }
    )
    caption = config.ray.declaration("caption")
    assert (caption.num_cpus, caption.num_gpus, caption.batch_size) == (2, 0.25, 8)
    assert caption.concurrency == (1, 4) and caption.resources == {"big": 1}
    assert caption.runtime_env == {"env_vars": {"A": "1"}}
    assert config.ray.declaration("measure") == config.ray.default
    assert config.ray.declaration("measure").concurrency is None


def test_an_unknown_stage_name_is_an_error_naming_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        parse_config({"ray": {"stages": {"captoin": {"num_cpus": 1}}}})
    message = str(caught.value)
    assert "invalid value for 'ray.stages'" in message and "unknown stage 'captoin'" in message
    assert (
        "ingest, separate, segment, speaker_consistency, cut, transcribe, measure, caption, verify" in message
    )


@pytest.mark.parametrize(
    ("declaration", "key"),
    [
        ({"concurrency": [4, 1]}, "ray.default"),  # min > max
        ({"concurrency": 0}, "ray.default.concurrency"),
        ({"num_gpus": -0.5}, "ray.default.num_gpus"),
        ({"resources": {"big": 0}}, "ray.default.resources.big"),
    ],
)
def test_a_bad_declaration_names_its_key(declaration, key):
    with pytest.raises(ConfigError, match=f"invalid value for '{key}"):
        parse_config({"ray": {"default": declaration}})


def _names(groups: list[list[StageSpec]]) -> list[list[str]]:
    return [[spec.name for spec in group] for group in groups]


def test_consecutive_stages_with_equal_declarations_share_a_pool():
    assert _names(group_by_declaration(build_stage_specs(parse_config({})))) == [
        ["ingest", "segment", "cut", "measure", "caption", "verify"]
    ]
    gpu = {"num_gpus": 0.5, "batch_size": 4}
    config = parse_config({"ray": {"stages": {"caption": gpu}}})
    assert _names(group_by_declaration(build_stage_specs(config))) == [
        ["ingest", "segment", "cut", "measure"],
        ["caption"],
        ["verify"],  # equal to the default again, but not next to the other default stages
    ]
    config = parse_config({"ray": {"stages": {"caption": gpu, "verify": gpu}}})
    assert _names(group_by_declaration(build_stage_specs(config))) == [
        ["ingest", "segment", "cut", "measure"],
        ["caption", "verify"],
    ]


def test_the_cluster_config_gives_the_source_level_stages_an_autoscaling_pool_of_their_own():
    from pipeline.config import load_config
    from tests.conftest import REPO

    config = load_config(REPO / "configs" / "cpu-cluster.yaml")
    groups = group_by_declaration(build_stage_specs(config))
    assert _names(groups) == [["ingest", "segment", "cut"], ["measure", "caption", "verify"]]
    assert groups[0][0].resources.concurrency == (1, 8) and groups[1][0].resources.concurrency is None


def test_batch_size_defaults_to_one_source_or_a_chunk_of_segments_unless_declared():
    specs = {
        s.name: s for s in build_stage_specs(parse_config({"ray": {"stages": {"verify": {"batch_size": 5}}}}))
    }
    batch_sizes = {name: spec.batch_size for name, spec in specs.items()}
    assert batch_sizes == {"ingest": 1, "segment": 1, "cut": 1, "measure": 32, "caption": 32, "verify": 5}


def test_every_stage_built_is_a_known_stage_in_pipeline_order():
    specs = build_stage_specs(parse_config({"asr": {"backend": "whisper"}}))
    names = [spec.name for spec in specs]
    assert names == sorted(names, key=STAGE_NAMES.index)
    assert names == ["ingest", "segment", "cut", "transcribe", "measure", "caption", "verify"]
    assert all(spec.build.func.name == spec.name for spec in specs)  # the row's error_stage is its name


# --- the chain: streaming anywhere, teardown ----------------------------------------------------------


class Recorder(BatchStage):
    """Test stages append what they saw to a shared log (one process: the local chain)."""

    log: ClassVar[list[str]] = []


class Tag(Recorder):
    """A batch stage on sources: marks them (and fails the one named 'bad')."""

    name: ClassVar[str] = "tag"

    def setup(self) -> None:
        self.log.append("setup tag")

    def teardown(self) -> None:
        self.log.append("teardown tag")

    def __call__(self, rows: list[Row]) -> list[Row]:
        self.log.append(f"tag {len(rows)}")
        if any(row["input_path"] == "bad" for row in rows):
            raise ValueError("bad source")
        return [{**row, "source_id": row["input_path"]} for row in rows]


class Split(Recorder):
    """A streaming stage: a row into `pieces` rows."""

    name: ClassVar[str] = "split"

    def __init__(self, pieces: int) -> None:
        self.pieces = pieces

    def setup(self) -> None:
        self.log.append("setup split")

    def teardown(self) -> None:
        self.log.append("teardown split")

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [out for row in rows for out in self.stream(row)]

    def stream(self, row: Row) -> Iterator[Row]:
        """A source's pieces and its end row; a segment's pieces (a re-split) and no end row."""
        parent = row.get("segment_id") or row["source_id"]
        for index in range(self.pieces):
            self.log.append(f"cut {parent}:{index}")
            yield {**row, "status": STATUS_OK, "segment_id": f"{parent}_{index}", "start_s": float(index)}
        if row.get("segment_id") is None:
            yield end_row(row, "segmented")


class Count(Recorder):
    """A batch stage on segments: records the size of each chunk it gets."""

    name: ClassVar[str] = "count"

    def setup(self) -> None:
        self.log.append("setup count")

    def teardown(self) -> None:
        self.log.append("teardown count")

    def __call__(self, rows: list[Row]) -> list[Row]:
        self.log.append(f"count {len(rows)}")
        return [{**row, "transcript": "counted"} for row in rows]


def _spec(build, takes="segments") -> StageSpec:
    return StageSpec(
        build.name if isinstance(build, type) else build.func.name, build, StageResources(), takes
    )


@pytest.fixture
def chain() -> Iterator[StageChain]:
    Recorder.log.clear()
    yield StageChain([_spec(Tag, "sources"), _spec(partial(Split, 5), "sources"), _spec(Count)])
    Recorder.log.clear()


def test_a_streaming_stage_after_a_batch_stage_streams_its_rows_in_chunks(chain):
    assert Recorder.log == ["setup tag", "setup split", "setup count"]
    Recorder.log.clear()
    sources = [{"input_path": "a", "status": STATUS_OK}, {"input_path": "b", "status": STATUS_OK}]
    chunks = []
    for chunk in chain.stream(sources, chunk_rows=2):
        chunks.append([(row["segment_id"], row["status"], row.get("transcript")) for row in chunk])
    assert [len(chunk) for chunk in chunks] == [2, 2, 2, 2, 2, 2]  # 5 segments + end row per source
    rows = [row for chunk in chunks for row in chunk]
    assert rows[:6] == [*[(f"a_{i}", "ok", "counted") for i in range(5)], (None, "end", None)]
    assert [row[0] for row in rows[6:11]] == [f"b_{i}" for i in range(5)]
    # The batch stage ran once on the batch; then the streaming stage is consumed a chunk at a time.
    assert Recorder.log[:4] == ["tag 2", "cut a:0", "cut a:1", "count 2"]


def test_a_row_that_fails_before_the_streaming_stage_passes_through_it(chain):
    sources = [{"input_path": "bad", "status": STATUS_OK}, {"input_path": "c", "status": STATUS_OK}]
    rows = [row for chunk in chain.stream(sources, chunk_rows=10) for row in chunk]
    failed = [row for row in rows if row["status"] == "failed"]
    assert [(r["input_path"], r["error_stage"], r["error_type"]) for r in failed] == [
        ("bad", "tag", "ValueError")
    ]
    assert [row["segment_id"] for row in rows if row["status"] == "ok"] == [f"c_{i}" for i in range(5)]


def test_two_streaming_stages_in_one_group_both_stream():
    Recorder.log.clear()
    nested = StageChain([_spec(partial(Split, 3), "sources"), _spec(Tag), _spec(partial(Split, 2))])
    source = {"input_path": "s", "status": STATUS_OK, "source_id": "s"}
    chunks = list(nested.stream([source], chunk_rows=2))
    assert max(len(chunk) for chunk in chunks) <= 2
    ok = [row["segment_id"] for chunk in chunks for row in chunk if row["status"] == STATUS_OK]
    assert ok == [f"{sid}_{i}" for sid in ("s_0", "s_1", "s_2") for i in range(2)]
    assert [row["status"] for chunk in chunks for row in chunk][-1] == "end"


class DropOdd(Recorder):
    """A batch stage on segments: drops every segment with an odd start, as a filter stage does."""

    name: ClassVar[str] = "drop_odd"

    def setup(self) -> None: ...

    def teardown(self) -> None: ...

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [dropped_row(row, self.name, "odd") if row["start_s"] % 2 else row for row in rows]


def test_rows_a_stage_drops_keep_their_place_among_the_rows_later_stages_process():
    chain = StageChain(
        [_spec(Tag, "sources"), _spec(partial(Split, 5), "sources"), _spec(DropOdd), _spec(Count)]
    )
    [rows] = list(chain.stream([{"input_path": "a", "status": STATUS_OK}], chunk_rows=10))
    assert [(row.get("start_s"), row["status"]) for row in rows] == [
        (0.0, "ok"), (1.0, "dropped"), (2.0, "ok"), (3.0, "dropped"), (4.0, "ok"), (None, "end"),
    ]  # fmt: skip
    assert [row.get("transcript") for row in rows if row["status"] == "ok"] == ["counted"] * 3
    assert Recorder.log[-3:] == ["count 1", "count 1", "count 1"]  # each run of ok rows in its place


def test_teardown_runs_last_stage_first_and_the_local_executor_tears_down(chain, tmp_path):
    from pipeline.runner import iter_local

    chain.teardown()
    assert Recorder.log[-3:] == ["teardown count", "teardown split", "teardown tag"]
    Recorder.log.clear()
    groups = [[_spec(Tag, "sources"), _spec(partial(Split, 1), "sources")], [_spec(Count)]]
    tables = list(iter_local(groups, [{"input_path": "x", "status": STATUS_OK}], CORE_STREAM))
    assert sum(t.num_rows for t in tables) == 2
    assert Recorder.log[-3:] == ["teardown count", "teardown split", "teardown tag"]


def test_the_local_executor_tears_down_when_a_stage_raises_mid_run():
    from pipeline.runner import iter_local

    Recorder.log.clear()

    class Fatal(Recorder):
        name: ClassVar[str] = "fatal"

        def setup(self) -> None: ...

        def teardown(self) -> None:
            self.log.append("teardown fatal")

        def __call__(self, rows: list[Row]) -> list[Row]:
            raise KeyboardInterrupt  # not an Exception: the chain does not isolate it

    with pytest.raises(KeyboardInterrupt):
        list(iter_local([[_spec(Fatal, "sources")]], [{"input_path": "x", "status": STATUS_OK}], CORE_STREAM))
    assert Recorder.log == ["teardown fatal"]


# --- Ray: two pools, each with its own resources ------------------------------------------------------


class ResourceProbe(BatchStage):
    """Reports, in the row's metadata, which worker process ran it and the resources Ray assigned to it;
    writes a file on teardown so the test sees the pool's actors shut down through the protocol."""

    name: ClassVar[str] = "probe"

    def __init__(self, pool: str, teardown_dir: str) -> None:
        self.pool = pool
        self.teardown_dir = teardown_dir

    def setup(self) -> None: ...

    def teardown(self) -> None:
        with open(os.path.join(self.teardown_dir, f"{self.pool}-{os.getpid()}"), "w"):
            pass

    def __call__(self, rows: list[Row]) -> list[Row]:
        import ray

        report = {
            "pool": self.pool,
            "pid": os.getpid(),
            "assigned": ray.get_runtime_context().get_assigned_resources(),
        }
        return [
            {**row, "metadata": json.dumps([*json.loads(row.get("metadata") or "[]"), report])}
            for row in rows
        ]


def metadata_through_ray(groups: list[list[StageSpec]], sources: int) -> list[object]:
    """Run `sources` rows through the stage groups as Ray pools; each output row's metadata, parsed."""
    from ray import cloudpickle

    from pipeline.runner import iter_ray

    # The workers cannot import this test module: its stage classes travel by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        rows = [{"input_path": f"in{i}", "status": STATUS_OK} for i in range(sources)]
        tables = list(iter_ray(groups, rows, CORE_STREAM))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return [json.loads(value) for table in tables for value in table["metadata"].to_pylist()]


@pytest.mark.slow
def test_two_pools_with_different_declarations_get_their_own_resources(ray_cluster, tmp_path):

    light = StageResources(num_cpus=0.5, resources={RAY_TEST_RESOURCE: 0.5}, concurrency=1)
    full = StageResources(num_cpus=1, concurrency=1)
    groups = group_by_declaration(
        [
            StageSpec("probe", partial(ResourceProbe, "light", str(tmp_path)), light, "sources"),
            StageSpec("probe", partial(ResourceProbe, "full", str(tmp_path)), full, "segments"),
        ]
    )
    assert len(groups) == 2
    reports = metadata_through_ray(groups, sources=4)
    assert len(reports) == 4
    for light_report, full_report in reports:
        assert (light_report["pool"], full_report["pool"]) == ("light", "full")
        assert light_report["assigned"] == {"CPU": 0.5, RAY_TEST_RESOURCE: 0.5}
        assert full_report["assigned"] == {"CPU": 1.0}
    pids = {pool: {r[i]["pid"] for r in reports} for i, pool in enumerate(("light", "full"))}
    assert len(pids["light"]) == len(pids["full"]) == 1 and pids["light"] != pids["full"]
    # Each pool's actor ran its stages' teardown when Ray Data shut the pool down after the run.
    expected = {f"{pool}-{pid}" for pool, (pid,) in pids.items()}
    deadline = time.monotonic() + 30
    while {p.name for p in tmp_path.iterdir()} != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {p.name for p in tmp_path.iterdir()} == expected


def test_every_bundled_config_validates_and_the_gpu_cluster_config_gives_each_model_its_pool():
    from pipeline.config import load_config
    from tests.conftest import REPO

    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name.startswith("train"):
            continue  # training configs have their own model (tests/test_train_cli.py)
        load_config(path)
    config = load_config(REPO / "configs" / "cluster.yaml")
    groups = group_by_declaration(build_stage_specs(config, work_dir=REPO / "work"))
    assert _names(groups) == [
        ["ingest"], ["separate"], ["segment"], ["speaker_consistency"], ["cut"], ["measure"],
        ["caption"], ["verify"],
    ]  # fmt: skip
    declared = {group[0].name: group[0].resources for group in groups}
    assert (declared["separate"].num_gpus, declared["segment"].num_gpus) == (0.25, 1.0)
    # The captioner's pools hold 2 GPUs per worker, its engine's tensor parallelism.
    assert declared["caption"].num_gpus == config.caption.vllm.engine.tensor_parallel_size == 2
    assert declared["verify"].num_gpus == 1
    assert declared["separate"].concurrency == (1, 16) and declared["measure"].batch_size == 64


class SlowSource(BatchStage):
    """A source-level stage whose first worker to set up is ready at once and the others only later,
    as when one worker loads its models faster; each source takes a while and reports its worker."""

    name: ClassVar[str] = "slow_source"

    def __init__(self, token_dir: str) -> None:
        self.token_dir = token_dir

    def setup(self) -> None:
        try:
            os.close(os.open(os.path.join(self.token_dir, "first"), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            time.sleep(1.5)

    def __call__(self, rows: list[Row]) -> list[Row]:
        time.sleep(4.0)
        return [{**row, "metadata": json.dumps({"pid": os.getpid()})} for row in rows]


@pytest.mark.slow
def test_a_source_waits_for_an_idle_worker_instead_of_queueing_behind_another(ray_cluster, tmp_path):

    pool = StageResources(num_cpus=1, concurrency=2)
    stage = StageSpec("slow_source", partial(SlowSource, str(tmp_path)), pool, "sources")
    pids = [report["pid"] for report in metadata_through_ray(group_by_declaration([stage]), sources=2)]
    assert len(pids) == 2 and pids[0] != pids[1]
