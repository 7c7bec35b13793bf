"""The demo's training corpus of many voices (scripts/make_voice_corpus.py): its draw, the voices it
names, and what rendering does to pitch and level."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import make_voice_corpus as corpus
import numpy as np
import pytest
import soundfile
import torch

from annotate.audio import read_mono_16k
from train.audio_encoders import frame_pitch

ESPEAK_VARIANTS = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v")


def test_the_draw_is_seeded_balanced_and_varied():
    clips = corpus.draw_clips(200, seed=3)
    assert clips == corpus.draw_clips(200, seed=3)
    assert clips != corpus.draw_clips(200, seed=4)
    assert sum(c.gender == "female" for c in clips) == 100
    assert len({c.speaker for c in clips}) > 80
    moved = [c for c in clips if c.pitch_target_hz]
    assert 70 < len(moved) < 130
    for clip in moved:
        low, high = corpus.PITCH_TARGET_HZ[clip.gender]
        assert low <= clip.pitch_target_hz <= high
    high_men = [c for c in moved if c.gender == "male" and c.pitch_target_hz > 200]
    assert high_men, "men above espeak-ng's range are the point of the pitch targets"


@pytest.mark.parametrize(
    ("variants", "gender"), [(corpus.FEMALE_VARIANTS, "female"), (corpus.MALE_VARIANTS, "male")]
)
def test_every_espeak_variant_declares_the_gender_the_corpus_gives_it(variants, gender):
    if not ESPEAK_VARIANTS.is_dir():
        pytest.fail(f"espeak-ng's variants are not at {ESPEAK_VARIANTS}: run `make env`")
    for variant in variants:
        declared = [line.split() for line in (ESPEAK_VARIANTS / variant).read_text().splitlines()]
        assert ["gender", gender] == next(words[:2] for words in declared if words[:1] == ["gender"])


def median_f0(path: Path) -> float:
    wave = read_mono_16k(path)
    log_f0, voiced = frame_pitch(torch.from_numpy(wave)[None], torch.tensor([wave.size]))
    return float(150 * 2 ** log_f0[0][voiced[0] > 0].median())


def test_rendered_clips_reach_their_pitch_target_and_level(tmp_path):
    base = corpus.VoiceClip(
        name="plain.flac", engine="espeak-ng", voice="en-us", variant="m3", gender="male",
        text=" ".join(corpus.SENTENCES[:2]), pitch=50, rate=170, amplitude=100,
        pitch_target_hz=0, tempo=1.0, peak_db=-12.0, reverb=0,
    )  # fmt: skip
    shouting = replace(base, name="high.flac", pitch_target_hz=280)
    corpus.write_corpus(tmp_path, [base, shouting], jobs=2)
    plain_f0, moved_f0 = median_f0(tmp_path / "corpus/plain.flac"), median_f0(tmp_path / "corpus/high.flac")
    assert plain_f0 < 150  # espeak-ng's m3 speaks low
    assert moved_f0 == pytest.approx(280, rel=0.1)
    audio, rate = soundfile.read(tmp_path / "corpus/plain.flac")
    assert rate == 16000 and audio.ndim == 1
    assert 20 * np.log10(np.abs(audio).max()) == pytest.approx(-12.0, abs=0.2)
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert rows[1] == {
        "path": "corpus/high.flac", "speaker": "espeak-ng_en-us_m3", "gender": "male",
        "transcript": base.text, "engine": "espeak-ng", "voice": "en-us", "variant": "m3", "pitch": 50,
        "rate": 170, "amplitude": 100, "pitch_target_hz": 280, "tempo": 1.0, "peak_db": -12.0, "reverb": 0,
    }  # fmt: skip
