"""`stylecaps train` and `stylecaps evaluate ...`: figures printed, files written, user errors in one
line with exit code 2; the batch loader under the loop; the metrics against hand-computed values."""

from __future__ import annotations

import csv
import gc
import json
import multiprocessing
import os
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import RunConfig
from pipeline.layers import annotate_layers
from tests.conftest import EXAMPLES
from tests.test_train_model import tiny_model
from tests.train_data import tiny_config
from train.export import export_model
from train.loader import load_in_workers
from train.metrics import classification_scores, ranks_of_truth, retrieval_chance, retrieval_scores

ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
_LABELS = list(csv.DictReader((EXAMPLES / "labels.csv").open()))
CLIPS = [r for r in _LABELS if r["gender"] == "male"][:6]
CLIPS += [r for r in _LABELS if r["gender"] == "female"][:6]


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    return result.exit_code, re.sub(r"\s+", " ", result.stdout), result.stderr


@pytest.fixture(scope="module")
def model_folder(tiny_text, synthetic_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "model"
    model = tiny_model(tiny_text, tag_classes={"pitch": ["high", "low", "medium"]})
    return export_model(model, folder, {"data": {"runs": [str(synthetic_run)], "holdout_fraction": 0.3}})


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Example clips with a caption, a rating and a numeric field."""
    path = tmp_path_factory.mktemp("manifest") / "clips.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "gender", "pitch", "caption", "rating"])
        writer.writeheader()
        for i, row in enumerate(CLIPS):
            writer.writerow(
                {
                    "path": str(EXAMPLES / row["path"]),
                    "gender": row["gender"],
                    "pitch": row["pitch"] or "50",
                    "caption": ["A deep voice.", "A high voice."][i % 2],
                    "rating": i % 5,
                }
            )
    return path


def test_the_metrics_match_hand_computed_values():
    similarity = np.array([[0.9, 0.1, 0.3], [0.8, 0.2, 0.1], [0.1, 0.2, 0.3]])
    ranks = ranks_of_truth(similarity, np.array([0, 1, 2]))
    assert ranks.tolist() == [0, 1, 0]
    scores = retrieval_scores(ranks)
    assert scores["R@1"] == pytest.approx(2 / 3) and scores["R@5"] == 1.0
    assert scores["mAP@10"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert scores["median_rank"] == 1.0
    chance = retrieval_chance(20)
    assert chance["R@1"] == 0.05 and chance["R@10"] == 0.5 and chance["median_rank"] == 10.5
    assert chance["mAP@10"] == pytest.approx(sum(1 / r for r in range(1, 11)) / 20)
    result = classification_scores(["a", "a", "a", "b"], ["a", "a", "b", "b"], ["a", "b"])
    assert result["WA"] == 0.75 and result["UA"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["confusion"].tolist() == [[2, 1], [0, 1]]


def test_the_loader_keeps_order_with_several_processes_and_hands_over_errors():
    def squares(numbers):
        return lambda: iter(numbers)

    made = load_in_workers(squares(range(50)), lambda n: (n * n, os.getpid()), workers=2)
    results = list(made)
    assert [value for value, _ in results] == [n * n for n in range(50)]
    assert len({pid for _, pid in results}) == 2 and os.getpid() not in {pid for _, pid in results}

    def failing():
        yield 1
        raise ValueError("broken shard")

    items = load_in_workers(failing, lambda n: n, workers=1)
    assert next(items) == 1
    with pytest.raises(ValueError, match="broken shard"):
        next(items)
    del items
    gc.collect()  # the raised error's traceback held the loader
    assert multiprocessing.active_children() == []
    endless = load_in_workers(squares(range(10**9)), lambda n: n, workers=2)
    next(endless)
    assert len(multiprocessing.active_children()) == 2
    del endless  # the processes end although the plans never do
    gc.collect()
    assert multiprocessing.active_children() == []


def test_retrieval_on_the_models_heldout_split_prints_figures_and_chance(model_folder, tmp_path):
    code, out, err = invoke("evaluate", "retrieval", model_folder, "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "retrieval, fine captions" in out and "retrieval, global captions" in out
    set_id, version = (info.id for info in annotate_layers(RunConfig()))
    assert f"captions {set_id} with verdicts {version} (its only version)" in out  # which layers it read
    figures = json.loads((tmp_path / "r.json").read_text())
    n = figures["fine"]["clips"]["n"]
    assert 2 <= n < 24  # the held-out sources only
    assert figures["fine"]["chance"]["R@1"] == pytest.approx(1 / n)
    assert set(figures["global"]["text_to_audio"]) == {"R@1", "R@5", "R@10", "mAP@10", "median_rank"}


def test_retrieval_from_a_manifest_of_audio_and_captions(model_folder, manifest, tmp_path):
    code, out, err = invoke(
        "evaluate", "retrieval", model_folder, "-m", manifest, "--json", tmp_path / "r.json"
    )
    assert code == 0, err
    assert f"retrieval, given captions, {len(CLIPS)} clips" in out
    assert json.loads((tmp_path / "r.json").read_text())["given"]["chance"]["R@1"] == pytest.approx(
        1 / len(CLIPS)
    )


def test_zero_shot_prints_wa_ua_and_writes_the_confusion_png(model_folder, manifest, tmp_path):
    code, out, err = invoke(
        "evaluate",
        "zero-shot",
        model_folder,
        "--manifest",
        manifest,
        "--label",
        "gender",
        "--template",
        "A {} speaker.",
        "--png",
        tmp_path / "c.png",
        "--json",
        tmp_path / "z.json",
    )
    assert code == 0, err
    assert re.search(r"zero-shot gender: WA \d\.\d{3} UA \d\.\d{3}", out)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures = json.loads((tmp_path / "z.json").read_text())
    assert figures["classes"] == ["female", "male"] and np.sum(figures["confusion"]) == len(CLIPS)


def test_rank_similarity_and_rerank_on_a_manifest(model_folder, manifest, tmp_path):
    code, out, err = invoke(
        "evaluate", "rank", model_folder, "-m", manifest, "--value", "pitch", "--within", "gender"
    )
    assert code == 0, err
    assert "female" in out and "male" in out and "spearman" in out
    code, out, err = invoke("evaluate", "similarity", model_folder, "-m", manifest)
    assert code == 0 and "pearson" in out, err
    code, out, err = invoke(
        "evaluate", "rerank", model_folder, "-m", manifest, "--out", tmp_path / "best.csv"
    )
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "best.csv").open()))
    assert len(rows) == len(CLIPS)
    for caption in ("A deep voice.", "A high voice."):
        group = [r for r in rows if r["caption"] == caption]
        assert sorted(int(r["rank"]) for r in group) == list(range(1, len(group) + 1))
        by_rank = sorted(group, key=lambda r: int(r["rank"]))
        assert [float(r["score"]) for r in by_rank] == sorted(
            (float(r["score"]) for r in group), reverse=True
        )


def test_unseen_keeps_only_clips_from_sources_the_model_never_trained_on(model_folder, manifest, tmp_path):
    # The synthetic run's sources are not these files: every clip is unseen.
    code, _, err = invoke(
        "evaluate",
        "zero-shot",
        model_folder,
        "-m",
        manifest,
        "--label",
        "gender",
        "--unseen",
        "--json",
        tmp_path / "z.json",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "z.json").read_text())["n"] == len(CLIPS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "zero-shot", "{model}", "-m", "{manifest}", "--label", "age"], "no field 'age'"),
        (["evaluate", "rank", "{tmp}", "--value", "x"], "holds no stylecaps_model.json"),
        (["evaluate", "retrieval", "{model}", "--split", "dev"], "--split must be heldout, train or all"),
        (["evaluate", "retrieval", "{model}", "--run", "{tmp}"], "holds no manifest.json"),
        (["train", "-c", "{config}"], "unknown key 'data.shufle_buffer'"),
        (["train", "-c", "{good}", "--run", "{tmp}"], "holds no manifest.json"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message, model_folder, manifest, tmp_path):
    (tmp_path / "bad.yaml").write_text("data:\n  shufle_buffer: 3\n")
    (tmp_path / "good.yaml").write_text("data:\n  shuffle_buffer: 3\n")
    values = {
        "model": model_folder,
        "manifest": manifest,
        "tmp": tmp_path,
        "config": tmp_path / "bad.yaml",
        "good": tmp_path / "good.yaml",
    }
    code, _, err = invoke(*[a.format(**values) for a in args])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


@pytest.mark.slow
def test_train_command_trains_on_ray_and_exports(synthetic_run, tiny_text, tmp_path):
    import yaml

    config = tiny_config([synthetic_run], tiny_text, stages=[{"name": "one", "steps": 4}])
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    code, out, err = invoke("train", "-c", tmp_path / "train.yaml", "--out", tmp_path / "out")
    assert code == 0, err
    set_id, version = (info.id for info in annotate_layers(RunConfig()))
    assert f"{synthetic_run}: captions {set_id} with verdicts {version} (its only version)" in out
    assert f"model exported to {tmp_path / 'out' / 'model'}" in out
    assert (tmp_path / "out" / "checkpoints" / "step-00000004").is_dir()
    assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))
    from train.export import load_model

    model = load_model(tmp_path / "out" / "model")
    audio, text, _ = model(torch.zeros(1, 16000), torch.tensor([16000]), ["A deep voice."])
    assert audio.shape == text.shape == (1, 16)
