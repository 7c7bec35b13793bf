"""One environment holds vLLM and the front-end libraries: they import together, and the fixes hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_vllm_and_the_frontend_libraries_import_in_one_process():
    code = (
        "import torchaudio, torchvision, torchcodec.decoders, vllm, pyannote.audio, demucs.pretrained,"
        " resemblyzer, faster_whisper, ray.data, datasets;"
        " import vllm.model_executor.models.qwen3_omni_moe_thinker;"
        " print(vllm.__version__, torchaudio.__version__, torchvision.__version__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # torchaudio and torchvision are PyPI's CUDA builds (+cu130), running their pure-Python paths.
    vllm_version, torchaudio_version, torchvision_version = result.stdout.split()[-3:]
    assert vllm_version == "0.32.0"
    assert torchaudio_version.split("+")[0] == "2.11.0"
    assert torchvision_version.split("+")[0] == "0.28.0"


def test_cpu_wheel_fixes_are_in_place_and_rerunning_them_changes_nothing():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fix_cpu_wheels.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # every fix already applied: nothing deleted, patched or reinstalled


def test_engine_start_scan_survives_llvmlite_imported_first():
    # numba's llvmlite (imported by librosa, resemblyzer ...) once crashed every in-process engine start.
    code = (
        "import llvmlite.binding;"
        " from vllm.triton_utils.dispatcher import _rebind_kernels;"
        " _rebind_kernels([])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
