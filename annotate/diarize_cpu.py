"""Diarization with weights we have offline: pyannote's segmentation model, alone or with GE2E clustering.

`PyannoteVAD` finds speech and speaker changes without telling speakers apart; `CpuDiarizer` (the
`diarize-cpu` backend) also labels speakers across the source, in the manner of pyannote's 3.x
pipeline: embed each window's local speakers, cluster the embeddings, and map every window's local
speakers to the clusters.

Both read the source once, in decode blocks. Memory per source: the batch of windows being scored
(batch_size x 5 s of audio), plus per window its (frames x 3) scores (3.5 kB, 25 MB for 2 hours at a
1 s step) and, for `CpuDiarizer`, up to 3 embeddings of 1 kB; the frame-level arrays at the end hold a
few values per 17 ms frame (under 30 MB for 2 hours).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from annotate.audio import SAMPLE_RATE, iter_mono_16k
from annotate.base import StrictConfig
from annotate.diarize import NO_SPEECH, OVERLAP, FrameGrid, SourceTurns, frame_turns
from annotate.segmentation_windows import (
    FrameAverage,
    PyannoteSegmentationConfig,
    SegmentationModel,
    Window,
    clean_durations,
    hysteresis,
    keeps_step,
)
from annotate.speakers import SpeakerEmbedder, SpeakerEmbedderConfig

_SPEECH, _COUNT = 0, 1  # channels of the speech average: speech score, active local speakers
_EMBED_BATCH = 64  # local speakers embedded together


class _Counted:
    """A block stream that counts its samples as it is consumed."""

    def __init__(self, blocks: Iterable[np.ndarray]) -> None:
        self._blocks = blocks
        self.total = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self._blocks:
            self.total += block.size
            yield block


class _SpeechTracker:
    """Speech and overlap per frame from every window's local speaker activity."""

    def __init__(self, model: SegmentationModel) -> None:
        self._model = model
        self._average = FrameAverage(model, 2)

    def add(self, window: Window, active: np.ndarray) -> None:
        self._average.add(window.index, np.stack([window.scores.max(axis=1), active.sum(axis=1)], axis=1))

    def labels(self, grid: FrameGrid) -> tuple[np.ndarray, np.ndarray]:
        """(NO_SPEECH, OVERLAP, or 0 for speech of one speaker per frame, speech score per frame)."""
        config = self._model.config
        average = self._average.result(grid.frames)
        speech = hysteresis(average[:, _SPEECH], config.onset, config.offset)
        speech = clean_durations(
            speech,
            round(config.min_duration_on_s * SAMPLE_RATE / grid.step),
            round(config.min_duration_off_s * SAMPLE_RATE / grid.step),
        )
        labels = np.where(speech, 0, NO_SPEECH)
        labels[speech & (average[:, _COUNT] >= 1.5)] = OVERLAP  # most windows hear two or more
        return labels, average[:, _SPEECH]


def _local_activity(window: Window, config: PyannoteSegmentationConfig) -> np.ndarray:
    """(frames, local speakers) booleans: each local speaker's hysteresis-thresholded activity."""
    return hysteresis(window.scores, config.onset, config.offset)


class PyannoteVAD:
    """Speech turns from the segmentation model alone: speech where any local speaker is active, cut
    where the active local speaker changes. It cannot tell whether two turns are the same speaker, so
    each turn is its own speaker, labelled "turn0", "turn1", ... in order.

    A change is read from the window most centred on it, so the step decides how well changes are
    placed: on pyannote's sample, step_s 0.5 finds every reference change within 0.1 s, while step_s 1.0
    placed one 0.5 s late. Use 0.5 for this mode."""

    def __init__(self, config: PyannoteSegmentationConfig) -> None:
        self.config = config
        self._model: SegmentationModel | None = None

    def setup(self) -> None:
        self._model = SegmentationModel(self.config)

    def turns(self, path: str | Path) -> SourceTurns:
        if self._model is None:
            self.setup()
        model = self._model
        assert model is not None
        blocks = _Counted(iter_mono_16k(path, self.config.decode_block_s))
        speech = _SpeechTracker(model)
        changes: list[int] = []
        tail: list[int] = []  # changes after the centre part of the latest window (kept if it is the last)
        for window in model.windows(blocks):
            active = _local_activity(window, self.config)
            speech.add(window, active)
            central, tail = self._changes(window, active)
            changes.extend(central)
        changes.extend(tail)
        grid = model.grid(blocks.total)
        labels, speech_scores = speech.labels(grid)
        starts = np.zeros(labels.size, dtype=bool)
        starts[[c for c in changes if c < labels.size]] = True
        # A new turn at every speaker change and wherever single-speaker speech resumes.
        single = labels == 0
        starts |= single & ~np.concatenate(([False], single[:-1]))
        labels[single] = np.cumsum(starts)[single] - 1
        return frame_turns(labels, grid, speech_scores, prefix="turn")

    def _changes(self, window: Window, active: np.ndarray) -> tuple[list[int], list[int]]:
        """Frames (on the source grid) where the window's dominant local speaker changes, split into
        those this window is the most central one for, and those after that part."""
        model = self._model
        assert model is not None
        dominant = np.where(active.any(axis=1), np.argmax(window.scores * active, axis=1), -1)
        # Carry the last speaker over pauses, so a change across a pause counts too.
        last = np.maximum.accumulate(np.where(dominant >= 0, np.arange(dominant.size), -1))
        carried = np.where(last >= 0, dominant[np.maximum(last, 0)], -1)
        switch = (dominant[1:] >= 0) & (carried[:-1] >= 0) & (dominant[1:] != carried[:-1])
        changed = np.flatnonzero(switch) + 1
        first_frame = window.index * model.frames_per_hop
        centre_start = model.frames_per_window // 2 - model.frames_per_hop // 2
        lo = 0 if window.index == 0 else centre_start
        hi = centre_start + model.frames_per_hop
        central = [first_frame + int(f) for f in changed if lo <= f < hi]
        after = [first_frame + int(f) for f in changed if f >= hi]
        return central, after


class CpuDiarizerConfig(StrictConfig):
    # A 2 s step: each second of speech is scored in 2-3 windows and embedded in 2-3 (GE2E is most of
    # the cost), about twice as fast as a 1 s step; pyannote's sample: DER 10.6% against 8.1% (README).
    segmentation: Annotated[PyannoteSegmentationConfig, keeps_step(2.0)] = PyannoteSegmentationConfig(
        step_s=2.0
    )
    embedding: SpeakerEmbedderConfig = SpeakerEmbedderConfig()
    min_embedding_s: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="A local speaker needs this much speech alone in a window to be embedded."
    )
    linkage: Literal["average", "complete", "single"] = "average"
    threshold: Annotated[float, Field(gt=0, lt=2)] = Field(
        default=0.2, description="Cosine distance at which agglomerative clustering stops merging."
    )
    merge_centroids_below: Annotated[float, Field(ge=0, lt=2)] = Field(
        default=0.12,
        description="After clustering, clusters whose centroids are closer (cosine distance) are one "
        "speaker: centroids of many windows are steadier than single 1-5 s embeddings.",
    )
    min_cluster_size: Annotated[int, Field(ge=1)] = Field(
        default=3, description="Smaller clusters join their nearest large one (if any cluster is large)."
    )
    min_cluster_share: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.05,
        description="Clusters holding a smaller share of the embeddings join their nearest large one too: "
        "on long sources a voice splits into a few small clusters at any threshold low enough to keep "
        "two similar voices apart.",
    )
    max_clustered: Annotated[int, Field(ge=2)] = Field(
        default=3000,
        description="Embeddings clustered at most (evenly spread over the source; the others join the "
        "nearest cluster): bounds the n^2/2 distance matrix at 36 MB.",
    )


class CpuDiarizer:
    """pyannote segmentation + GE2E embeddings of each window's local speakers + agglomerative clustering
    (cosine) → exclusive turns labelled spk0, spk1, ... per source."""

    def __init__(self, config: CpuDiarizerConfig) -> None:
        self.config = config
        self._model: SegmentationModel | None = None
        self._embedder = SpeakerEmbedder(config.embedding)

    def setup(self) -> None:
        self._model = SegmentationModel(self.config.segmentation)
        self._embedder.setup()

    def turns(self, path: str | Path) -> SourceTurns:
        if self._model is None:
            self.setup()
        model = self._model
        assert model is not None
        segmentation = self.config.segmentation
        blocks = _Counted(iter_mono_16k(path, segmentation.decode_block_s))
        speech = _SpeechTracker(model)
        window_scores: list[np.ndarray] = []
        owners: list[tuple[int, int]] = []  # (window, local speaker) of each embedding
        pending: list[np.ndarray] = []
        embeddings: list[np.ndarray] = []
        for window in model.windows(blocks):
            active = _local_activity(window, segmentation)
            speech.add(window, active)
            window_scores.append(window.scores)
            for speaker, audio in self._exclusive_speech(window, active):
                owners.append((window.index, speaker))
                pending.append(audio)
            if len(pending) >= _EMBED_BATCH:
                embeddings.append(self._embedder.embed(pending))
                pending = []
        if pending:
            embeddings.append(self._embedder.embed(pending))
        grid = model.grid(blocks.total)
        labels, speech_scores = speech.labels(grid)
        clusters = self._cluster(np.concatenate(embeddings) if embeddings else np.zeros((0, 1)))
        speakers = self._label_speech(labels, window_scores, owners, clusters, grid)
        return frame_turns(speakers, grid, speech_scores)

    def _exclusive_speech(self, window: Window, active: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Each local speaker's samples where it talks alone in the window, if long enough."""
        model = self._model
        assert model is not None
        alone = active & (active.sum(axis=1, keepdims=True) == 1)
        needed = self.config.min_embedding_s * SAMPLE_RATE
        window_grid = model.grid(window.audio.size)
        for speaker in range(alone.shape[1]):
            frames = alone[:, speaker]
            if frames.sum() * model.frame_step < needed:
                continue
            pieces = [
                window.audio[window_grid.boundary(f) : window_grid.boundary(f + 1)]
                for f in np.flatnonzero(frames)
            ]
            yield speaker, np.concatenate(pieces)

    def _cluster(self, embeddings: np.ndarray) -> np.ndarray:
        """A cluster index per embedding."""
        from scipy.cluster.hierarchy import fcluster, linkage

        if len(embeddings) < 2:
            return np.zeros(len(embeddings), dtype=int)
        config = self.config
        chosen = np.unique(np.linspace(0, len(embeddings) - 1, config.max_clustered).round().astype(int))
        tree = linkage(embeddings[chosen], method=config.linkage, metric="cosine")
        first = fcluster(tree, t=config.threshold, criterion="distance") - 1
        sizes = np.bincount(first)
        large = np.flatnonzero(sizes >= max(config.min_cluster_size, config.min_cluster_share * len(chosen)))
        keep = large if large.size else np.arange(sizes.size)
        kept = np.full(first.shape, -1)
        for index, cluster in enumerate(keep):
            kept[first == cluster] = index
        centroids = _centroids(embeddings[chosen], kept, keep.size)
        return self._merge_close(embeddings, np.argmax(embeddings @ centroids.T, axis=1))

    def _merge_close(self, embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Join the two clusters with the closest centroids while they are closer than the setting."""
        while labels.max() > 0:
            centroids = _centroids(embeddings, labels, int(labels.max()) + 1)
            distance = 1.0 - centroids @ centroids.T
            np.fill_diagonal(distance, np.inf)
            keep, join = sorted(np.unravel_index(np.argmin(distance), distance.shape))
            if distance[keep, join] >= self.config.merge_centroids_below:
                break
            labels = np.where(labels == join, keep, labels)
            labels = np.unique(labels, return_inverse=True)[1]
        return labels

    def _label_speech(
        self,
        labels: np.ndarray,
        window_scores: list[np.ndarray],
        owners: list[tuple[int, int]],
        clusters: np.ndarray,
        grid: FrameGrid,
    ) -> np.ndarray:
        """Each single-speaker speech frame gets the cluster whose mapped local speakers score highest
        there (averaged over windows); frames no embedded local speaker covers take the nearest
        labelled frame's cluster (all speech is one speaker if nothing could be embedded)."""
        model = self._model
        assert model is not None
        count = int(clusters.max()) + 1 if clusters.size else 1
        cluster_of: dict[int, list[tuple[int, int]]] = {}
        for (window, speaker), cluster in zip(owners, clusters, strict=True):
            cluster_of.setdefault(window, []).append((speaker, int(cluster)))
        average = FrameAverage(model, count)
        for window, scores in enumerate(window_scores):
            values = np.zeros((scores.shape[0], count))
            for speaker, cluster in cluster_of.get(window, []):
                values[:, cluster] = np.maximum(values[:, cluster], scores[:, speaker])
            average.add(window, values)
        per_cluster = average.result(grid.frames)
        single = labels == 0
        known = single & (per_cluster.max(axis=1) > 0)
        out = labels.copy()
        out[known] = np.argmax(per_cluster[known], axis=1)
        unknown = np.flatnonzero(single & ~known)
        if unknown.size:
            anchors = np.flatnonzero(known)
            if anchors.size == 0:
                out[unknown] = 0
            else:
                position = np.clip(np.searchsorted(anchors, unknown), 1, anchors.size - 1)
                if anchors.size == 1:
                    nearest = np.zeros(unknown.size, dtype=int)
                else:
                    left, right = anchors[position - 1], anchors[position]
                    nearest = np.where(unknown - left <= right - unknown, position - 1, position)
                out[unknown] = out[anchors[nearest]]
        return out


def _centroids(embeddings: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Unit-norm mean embedding of each label 0..count-1 (labels outside that range are ignored)."""
    centroids = np.stack([embeddings[labels == c].mean(axis=0) for c in range(count)])
    return centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
