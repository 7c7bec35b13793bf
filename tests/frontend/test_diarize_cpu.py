"""PyannoteVAD and CpuDiarizer (real pyannote segmentation weights, GE2E) on real two-speaker speech."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from annotate.audio import SAMPLE_RATE
from annotate.diarize import SourceTurns
from annotate.diarize_cpu import CpuDiarizer, CpuDiarizerConfig, PyannoteVAD
from annotate.segmentation_windows import PyannoteSegmentationConfig
from tests.frontend.conftest import assert_exclusive_turns


def annotation(source: SourceTurns, with_overlap: bool = False):
    """The turns as a pyannote Annotation; with the overlap regions (as one more label) for speech
    detection, where overlapped speech is speech."""
    from pyannote.core import Annotation, Segment

    result = Annotation()
    for index, turn in enumerate(source.turns):
        result[Segment(turn.start / SAMPLE_RATE, turn.end / SAMPLE_RATE), index] = turn.speaker
    if with_overlap:
        for index, (start, end) in enumerate(source.overlap):
            result[Segment(start / SAMPLE_RATE, end / SAMPLE_RATE), f"overlap{index}"] = "overlap"
    return result


@pytest.fixture(scope="module")
def cpu_diarizer():
    diarizer = CpuDiarizer(CpuDiarizerConfig())
    diarizer.setup()
    return diarizer


def test_vad_mode_finds_the_reference_speech_of_pyannotes_sample(pyannote_sample):
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.detection import DetectionErrorRate

    vad = PyannoteVAD(PyannoteSegmentationConfig(step_s=0.5))
    vad.setup()
    source = vad.turns(pyannote_sample.audio)

    assert_exclusive_turns(source, sf.info(pyannote_sample.audio).frames)
    assert len(source.speakers) == len(source.turns)  # every turn its own label
    uem = Timeline([Segment(0, pyannote_sample.duration_s)])
    error = DetectionErrorRate()(pyannote_sample.annotation, annotation(source, with_overlap=True), uem=uem)
    assert error < 0.03, f"detection error rate {error:.3f}"  # measured 1.4 %
    # No turn runs across a reference speaker change: at most half a second of a second speaker.
    for turn in source.turns:
        window = Segment(turn.start / SAMPLE_RATE, turn.end / SAMPLE_RATE)
        heard = pyannote_sample.annotation.crop(window).chart()  # [(label, seconds)], most first
        assert sum(seconds for _, seconds in heard[1:]) <= 0.5, (window, heard)


def test_cpu_diarizer_labels_pyannotes_sample_against_its_reference(cpu_diarizer, pyannote_sample):
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    source = cpu_diarizer.turns(pyannote_sample.audio)

    assert_exclusive_turns(source, sf.info(pyannote_sample.audio).frames)
    assert source.speakers == ["spk0", "spk1"]
    uem = Timeline([Segment(0, pyannote_sample.duration_s)])
    error = DiarizationErrorRate(collar=0.25)(pyannote_sample.annotation, annotation(source), uem=uem)
    assert error < 0.13, f"diarization error rate {error:.3f}"  # measured 10.6 % (8.1 % at a 1 s step)


# Single-speaker stretches of pyannote's sample (seconds), from its reference RTTM.
SPEAKER_90 = [(11.1, 14.4), (18.7, 21.4), (28.5, 29.9)]
SPEAKER_91 = [(14.8, 17.8), (22.0, 27.7)]


def test_two_real_voices_in_alternating_turns_give_two_labels_and_no_turn_across_a_change(
    cpu_diarizer, pyannote_sample, tmp_path
):
    audio, rate = sf.read(pyannote_sample.audio, dtype="float32")
    order = [SPEAKER_90[0], SPEAKER_91[0], SPEAKER_90[1], SPEAKER_91[1], SPEAKER_90[2]]
    voices = ["a", "b", "a", "b", "a"]
    pause = np.zeros(int(0.3 * rate), dtype=np.float32)
    pieces, truth, position = [], [], 0
    for (start, end), voice in zip(order, voices, strict=True):
        piece = audio[int(start * rate) : int(end * rate)]
        pieces += [piece, pause]
        truth.append((position, position + piece.size, voice))
        position += piece.size + pause.size
    path = tmp_path / "two_voices.wav"
    sf.write(path, np.concatenate(pieces), rate)

    source = cpu_diarizer.turns(path)

    assert source.speakers == ["spk0", "spk1"]
    tolerance = int(0.5 * SAMPLE_RATE)  # the model places a change within a few frames
    label_of_voice: dict[str, set[str]] = {"a": set(), "b": set()}
    for turn in source.turns:
        heard = {
            voice: min(turn.end, end) - max(turn.start, start)
            for start, end, voice in truth
            if min(turn.end, end) - max(turn.start, start) > 0
        }
        main = max(heard, key=heard.get)
        # A turn holds one constructed turn's voice, up to the tolerance at its edges.
        assert sum(v for voice, v in heard.items() if voice != main) <= tolerance, (turn, heard)
        label_of_voice[main].add(turn.speaker)
    assert label_of_voice == {"a": {"spk0"}, "b": {"spk1"}}
