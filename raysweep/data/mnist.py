"""MNIST from the four official idx files, read locally (never downloaded).

Expected files, each either plain or gzipped (``<name>.gz``; the plain file wins if both exist):

- ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (60,000 train images),
- ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (10,000 test images).

They are searched in ``root``, ``root/mnist``, ``root/MNIST/raw`` (torchvision layout) and
``root/mnist/MNIST/raw``; the first folder holding all four is used.

idx format: a big-endian header, the magic ``0x00000803`` (``uint8`` data, 3 dims) for images or
``0x00000801`` (``uint8``, 1 dim) for labels, followed by one big-endian ``uint32`` per dimension,
then the ``uint8`` payload in row-major order. The loader checks the magic, that the payload
length matches the dimensions exactly, that images are 28x28, that image and label counts agree
and that labels lie in ``[0, 10)``. Images are returned as ``uint8`` NHWC ``(n, 28, 28, 1)``.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from raysweep.data.paths import missing_data_error, search_dirs
from raysweep.data.preprocess import RawSplit

MNIST_URL = "http://yann.lecun.com/exdb/mnist/"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
IMAGE_SIDE = 28
MNIST_CLASSES = tuple(str(d) for d in range(10))
_SUBDIRS = ("mnist", "MNIST/raw", "mnist/MNIST/raw")


def locate_mnist(root: Path) -> dict[str, Path]:
    """Return ``{key: path}`` for the four idx files (keys as in :data:`MNIST_FILES`).

    Raises:
        FileNotFoundError: no searched folder holds all four files; the message names them, the
            folders searched, any partial set found, how to set the root, and where to get them.
    """
    searched = search_dirs(root, _SUBDIRS)
    details = []
    for folder in searched:
        found = {}
        for key, name in MNIST_FILES.items():
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(MNIST_FILES):
            return found
        if found:
            missing = [MNIST_FILES[k] for k in MNIST_FILES if k not in found]
            details.append(f"Incomplete MNIST folder {folder}: missing {missing} (plain or .gz).")
    raise missing_data_error(
        "MNIST",
        [f"{name} (or {name}.gz)" for name in MNIST_FILES.values()],
        searched,
        f"{MNIST_URL} or a mirror (the four idx files, gzipped or not)",
        details=details,
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one idx file (plain or ``.gz``) of ``uint8`` data with the expected ``magic``.

    Returns:
        ``uint8`` array with the dimensions from the header.

    Raises:
        ValueError: the gzip stream is corrupt or truncated, the magic differs, or the payload
            length does not match the header's dimensions.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (PermissionError, FileNotFoundError):
        raise
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as err:
        raise _corrupt(path, f"{type(err).__name__}: {err}") from err
    if len(raw) < 4:
        raise _corrupt(path, f"only {len(raw)} bytes, shorter than the 4-byte magic")
    (found_magic,) = struct.unpack(">I", raw[:4])
    if found_magic != magic:
        raise _corrupt(path, f"bad idx magic 0x{found_magic:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, f"header needs {header} bytes, file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise _corrupt(
            path,
            f"header dims {dims} need {expected} bytes, file has {len(raw)}",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_mnist(files: dict[str, Path]) -> RawSplit:
    """Read and validate the four idx files found by :func:`locate_mnist`.

    Returns:
        :class:`~raysweep.data.preprocess.RawSplit` with ``uint8`` NHWC ``(n, 28, 28, 1)``
        images, ``int64`` labels and ``max_value=255``; ``source`` is the folder read.
    """
    splits = {}
    for split in ("train", "test"):
        images_path = files[f"{split}_images"]
        labels_path = files[f"{split}_labels"]
        images = read_idx(images_path, IMAGES_MAGIC)
        labels = read_idx(labels_path, LABELS_MAGIC).astype(np.int64)
        if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise _corrupt(
                images_path,
                f"images are {images.shape[1]}x{images.shape[2]}, expected "
                f"{IMAGE_SIDE}x{IMAGE_SIDE}",
            )
        if images.shape[0] != labels.shape[0]:
            raise _corrupt(
                labels_path,
                f"{labels.shape[0]} labels but {images_path.name} holds {images.shape[0]} images",
            )
        if labels.size and labels.max() >= len(MNIST_CLASSES):
            raise _corrupt(labels_path, f"labels must lie in [0, 10), max is {labels.max()}")
        splits[split] = (images[..., None], labels)
    return RawSplit(
        x_train=splits["train"][0],
        y_train=splits["train"][1],
        x_test=splits["test"][0],
        y_test=splits["test"][1],
        num_classes=len(MNIST_CLASSES),
        max_value=255.0,
        class_names=MNIST_CLASSES,
        source=str(files["train_images"].parent),
    )


def _corrupt(path: Path, reason: str) -> ValueError:
    reason = " ".join(reason.split())  # one line, whatever the underlying error printed
    return ValueError(
        f"MNIST file {path} is truncated or corrupt ({reason}): delete it and re-download it "
        f"from {MNIST_URL} or a mirror."
    )
