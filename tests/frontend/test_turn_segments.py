"""Planning segments from diarization turns: never across a speaker change, overlaps dropped."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotate.audio import SAMPLE_RATE
from annotate.diarize import (
    NO_SPEECH,
    OVERLAP,
    FrameGrid,
    SourceTurns,
    SpeakerTurn,
    frame_turns,
    plan_turn_segments,
)
from annotate.plan import DROP_OVERLAP, DROP_TOO_SHORT, DroppedSpeech, PlannedSegment
from annotate.segment import FrameScores


def s(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def turn(start_s: float, end_s: float, speaker: str) -> SpeakerTurn:
    return SpeakerTurn(s(start_s), s(end_s), speaker)


def test_same_speaker_turns_merge_across_a_pause_but_never_across_another_speaker():
    source = SourceTurns(
        s(40),
        [turn(0, 2, "spk0"), turn(2.5, 5, "spk0"), turn(5.2, 9, "spk1"), turn(9.3, 12, "spk0")],
        [],
    )

    plan = plan_turn_segments(source, min_s=2.0, max_s=30.0, merge_gap_s=1.0)

    assert plan.segments == [
        PlannedSegment(0, s(5), "spk0"),
        PlannedSegment(s(5.2), s(9), "spk1"),
        PlannedSegment(s(9.3), s(12), "spk0"),
    ]
    assert plan.dropped == []


def test_overlap_splits_a_speakers_turns_and_is_dropped_with_its_reason():
    source = SourceTurns(s(20), [turn(0, 4, "spk0"), turn(5, 6, "spk0"), turn(7, 9, "spk0")], [(s(4), s(5))])

    plan = plan_turn_segments(source, min_s=2.5, max_s=30.0, merge_gap_s=1.5)

    assert plan.segments == [PlannedSegment(0, s(4), "spk0"), PlannedSegment(s(5), s(9), "spk0")]
    assert plan.dropped == [DroppedSpeech(s(4), s(5), None, DROP_OVERLAP, s(1))]


def test_a_short_turn_between_other_speakers_is_dropped_as_too_short():
    source = SourceTurns(s(20), [turn(0, 5, "spk0"), turn(5, 6, "spk1"), turn(6, 12, "spk0")], [])

    plan = plan_turn_segments(source, min_s=3.0, max_s=30.0, merge_gap_s=1.5)

    assert plan.segments == [PlannedSegment(0, s(5), "spk0"), PlannedSegment(s(6), s(12), "spk0")]
    assert plan.dropped == [DroppedSpeech(s(5), s(6), "spk1", DROP_TOO_SHORT, s(1))]


def test_a_long_turn_is_split_at_its_lowest_speech_score_on_the_backends_frame_grid():
    scores = np.full(s(40) // 270 + 2, 0.9)
    frame = (s(25) - 360) // 270  # frames of 270 samples from sample 360 (pyannote segmentation's grid)
    scores[frame] = 0.1
    source = SourceTurns(s(40), [turn(0, 40, "spk0")], [], FrameScores(scores, 270, 360))

    plan = plan_turn_segments(source, min_s=3.0, max_s=30.0, merge_gap_s=1.5)

    cut = 360 + frame * 270
    assert plan.segments == [PlannedSegment(0, cut, "spk0"), PlannedSegment(cut, s(40), "spk0")]


def test_a_long_turn_without_speech_scores_is_split_in_the_middle():
    plan = plan_turn_segments(SourceTurns(s(50), [turn(0, 50, "spk1")], []), 3.0, 30.0, 1.5)

    assert plan.segments == [PlannedSegment(0, s(25), "spk1"), PlannedSegment(s(25), s(50), "spk1")]


@st.composite
def sources(draw):
    position = 0
    turns = []
    overlap = []
    for _ in range(draw(st.integers(0, 12))):
        position += draw(st.integers(0, s(3)))
        if draw(st.booleans()) and turns:
            length = draw(st.integers(1, s(2)))
            overlap.append((position, position + length))
        else:
            length = draw(st.integers(1, s(40)))
            turns.append(SpeakerTurn(position, position + length, f"spk{draw(st.integers(0, 2))}"))
        position += length
    return SourceTurns(position, turns, overlap)


@settings(max_examples=200, deadline=None)
@given(sources())
def test_segments_stay_inside_one_speakers_turns_within_bounds(source):
    plan = plan_turn_segments(source, min_s=3.0, max_s=20.0, merge_gap_s=1.5)

    for segment in plan.segments:
        assert 3.0 * SAMPLE_RATE <= segment.end - segment.start <= 20.0 * SAMPLE_RATE
        inside = [t for t in source.turns if t.start < segment.end and segment.start < t.end]
        # Every turn the segment touches is its speaker's, and no other event lies in between.
        assert {t.speaker for t in inside} == {segment.speaker}
        assert all(not (a < segment.end and segment.start < b) for a, b in source.overlap)
    planned = sum(
        min(g.end, t.end) - max(g.start, t.start)
        for g in plan.segments
        for t in source.turns
        if t.start < g.end and g.start < t.end
    )
    dropped = sum(d.speech_samples for d in plan.dropped if d.reason == DROP_TOO_SHORT)
    assert planned + dropped == sum(t.end - t.start for t in source.turns)  # no speech is lost unaccounted


def test_frame_turns_names_speakers_by_first_appearance_and_lists_overlaps():
    grid = FrameGrid(step=270, center=495, total_samples=270 * 10 + 496)
    labels = np.array([NO_SPEECH, 5, 5, 2, OVERLAP, OVERLAP, 2, 5, NO_SPEECH, NO_SPEECH, 2])

    result = frame_turns(labels, grid)

    def b(frame: int) -> int:
        return 360 + frame * 270

    assert result.turns == [
        SpeakerTurn(b(1), b(3), "spk0"),
        SpeakerTurn(b(3), b(4), "spk1"),
        SpeakerTurn(b(6), b(7), "spk1"),
        SpeakerTurn(b(7), b(8), "spk0"),
        SpeakerTurn(b(10), grid.total_samples, "spk1"),
    ]
    assert result.overlap == [(b(4), b(6))]
    assert grid.frames == 11
    assert grid.boundary(0) == 0


@pytest.mark.parametrize(("total", "frames"), [(0, 0), (100, 1), (495, 1), (496, 1), (766, 2)])
def test_frame_grid_counts_frames_whose_centre_is_inside(total, frames):
    assert FrameGrid(270, 495, total).frames == frames
