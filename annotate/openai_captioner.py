"""The `openai` captioner: the `vllm` captioner's views from a model behind an OpenAI-compatible server
(`vllm serve`, or any server with chat completions that take `input_audio`).

It writes what annotate/vllm_captioner.py writes, the same way: K fine views and (Instruct kind) one
global view per segment, seeded with `request_seed`, cleaned or rejected by `clean_view`, recorded with
the prompt id and the hash of the prompt file. What differs:

- The server renders the chat template: a request is one user turn, the audio as a base64 WAV
  `input_audio` part (16-bit, the shard audio's own resolution, so nothing is lost), then the prompt as
  a text part (the Captioner kind sends the audio alone: its prompt hash is that of the empty text).
- One request per view, each with its own seed: fine view i of a segment is seeded `first + i`, the
  global view `first + K`. vLLM seeds sample i of an `n`-sample request seeded s with s + i, so these
  are the in-process captioner's samples, but a request per view does not depend on that: any
  server that honours `seed` reproduces a view from the seed recorded with it.
- top_k is not an OpenAI parameter: it goes in the request body as vLLM reads it (`extra_body`), and is
  left out when it is -1 or 0 (no top-k), for servers that refuse unknown parameters.
- Provenance: backend "openai", model the served model name.

Requests go out concurrently (annotate/openai_client.py: bounded, retried on 429, 5xx and network
errors); a request that fails for good fails the batch, as an engine failure does in-process.
"""

from __future__ import annotations

import base64
import io
from typing import Any, ClassVar

import numpy as np
import soundfile as sf

from annotate.audio import SAMPLE_RATE
from annotate.llm_captioner import (
    CaptionerSettings,
    LlmCaptioner,
    Segment,
)
from annotate.llm_engine import text_hash
from annotate.openai_client import ChatClient, OpenAIEndpointConfig


class OpenAICaptionerConfig(CaptionerSettings):
    """The server in place of the vllm backend's `engine` (and no engine restarts: requests are retried)."""

    endpoint: OpenAIEndpointConfig


class OpenAICaptioner(LlmCaptioner):
    backend: ClassVar[str] = "openai"
    config: OpenAICaptionerConfig

    def __init__(self, config: OpenAICaptionerConfig) -> None:
        super().__init__(config, config.endpoint.model)
        self.client = ChatClient(config.endpoint)
        # granularity -> (prompt id, hash, text sent after the audio or None); read here, so that a
        # missing prompt file fails when the stage is built, not in a worker.
        for granularity, (prompt_id, text) in self.prompt_texts().items():
            # The Captioner kind sends the audio alone: the hash is the empty text's.
            self._prompts[granularity] = (prompt_id, text_hash(text or ""), text)

    def setup(self) -> None:
        self.client.setup()

    def teardown(self) -> None:
        self.client.close()

    def caption(self, segments: list[Segment]) -> list[list[dict[str, Any]]]:
        """Each segment's views, fine ones first, for (segment id, 16 kHz waveform, transcript or None)."""
        requests, owners = self.requests(segments)
        captions: list[list[dict[str, Any]]] = [[] for _ in segments]
        responses = self.client.complete_all(requests)
        for (index, granularity, view, seed), response in zip(owners, responses, strict=True):
            text = response.choices[0].message.content or ""
            captions[index].append(self.record(text, granularity, view, seed, segments[index][2]))
        return captions

    def requests(
        self, segments: list[Segment]
    ) -> tuple[list[dict[str, Any]], list[tuple[int, str, int, int]]]:
        """The chat-completion requests for the segments (keyword arguments of `create`), and for each
        the segment's index, the granularity, the view and its seed: K fine views, then the global one."""
        config = self.config
        sampling: dict[str, Any] = {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
        }
        if config.top_k > 0:
            sampling["extra_body"] = {"top_k": config.top_k}
        requests, owners = [], []
        for index, (segment_id, wave, _) in enumerate(segments):
            audio = input_audio(wave)  # one encoding, shared by the segment's requests
            for granularity, (_, _, text) in self._prompts.items():
                content = [audio] if text is None else [audio, {"type": "text", "text": text}]
                messages = [{"role": "user", "content": content}]
                for view, seed in enumerate(self.view_seeds(segment_id, granularity)):
                    requests.append(
                        {"model": config.endpoint.model, "messages": messages, "seed": seed, **sampling}
                    )
                    owners.append((index, granularity, view, seed))
        return requests, owners


def input_audio(wave: np.ndarray) -> dict[str, Any]:
    """An OpenAI `input_audio` content part: the 16 kHz waveform as base64 16-bit WAV."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
