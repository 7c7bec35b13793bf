"""What the CPU default speech encoder's inputs carry on real recorded speech (RAVDESS): the GE2E
speaker embedding separates the actors' genders, and the window pitch feature follows the labelled
f0. These are the two properties the zero-shot gender and pitch-ranking figures rest on; the last
test checks that the demo recipe turns them into prompts that work on real speech."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import make_voice_corpus
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from annotate.audio import read_mono_16k
from pipeline.config import read_yaml
from tests.conftest import REPO
from train.audio_encoders import GE2EEncoder, frame_pitch
from train.batches import pad
from train.config import AudioEncoderConfig
from train.evaluate import Clip, embed_clips, prompt_ranking, zero_shot
from train.export import load_model
from train.loop import train_worker
from train.model import masked_mean

pytestmark = pytest.mark.calibration


@pytest.fixture(scope="module")
def real_speech(calibration_dir):
    """Every actor's neutral, calm and angry takes of one statement (120 clips)."""
    rows = [
        row
        for row in csv.DictReader((calibration_dir / "labels.csv").open())
        if row["emotion"] in ("neutral", "calm", "angry") and row["statement"].startswith("Kids")
    ]
    waves = [read_mono_16k(calibration_dir / "audio" / row["filename"]) for row in rows]
    return rows, waves


@pytest.mark.slow
def test_ge2e_embeddings_separate_unseen_speakers_by_gender(real_speech):
    rows, waves = real_speech
    encoder = GE2EEncoder(AudioEncoderConfig(kind="ge2e", window_features=())).eval()
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(waves), 16):
            audio, lens = pad(waves[start : start + 16])
            embeddings.append(masked_mean(*encoder(audio, lens)))
    vectors = torch.nn.functional.normalize(torch.cat(embeddings), dim=-1).numpy()
    genders = np.array([row["gender"] for row in rows])
    speakers = np.array([row["speaker"] for row in rows])
    correct = 0
    for speaker in np.unique(speakers):  # leave one speaker out: centroids from the other 23
        train, test = speakers != speaker, speakers == speaker
        centroids = {g: vectors[train & (genders == g)].mean(0) for g in ("female", "male")}
        predicted = [max(centroids, key=lambda g: v @ centroids[g]) for v in vectors[test]]
        correct += sum(p == g for p, g in zip(predicted, genders[test], strict=True))
    assert correct / len(rows) >= 0.9


def test_the_pitch_feature_follows_the_labelled_f0(real_speech):
    rows, waves = real_speech
    medians = []
    for wave in waves:
        log_f0, voiced = frame_pitch(torch.from_numpy(wave)[None], torch.tensor([wave.size]))
        medians.append(float(150 * 2 ** log_f0[0][voiced[0] > 0].median()))
    labelled = [float(row["f0_median_hz"]) for row in rows]
    assert spearmanr(medians, labelled).statistic > 0.9
    ratios = np.array(medians) / np.array(labelled)
    assert 0.85 < np.median(ratios) < 1.2  # no octave errors on the typical clip


def annotate_local(inputs: Path, run: Path) -> None:
    """The demo's annotation (configs/demo.yaml) in the plain loop executor."""
    command = [sys.executable, "-m", "pipeline.cli", "annotate", "--config", str(REPO / "configs/demo.yaml")]
    command += ["--input", str(inputs), "--out", str(run), "--executor", "local"]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)


@pytest.mark.slow
def test_the_demo_recipe_transfers_to_real_speech(real_speech, tmp_path):
    """Issue 9: `make demo`'s training (the examples and the voice corpus, annotated by the real
    pipeline, configs/train-demo.yaml) gives prompts that tell real women from real men and rank their
    pitch. Trained on the examples alone, the same recipe reached gender WA 0.64 and a pitch Spearman of
    -0.19 over all 120 clips. With the voice corpus, over seeds 0-3 on one machine and seed 0 on two
    others: gender WA 0.66-0.84, Spearman all 0.62-0.82, female 0.57-0.79, male 0.12-0.60; exporting
    the weights' moving average (optim.average_decay 0.99, now the demo's), seeds 0-3: gender WA
    0.71-0.79, all 0.73-0.76, female 0.67-0.81, male 0.31-0.41 (0.23-0.37 without it, same machine).
    The floors below sit under the lowest of those; the within-male ranking is weak (not asserted)."""
    make_voice_corpus.main(["--out", str(tmp_path / "voices"), "--clips", "400"])
    annotate_local(tmp_path / "voices" / "manifest.jsonl", tmp_path / "voices-run")
    annotate_local(REPO / "examples" / "manifest.jsonl", tmp_path / "examples-run")
    config = read_yaml(REPO / "configs/train-demo.yaml")
    config["data"]["runs"] = [str(tmp_path / "examples-run"), str(tmp_path / "voices-run")]
    config["max_minutes"] = None  # all 500 steps on a slow machine too: the figures are per step count
    train_worker({"config": config, "out": str(tmp_path / "training"), "export": str(tmp_path / "model")})

    rows, waves = real_speech
    model = load_model(tmp_path / "model")
    clips = [Clip(row["filename"], wave, row) for row, wave in zip(rows, waves, strict=True)]
    audio = embed_clips(model, clips)
    gender = zero_shot(model, clips, "gender", ["A {} speaker.", "A speaker in a {} tone."], audio=audio)
    assert gender["WA"] >= 0.62, gender
    high, low = "A high-pitched voice.", "A low-pitched voice."
    ranking = prompt_ranking(model, clips, "f0_median_hz", high, low, "gender", audio=audio)
    assert ranking["all"]["spearman"] > 0.5 and ranking["female"]["spearman"] > 0.45, ranking
