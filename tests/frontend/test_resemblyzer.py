"""resemblyzer's GE2E speaker encoder (weights in its wheel) runs in this environment."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import soxr

from tests.conftest import speak


def embed(encoder, path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    return encoder.embed_utterance(soxr.resample(audio, rate, 16000))


def test_ge2e_embeddings_are_unit_256_vectors_closer_within_a_voice_than_across(tmp_path):
    from resemblyzer import VoiceEncoder

    encoder = VoiceEncoder("cpu", verbose=False)
    first = embed(
        encoder,
        speak(tmp_path / "a1.wav", "The library opens at nine every weekday morning.", "-v", "en-us+m3"),
    )
    second = embed(
        encoder,
        speak(tmp_path / "a2.wav", "A light rain fell over the harbour all afternoon.", "-v", "en-us+m3"),
    )
    other = embed(
        encoder,
        speak(
            tmp_path / "b.wav",
            "A light rain fell over the harbour all afternoon.",
            "-v",
            "en-us+f4",
            "-p",
            "80",
        ),
    )

    assert first.shape == (256,)
    assert np.isclose(np.linalg.norm(first), 1.0, atol=1e-5)
    assert first @ second > first @ other
