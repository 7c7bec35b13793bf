"""What the CPU default speech encoder's inputs carry on real recorded speech (RAVDESS): the GE2E
speaker embedding separates the actors' genders, and the window pitch feature follows the labelled
f0. These are the two properties the zero-shot gender and pitch-ranking figures rest on."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from annotate.audio import read_mono_16k
from train.audio_encoders import GE2EEncoder, frame_pitch
from train.batches import pad
from train.config import AudioEncoderConfig
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
