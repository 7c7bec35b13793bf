"""Training config: YAML validated by pydantic (unknown keys rejected), one model per section.

Stages and loss weights are data: `stages` lists, in order, how many steps each stage runs and the
weight of every loss in it, so a new recipe is a new YAML file, not new code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from annotate.base import StrictConfig
from pipeline.config import read_yaml, validate_config

Positive = Annotated[float, Field(gt=0)]


class DataConfig(StrictConfig):
    runs: list[str] = Field(default_factory=list, description="Run directories to train from.")
    captions: list[str] | None = Field(
        default=None,
        description="Caption set ids to train on (stylecaps layers RUN lists a run's); default: every set "
        "of each run.",
    )
    verdicts: list[str] = Field(
        default_factory=list,
        description="Verdict version ids, at most one per set; default: each set's only version (a set "
        "with several needs one named; a set with none has no verified caption).",
    )
    verified_only: bool = Field(default=True, description="Use only captions whose verdict passed.")
    granularities: tuple[Literal["fine", "global"], ...] = ("fine", "global")
    holdout_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.0,
        description="Share of sources (by a hash of source_id) kept out of training for evaluation.",
    )
    seed: int = 0
    shuffle_buffer: Annotated[int, Field(gt=0)] = Field(
        default=512, description="Rows in the seeded shuffle buffer that mixes shards and row groups."
    )
    batch_audio_s: Positive = Field(
        default=240.0, description="Audio seconds per batch on each worker (after cropping)."
    )
    max_batch_size: Annotated[int, Field(gt=1)] = 64
    bucket_edges_s: tuple[float, ...] = Field(
        default=(4.0, 6.0, 8.0, 12.0), description="Duration buckets: a batch holds one bucket's rows."
    )
    max_crop_s: Positive = Field(default=10.0, description="Longer segments are randomly cropped.")
    mask_same: Literal["none", "source", "speaker"] = Field(
        default="none", description="Do not use pairs from the same source or speaker as negatives."
    )
    balance_tag: str | None = Field(
        default=None,
        description="Class-balanced sampling over this tag (repeat factors from each worker's own rows).",
    )
    cache_rows: Annotated[int, Field(ge=0)] = Field(
        default=50_000,
        description="Rows whose records (captions and tags, about 4 KB each; never audio) each loader "
        "keeps in memory after the first epoch instead of reading their shards again. Only when the "
        "speech encoder is frozen (its batches carry no audio); 0 reads every epoch.",
    )
    loader_workers: Annotated[int, Field(ge=0)] = Field(
        default=1,
        description="Processes per training worker that read, crop and decode batches ahead of the step "
        "(0: on the training process, between steps: faster where no core is spare for them).",
    )


class AudioEncoderConfig(StrictConfig):
    kind: Literal["ge2e", "conv_transformer", "hf"] = "ge2e"
    path: str | None = Field(default=None, description="hf: a local transformers audio model folder.")
    trainable: bool = Field(default=False, description="Fine-tune the encoder (else only the head).")
    window_features: tuple[Literal["spectral", "pitch"], ...] = Field(
        default=("pitch",),
        description="ge2e: features each 1.6 s window carries beside the speaker embedding: 'spectral' "
        "(mean log-mel and energy), 'pitch' (autocorrelation f0 and voicing); see train/audio_encoders.py. "
        "The default is what did best on real speech (README, encoder comparison).",
    )
    # conv_transformer (from scratch on log-mel)
    n_mels: Annotated[int, Field(gt=0)] = 64
    width: Annotated[int, Field(gt=0)] = 192
    layers: Annotated[int, Field(gt=0)] = 3
    heads: Annotated[int, Field(gt=0)] = 4

    @model_validator(mode="after")
    def _hf_needs_path(self) -> AudioEncoderConfig:
        if self.kind == "hf" and not self.path:
            raise ValueError("audio encoder kind 'hf' needs 'path' (a local model folder)")
        return self


class TextEncoderConfig(StrictConfig):
    kind: Literal["minilm", "hf"] = "minilm"
    path: str | None = Field(default=None, description="hf: a local transformers text model folder.")
    trainable: bool = False
    max_tokens: Annotated[int, Field(gt=0)] = 128

    @model_validator(mode="after")
    def _hf_needs_path(self) -> TextEncoderConfig:
        if self.kind == "hf" and not self.path:
            raise ValueError("text encoder kind 'hf' needs 'path' (a local model folder)")
        return self


class ModelConfig(StrictConfig):
    audio: AudioEncoderConfig = AudioEncoderConfig()
    text: TextEncoderConfig = TextEncoderConfig()
    hidden_dim: Annotated[int, Field(gt=0)] = 512
    embed_dim: Annotated[int, Field(gt=0)] = 512
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1


class PerturbConfig(StrictConfig):
    """Attribute perturbation: a caption with one attribute's words swapped for another value's."""

    lexicon: dict[str, dict[str, list[str]]] = Field(
        default={
            "gender": {"female": ["female", "woman", "her"], "male": ["male", "man", "his"]},
            "pitch": {
                "low": ["low", "low-pitched", "deep"],
                "medium": ["medium", "mid-pitched", "mid-range"],
                "high": ["high", "high-pitched", "bright"],
            },
            "speaking_rate": {
                "slow": ["slow", "slowly", "unhurried"],
                "measured": ["measured", "steady"],
                "fast": ["fast", "quickly", "rapid"],
            },
            "loudness": {
                "soft": ["soft", "softly", "quiet"],
                "moderate": ["moderate", "comfortable", "ordinary"],
                "loud": ["loud", "loudly", "forceful"],
            },
            "pitch_variation": {
                "monotone": ["monotone", "flat", "level"],
                "moderate": ["moderately"],
                "expressive": ["expressive", "lively", "animated"],
            },
        },
        description="tag → value → words; only tags the shards hold are used.",
    )


class StageConfig(StrictConfig):
    """One training stage: its length and its loss weights (0 switches a loss off)."""

    name: str
    steps: Annotated[int, Field(gt=0)]
    infonce: Annotated[float, Field(ge=0)] = 1.0
    multi_positive: Annotated[float, Field(ge=0)] = 0.0
    hard_negative: Annotated[float, Field(ge=0)] = 0.0
    perturbation: Annotated[float, Field(ge=0)] = 0.0
    tag_classification: Annotated[float, Field(ge=0)] = 0.0


class LossConfig(StrictConfig):
    soft_target_lambda: Annotated[float, Field(ge=0, le=1)] = 0.5
    task_p0: Annotated[float, Field(ge=0, le=1)] = 0.95
    task_p_min: Annotated[float, Field(ge=0, le=1)] = 0.5
    task_decay_steps: Annotated[int, Field(gt=0)] = 10_000
    hard_negative_gamma: Annotated[float, Field(ge=0)] = 0.15
    classify_tags: list[str] | None = Field(
        default=None, description="Tags for the classification loss; None: every tag the shards hold."
    )


class OptimConfig(StrictConfig):
    lr: Positive = 1e-3
    encoder_lr: Positive = 2e-5
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    warmup_steps: Annotated[int, Field(ge=0)] = 50
    grad_clip: Positive = 1.0
    average_decay: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        default=None,
        description="Export an exponential moving average of the trainable weights with this decay "
        "(0.99: about the last 100 steps) instead of the last step's weights; none: the last step's.",
    )


class TrainConfig(StrictConfig):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig(name="contrastive", steps=1000)])
    loss: LossConfig = LossConfig()
    perturb: PerturbConfig = PerturbConfig()
    optim: OptimConfig = OptimConfig()
    workers: Annotated[int, Field(gt=0)] = Field(default=1, description="Ray Train workers.")
    cpus_per_worker: Annotated[int, Field(gt=0)] = Field(
        default=1,
        description="CPUs Ray reserves for each training worker and its step's torch threads; its "
        "loader processes (data.loader_workers) run beside them.",
    )
    use_gpu: bool = False
    checkpoint_every: Annotated[int, Field(gt=0)] = 200
    log_every: Annotated[int, Field(gt=0)] = 10
    seed: int = 0
    max_minutes: Positive | None = Field(
        default=None, description="Stop (with a checkpoint and an export) after this wall time."
    )

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def stage_at(self, step: int) -> StageConfig:
        for stage in self.stages:
            if step < stage.steps:
                return stage
            step -= stage.steps
        return self.stages[-1]


def parse_train_config(data: Any, origin: str = "config") -> TrainConfig:
    return validate_config(TrainConfig, data, origin)


def load_train_config(path: str | Path) -> TrainConfig:
    return parse_train_config(read_yaml(path), origin=str(path))
