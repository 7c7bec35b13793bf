"""The front end inside real runs: diarize-cpu gives single-speaker segments with two labels on two
real voices, speaker consistency drops an intruder, separated vocals are what later stages cut, and a
run killed with diarization on resumes to the same segments."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from two_voices import write_two_voices

from annotate.audio import SAMPLE_RATE, decode_flac, read_mono_16k
from annotate.cut import CutStage
from annotate.plan import PLAN_KEY, PlannedSegment, SourcePlan
from pipeline.config import load_config, parse_config
from pipeline.rundir import listed_shards
from pipeline.runner import annotate
from tests.conftest import REPO
from tests.test_robustness import STYLECAPS, kill_after_two_commits, run_cli

DIARIZE_CPU = REPO / "configs" / "diarize-cpu.yaml"
TOLERANCE_S = 0.5  # the segmentation model places a speaker change within a few of its frames


def shard_rows(run: Path) -> list[dict]:
    return [row for shard in listed_shards(run) for row in pq.read_table(shard).to_pylist()]


def voice_of(row: dict, truth: list[tuple[float, float, str]]) -> str:
    """The one voice a segment holds, failing if another voice is inside it beyond the tolerance."""
    heard = {}
    for start, end, voice in truth:
        overlap = min(row["end_s"], end) - max(row["start_s"], start)
        if overlap > 0:
            heard[voice] = heard.get(voice, 0.0) + overlap
    main = max(heard, key=heard.get)
    assert sum(s for v, s in heard.items() if v != main) <= TOLERANCE_S, (row["start_s"], row["end_s"], heard)
    return main


@pytest.mark.slow
def test_diarize_cpu_gives_single_speaker_segments_with_one_label_per_voice(ray_cluster, tmp_path):
    recording = tmp_path / "interview.wav"
    truth = write_two_voices(recording, 90)
    report = annotate(load_config(DIARIZE_CPU), tmp_path / "run", [str(recording)], executor="ray")

    rows = shard_rows(report.out)
    assert report.totals["inputs"] == 1 and len(rows) >= 10
    [source_id] = {row["source_id"] for row in rows}
    labels: dict[str, set[str]] = {"a": set(), "b": set()}
    for row in rows:
        labels[voice_of(row, truth)].add(row["speaker"])
    assert labels == {"a": {f"{source_id}:spk0"}, "b": {f"{source_id}:spk1"}}
    assert all(row["speaker_similarity"] >= 0.84 for row in rows)


@pytest.mark.calibration
def test_speaker_consistency_drops_the_intruder_among_one_speakers_segments(calibration_dir, tmp_path):
    """Six sentences of one actor and, fourth, one of an actress, 2 s apart, in one source without
    diarization: the source is one speaker's, and the actress's segment is dropped with its score."""
    import csv

    with open(calibration_dir / "labels.csv", newline="") as handle:
        labels = list(csv.DictReader(handle))

    def clips(speaker: str) -> list[str]:
        return [r["filename"] for r in labels if r["speaker"] == speaker and r["intensity"] == "normal"]

    files = clips("ravdess_01")[:6]
    files.insert(3, clips("ravdess_02")[0])
    silence = np.zeros(2 * SAMPLE_RATE, np.float32)
    waves = [read_mono_16k(calibration_dir / "audio" / name) for name in files]
    sf.write(
        tmp_path / "one_actor.wav", np.concatenate([x for w in waves for x in (w, silence)]), SAMPLE_RATE
    )
    intruder_start = sum(w.size + silence.size for w in waves[:3]) / SAMPLE_RATE
    config = parse_config(
        {
            "segment": {"min_s": 1.0, "max_s": 10.0, "merge_gap_s": 0.5},
            "speaker_consistency": {"enabled": True, "threshold": 0.84},
        }
    )
    report = annotate(config, tmp_path / "run", [str(tmp_path / "one_actor.wav")], executor="local")

    kept = shard_rows(report.out)
    dropped = pq.read_table(report.out / "dropped.parquet").to_pylist()
    assert len(kept) == 6 and all(row["speaker_similarity"] >= 0.84 for row in kept)
    [intruder] = [row for row in dropped if row["reason"] == "speaker_inconsistent"]
    assert intruder["stage"] == "speaker_consistency" and intruder["score"] < 0.84
    intruder_end = intruder_start + waves[3].size / SAMPLE_RATE
    assert (
        intruder_start <= intruder["start_s"] < intruder["end_s"] <= intruder_end + 0.1
    )  # the actress's clip
    assert report.totals["dropped_by_reason"]["speaker_inconsistent"] == 1
    assert run_cli("verify-run", str(report.out)).returncode == 0


def test_cut_takes_segments_from_the_separated_audio_and_removes_it(tmp_path):
    rng = np.random.default_rng(0)
    original, separated = tmp_path / "mix.wav", tmp_path / "vocals.flac"
    sf.write(original, 0.1 * rng.standard_normal(5 * SAMPLE_RATE).astype(np.float32), SAMPLE_RATE)
    vocals = 0.3 * np.sin(np.arange(5 * SAMPLE_RATE) / 7).astype(np.float32)
    sf.write(separated, vocals, SAMPLE_RATE, subtype="PCM_16")
    plan = SourcePlan(5 * SAMPLE_RATE, [PlannedSegment(SAMPLE_RATE, 4 * SAMPLE_RATE)])
    row = {"input_path": str(original), "audio_path": str(separated), "source_id": "mix", "status": "ok"}

    expected = read_mono_16k(separated)[SAMPLE_RATE : 4 * SAMPLE_RATE]

    segment, end = CutStage(60.0).stream({**row, PLAN_KEY: plan.to_json()})

    np.testing.assert_allclose(decode_flac(segment["audio"]["bytes"]), expected, atol=1 / 32768)
    assert end["status"] == "end" and not separated.exists() and original.exists()


@pytest.mark.slow
def test_a_run_with_demucs_separation_in_its_own_pool_cuts_the_vocals(
    ray_cluster, tiny_demucs_repo, tmp_path
):
    from make_tiny_models import DEMUCS_NAME

    mix = tmp_path / "mix.wav"
    speech = read_mono_16k(sorted((REPO / "examples" / "corpus").glob("*.flac"))[0])
    sf.write(mix, np.concatenate([speech, speech]), SAMPLE_RATE)
    config = parse_config(
        {
            "separate": {"backend": "demucs", "demucs": {"repo": str(tiny_demucs_repo), "name": DEMUCS_NAME}},
            "segment": {"min_s": 0.5, "max_s": 10.0},
            "ray": {"stages": {"separate": {"num_cpus": 0.5}}},  # its own pool
        }
    )
    report = annotate(config, tmp_path / "run", [str(mix)], executor="ray")

    [ledger] = pq.read_table(report.out / "sources.parquet").to_pylist()
    assert ledger["outcome"] != "failed" and pq.read_table(report.out / "failures.parquet").num_rows == 0
    assert ledger["duration_s"] == pytest.approx(sf.info(mix).duration, abs=1e-3)
    assert list((report.out / "work" / "separated").iterdir()) == []  # scratch removed once cut


@pytest.mark.slow
def test_a_run_killed_with_diarization_on_resumes_to_the_same_segments(tmp_path):
    recording = tmp_path / "long_interview.wav"
    write_two_voices(recording, 160)
    config = tmp_path / "diarize_small_shards.yaml"
    config.write_text(DIARIZE_CPU.read_text().replace("rows_per_shard: 1000", "rows_per_shard: 3"))
    whole = run_cli("annotate", "-c", str(config), "--executor", "local", "-q", "--input", str(recording),
                    "--out", str(tmp_path / "whole"))  # fmt: skip
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "run"
    command = [
        STYLECAPS,
        "annotate",
        "--config",
        str(config),
        "--input",
        str(recording),
        "--out",
        str(out),
        "-q",
    ]
    kill_after_two_commits(command, out)
    committed = shard_rows(out)
    assert 0 < len(committed) < len(shard_rows(tmp_path / "whole"))

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def key(row: dict) -> tuple:
        return row["segment_id"], row["speaker"], row["speaker_similarity"]

    rows = shard_rows(out)
    assert [key(r) for r in rows[: len(committed)]] == [key(r) for r in committed]
    assert [key(r) for r in rows] == [key(r) for r in shard_rows(tmp_path / "whole")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert run_cli("verify-run", str(out)).returncode == 0


def test_speaker_consistency_embeds_in_batches_and_scores_every_segment(pyannote_sample):
    from annotate.consistency import SpeakerConsistencyConfig, SpeakerConsistencyStage

    segments = [
        PlannedSegment(start * SAMPLE_RATE, (start + 2) * SAMPLE_RATE, "spk0") for start in range(0, 20, 2)
    ]
    plan = SourcePlan(30 * SAMPLE_RATE, segments)
    stage = SpeakerConsistencyStage(SpeakerConsistencyConfig(enabled=True, threshold=0.0, embed_batch=3))
    stage.setup()
    row = {"input_path": str(pyannote_sample.audio), "source_id": "sample", PLAN_KEY: plan.to_json()}

    [checked] = stage([row])

    scored = SourcePlan.from_json(checked[PLAN_KEY])
    assert [(s.start, s.end) for s in scored.segments] == [(s.start, s.end) for s in segments]
    assert all(0.5 < s.similarity < 1.0 for s in scored.segments) and scored.dropped == []
