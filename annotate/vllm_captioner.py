"""The `vllm` captioner: Qwen3-Omni hears each segment and writes K free-text views (FCaps), in-process.

Two model kinds: the Qwen3-Omni Captioner takes audio alone (no prompt, fine views only); an Instruct
model takes a prompt from `configs/prompts/` after the audio, for fine views and a one-sentence global
view. The prompt text is rendered by the model's own processor (its chat template), and each caption
records the prompt id and a hash of the prompt file. Seeds, cleaning and provenance are
annotate/llm_captioner.py's; a batch the engine fails is retried on a rebuilt engine.
"""

from __future__ import annotations

import gc
import logging
from typing import Annotated, Any, ClassVar

from pydantic import Field

from annotate.audio import SAMPLE_RATE
from annotate.llm_captioner import (
    CaptionerSettings,
    LlmCaptioner,
    Segment,
)
from annotate.llm_engine import VllmEngineConfig, text_hash

log = logging.getLogger(__name__)


class VllmCaptionerConfig(CaptionerSettings):
    engine: VllmEngineConfig
    engine_restarts: Annotated[int, Field(ge=0)] = Field(
        default=2, description="An engine that fails a batch is rebuilt and the batch retried this often."
    )


class VllmCaptioner(LlmCaptioner):
    backend: ClassVar[str] = "vllm"
    config: VllmCaptionerConfig

    def __init__(self, config: VllmCaptionerConfig) -> None:
        super().__init__(config, config.engine.model_id)
        self._llm: Any = None

    def setup(self) -> None:
        from transformers import AutoProcessor

        config = self.config
        processor = AutoProcessor.from_pretrained(config.engine.model, revision=config.engine.revision)
        for granularity, (prompt_id, text) in self.prompt_texts().items():
            rendered = _render(processor, text)
            # The Captioner kind's prompt is the template around the audio: its rendering is hashed.
            self._prompts[granularity] = (prompt_id, text_hash(rendered if text is None else text), rendered)
        self._start_engine()

    def _start_engine(self) -> None:
        self._llm = self.config.engine.build(limit_mm_per_prompt={"audio": 1, "image": 0, "video": 0})

    def teardown(self) -> None:
        self._llm = None
        gc.collect()

    def caption(self, segments: list[Segment]) -> list[list[dict[str, Any]]]:
        """Each segment's views, fine ones first, for (segment id, 16 kHz waveform, transcript or None)."""
        requests, params, owners = self.requests(segments)
        captions: list[list[dict[str, Any]]] = [[] for _ in segments]
        for (index, granularity, seed), output in zip(owners, self._generate(requests, params), strict=True):
            transcript = segments[index][2]
            for view, sample in enumerate(output.outputs):
                captions[index].append(self.record(sample.text, granularity, view, seed + view, transcript))
        return captions

    def requests(
        self, segments: list[Segment]
    ) -> tuple[list[dict[str, Any]], list[Any], list[tuple[int, str, int]]]:
        """`LLM.generate`'s requests and sampling parameters for the segments, and for each request the
        segment's index, the granularity and the first seed: one request of K fine views and one of
        the global view per segment."""
        from vllm import SamplingParams

        requests, params, owners = [], [], []
        for index, (segment_id, wave, _) in enumerate(segments):
            for granularity, (_, _, prompt) in self._prompts.items():
                seeds = self.view_seeds(segment_id, granularity)
                requests.append({"prompt": prompt, "multi_modal_data": {"audio": (wave, SAMPLE_RATE)}})
                params.append(SamplingParams(n=len(seeds), seed=seeds[0], **self.sampling()))
                owners.append((index, granularity, seeds[0]))
        return requests, params, owners

    def _generate(self, requests: list[dict[str, Any]], params: list[Any]) -> list[Any]:
        """`LLM.generate`, with the engine rebuilt and the batch retried if it fails."""
        if not requests:
            return []
        for attempt in range(self.config.engine_restarts + 1):
            try:
                return self._llm.generate(requests, params, use_tqdm=False)
            except Exception as error:
                if attempt == self.config.engine_restarts:
                    raise
                log.warning("vLLM engine failed a batch (%s: %s); restarting it", type(error).__name__, error)
                self.teardown()
                self._start_engine()
        raise AssertionError("unreachable")


def _render(processor: Any, text: str | None) -> str:
    """The model's own chat template around one audio (and the prompt, if any)."""
    content: list[dict[str, Any]] = [{"type": "audio", "audio": "segment.wav"}]
    if text is not None:
        content.append({"type": "text", "text": text})
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
