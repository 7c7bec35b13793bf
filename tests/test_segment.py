"""Segmentation: the planner (property-tested), block-wise cutting, and the ingest → segment → cut
stages with silero on real espeak speech."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotate.audio import SAMPLE_RATE, content_id, decode_flac, read_mono_16k
from annotate.base import Row
from annotate.cut import CutStage
from annotate.ingest import IngestStage
from annotate.segment import (
    FRAME_SAMPLES,
    FrameScores,
    SegmenterConfig,
    Span,
    cut_segments,
    plan_regions,
    segment_id,
)
from annotate.segmenters import SegmentConfig, SegmentStage
from pipeline.claims import ClaimsRegistry
from tests.conftest import speak

SR = SAMPLE_RATE


def s(seconds: float) -> int:
    return round(seconds * SR)


def flat_probs(seconds: float, value: float = 0.9) -> np.ndarray:
    return np.full(s(seconds) // FRAME_SAMPLES + 2, value, dtype=np.float32)


def frame_of(seconds: float) -> int:
    return s(seconds) // FRAME_SAMPLES


@dataclass(frozen=True)
class Plan:
    segments: list[Span]
    dropped_speech_s: float


def plan_segments(regions: list[Span], probs: np.ndarray, config: SegmenterConfig) -> Plan:
    """The planner on regions with silero-like frame scores, as the silero backend calls it."""
    kept, short = plan_regions(regions, FrameScores(probs), config.min_s, config.max_s, config.merge_gap_s)
    return Plan(kept, sum(p.end - p.start for piece in short for p in piece) / SR)


class Segmenter:
    """The source-level stages a run starts with (ingest, segment, cut), one source at a time."""

    def __init__(self, config: SegmentConfig) -> None:
        self.ingest = IngestStage(ClaimsRegistry({}))
        self.segment = SegmentStage(config)
        self.cut = CutStage(config.decode_block_s)
        self.segment.setup()

    def stream(self, row: Row) -> Iterator[Row]:
        [ingested] = self.ingest([row])
        [planned] = self.segment([ingested])
        return self.cut.stream(planned)

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [out for row in rows for out in self.stream(row)]


def covered_speech(regions: list[Span], segments: list[Span]) -> int:
    return sum(max(0, min(r.end, g.end) - max(r.start, g.start)) for r in regions for g in segments)


# --- plan_segments: properties --------------------------------------------------------------------


@st.composite
def scenarios(draw):
    min_ms = draw(st.integers(500, 5000))
    max_ms = draw(st.integers(2 * min_ms, 10 * min_ms))
    config = SegmenterConfig(
        min_s=min_ms / 1000, max_s=max_ms / 1000, merge_gap_s=draw(st.integers(0, 3000)) / 1000
    )
    regions = []
    position = draw(st.integers(0, s(3)))
    for _ in range(draw(st.integers(1, 8))):
        length = draw(st.integers(1, s(45)))
        regions.append(Span(position, position + length))
        position += length + draw(st.integers(0, s(4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    probs = rng.random(position // FRAME_SAMPLES + 2).astype(np.float32)
    return config, regions, probs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_planned_segments_respect_bounds_order_and_speech(scenario):
    config, regions, probs = scenario
    plan = plan_segments(regions, probs, config)
    min_len, max_len = round(config.min_s * SR), round(config.max_s * SR)
    max_gap = round(config.merge_gap_s * SR)

    for segment in plan.segments:
        assert min_len <= segment.end - segment.start <= max_len
        # Boundaries are in speech: a start inside (or at the start of) a region, an end likewise.
        assert any(r.start <= segment.start < r.end for r in regions)
        assert any(r.start < segment.end <= r.end for r in regions)
        # No segment bridges a pause longer than merge_gap_s.
        for left, right in pairwise(regions):
            if right.start - left.end > max_gap:
                assert not (segment.start < left.end and segment.end > right.start)
    for first, second in pairwise(plan.segments):
        assert first.end <= second.start

    total = sum(r.end - r.start for r in regions)
    assert plan.dropped_speech_s >= 0
    assert covered_speech(regions, plan.segments) + plan.dropped_speech_s * SR == pytest.approx(
        total, abs=1e-3
    )


# --- plan_segments: examples -------------------------------------------------------------------------


def test_long_region_is_split_at_the_lowest_probability_dips():
    config = SegmenterConfig()  # 3..30 s
    probs = flat_probs(75)
    probs[frame_of(25)] = 0.10
    probs[frame_of(50)] = 0.05  # the deepest dip is cut first
    probs[frame_of(40)] = 0.30  # a shallower dip that is not needed
    plan = plan_segments([Span(0, s(75))], probs, config)
    cuts = [frame_of(25) * FRAME_SAMPLES, frame_of(50) * FRAME_SAMPLES]
    assert plan.segments == [Span(0, cuts[0]), Span(cuts[0], cuts[1]), Span(cuts[1], s(75))]
    assert all(seg.seconds <= 30 for seg in plan.segments)
    assert plan.dropped_speech_s == 0


def test_long_chunk_is_split_at_its_longest_pause_before_any_dip():
    config = SegmenterConfig()
    regions = [Span(0, s(12)), Span(s(12.4), s(20)), Span(s(21.4), s(33)), Span(s(33.5), s(45))]
    probs = flat_probs(45)
    probs[frame_of(6)] = 0.0  # a dip inside a region must lose against a real pause
    plan = plan_segments(regions, probs, config)
    assert plan.segments == [Span(0, s(20)), Span(s(21.4), s(45))]
    assert plan.dropped_speech_s == 0


@pytest.mark.parametrize(("gap", "merged"), [(1.0, True), (1.5, True), (1.6, False), (4.0, False)])
def test_regions_merge_across_gaps_up_to_merge_gap_s(gap, merged):
    config = SegmenterConfig(merge_gap_s=1.5)
    regions = [Span(0, s(4)), Span(s(4 + gap), s(9 + gap))]
    plan = plan_segments(regions, flat_probs(20), config)
    if merged:
        assert plan.segments == [Span(0, s(9 + gap))]
    else:
        assert plan.segments == regions
    assert plan.dropped_speech_s == 0


def test_short_regions_merge_into_one_long_enough_segment():
    config = SegmenterConfig(merge_gap_s=1.0)
    regions = [Span(0, s(1)), Span(s(1.5), s(2.5)), Span(s(3.2), s(4))]
    plan = plan_segments(regions, flat_probs(5), config)
    assert plan.segments == [Span(0, s(4))]


def test_short_isolated_region_is_dropped_and_counted():
    config = SegmenterConfig(merge_gap_s=1.5)
    regions = [Span(0, s(5)), Span(s(10), s(12.25)), Span(s(20), s(26))]
    plan = plan_segments(regions, flat_probs(30), config)
    assert plan.segments == [Span(0, s(5)), Span(s(20), s(26))]
    assert plan.dropped_speech_s == pytest.approx(2.25)


def test_no_regions_give_no_segments():
    plan = plan_segments([], np.zeros(0, np.float32), SegmenterConfig())
    assert plan.segments == [] and plan.dropped_speech_s == 0


def test_continuous_region_with_flat_probabilities_loses_no_speech():
    plan = plan_segments([Span(0, s(75))], flat_probs(75), SegmenterConfig())
    assert plan.dropped_speech_s == 0
    assert sum(seg.end - seg.start for seg in plan.segments) == s(75)
    assert all(3.0 <= seg.seconds <= 30.0 for seg in plan.segments)


# --- segment_id -------------------------------------------------------------------------------------


def test_segment_id_is_deterministic_and_encodes_milliseconds():
    span = Span(s(1.234), s(12.5))
    ident = segment_id("0123456789abcdef", span)
    assert ident == "0123456789abcdef_000001234_000012500"
    assert segment_id("0123456789abcdef", Span(s(1.234), s(12.5))) == ident
    assert segment_id("0123456789abcdef", Span(s(1.235), s(12.5))) != ident
    assert segment_id("fedcba9876543210", span) != ident
    hours = segment_id("x", Span(s(3 * 3600), s(3 * 3600 + 30)))
    assert re.fullmatch(r"x_010800000_010830000", hours)


# --- cut_segments ------------------------------------------------------------------------------------


def ramp_blocks(total: int, sizes: list[int]) -> list[np.ndarray]:
    ramp = np.arange(total, dtype=np.float64)
    blocks, start = [], 0
    for size in sizes:
        blocks.append(ramp[start : start + size])
        start += size
    assert start == total
    return blocks


def test_cut_segments_returns_exact_samples_across_odd_block_boundaries():
    total = 10_007
    blocks = ramp_blocks(total, [1, 999, 1_001, 3, 2_503, 0, 4_999, 501])
    spans = [Span(0, 1), Span(5, 1_000), Span(1_000, 1_001), Span(1_500, 7_000), Span(7_001, 10_007)]
    out = list(cut_segments(iter(blocks), spans))
    assert [span for span, _ in out] == spans
    for span, samples in out:
        np.testing.assert_array_equal(samples, np.arange(span.start, span.end, dtype=np.float64))


def test_cut_segments_with_one_block_per_sample_and_one_big_block():
    total = 777
    spans = [Span(10, 20), Span(20, 400), Span(700, 777)]
    for sizes in ([1] * total, [total]):
        out = list(cut_segments(iter(ramp_blocks(total, sizes)), spans))
        assert [span for span, _ in out] == spans
        for span, samples in out:
            np.testing.assert_array_equal(samples, np.arange(span.start, span.end))


def test_cut_segments_stops_reading_after_the_last_segment():
    consumed = []

    def blocks():
        for index, block in enumerate(ramp_blocks(1000, [100] * 10)):
            consumed.append(index)
            yield block

    out = list(cut_segments(blocks(), [Span(150, 250)]))
    assert len(out) == 1 and consumed == [0, 1, 2]


def test_cut_segments_truncates_a_segment_the_stream_ends_inside():
    out = list(cut_segments(iter(ramp_blocks(500, [200, 300])), [Span(100, 200), Span(450, 600)]))
    assert [span for span, _ in out] == [Span(100, 200), Span(450, 500)]
    np.testing.assert_array_equal(out[1][1], np.arange(450, 500))


# --- silero on real speech ---------------------------------------------------------------------------

SENTENCE_TEXTS = (
    "The library opens at nine every weekday morning, and the reading room fills up quickly.",
    "A light rain fell over the harbour all afternoon while the boats rocked gently.",
    "Fresh bread and warm coffee were waiting on the kitchen table for everyone.",
)
GAP_S = 2.5


@pytest.fixture(scope="module")
def spoken_file(tmp_path_factory):
    """Three sentences with 2.5 s of digital silence between them; returns (path, speech intervals)."""
    folder = tmp_path_factory.mktemp("speech")
    parts, intervals, position = [np.zeros(s(1.0), np.float32)], [], s(1.0)
    for index, text in enumerate(SENTENCE_TEXTS):
        wave = read_mono_16k(speak(folder / f"sentence{index}.wav", text))
        loud = np.flatnonzero(np.abs(wave) > 0.01)
        intervals.append((position + loud[0], position + loud[-1] + 1))
        parts += [wave, np.zeros(s(GAP_S), np.float32)]
        position += wave.size + s(GAP_S)
    path = folder / "three_sentences.wav"
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return path, intervals


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(SegmentConfig())


def test_silero_segments_speech_with_boundaries_in_the_silences(spoken_file, segmenter):
    path, intervals = spoken_file
    *rows, end = segmenter.stream({"input_path": str(path), "speaker": "alice"})
    assert len(rows) == len(SENTENCE_TEXTS)
    assert end["status"] == "end" and end["outcome"] == "segmented" and end["segment_id"] is None
    tolerance = s(0.1)  # VAD onsets may trail the first faint sample a little
    source_id = content_id(path)
    for row, (first, last) in zip(rows, intervals, strict=True):
        start, end = round(row["start_s"] * SR), round(row["end_s"] * SR)
        assert start <= first + tolerance and end >= last - tolerance, (row["start_s"], row["end_s"])
        for other_first, other_last in intervals:  # no boundary inside any sentence
            assert not (other_first + tolerance < start < other_last - tolerance)
            assert not (other_first + tolerance < end < other_last - tolerance)
        assert row["status"] == "ok"
        assert row["speaker"] == "alice" and row["input_path"] == str(path)
        assert row["source_id"] == source_id
        assert row["segment_id"] == segment_id(source_id, Span(start, end))
        assert row["audio"]["path"] == f"{row['segment_id']}.flac"
        assert row["duration_s"] == pytest.approx(row["end_s"] - row["start_s"])
        assert 3.0 <= row["duration_s"] <= 30.0
        wave = decode_flac(row["audio"]["bytes"])
        assert wave.size == round(row["duration_s"] * SR)
        np.testing.assert_allclose(wave, read_mono_16k(path)[start:end], atol=1 / 32768)
    assert rows[0]["source_duration_s"] == pytest.approx(sf.info(str(path)).duration)
    assert rows[0]["dropped_speech_s"] == 0


def test_a_resumed_source_yields_only_the_segments_after_its_last_committed_one(spoken_file, segmenter):
    path, _ = spoken_file
    *everything, _ = segmenter.stream({"input_path": str(path)})
    resumed = list(segmenter.stream({"input_path": str(path), "resume_after_s": everything[0]["start_s"]}))
    assert [row["segment_id"] for row in resumed[:-1]] == [row["segment_id"] for row in everything[1:]]
    assert resumed[-1]["status"] == "end" and resumed[-1]["outcome"] == "segmented"


def test_silence_and_low_noise_give_one_no_speech_row(tmp_path, segmenter):
    rng = np.random.default_rng(3)
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(s(6), np.float32), SR, subtype="PCM_16")
    noise = tmp_path / "noise.wav"
    sf.write(noise, (rng.standard_normal(6 * 44100) * 0.002).astype(np.float32), 44100, subtype="PCM_16")
    for path in (silence, noise):
        rows = segmenter([{"input_path": str(path)}])
        assert len(rows) == 1
        row = rows[0]
        assert row["status"] == "end" and row["outcome"] == "no_speech"
        assert row["dropped_speech_s"] == 0
        assert row["source_id"] == content_id(path)
        assert row["segment_id"] is None and row["audio"] is None
        assert row["source_duration_s"] == pytest.approx(6.0, abs=1e-3)


def test_a_lone_short_word_is_speech_too_short_with_its_speech_counted_as_dropped(tmp_path, segmenter):
    word = read_mono_16k(speak(tmp_path / "yes.wav", "Yes."))
    path = tmp_path / "short.wav"
    sf.write(path, np.concatenate([np.zeros(s(2)), word, np.zeros(s(3))]), SR, subtype="PCM_16")
    dropped, row = segmenter.stream({"input_path": str(path)})
    assert dropped["status"] == "dropped" and dropped["drop_reason"] == "too_short"
    assert dropped["drop_stage"] == "segment" and dropped["audio"] is None
    assert 1.5 < dropped["start_s"] < dropped["end_s"] < 3.5
    assert row["status"] == "end" and row["outcome"] == "speech_too_short"
    assert 0.1 < row["dropped_speech_s"] < 2.0


def test_a_source_id_from_the_manifest_names_the_segments(tmp_path):
    path = speak(tmp_path / "s.wav", "The library opens at nine every weekday morning, rain or shine.")
    segmenter = Segmenter(SegmentConfig(min_s=1.0, max_s=30.0))
    row, end = segmenter.stream({"input_path": str(path), "source_id": "take-7"})
    assert row["source_id"] == "take-7" and row["segment_id"].startswith("take-7_")
    assert end["source_id"] == "take-7" and end["status"] == "end"
