"""Expand inputs (files, folders searched recursively, globs, CSV/JSONL manifests) into source rows.

Each source row carries `input_path` (the resolved path, the key a resumed run skips by),
`source_path` (the path as the user gave it), `speaker`, `transcript`, `metadata` (the JSON of a
manifest's other columns) and, when a manifest gives one, `source_id` (else the segment stage uses the
file's content hash). Order is deterministic: inputs in the order given, folder and glob
matches sorted, manifest rows in file order. A path listed twice is reported as DuplicateInput.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from annotate.base import Row
from pipeline.config import SourceSpec
from pipeline.contract import STATUS_FAILED

AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
        ".aiff",
        ".aif",
        ".wma",
        ".webm",
        ".caf",
    }
)
MANIFEST_EXTENSIONS = frozenset({".csv", ".jsonl"})
_RESERVED = {"path", "source_id", "speaker", "transcript", "gender"}
# Spellings of a manifest's `gender` column; anything else is an error naming file, line and key.
_GENDER_WORDS = {
    **dict.fromkeys(("female", "f", "woman"), "female"),
    **dict.fromkeys(("male", "m", "man"), "male"),
}


class SourceError(ValueError):
    """An input that names nothing or a manifest that cannot be read."""


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number in the file, row) of a CSV or JSONL manifest; blank lines are skipped."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            for entry in reader:
                yield reader.line_num, entry
        return
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise SourceError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(entry, dict):
                raise SourceError(f"{path}:{number}: expected a JSON object, got {type(entry).__name__}")
            yield number, entry


def _gender(value: Any, where: str) -> str | None:
    if value in (None, ""):
        return None
    gender = _GENDER_WORDS.get(str(value).strip().lower()) if isinstance(value, str) else None
    if gender is None:
        raise SourceError(f"{where}: 'gender' must be female or male (or f, m), not {value!r}")
    return gender


def _from_manifest(path: Path, spec: SourceSpec) -> Iterator[Row]:
    speaker = spec.speaker
    for number, entry in _manifest_rows(path):
        if not entry.get("path"):
            raise SourceError(f"{path}:{number}: the manifest row has no 'path'")
        given = str(entry["path"])
        resolved = path.parent / given  # relative manifest paths start at the manifest's folder
        yield {
            "input_path": str(resolved.resolve()),
            "source_path": given,
            "source_id": str(entry["source_id"]) if entry.get("source_id") not in (None, "") else None,
            "speaker": entry.get("speaker") or speaker,
            "gender": _gender(entry.get("gender"), f"{path}:{number}") or spec.gender,
            "transcript": entry.get("transcript") or None,
            "metadata": json.dumps(
                {k: v for k, v in entry.items() if k not in _RESERVED and v not in ("", None)}
            ),
        }


def _file_row(path: Path, given: str, spec: SourceSpec) -> Row:
    return {
        "input_path": str(path.resolve()),
        "source_path": given,
        "speaker": spec.speaker,
        "gender": spec.gender,
        "transcript": None,
        "metadata": "{}",
    }


def _expand(spec: SourceSpec) -> Iterator[Row]:
    path = Path(spec.path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        for file in files:
            yield _file_row(file, str(file), spec)
    elif path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
        yield from _from_manifest(path, spec)
    elif path.is_file():
        yield _file_row(path, spec.path, spec)
    elif glob.has_magic(spec.path):
        matches = sorted(Path(m) for m in glob.glob(spec.path, recursive=True))
        files = [m for m in matches if m.is_file() and m.suffix.lower() in AUDIO_EXTENSIONS]
        if not files:
            raise SourceError(f"{spec.path}: the glob matches no audio file")
        for file in files:
            yield _file_row(file, str(file), spec)
    else:
        raise SourceError(f"{spec.path}: no such file, folder or glob match")


def list_sources(specs: list[SourceSpec]) -> list[Row]:
    """All source rows; a repeated path comes back as a failed row (DuplicateInput), not silently dropped."""
    rows: list[Row] = []
    seen: set[str] = set()
    for spec in specs:
        for row in _expand(spec):
            if row["input_path"] in seen:
                row = {
                    **row,
                    "status": STATUS_FAILED,
                    "error_stage": "ingest",
                    "error_type": "DuplicateInput",
                    "error_message": f"{row['source_path']} is listed more than once",
                }
                # The ledger keys by input path; a repeat gets its own key so it is counted once more.
                row["input_path"] = f"{row['input_path']}#repeat{len(rows)}"
            seen.add(row["input_path"])
            rows.append(row)
    return rows
