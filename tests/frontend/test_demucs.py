"""demucs loads a local model repo through its own `get_model(name, repo=...)` and separates stereo audio."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from make_tiny_models import DEMUCS_NAME

from tests.conftest import speak


@pytest.fixture(scope="module")
def speech_over_music(tmp_path_factory) -> torch.Tensor:
    """About 6 s of stereo 44.1 kHz: espeak speech in both channels over a chord in one of them."""
    text = "The rain stopped just before the concert began."
    wav = speak(tmp_path_factory.mktemp("demucs") / "speech.wav", text)
    voice, rate = sf.read(wav, dtype="float32")
    voice = soxr.resample(voice, rate, 44100)[: 6 * 44100]
    t = np.arange(voice.size) / 44100
    chord = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    stereo = np.stack([voice, voice + chord]).astype(np.float32)
    return torch.from_numpy(stereo)


def test_get_model_loads_the_repo_folder_as_a_bag_of_one_htdemucs(tiny_demucs_repo):
    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs
    from demucs.pretrained import get_model

    bag = get_model(DEMUCS_NAME, repo=tiny_demucs_repo)

    assert isinstance(bag, BagOfModels)
    assert [type(m) for m in bag.models] == [HTDemucs]
    assert bag.sources == ["drums", "bass", "other", "vocals"]
    assert (bag.samplerate, bag.audio_channels) == (44100, 2)


def test_apply_model_gives_a_stereo_vocals_stem_as_long_as_the_input(tiny_demucs_repo, speech_over_music):
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    bag = get_model(DEMUCS_NAME, repo=tiny_demucs_repo)
    stems = apply_model(bag, speech_over_music[None], device="cpu", split=True, overlap=0.25)

    assert stems.shape == (1, 4, 2, speech_over_music.shape[-1])
    vocals = stems[0, bag.sources.index("vocals")]
    assert vocals.shape == speech_over_music.shape
    assert torch.isfinite(vocals).all()


def test_a_corrupted_model_file_is_refused_by_its_checksum(tiny_demucs_repo, tmp_path):
    from demucs.pretrained import get_model
    from demucs.repo import ModelLoadingError

    repo = tmp_path / "repo"
    repo.mkdir()
    for file in tiny_demucs_repo.iterdir():
        (repo / file.name).write_bytes(file.read_bytes())
    (model_file,) = repo.glob("*.th")
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))

    with pytest.raises(ModelLoadingError, match="Invalid checksum"):
        get_model(DEMUCS_NAME, repo=repo)
