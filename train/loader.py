"""Batches made ahead of the step in DataLoader worker processes.

Reading a row group into records, drawing crops and captions and decoding FLAC are partly Python: on a
thread of the training process they hold the GIL the step needs too, and a cheap step (a frozen
encoder's cached features) waited for them (bench/train_step.py). In worker processes they overlap the
step. Worker w of n collates plans w, w + n, ...; the DataLoader takes its workers' outputs in turn, so
batches come in the plans' order whatever n (and with n = 0, on the training process, one by one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

P = TypeVar("P")
B = TypeVar("B")


class _EveryNth(IterableDataset, Generic[P, B]):
    def __init__(self, plans: Callable[[], Iterator[P]], make: Callable[[P], B]) -> None:
        self.plans, self.make = plans, make

    def __iter__(self) -> Iterator[B]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index, plan in enumerate(self.plans()):
            if index % workers == worker:
                yield self.make(plan)


def _as_is(item: B) -> B:
    return item


def load_in_workers(
    plans: Callable[[], Iterator[P]], make: Callable[[P], B], *, workers: int, pin_memory: bool = False
) -> Iterator[B]:
    """`make(plan)` for every plan of `plans()`, in order, made by `workers` forked processes (each
    iterates the plans itself, so `plans` must be a deterministic, cheap factory) two batches ahead.
    A worker's error is raised here; the processes end when the iterator is dropped."""
    loader = DataLoader(
        _EveryNth(plans, make),
        batch_size=None,
        collate_fn=_as_is,
        num_workers=workers,
        pin_memory=pin_memory,
        # fork: the workers inherit the session's shard set and layer joins instead of rebuilding them
        multiprocessing_context="fork" if workers else None,
        prefetch_factor=2 if workers else None,
        # its own generator: the DataLoader draws the workers' seed, and from the global RNG that draw
        # would shift dropout after a resume (the batches use seeded RNGs of their own)
        generator=torch.Generator().manual_seed(0),
    )
    return iter(loader)
