"""Contrastive and auxiliary losses, each on features already gathered across workers.

Conventions: `audio` and `text` are L2-normalised [N, D] rows of the whole (gathered) batch; the
loss is taken over this worker's rows `offset : offset + local` (their gradients are local; the
other workers' rows act as negatives), and `mask` [N, N] marks pairs that must not count as
negatives (same source or speaker), the diagonal never masked.
"""

from __future__ import annotations

import random

import torch
from torch.nn import functional as F

_NEG = -1e4  # a masked logit: exp() underflows to 0 in float32 and bfloat16 alike


def _local(offset: int, local: int) -> slice:
    return slice(offset, offset + local)


def _masked(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return logits if mask is None else logits.masked_fill(mask, _NEG)


def same_group_mask(groups: list[int]) -> torch.Tensor:
    """[N, N] True where two different rows share a group (their pair is no negative)."""
    ids = torch.tensor(groups)
    mask = ids[:, None] == ids[None, :]
    mask.fill_diagonal_(False)
    return mask


def info_nce(
    audio: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    offset: int = 0,
    local: int | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE: audio→text and text→audio cross-entropy, averaged."""
    local = audio.shape[0] if local is None else local
    rows = _local(offset, local)
    labels = torch.arange(offset, offset + local, device=audio.device)
    row_mask = None if mask is None else mask[rows]
    audio_to_text = _masked(scale * audio[rows] @ text.T, row_mask)
    text_to_audio = _masked(scale * text[rows] @ audio.T, row_mask)
    return (F.cross_entropy(audio_to_text, labels) + F.cross_entropy(text_to_audio, labels)) / 2


def multi_positive_info_nce(
    audio: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    scale: torch.Tensor,
    soft_lambda: float = 0.5,
    offset: int = 0,
    local: int | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLSP stage 2: each audio has two captions. Audio→text runs over both caption sets at once
    with soft targets (λ on the first caption, 1-λ on the second); each caption→audio is plain
    InfoNCE; the two directions are averaged."""
    local = audio.shape[0] if local is None else local
    n = audio.shape[0]
    rows = _local(offset, local)
    logits = scale * audio[rows] @ torch.cat([first, second]).T  # [local, 2N]
    if mask is not None:
        logits = logits.masked_fill(torch.cat([mask[rows], mask[rows]], dim=1), _NEG)
    targets = torch.zeros_like(logits)
    index = torch.arange(local, device=audio.device)
    targets[index, offset + index] = soft_lambda
    targets[index, n + offset + index] = 1 - soft_lambda
    audio_to_text = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    labels = torch.arange(offset, offset + local, device=audio.device)
    row_mask = None if mask is None else mask[rows]
    text_to_audio = (
        sum(
            F.cross_entropy(_masked(scale * captions[rows] @ audio.T, row_mask), labels)
            for captions in (first, second)
        )
        / 2
    )
    return (audio_to_text + text_to_audio) / 2


def _weighted_direction(logits: torch.Tensor, labels: torch.Tensor, gamma: float, mask: torch.Tensor | None):
    """-log(e^{s_ii} / (e^{s_ii} + Σ_{j≠i} α_ij e^{s_ij})), α_ij = (N-1) softmax_{j≠i}(γ s_ij), detached."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    negatives = torch.ones_like(logits, dtype=torch.bool)
    negatives[rows, labels] = False
    if mask is not None:
        negatives &= ~mask
    weight_logits = (gamma * logits.detach()).masked_fill(~negatives, float("-inf"))
    count = negatives.sum(1, keepdim=True).clamp(min=1)
    alpha = torch.softmax(weight_logits, dim=1).nan_to_num(0.0) * count
    positive = logits[rows, labels]
    weighted = torch.where(
        negatives, logits + torch.log(alpha.clamp(min=1e-30)), torch.full_like(logits, _NEG)
    )
    weighted[rows, labels] = positive
    return (torch.logsumexp(weighted, dim=1) - positive).mean()


def hard_negative_info_nce(
    audio: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    gamma: float = 0.15,
    offset: int = 0,
    local: int | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """FS-CLAP's weighted InfoNCE: negatives weighted by α_ij ∝ exp(γ s_ij/τ), normalised so their
    mean is 1 (γ = 0 is plain InfoNCE); both directions, averaged."""
    local = audio.shape[0] if local is None else local
    rows = _local(offset, local)
    labels = torch.arange(offset, offset + local, device=audio.device)
    row_mask = None if mask is None else mask[rows]
    return (
        _weighted_direction(scale * audio[rows] @ text.T, labels, gamma, row_mask)
        + _weighted_direction(scale * text[rows] @ audio.T, labels, gamma, row_mask)
    ) / 2


def perturbation_loss(
    audio: torch.Tensor,
    text: torch.Tensor,
    perturbed: torch.Tensor,
    has_perturbed: torch.Tensor,
    scale: torch.Tensor,
    offset: int = 0,
    local: int | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Audio→text InfoNCE whose candidates add every row's attribute-flipped caption as a negative
    (rows without one contribute no extra column)."""
    local = audio.shape[0] if local is None else local
    rows = _local(offset, local)
    labels = torch.arange(offset, offset + local, device=audio.device)
    logits = _masked(scale * audio[rows] @ text.T, None if mask is None else mask[rows])
    extra = (scale * audio[rows] @ perturbed.T).masked_fill(~has_perturbed[None, :], _NEG)
    return F.cross_entropy(torch.cat([logits, extra], dim=1), labels)


def tag_classification_loss(
    logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Mean over tags of the cross-entropy on rows whose tag is known (target -1: unknown)."""
    losses = [
        F.cross_entropy(logits[name], target, ignore_index=-1)
        for name, target in targets.items()
        if (target >= 0).any()
    ]
    return torch.stack(losses).mean() if losses else next(iter(logits.values())).sum() * 0.0


def task_probability(step: int, p0: float, p_min: float, decay_steps: int) -> float:
    """CLSP's dynamic task scheduler: p_t = max(p_min, p0 - t/T (p0 - p_min))."""
    return max(p_min, p0 - step / decay_steps * (p0 - p_min))


def draw_task(step: int, seed: int, p0: float, p_min: float, decay_steps: int) -> int:
    """Task 1 (global + fine) with probability p_t, else task 2 (two fine): the same on every
    worker, because the draw depends only on the seed and the step."""
    draw = random.Random(f"{seed}:task:{step}").random()
    return 1 if draw < task_probability(step, p0, p_min, decay_steps) else 2
