"""Run one `annotate` on Ray and report its wall time and peak memory, as one JSON line.

Used by bench/long_source.py to measure two versions of the code side by side: `--code DIR` is the
checkout whose `pipeline` package runs (this one, or an older commit's worktree). Memory is sampled
every 0.2 s from /proc/PID/status, for this driver process and every Ray worker process (`ray::...`)
below it: the peak of private resident memory (RssAnon: what the process itself holds), the peak of
shared pages mapped in (RssShmem: Ray's object store, which belongs to the store and is bounded by its
own limit), and the kernel's high-water mark of all resident memory (VmHWM).

    python bench/annotate_probe.py --code . --config configs/demo.yaml --input a.flac --out /tmp/run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(parent, []).append(int(entry))
    return tree


_IDLE_WORKER = "ray::IDLE"
_FIELDS = {"VmHWM": "hwm_mb", "RssAnon": "private_mb", "RssShmem": "shared_mb"}


def _memory_mb(pid: int | str) -> dict[str, float]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        key = line.split(":", 1)[0]
        if key in _FIELDS:
            found[_FIELDS[key]] = int(line.split()[1]) / 1024
    return found


def _ray_workers(root: int) -> dict[int, str]:
    """Descendant processes whose command line names a Ray worker (`ray::<actor or task>`)."""
    tree, found, pending = _children(), {}, [root]
    while pending:
        pid = pending.pop()
        for child in tree.get(pid, []):
            pending.append(child)
            try:
                name = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if name.startswith("ray::"):
                found[child] = name
    return found


class MemoryPeaks(threading.Thread):
    """Samples the driver and every Ray worker until stopped; keeps each figure's peak per process."""

    def __init__(self, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peaks: dict[int, tuple[str, dict[str, float]]] = {}
        self._stop_event = threading.Event()

    def _sample(self) -> None:
        for pid, name in [(os.getpid(), "driver"), *_ray_workers(os.getpid()).items()]:
            known, peak = self.peaks.setdefault(pid, (name, {}))
            if known == _IDLE_WORKER:  # a pooled worker is idle until it becomes an actor: name it by that
                self.peaks[pid] = (name, peak)
            for key, value in _memory_mb(pid).items():
                peak[key] = max(peak.get(key, 0.0), value)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self._sample()

    def stop(self) -> dict[str, dict[str, float]]:
        """Peaks by process name (the highest of processes with the same name)."""
        self._stop_event.set()
        self.join()
        self._sample()
        by_name: dict[str, dict[str, float]] = {}
        for name, peak in self.peaks.values():
            merged = by_name.setdefault(name, {})
            for key, value in peak.items():
                merged[key] = max(merged.get(key, 0.0), value)
        return by_name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", type=Path, required=True, help="Checkout whose pipeline package runs.")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--input", action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows-per-shard", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline.config import load_config
    from pipeline.runner import annotate

    config = load_config(args.config)
    config = config.model_copy(
        update={"write": config.write.model_copy(update={"rows_per_shard": args.rows_per_shard})}
    )
    sampler = MemoryPeaks()
    sampler.start()
    started = time.perf_counter()
    report = annotate(config, args.out, inputs=args.input, executor="ray")
    wall_s = time.perf_counter() - started
    memory = sampler.stop()
    print(
        json.dumps(
            {
                "wall_s": wall_s,
                "audio_s": report.totals.get("audio_s", 0.0),
                "segments": report.totals.get("segments", 0),
                "shards": report.totals.get("shards", 0),
                "driver": memory.pop("driver"),
                "workers": memory,
            }
        )
    )


if __name__ == "__main__":
    main()
