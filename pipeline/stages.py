"""Stage specs (what runs, on which resources) and the chain that runs a group of them on a batch.

Backends are picked from config here, so a new backend (a vLLM captioner on GPUs, pyannote
diarization, demucs separation) is a new stage class and a new branch of `build_stage_specs`;
the executors do not change. Consecutive stages with equal resources form one group and run in one
worker, one after the other on each batch, the way Ray Data fuses map operators.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from annotate.base import STATUS_OK, BatchStage, Row, StreamingStage, failed_row
from annotate.captioner import AcousticCaptioner
from annotate.measure import MeasureStage
from annotate.segment import SileroSegmenter
from annotate.transcribe import WhisperTranscriber
from pipeline.config import RunConfig, StageResources
from pipeline.errors import UsageError
from verify.rules import RulesVerifier


class StageSetupError(UsageError):
    """A stage could not set up (a model path that does not exist, a missing package)."""


@dataclass(frozen=True)
class StageSpec:
    name: str
    build: Callable[[], BatchStage]
    resources: StageResources


def build_stage_specs(config: RunConfig) -> list[StageSpec]:
    cpu = config.ray.cpu_stages
    specs = [StageSpec("segment", partial(SileroSegmenter, config.segment), cpu)]
    if config.asr.backend == "whisper":
        specs.append(StageSpec("transcribe", partial(WhisperTranscriber, config.asr.whisper), cpu))
    return [
        *specs,
        StageSpec("measure", partial(MeasureStage, config.measure), cpu),
        StageSpec("caption", partial(AcousticCaptioner, config.caption.acoustic), cpu),
        StageSpec("verify", partial(RulesVerifier, config.verify.rules, config.measure.bins), cpu),
    ]


def group_by_resources(specs: list[StageSpec]) -> list[list[StageSpec]]:
    return [list(group) for _, group in itertools.groupby(specs, key=lambda spec: spec.resources)]


class StageChain:
    """Set up a group of stages once; run them in order on each batch, isolating failing rows.

    Only rows with status ok enter a stage; the others pass through. If a stage fails on a batch,
    it is retried row by row so one bad input costs one failure row, not the batch.
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

    def stream(self, rows: list[Row], chunk_rows: int) -> Iterator[list[Row]]:
        """Like calling the chain, in chunks: when the first stage can stream (a source into its
        segments), at most `chunk_rows` of its rows are in flight through the others at a time."""
        name, first = self.stages[0]
        if not isinstance(first, StreamingStage):
            yield self(rows)
            return
        for row in rows:
            produced = self._stream_isolated(name, first, row) if _is_ok(row) else iter([row])
            while chunk := list(itertools.islice(produced, chunk_rows)):
                yield self._run(self.stages[1:], chunk)

    @staticmethod
    def _run(stages: list[tuple[str, BatchStage]], rows: list[Row]) -> list[Row]:
        for name, stage in stages:
            active = [row for row in rows if _is_ok(row)]
            passive = [row for row in rows if not _is_ok(row)]
            rows = StageChain._isolated(name, stage, active) + passive
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
