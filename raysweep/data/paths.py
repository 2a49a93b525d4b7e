"""Where dataset files are looked for, and the error raised when they are not there.

Nothing in :mod:`raysweep.data` ever downloads anything. The data root is resolved as:

1. the ``root`` argument of :func:`raysweep.data.load_dataset`, if given;
2. else the environment variable ``RAYSWEEP_DATA`` (:data:`DATA_ENV_VAR`), if set and non-empty;
3. else :data:`DEFAULT_DATA_DIR` (``~/.cache/raysweep/data``).

A leading ``~`` is expanded in all three. For a dataset ``<name>`` the loaders then search
``root`` itself and ``root/<name>`` (see :func:`search_dirs`), in that order; each loader documents
which files it expects inside a searched folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DATA_ENV_VAR = "RAYSWEEP_DATA"
"""Environment variable naming the data root when no ``root`` argument is given."""

DEFAULT_DATA_DIR = Path("~/.cache/raysweep/data")
"""Data root used when neither a ``root`` argument nor ``RAYSWEEP_DATA`` is given (``~`` is
expanded at resolution time, not import time)."""


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root as an absolute path (it need not exist).

    Args:
        root: explicit folder, or ``None`` to fall back on ``$RAYSWEEP_DATA`` and then
            :data:`DEFAULT_DATA_DIR`.

    Raises:
        TypeError: ``root`` is neither ``None``, a ``str`` nor an ``os.PathLike``.
    """
    if root is None:
        env = os.environ.get(DATA_ENV_VAR, "").strip()
        chosen: str | os.PathLike[str] = env if env else DEFAULT_DATA_DIR
    elif isinstance(root, str | os.PathLike):
        chosen = root
    else:
        raise TypeError(
            f"root must be a str, an os.PathLike or None, got {type(root).__name__} ({root!r}); "
            f"pass the folder holding the dataset files, or leave it None to use "
            f"${DATA_ENV_VAR} or {DEFAULT_DATA_DIR}."
        )
    return Path(os.fspath(chosen)).expanduser().absolute()


def search_dirs(root: Path, subdirs: Sequence[str]) -> list[Path]:
    """Folders a loader searches, in order: ``root`` then ``root/<subdir>`` for each subdir."""
    dirs = [root]
    for sub in subdirs:
        candidate = root / sub
        if candidate not in dirs:
            dirs.append(candidate)
    return dirs


def missing_data_error(
    dataset: str,
    expected: Sequence[str],
    searched: Sequence[Path],
    origin: str,
    *,
    details: Sequence[str] = (),
) -> FileNotFoundError:
    """Build the single, self-explaining error raised when a dataset's files are absent.

    Args:
        dataset: human name, e.g. ``"CIFAR-10"``.
        expected: the exact file or folder names a searched folder must contain (alternatives
            already spelled out by the caller, e.g. ``"cifar-10-python.tar.gz"``).
        searched: the folders searched, in order.
        origin: where the official files come from (URL plus any hint).
        details: optional extra lines (e.g. which files of an incomplete set were found).

    Returns:
        A ``FileNotFoundError`` (to be raised by the caller) whose message, one line, names the
        expected files, the folders searched, how to point the loader at a folder, and where
        to get the files. Nothing is downloaded automatically.
    """
    lines = [f"{dataset} files not found. Expected: {', '.join(expected)}."]
    lines.append("Searched: " + ", ".join(_describe_dir(d) for d in searched) + ".")
    lines.extend(details)
    lines.append(
        f"Set the data folder with --data-dir PATH, data.root=PATH, load_dataset(..., root=PATH) "
        f"or the environment variable {DATA_ENV_VAR}=PATH (default {DEFAULT_DATA_DIR}); the "
        f"files may sit in PATH itself or in one of the subfolders searched above."
    )
    lines.append(f"Nothing is downloaded automatically; get the official files from {origin}.")
    return FileNotFoundError(" ".join(lines))


def _describe_dir(folder: Path) -> str:
    if folder.is_dir():
        return str(folder)
    if folder.exists():
        return f"{folder} (not a folder)"
    return f"{folder} (missing)"


def data_dir_overrides(data_dir: str | None) -> list[str]:
    """The config override a script's ``--data-dir`` stands for (none when not given).

    Raises:
      ValueError: ``--data-dir`` was given empty.
    """
    if data_dir is None:
        return []
    if not data_dir.strip():
        raise ValueError(
            "--data-dir is empty; give the folder holding the dataset files, or drop it "
            "to use $RAYSWEEP_DATA."
        )
    return [f"data.root={data_dir}"]
