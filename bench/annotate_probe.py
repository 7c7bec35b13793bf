"""Run one `annotate` on Ray and report its wall time and peak memory, as one JSON line.

Used by bench/long_source.py to measure two versions of the code side by side: `--code DIR` is the
checkout whose `pipeline` package runs (this one, or an older commit's worktree). Peak memory is the
kernel's high-water mark of resident memory (VmHWM in /proc/PID/status): of this driver process, and of
every Ray worker process (`ray::...`) below it, sampled until the run ends.

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


def _peak_kb(pid: int | str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


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


class WorkerPeaks(threading.Thread):
    """Samples the high-water mark of every Ray worker until stopped (a worker's last sample is its peak)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            for pid, name in _ray_workers(os.getpid()).items():
                peak = _peak_kb(pid)
                if peak is not None:
                    self.peaks[pid] = (name, max(peak, self.peaks.get(pid, (name, 0))[1]))

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        self.join()
        by_name: dict[str, float] = {}
        for name, kb in self.peaks.values():
            by_name[name] = max(by_name.get(name, 0.0), kb / 1024)
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
    sampler = WorkerPeaks()
    sampler.start()
    started = time.perf_counter()
    report = annotate(config, args.out, inputs=args.input, executor="ray")
    wall_s = time.perf_counter() - started
    workers = sampler.stop()
    print(
        json.dumps(
            {
                "wall_s": wall_s,
                "audio_s": report.totals.get("audio_s", 0.0),
                "segments": report.totals.get("segments", 0),
                "shards": report.totals.get("shards", 0),
                "driver_peak_mb": _peak_kb("self") / 1024,
                "worker_peak_mb": workers,
            }
        )
    )


if __name__ == "__main__":
    main()
