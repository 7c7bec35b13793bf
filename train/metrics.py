"""Evaluation metrics as the papers define them, on plain arrays (no model in here).

Retrieval follows CLSP: for each query, the rank of its true item among all candidates (0 = first);
R@k is the share of ranks < k, mAP@10 the mean of 1/(rank+1) over queries whose rank is < 10 (0
otherwise), and the median rank is reported 1-based. Chance is what a random ordering scores.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr

RECALL_AT = (1, 5, 10)


def ranks_of_truth(similarity: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """similarity [Q, C], truth [Q] candidate index → the 0-based rank of each query's true candidate
    (ties counted pessimistically: every candidate scoring at least as high is ahead of it)."""
    true_scores = similarity[np.arange(len(truth)), truth]
    ahead = (similarity >= true_scores[:, None]).sum(axis=1) - 1
    return ahead


def retrieval_scores(ranks: np.ndarray) -> dict[str, float]:
    out = {f"R@{k}": float(np.mean(ranks < k)) for k in RECALL_AT}
    out["mAP@10"] = float(np.mean(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0)))
    out["median_rank"] = float(np.median(ranks + 1))
    return out


def retrieval_chance(candidates: int) -> dict[str, float]:
    """Expected scores of a uniformly random ordering of `candidates` items."""
    out = {f"R@{k}": min(k, candidates) / candidates for k in RECALL_AT}
    out["mAP@10"] = sum(1.0 / (r + 1) for r in range(min(10, candidates))) / candidates
    out["median_rank"] = (candidates + 1) / 2
    return out


def classification_scores(truth: list[str], predicted: list[str], classes: list[str]) -> dict[str, object]:
    """Weighted accuracy (WA: share of correct predictions), unweighted accuracy (UA: mean of the
    per-class recalls over classes that occur), and the confusion matrix [truth, predicted]."""
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(truth, predicted, strict=True):
        confusion[index[t], index[p]] += 1
    support = confusion.sum(axis=1)
    recalls = np.diag(confusion)[support > 0] / support[support > 0]
    return {
        "WA": float(np.trace(confusion) / max(1, confusion.sum())),
        "UA": float(recalls.mean()) if recalls.size else 0.0,
        "confusion": confusion,
    }


def correlations(scores: np.ndarray, ratings: np.ndarray) -> dict[str, float]:
    if len(scores) < 3 or np.ptp(scores) == 0 or np.ptp(ratings) == 0:
        return {"pearson": float("nan"), "spearman": float("nan"), "n": float(len(scores))}
    return {
        "pearson": float(pearsonr(scores, ratings).statistic),
        "spearman": float(spearmanr(scores, ratings).statistic),
        "n": float(len(scores)),
    }


def save_confusion_png(confusion: np.ndarray, classes: list[str], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    axes.imshow(confusion, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for (row, column), value in np.ndenumerate(confusion):
        axes.text(column, row, str(value), ha="center", va="center")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
