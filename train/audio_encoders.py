"""Speech encoders: a padded batch of 16 kHz waveforms and their lengths → frames and a frame mask.

Every encoder returns (frames [B, F, D], mask [B, F] bool) with the mask derived from the exact
sample lengths, so the pooling after it never counts padding.

- `ge2e`: resemblyzer's GE2E speaker encoder (3-layer LSTM over 40 mel bands, trained on thousands of
  real speakers; weights ship in the resemblyzer wheel), run as it was trained: on 1.6 s windows
  1.3 times a second, one 256-d embedding per window. The speaker embedding is trained to ignore
  what varies within a speaker, which is what style captions describe, so each window can also carry
  `window_features`: 'spectral', its mean log-mel and log energy before GE2E's volume normalisation
  (level, spectral tilt: loudness, effort), and 'pitch', the mean log f0 of its voiced frames and its
  voiced share, from a normalised-autocorrelation tracker (pitch itself, not a correlate of it).
- `conv_transformer`: from scratch, two strided convolutions and a transformer over log-mel.
- `hf`: any transformers audio encoder from a local folder (WavLM, HuBERT, wav2vec2, Whisper's encoder).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from annotate.audio import SAMPLE_RATE
from train.config import AudioEncoderConfig

_HOP = 160  # 10 ms
_N_FFT = 400  # 25 ms


def mel_filters(n_mels: int) -> torch.Tensor:
    """Slaney-style mel filterbank [n_fft/2+1, n_mels], librosa's default (what GE2E was trained on)."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=_N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(bank.astype(np.float32))


def frame_lengths(audio_lens: torch.Tensor) -> torch.Tensor:
    """STFT frames (centered, 10 ms hop) of each clip."""
    return audio_lens // _HOP + 1


def lengths_to_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class MelSpectrogram(nn.Module):
    """Power mel spectrogram [B, F, n_mels] as librosa.feature.melspectrogram computes it."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(_N_FFT), persistent=False)
        self.register_buffer("filters", mel_filters(n_mels), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            audio, _N_FFT, _HOP, window=self.window, center=True, pad_mode="constant", return_complex=True
        )
        return (spec.abs() ** 2).transpose(1, 2) @ self.filters


def scaled_log(mel: torch.Tensor) -> torch.Tensor:
    return (torch.log10(mel + 1e-10) + 5.0) / 5.0


class GE2EEncoder(nn.Module):
    WINDOW = 160  # frames: the 1.6 s partials GE2E was trained on
    HOP = 77  # resemblyzer's 1.3 windows per second
    MIN_COVERAGE = 0.75
    TARGET_DBFS = -30.0

    def __init__(self, config: AudioEncoderConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.mel = MelSpectrogram(40)
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.features = config.window_features
        self.out_dim = (
            256 + (41 if "spectral" in self.features else 0) + (2 if "pitch" in self.features else 0)
        )
        if pretrained:
            state = torch.load(ge2e_weights(), map_location="cpu", weights_only=True)["model_state"]
            self.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})

    def _normalised(self, audio: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Quiet clips raised to -30 dBFS RMS over their real samples (resemblyzer's preprocessing:
        louder ones stay as they are)."""
        mask = lengths_to_mask(lens, audio.shape[1])
        rms = torch.sqrt((audio.square() * mask).sum(1) / lens.clamp(min=1) + 1e-12)
        gain = (10 ** (self.TARGET_DBFS / 20) / rms).clamp(min=1.0)
        return audio * gain[:, None]

    def windows(self, n_frames: torch.Tensor) -> tuple[int, torch.Tensor]:
        """Number of window positions and which are valid per clip [B, W]."""
        count = max(1, math.ceil((int(n_frames.max()) - self.WINDOW) / self.HOP) + 1)
        starts = torch.arange(count, device=n_frames.device) * self.HOP
        covered = (n_frames[:, None] - starts[None, :]).clamp(max=self.WINDOW)
        return count, (covered >= self.MIN_COVERAGE * self.WINDOW) | (starts[None, :] == 0)

    def forward(self, audio: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_frames = frame_lengths(lens)
        count, valid = self.windows(n_frames)
        total = (count - 1) * self.HOP + self.WINDOW
        mel = self.mel(self._normalised(audio, lens))
        mel = nn.functional.pad(mel, (0, 0, 0, max(0, total - mel.shape[1])))
        parts = mel.unfold(1, self.WINDOW, self.HOP).transpose(2, 3)  # [B, W, WINDOW, 40]
        batch = parts.shape[0]
        _, (hidden, _) = self.lstm(parts.reshape(-1, self.WINDOW, 40))
        embeds = torch.relu(self.linear(hidden[-1]))
        embeds = embeds / embeds.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        frames = embeds.reshape(batch, count, -1)
        extra = []
        if "spectral" in self.features:
            raw = self.mel(audio)
            extra.append(scaled_log(torch.cat([raw, raw.sum(-1, keepdim=True)], dim=-1)))  # bands + energy
        if "pitch" in self.features:
            log_f0, voiced = frame_pitch(audio, lens)
            extra.append(torch.stack([log_f0 * voiced, voiced], dim=-1))
        if extra:
            per_frame = torch.cat([e[:, : mel.shape[1]] for e in extra], dim=-1)
            per_frame = nn.functional.pad(per_frame, (0, 0, 0, max(0, total - per_frame.shape[1])))
            frame_mask = lengths_to_mask(n_frames, per_frame.shape[1]).float()[..., None]
            sums = (per_frame * frame_mask).unfold(1, self.WINDOW, self.HOP).sum(-1)  # [B, W, features]
            counts = frame_mask.unfold(1, self.WINDOW, self.HOP).sum(-1).clamp(min=1)
            means = sums / counts
            if "pitch" in self.features:
                # log f0 averaged over the window's voiced frames only (unvoiced frames carry none).
                voiced_share = means[..., -1:].clamp(min=1e-6)
                means = torch.cat(
                    [means[..., :-2], means[..., -2:-1] / voiced_share, means[..., -1:]], dim=-1
                )
            frames = torch.cat([frames, means], dim=-1)
        return frames, valid


_PITCH_FRAME = 640  # 40 ms: two periods of a 50 Hz voice
_MIN_LAG, _MAX_LAG = SAMPLE_RATE // 500, SAMPLE_RATE // 60  # 500 Hz .. 60 Hz
_VOICING = 0.5  # normalised autocorrelation at the period above which a frame counts as voiced
_SILENCE_DB = 40.0  # frames this far below the clip's loudest are silence


def frame_pitch(audio: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per 10 ms frame (centred like the STFT): log2(f0 / 150 Hz) and voicing (0/1), from the
    normalised autocorrelation. The first lag within 10% of the best peak is taken, which avoids
    the usual octave-down errors."""
    half = _PITCH_FRAME // 2
    padded = nn.functional.pad(audio, (half, half))
    frames = padded.unfold(1, _PITCH_FRAME, _HOP)  # [B, F, 640]
    frames = frames - frames.mean(-1, keepdim=True)
    spectrum = torch.fft.rfft(frames, n=2 * _PITCH_FRAME)
    acf = torch.fft.irfft(spectrum.abs().square(), n=2 * _PITCH_FRAME)[..., : _MAX_LAG + 1]
    energy = acf[..., :1]
    normalised = acf / energy.clamp(min=1e-10)
    # Unbiased by the overlap that shrinks with the lag.
    normalised = normalised * (_PITCH_FRAME / (_PITCH_FRAME - torch.arange(_MAX_LAG + 1)))
    search = normalised[..., _MIN_LAG:]
    best = search.max(-1, keepdim=True).values
    lag = (search >= 0.9 * best).float().argmax(-1) + _MIN_LAG
    level = 10 * torch.log10(energy[..., 0] + 1e-10)
    valid = lengths_to_mask(frame_lengths(lens), level.shape[1])
    loudest = level.masked_fill(~valid, -1e9).max(-1, keepdim=True).values
    voiced = (best[..., 0] > _VOICING) & (level > loudest - _SILENCE_DB) & valid
    log_f0 = torch.log2(SAMPLE_RATE / lag.float() / 150.0)
    return log_f0, voiced.float()


def ge2e_weights() -> Path:
    """resemblyzer's pretrained.pt, found without importing resemblyzer (it pulls librosa and webrtcvad)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("resemblyzer is not installed (it carries the GE2E weights)")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


class ConvTransformerEncoder(nn.Module):
    def __init__(self, config: AudioEncoderConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.mel = MelSpectrogram(config.n_mels)
        width = config.width
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(config.n_mels, width, 3, stride=2, padding=1),
                nn.Conv1d(width, width, 3, stride=2, padding=1),
            ]
        )
        layer = nn.TransformerEncoderLayer(
            width, config.heads, 4 * width, 0.1, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out_dim = width

    @staticmethod
    def _positions(count: int, width: int) -> torch.Tensor:
        position = torch.arange(count)[:, None]
        rates = torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
        table = torch.zeros(count, width)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * rates), torch.cos(position * rates)
        return table

    def forward(self, audio: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = scaled_log(self.mel(audio)).transpose(1, 2)  # [B, n_mels, F]
        lengths = frame_lengths(lens)
        for conv in self.convs:
            # Padded frames are zeroed before each convolution, as a clip alone sees its zero padding.
            frames = frames * lengths_to_mask(lengths, frames.shape[2])[:, None, :]
            frames = nn.functional.gelu(conv(frames))
            lengths = (lengths - 1) // 2 + 1  # stride 2, kernel 3, padding 1
        frames = frames.transpose(1, 2)
        mask = lengths_to_mask(lengths, frames.shape[1])
        frames = frames + self._positions(frames.shape[1], frames.shape[2]).to(frames)
        frames = self.transformer(frames, src_key_padding_mask=~mask)
        return self.norm(frames), mask


class HFAudioEncoder(nn.Module):
    """A transformers audio model from a local folder; Whisper runs its encoder on 30 s log-mel input."""

    def __init__(self, config: AudioEncoderConfig, pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        assert config.path is not None
        self.extractor = AutoFeatureExtractor.from_pretrained(config.path)
        model_config = AutoConfig.from_pretrained(config.path)
        model = AutoModel.from_pretrained(config.path) if pretrained else AutoModel.from_config(model_config)
        self.whisper = model_config.model_type == "whisper"
        self.model = model.get_encoder() if self.whisper else model
        self.out_dim = model_config.d_model if self.whisper else model_config.hidden_size

    def forward(self, audio: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.whisper:
            waves = [a[: int(n)].cpu().numpy() for a, n in zip(audio, lens, strict=True)]
            features = self.extractor(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            frames = self.model(features.to(audio.device)).last_hidden_state
            # Two frames per 20 ms: 160-sample hop, then a stride-2 convolution.
            lengths = (frame_lengths(lens) + 1) // 2
        else:
            mask = lengths_to_mask(lens, audio.shape[1])
            values = audio
            if getattr(self.extractor, "do_normalize", False):
                mean = (audio * mask).sum(1, keepdim=True) / lens[:, None]
                var = ((audio - mean).square() * mask).sum(1, keepdim=True) / lens[:, None]
                values = (audio - mean) / torch.sqrt(var + 1e-7) * mask
            use_mask = getattr(self.extractor, "return_attention_mask", True)
            frames = self.model(values, attention_mask=mask.long() if use_mask else None).last_hidden_state
            lengths = self.model._get_feat_extract_output_lengths(lens)
        lengths = lengths.clamp(min=1, max=frames.shape[1])
        return frames, lengths_to_mask(lengths, frames.shape[1])


ENCODERS: dict[str, type[nn.Module]] = {
    "ge2e": GE2EEncoder,
    "conv_transformer": ConvTransformerEncoder,
    "hf": HFAudioEncoder,
}


def build_audio_encoder(config: AudioEncoderConfig, pretrained: bool = True) -> nn.Module:
    return ENCODERS[config.kind](config, pretrained=pretrained)
