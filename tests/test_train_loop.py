"""The training loop: it learns, resumes mid-run to exactly the parameters of an uninterrupted run,
and on Ray Train with 2 gloo workers keeps the parameters identical on every rank."""

from __future__ import annotations

import itertools
import shutil
import tempfile

import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import ConfigError
from tests.train_data import tiny_config
from train.batches import SamplerState
from train.checkpoint import CheckpointMismatch, latest_checkpoint
from train.config import parse_train_config
from train.export import WEIGHTS
from train.loop import TrainingSession, train_worker


def run_in_process(config: dict, out, export=None):
    return train_worker({"config": config, "out": str(out), "export": str(export) if export else None})


def test_unknown_keys_and_bad_values_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^x: unknown key 'model.audio.layerz'$"):
        parse_train_config({"model": {"audio": {"layerz": 2}}}, origin="x")
    with pytest.raises(ConfigError, match=r"^x: invalid value for 'stages.0.steps'"):
        parse_train_config({"stages": [{"name": "a", "steps": 0}]}, origin="x")
    with pytest.raises(ConfigError, match="needs 'path'"):
        parse_train_config({"model": {"text": {"kind": "hf"}}}, origin="x")


def test_stages_follow_each_other_by_step():
    config = parse_train_config(tiny_config([], "unused"))
    assert [config.stage_at(s).name for s in range(7)] == ["one"] * 3 + ["two"] * 4
    assert config.total_steps == 6


@pytest.mark.parametrize("trainable", [True, False], ids=["decoded-by-the-loader", "decoded-by-the-step"])
def test_loader_processes_make_the_batches_the_training_process_would(synthetic_run, tiny_text, trainable):
    config = tiny_config([synthetic_run], tiny_text)
    config["model"]["audio"]["trainable"] = trainable
    state = SamplerState(epoch=1, batches=1)  # mid-epoch, as after a resume
    wanted = list(itertools.islice(TrainingSession(parse_train_config(config)).batches(5, state), 9))
    for workers in (0, 2):
        config["data"]["loader_workers"] = workers
        session = TrainingSession(parse_train_config(config))
        made = list(itertools.islice(session.loader(5, state), 9))
        assert [s for s, _ in made] == [s for s, _ in wanted]
        for (_, got), (_, want) in zip(made, wanted, strict=True):
            assert (got.texts, got.perturbed_texts) == (want.texts, want.perturbed_texts)
            assert got.audio_keys == want.audio_keys
            assert torch.equal(got.audio_lens, want.audio_lens)
            assert (got.audio is None) == (not trainable)
            assert torch.equal(*(b.waveforms()[0] for b in (got, want)))


@pytest.mark.parametrize("average_decay", [None, 0.5], ids=["last-weights", "averaged-weights"])
def test_a_resumed_run_reaches_the_parameters_of_an_uninterrupted_one(
    synthetic_run, tiny_text, tmp_path, average_decay
):
    config = tiny_config([synthetic_run], tiny_text, data={"mask_same": "source", "balance_tag": "pitch"})
    config["optim"] = {"average_decay": average_decay}
    whole = run_in_process(config, tmp_path / "whole", tmp_path / "whole-model")
    assert whole.steps == 6 and not whole.stopped_early
    assert latest_checkpoint(tmp_path / "whole").name == "step-00000006"

    # The interrupted run: only the step-3 checkpoint survives (a run killed between 3 and 6).
    resumed_out = tmp_path / "resumed"
    shutil.copytree(
        tmp_path / "whole" / "checkpoints" / "step-00000003", resumed_out / "checkpoints" / "step-00000003"
    )
    resumed = run_in_process(config, resumed_out, tmp_path / "resumed-model")
    assert resumed.steps == 6

    want, got = (
        load_file(str(tmp_path / "whole-model" / WEIGHTS)),
        load_file(str(tmp_path / "resumed-model" / WEIGHTS)),
    )
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    # And training did move them: a 3-step model differs.
    shutil.rmtree(resumed_out / "checkpoints" / "step-00000006")
    early = torch.load(resumed_out / "checkpoints" / "step-00000003" / "state.pt", weights_only=False)[
        "model"
    ]
    assert not torch.equal(early["audio_head.mlp.6.weight"], want["audio_head.mlp.6.weight"])


def test_resuming_with_another_config_is_refused(synthetic_run, tiny_text, tmp_path):
    config = tiny_config([synthetic_run], tiny_text, stages=[{"name": "one", "steps": 2}], checkpoint_every=1)
    run_in_process(config, tmp_path / "out")
    changed = {**config, "optim": {"lr": 0.5}}
    with pytest.raises(CheckpointMismatch, match="another training config"):
        run_in_process(changed, tmp_path / "out")


def test_training_teaches_the_model_which_caption_fits_which_audio(synthetic_run, tiny_text, tmp_path):
    """The tones' pitch is the one attribute the audio carries: after training, each clip's nearest
    global caption names its pitch (untrained: near chance, a third)."""
    import random

    from train.batches import collate
    from train.export import load_model
    from train.shards import CaptionPolicy, ShardSet, iter_split

    shards = ShardSet([synthetic_run])
    records = list(iter_split(shards, CaptionPolicy(), "all", 0.0))
    batch = collate(
        records,
        task=1,
        rng=random.Random(0),
        max_crop_s=10.0,
        perturber=None,
        tag_names=shards.tag_names,
        group_by="none",
    )

    def pitch_accuracy(model) -> float:
        with torch.no_grad():
            audio, text, _ = model(batch.audio, batch.audio_lens, batch.texts)
        nearest = (audio @ text.T).argmax(dim=1).tolist()
        pitches = batch.tags["pitch"]
        return sum(pitches[j] == pitches[i] for i, j in enumerate(nearest)) / len(nearest)

    # The CPU default's encoders (real GE2E and MiniLM weights, frozen): only the heads learn.
    config = tiny_config(
        [synthetic_run],
        tiny_text,
        stages=[{"name": "one", "steps": 200, "infonce": 1.0}],
        optim={"lr": 0.003},
        model={"audio": {"kind": "ge2e", "trainable": False}, "text": {"kind": "minilm", "trainable": False}},
    )
    run_in_process(
        {**config, "stages": [{"name": "one", "steps": 1, "infonce": 1.0}]}, tmp_path / "a", tmp_path / "m0"
    )
    run_in_process(config, tmp_path / "b", tmp_path / "m1")
    before, after = pitch_accuracy(load_model(tmp_path / "m0")), pitch_accuracy(load_model(tmp_path / "m1"))
    # Pitch words are relative to the gender's register (a man's "high" is below a woman's "low"), so
    # the heads must learn gender × pitch from the audio: chance is 1/3, 200 steps reach about 0.83.
    assert after >= 0.75 and after > before + 0.3, (before, after)


def _ray_worker(loop_config):
    """Train, then compare this rank's parameters with every other rank's."""
    import ray.train
    import torch.distributed as dist

    from train.loop import train_worker

    result = train_worker(loop_config)
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    spread = max(float((g - gathered[0]).abs().max()) for g in gathered)
    metrics = {"world": dist.get_world_size(), "max_difference": spread, "steps": result.steps}
    # Ray Train keeps the metrics that come with a checkpoint: rank 0 sends an empty one.
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = ray.train.Checkpoint.from_directory(folder) if dist.get_rank() == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)


@pytest.mark.slow
def test_two_ray_train_workers_keep_identical_parameters(synthetic_run, tiny_text, tmp_path, ray_cluster):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    config = tiny_config([synthetic_run], tiny_text, workers=2, data={"mask_same": "speaker"})
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"config": config, "out": str(tmp_path / "out"), "export": str(tmp_path / "model")},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(tmp_path / "ray")),
    )
    metrics = trainer.fit().metrics
    assert metrics["world"] == 2 and metrics["steps"] == 6
    assert metrics["max_difference"] == 0.0
    assert (tmp_path / "model" / WEIGHTS).is_file()
    assert (
        len(torch.load(latest_checkpoint(tmp_path / "out") / "state.pt", weights_only=False)["workers"]) == 2
    )
