"""What every diarization backend returns: a source's exclusive single-speaker turns and its overlaps.

Positions are integer samples at 16 kHz. Turns are sorted, non-overlapping and hold one speaker each;
labels are local to the source ("spk0", "spk1", ... in order of first appearance, unless a backend
documents another rule). Regions where two or more speakers talk at once are listed in `overlap` and
are in no turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotate.audio import SAMPLE_RATE
from annotate.plan import DROP_OVERLAP, DROP_TOO_SHORT, DroppedSpeech, PlannedSegment, SourcePlan
from annotate.segment import FrameScores, Span, plan_regions

# Frame labels of `frame_turns`: speech of no known speaker count one (silence) and overlapped speech.
NO_SPEECH = -1
OVERLAP = -2


@dataclass(frozen=True)
class SpeakerTurn:
    """[start, end) samples of one speaker's speech."""

    start: int
    end: int
    speaker: str

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


@dataclass(frozen=True)
class SourceTurns:
    total_samples: int
    turns: list[SpeakerTurn]
    overlap: list[tuple[int, int]]
    speech: FrameScores | None = None  # speech probability per frame, where the backend has one

    @property
    def speakers(self) -> list[str]:
        """Labels in order of first appearance."""
        return list(dict.fromkeys(turn.speaker for turn in self.turns))


@dataclass(frozen=True)
class FrameGrid:
    """A model's output frames on the source: frame f is centred on sample `center + f * step`; it owns
    the samples between the midpoints to its neighbours (the first and last frames reach the ends)."""

    step: int
    center: int
    total_samples: int

    @property
    def frames(self) -> int:
        """How many frames have their centre inside the source."""
        if self.total_samples <= self.center:
            return 1 if self.total_samples else 0
        return (self.total_samples - 1 - self.center) // self.step + 1

    def boundary(self, frame: int) -> int:
        """First sample of `frame` (`frames` gives the end of the source)."""
        if frame <= 0:
            return 0
        if frame >= self.frames:
            return self.total_samples
        return min(self.center + frame * self.step - self.step // 2, self.total_samples)


def runs(values: np.ndarray) -> list[tuple[int, int, int]]:
    """(first, end, value) of each run of equal values."""
    if values.size == 0:
        return []
    starts = np.flatnonzero(np.diff(values)) + 1
    firsts = np.concatenate(([0], starts))
    ends = np.concatenate((starts, [values.size]))
    return [(int(a), int(b), int(values[a])) for a, b in zip(firsts, ends, strict=True)]


def frame_turns(
    labels: np.ndarray, grid: FrameGrid, speech: np.ndarray | None = None, prefix: str = "spk"
) -> SourceTurns:
    """Turns from one label per frame (a speaker index >= 0, NO_SPEECH or OVERLAP): every run of one
    speaker is a turn; speakers are renamed `<prefix>0, 1, ...` in order of first appearance."""
    names: dict[int, str] = {}
    turns: list[SpeakerTurn] = []
    overlap: list[tuple[int, int]] = []
    for first, end, value in runs(labels):
        start, stop = grid.boundary(first), grid.boundary(end)
        if stop <= start:
            continue
        if value >= 0:
            name = names.setdefault(value, f"{prefix}{len(names)}")
            turns.append(SpeakerTurn(start, stop, name))
        elif value == OVERLAP:
            overlap.append((start, stop))
    scores = None if speech is None else FrameScores(speech, grid.step, grid.center - grid.step // 2)
    return SourceTurns(grid.total_samples, turns, overlap, scores)


def plan_turn_segments(source: SourceTurns, min_s: float, max_s: float, merge_gap_s: float) -> SourcePlan:
    """Segments of min_s..max_s inside single-speaker stretches: consecutive turns of one speaker with
    no other speaker and no overlap between them are planned together by `annotate.segment`'s planner
    (merged across pauses up to merge_gap_s, split at the longest pauses), so no segment crosses a
    speaker change. Overlap regions and pieces shorter than min_s are dropped with their reason."""
    events = sorted(
        [(t.start, t.end, t.speaker) for t in source.turns] + [(a, b, None) for a, b in source.overlap]
    )
    segments: list[PlannedSegment] = []
    dropped: list[DroppedSpeech] = []
    group: list[Span] = []
    group_speaker: str | None = None

    def flush() -> None:
        if not group:
            return
        assert group_speaker is not None
        kept, short = plan_regions(group, source.speech, min_s, max_s, merge_gap_s)
        segments.extend(PlannedSegment(span.start, span.end, group_speaker) for span in kept)
        dropped.extend(
            DroppedSpeech(
                piece[0].start,
                piece[-1].end,
                group_speaker,
                DROP_TOO_SHORT,
                sum(p.end - p.start for p in piece),
            )
            for piece in short
        )
        group.clear()

    for start, end, speaker in events:
        if speaker is None:
            flush()
            dropped.append(DroppedSpeech(start, end, None, DROP_OVERLAP, end - start))
            group_speaker = None
            continue
        if speaker != group_speaker:
            flush()
            group_speaker = speaker
        group.append(Span(start, end))
    flush()
    return SourcePlan(source.total_samples, segments, sorted(dropped, key=lambda d: d.start))
