"""The `vllm` captioner: Qwen3-Omni hears each segment and writes K free-text views (FCaps), in-process.

Two model kinds: the Qwen3-Omni Captioner takes audio alone (no prompt, fine views only); an Instruct
model takes a prompt from `configs/prompts/` after the audio, for fine views and a one-sentence global
view. The prompt text is rendered by the model's own processor (its chat template), and each caption
records the prompt id and a hash of the prompt file.

Seeds: vLLM draws sample i of a request seeded s with seed s + i, so a segment's requests get seeds
`base + stride * h(segment_id) + j`, h a 48-bit hash of the segment id and stride more than the seeds
one segment uses: two segments share a seed only if their ids' hashes collide (odds 2^-48 a pair).

Output is cleaned (thinking blocks removed, whitespace collapsed) or rejected with a reason (empty,
unterminated thinking, repeated n-grams, the transcript itself): a rejected view stays in the row with
a failed verdict naming the reason, so nothing is silently lost; later verifiers keep that verdict.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from annotate.audio import SAMPLE_RATE, decode_flac
from annotate.base import BatchStage, Row, StrictConfig, dropped_row
from annotate.caption_types import CAPTIONS_COLUMN
from annotate.llm_engine import VllmEngineConfig, sampling_json, text_hash

log = logging.getLogger(__name__)

BACKEND = "vllm"
CAPTIONER_VERIFIER = "captioner-output"  # the verdict's author for views rejected here
DROP_AUDIO_TOO_LONG = "audio_too_long_for_captioner"
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "configs" / "prompts"
_AUDIO_ONLY = "audio-only"  # prompt id of the Captioner kind
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


class VllmCaptionerConfig(StrictConfig):
    engine: VllmEngineConfig
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
    engine_restarts: Annotated[int, Field(ge=0)] = Field(
        default=2, description="An engine that fails a batch is rebuilt and the batch retried this often."
    )
    max_repeats: Annotated[int, Field(ge=2)] = Field(
        default=3, description="A view in which one 4-word sequence occurs this often is degenerate."
    )

    @model_validator(mode="after")
    def _captioner_takes_no_prompt(self) -> VllmCaptionerConfig:
        if self.kind == "captioner" and self.global_view:
            raise ValueError(
                "the Captioner kind takes no prompt, so it writes no global view: set global_view false "
                "(caption.global_backend: acoustic takes the global view from the tags)"
            )
        return self

    @property
    def writes_global(self) -> bool:
        return self.kind == "instruct" if self.global_view is None else self.global_view


def request_seed(segment_id: str, base: int, stride: int) -> int:
    """The first seed of a segment's requests; the segment uses seeds up to `stride` - 1 above it."""
    digest = int(hashlib.sha256(segment_id.encode()).hexdigest()[:12], 16)
    return base + stride * digest


def load_prompt(folder: Path, prompt_id: str) -> str:
    path = folder / f"{prompt_id}.txt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.txt"))) or "none"
        raise FileNotFoundError(f"no prompt {prompt_id!r}: {path} does not exist (prompts there: {known})")
    return path.read_text().strip()


def clean_view(text: str, transcript: str | None, max_repeats: int) -> tuple[str, str | None]:
    """The view as it will be stored, and why it is rejected (None if it is not)."""
    text = _THINK.sub(" ", text)
    if "<think>" in text or "</think>" in text:
        return " ".join(text.split()), "thinking_left_over"
    text = " ".join(text.split())
    if not text:
        return text, "empty"
    words = re.findall(r"[\w']+", text.lower())
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    if grams and max(grams.values()) >= max_repeats:
        return text, "repeated_ngrams"
    if transcript and _is_transcript(words, transcript):
        return text, "transcript"
    return text, None


def _is_transcript(words: list[str], transcript: str) -> bool:
    """The view is (nearly) the spoken words: a bare transcript, not a description."""
    spoken = re.findall(r"[\w']+", transcript.lower())
    return bool(spoken) and difflib.SequenceMatcher(None, words, spoken).ratio() >= 0.8


class VllmCaptioner(BatchStage):
    name: ClassVar[str] = "caption"
    columns: ClassVar[tuple[pa.Field, ...]] = (CAPTIONS_COLUMN,)

    def __init__(self, config: VllmCaptionerConfig) -> None:
        self.config = config
        self._llm: Any = None
        self._prompts: dict[str, tuple[str, str, str]] = {}  # granularity -> (id, hash, rendered prompt)

    @property
    def stride(self) -> int:
        """Seeds one segment uses: its K fine views and one global view."""
        return self.config.views + 1

    def setup(self) -> None:
        from transformers import AutoProcessor

        config = self.config
        processor = AutoProcessor.from_pretrained(config.engine.model, revision=config.engine.revision)
        if config.kind == "captioner":
            rendered = _render(processor, None)
            self._prompts = {"fine": (_AUDIO_ONLY, text_hash(rendered), rendered)}
        else:
            wanted = {"fine": config.fine_prompt} | (
                {"global": config.global_prompt} if config.writes_global else {}
            )
            for granularity, prompt_id in wanted.items():
                text = load_prompt(config.prompts_dir, prompt_id)
                self._prompts[granularity] = (prompt_id, text_hash(text), _render(processor, text))
        self._start_engine()

    def _start_engine(self) -> None:
        self._llm = self.config.engine.build(limit_mm_per_prompt={"audio": 1, "image": 0, "video": 0})

    def teardown(self) -> None:
        self._llm = None
        gc.collect()

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
        requests, params, owners = self.requests(segments)
        captions: list[list[dict[str, Any]]] = [[] for _ in segments]
        for (index, granularity, seed), output in zip(owners, self._generate(requests, params), strict=True):
            transcript = segments[index][2]
            for view, sample in enumerate(output.outputs):
                captions[index].append(self._record(sample.text, granularity, view, seed + view, transcript))
        return captions

    def requests(
        self, segments: list[tuple[str, np.ndarray, str | None]]
    ) -> tuple[list[dict[str, Any]], list[Any], list[tuple[int, str, int]]]:
        """`LLM.generate`'s requests and sampling parameters for the segments, and for each request the
        segment's index, the granularity and the first seed: one request of K fine views and one of
        the global view per segment."""
        from vllm import SamplingParams

        requests, params, owners = [], [], []
        for index, (segment_id, wave, _) in enumerate(segments):
            first = request_seed(segment_id, self.config.seed, self.stride)
            for granularity, (_, _, prompt) in self._prompts.items():
                fine = granularity == "fine"
                seed = first if fine else first + self.config.views
                requests.append({"prompt": prompt, "multi_modal_data": {"audio": (wave, SAMPLE_RATE)}})
                params.append(
                    SamplingParams(n=self.config.views if fine else 1, seed=seed, **self._sampling())
                )
                owners.append((index, granularity, seed))
        return requests, params, owners

    def _sampling(self) -> dict[str, Any]:
        config = self.config
        return {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            "max_tokens": config.max_tokens,
        }

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

    def _record(
        self, raw: str, granularity: str, view: int, seed: int, transcript: str | None
    ) -> dict[str, Any]:
        text, rejected = clean_view(raw, transcript, self.config.max_repeats)
        prompt_id, prompt_hash, _ = self._prompts[granularity]
        verdict = None
        if rejected is not None:
            verdict = {
                "passed": False,
                "failed_checks": [f"output_{rejected}"],
                "reasons": [f"output_{rejected}: the captioner's output was {rejected.replace('_', ' ')}"],
                "verifier": CAPTIONER_VERIFIER,
            }
        return {
            "text": text,
            "granularity": granularity,
            "view": view,
            "backend": BACKEND,
            "model": self.config.engine.model_id,
            "prompt_id": prompt_id,
            "prompt_hash": prompt_hash,
            "seed": seed,
            "sampling": sampling_json(self._sampling()),
            "verdict": verdict,
        }


def _render(processor: Any, text: str | None) -> str:
    """The model's own chat template around one audio (and the prompt, if any)."""
    content: list[dict[str, Any]] = [{"type": "audio", "audio": "segment.wav"}]
    if text is not None:
        content.append({"type": "text", "text": text})
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
