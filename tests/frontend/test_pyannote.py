"""pyannote with offline weights: the real segmentation model as VAD, and a diarization pipeline folder."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from tests.conftest import speak

# pyannote/segmentation's voice activity hyper-parameters tuned on DIHARD 3 (pyannote.audio's own
# defaults for that model, see VoiceActivityDetection.default_parameters).
VAD_PARAMETERS = {"onset": 0.767, "offset": 0.377, "min_duration_on": 0.136, "min_duration_off": 0.067}


def voice_activity(segmentation_dir):
    from pyannote.audio import Model
    from pyannote.audio.pipelines import VoiceActivityDetection

    pipeline = VoiceActivityDetection(segmentation=Model.from_pretrained(segmentation_dir))
    return pipeline.instantiate(VAD_PARAMETERS)


def test_bundled_path_tells_the_user_to_run_make_env_when_the_weights_are_missing(monkeypatch, tmp_path):
    from annotate import models

    monkeypatch.setattr(models.sys, "prefix", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="run `make env`"):
        models.bundled_path("pyannote-segmentation")
    with pytest.raises(KeyError, match="unknown bundled model"):
        models.bundled_path("no-such-model")


def test_bundled_segmentation_weights_are_pyannotes_pyannet(pyannote_segmentation_dir):
    from pyannote.audio import Model
    from pyannote.audio.core.task import Problem
    from pyannote.audio.models.segmentation import PyanNet

    model = Model.from_pretrained(pyannote_segmentation_dir)

    assert isinstance(model, PyanNet)
    assert model.specifications.problem == Problem.MULTI_LABEL_CLASSIFICATION
    assert sum(p.numel() for p in model.parameters()) == 1_472_749


def test_segmentation_vad_matches_the_reference_speech_of_pyannotes_sample(
    pyannote_segmentation_dir, pyannote_sample
):
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.detection import DetectionErrorRate

    speech = voice_activity(pyannote_segmentation_dir)(str(pyannote_sample.audio))

    metric = DetectionErrorRate()
    error = metric(pyannote_sample.annotation, speech, uem=Timeline([Segment(0, pyannote_sample.duration_s)]))
    # Measured 1.6 % (0.24 s false alarm + 0.13 s missed of 22.46 s of speech).
    assert error < 0.05, f"detection error rate {error:.3f}"


def test_segmentation_vad_finds_espeak_speech_between_silences(pyannote_segmentation_dir, tmp_path):
    wav = speak(tmp_path / "speech.wav", "Please close the window before you leave.")
    voice, rate = sf.read(wav, dtype="float32")
    voice = soxr.resample(voice, rate, 16000)
    voiced = np.flatnonzero(np.abs(voice) > 0.02)
    start, end = 2.0 + voiced[0] / 16000, 2.0 + voiced[-1] / 16000
    silence = np.zeros(2 * 16000, dtype=np.float32)
    waveform = torch.from_numpy(np.concatenate([silence, voice, silence]))[None]

    speech = voice_activity(pyannote_segmentation_dir)({"waveform": waveform, "sample_rate": 16000})

    regions = speech.get_timeline().support()
    assert regions[0].start == pytest.approx(start, abs=0.3)
    assert regions[-1].end == pytest.approx(end, abs=0.3)
    assert regions.duration() > 0.8 * (end - start)


@pytest.mark.slow
def test_diarization_pipeline_folder_loads_offline_and_runs_on_cpu(
    tiny_diarization_pipeline_dir, pyannote_sample
):
    from pyannote.audio import Pipeline
    from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput, SpeakerDiarization
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.detection import DetectionErrorRate

    pipeline = Pipeline.from_pretrained(tiny_diarization_pipeline_dir)
    assert isinstance(pipeline, SpeakerDiarization)

    # 10 s in which both reference speakers talk keeps the random ResNet34 embeddings affordable on CPU.
    window = Segment(5.0, 15.0)
    audio, rate = sf.read(pyannote_sample.audio, dtype="float32")
    excerpt = torch.from_numpy(audio[int(window.start * rate) : int(window.end * rate)])[None]
    reference = Annotation()
    for segment, track, label in pyannote_sample.annotation.crop(window).itertracks(yield_label=True):
        reference[Segment(segment.start - window.start, segment.end - window.start), track] = label

    output = pipeline({"waveform": excerpt, "sample_rate": rate})

    assert isinstance(output, DiarizeOutput)
    labels = output.speaker_diarization.labels()
    assert labels
    assert output.speaker_embeddings.shape == (len(labels), 256)
    exclusive = output.exclusive_speaker_diarization
    assert not any(exclusive.get_overlap().support())
    # Speaker labels come from random embeddings; speech regions come from the real segmentation model.
    uem = Timeline([Segment(0, window.duration)])
    error = DetectionErrorRate()(reference, output.speaker_diarization, uem=uem)
    assert error < 0.1, f"detection error rate {error:.3f}"
