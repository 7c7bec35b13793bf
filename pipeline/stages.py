"""Stage specs (what runs, on which resources) and the chain that runs a group of them on a batch.

Backends are picked from config here, so a new backend (a vLLM captioner on GPUs, pyannote
diarization, demucs separation) is a new stage class and a new branch of `build_stage_specs`;
the executors do not change. Consecutive stages with equal resources form one group and run in one
worker, one after the other on each batch, the way Ray Data fuses map operators.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from annotate.base import BatchStage, Row
from annotate.captioner import AcousticCaptioner
from annotate.segment import SileroSegmenter
from annotate.transcribe import WhisperTranscriber
from pipeline.config import RunConfig, StageResources
from pipeline.contract import STATUS_FAILED, STATUS_OK
from verify.rules import RulesVerifier

_MAX_MESSAGE = 2000


class StageSetupError(RuntimeError):
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
        StageSpec("caption", partial(AcousticCaptioner, config.caption.acoustic), cpu),
        StageSpec("verify", partial(RulesVerifier, config.verify.rules), cpu),
    ]


def group_by_resources(specs: list[StageSpec]) -> list[list[StageSpec]]:
    return [list(group) for _, group in itertools.groupby(specs, key=lambda spec: spec.resources)]


def failed(row: Row, stage: str, error: BaseException) -> Row:
    message = str(error).strip() or repr(error)
    return {
        **row,
        "status": STATUS_FAILED,
        "audio": None,
        "error_stage": stage,
        "error_type": type(error).__name__,
        "error_message": message[:_MAX_MESSAGE],
    }


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
        for name, stage in self.stages:
            active = [row for row in rows if row.get("status", STATUS_OK) == STATUS_OK]
            passive = [row for row in rows if row.get("status", STATUS_OK) != STATUS_OK]
            rows = self._isolated(name, stage, active) + passive
        return rows

    @staticmethod
    def _isolated(name: str, stage: BatchStage, rows: list[Row]) -> list[Row]:
        if not rows:
            return []
        try:
            return stage(rows)
        except Exception as error:
            if len(rows) == 1:
                return [failed(rows[0], name, error)]
        return [out for row in rows for out in StageChain._one(name, stage, row)]

    @staticmethod
    def _one(name: str, stage: BatchStage, row: Row) -> list[Row]:
        try:
            return stage([row])
        except Exception as error:
            return [failed(row, name, error)]
