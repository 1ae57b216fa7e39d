"""pipeline/files.py: the one atomic writer (replace or create-only) and the temp-path context."""

from __future__ import annotations

import os

import pytest

from pipeline.files import atomic_path, atomic_write, file_md5, write_json


def test_atomic_write_replaces_whole_files_and_leaves_no_temp_behind(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n "a": [\n  1,\n  2\n ],\n "b": 1\n}\n'
    atomic_write(path, "second\n", durable=True)
    assert path.read_text() == "second\n" and os.listdir(path.parent) == ["metrics.json"]
    with pytest.raises(TypeError):  # an unserialisable value fails before anything is written
        write_json(path, {"x": {1, 2}})
    assert path.read_text() == "second\n"


def test_create_only_never_replaces_human_work(tmp_path):
    path = tmp_path / "store" / "a.json"
    atomic_write(path, b"human work", create_only=True, temp_dir=tmp_path / ".tmp")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        atomic_write(path, b"something else", create_only=True, temp_dir=tmp_path / ".tmp")
    assert path.read_bytes() == b"human work"
    assert os.listdir(tmp_path / ".tmp") == [] and os.listdir(path.parent) == ["a.json"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed half-way")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["table.csv"]
    with atomic_path(path) as tmp:
        tmp.write_text("new\n")
    assert path.read_text() == "new\n" and file_md5(path) == "9cd599a3523898e6a12e13ec787da50a"
