"""`stylecaps check`: measure one audio file and hold captions against it, the way a run would.

The file goes through the run's own measure and verify stages (built by `build_stage_specs` from the
same config), as one segment: decoded to 16 kHz mono, stored as 16-bit FLAC like a shard's audio,
measured whole. So a caption gets here the verdict it would get in a run, with the numbers behind it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from annotate.audio import AudioDecodeError, NonFiniteAudioError, encode_flac, read_mono_16k
from annotate.base import Row
from annotate.measure import MEASUREMENT_NAMES
from pipeline.config import RunConfig
from pipeline.stages import build_stage_specs

Granularity = Literal["fine", "global"]


class CheckError(ValueError):
    """The audio cannot be checked (missing, unreadable); the message is one line."""


def measured_row(audio: Path, config: RunConfig, gender: str | None = None) -> Row:
    """The file as one segment row after the measure stage (numbers and tags added)."""
    if not audio.is_file():
        raise CheckError(f"{audio}: no such file")
    try:
        wave = read_mono_16k(audio)
    except (AudioDecodeError, NonFiniteAudioError) as error:
        raise CheckError(f"{audio}: {error}") from None
    row = {"segment_id": audio.stem, "audio": {"bytes": encode_flac(wave), "path": None}, "gender": gender}
    [measured] = _stage(config, "measure")([row])
    return measured


def check_captions(
    audio: Path,
    captions: list[str],
    config: RunConfig,
    gender: str | None = None,
    granularity: Granularity = "fine",
) -> list[dict[str, Any]]:
    """One result per caption: text, passed, failed_checks, reasons, and the measurements used."""
    row = measured_row(audio, config, gender)
    row["captions"] = [{"text": text, "granularity": granularity} for text in captions]
    [verified] = _stage(config, "verify")([row])
    measurements = {name: verified[name] for name in MEASUREMENT_NAMES} | {"tags": verified["tags"]}
    return [
        {
            "audio": str(audio),
            "caption": caption["text"],
            "passed": caption["verdict"]["passed"],
            "failed_checks": caption["verdict"]["failed_checks"],
            "reasons": caption["verdict"]["reasons"],
            "verifier": caption["verdict"]["verifier"],
            "measurements": measurements,
        }
        for caption in verified["captions"]
    ]


def _stage(config: RunConfig, name: str) -> Any:
    [spec] = [spec for spec in build_stage_specs(config) if spec.name == name]
    stage = spec.build()
    stage.setup()
    return stage


def as_json_lines(results: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(result, sort_keys=False) for result in results]


def as_text(results: list[dict[str, Any]]) -> list[str]:
    """Each caption's verdict with its reasons, then the measurements once."""
    lines = []
    for result in results:
        lines.append(f"{'PASSED' if result['passed'] else 'FAILED'}  {result['caption']}")
        lines.extend(
            f"  {check}: {reason}"
            for check, reason in zip(result["failed_checks"], result["reasons"], strict=True)
        )
    if results:
        measurements = results[0]["measurements"]
        lines.append("measurements:")
        lines.append("  tags: " + ", ".join(f"{k}={v}" for k, v in measurements["tags"].items()))
        lines.extend(
            f"  {name}: {'-' if value is None else f'{value:.4g}'}"
            for name, value in measurements.items()
            if name != "tags"
        )
    return lines
