"""The dual encoder: padding never counts, real GE2E weights behave as resemblyzer's, CLSP heads,
the logit scale, the model(audio, audio_lens, text) contract and the export round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from annotate.audio import read_mono_16k
from tests.conftest import speak
from train.audio_encoders import GE2EEncoder, build_audio_encoder
from train.config import AudioEncoderConfig, ModelConfig, TextEncoderConfig
from train.export import export_model, load_model
from train.model import LOGIT_SCALE_MAX, DualEncoder, masked_mean

TINY_CONV = {"kind": "conv_transformer", "n_mels": 16, "width": 32, "layers": 1, "heads": 2}


def tiny_model(text_path, audio=None, **kwargs) -> DualEncoder:
    config = ModelConfig(
        audio=AudioEncoderConfig(**(audio or TINY_CONV)),
        text=TextEncoderConfig(kind="hf", path=str(text_path)),
        hidden_dim=32,
        embed_dim=16,
    )
    torch.manual_seed(0)
    return DualEncoder(config, **kwargs).eval()


def test_masked_mean_ignores_padded_frames():
    frames = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert masked_mean(frames, mask).flatten().tolist() == [2.0, 4.0]


def hf_folder(tmp_path, kind: str):
    """A tiny random transformers audio model saved as a local folder."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    folder = tmp_path / kind
    torch.manual_seed(0)
    if kind == "wav2vec2":
        config = Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(16, 16),
            conv_stride=(5, 4),
            conv_kernel=(10, 8),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
        )
        Wav2Vec2Model(config).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    else:
        config = WhisperConfig(
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_mel_bins=80,
            vocab_size=100,
            max_source_positions=1500,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=3,
        )
        WhisperModel(config).save_pretrained(folder)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["ge2e", "conv_transformer", "wav2vec2", "whisper"])
def test_a_clip_pools_the_same_alone_and_padded_in_a_batch(kind, tmp_path):
    if kind in ("wav2vec2", "whisper"):
        config = AudioEncoderConfig(kind="hf", path=str(hf_folder(tmp_path, kind)))
    else:
        config = AudioEncoderConfig(**(TINY_CONV if kind == "conv_transformer" else {"kind": "ge2e"}))
    torch.manual_seed(0)
    encoder = build_audio_encoder(config).eval()
    generator = torch.Generator().manual_seed(1)
    short = torch.randn(1, 16000 * 2, generator=generator) * 0.1
    long = torch.randn(1, 16000 * 5, generator=generator) * 0.1
    batch = torch.cat([long, torch.nn.functional.pad(short, (0, long.shape[1] - short.shape[1]))])
    with torch.no_grad():
        alone = masked_mean(*encoder(short, torch.tensor([short.shape[1]])))
        padded = masked_mean(*encoder(batch, torch.tensor([long.shape[1], short.shape[1]])))
    assert torch.allclose(alone[0], padded[1], atol=1e-4), (alone[0] - padded[1]).abs().max()
    assert not torch.allclose(padded[0], padded[1], atol=1e-3)


def test_ge2e_windows_reproduce_resemblyzers_embedding_of_real_speech(tmp_path):
    from resemblyzer import VoiceEncoder, preprocess_wav

    wave = read_mono_16k(
        speak(tmp_path / "a.wav", "The library opens at nine every weekday morning, said the clerk.")
    )
    reference = VoiceEncoder("cpu", verbose=False).embed_utterance(preprocess_wav(wave, 16000))
    encoder = GE2EEncoder(AudioEncoderConfig(kind="ge2e", window_features=())).eval()
    trimmed = torch.from_numpy(preprocess_wav(wave, 16000))[None]
    with torch.no_grad():
        frames, mask = encoder(trimmed, torch.tensor([trimmed.shape[1]]))
    ours = masked_mean(frames, mask)[0].numpy()
    cosine = float(ours @ reference / np.linalg.norm(ours) / np.linalg.norm(reference))
    assert cosine > 0.99


def test_the_model_returns_normalised_embeddings_for_the_sides_it_is_given(tiny_text):
    model = tiny_model(tiny_text)
    audio = torch.randn(3, 16000) * 0.1
    lens = torch.tensor([16000, 12000, 8000])
    a, t, scale = model(audio, lens, ["A low voice.", "A fast speaker.", "Loud."])
    assert a.shape == (3, 16) and t.shape == (3, 16)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3)) and torch.allclose(t.norm(dim=-1), torch.ones(3))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    only_audio = model(audio=audio, audio_lens=lens)
    only_text = model(text=["A low voice."])
    assert only_audio[1] is None and only_text[0] is None
    assert torch.allclose(only_audio[0], a, atol=1e-6) and torch.allclose(only_text[1][0], t[0], atol=1e-6)


def test_the_logit_scale_is_clamped_to_0_and_ln_100(tiny_text):
    model = tiny_model(tiny_text)
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == pytest.approx(LOGIT_SCALE_MAX) == pytest.approx(math.log(100))
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == 0.0


def test_clsp_heads_have_the_papers_shape(tiny_text):
    head = tiny_model(tiny_text).audio_head
    layers = [type(m).__name__ for m in [*head.projection, *head.mlp]]
    assert layers == [
        "Linear",
        "ReLU",
        "Linear",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    assert all(m.p == 0.1 for m in head.mlp if isinstance(m, torch.nn.Dropout))


def test_frozen_encoders_are_cached_and_not_trained(tiny_text):
    config = ModelConfig(
        audio=AudioEncoderConfig(**TINY_CONV, trainable=False),
        text=TextEncoderConfig(kind="hf", path=str(tiny_text), trainable=False),
        hidden_dim=32,
        embed_dim=16,
    )
    model = DualEncoder(config).train()
    assert not any(p.requires_grad for p in model.audio_encoder.parameters())
    assert not model.audio_encoder.training and model.audio_head.training
    audio, lens = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000])
    first = model.pooled_audio(audio, lens, keys=["a", "b"])
    # Same keys: the cache answers, whatever the waveform now holds.
    assert torch.equal(model.pooled_audio(torch.zeros_like(audio), lens, keys=["a", "b"]), first)
    assert torch.allclose(model.pooled_audio(audio, lens), first, atol=1e-5)
    # Only the rows not cached are asked for (a lazy batch decodes those alone).
    asked: list[list[int]] = []

    def waveforms(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        asked.append(rows)
        return audio[[r % 2 for r in rows]], lens[[r % 2 for r in rows]]

    both = model.cached_audio(["b", "c", "a", "d"], waveforms)
    assert asked == [[1, 3]]
    assert torch.equal(both[0], first[1]) and torch.equal(both[2], first[0])
    # the same clip encoded with less padding beside it: equal up to the convolutions at its end
    assert torch.allclose(both[1], first[1], atol=1e-3) and torch.equal(both[1], both[3])
    model.cached_audio(["c", "d"], waveforms)
    assert asked == [[1, 3]]  # nothing new to encode: nothing asked


@pytest.mark.parametrize("audio", [TINY_CONV, {"kind": "ge2e"}, "wav2vec2"])
def test_export_and_load_give_the_same_outputs(tiny_text, tmp_path, audio):
    audio_config = {"kind": "hf", "path": str(hf_folder(tmp_path, audio))} if audio == "wav2vec2" else audio
    model = tiny_model(tiny_text, audio_config, tag_classes={"pitch": ["high", "low"]})
    path = export_model(model, tmp_path / "model", {"data": {"runs": [], "holdout_fraction": 0.2}})
    loaded = load_model(path)
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["model.safetensors", "stylecaps_model.json", "text", *(["audio"] if audio == "wav2vec2" else [])]
    )
    audio_batch, lens = torch.randn(2, 20000) * 0.1, torch.tensor([20000, 15000])
    texts = ["A deep, slow voice.", "A high-pitched voice."]
    with torch.no_grad():
        want, got = model(audio_batch, lens, texts), loaded(audio_batch, lens, texts)
    assert torch.allclose(want[0], got[0], atol=1e-5) and torch.allclose(want[1], got[1], atol=1e-5)
    assert loaded.tag_classes == {"pitch": ["high", "low"]}
