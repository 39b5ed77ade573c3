"""ibsr.files: a target is either its old content or the whole new one, never half; an error
leaves the old file and no temporary file behind."""

from __future__ import annotations

import os
import stat

import pytest

import ibsr.files as files
from ibsr.files import atomic_path, atomic_write


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_str_and_bytes(tmp_path):
    assert atomic_write(tmp_path / "a.json", '{"é": 1}') == tmp_path / "a.json"
    assert (tmp_path / "a.json").read_bytes() == '{"é": 1}'.encode("utf-8")
    atomic_write(str(tmp_path / "b.bin"), b"\x00\xff" * 1000)  # a str path too
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff" * 1000
    assert names(tmp_path) == ["a.json", "b.bin"]  # no temporary file left


def test_replaces_an_existing_file(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old, and longer than the new")
    atomic_write(target, "new")
    assert target.read_text() == "new" and names(tmp_path) == ["t.txt"]


def test_the_target_is_complete_or_absent_while_writing(tmp_path):
    target = tmp_path / "t.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_file() and tmp.stat().st_size == 0
        with open(tmp, "wb") as f:
            f.write(b"half")
            f.flush()
            assert not target.exists()  # a reader finds nothing rather than half a file
    assert target.read_bytes() == b"half" and not tmp.exists()

    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new ")
        assert target.read_bytes() == b"half"  # the old content until the block ends
        tmp.write_bytes(b"new content")
    assert target.read_bytes() == b"new content" and names(tmp_path) == ["t.bin"]


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()])
def test_an_exception_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, error):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(type(error)) as raised:
        with atomic_path(target) as tmp:
            tmp.write_text("half of the n")
            raise error
    assert raised.value is error  # the same exception, unchanged
    assert target.read_text() == "old" and names(tmp_path) == ["t.txt"]


def test_an_exception_without_an_old_file_leaves_nothing(tmp_path):
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "t.txt") as tmp:
            tmp.write_text("x")
            raise OSError(28, "No space left on device")
    assert names(tmp_path) == []


def test_a_failed_replace_removes_the_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()  # a folder where the file should go: os.replace fails
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "taken", "x")
    assert names(tmp_path) == ["taken"] and names(tmp_path / "taken") == []


def test_parents(tmp_path):
    atomic_write(tmp_path / "new" / "deeper" / "t.txt", "x")  # created by default
    assert (tmp_path / "new" / "deeper" / "t.txt").read_text() == "x"
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "t.txt", "x", parents=False)
    assert not (tmp_path / "missing").exists()


def test_temporary_names(tmp_path):
    target = tmp_path / "shape_ids.json"
    with atomic_path(target) as a, atomic_path(target, prefix="shape_ids.json.", suffix=".part") as b:
        assert a.name.startswith(".shape_ids.json.") and a.name.endswith(".tmp")
        assert b.name.startswith("shape_ids.json.") and b.name.endswith(".part")
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # two writers never share a temporary file: the last to finish wins
    assert names(tmp_path) == ["shape_ids.json"]


def test_mode(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "default", "x")
        atomic_write(tmp_path / "shared", "x", mode=0o644)
        atomic_write(tmp_path / "private", "x", mode=0o600)
    finally:
        os.umask(old)
    mode = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("default", "shared", "private")}
    assert mode == {"default": 0o600, "shared": 0o644, "private": 0o600}  # default: as open() under the umask
    atomic_write(tmp_path / "umask", "x")
    assert stat.S_IMODE((tmp_path / "umask").stat().st_mode) == 0o666 & ~old


def test_fsync_comes_before_the_replace(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "plain", "x")
    assert calls == ["replace"]
    calls.clear()
    atomic_write(tmp_path / "synced", "x", fsync=True)
    assert calls == ["fsync", "replace"]
