"""Speaker embeddings of speech segments and FS-CLAP's speaker-consistency score.

Two embedding backends: resemblyzer's GE2E encoder (weights in its wheel, CPU, the default) and a
pyannote embedding model from a local folder (e.g. a WeSpeaker ResNet34 as in pyannote's diarization
pipelines, meant for GPU). Both return L2-normalised rows, so a dot product is a cosine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from annotate.base import StrictConfig

if TYPE_CHECKING:
    import torch

# resemblyzer's GE2E partial utterances: 1.6 s windows, 1.3 per second, a last partial kept when
# 75 % full (its embed_utterance defaults); the level its preprocess_wav brings quiet audio up to.
_GE2E_PARTIALS_PER_S = 1.3
_GE2E_MIN_COVERAGE = 0.75
_GE2E_TARGET_DBFS = -30
_GE2E_BATCH = 256  # partial utterances per forward pass


class SpeakerEmbedderConfig(StrictConfig):
    backend: Literal["ge2e", "pyannote"] = "ge2e"
    model_dir: Path | None = None  # the pyannote backend's local embedding model folder (required there)
    device: str = "cpu"


class SpeakerEmbedder:
    """`embed(waves)` gives one L2-normalised speaker embedding per 16 kHz mono waveform."""

    def __init__(self, config: SpeakerEmbedderConfig) -> None:
        if config.backend == "pyannote" and config.model_dir is None:
            raise ValueError("the pyannote speaker embedding backend needs model_dir (a local model folder)")
        self.config = config
        self._model = None

    def setup(self) -> None:
        import torch

        if self.config.backend == "ge2e":
            import librosa
            from resemblyzer import VoiceEncoder, hparams

            self._model = VoiceEncoder(self.config.device, verbose=False)
            # resemblyzer's mel spectrogram (librosa's, a call per waveform) computed with torch: the same
            # values (a test holds the embeddings equal) in a tenth of the time.
            self._n_fft = hparams.sampling_rate * hparams.mel_window_length // 1000
            self._hop = hparams.sampling_rate * hparams.mel_window_step // 1000
            basis = librosa.filters.mel(
                sr=hparams.sampling_rate, n_fft=self._n_fft, n_mels=hparams.mel_n_channels
            )
            self._mel_basis = torch.from_numpy(basis)
            self._window = torch.hann_window(self._n_fft)
        else:
            from pyannote.audio import Model

            folder = Path(self.config.model_dir)  # type: ignore[arg-type]
            if not folder.is_dir():
                raise FileNotFoundError(f"speaker embedding model folder {folder} does not exist")
            self._model = Model.from_pretrained(folder).eval().to(torch.device(self.config.device))

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """(len(waves), dim) float32 rows of unit norm."""
        if self._model is None:
            self.setup()
        if not waves:
            raise ValueError("no waveforms to embed")
        if any(w.size == 0 for w in waves):
            raise ValueError("cannot embed an empty waveform")
        rows = self._embed_ge2e(waves) if self.config.backend == "ge2e" else self._embed_pyannote(waves)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def _embed_ge2e(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """resemblyzer's `embed_utterance` (mean of its partial-utterance embeddings), with the partials
        of all waveforms batched through the encoder together."""
        import torch
        from resemblyzer.audio import normalize_volume

        encoder = self._model
        partials: list[np.ndarray] = []
        owner: list[int] = []
        for index, wave in enumerate(waves):
            wave = normalize_volume(wave.astype(np.float32), _GE2E_TARGET_DBFS, increase_only=True)
            wav_slices, mel_slices = encoder.compute_partial_slices(
                wave.size, _GE2E_PARTIALS_PER_S, _GE2E_MIN_COVERAGE
            )
            wave = np.pad(wave, (0, max(0, wav_slices[-1].stop - wave.size)))
            mel = self._mel(torch.from_numpy(wave))
            partials.extend(mel[s] for s in mel_slices)
            owner.extend([index] * len(mel_slices))
        outputs = []
        with torch.no_grad():
            for first in range(0, len(partials), _GE2E_BATCH):
                batch = torch.from_numpy(np.stack(partials[first : first + _GE2E_BATCH]))
                outputs.append(encoder(batch.to(encoder.device)).cpu().numpy())
        partial_embeddings = np.concatenate(outputs)
        sums = np.zeros((len(waves), partial_embeddings.shape[1]), dtype=np.float64)
        np.add.at(sums, np.asarray(owner), partial_embeddings)
        return sums.astype(np.float32)

    def _mel(self, wave: torch.Tensor) -> np.ndarray:
        """(frames, mel channels) power mel spectrogram, as resemblyzer's `wav_to_mel_spectrogram`."""
        import torch

        spectrum = torch.stft(
            wave,
            self._n_fft,
            self._hop,
            window=self._window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return (self._mel_basis @ spectrum.abs().square()).T.numpy()

    def _embed_pyannote(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        model = self._model
        device = next(model.parameters()).device
        rows = []
        with torch.no_grad():  # one at a time: lengths differ and padding would change the statistics
            for wave in waves:
                batch = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None, None]
                rows.append(model(batch.to(device)).cpu().numpy()[0])
        return np.stack(rows).astype(np.float32)


def consistency_scores(embeddings: np.ndarray, labels: Sequence[Hashable]) -> list[float | None]:
    """FS-CLAP's speaker consistency: for each segment, the mean of (cos + 1) / 2 over the OTHER segments
    with the same label; None for a segment alone with its label (nothing to compare with).

    `embeddings` rows must be L2-normalised (as `SpeakerEmbedder.embed` returns them)."""
    if len(embeddings) != len(labels):
        raise ValueError(f"{len(embeddings)} embeddings for {len(labels)} labels")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        members[label].append(index)
    scores: list[float | None] = [None] * len(labels)
    for indices in members.values():
        if len(indices) < 2:
            continue
        group = np.asarray(embeddings, dtype=np.float64)[indices]
        similarity = (group @ group.T + 1.0) / 2.0
        others = (similarity.sum(axis=1) - np.diag(similarity)) / (len(indices) - 1)
        for index, score in zip(indices, others, strict=True):
            scores[index] = float(score)
    return scores
