"""CIFAR-10 from the official python archive, read locally (never downloaded).

Accepted on disk, searched in ``root`` then ``root/cifar10`` (see :mod:`raysweep.data.paths`):

- the archive ``cifar-10-python.tar.gz`` (read in memory, nothing is extracted to disk), or
- its extracted folder ``cifar-10-batches-py/`` holding ``data_batch_1`` ... ``data_batch_5``
  and ``test_batch``.

``root`` may also be that folder itself or the archive file itself.

In each searched folder a complete extracted folder is preferred over the archive. Each batch is
a pickle (protocol 2, written by Python 2) of a dict with ``b"data"``: ``uint8 (n, 3072)`` rows
holding one channel-first ``(3, 32, 32)`` image each (all red, then green, then blue, each
row-major), and ``b"labels"``: a list of ``n`` ints in ``[0, 10)``. Pickles are loaded with
``encoding="bytes"`` through an unpickler that only resolves the few numpy globals an array
needs, so a tampered archive cannot run code.

The result is the official split: 50,000 train images (batches 1-5 in order) and 10,000 test
images, as ``uint8`` NHWC ``(n, 32, 32, 3)``: ``x[i, h, w, c] == data[i, c * 1024 + h * 32 + w]``.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from raysweep.data.paths import missing_data_error, search_dirs
from raysweep.data.preprocess import RawSplit

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCH_FILES = (*TRAIN_BATCHES, TEST_BATCH)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE_CHW = (3, 32, 32)
_ROW_SIZE = int(np.prod(IMAGE_SHAPE_CHW))

# Globals a pickled numpy array may reference (numpy 1.x and 2.x names, protocols 2-5).
_ALLOWED_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError)


def locate_cifar10(root: Path) -> Path:
    """Return the extracted batches folder or the archive to read, searching ``root`` then
    ``root/cifar10`` (``root`` may also be the archive file itself).

    Raises:
        FileNotFoundError: neither a complete folder nor the archive is found; the message names
            the expected files, the folders searched, how to set the root and the official URL.
    """
    if root.is_file() and root.name == CIFAR10_ARCHIVE:
        return root
    searched = search_dirs(root, ["cifar10"])
    details = []
    for folder in searched:
        for candidate in (folder, folder / CIFAR10_FOLDER):
            present = [name for name in BATCH_FILES if (candidate / name).is_file()]
            if len(present) == len(BATCH_FILES):
                return candidate
            if present:
                missing = [name for name in BATCH_FILES if name not in present]
                details.append(f"Incomplete batches folder {candidate}: missing {missing}.")
        archive = folder / CIFAR10_ARCHIVE
        if archive.is_file():
            return archive
    raise missing_data_error(
        "CIFAR-10",
        [
            CIFAR10_ARCHIVE,
            f"or the extracted folder {CIFAR10_FOLDER}/ with {', '.join(BATCH_FILES)}",
        ],
        searched,
        f"{CIFAR10_URL} (the 'CIFAR-10 python version' archive {CIFAR10_ARCHIVE})",
        details=details,
    )


def read_cifar10(path: Path) -> RawSplit:
    """Read the official CIFAR-10 split from an archive or an extracted batches folder.

    Args:
        path: ``cifar-10-python.tar.gz`` or a folder holding the six batch files
            (as returned by :func:`locate_cifar10`).

    Returns:
        :class:`~raysweep.data.preprocess.RawSplit` with ``uint8`` NHWC images
        ``(n, 32, 32, 3)``, ``int64`` labels, ``max_value=255``.

    Raises:
        ValueError: the archive or a batch is truncated or corrupt (unreadable gzip/tar, missing
            members, a pickle that fails, wrong array sizes or label values).
    """
    path = Path(path)
    blobs = _read_folder(path) if path.is_dir() else _read_archive(path)
    batches = {name: _parse_batch(blob, path, name) for name, blob in blobs.items()}
    del blobs
    x_train, y_train = _stack([batches[name] for name in TRAIN_BATCHES])
    x_test, y_test = _stack([batches[TEST_BATCH]])
    return RawSplit(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(CIFAR10_CLASSES),
        max_value=255.0,
        class_names=CIFAR10_CLASSES,
        source=str(path),
    )


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``(n, 3072)`` channel-first batches into one C-contiguous NHWC array."""
    total = sum(len(labels) for _, labels in parts)
    images = np.empty((total, *IMAGE_SHAPE_CHW[1:], IMAGE_SHAPE_CHW[0]), dtype=np.uint8)
    start = 0
    for data, labels in parts:
        chw = data.reshape((-1, *IMAGE_SHAPE_CHW))
        images[start : start + len(labels)] = chw.transpose(0, 2, 3, 1)
        start += len(labels)
    return images, np.concatenate([labels for _, labels in parts])


def _corrupt(path: Path, reason: str) -> ValueError:
    if path.is_dir():
        action = f"delete the folder and re-extract {CIFAR10_ARCHIVE} from {CIFAR10_URL}"
    else:
        action = f"delete it and re-download {CIFAR10_ARCHIVE} from {CIFAR10_URL}"
    kind = "batches folder" if path.is_dir() else "archive"
    reason = " ".join(reason.split())  # one line, whatever the underlying error printed
    return ValueError(f"CIFAR-10 {kind} {path} is truncated or corrupt ({reason}): {action}.")


def _read_archive(path: Path) -> dict[str, bytes]:
    """Read the six batch members of the tar archive into memory (streaming, one pass)."""
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if base not in BATCH_FILES or base in blobs or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                blobs[base] = handle.read()
                if len(blobs) == len(BATCH_FILES):
                    break
    except (PermissionError, FileNotFoundError):
        raise
    except _READ_ERRORS as err:
        raise _corrupt(path, _describe_read_error(err)) from err
    missing = [name for name in BATCH_FILES if name not in blobs]
    if missing:
        raise _corrupt(path, f"members {missing} not found in the archive")
    return blobs


def _describe_read_error(err: Exception) -> str:
    """One line for an archive read error (tarfile lists each compression it tried, one a line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1:  # "file could not be opened successfully:" then "- method gz: ...", ...
        gz = next((line for line in lines if line.startswith("- method gz:")), lines[1])
        return f"not a gzipped tar archive: {gz.removeprefix('- method gz:').strip()}"
    return f"{type(err).__name__}: {err}"


def _read_folder(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in BATCH_FILES}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR-10 batch"
            )
        return super().find_class(module, name)


def _parse_batch(blob: bytes, path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle and validate one batch; return its ``uint8 (n, 3072)`` rows and ``int64`` labels."""
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
    ) as err:
        raise _corrupt(path, f"{name}: pickle failed: {type(err).__name__}: {err}") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise _corrupt(path, f"{name}: expected a dict with b'data' and b'labels', got {keys}")
    data = batch[b"data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _ROW_SIZE
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(path, f"{name}: b'data' must be uint8 (n, {_ROW_SIZE}), got {got}")
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as err:
        raise _corrupt(path, f"{name}: b'labels' is not a list of ints ({err})") from err
    if labels.shape != (data.shape[0],):
        raise _corrupt(path, f"{name}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise _corrupt(
            path, f"{name}: labels must lie in [0, 10), got [{labels.min()}, {labels.max()}]"
        )
    return data, labels
