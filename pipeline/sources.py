"""Expand inputs (files, folders searched recursively, globs, CSV/JSONL manifests) into source rows.

Each source row carries `input_path` (the resolved path, the key a resumed run skips by),
`source_path` (the path as the user gave it), `speaker`, `gender`, `transcript`, `metadata` (the JSON
of a manifest's other columns) and, when a manifest gives one, `source_id` (else the ingest stage uses
the file's content hash). Order is deterministic: inputs in the order given, folder and glob matches
sorted, manifest rows in file order.

A manifest is parsed strictly: a CSV row with the wrong number of fields, bad quoting, or a JSONL value
of the wrong type is an error naming file, line and key, before anything runs. An input that is listed
but is not a readable regular file (a FIFO, socket, device, folder, dangling link, link loop, missing
file, permission denied) becomes a failed row with its reason, found without opening it for reading
(a FIFO would block), and so does a path listed twice (DuplicateInput).
"""

from __future__ import annotations

import csv
import errno
import glob
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from annotate.base import Row, failed_row
from pipeline.config import SourceSpec
from pipeline.errors import UsageError

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


class SourceError(UsageError):
    """An input that names nothing or a manifest that cannot be read."""


# -- is it a readable regular file? ---------------------------------------------------------------------
_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def unreadable(path: Path) -> tuple[str, str] | None:
    """(error type, message) if `path` is not a readable regular file, else None. Never blocks."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return "BrokenLink", f"{path} is a symbolic link to {os.readlink(path)}, which does not exist"
        return "FileNotFound", f"{path} does not exist"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "SymlinkLoop", f"{path} is a loop of symbolic links"
        if error.errno == errno.EACCES:
            return "PermissionDenied", f"{path} cannot be reached: permission denied on a folder of its path"
        return "UnreadableInput", f"{path}: {error.strerror}"
    if not stat.S_ISREG(mode):
        return "NotARegularFile", f"{path} is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}"
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as error:
        if error.errno == errno.EACCES:
            return "PermissionDenied", f"{path} is not readable by this user (permission denied)"
        return "UnreadableInput", f"{path}: {error.strerror}"
    return None


# -- manifests --------------------------------------------------------------------------------------------
def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(first line of the record, row) of a CSV manifest; a row must have as many fields as the header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if not header or not any(header):
                raise SourceError(f"{path}:1: the CSV manifest has no header line")
            duplicated = sorted({name for name in header if header.count(name) > 1})
            if duplicated:
                raise SourceError(f"{path}:1: the header repeats the column '{duplicated[0]}'")
            line = reader.line_num + 1
            for fields in reader:
                if fields:  # a blank line
                    if len(fields) != len(header):
                        raise SourceError(
                            f"{path}:{line}: {len(fields)} fields where the header has {len(header)} "
                            "(quote a value that holds a comma)"
                        )
                    yield line, dict(zip(header, fields, strict=True))
                line = reader.line_num + 1
    except csv.Error as error:
        raise SourceError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with open(path, encoding="utf-8-sig") as handle:
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
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text") from None


def _text(entry: dict[str, Any], key: str, where: str, ids: bool = False) -> str | None:
    """A reserved column's value as text; ids may be JSON integers. Empty means absent."""
    value = entry.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if ids and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    expected = "a string or an integer" if ids else "a string"
    raise SourceError(f"{where}: '{key}' must be {expected}, not {type(value).__name__} ({value!r})")


def _gender(entry: dict[str, Any], where: str) -> str | None:
    value = _text(entry, "gender", where)
    if value is None:
        return None
    gender = _GENDER_WORDS.get(value.strip().lower())
    if gender is None:
        raise SourceError(f"{where}: 'gender' must be female or male (or f, m), not {value!r}")
    return gender


def _from_manifest(path: Path, spec: SourceSpec) -> Iterator[Row]:
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    for number, entry in rows:
        where = f"{path}:{number}"
        given = _text(entry, "path", where)
        if given is None:
            raise SourceError(f"{where}: the manifest row has no 'path'")
        resolved = path.parent / given  # relative manifest paths start at the manifest's folder
        yield _checked(
            {
                "input_path": os.path.realpath(resolved),  # not Path.resolve: it raises on a link loop
                "source_path": given,
                "source_id": _text(entry, "source_id", where, ids=True),
                "speaker": _text(entry, "speaker", where, ids=True) or spec.speaker,
                "gender": _gender(entry, where) or spec.gender,
                "transcript": _text(entry, "transcript", where),
                "metadata": json.dumps(
                    {k: v for k, v in entry.items() if k not in _RESERVED and v not in ("", None)}
                ),
            },
            resolved,
        )


# -- files, folders, globs ------------------------------------------------------------------------------
def _plain_row(path: Path, given: str, spec: SourceSpec) -> Row:
    return {
        "input_path": os.path.realpath(path),  # not Path.resolve: it raises on a link loop
        "source_path": given,
        "speaker": spec.speaker,
        "gender": spec.gender,
        "transcript": None,
        "metadata": "{}",
    }


def _file_row(path: Path, given: str, spec: SourceSpec) -> Row:
    return _checked(_plain_row(path, given, spec), path)


def _checked(row: Row, path: Path) -> Row:
    problem = unreadable(path)
    if problem is None:
        return row
    error_type, message = problem
    return failed_row(row, "ingest", message, error_type)


def _walk(root: Path) -> Iterator[tuple[Path, str | None]]:
    """(path, None) of every audio-named entry under `root` that is not a folder, and (folder, reason)
    of every folder that cannot be listed. Linked folders are followed once (a link cycle ends)."""
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            identity = (folder.stat().st_dev, folder.stat().st_ino)
            if identity in seen:
                continue
            seen.add(identity)
            entries = list(os.scandir(folder))
        except OSError as error:
            yield folder, error.strerror or str(error)
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                is_folder = entry.is_dir()  # follows links
            except OSError:
                is_folder = False
            if is_folder:
                pending.append(path)
            elif path.suffix.lower() in AUDIO_EXTENSIONS:
                yield path, None


def _from_folder(root: Path, spec: SourceSpec) -> Iterator[Row]:
    for path, folder_error in sorted(_walk(root), key=lambda found: str(found[0])):
        if folder_error is None:
            yield _file_row(path, str(path), spec)
        else:
            message = f"cannot list folder {path}: {folder_error}"
            yield failed_row(_plain_row(path, str(path), spec), "ingest", message, "UnreadableFolder")


def _expand(spec: SourceSpec) -> Iterator[Row]:
    path = Path(spec.path)
    # os.path's tests answer False where pathlib's raise (permission denied on a folder of the path).
    if os.path.isdir(path):
        yield from _from_folder(path, spec)
    elif os.path.isfile(path) and path.suffix.lower() in MANIFEST_EXTENSIONS:
        yield from _from_manifest(path, spec)
    elif _names_something(path):
        yield _file_row(path, spec.path, spec)  # a named entry that is no readable file fails as one input
    elif glob.has_magic(spec.path):
        matches = sorted(Path(m) for m in glob.glob(spec.path, recursive=True))
        files = [m for m in matches if not os.path.isdir(m) and m.suffix.lower() in AUDIO_EXTENSIONS]
        if not files:
            raise SourceError(f"{spec.path}: the glob matches no audio file")
        for file in files:
            yield _file_row(file, str(file), spec)
    else:
        raise SourceError(f"{spec.path}: no such file, folder or glob match")


def _names_something(path: Path) -> bool:
    """Whether the path exists as an entry (a dangling link or an unreachable file counts)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:  # permission denied on a folder of the path, a name too long ...: say so per input
        return True
    return True


def list_sources(specs: list[SourceSpec]) -> list[Row]:
    """All source rows; a repeated path comes back as a failed row (DuplicateInput), not silently dropped."""
    rows: list[Row] = []
    seen: set[str] = set()
    for spec in specs:
        for row in _expand(spec):
            if row["input_path"] in seen:
                message = f"{row['source_path']} is listed more than once"
                row = failed_row(row, "ingest", message, "DuplicateInput")
                # The ledger keys by input path; a repeat gets its own key so it is counted once more.
                row["input_path"] = f"{row['input_path']}#repeat{len(rows)}"
            seen.add(row["input_path"])
            rows.append(row)
    return rows
