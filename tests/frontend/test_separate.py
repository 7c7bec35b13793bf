"""DemucsSeparator: a local demucs repo folder, streamed windows, a 16 kHz mono vocals FLAC out."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
from make_tiny_models import DEMUCS_NAME

from annotate.audio import SAMPLE_RATE, read_mono_16k
from annotate.separate import DemucsConfig, DemucsSeparator
from tests.conftest import SENTENCES, speak


@pytest.fixture(scope="module")
def speech_16k(tmp_path_factory):
    """About 12 s of espeak speech, 16 kHz mono."""
    folder = tmp_path_factory.mktemp("separate")
    voice, rate = sf.read(speak(folder / "voice.wav", SENTENCES), dtype="float32")
    path = folder / "speech16k.wav"
    sf.write(path, soxr.resample(voice, rate, SAMPLE_RATE)[: 12 * SAMPLE_RATE], SAMPLE_RATE)
    return path


@pytest.fixture(scope="module")
def stereo_44k(speech_16k, tmp_path_factory):
    """The same speech as stereo 44.1 kHz, with a chord in the right channel."""
    voice = soxr.resample(sf.read(speech_16k, dtype="float32")[0], SAMPLE_RATE, 44100)
    t = np.arange(voice.size) / 44100
    chord = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    path = tmp_path_factory.mktemp("separate") / "stereo44k.flac"
    sf.write(path, np.stack([voice, voice + chord], axis=1).astype(np.float32), 44100)
    return path


def separator(repo, **options) -> DemucsSeparator:
    model = DemucsSeparator(DemucsConfig(name=DEMUCS_NAME, repo=repo, **options))
    model.setup()
    return model


@pytest.mark.parametrize("source", ["speech_16k", "stereo_44k"])
def test_vocals_are_16k_mono_flac_exactly_as_long_as_the_source(source, tiny_demucs_repo, tmp_path, request):
    src = request.getfixturevalue(source)
    result = separator(tiny_demucs_repo, chunk_s=4.0, context_s=2.0).separate_file(src, tmp_path / "v.flac")

    info = sf.info(result.path)
    assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
    assert info.frames == result.samples == read_mono_16k(src).size
    assert result.model_rate == 44100
    assert np.abs(sf.read(result.path)[0]).max() > 0


def test_chunked_vocals_equal_unchunked_vocals_within_the_crossfade(tiny_demucs_repo, stereo_44k, tmp_path):
    whole = separator(tiny_demucs_repo, chunk_s=60.0).separate_file(stereo_44k, tmp_path / "whole.flac")
    parts = separator(tiny_demucs_repo, chunk_s=4.0, context_s=5.0).separate_file(
        stereo_44k, tmp_path / "parts.flac"
    )

    a, b = sf.read(whole.path)[0], sf.read(parts.path)[0]
    assert a.size == b.size
    # The first window's own part (3.75 s: the tiny model's 5 s segment at overlap 0.25 sets the stride)
    # is the same model computation: equal up to FLAC's 16-bit step. Past it, windows differ only where
    # they are crossfaded (measured correlation 0.985 over 12 s of speech with a tone).
    first = int(3.5 * SAMPLE_RATE)
    assert np.abs(a[:first] - b[:first]).max() <= 2 / 32768
    assert np.corrcoef(a, b)[0, 1] > 0.95


def test_a_missing_repo_folder_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-repo"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        DemucsSeparator(DemucsConfig(name=DEMUCS_NAME, repo=missing)).setup()
