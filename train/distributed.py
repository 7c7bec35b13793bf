"""What the trainer needs from torch.distributed, and a single-process stand-in when it is not running.

Workers' batches differ in size (batches have an audio-seconds budget), so gathering pads to the
largest batch and trims again; the local rows are put back as the tensors that carry gradients.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def gather_rows(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All workers' rows in rank order (local rows keep their gradients) and the local rows' offset."""
    if not active():
        return local, 0
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.int64))
    counts = [int(s) for s in sizes]
    padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local.detach()
    parts = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    parts = [part[:count] for part, count in zip(parts, counts, strict=True)]
    parts[rank()] = local
    return torch.cat(parts), sum(counts[: rank()])


def gather_objects(value: Any) -> list[Any]:
    if not active():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Mean of every worker's gradients, in one flat all-reduce (a parameter without a gradient
    this step counts as zeros, so every worker reduces the same tensor)."""
    if not active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for parameter in parameters:
        size = parameter.numel()
        parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
        offset += size


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Every worker starts from rank 0's weights."""
    if not active():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)
