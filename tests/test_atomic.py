"""raysweep.atomic: atomic files and folders, checksums, available memory."""

from __future__ import annotations

import zlib

import pytest

from raysweep import atomic
from raysweep.atomic import (
    atomic_write,
    atomic_write_json,
    available_memory_bytes,
    crc32_file,
    replace_dir,
)


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    atomic_write(path, b"first")
    atomic_write(path, lambda fh: fh.write(b"second"))
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]
    atomic_write_json(tmp_path / "x.json", {"b": float("nan"), "a": 1})
    assert (tmp_path / "x.json").read_text() == '{\n "a": 1,\n "b": NaN\n}\n'


def test_failed_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write(path, b"old")

    def fail(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_replace_dir_swaps_whole_folders(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "a.txt").write_text("a")
    replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_crc32_file_matches_zlib(tmp_path, monkeypatch):
    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    monkeypatch.setattr(atomic, "_CHUNK", 1000)  # several chunks
    assert crc32_file(tmp_path / "f") == zlib.crc32(data)


def test_available_memory_respects_the_cgroup_limit(monkeypatch):
    free = available_memory_bytes()
    assert free > 0
    monkeypatch.setattr(atomic, "_cgroup_room", lambda: 12345)
    assert available_memory_bytes() == 12345
    monkeypatch.setattr(atomic, "_cgroup_room", lambda: None)
    assert abs(available_memory_bytes() - free) < max(free // 2, 2**30)
