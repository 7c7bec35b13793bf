"""Segment stage: plans each source's segments with the configured backend and attaches the plan to the
source row (annotate.plan); the `cut` stage cuts them.

Backends: `silero` (VAD regions, today's default), `pyannote-vad` (pyannote segmentation: speech cut at
every speaker change, no speaker identities), `diarize-cpu` (pyannote segmentation + GE2E embeddings +
clustering: speaker labels from weights we have offline) and `pyannote-pipeline` (a full pyannote
diarization pipeline from a local folder, for GPUs). Whatever the backend, gap merging and re-splitting
happen inside one speaker's turns, so no segment crosses a speaker change.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from annotate.audio import SAMPLE_RATE, iter_mono_16k
from annotate.base import BatchStage, Row, audio_path_of
from annotate.diarize import SourceTurns, plan_turn_segments
from annotate.diarize_cpu import CpuDiarizer, CpuDiarizerConfig, PyannoteVAD
from annotate.diarize_pipeline import PyannotePipelineConfig, PyannotePipelineDiarizer
from annotate.plan import PLAN_KEY, SourcePlan
from annotate.segment import SegmenterConfig, SileroFrameScorer, silero_plan
from annotate.segmentation_windows import PyannoteSegmentationConfig, keeps_step

SegmentBackend = Literal["silero", "pyannote-vad", "diarize-cpu", "pyannote-pipeline"]
# Backends whose labels name speakers (the same label is the same voice within a source).
_SPEAKER_BACKENDS = {"diarize-cpu", "pyannote-pipeline"}


class SegmentConfig(SegmenterConfig):
    backend: SegmentBackend = "silero"
    # A change is placed by the window most centred on it: a 0.5 s hop places them within 0.1 s.
    pyannote: Annotated[PyannoteSegmentationConfig, keeps_step(0.5)] = Field(
        default=PyannoteSegmentationConfig(step_s=0.5),
        description="The pyannote-vad backend's segmentation model and hyper-parameters.",
    )
    diarize_cpu: CpuDiarizerConfig = CpuDiarizerConfig()
    pipeline: PyannotePipelineConfig | None = Field(
        default=None, description="The pyannote-pipeline backend's local pipeline folder (required there)."
    )

    @model_validator(mode="after")
    def _pipeline_given(self) -> SegmentConfig:
        if self.backend == "pyannote-pipeline" and self.pipeline is None:
            raise ValueError("backend pyannote-pipeline needs segment.pipeline.pipeline_dir")
        return self


class SegmentStage(BatchStage):
    """Source rows in, the same rows out with their segment plan, duration and unsegmented speech."""

    name: ClassVar[str] = "segment"

    def __init__(self, config: SegmentConfig) -> None:
        self.config = config
        self._backend: SileroFrameScorer | PyannoteVAD | CpuDiarizer | PyannotePipelineDiarizer | None = None

    def setup(self) -> None:
        config = self.config
        if config.backend == "silero":
            self._backend = SileroFrameScorer()
        elif config.backend == "pyannote-vad":
            self._backend = PyannoteVAD(config.pyannote)
        elif config.backend == "diarize-cpu":
            self._backend = CpuDiarizer(config.diarize_cpu)
        else:
            assert config.pipeline is not None  # the config's validator saw to it
            self._backend = PyannotePipelineDiarizer(config.pipeline)
        if not isinstance(self._backend, SileroFrameScorer):
            self._backend.setup()

    def teardown(self) -> None:
        self._backend = None  # models and sessions go with their last reference

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [self._planned(row) for row in rows]

    def plan(self, path: str, source_id: str) -> SourcePlan:
        if self._backend is None:
            self.setup()
        backend, config = self._backend, self.config
        if isinstance(backend, SileroFrameScorer):
            probs, total = backend.probabilities(iter_mono_16k(path, config.decode_block_s))
            return silero_plan(probs, total, config)
        assert backend is not None
        turns: SourceTurns = backend.turns(path)
        plan = plan_turn_segments(turns, config.min_s, config.max_s, config.merge_gap_s)
        if config.backend not in _SPEAKER_BACKENDS:  # turns of unknown speakers: labels mean nothing
            return SourcePlan(
                plan.total_samples,
                [replace(s, speaker=None) for s in plan.segments],
                [replace(d, speaker=None) for d in plan.dropped],
            )
        # Labels are per source: qualify them so that they stay distinct across a run.
        return SourcePlan(
            plan.total_samples,
            [replace(s, speaker=f"{source_id}:{s.speaker}") for s in plan.segments],
            [replace(d, speaker=d.speaker and f"{source_id}:{d.speaker}") for d in plan.dropped],
        )

    def _planned(self, row: Row) -> Row:
        plan = self.plan(audio_path_of(row), row["source_id"])
        return {
            **row,
            PLAN_KEY: plan.to_json(),
            "source_duration_s": plan.total_samples / SAMPLE_RATE,
            "dropped_speech_s": plan.unsegmented_speech_samples / SAMPLE_RATE,
        }
