"""vLLM built inside a Ray Data actor (ActorPoolStrategy size 1) on a real local Ray cluster."""

from __future__ import annotations

import numpy as np
import pytest

from tests.llm.conftest import INSTRUCT_PROMPT, SAMPLE_RATE, VLLM_CPU_ENV, omni_engine_args, omni_prompt

pytestmark = pytest.mark.slow

VIEWS = 3


def view_params(seed: int):
    """VIEWS samples with CLSP's sampling recipe, seeded."""
    from vllm import SamplingParams

    return SamplingParams(n=VIEWS, seed=seed, temperature=0.6, top_p=0.95, top_k=20, max_tokens=12)


class CaptionActor:
    """Builds the engine once per actor (in its constructor) and writes VIEWS seeded samples per row."""

    def __init__(self, engine_args: dict, prompt: str):
        from vllm import LLM

        self.llm = LLM(**engine_args)
        self.prompt = prompt

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        requests = [
            {"prompt": self.prompt, "multi_modal_data": {"audio": (np.asarray(audio), SAMPLE_RATE)}}
            for audio in batch["audio"]
        ]
        params = [view_params(int(seed)) for seed in batch["seed"]]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        # Lists of lists become Arrow list columns; a numpy object array of lists would be pickled.
        return {
            "segment_id": list(batch["segment_id"]),
            "view_tokens": [[list(view.token_ids) for view in out.outputs] for out in outputs],
        }


def test_engine_in_a_map_batches_actor_returns_the_seeded_views_of_every_segment(
    ray_cluster, tiny_omni_instruct_dir, speech_clips
):
    import ray
    from vllm import LLM

    prompt = omni_prompt(tiny_omni_instruct_dir, INSTRUCT_PROMPT)
    # Seeds VIEWS apart: sample i of seed s is seed s + i, so closer seeds would repeat views.
    rows = [
        {"segment_id": f"seg{i}", "audio": clip, "seed": 1000 + VIEWS * i}
        for i, clip in enumerate(speech_clips * 2)
    ]
    engine_args = omni_engine_args(tiny_omni_instruct_dir)

    result = (
        ray.data.from_items(rows)
        .map_batches(
            CaptionActor,
            fn_constructor_kwargs={"engine_args": engine_args, "prompt": prompt},
            batch_size=3,
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=1,
            # The actor's own environment, as a stage would declare it.
            runtime_env={"env_vars": VLLM_CPU_ENV},
        )
        .take_all()
    )

    by_segment = {row["segment_id"]: row["view_tokens"] for row in result}
    assert sorted(by_segment) == sorted(row["segment_id"] for row in rows)
    # The same engine built in this process gives the same views for the same seeds.
    local = LLM(**engine_args)
    for row in rows:
        request = {"prompt": prompt, "multi_modal_data": {"audio": (row["audio"], SAMPLE_RATE)}}
        (expected,) = local.generate(request, view_params(row["seed"]), use_tqdm=False)
        assert [list(v) for v in by_segment[row["segment_id"]]] == [
            list(v.token_ids) for v in expected.outputs
        ]
