"""A TorchScript export of a pyannote segmentation checkpoint, so CPU workers load it without pyannote.

Importing pyannote.audio pulls in Lightning, torchmetrics and transformers: about 7 s and 450 MB per
worker, most of a 2-core run's fixed cost on a few minutes of audio. The model itself is a small
SincNet + LSTM network that traces exactly. The first load of a checkpoint (per machine and torch
version) goes through pyannote once, traces the model, checks the trace against it on windows of
another batch size, and saves the trace with the model's window geometry inside one file in a cache
keyed by the checkpoint's content; every later load reads that file with torch alone.
Imported only where a model is loaded (it imports torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import torch

from annotate.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

_GEOMETRY = "geometry.json"  # extra file inside the export
_TRACE_BATCH, _CHECK_BATCH = 2, 3
_TOLERANCE = 1e-5  # largest difference in probability the trace may show against pyannote's model


@dataclass(frozen=True)
class WindowGeometry:
    """Where a segmentation model's frames fall in its window, in samples at 16 kHz."""

    window_samples: int
    frame_center: int  # centre of the first frame
    frame_step: int
    frames_per_window: int
    local_speakers: int


def default_cache_dir() -> Path:
    """`$STYLECAPS_CACHE`, else `$XDG_CACHE_HOME/stylecaps`, else `~/.cache/stylecaps`; then `torchscript`."""
    if root := os.environ.get("STYLECAPS_CACHE"):
        return Path(root) / "torchscript"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "stylecaps" / "torchscript"


def export_key(folder: Path) -> str:
    """The checkpoint folder's content, with the versions of torch and pyannote.audio that trace it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(path.read_bytes())
    digest.update(f"torch {torch.__version__} pyannote.audio {metadata.version('pyannote.audio')}".encode())
    return digest.hexdigest()[:24]


def load_segmentation(
    folder: Path, cache_dir: Path | None
) -> tuple[torch.nn.Module | torch.jit.ScriptFunction, WindowGeometry]:
    """The CPU model and its geometry: the cached export of `folder`, made now if there is none.

    A trace that differs from pyannote's model is not saved; pyannote's model is used, with a warning."""
    path = (cache_dir or default_cache_dir()) / f"segmentation-{export_key(folder)}.pt"
    if path.is_file():
        extra = {_GEOMETRY: ""}
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return module, WindowGeometry(**json.loads(extra[_GEOMETRY]))
    model, geometry = load_with_pyannote(folder, torch.device("cpu"))
    traced, difference = _trace(model, geometry)
    if difference > _TOLERANCE:
        log.warning(
            "the TorchScript trace of %s differs from pyannote's model by %.2g; using pyannote's model",
            folder,
            difference,
        )
        return model, geometry
    path.parent.mkdir(parents=True, exist_ok=True)
    # Workers may export at once: each writes its own file and renames it into place.
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        traced.save(partial, _extra_files={_GEOMETRY: json.dumps(asdict(geometry))})
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
    log.info("saved a TorchScript export of %s to %s", folder, path)
    return traced, geometry


def load_with_pyannote(folder: Path, device: torch.device) -> tuple[torch.nn.Module, WindowGeometry]:
    """pyannote's own model from the checkpoint folder, and its geometry."""
    from pyannote.audio import Model

    model = Model.from_pretrained(folder)
    if model is None:
        raise ValueError(f"pyannote could not load a segmentation model from {folder}")
    if model.specifications.powerset:
        raise ValueError(
            f"{folder} holds a powerset segmentation model (segmentation-3.x); this backend reads "
            "multi-label models such as pyannote/segmentation; use the pyannote-pipeline backend for 3.x"
        )
    model = model.eval().to(device)
    window_samples = round(model.specifications.duration * SAMPLE_RATE)
    frame_center = model.receptive_field_center(0)
    geometry = WindowGeometry(
        window_samples=window_samples,
        frame_center=frame_center,
        frame_step=model.receptive_field_center(1) - frame_center,
        frames_per_window=model.num_frames(window_samples),
        local_speakers=len(model.specifications.classes),
    )
    return model, geometry


def _trace(model: torch.nn.Module, geometry: WindowGeometry) -> tuple[torch.jit.ScriptFunction, float]:
    """The traced model and its largest difference from `model` on windows it was not traced on.

    The forward is traced as a function of the waveforms alone, its weights recorded as constants:
    tracing the LightningModule itself fails (it asks for the Trainer it is attached to)."""
    generator = torch.Generator().manual_seed(0)
    example = 0.1 * torch.randn(_TRACE_BATCH, 1, geometry.window_samples, generator=generator)
    check = 0.1 * torch.randn(_CHECK_BATCH, 1, geometry.window_samples, generator=generator)
    check[-1, :, geometry.window_samples // 2 :] = 0  # a zero-padded last window, as at a source's end
    model.requires_grad_(False)
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks inside torch's modules become constants of the trace; the check below covers them.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(lambda waveforms: model(waveforms), example, check_trace=False)
        difference = (traced(check) - model(check)).abs().max().item()
    return traced, difference
