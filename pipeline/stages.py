"""Stage specs (what runs, on which resources) and the chain that runs a group of them on a batch.

Backends are picked from config here, so a new backend (a vLLM captioner on GPUs, pyannote
diarization, demucs separation) is a new stage class and a new branch of `build_stage_specs`;
the executors do not change. Each stage carries its declaration from `ray.default` / `ray.stages`;
consecutive stages with equal declarations form one group and run in one worker, one after the other
on each batch, the way Ray Data fuses map operators.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import pyarrow as pa

from annotate.base import STATUS_OK, BatchStage, Row, StreamingStage, failed_row
from annotate.caption_stage import CaptionStage
from annotate.captioner import AcousticCaptioner
from annotate.consistency import SpeakerConsistencyStage
from annotate.cut import CutStage
from annotate.ingest import IngestStage, SourceClaims
from annotate.measure import MeasureStage
from annotate.openai_captioner import OpenAICaptioner
from annotate.segmenters import SegmentStage
from annotate.separate import SeparateStage
from annotate.tags import TagBins
from annotate.transcribe import WhisperTranscriber
from annotate.vllm_captioner import VllmCaptioner
from pipeline.claims import ClaimsRegistry
from pipeline.config import (
    SEGMENTS_PER_BATCH,
    SOURCES_PER_BATCH,
    CaptionConfig,
    RunConfig,
    StageResources,
    VerifyConfig,
)
from pipeline.errors import UsageError
from verify.llm_verifier import LlmVerifier
from verify.openai_verifier import OpenAIVerifier
from verify.rules import RulesVerifier
from verify.stage import VerifyStage


class StageSetupError(UsageError):
    """A stage could not set up (a model path that does not exist, a missing package)."""


Takes = Literal["sources", "segments"]


@dataclass(frozen=True)
class StageSpec:
    name: str
    build: type[BatchStage] | partial[BatchStage]  # the stage class, or it with its config bound
    resources: StageResources  # the stage's declaration (config.ray.declaration)
    takes: Takes  # what its rows are: whole sources, or the segments cut from them

    @property
    def batch_size(self) -> int:
        if self.resources.batch_size is not None:
            return self.resources.batch_size
        return SOURCES_PER_BATCH if self.takes == "sources" else SEGMENTS_PER_BATCH

    @property
    def columns(self) -> tuple[pa.Field, ...]:
        """The shard columns the stage declares, read from its class without building it."""
        stage_class = self.build.func if isinstance(self.build, partial) else self.build
        return stage_class.columns


def build_stage_specs(
    config: RunConfig, claims: SourceClaims | None = None, work_dir: Path | None = None
) -> list[StageSpec]:
    """The run's stages in order. `claims` is the run's source registry (pipeline.claims; default: a new
    one in this process); `work_dir` the run's scratch folder (separated vocals go to its `separated/`
    unless the config names a folder)."""
    claims = ClaimsRegistry({}) if claims is None else claims

    def spec(name: str, build: partial[BatchStage], takes: Takes = "segments") -> StageSpec:
        return _spec(config, name, build, takes)

    specs = [spec("ingest", partial(IngestStage, claims), takes="sources")]
    if config.separate.backend == "demucs":
        assert config.separate.demucs is not None  # the config's validator saw to it
        separated = config.separate.work_dir or (work_dir and work_dir / "separated")
        if separated is None:
            raise UsageError("separation needs a scratch folder: set separate.work_dir")
        specs.append(
            spec("separate", partial(SeparateStage, config.separate.demucs, separated), takes="sources")
        )
    specs.append(spec("segment", partial(SegmentStage, config.segment), takes="sources"))
    if config.speaker_consistency.enabled:
        build_consistency = partial(SpeakerConsistencyStage, config.speaker_consistency)
        specs.append(spec("speaker_consistency", build_consistency, takes="sources"))
    specs.append(spec("cut", partial(CutStage, config.segment.decode_block_s), takes="sources"))
    if config.asr.backend == "whisper":
        specs.append(spec("transcribe", partial(WhisperTranscriber, config.asr.whisper)))
    return [
        *specs,
        spec("measure", partial(MeasureStage, config.measure)),
        caption_spec(config),
        verify_spec(config),
    ]


def _spec(config: RunConfig, name: str, build: partial[BatchStage], takes: Takes = "segments") -> StageSpec:
    return StageSpec(name, build, config.ray.declaration(name), takes)


def caption_spec(config: RunConfig) -> StageSpec:
    """The caption stage (annotate's, and all of recaption's)."""
    return _spec(config, "caption", partial(CaptionStage, captioners(config.caption)))


def verify_spec(config: RunConfig) -> StageSpec:
    """The verify stage (annotate's, and all of reverify's)."""
    return _spec(config, "verify", partial(VerifyStage, verifiers(config.verify, config.measure.bins)))


def captioners(config: CaptionConfig) -> list[BatchStage]:
    """The caption stage's backends in turn: the fine (and global) captioner, then the acoustic global
    view when `global_backend` is acoustic. Built here, loaded in each worker's setup."""
    if config.backend == "acoustic":
        return [AcousticCaptioner(config.acoustic)]
    build, settings = (
        (VllmCaptioner, config.vllm) if config.backend == "vllm" else (OpenAICaptioner, config.openai)
    )
    assert settings is not None  # the config's validator saw to it
    if config.global_backend == "same":
        return [build(settings)]
    return [
        build(settings.model_copy(update={"global_view": False})),
        AcousticCaptioner(config.acoustic.model_copy(update={"views": 0, "global_view": True})),
    ]


def verifiers(config: VerifyConfig, bins: TagBins) -> list[BatchStage]:
    """The rules first, then the LLM checklist agent (which by default skips what the rules rejected)."""
    rules = RulesVerifier(config.rules, bins)
    if config.backend == "rules":
        return [rules]
    if config.backend == "vllm":
        assert config.vllm is not None  # the config's validator saw to it
        return [rules, LlmVerifier(config.vllm)]
    assert config.openai is not None
    return [rules, OpenAIVerifier(config.openai)]


def group_by_declaration(specs: list[StageSpec]) -> list[list[StageSpec]]:
    """Consecutive stages with equal declarations form one group: one actor pool runs them fused."""
    return [list(group) for _, group in itertools.groupby(specs, key=lambda spec: spec.resources)]


class StageChain:
    """Set up a group of stages once; run them in order on each batch, isolating failing rows.

    Only rows with status ok enter a stage; the others pass through, in place. If a stage fails on a
    batch, it is retried row by row so one bad input costs one failure row, not the batch.
    """

    def __init__(self, specs: list[StageSpec]) -> None:
        self.stages = [(spec.name, spec.build()) for spec in specs]
        for name, stage in self.stages:
            try:
                stage.setup()
            except Exception as error:  # a model that cannot load stops the run, it fails no input
                raise StageSetupError(
                    f"stage '{name}' could not start: {type(error).__name__}: {error}"
                ) from error

    def __call__(self, rows: list[Row]) -> list[Row]:
        return self._run(self.stages, rows)

    def teardown(self) -> None:
        """Let every stage release what setup took (models, sessions, files), last stage first."""
        for _, stage in reversed(self.stages):
            stage.teardown()

    def stream(self, rows: list[Row], chunk_rows: int) -> Iterator[list[Row]]:
        """Like calling the chain, in chunks: the stages before the first streaming stage (a source
        into its segments) run on the whole batch; from there at most `chunk_rows` of the streaming
        stage's rows at a time go through the rest of the chain (which may stream again)."""
        yield from self._stream(self.stages, rows, chunk_rows)

    @staticmethod
    def _stream(
        stages: list[tuple[str, BatchStage]], rows: list[Row], chunk_rows: int
    ) -> Iterator[list[Row]]:
        first_streaming = next(
            (i for i, (_, stage) in enumerate(stages) if isinstance(stage, StreamingStage)), None
        )
        if first_streaming is None:
            yield StageChain._run(stages, rows)
            return
        name, streaming = stages[first_streaming]
        after = stages[first_streaming + 1 :]
        for row in StageChain._run(stages[:first_streaming], rows):
            produced = StageChain._stream_isolated(name, streaming, row) if _is_ok(row) else iter([row])
            while chunk := list(itertools.islice(produced, chunk_rows)):
                yield from StageChain._stream(after, chunk, chunk_rows)

    @staticmethod
    def _run(stages: list[tuple[str, BatchStage]], rows: list[Row]) -> list[Row]:
        # Rows keep their order (the writer relies on a source's rows arriving by start): each run of
        # consecutive ok rows goes through the stage, the rows between runs pass where they are.
        for name, stage in stages:
            out: list[Row] = []
            for ok, grouped in itertools.groupby(rows, key=_is_ok):
                run = list(grouped)
                out.extend(StageChain._isolated(name, stage, run) if ok else run)
            rows = out
        return rows

    @staticmethod
    def _stream_isolated(name: str, stage: StreamingStage, row: Row) -> Iterator[Row]:
        rows = stage.stream(row)
        try:
            first = next(rows)
        except StopIteration:
            return
        except Exception as error:  # streaming stages raise only before their first row
            yield failed_row(row, name, error)
            return
        yield first
        yield from rows

    @staticmethod
    def _isolated(name: str, stage: BatchStage, rows: list[Row]) -> list[Row]:
        if not rows:
            return []
        try:
            return stage(rows)
        except Exception as error:
            if len(rows) == 1:
                return [failed_row(rows[0], name, error)]
        return [out for row in rows for out in StageChain._one(name, stage, row)]

    @staticmethod
    def _one(name: str, stage: BatchStage, row: Row) -> list[Row]:
        try:
            return stage([row])
        except Exception as error:
            return [failed_row(row, name, error)]


def _is_ok(row: Row) -> bool:
    return row.get("status", STATUS_OK) == STATUS_OK
