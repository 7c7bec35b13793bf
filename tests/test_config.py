"""Run configuration: defaults, the short form of sources, one-line errors naming the key, the
processing hash, and the `stylecaps config` command as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from pipeline.config import ConfigError, RunConfig, SourceSpec, load_config, parse_config
from tests.conftest import REPO

STYLECAPS = REPO / ".venv" / "bin" / "stylecaps"


def _error(data, origin: str = "config") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, origin=origin)
    message = str(caught.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


# --- parse_config / load_config -----------------------------------------------------------------


def test_empty_and_missing_config_give_the_documented_defaults():
    for data in (None, {}):
        config = parse_config(data)
        assert config == RunConfig()
        assert config.sources == []
        assert (config.segment.min_s, config.segment.max_s, config.segment.merge_gap_s) == (3.0, 30.0, 1.5)
        assert config.caption.acoustic.views == 3 and config.caption.acoustic.global_view is True
        assert config.verify.rules.checks[0] == "no_quotes" and len(config.verify.rules.checks) == 11
        assert config.verify.rules.checks[-4:] == [
            "measured_gender",
            "measured_pitch",
            "measured_rate",
            "measured_loudness",
        ]
        assert config.measure.bins.articulation_rate_sps == (3.5, 5.5)
        assert config.measure.gender.min_confidence == 0.9
        assert config.write.rows_per_shard == 1000 and config.write.fsync is False


def test_demo_config_loads_with_its_overrides():
    config = load_config(REPO / "configs" / "demo.yaml")
    assert config.sources == [SourceSpec(path="examples/manifest.jsonl")]
    assert config.write.rows_per_shard == 20
    assert config.ray.num_cpus == 2
    assert config.caption.acoustic.views == 3


def test_sources_accept_the_string_short_form_mixed_with_mappings():
    config = parse_config({"sources": ["audio/", {"path": "labels.csv", "speaker": "alice"}, "x/*.wav"]})
    assert config.sources == [
        SourceSpec(path="audio/"),
        SourceSpec(path="labels.csv", speaker="alice"),
        SourceSpec(path="x/*.wav"),
    ]
    assert all(spec.speaker is None for spec in (config.sources[0], config.sources[2]))


def test_unknown_top_level_key_is_one_line_naming_it():
    message = _error({"segmnt": {"min_s": 3}}, origin="run.yaml")
    assert message.startswith("run.yaml: ")
    assert "unknown key 'segmnt'" in message


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"segment": {"min_sec": 3}}, "segment.min_sec"),
        ({"caption": {"acoustic": {"vews": 2}}}, "caption.acoustic.vews"),
        ({"caption": {"acoustic": {"bins": {}}}}, "caption.acoustic.bins"),  # bins moved to measure
        ({"measure": {"bins": {"loudness": [1, 2]}}}, "measure.bins.loudness"),
        ({"measure": {"gender": {"f0_hz": 200}}}, "measure.gender.f0_hz"),
        ({"verify": {"rules": {"measured": {"margin": 1}}}}, "verify.rules.measured.margin"),
        ({"verify": {"rules": {"fine_length": {"min_chars": 3, "max": 9}}}}, "verify.rules.fine_length.max"),
        ({"sources": ["a", {"path": "b", "spk": "x"}]}, "sources.1.spk"),
        ({"ray": {"default": {"gpus": 1}}}, "ray.default.gpus"),
        ({"ray": {"stages": {"caption": {"gpus": 1}}}}, "ray.stages.caption.gpus"),
    ],
)
def test_unknown_nested_key_names_its_dotted_path(data, key):
    message = _error(data)
    assert f"unknown key '{key}'" in message


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"write": {"rows_per_shard": "many"}}, "write.rows_per_shard"),
        ({"write": {"rows_per_shard": 0}}, "write.rows_per_shard"),
        ({"write": {"compression": "lz4"}}, "write.compression"),
        ({"segment": {"threshold": 1.5}}, "segment.threshold"),
        ({"caption": {"acoustic": {"views": -1}}}, "caption.acoustic.views"),
        ({"caption": {"backend": "llm"}}, "caption.backend"),
        ({"verify": {"rules": {"checks": ["no_quotes", "no_emoji"]}}}, "verify.rules.checks.1"),
        ({"measure": {"bins": {"alpha_ratio_db": [-5, -20]}}}, "measure.bins"),
        ({"measure": {"gender": {"min_confidence": 0.2}}}, "measure.gender.min_confidence"),
        ({"sources": [{"speaker": "x"}]}, "sources.0.path"),
    ],
)
def test_wrong_value_names_the_key(data, key):
    message = _error(data)
    assert f"invalid value for '{key}'" in message


def test_several_errors_report_the_first_and_count_the_rest():
    message = _error({"segment": {"min_sec": 3, "max_sec": 9}, "bogus": 1})
    assert re.search(r"\(and 2 more\)$", message), message


def test_non_mapping_top_level_is_rejected():
    message = _error(["segment", "write"], origin="list.yaml")
    assert message == "list.yaml: expected a mapping at the top level, got list"


def test_max_s_below_twice_min_s_is_rejected_and_equal_is_accepted():
    message = _error({"segment": {"min_s": 5.0, "max_s": 9.9}})
    assert "invalid value for 'segment'" in message
    assert "twice" in message and "9.9" in message
    config = parse_config({"segment": {"min_s": 5.0, "max_s": 10.0}})
    assert config.segment.max_s == 10.0


def test_invalid_yaml_is_one_line_with_the_line_number(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sources:\n  - a.wav\nsegment:\n  min_s: 3\n  max_s: [30\nwrite: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"{path}: not valid YAML at line 6"

    path.write_text("segment:\n\tmin_s: 3\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2$"):
        load_config(path)


def test_missing_config_file_is_a_config_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read config"):
        load_config(path)


def test_empty_yaml_file_is_the_default_config(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    assert load_config(path) == RunConfig()


def test_yaml_errors_in_a_file_name_the_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("segment:\n  min_sec: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: unknown key 'segment.min_sec'"


# --- processing hash ----------------------------------------------------------------------------


def test_processing_hash_is_16_hex_and_stable_across_spellings_of_the_defaults():
    default = parse_config({}).processing_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", default)
    explicit = parse_config({"segment": {"min_s": 3, "max_s": 30.0}, "write": {"compression": "zstd"}})
    assert explicit.processing_hash() == default


def test_processing_hash_ignores_sources_ray_and_fsync():
    base = parse_config({}).processing_hash()
    assert parse_config({"sources": ["a/", "b.csv"]}).processing_hash() == base
    assert parse_config({"ray": {"address": "auto", "num_cpus": 64}}).processing_hash() == base
    assert parse_config({"ray": {"default": {"num_cpus": 2, "concurrency": 3}}}).processing_hash() == base
    assert parse_config({"ray": {"stages": {"segment": {"num_gpus": 0.5}}}}).processing_hash() == base
    assert parse_config({"write": {"fsync": True}}).processing_hash() == base


def test_a_partial_segmentation_section_keeps_its_backends_own_step():
    config = parse_config({"segment": {"pyannote": {"batch_size": 8}, "diarize_cpu": {"segmentation": {}}}})
    assert config.segment.pyannote.step_s == 0.5
    assert config.segment.diarize_cpu.segmentation.step_s == 2.0
    assert parse_config({"segment": {"pyannote": {"step_s": 1.5}}}).segment.pyannote.step_s == 1.5


def test_processing_hash_ignores_where_scratch_audio_and_model_exports_are_kept():
    base = parse_config({}).processing_hash()
    assert parse_config({"separate": {"work_dir": "/scratch/sep"}}).processing_hash() == base
    assert parse_config({"segment": {"pyannote": {"torchscript_cache": "/c"}}}).processing_hash() == base
    cpu = {"segment": {"diarize_cpu": {"segmentation": {"torchscript_cache": "/c"}}}}
    assert parse_config(cpu).processing_hash() == base


@pytest.mark.parametrize(
    "change",
    [
        {"caption": {"acoustic": {"views": 4}}},
        {"caption": {"acoustic": {"seed": 1}}},
        {"segment": {"max_s": 20.0}},
        {"measure": {"bins": {"articulation_rate_sps": [3.0, 6.0]}}},
        {"measure": {"gender": {"min_confidence": 0.99}}},
        {"measure": {"acoustics": {"pitch_ceiling_hz": 500.0}}},
        {"verify": {"rules": {"checks": ["no_quotes"]}}},
        {"verify": {"rules": {"measured": {"rate_margin_sps": 0.5}}}},
        {"write": {"rows_per_shard": 10}},
    ],
)
def test_processing_hash_changes_with_processing_settings(change):
    assert parse_config(change).processing_hash() != parse_config({}).processing_hash()


def test_processing_hash_distinguishes_view_counts():
    hashes = {parse_config({"caption": {"acoustic": {"views": n}}}).processing_hash() for n in (1, 2, 3, 5)}
    assert len(hashes) == 4


# --- the `stylecaps config` command ----------------------------------------------------------------
# Two real subprocesses (started together: each pays the ~2 s import), the rest in-process.

# Long enough to exceed any console width rich might pick up from a terminal or $COLUMNS.
LONG_SOURCE = "/data/corpora/" + "a_rather_long_dataset_folder_name/" * 8 + "speaker_0001/take_0001.flac"


@pytest.fixture(scope="module")
def cli_subprocesses(tmp_path_factory):
    """`stylecaps config` on an invalid YAML file and on the demo config; name → (code, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "bad.yaml").write_text("segment:\n  min_s: 3\n  max_s: [30\nwrite: {}\n")
    cases = {
        "bad_yaml": (["--config", "bad.yaml"], folder),
        "demo": (["--config", "configs/demo.yaml"], REPO),
    }
    env = {**os.environ, "COLUMNS": "80", "RAY_AUTH_MODE": "disabled"}
    procs = {
        name: subprocess.Popen(
            [str(STYLECAPS), "config", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, cwd) in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = (proc.returncode, out, err)
    return results


def _invoke(*args: str):
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["config", *args], env={"COLUMNS": "80"})
    return result.exit_code, result.stdout, result.stderr


def _single_error_line(stderr: str) -> str:
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith("error: ") and len(lines[0]) > len("error: ")
    return lines[0]


def test_cli_invalid_yaml_exits_2_with_one_error_line(cli_subprocesses):
    code, out, err = cli_subprocesses["bad_yaml"]
    assert code == 2
    assert "Traceback" not in err and out == ""
    assert _single_error_line(err) == "error: bad.yaml: not valid YAML at line 4"


def test_cli_prints_the_demo_config_as_yaml_with_every_default(cli_subprocesses):
    code, out, err = cli_subprocesses["demo"]
    assert code == 0, err
    printed = yaml.safe_load(out)
    config = load_config(REPO / "configs" / "demo.yaml")
    assert printed == config.model_dump(mode="json")
    assert printed["verify"]["rules"]["fine_length"] == {"min_chars": 128, "max_chars": 768}
    assert out.rstrip("\n").splitlines()[-1] == f"# processing hash: {config.processing_hash()}"


def test_cli_unknown_key_exits_2_naming_the_key(tmp_path, monkeypatch):
    (tmp_path / "key.yaml").write_text("segment:\n  min_sec: 3\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = _invoke("--config", "key.yaml")
    assert code == 2 and out == ""
    assert _single_error_line(err) == "error: key.yaml: unknown key 'segment.min_sec'"


def test_cli_missing_config_file_exits_2(tmp_path):
    code, _, err = _invoke("--config", str(tmp_path / "x.yaml"))
    assert code == 2
    assert "cannot read config" in err and "Traceback" not in err


def test_cli_error_for_a_long_config_path_stays_one_line(tmp_path):
    # Over 300 characters: longer than any console width rich could have picked up.
    folder = tmp_path / ("deeply_nested_configuration_folder_" * 3) / ("with_another_long_level_below_" * 3)
    folder.mkdir(parents=True)
    (folder / "bad.yaml").write_text("segment:\n  min_sec: 3\n")
    code, _, err = _invoke("--config", str(folder / "bad.yaml"))
    assert code == 2
    assert _single_error_line(err) == f"error: {folder / 'bad.yaml'}: unknown key 'segment.min_sec'"


def test_cli_config_output_round_trips_a_long_source_path(tmp_path):
    (tmp_path / "long.yaml").write_text(f"sources:\n  - {LONG_SOURCE}\n")
    code, out, err = _invoke("--config", str(tmp_path / "long.yaml"))
    assert code == 0, err
    assert yaml.safe_load(out)["sources"] == [{"path": LONG_SOURCE, "speaker": None, "gender": None}]


def test_cli_config_output_keeps_square_brackets_in_values(tmp_path):
    (tmp_path / "markup.yaml").write_text('sources:\n  - "takes/[bold]take[/bold]_01.wav"\n')
    code, out, err = _invoke("--config", str(tmp_path / "markup.yaml"))
    assert code == 0, err
    expected = {"path": "takes/[bold]take[/bold]_01.wav", "speaker": None, "gender": None}
    assert yaml.safe_load(out)["sources"] == [expected]


LLM_ENGINE = {"engine": {"model": "Qwen/Qwen3-8B", "tensor_parallel_size": 2}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"caption": {"backend": "vllm"}}, "caption backend vllm needs caption.vllm"),
        ({"verify": {"backend": "vllm"}}, "verify backend vllm needs verify.vllm"),
        ({"caption": {"backend": "openai"}}, "caption backend openai needs caption.openai"),
        ({"caption": {"global_backend": "acoustic"}}, "global_backend acoustic is for an LLM backend"),
        (
            {
                "caption": {"backend": "vllm", "vllm": LLM_ENGINE},
                "ray": {"stages": {"caption": {"num_gpus": 1}}},
            },
            "ray.stages.caption.num_gpus is 1 but caption.vllm.engine.tensor_parallel_size is 2",
        ),
    ],
)
def test_llm_sections_that_cannot_run_are_one_line_errors(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data)


def test_an_llm_stage_on_cpu_or_on_as_many_gpus_as_its_engine_spreads_over_is_accepted():
    caption = {"backend": "vllm", "vllm": LLM_ENGINE}
    assert parse_config({"caption": caption}).caption.vllm.engine.tensor_parallel_size == 2
    on_gpus = parse_config({"caption": caption, "ray": {"stages": {"caption": {"num_gpus": 2}}}})
    assert on_gpus.ray.declaration("caption").num_gpus == 2


def test_the_shipped_llm_configs_validate():
    demo = load_config(REPO / "configs" / "demo-llm.yaml")
    cluster = load_config(REPO / "configs" / "cluster.yaml")
    assert (demo.caption.backend, demo.verify.backend) == ("vllm", "vllm")
    assert cluster.caption.vllm.kind == "captioner" and cluster.caption.global_backend == "acoustic"
