"""Export a trained dual encoder to a self-contained folder, and load it back.

MODEL/
  stylecaps_model.json   model config, tag classes, sample rate, the training data split
  model.safetensors      every weight (pretrained encoders included: the folder needs no wheel)
  text/                  the text encoder's transformers config and tokenizer files
  audio/                 for `hf` audio encoders: its transformers config and feature-extractor settings
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from annotate.audio import SAMPLE_RATE
from train.config import ModelConfig
from train.model import DualEncoder

MODEL_CONFIG = "stylecaps_model.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1
_TEXT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)
_AUDIO_FILES = ("config.json", "preprocessor_config.json")


def _copy_files(source: Path, target: Path, names: tuple[str, ...]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def export_model(model: DualEncoder, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the model folder (replacing an earlier export at `path`)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(temporary / WEIGHTS))
    _copy_files(model.text_encoder.path, temporary / "text", _TEXT_FILES)
    if model.config.audio.kind == "hf":
        assert model.config.audio.path is not None
        _copy_files(Path(model.config.audio.path), temporary / "audio", _AUDIO_FILES)
    description = {
        "format_version": FORMAT_VERSION,
        "sample_rate": SAMPLE_RATE,
        "model": model.config.model_dump(mode="json"),
        "tag_classes": model.tag_classes,
        **(extra or {}),
    }
    (temporary / MODEL_CONFIG).write_text(json.dumps(description, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    temporary.rename(path)
    return path


def read_description(path: str | Path) -> dict[str, Any]:
    file = Path(path) / MODEL_CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{path} holds no {MODEL_CONFIG}: not an exported stylecaps model")
    return json.loads(file.read_text())


def load_model(path: str | Path, device: str | torch.device = "cpu") -> DualEncoder:
    """The exported model in eval mode: `model(audio, audio_lens, text)` → (audio_embeddings,
    text_embeddings, logit_scale), L2-normalised, audio being a padded batch of 16 kHz waveforms."""
    path = Path(path)
    description = read_description(path)
    model = DualEncoder(
        ModelConfig.model_validate(description["model"]),
        description["tag_classes"],
        pretrained=False,
        text_path=path / "text",
        audio_path=path / "audio" if (path / "audio").is_dir() else None,
    )
    model.load_state_dict(load_file(str(path / WEIGHTS)))
    return model.to(device).eval()
