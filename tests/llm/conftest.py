"""LLM fixtures: tiny random Qwen3-Omni thinkers and Qwen3, built once per session, and vLLM settings.

The checkpoints come from `scripts/make_tiny_models.py` (what `make tiny-models` runs): the real classes,
processors, tokenizers and chat templates with random weights, so vLLM and transformers load them
through their ordinary code paths. Their text is noise; equality of tokens between engines is not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.conftest import speak

# vLLM on CPU reads these when an engine starts, in this process and in the Ray workers and servers
# the tests start (they inherit the environment):
VLLM_CPU_ENV = {
    # KV cache size in GiB; the default (4 GiB per engine) is needless for tiny models.
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # Run the engine core in the caller's process: about 7 s to start a tiny engine instead of 80 s,
    # since every spawned process re-imports torch and vLLM on our 2 cores. `vllm serve` still
    # runs its engine in a child process whatever this says.
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _key, _value in VLLM_CPU_ENV.items():
    os.environ.setdefault(_key, _value)

SAMPLE_RATE = 16000
# vLLM zero-pads audio to a whole number of 10 ms mel hops before feature extraction (transformers does
# not), which can add one audio token; clips cut to whole hops get the same tokens in both.
MEL_HOP = 160
# Text prompt of the Instruct flavour; the Captioner flavour gets audio alone.
INSTRUCT_PROMPT = "Describe the speaking style of the voice in one sentence."


def tiny_engine_args(model_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` that start a tiny model on CPU in a few seconds.

    float32 so that greedy tokens equal transformers' (also float32); eager mode (no torch.compile);
    the single-process executor ("uni"), which also works inside a Ray actor; one audio per prompt.
    """
    args: dict[str, Any] = {
        "model": str(model_dir),
        "dtype": "float32",
        "max_model_len": 2048,
        "enforce_eager": True,
        "distributed_executor_backend": "uni",
        "seed": 0,
    }
    return args | overrides


def omni_engine_args(model_dir: Path, **overrides: Any) -> dict[str, Any]:
    """`tiny_engine_args` for a Qwen3-Omni thinker: one audio per prompt, no images or video."""
    return tiny_engine_args(model_dir, limit_mm_per_prompt={"audio": 1, "image": 0, "video": 0}, **overrides)


def omni_messages(text: str | None) -> list[dict[str, Any]]:
    """One user turn holding an audio item (and the text, if any), in the processor's message format."""
    content: list[dict[str, Any]] = [{"type": "audio", "audio": "segment.wav"}]
    if text is not None:
        content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def omni_prompt(model_dir: Path, text: str | None) -> str:
    """The prompt text the model's own processor renders for one audio (and the text, if any)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    return processor.apply_chat_template(omni_messages(text), add_generation_prompt=True, tokenize=False)


def transformers_greedy(model_dir: Path, prompt: str, audio: np.ndarray, max_new_tokens: int) -> list[int]:
    """Greedy tokens of the thinker under transformers (float32): what vLLM must reproduce."""
    import torch
    from transformers import AutoProcessor, Qwen3OmniMoeForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen3OmniMoeForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    inputs = processor(text=prompt, audio=[audio], return_tensors="pt")
    out = model.thinker.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """Session folder that the tiny model fixtures build into."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_omni_instruct_dir(tiny_models_dir) -> Path:
    """Tiny Qwen3-Omni thinker checkpoint in the layout of Qwen3-Omni-30B-A3B-Instruct (prompt + audio)."""
    from make_tiny_models import MODELS

    return MODELS["qwen3-omni-instruct"](tiny_models_dir / "qwen3-omni-instruct")


@pytest.fixture(scope="session")
def tiny_omni_captioner_dir(tiny_models_dir) -> Path:
    """Tiny Qwen3-Omni thinker checkpoint in the layout of Qwen3-Omni-30B-A3B-Captioner (audio only)."""
    from make_tiny_models import MODELS

    return MODELS["qwen3-omni-captioner"](tiny_models_dir / "qwen3-omni-captioner")


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tiny_models_dir) -> Path:
    """Tiny Qwen3ForCausalLM checkpoint with the real Qwen3 chat template (enable_thinking on/off)."""
    from make_tiny_models import MODELS

    return MODELS["qwen3"](tiny_models_dir / "qwen3")


@pytest.fixture(scope="session")
def speech_clips(tmp_path_factory) -> list[np.ndarray]:
    """Three real speech clips (espeak-ng, different voices), 16 kHz mono float32, about 2 s long, each a
    whole number of MEL_HOP samples."""
    folder = tmp_path_factory.mktemp("speech")
    voices = [("en-us", "A calm voice reads the weather."), ("en-gb", "Hurry, the train leaves soon!"),
              ("en-us+f3", "Well, I suppose we could try.")]  # fmt: skip
    clips = []
    for index, (voice, text) in enumerate(voices):
        audio, rate = sf.read(speak(folder / f"{index}.wav", text, "-v", voice), dtype="float32")
        clip = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
        clips.append(clip[: clip.size // MEL_HOP * MEL_HOP])
    return clips
