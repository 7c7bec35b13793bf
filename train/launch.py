"""Run the training loop on Ray Train: a TorchTrainer with `config.workers` workers (gloo on CPU,
nccl on GPU), on the cluster annotation uses (a local one, or `ray_address`).

The output folder must be reachable by every worker at the same path (a local cluster, or shared
storage): rank 0 writes checkpoints and the export there, and all workers resume from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from train.config import TrainConfig
from train.loop import train_worker


def launch(
    config: TrainConfig,
    out: str | Path,
    export: str | Path | None = None,
    ray_address: str | None = None,
    stop_at: int | None = None,
) -> None:
    """Train (resuming from the newest checkpoint in `out`, if any) and export on rank 0."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(out).resolve()
    # Ray Train workers run in folders of their own: every path they get is absolute.
    runs = [str(Path(run).resolve()) for run in config.data.runs]
    config = config.model_copy(update={"data": config.data.model_copy(update={"runs": runs})})
    out.mkdir(parents=True, exist_ok=True)
    started = not ray.is_initialized()
    if started:
        # Without Ray's dashboard (not installed) Ray Train's placement-group cleaner cannot query actor
        # state and warns every few seconds; errors still come through.
        ray.init(
            address=ray_address,
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
            logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"),
        )
    try:
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={
                "config": config.model_dump(mode="json"),
                "out": str(out),
                "export": str(Path(export).resolve()) if export else None,
                "stop_at": stop_at,
            },
            torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=config.workers,
                use_gpu=config.use_gpu,
                resources_per_worker={"CPU": config.cpus_per_worker},
            ),
            run_config=RunConfig(name="stylecaps-train", storage_path=str(out / "ray")),
        )
        trainer.fit()
    finally:
        if started:
            ray.shutdown()
