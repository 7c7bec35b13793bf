"""Shared fixtures: the example corpus, speech synthesis, a local Ray cluster, and one demo run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
# Real labeled speech (RAVDESS, see its SOURCES.md) beside the checkout; used in place, never copied.
CALIBRATION = Path(os.environ.get("STYLECAPS_CALIBRATION", REPO.parent / "shared" / "calibration"))
sys.path.insert(0, str(REPO / "scripts"))  # tests reuse scripts/tag_accuracy.py


def speak(path: Path, text: str, *args: str) -> Path:
    """Real speech from espeak-ng (installed by `make`), written as WAV."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run `make env` (it installs the Debian packages)")
    subprocess.run(["espeak-ng", *args, "-w", str(path), text], check=True, capture_output=True)
    return path


def default_contract():
    """The shard contract of the default config's stages: what synthetic stream rows are written with."""
    from pipeline.config import RunConfig
    from pipeline.contract import ShardContract
    from pipeline.stages import build_stage_specs

    return ShardContract.of(build_stage_specs(RunConfig()))


SENTENCES = (
    "The library opens at nine every weekday morning, and the reading room fills up quickly. "
    "A light rain fell over the harbour all afternoon while the boats rocked gently at anchor."
)


@pytest.fixture(scope="session")
def calibration_dir() -> Path:
    """The calibration set; tests that need it are marked `calibration`. Missing in CI is a failure."""
    if (CALIBRATION / "labels.csv").is_file():
        return CALIBRATION
    reason = f"the calibration set is not at {CALIBRATION} (set STYLECAPS_CALIBRATION to its folder)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# A custom resource of the test cluster, so a test can give one actor pool resources another lacks.
RAY_TEST_RESOURCE = "test_slot"


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(
        num_cpus=2,
        resources={RAY_TEST_RESOURCE: 1.0},
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_run(ray_cluster, tmp_path_factory):
    """The demo config over the whole example corpus, through Ray: shared by the read-back tests."""
    from pipeline.config import load_config
    from pipeline.runner import annotate

    out = tmp_path_factory.mktemp("demo") / "run"
    config = load_config(REPO / "configs" / "demo.yaml")
    return annotate(config, out, inputs=[str(EXAMPLES / "manifest.jsonl")], executor="ray")


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """8 sources × 3 tone segments through the real shard writer: 4 shards of 2 row groups each."""
    from tests.train_data import write_run

    return write_run(tmp_path_factory.mktemp("synthetic") / "run")


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> Path:
    from tests.train_data import tiny_text_model

    return tiny_text_model(tmp_path_factory.mktemp("tiny-text"))
