"""A source's segment plan: what the source-level stages decided before any segment is cut.

The `segment` stage plans (speech regions or speaker turns → segments of min_s..max_s, and the pieces
it will not keep), `speaker_consistency` may drop planned segments, and `cut` turns the plan into
segment rows and dropped rows. The plan travels between them in the source row under `PLAN_KEY`, as
JSON: a few hundred bytes per minute of speech, so a source-level stage never holds the audio.
Positions are integer samples at 16 kHz.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from annotate.base import Row

PLAN_KEY = "segment_plan"

# Why planned speech did not become a segment (a dropped row's `drop_reason`).
DROP_TOO_SHORT = "too_short"
DROP_OVERLAP = "overlap"
DROP_SPEAKER_INCONSISTENT = "speaker_inconsistent"


@dataclass(frozen=True)
class PlannedSegment:
    start: int
    end: int
    speaker: str | None = None  # the backend's label within the source (spk0, ...), if it has one
    similarity: float | None = None  # speaker consistency score, once speaker_consistency ran


@dataclass(frozen=True)
class DroppedSpeech:
    start: int
    end: int
    speaker: str | None  # None for overlapped speech
    reason: str
    speech_samples: int  # speech inside [start, end) (pauses of a merged piece excluded)
    stage: str = "segment"
    score: float | None = None  # what the decision was made on, where there is a number


@dataclass(frozen=True)
class SourcePlan:
    total_samples: int
    segments: list[PlannedSegment] = field(default_factory=list)
    dropped: list[DroppedSpeech] = field(default_factory=list)

    @property
    def unsegmented_speech_samples(self) -> int:
        """Speech that no segment holds because the planner could not use it (too short, overlapped)."""
        return sum(d.speech_samples for d in self.dropped if d.stage == "segment")

    def to_json(self) -> str:
        return json.dumps(
            {
                "total_samples": self.total_samples,
                "segments": [asdict(s) for s in self.segments],
                "dropped": [asdict(d) for d in self.dropped],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> SourcePlan:
        data = json.loads(text)
        return cls(
            data["total_samples"],
            [PlannedSegment(**s) for s in data["segments"]],
            [DroppedSpeech(**d) for d in data["dropped"]],
        )

    def with_drops(self, drops: dict[int, DroppedSpeech], scores: dict[int, float]) -> SourcePlan:
        """The plan with segments `drops` (by index) moved to the dropped list and `scores` kept on the
        others, dropped pieces in start order."""
        kept = [replace(s, similarity=scores.get(i)) for i, s in enumerate(self.segments) if i not in drops]
        dropped = sorted([*self.dropped, *drops.values()], key=lambda d: d.start)
        return SourcePlan(self.total_samples, kept, dropped)


def plan_of(row: Row) -> SourcePlan:
    """The plan a `segment` stage attached to the source row."""
    text = row.get(PLAN_KEY)
    if text is None:
        raise ValueError("the source has no segment plan: the `segment` stage must run before this one")
    return SourcePlan.from_json(text)
