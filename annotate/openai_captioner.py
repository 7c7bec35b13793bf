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
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import soundfile as sf
from pydantic import Field, model_validator

from annotate.audio import SAMPLE_RATE, decode_flac
from annotate.base import BatchStage, Row, StrictConfig, dropped_row
from annotate.caption_types import CAPTIONS_COLUMN
from annotate.llm_engine import sampling_json, text_hash
from annotate.openai_client import ChatClient, OpenAIEndpointConfig
from annotate.vllm_captioner import (
    CAPTIONER_VERIFIER,
    DROP_AUDIO_TOO_LONG,
    PROMPTS_DIR,
    clean_view,
    load_prompt,
    request_seed,
)

BACKEND = "openai"
_AUDIO_ONLY = "audio-only"  # prompt id of the Captioner kind, as the vllm backend records it


class OpenAICaptionerConfig(StrictConfig):
    """The server, then VllmCaptionerConfig's caption settings field for field (a test checks that
    they agree), so that the two backends' config sections read alike: `endpoint` takes the place of
    `engine`, and there is no `engine_restarts` (requests are retried instead)."""

    endpoint: OpenAIEndpointConfig
    kind: Literal["captioner", "instruct"] = Field(
        default="instruct",
        description="captioner: Qwen3-Omni-30B-A3B-Captioner (audio only, fine views); instruct: a "
        "Qwen3-Omni Instruct model given the prompts (fine views and a global view).",
    )
    views: Annotated[int, Field(ge=1, le=32)] = Field(default=3, description="Fine views per segment (K).")
    global_view: bool | None = Field(
        default=None, description="A one-sentence global view; default: yes for instruct, no for captioner."
    )
    fine_prompt: str = "fine-v1"
    global_prompt: str = "global-v1"
    prompts_dir: Path = Field(default=PROMPTS_DIR, description="Folder of <prompt id>.txt files.")
    temperature: Annotated[float, Field(ge=0)] = 0.6  # CLSP's recipe
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    top_k: Annotated[int, Field(ge=-1)] = 20
    max_tokens: Annotated[int, Field(ge=1)] = 256
    seed: Annotated[int, Field(ge=0)] = 0
    max_audio_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="Longer segments are dropped as audio_too_long_for_captioner."
    )
    max_repeats: Annotated[int, Field(ge=2)] = Field(
        default=3, description="A view in which one 4-word sequence occurs this often is degenerate."
    )

    @model_validator(mode="after")
    def _captioner_takes_no_prompt(self) -> OpenAICaptionerConfig:
        if self.kind == "captioner" and self.global_view:
            raise ValueError(
                "the Captioner kind takes no prompt, so it writes no global view: set global_view false "
                "(caption.global_backend: acoustic takes the global view from the tags)"
            )
        return self

    @property
    def writes_global(self) -> bool:
        return self.kind == "instruct" if self.global_view is None else self.global_view


class OpenAICaptioner(BatchStage):
    name: ClassVar[str] = "caption"
    columns: ClassVar[tuple[pa.Field, ...]] = (CAPTIONS_COLUMN,)

    def __init__(self, config: OpenAICaptionerConfig) -> None:
        self.config = config
        self.client = ChatClient(config.endpoint)
        # granularity -> (prompt id, hash, text sent after the audio or None); read here, so that a
        # missing prompt file fails when the stage is built, not in a worker.
        self._prompts: dict[str, tuple[str, str, str | None]] = {}
        if config.kind == "captioner":
            self._prompts["fine"] = (_AUDIO_ONLY, text_hash(""), None)
        else:
            wanted = {"fine": config.fine_prompt} | (
                {"global": config.global_prompt} if config.writes_global else {}
            )
            for granularity, prompt_id in wanted.items():
                text = load_prompt(config.prompts_dir, prompt_id)
                self._prompts[granularity] = (prompt_id, text_hash(text), text)

    @property
    def stride(self) -> int:
        """Seeds one segment uses: its K fine views and one global view (as the vllm backend)."""
        return self.config.views + 1

    def setup(self) -> None:
        self.client.setup()

    def teardown(self) -> None:
        self.client.close()

    def __call__(self, rows: list[Row]) -> list[Row]:
        """The rows with this captioner's views appended to their `captions`; a segment longer than
        `max_audio_s` is dropped with that reason instead."""
        out: list[Row] = []
        kept: list[tuple[int, np.ndarray]] = []
        for row in rows:
            wave = decode_flac(row["audio"]["bytes"])
            if wave.size > self.config.max_audio_s * SAMPLE_RATE:
                out.append(dropped_row(row, self.name, DROP_AUDIO_TOO_LONG, wave.size / SAMPLE_RATE))
            else:
                kept.append((len(out), wave))
                out.append(row)
        views = self.caption([(out[i]["segment_id"], wave, out[i].get("transcript")) for i, wave in kept])
        for (index, _), captions in zip(kept, views, strict=True):
            out[index] = {**out[index], "captions": [*(out[index].get("captions") or []), *captions]}
        return out

    def caption(self, segments: list[tuple[str, np.ndarray, str | None]]) -> list[list[dict[str, Any]]]:
        """Each segment's views, fine ones first, for (segment id, 16 kHz waveform, transcript or None)."""
        requests, owners = self.requests(segments)
        captions: list[list[dict[str, Any]]] = [[] for _ in segments]
        responses = self.client.complete_all(requests)
        for (index, granularity, view, seed), response in zip(owners, responses, strict=True):
            text = response.choices[0].message.content or ""
            captions[index].append(self._record(text, granularity, view, seed, segments[index][2]))
        return captions

    def requests(
        self, segments: list[tuple[str, np.ndarray, str | None]]
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
            first = request_seed(segment_id, config.seed, self.stride)
            for granularity, (_, _, text) in self._prompts.items():
                content = [audio] if text is None else [audio, {"type": "text", "text": text}]
                messages = [{"role": "user", "content": content}]
                fine = granularity == "fine"
                for view in range(config.views if fine else 1):
                    seed = first + view if fine else first + config.views
                    requests.append(
                        {"model": config.endpoint.model, "messages": messages, "seed": seed, **sampling}
                    )
                    owners.append((index, granularity, view, seed))
        return requests, owners

    def _sampling(self) -> dict[str, Any]:
        """The sampling parameters as provenance records them: the vllm backend's keys and values."""
        config = self.config
        return {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            "max_tokens": config.max_tokens,
        }

    def _record(
        self, raw: str, granularity: str, view: int, seed: int, transcript: str | None
    ) -> dict[str, Any]:
        text, rejected = clean_view(raw, transcript, self.config.max_repeats)
        prompt_id, prompt_hash, _ = self._prompts[granularity]
        return {
            "text": text,
            "granularity": granularity,
            "view": view,
            "backend": BACKEND,
            "model": self.config.endpoint.model,
            "prompt_id": prompt_id,
            "prompt_hash": prompt_hash,
            "seed": seed,
            "sampling": sampling_json(self._sampling()),
            "verdict": None if rejected is None else rejected_verdict(rejected),
        }


def rejected_verdict(reason: str) -> dict[str, Any]:
    """The failed verdict of a view `clean_view` rejected, as the vllm backend writes it."""
    return {
        "passed": False,
        "failed_checks": [f"output_{reason}"],
        "reasons": [f"output_{reason}: the captioner's output was {reason.replace('_', ' ')}"],
        "verifier": CAPTIONER_VERIFIER,
    }


def input_audio(wave: np.ndarray) -> dict[str, Any]:
    """An OpenAI `input_audio` content part: the 16 kHz waveform as base64 16-bit WAV."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
