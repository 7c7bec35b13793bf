"""Front-end fixtures (separation, diarization): the real pyannote weights and tiny random models.

Models are built once per test session into a temporary folder with `scripts/make_tiny_models.py`,
the same builder `make tiny-models` runs, so tests load them through the libraries' own loaders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# pyannote.audio 4 sends usage telemetry unless told not to; there is no network here (or in CI).
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass(frozen=True)
class ReferenceRecording:
    """A recording with its reference speaker annotation."""

    audio: Path
    annotation: object  # pyannote.core.Annotation
    duration_s: float


@pytest.fixture(scope="session")
def pyannote_segmentation_dir() -> Path:
    """Folder holding the real pyannote/segmentation weights (`Model.from_pretrained(folder)` loads them)."""
    from annotate.models import bundled_path

    return bundled_path("pyannote-segmentation")


@pytest.fixture(scope="session")
def pyannote_sample() -> ReferenceRecording:
    """The two-speaker recording pyannote.audio ships (30 s, 16 kHz) with its reference RTTM."""
    import pyannote.audio
    import soundfile as sf
    from pyannote.database.util import load_rttm

    folder = Path(pyannote.audio.__file__).parent / "sample"
    audio = folder / "sample.wav"
    return ReferenceRecording(
        audio=audio,
        annotation=load_rttm(str(folder / "sample.rttm"))["sample"],
        duration_s=sf.info(audio).duration,
    )


@pytest.fixture(scope="session")
def tiny_demucs_repo(tmp_path_factory) -> Path:
    """A demucs model repo folder holding a small random HTDemucs bag named `make_tiny_models.DEMUCS_NAME`;
    load it with `demucs.pretrained.get_model(DEMUCS_NAME, repo=folder)`."""
    from make_tiny_models import build_demucs

    return build_demucs(tmp_path_factory.mktemp("models") / "demucs")


@pytest.fixture(scope="session")
def tiny_diarization_pipeline_dir(tmp_path_factory) -> Path:
    """A pyannote speaker-diarization-community-1 style folder (config.yaml, segmentation/, embedding/,
    plda/): real segmentation weights, random WeSpeaker ResNet34 embeddings. Load it offline with
    `pyannote.audio.Pipeline.from_pretrained(folder)`; speech regions are real, speaker labels are not."""
    from make_tiny_models import build_pyannote_diarization

    return build_pyannote_diarization(tmp_path_factory.mktemp("models") / "pyannote-diarization")


def assert_exclusive_turns(source, total_samples: int) -> None:
    """A diarizer's SourceTurns: turns and overlaps sorted, non-empty, disjoint and inside the file;
    speakers named spk0, spk1, ... (or turn0, turn1, ...) in order of first appearance."""
    from itertools import pairwise

    assert source.total_samples == total_samples
    assert [t.start for t in source.turns] == sorted(t.start for t in source.turns)
    spans = sorted([(t.start, t.end) for t in source.turns] + source.overlap)
    assert all(start < end for start, end in spans)
    assert all(first_end <= second_start for (_, first_end), (second_start, _) in pairwise(spans))
    assert spans[0][0] >= 0 and spans[-1][1] <= total_samples
    prefix = "turn" if source.turns[0].speaker.startswith("turn") else "spk"
    assert source.speakers == [f"{prefix}{i}" for i in range(len(source.speakers))]
