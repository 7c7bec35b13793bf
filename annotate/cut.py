"""Cut stage: a planned source (annotate.plan) into its rows, streamed.

Rows come in start order: each planned segment as a segment row with its FLAC audio, each piece of
speech a stage decided not to keep as a dropped row with its reason and score, then the source's end
row. A resumed source (`resume_after_s` set) skips what starts at or before it: an earlier run
committed it. A segment takes the manifest's speaker where one is given, else the planner's label.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from annotate.audio import SAMPLE_RATE, encode_flac, iter_mono_16k
from annotate.base import (
    OUTCOME_ALL_DROPPED,
    OUTCOME_NO_SPEECH,
    OUTCOME_SEGMENTED,
    OUTCOME_SPEECH_TOO_SHORT,
    STATUS_OK,
    Row,
    StreamingStage,
    audio_path_of,
    dropped_row,
    end_row,
    failed_row,
)
from annotate.plan import DROP_TOO_SHORT, PLAN_KEY, DroppedSpeech, PlannedSegment, SourcePlan, plan_of
from annotate.segment import Span, cut_segments, segment_id


class CutStage(StreamingStage):
    name: ClassVar[str] = "cut"

    def __init__(self, decode_block_s: float) -> None:
        self.decode_block_s = decode_block_s

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [out for row in rows for out in self.stream(row)]

    def stream(self, row: Row) -> Iterator[Row]:
        plan = plan_of(row)  # a missing plan raises before any row is out: the source fails
        source = {key: value for key, value in row.items() if key != PLAN_KEY}
        done_until = row.get("resume_after_s")
        todo: list[PlannedSegment | DroppedSpeech] = sorted(
            (
                item
                for item in (*plan.segments, *plan.dropped)
                if done_until is None or item.start / SAMPLE_RATE > done_until
            ),
            key=lambda item: item.start,
        )
        segments = [item for item in todo if isinstance(item, PlannedSegment)]
        blocks = iter_mono_16k(audio_path_of(row), self.decode_block_s)
        pieces = cut_segments(blocks, [_span(s) for s in segments])
        error: Exception | None = None
        for item in todo:
            if isinstance(item, DroppedSpeech):
                yield dropped_row(_row(source, item), item.stage, item.reason, item.score)
                continue
            wave = None
            if error is None:
                try:
                    span, wave = next(pieces)
                    if span != _span(item):
                        raise EOFError("the audio ended inside this segment (did the file change?)")
                except StopIteration:
                    error = EOFError("the audio ended before this segment (did the file change?)")
                except Exception as raised:  # the cut broke: this and the later segments fail
                    error = raised
            if error is not None:
                yield failed_row(_row(source, item), self.name, error)
            else:
                yield {**_row(source, item), "status": STATUS_OK, "audio": _audio(source, item, wave)}
        yield end_row(source, _outcome(plan))
        if row.get("audio_path"):  # a separation stage's scratch file: nothing reads it after the cut
            Path(row["audio_path"]).unlink(missing_ok=True)


def _span(item: PlannedSegment | DroppedSpeech) -> Span:
    return Span(item.start, item.end)


def _row(source: Row, item: PlannedSegment | DroppedSpeech) -> Row:
    span = _span(item)
    return {
        **source,
        "segment_id": segment_id(source["source_id"], span),
        "start_s": span.start / SAMPLE_RATE,
        "end_s": span.end / SAMPLE_RATE,
        "duration_s": span.seconds,
        "speaker": source.get("speaker") or item.speaker,
        # speaker_consistency's column: set only where that stage scored the segment
        **({"speaker_similarity": item.similarity} if getattr(item, "similarity", None) is not None else {}),
    }


def _audio(source: Row, item: PlannedSegment, wave: np.ndarray | None) -> dict[str, object] | None:
    if wave is None:
        return None
    return {"bytes": encode_flac(wave), "path": f"{segment_id(source['source_id'], _span(item))}.flac"}


def _outcome(plan: SourcePlan) -> str:
    if plan.segments or any(d.stage != "segment" for d in plan.dropped):
        return OUTCOME_SEGMENTED  # segments were planned (the writer tells if a later stage dropped all)
    if any(d.reason == DROP_TOO_SHORT for d in plan.dropped):
        return OUTCOME_SPEECH_TOO_SHORT
    return OUTCOME_ALL_DROPPED if plan.dropped else OUTCOME_NO_SPEECH
