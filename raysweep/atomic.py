"""Writing files and folders so that a crash leaves the old version or the new one, never a mix.

Every file raysweep writes into a results folder goes through :func:`atomic_write` (or its
``_text`` / ``_json`` forms): the bytes go to a hidden temporary file with a unique name in
the same folder, which is flushed and ``fsync``\\ ed, renamed over the target with
``os.replace`` (atomic on POSIX, and on NFS for a rename inside one folder), and then the
folder itself is ``fsync``\\ ed so the rename survives a power loss. Two writers of one file
never share a temporary name, so the last rename wins with a complete file.

Folders (an eigenfunction artifact, a cache of trained states) are built under a temporary
name and moved into place by :func:`replace_dir`.

:func:`crc32_file` is the checksum stored beside tiles and inside artifacts (zlib's CRC-32,
read in chunks).

:func:`unwritable_reason` says, before any work, why files could not be created in a folder
(or where it would be created): it tries, since permission bits say nothing when running as
root and nothing about read-only mounts.

:func:`available_memory_bytes` is how much memory this process may still use: the smaller of
Linux's ``MemAvailable`` and what the cgroup limit leaves (containers, Ray workers with a
memory limit).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "available_memory_bytes",
    "crc32_file",
    "fsync_dir",
    "replace_dir",
    "temp_name",
    "unwritable_reason",
]

_CHUNK = 8 * 2**20


def temp_name(path: str | os.PathLike) -> Path:
    """A unique hidden temporary path next to ``path`` (``.<name>.<pid>.<random>.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def fsync_dir(folder: str | os.PathLike) -> None:
    """``fsync`` a folder so a rename inside it is durable (no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[IO[bytes]], Any]) -> Path:
    """Replace ``path`` with ``data`` (bytes, or ``data(fh)`` writing to a binary file) atomically.

    The parent folder is created if needed. On any error the temporary file is removed and
    ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any, *, indent: int = 1) -> Path:
    """:func:`atomic_write` of ``payload`` as JSON (sorted keys, NaN allowed, final newline)."""
    return atomic_write_text(path, json.dumps(payload, indent=indent, sort_keys=True) + "\n")


def replace_dir(tmp_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the finished folder ``tmp_dir`` to ``path``, replacing what was there.

    The files of ``tmp_dir`` are fsynced first. An existing ``path`` is renamed aside before
    ``tmp_dir`` takes its place and removed afterwards, so at every moment ``path`` is either
    the old folder, absent for the instant between two renames, or the new one; never a mix.
    """
    tmp_dir, path = Path(tmp_dir), Path(path)
    for child in tmp_dir.rglob("*"):
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(tmp_dir)
    old = None
    if path.exists():
        old = temp_name(path)
        os.replace(path, old)
    os.replace(tmp_dir, path)
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def unwritable_reason(path: str | os.PathLike) -> str | None:
    """Why files cannot be created in the folder ``path``, or ``None`` when they can.

    When ``path`` does not exist yet, its nearest existing ancestor is tried (that is where
    ``mkdir(parents=True)`` would create it); nothing is created there. The test creates and
    removes one hidden file, so it holds for root, read-only mounts and immutable folders,
    where ``os.access`` would say yes.

    Returns:
      ``None``, or a phrase such as ``"/r is a file, not a folder"`` or
      ``"cannot create files in /r (Permission denied)"``.
    """
    folder = Path(path).absolute()
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    probe = temp_name(folder / "write-test")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as err:
        return f"cannot create files in {folder} ({err.strerror or err})"
    os.close(fd)
    probe.unlink(missing_ok=True)
    return None


def crc32_file(path: str | os.PathLike) -> int:
    """zlib's CRC-32 of a file's bytes (read in 8 MiB chunks)."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _cgroup_room() -> int | None:
    """Bytes the cgroup (v2, else v1) limit still leaves this process, or None if unlimited."""
    pairs = (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    )
    for limit_file, usage_file in pairs:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(int(limit) - usage, 0)
    return None


def available_memory_bytes() -> int:
    """Memory this process can still use: ``min(MemAvailable, cgroup limit − usage)``.

    Falls back to free pages (``sysconf``) without ``/proc/meminfo``, and to 4 GiB where
    neither is known.
    """
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            avail = 4 * 2**30
    room = _cgroup_room()
    return avail if room is None else min(avail, room)
