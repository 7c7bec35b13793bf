"""The TorchScript export of the segmentation model and the hysteresis that replace pyannote.audio in
CPU workers: each must give what pyannote gives, and a worker must not import pyannote.audio."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from annotate import segmentation_export
from annotate.audio import SAMPLE_RATE
from annotate.segmentation_windows import PyannoteSegmentationConfig, SegmentationModel, hysteresis

ROOT = Path(__file__).resolve().parents[2]


def test_hysteresis_is_pyannotes_binarize_on_every_channel():
    from pyannote.audio.utils.signal import binarize_ndarray

    rng = np.random.default_rng(0)
    # A random walk crosses both thresholds often and lingers between them; NaNs count as 0 in both.
    scores = np.clip(0.5 + np.cumsum(rng.normal(0, 0.08, (4000, 5)), axis=0) % 1.2 - 0.1, 0, 1)
    scores[rng.random(scores.shape) < 0.01] = np.nan
    scores[:40, 2] = 0.5  # a channel that starts undecided, between offset and onset

    expected = binarize_ndarray(scores.T, onset=0.767, offset=0.377).T

    assert expected[:, 2].any() and not expected[:, 2].all()
    np.testing.assert_array_equal(hysteresis(scores, 0.767, 0.377), expected)
    np.testing.assert_array_equal(hysteresis(scores[:, 0], 0.767, 0.377), expected[:, 0])


def _pyannote_model(config: PyannoteSegmentationConfig) -> SegmentationModel:
    return SegmentationModel(config.model_copy(update={"torchscript": False}))


def test_the_export_scores_real_speech_as_pyannotes_model_does(pyannote_sample, tmp_path):
    config = PyannoteSegmentationConfig(torchscript_cache=tmp_path, step_s=2.0, batch_size=4)
    audio, rate = sf.read(pyannote_sample.audio, dtype="float32")
    assert rate == SAMPLE_RATE

    exported = SegmentationModel(config)
    reference = _pyannote_model(config)

    (export,) = tmp_path.glob("segmentation-*.pt")
    assert isinstance(exported.model, torch.jit.ScriptFunction)
    for name in ("window_samples", "frame_center", "frame_step", "frames_per_window", "hop"):
        assert getattr(exported, name) == getattr(reference, name), name
    windows = list(exported.windows([audio]))
    expected = list(reference.windows([audio]))
    assert len(windows) == len(expected) == 14  # 5 s windows every 2 s over 30 s, the last one padded
    for window, reference_window in zip(windows, expected, strict=True):
        np.testing.assert_allclose(window.scores, reference_window.scores, atol=1e-5)

    # A second load reads the same file (its content decides the name) and makes no other.
    again = SegmentationModel(config)
    assert isinstance(again.model, torch.jit.RecursiveScriptModule)
    assert sorted(tmp_path.iterdir()) == [export]


def test_a_worker_with_the_export_never_imports_pyannote(pyannote_sample, tmp_path):
    SegmentationModel(PyannoteSegmentationConfig(torchscript_cache=tmp_path))  # makes the export
    script = textwrap.dedent(
        f"""
        import sys
        import soundfile as sf
        from annotate.diarize_cpu import CpuDiarizer, CpuDiarizerConfig

        config = CpuDiarizerConfig(segmentation={{"torchscript_cache": {str(tmp_path)!r}}})
        turns = CpuDiarizer(config).turns({str(pyannote_sample.audio)!r})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pyannote", "lightning"))
        print(len(turns.speakers), loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    speakers, modules = done.stdout.split(" ", 1)
    assert speakers == "2"  # the sample's two speakers, as with pyannote's model (test_diarize_cpu)
    assert modules.strip() == "[]"


def test_a_trace_that_differs_from_pyannote_is_not_saved_and_pyannotes_model_is_used(
    monkeypatch, tmp_path, caplog
):
    monkeypatch.setattr(segmentation_export, "_TOLERANCE", -1.0)  # any trace now "differs"
    with caplog.at_level(logging.WARNING, logger="annotate.segmentation_export"):
        model = SegmentationModel(PyannoteSegmentationConfig(torchscript_cache=tmp_path))

    assert not isinstance(model.model, torch.jit.ScriptFunction)
    assert list(tmp_path.iterdir()) == []
    assert "differs from pyannote's model" in caplog.text


def test_a_powerset_checkpoint_is_refused_with_what_to_use_instead(tmp_path):
    import lightning
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    model = PyanNet()
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=5.0,
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    checkpoint["pytorch-lightning_version"] = lightning.__version__
    torch.save(checkpoint, tmp_path / "pytorch_model.bin")

    with pytest.raises(ValueError, match=r"powerset segmentation model .* use the pyannote-pipeline backend"):
        SegmentationModel(PyannoteSegmentationConfig(model_dir=tmp_path, torchscript_cache=tmp_path / "c"))
