"""`stylecaps check`: one file measured by the run's own measure stage, captions verified by the run's
own rules verifier; text and JSON output; user errors are one line and exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from annotate.audio import encode_flac, read_mono_16k
from annotate.measure import MEASUREMENT_NAMES, MeasureConfig, measure_segment
from pipeline.check import check_captions
from pipeline.cli import app
from pipeline.config import RunConfig
from tests.conftest import SENTENCES, speak

ENV = {"COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}
TRUE = (
    "A female speaker talks in a high, clear voice at an even, ordinary pace, with a natural rise and fall "
    "in her intonation from phrase to phrase."
)
FALSE = "A deep male voice speaks the words slowly."


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env=ENV)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def woman(tmp_path_factory):
    """A high female espeak voice (F0 about 260 Hz), as a FLAC file a user might have."""
    folder = tmp_path_factory.mktemp("check")
    wave = read_mono_16k(speak(folder / "w.wav", SENTENCES, "-v", "en-us+f3", "-p", "80"))
    path = folder / "woman.flac"
    path.write_bytes(encode_flac(wave))
    return path


def test_each_caption_gets_the_verdict_a_run_would_give(woman):
    results = check_captions(woman, [TRUE, FALSE], RunConfig(), gender="female")
    assert [r["passed"] for r in results] == [True, False]
    assert results[1]["failed_checks"] == ["length", "measured_gender", "measured_pitch"]
    assert results[1]["reasons"][1] == "says male, the speaker is female (given)"
    measurements = results[0]["measurements"]
    assert set(measurements) == {*MEASUREMENT_NAMES, "tags"}
    assert measurements["tags"]["gender"] == "female" and measurements["tags"]["pitch"] == "high"
    # the same numbers as the measure stage gives the file's audio as a shard stores it
    direct = measure_segment(read_mono_16k(woman), "female", MeasureConfig())
    assert measurements["pitch_median_hz"] == direct.features.pitch_median_hz
    assert results[0]["verifier"] == results[1]["verifier"] == "rules/2"


def test_text_output_lists_verdicts_reasons_and_measurements(woman):
    code, out, err = invoke("check", str(woman), "--caption", TRUE, "--caption", FALSE, "--gender", "female")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"PASSED  {TRUE}"
    assert lines[1] == f"FAILED  {FALSE}"
    assert lines[3] == "  measured_gender: says male, the speaker is female (given)"
    assert "measurements:" in lines
    assert any(line.startswith("  tags: gender=female, gender_source=given, pitch=high") for line in lines)
    assert any(line.startswith("  pitch_median_hz: ") for line in lines)


def test_json_output_is_one_object_per_caption(woman, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("verify:\n  rules:\n    checks: [measured_gender, measured_pitch]\n")
    code, out, err = invoke(
        "check", str(woman), "--caption", TRUE, "--caption", FALSE, "--config", str(config), "--json"
    )
    assert code == 0, err
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["caption"] for o in objects] == [TRUE, FALSE]
    assert [o["passed"] for o in objects] == [True, False]
    assert objects[1]["failed_checks"] == ["measured_gender", "measured_pitch"]  # only the configured checks
    assert objects[1]["reasons"][0].startswith("says male, the speaker is female (estimated, confidence ")
    assert objects[0]["measurements"]["tags"]["gender_source"] == "estimated"
    assert set(objects[0]) == {
        "audio",
        "caption",
        "passed",
        "failed_checks",
        "reasons",
        "verifier",
        "measurements",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "missing.wav", "--caption", "x"], "missing.wav: no such file"),
        (["check", "{audio}"], "give at least one --caption"),
        (["check", "{audio}", "--caption", "x", "--gender", "f"], "--gender must be 'female' or 'male'"),
        (["check", "{audio}", "--caption", "x", "--granularity", "long"], "--granularity must be"),
        (["check", "{audio}", "--caption", "x", "--config", "{bad_config}"], "unknown key 'measure.bogus'"),
        (["check", "{not_audio}", "--caption", "x"], "not a readable audio file"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(woman, tmp_path, args, message):
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("measure:\n  bogus: 1\n")
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio at all")
    paths = {"audio": str(woman), "bad_config": str(bad_config), "not_audio": str(not_audio)}
    code, out, err = invoke(*(arg.format(**paths) for arg in args))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
