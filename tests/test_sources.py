"""Input listing: files, recursive folders, globs, CSV/JSONL manifests, duplicates and bad inputs."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from pipeline.config import SourceSpec
from pipeline.sources import SourceError, list_sources


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")  # listing never opens the files
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "audio"
    for name in ("b.wav", "a.flac", "sub/c.mp3", "sub/deeper/d.WAV", "sub/deeper/e.m4a", "z/f.ogg"):
        touch(root / name)
    for name in ("notes.txt", "sub/cover.jpg", "sub/deeper/labels.csv", "z/readme"):
        touch(root / name)
    return root


def test_folder_is_searched_recursively_for_audio_only_in_sorted_order(tree):
    rows = list_sources([SourceSpec(path=str(tree), speaker="alice")])
    expected = ["a.flac", "b.wav", "sub/c.mp3", "sub/deeper/d.WAV", "sub/deeper/e.m4a", "z/f.ogg"]
    assert [row["input_path"] for row in rows] == [str((tree / name).resolve()) for name in expected]
    assert [row["source_path"] for row in rows] == [str(tree / name) for name in expected]
    for row in rows:
        assert row["speaker"] == "alice" and row["transcript"] is None and row["metadata"] == "{}"
        assert "status" not in row


def test_relative_folder_gives_absolute_input_paths(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    rows = list_sources([SourceSpec(path="audio/sub")])
    assert [row["source_path"] for row in rows] == [
        "audio/sub/c.mp3",
        "audio/sub/deeper/d.WAV",
        "audio/sub/deeper/e.m4a",
    ]
    assert all(Path(row["input_path"]).is_absolute() for row in rows)
    assert rows[0]["input_path"] == str((tree / "sub" / "c.mp3").resolve())


def test_recursive_glob_matches_audio_at_every_depth(tree):
    rows = list_sources([SourceSpec(path=f"{tree}/**/*.wav")])
    assert [Path(row["input_path"]).relative_to(tree.resolve()).as_posix() for row in rows] == ["b.wav"]
    rows = list_sources([SourceSpec(path=f"{tree}/**/*.*")])
    names = [Path(row["input_path"]).name for row in rows]
    assert names == ["a.flac", "b.wav", "c.mp3", "d.WAV", "e.m4a", "f.ogg"]
    rows = list_sources([SourceSpec(path=f"{tree}/sub/*/*")])
    assert [Path(row["input_path"]).name for row in rows] == ["d.WAV", "e.m4a"]


def test_glob_without_audio_matches_is_an_error(tree):
    with pytest.raises(SourceError, match=r"\*\*/\*\.txt: the glob matches no audio file"):
        list_sources([SourceSpec(path=f"{tree}/**/*.txt")])


def test_single_file_keeps_the_path_as_given(tree, monkeypatch):
    monkeypatch.chdir(tree)
    [row] = list_sources([SourceSpec(path="sub/c.mp3", speaker="bob")])
    assert row == {
        "input_path": str((tree / "sub" / "c.mp3").resolve()),
        "source_path": "sub/c.mp3",
        "speaker": "bob",
        "gender": None,
        "transcript": None,
        "metadata": "{}",
    }


def test_csv_manifest_keeps_extra_columns_as_metadata(tmp_path):
    touch(tmp_path / "clips" / "one.wav")
    touch(tmp_path / "clips" / "two.flac")
    manifest = tmp_path / "labels.csv"
    manifest.write_text(
        "path,speaker,transcript,gender,session,note\n"
        f"{tmp_path}/clips/one.wav,spk1,Hello there.,female,3,\n"
        f"{tmp_path}/clips/two.flac,,,male,4,retake\n"
    )
    rows = list_sources([SourceSpec(path=str(manifest), speaker="fallback")])
    assert [row["input_path"] for row in rows] == [
        str((tmp_path / "clips" / "one.wav").resolve()),
        str((tmp_path / "clips" / "two.flac").resolve()),
    ]
    assert [row["speaker"] for row in rows] == ["spk1", "fallback"]
    assert [row["transcript"] for row in rows] == ["Hello there.", None]
    assert [row["gender"] for row in rows] == ["female", "male"]
    assert json.loads(rows[0]["metadata"]) == {"session": "3"}
    assert json.loads(rows[1]["metadata"]) == {"session": "4", "note": "retake"}
    assert rows[0]["source_path"] == f"{tmp_path}/clips/one.wav"


def test_jsonl_manifest_resolves_relative_paths_against_its_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    touch(data / "clips" / "x.wav")
    touch(tmp_path / "abs" / "y.flac")
    manifest = data / "manifest.jsonl"
    manifest.write_text(
        json.dumps({"path": "clips/x.wav", "speaker": "s1", "transcript": "hi", "age": 41, "tags": ["a"]})
        + "\n\n"
        + json.dumps({"path": str(tmp_path / "abs" / "y.flac"), "source_id": "take-7", "extra": None})
        + "\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rows = list_sources([SourceSpec(path=str(manifest))])
    assert [row["input_path"] for row in rows] == [
        str((data / "clips" / "x.wav").resolve()),
        str((tmp_path / "abs" / "y.flac").resolve()),
    ]
    assert rows[0]["source_path"] == "clips/x.wav"
    assert (rows[0]["speaker"], rows[0]["transcript"]) == ("s1", "hi")
    assert json.loads(rows[0]["metadata"]) == {"age": 41, "tags": ["a"]}
    assert json.loads(rows[1]["metadata"]) == {}  # reserved and empty columns are left out
    assert rows[1]["speaker"] is None and rows[1]["transcript"] is None
    assert (rows[0]["source_id"], rows[1]["source_id"]) == (None, "take-7")  # given ids are kept


def test_relative_manifest_path_ignores_a_same_named_file_in_the_working_directory(tmp_path, monkeypatch):
    touch(tmp_path / "data" / "clip.wav")
    touch(tmp_path / "cwd" / "clip.wav")
    (tmp_path / "data" / "m.jsonl").write_text('{"path": "clip.wav"}\n')
    monkeypatch.chdir(tmp_path / "cwd")
    [row] = list_sources([SourceSpec(path=str(tmp_path / "data" / "m.jsonl"))])
    assert row["input_path"] == str((tmp_path / "data" / "clip.wav").resolve())
    assert row["source_path"] == "clip.wav"


def test_repeated_input_is_a_failed_duplicate_row_with_its_own_key(tree):
    file = tree / "b.wav"
    rows = list_sources([SourceSpec(path=str(file)), SourceSpec(path=str(tree))])
    assert len(rows) == 7
    first, repeat = rows[0], rows[2]  # the folder lists a.flac, then b.wav again
    assert first["input_path"] == str(file.resolve()) and "status" not in first
    assert repeat["status"] == "failed"
    assert repeat["error_type"] == "DuplicateInput" and repeat["error_stage"] == "ingest"
    assert repeat["error_message"] == f"{tree / 'b.wav'} is listed more than once"
    assert repeat["input_path"] != first["input_path"] and repeat["input_path"].startswith(
        first["input_path"]
    )
    assert len({row["input_path"] for row in rows}) == len(rows)
    assert sum(row.get("status") == "failed" for row in rows) == 1


def test_a_path_given_three_times_gives_two_distinct_duplicates(tree):
    spec = SourceSpec(path=str(tree / "a.flac"))
    rows = list_sources([spec, spec, spec])
    assert [row.get("error_type") for row in rows] == [None, "DuplicateInput", "DuplicateInput"]
    assert len({row["input_path"] for row in rows}) == 3


def test_inputs_keep_the_order_given_across_kinds(tree, tmp_path):
    touch(tmp_path / "m" / "k.wav")
    (tmp_path / "m" / "list.jsonl").write_text('{"path": "k.wav"}\n')
    rows = list_sources(
        [
            SourceSpec(path=str(tree / "z")),
            SourceSpec(path=str(tmp_path / "m" / "list.jsonl")),
            SourceSpec(path=f"{tree}/sub/*.mp3"),
        ]
    )
    assert [Path(row["input_path"]).name for row in rows] == ["f.ogg", "k.wav", "c.mp3"]


def test_missing_path_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "clip.wav"
    with pytest.raises(SourceError) as caught:
        list_sources([SourceSpec(path=str(missing))])
    assert str(caught.value) == f"{missing}: no such file, folder or glob match"


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("m.csv", "path,speaker\na.wav,x\n,y\n", 3),
        ("m.jsonl", '{"path": "a.wav"}\n{"speaker": "y"}\n', 2),
        ("m.jsonl", '{"path": "a.wav"}\n{"path": ""}\n', 2),
        # Blank lines count: the number is the file's line, not the row's.
        ("m.jsonl", '{"path": "a.wav"}\n\n{"speaker": "y"}\n', 3),
        ("m.csv", "path,speaker\na.wav,x\n\n,y\n", 4),
    ],
)
def test_manifest_row_without_path_names_file_and_line(tmp_path, name, text, line):
    touch(tmp_path / "a.wav")
    manifest = tmp_path / name
    manifest.write_text(text)
    with pytest.raises(SourceError) as caught:
        list_sources([SourceSpec(path=str(manifest))])
    assert str(caught.value) == f"{manifest}:{line}: the manifest row has no 'path'"


def test_invalid_json_line_names_file_and_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a.wav"}\n{"path": "b.wav",\n')
    with pytest.raises(SourceError, match=r"m\.jsonl:2: not valid JSON"):
        list_sources([SourceSpec(path=str(manifest))])


def test_jsonl_line_that_is_not_an_object_is_a_source_error(tmp_path):
    touch(tmp_path / "a.wav")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a.wav"}\n"b.wav"\n')
    with pytest.raises(SourceError, match=r"m\.jsonl:2"):
        list_sources([SourceSpec(path=str(manifest))])


@pytest.mark.parametrize("value", ["x", "unknown", "2"])
def test_a_manifest_gender_that_is_neither_female_nor_male_names_file_line_and_key(tmp_path, value):
    touch(tmp_path / "one.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,gender\none.wav,F\none.wav,{value}\n")
    with pytest.raises(SourceError, match=rf"m\.csv:3: 'gender' must be female or male .*'{value}'"):
        list_sources([SourceSpec(path=str(manifest))])


def test_a_source_spec_gender_applies_where_the_manifest_gives_none(tmp_path):
    touch(tmp_path / "one.wav")
    touch(tmp_path / "two.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,gender\none.wav,m\ntwo.wav,\n")
    rows = list_sources([SourceSpec(path=str(manifest), gender="female")])
    assert [row["gender"] for row in rows] == ["male", "female"]


def test_a_csv_row_with_an_unquoted_comma_is_an_error_naming_file_and_line(tmp_path):
    touch(tmp_path / "one.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,speaker,transcript\n"
        'one.wav,ann,"Hello, world."\n'  # quoted: fine
        "one.wav,bob,Hello, world.\n"  # unquoted: one field too many
    )
    with pytest.raises(SourceError, match=r"m\.csv:3: 4 fields where the header has 3 \(quote a value"):
        list_sources([SourceSpec(path=str(manifest))])


def test_a_csv_row_with_too_few_fields_is_an_error_too(tmp_path):
    touch(tmp_path / "one.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,speaker,transcript\none.wav,ann\n")
    with pytest.raises(SourceError, match=r"m\.csv:2: 2 fields where the header has 3"):
        list_sources([SourceSpec(path=str(manifest))])


def test_csv_line_numbers_count_the_lines_of_multiline_quoted_fields(tmp_path):
    touch(tmp_path / "one.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,transcript\none.wav,"two\nlines"\n\none.wav,a,b\n')
    with pytest.raises(SourceError, match=r"m\.csv:5: 3 fields"):
        list_sources([SourceSpec(path=str(manifest))])


def test_a_csv_with_a_broken_quote_is_an_error_naming_the_file(tmp_path):
    touch(tmp_path / "one.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,transcript\none.wav,"an "odd" quote\n')
    with pytest.raises(SourceError, match=r"m\.csv:\d+: not valid CSV"):
        list_sources([SourceSpec(path=str(manifest))])


@pytest.mark.parametrize(
    ("entry", "key", "expected"),
    [
        ({"path": "one.wav", "speaker": ["a", "b"]}, "speaker", "a string or an integer, not list"),
        ({"path": "one.wav", "speaker": 1.5}, "speaker", "a string or an integer, not float"),
        ({"path": "one.wav", "source_id": True}, "source_id", "a string or an integer, not bool"),
        ({"path": 7}, "path", "a string, not int"),
        ({"path": "one.wav", "transcript": {"text": "hi"}}, "transcript", "a string, not dict"),
        ({"path": "one.wav", "gender": 1}, "gender", "a string, not int"),
    ],
)
def test_a_jsonl_value_of_the_wrong_type_names_file_line_and_key(tmp_path, entry, key, expected):
    touch(tmp_path / "one.wav")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "one.wav"}) + "\n" + json.dumps(entry) + "\n")
    with pytest.raises(SourceError, match=rf"m\.jsonl:2: '{key}' must be {expected}"):
        list_sources([SourceSpec(path=str(manifest))])


def test_integer_speaker_and_source_ids_in_jsonl_become_their_decimal_text(tmp_path):
    touch(tmp_path / "one.wav")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "one.wav", "speaker": 12, "source_id": 7}) + "\n")
    [row] = list_sources([SourceSpec(path=str(manifest))])
    assert (row["speaker"], row["source_id"]) == ("12", "7")


def _special_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "fifo": folder / "fifo.wav",
        "dangling": folder / "dangling.wav",
        "loop": folder / "loop.wav",
        "socket": folder / "socket.wav",
        "folder": folder / "folder.wav",
    }
    os.mkfifo(paths["fifo"])
    paths["dangling"].symlink_to(folder / "gone.wav")
    paths["loop"].symlink_to(paths["loop"])
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(paths["socket"]))
    server.close()
    paths["folder"].mkdir()
    return paths


EXPECTED_FAILURES = {
    "fifo": ("NotARegularFile", "is a FIFO (named pipe)"),
    "dangling": ("BrokenLink", "is a symbolic link to"),
    "loop": ("SymlinkLoop", "is a loop of symbolic links"),
    "socket": ("NotARegularFile", "is a socket"),
    "folder": ("NotARegularFile", "is a folder"),
}


def test_manifest_entries_that_are_not_readable_regular_files_become_failed_rows_without_blocking(tmp_path):
    paths = _special_files(tmp_path / "odd")
    touch(tmp_path / "odd" / "good.wav")
    manifest = tmp_path / "m.jsonl"
    names = ["good.wav", *(p.name for p in paths.values()), "missing.wav"]
    manifest.write_text("".join(json.dumps({"path": f"odd/{name}"}) + "\n" for name in names))
    rows = {Path(row["source_path"]).name: row for row in list_sources([SourceSpec(path=str(manifest))])}
    assert "status" not in rows["good.wav"]
    expected = {**EXPECTED_FAILURES, "missing": ("FileNotFound", "does not exist")}
    for kind, (error_type, message) in expected.items():
        row = rows[f"{kind}.wav"]
        assert row["status"] == "failed" and row["error_stage"] == "ingest", kind
        assert row["error_type"] == error_type and message in row["error_message"], kind


def test_audio_named_entries_of_a_folder_that_are_not_regular_files_become_failed_rows(tmp_path):
    paths = _special_files(tmp_path / "tree" / "sub")
    touch(tmp_path / "tree" / "good.wav")
    touch(paths["folder"] / "inside.flac")  # a folder named *.wav is searched, not failed
    listed = list_sources([SourceSpec(path=str(tmp_path / "tree"))])
    rows = {Path(row["source_path"]).name: row for row in listed}
    assert "status" not in rows["good.wav"] and "status" not in rows["inside.flac"]
    for kind in ("fifo", "dangling", "loop", "socket"):
        assert rows[f"{kind}.wav"]["error_type"] == EXPECTED_FAILURES[kind][0], kind
    assert "folder.wav" not in rows


def test_a_folder_linked_into_itself_is_searched_once(tmp_path):
    touch(tmp_path / "tree" / "a.wav")
    (tmp_path / "tree" / "again").symlink_to(tmp_path / "tree")
    rows = list_sources([SourceSpec(path=str(tmp_path / "tree"))])
    assert [Path(row["input_path"]).name for row in rows] == ["a.wav"]


@pytest.fixture
def public_folder():
    """A folder every user may enter (pytest's own temporary folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="stylecaps-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def as_nobody(function):
    """Run `function()` in a forked child as user 'nobody' (root reads everything); return its JSON."""
    nobody = pwd.getpwnam("nobody")
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(writer, json.dumps(function()).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        output = pipe.read()
    os.waitpid(child, 0)
    return json.loads(output)


def test_a_file_the_user_cannot_read_is_a_permission_denied_row(public_folder):
    locked = public_folder / "locked.wav"
    locked.write_bytes(b"RIFF")
    locked.chmod(0o000)
    [row] = as_nobody(lambda: list_sources([SourceSpec(path=str(locked))]))
    assert row["error_type"] == "PermissionDenied" and "not readable" in row["error_message"]


def test_a_file_in_a_folder_the_user_cannot_enter_is_a_permission_denied_row(public_folder):
    closed = public_folder / "closed"
    closed.mkdir(mode=0o700)
    (closed / "inside.wav").write_bytes(b"RIFF")
    [row] = as_nobody(lambda: list_sources([SourceSpec(path=str(closed / "inside.wav"))]))
    assert row["error_type"] == "PermissionDenied" and "permission denied on a folder" in row["error_message"]
