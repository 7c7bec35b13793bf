"""What the LLM captioners share, whichever backend runs the model (annotate/vllm_captioner.py
in-process, annotate/openai_captioner.py against a server): settings, prompts, seeds, cleaning, and a
base stage that drops over-long segments and records each view with its provenance.

Seeds: vLLM draws sample i of a request seeded s with seed s + i, so a segment's views get seeds
`base + stride * h(segment_id) + j`, h a 48-bit hash of the segment id and stride more than the seeds
one segment uses: two segments share a seed only if their ids' hashes collide (odds 2^-48 a pair).

Output is cleaned (thinking blocks removed, whitespace collapsed) or rejected with a reason (empty,
unterminated thinking, repeated n-grams, the transcript): a rejected view stays in the row with a
failed verdict naming the reason, so nothing is silently lost; later verifiers keep that verdict.
"""

from __future__ import annotations

import difflib
import hashlib
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
from annotate.llm_engine import sampling_json

CAPTIONER_VERIFIER = "captioner-output"  # the verdict's author for views rejected here
DROP_AUDIO_TOO_LONG = "audio_too_long_for_captioner"
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "configs" / "prompts"
AUDIO_ONLY = "audio-only"  # prompt id of the Captioner kind
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)

Segment = tuple[str, np.ndarray, "str | None"]  # segment id, 16 kHz waveform, transcript


class CaptionerSettings(StrictConfig):
    """What an LLM captioner writes, whichever backend runs the model (in-process vLLM, a server)."""

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
    def _captioner_takes_no_prompt(self) -> CaptionerSettings:
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


def rejected_verdict(reason: str) -> dict[str, Any]:
    """The failed verdict of a view `clean_view` rejected."""
    return {
        "passed": False,
        "failed_checks": [f"output_{reason}"],
        "reasons": [f"output_{reason}: the captioner's output was {reason.replace('_', ' ')}"],
        "verifier": CAPTIONER_VERIFIER,
    }


class LlmCaptioner(BatchStage):
    """A captioner backend: `caption(segments)` gives each segment's views (built with `record`)."""

    name: ClassVar[str] = "caption"
    columns: ClassVar[tuple[pa.Field, ...]] = (CAPTIONS_COLUMN,)
    backend: ClassVar[str]

    def __init__(self, config: CaptionerSettings, model_id: str) -> None:
        self.config = config
        self.model_id = model_id
        # granularity -> (prompt id, hash, what the backend sends), filled in by the backend
        self._prompts: dict[str, tuple[str, str, Any]] = {}

    @property
    def stride(self) -> int:
        """Seeds one segment uses: its K fine views and one global view."""
        return self.config.views + 1

    def caption(self, segments: list[Segment]) -> list[list[dict[str, Any]]]:
        raise NotImplementedError

    def prompt_texts(self) -> dict[str, tuple[str, str | None]]:
        """Per granularity this captioner writes, the prompt id and text (None for the Captioner kind,
        which hears the audio alone)."""
        config = self.config
        if config.kind == "captioner":
            return {"fine": (AUDIO_ONLY, None)}
        wanted = {"fine": config.fine_prompt} | (
            {"global": config.global_prompt} if config.writes_global else {}
        )
        return {
            granularity: (prompt_id, load_prompt(config.prompts_dir, prompt_id))
            for granularity, prompt_id in wanted.items()
        }

    def view_seeds(self, segment_id: str, granularity: str) -> list[int]:
        """The seeds of a segment's views of one granularity: the K fine views from its first seed on,
        the global view after them."""
        first = request_seed(segment_id, self.config.seed, self.stride)
        views = self.config.views
        return list(range(first, first + views)) if granularity == "fine" else [first + views]

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

    def sampling(self) -> dict[str, Any]:
        config = self.config
        return {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            "max_tokens": config.max_tokens,
        }

    def record(
        self, raw: str, granularity: str, view: int, seed: int, transcript: str | None
    ) -> dict[str, Any]:
        """One view with its provenance; a view `clean_view` rejects carries its failed verdict."""
        text, rejected = clean_view(raw, transcript, self.config.max_repeats)
        prompt_id, prompt_hash, _ = self._prompts[granularity]
        return {
            "text": text,
            "granularity": granularity,
            "view": view,
            "backend": self.backend,
            "model": self.model_id,
            "prompt_id": prompt_id,
            "prompt_hash": prompt_hash,
            "seed": seed,
            "sampling": sampling_json(self.sampling()),
            "verdict": None if rejected is None else rejected_verdict(rejected),
        }
