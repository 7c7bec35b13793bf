"""The exported weight average (train.average.WeightAverage) against hand-computed values."""

from __future__ import annotations

import torch

from train.average import WeightAverage


def model() -> torch.nn.Module:
    layers = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False))
    layers[0].weight.requires_grad_(False)  # a frozen encoder: never averaged
    with torch.no_grad():
        layers[0].weight.fill_(7.0)
        layers[1].weight.fill_(1.0)
    return layers


def test_the_average_follows_the_trainable_weights_at_its_decay():
    net = model()
    average = WeightAverage(net, decay=0.75)
    assert list(average.state_dict()) == ["1.weight"]
    with torch.no_grad():
        net[1].weight.fill_(5.0)
    average.update(net)  # 0.75 * 1 + 0.25 * 5
    assert average.state_dict()["1.weight"].item() == 2.0
    with torch.no_grad():
        net[1].weight.fill_(6.0)
    average.update(net)  # 0.75 * 2 + 0.25 * 6
    assert average.state_dict()["1.weight"].item() == 3.0
    average.copy_to(net)
    assert (net[0].weight.item(), net[1].weight.item()) == (7.0, 3.0)


def test_a_restored_average_continues_where_it_stopped():
    net = model()
    first = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net[1].weight.fill_(3.0)
    first.update(net)  # 2.0
    second = WeightAverage(model(), decay=0.5)
    second.load_state_dict({name: t.clone() for name, t in first.state_dict().items()})
    first.update(net)
    second.update(net)
    assert first.state_dict()["1.weight"].item() == second.state_dict()["1.weight"].item() == 2.5
