"""An exponential moving average of the trainable parameters (Polyak averaging), exported in place
of the last step's weights.

The demo's small heads, trained for a few hundred steps, end wherever the last batches pushed them,
and what they do on real speech varies with the seed; the average of the last steps' weights is a
smoother point of the same run. Every worker keeps the same average (the parameters are identical
across workers after each step), and a checkpoint holds it so a resumed run continues it exactly.
"""

from __future__ import annotations

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """shadow ← decay · shadow + (1 − decay) · parameters."""
        for name, parameter in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(parameter.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Put the averaged weights into `model` (before exporting it)."""
        for name, parameter in model.named_parameters():
            if name in self.shadow:
                parameter.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in state.items():
            self.shadow[name].copy_(tensor)
