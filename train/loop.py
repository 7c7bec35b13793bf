"""The training loop one worker runs: under Ray Train (`train.launch`) or, for tests, in-process.

Every worker builds the same model from the same seed (then takes rank 0's weights), reads its own
part of the shards, gathers embeddings across workers for the contrastive losses, averages
gradients, and steps the same optimizer: the parameters stay identical on every worker. Rank 0
writes TensorBoard scalars, checkpoints and the export.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from train import distributed as dist
from train.average import WeightAverage
from train.batches import Batch, BatchPlanner, SamplerState, collate, epoch_plans
from train.checkpoint import WorkerState, latest_checkpoint, load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.export import export_model
from train.loader import load_in_workers
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
from train.model import DualEncoder
from train.perturb import Perturber
from train.shards import CaptionPolicy, SegmentRecord, SegmentStream, ShardSet

Plan = list[SegmentRecord]


@dataclass(frozen=True)
class LoopResult:
    steps: int
    stopped_early: bool
    export: Path | None
    model: DualEncoder


def tag_classes_of(shards: ShardSet, config: TrainConfig) -> dict[str, list[str]]:
    values = shards.tag_values()
    wanted = config.loss.classify_tags if config.loss.classify_tags is not None else list(values)
    unknown = [name for name in wanted if name not in values]
    if unknown:
        raise ValueError(f"loss.classify_tags names {unknown}, the shards' tags are {list(values)}")
    return {name: values[name] for name in wanted if len(values[name]) >= 2}


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_optimizer(model: DualEncoder, config: TrainConfig) -> torch.optim.AdamW:
    encoders = [*model.audio_encoder.parameters(), *model.text_encoder.parameters()]
    encoder_ids = {id(p) for p in encoders}
    groups = [
        {
            "params": [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids],
            "lr": config.optim.lr,
        },
        {"params": [p for p in encoders if p.requires_grad], "lr": config.optim.encoder_lr},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.optim.weight_decay)


def pooled_batch_audio(model: DualEncoder, batch: Batch) -> torch.Tensor:
    """A batch's pooled audio features; a frozen encoder reads, decodes and encodes only the crops it
    has not cached (`TrainingSession.decodes_in_loader`)."""
    if model.caches_audio:
        return model.cached_audio(batch.audio_keys, batch.waveforms)
    return model.pooled_audio(*batch.waveforms())


class StepLosses:
    """The stage's weighted losses on one batch; returns the total and each term for logging."""

    def __init__(self, model: DualEncoder, config: TrainConfig) -> None:
        self.model, self.config = model, config

    def __call__(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        stage, loss_config = self.config.stage_at(step), self.config.loss
        model = self.model
        audio_local = model.project_audio(pooled_batch_audio(model, batch))
        text_local = model.embed_text(batch.texts)
        audio, offset = dist.gather_rows(audio_local)
        text, _ = dist.gather_rows(text_local)
        local = audio_local.shape[0]
        mask = None
        if self.config.data.mask_same != "none":
            groups = [g for part in dist.gather_objects(batch.groups) for g in part]
            index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
            mask = same_group_mask([index[g] for g in groups]).to(audio.device)
        scale = model.logit_scale.exp()
        terms: dict[str, torch.Tensor] = {}
        if stage.infonce:
            terms["infonce"] = info_nce(audio, text, scale, offset, local, mask)
        if stage.multi_positive:
            second, _ = dist.gather_rows(model.embed_text(batch.second_texts))
            terms["multi_positive"] = multi_positive_info_nce(
                audio, text, second, scale, loss_config.soft_target_lambda, offset, local, mask
            )
        if stage.hard_negative:
            terms["hard_negative"] = hard_negative_info_nce(
                audio, text, scale, loss_config.hard_negative_gamma, offset, local, mask
            )
        if stage.perturbation:
            present = torch.tensor([t is not None for t in batch.perturbed_texts])
            texts = [t if t is not None else batch.texts[i] for i, t in enumerate(batch.perturbed_texts)]
            perturbed, _ = dist.gather_rows(model.embed_text(texts))
            has, _ = dist.gather_rows(present.to(audio.device))
            terms["perturbation"] = perturbation_loss(audio, text, perturbed, has, scale, offset, local, mask)
        if stage.tag_classification and model.tag_classifiers:
            logits = {name: head(audio_local) for name, head in model.tag_classifiers.items()}
            targets = {
                name: torch.tensor(
                    [
                        model.tag_classes[name].index(v) if v in model.tag_classes[name] else -1
                        for v in batch.tags[name]
                    ],
                    device=audio.device,
                )
                for name in logits
            }
            terms["tag_classification"] = tag_classification_loss(logits, targets)
        weights = {name: getattr(stage, name) for name in terms}
        total = sum(weights[name] * value for name, value in terms.items())
        assert isinstance(total, torch.Tensor), f"stage '{stage.name}' switches every loss off"
        return total, {name: float(value.detach()) for name, value in terms.items()}


_STANDARDISE_ROWS = 256


@torch.no_grad()
def fit_standardisation(
    model: DualEncoder, batches: Iterator[Batch], texts_of: Callable[[Batch], list[str]]
) -> None:
    """Set both heads' per-dimension mean and std from the pooled features of the first rows every
    worker trains on (summed over workers, so every worker sets the same statistics)."""
    model.eval()
    audio, text, rows = [], [], 0
    for batch in batches:
        audio.append(pooled_batch_audio(model, batch))
        text.append(model.pooled_text(texts_of(batch)))
        rows += len(batch.texts)
        if rows >= _STANDARDISE_ROWS:
            break
    for head, parts in ((model.audio_head, audio), (model.text_head, text)):
        features = torch.cat(parts).double()
        local = torch.stack(
            [features.sum(0), features.square().sum(0), torch.full_like(features[0], len(features))]
        )
        total = sum(part.to(features.device) for part in dist.gather_objects(local.cpu()))
        mean = total[0] / total[2]
        std = (total[1] / total[2] - mean.square()).clamp(min=0).sqrt()
        head.fit_standardisation(mean.float(), std.float())
    model.train()


def _device(config: TrainConfig) -> torch.device:
    if config.use_gpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _to(batch: Batch, device: torch.device) -> Batch:
    if batch.audio is not None:
        batch.audio = batch.audio.to(device, non_blocking=True)
    batch.audio_lens = batch.audio_lens.to(device)
    return batch


class TrainingSession:
    """One worker's model, optimizer, scheduler and data pipeline, built the same way on every worker."""

    def __init__(self, config: TrainConfig, device: torch.device | None = None) -> None:
        self.config, self.data = config, config.data
        self.rank, self.world = dist.rank(), dist.world_size()
        self.device = device or _device(config)
        self.shards = ShardSet(config.data.runs, config.data.captions, config.data.verdicts)
        torch.manual_seed(config.seed)
        self.model = DualEncoder(config.model, tag_classes_of(self.shards, config)).to(self.device)
        dist.broadcast_parameters(self.model)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(config.optim.warmup_steps, config.total_steps)
        )
        data = self.data
        self.stream = SegmentStream(
            self.shards,
            CaptionPolicy(data.verified_only, tuple(data.granularities)),
            rank=self.rank,
            world=self.world,
            seed=data.seed,
            buffer_rows=data.shuffle_buffer,
            holdout_fraction=data.holdout_fraction,
            balance_tag=data.balance_tag,
            with_audio=self.decodes_in_loader,
            cache_rows=data.cache_rows,
        )
        self.planner = BatchPlanner(
            data.bucket_edges_s, data.batch_audio_s, data.max_batch_size, data.max_crop_s
        )
        self.perturber = Perturber(config.perturb.lexicon, self.shards.tag_names)
        self.losses = StepLosses(self.model, config)
        self.average: WeightAverage | None = None  # started once the model is fitted or resumed

    @property
    def decodes_in_loader(self) -> bool:
        """Whether batches come decoded. A frozen encoder that caches its outputs needs only the crops
        it has not encoded (from the second epoch on, none): its batches carry where each segment's
        audio is, and the step reads and decodes just those (`pooled_batch_audio`)."""
        return not self.model.caches_audio

    def start_average(self, state: dict[str, torch.Tensor] | None = None) -> None:
        """Begin the weight average from the current weights (or a checkpoint's average)."""
        if self.config.optim.average_decay is not None:
            self.average = WeightAverage(self.model, self.config.optim.average_decay)
            if state is not None:
                self.average.load_state_dict(state)

    def task_of(self, step: int) -> int:
        """0: one caption per row; with a multi-positive loss, CLSP's task drawn for this step."""
        loss = self.config.loss
        if not self.config.stage_at(step).multi_positive:
            return 0
        return draw_task(step, self.config.seed, loss.task_p0, loss.task_p_min, loss.task_decay_steps)

    def plans(self, first_step: int, sampler: SamplerState) -> Iterator[tuple[SamplerState, Plan, int]]:
        """(sampler state after the batch, its rows, its task) for step `first_step` on."""
        plans = epoch_plans(self.stream, self.planner, sampler)
        for step, (state, plan) in enumerate(plans, start=first_step):
            yield state, plan, self.task_of(step)

    def collate(self, planned: tuple[SamplerState, Plan, int]) -> tuple[SamplerState, Batch]:
        """A planned batch on the host (decoded or not: `decodes_in_loader`)."""
        state, plan, task = planned
        # Seeded by position, not by RNG state: a resumed run collates exactly the same batch.
        rng = random.Random(f"{self.data.seed}:batch:{self.rank}:{state.epoch}:{state.batches}")
        batch = collate(
            plan,
            task=task,
            rng=rng,
            max_crop_s=self.data.max_crop_s,
            perturber=self.perturber,
            tag_names=self.shards.tag_names,
            group_by=self.data.mask_same,
            decode=self.decodes_in_loader,
        )
        return state, batch

    def batches(self, first_step: int, sampler: SamplerState) -> Iterator[tuple[SamplerState, Batch]]:
        """(sampler state after the batch, batch) for step `first_step` on, made on this process."""
        for planned in self.plans(first_step, sampler):
            state, batch = self.collate(planned)
            yield state, _to(batch, self.device)

    def loader(self, first_step: int, sampler: SamplerState) -> Iterator[tuple[SamplerState, Batch]]:
        """The same batches as `batches`, made ahead in `data.loader_workers` processes."""
        made = load_in_workers(
            partial(self.plans, first_step, sampler),
            self.collate,
            workers=self.data.loader_workers,
            pin_memory=self.device.type == "cuda",
        )
        return ((state, _to(batch, self.device)) for state, batch in made)

    def standardise(self) -> None:
        first = (batch for _, batch in self.batches(0, SamplerState()))
        fit_standardisation(self.model, first, lambda batch: [*batch.texts, *batch.second_texts])

    def resume(self, state: dict[str, Any]) -> tuple[int, SamplerState]:
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_average(state.get("average"))
        worker = state["workers"][self.rank]
        worker.restore()
        return state["step"], worker.sampler

    def step(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """One optimisation step: losses, backward, gradients averaged over workers, clip, update."""
        device = self.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            total, terms = self.losses(batch, step)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        dist.average_gradients(self.parameters)
        torch.nn.utils.clip_grad_norm_(self.parameters, self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.model.clamp_logit_scale()
        if self.average is not None:
            self.average.update(self.model)
        return total.detach(), terms


def train_worker(loop_config: dict[str, Any]) -> LoopResult:
    """One worker's training. `loop_config`: {"config": TrainConfig as a dict, "out": folder,
    "export": folder or None, "stop_at": optional step to stop at (benchmarks)}."""
    config = TrainConfig.model_validate(loop_config["config"])
    out = Path(loop_config["out"])
    export_to = Path(loop_config["export"]) if loop_config.get("export") else None
    stop_at = min(loop_config.get("stop_at") or config.total_steps, config.total_steps)
    torch.set_num_threads(config.cpus_per_worker)
    session = TrainingSession(config)
    model, rank = session.model, session.rank
    config_dict = config.model_dump(mode="json")

    step, sampler = 0, SamplerState()
    resume = latest_checkpoint(out)
    if resume is not None:
        step, sampler = session.resume(load_checkpoint(resume, config_dict, session.world))
    else:
        session.standardise()
        session.start_average()
    batches = session.loader(step, sampler)
    writer = _tensorboard(out) if rank == 0 else None
    progress = _progress(step, stop_at) if rank == 0 else None
    model.train()
    deadline = time.monotonic() + config.max_minutes * 60 if config.max_minutes else None
    stopped_early = False
    tick = time.perf_counter()
    while step < stop_at:
        sampler, batch = next(batches)
        stage = config.stage_at(step)
        total, terms = session.step(batch, step)
        step += 1
        rows = sum(dist.gather_objects(len(batch.texts)))
        if writer is not None and step % config.log_every == 0:
            scalars = {
                **{f"loss/{k}": v for k, v in terms.items()},
                "loss/total": float(total),
                "logit_scale": float(model.logit_scale.detach().exp()),
                "lr": session.scheduler.get_last_lr()[0],
                # all workers' rows over the wall time since the last iteration ended (data wait included)
                "samples_per_s": rows / max(time.perf_counter() - tick, 1e-9),
            }
            if stage.multi_positive:
                loss = config.loss
                scalars["task_probability"] = task_probability(
                    step - 1, loss.task_p0, loss.task_p_min, loss.task_decay_steps
                )
            for key, value in scalars.items():
                writer.add_scalar(key, value, step)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{float(total):.3f}", stage=stage.name, refresh=False)
        out_of_time = deadline is not None and time.monotonic() > deadline
        out_of_time = any(dist.gather_objects(out_of_time))  # every worker stops at the same step
        if step % config.checkpoint_every == 0 or step == stop_at or out_of_time:
            _checkpoint(out, step, session, sampler, config_dict)
        if out_of_time:
            stopped_early = step < stop_at
            break
        tick = time.perf_counter()
    del batches  # ends the loader's processes
    if progress is not None:
        progress.close()
    if writer is not None:
        writer.close()
    exported = None
    if rank == 0 and export_to is not None:
        split = {
            "runs": [str(Path(r).resolve()) for r in config.data.runs],
            "holdout_fraction": config.data.holdout_fraction,
            "captions": config.data.captions,
            "verdicts": config.data.verdicts,
            "layers": {str(run): selection for run, selection in session.shards.selections.items()},
        }
        if session.average is not None:
            session.average.copy_to(model)
        exported = export_model(
            model, export_to, {"data": split, "steps": step, "average_decay": config.optim.average_decay}
        )
    return LoopResult(step, stopped_early, exported, model)


def _checkpoint(out: Path, step: int, session: TrainingSession, sampler: SamplerState, config: dict) -> None:
    workers = dist.gather_objects(WorkerState.capture(sampler))
    if session.rank == 0:
        average = session.average.state_dict() if session.average is not None else None
        save_checkpoint(
            out, step, session.model, session.optimizer, session.scheduler, workers, config, average
        )


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))


def _progress(start: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="training", unit="step", file=sys.stderr, mininterval=2.0)
