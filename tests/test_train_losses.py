"""Each loss against values computed by hand (plain math on the same numbers)."""

from __future__ import annotations

import math

import pytest
import torch

from train.distributed import gather_rows
from train.losses import (
    draw_task,
    hard_negative_info_nce,
    info_nce,
    multi_positive_info_nce,
    perturbation_loss,
    same_group_mask,
    tag_classification_loss,
    task_probability,
)

# Two audio rows and two caption rows on the unit circle: cos(a0,t0)=1, cos(a0,t1)=0, cos(a1,t0)=0.6,
# cos(a1,t1)=0.8.
AUDIO = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
SCALE = torch.tensor(2.0)


def ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_info_nce_is_the_mean_of_both_directions():
    a_to_t = (ce([2.0, 0.0], 0) + ce([1.2, 1.6], 1)) / 2
    t_to_a = (ce([2.0, 1.2], 0) + ce([0.0, 1.6], 1)) / 2
    assert info_nce(AUDIO, TEXT, SCALE).item() == pytest.approx((a_to_t + t_to_a) / 2, rel=1e-6)


def test_info_nce_on_a_workers_rows_uses_the_others_as_negatives():
    local = info_nce(AUDIO, TEXT, SCALE, offset=1, local=1)
    assert local.item() == pytest.approx((ce([1.2, 1.6], 1) + ce([0.0, 1.6], 1)) / 2, rel=1e-6)


def test_masked_pairs_are_no_negatives():
    mask = same_group_mask([7, 7])
    assert mask.tolist() == [[False, True], [True, False]]
    # Each row is left alone with its positive: the loss is 0.
    assert info_nce(AUDIO, TEXT, SCALE, mask=mask).item() == pytest.approx(0.0, abs=1e-6)


def test_multi_positive_uses_soft_targets_over_both_caption_sets():
    second = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    lam = 0.7
    # audio→text over [t0, t1, s0, s1]
    rows = [[2.0, 0.0, 1.6, 1.2], [1.2, 1.6, 1.92, 2.0]]

    def soft(logits, first, other):
        log_z = math.log(sum(math.exp(v) for v in logits))
        return -(lam * (logits[first] - log_z) + (1 - lam) * (logits[other] - log_z))

    audio_to_text = (soft(rows[0], 0, 2) + soft(rows[1], 1, 3)) / 2
    first_to_audio = (ce([2.0, 1.2], 0) + ce([0.0, 1.6], 1)) / 2
    second_to_audio = (ce([1.6, 1.92], 0) + ce([1.2, 2.0], 1)) / 2
    want = (audio_to_text + (first_to_audio + second_to_audio) / 2) / 2
    got = multi_positive_info_nce(AUDIO, TEXT, second, SCALE, soft_lambda=lam)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_hard_negative_weighting_with_gamma_zero_is_info_nce():
    assert hard_negative_info_nce(AUDIO, TEXT, SCALE, gamma=0.0).item() == pytest.approx(
        info_nce(AUDIO, TEXT, SCALE).item(), rel=1e-6
    )


def test_hard_negatives_weigh_more_when_they_are_close():
    audio = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    gamma, scale = 0.5, 3.0
    s = (audio @ text.T * scale).tolist()

    def direction(logits):
        total = 0.0
        for i, row in enumerate(logits):
            negatives = [j for j in range(3) if j != i]
            weights = [math.exp(gamma * row[j]) for j in negatives]
            alphas = [len(negatives) * w / sum(weights) for w in weights]
            denominator = math.exp(row[i]) + sum(
                a * math.exp(row[j]) for a, j in zip(alphas, negatives, strict=True)
            )
            total += -row[i] + math.log(denominator)
        return total / len(logits)

    transposed = [list(col) for col in zip(*s, strict=True)]
    want = (direction(s) + direction(transposed)) / 2
    got = hard_negative_info_nce(audio, text, torch.tensor(scale), gamma=gamma)
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert got.item() > info_nce(audio, text, torch.tensor(scale)).item()


def test_perturbed_captions_join_the_candidates_as_negatives():
    perturbed = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    has = torch.tensor([True, False])  # row 1 had no attribute to flip
    want = (ce([2.0, 0.0, 0.0], 0) + ce([1.2, 1.6, 1.6], 1)) / 2
    got = perturbation_loss(AUDIO, TEXT, perturbed, has, SCALE)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_tag_classification_ignores_unknown_tags_and_averages_over_tags():
    logits = {"pitch": torch.tensor([[2.0, 0.0], [0.0, 1.0]]), "rate": torch.tensor([[0.5, 0.5], [1.0, 0.0]])}
    targets = {"pitch": torch.tensor([0, -1]), "rate": torch.tensor([1, 0])}
    want = (ce([2.0, 0.0], 0) + (ce([0.5, 0.5], 1) + ce([1.0, 0.0], 0)) / 2) / 2
    assert tag_classification_loss(logits, targets).item() == pytest.approx(want, rel=1e-6)


def test_task_probability_follows_the_schedule_and_the_draw_is_shared():
    assert task_probability(0, 0.95, 0.5, 10_000) == pytest.approx(0.95)
    assert task_probability(5_000, 0.95, 0.5, 10_000) == pytest.approx(0.725)
    assert task_probability(20_000, 0.95, 0.5, 10_000) == pytest.approx(0.5)
    draws = [draw_task(step, 0, 0.95, 0.5, 10_000) for step in range(2000)]
    assert draws == [draw_task(step, 0, 0.95, 0.5, 10_000) for step in range(2000)]  # every worker alike
    expected = [task_probability(step, 0.95, 0.5, 10_000) for step in range(2000)]
    spread = 4 * math.sqrt(sum(p * (1 - p) for p in expected))  # four standard deviations
    assert abs(draws.count(1) - sum(expected)) < spread
    late = [draw_task(step, 0, 0.95, 0.5, 10) for step in range(10, 2010)]
    assert abs(late.count(1) - 1000) < 4 * math.sqrt(500)


def test_gathering_alone_returns_the_local_rows_with_their_gradients():
    rows = torch.ones(3, 2, requires_grad=True)
    gathered, offset = gather_rows(rows)
    assert gathered is rows and offset == 0
