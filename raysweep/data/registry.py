"""Dataset names -> loaders, and the one public entry point :func:`load_dataset`.

========  ================================  =======================  ======================
name      contents                          images (NHWC)            train / test (full)
========  ================================  =======================  ======================
digits    scikit-learn 8x8 digits, 10 cl.   (8, 8, 1)                1,347 / 450 (fixed)
digits2   digits, 0-4 -> 0, 5-9 -> 1        (8, 8, 1)                1,347 / 450
mnist     MNIST idx files, 10 classes       (28, 28, 1)              60,000 / 10,000
mnist2    MNIST, 0-4 -> 0, 5-9 -> 1         (28, 28, 1)              60,000 / 10,000
cifar10   CIFAR-10 python archive, 10 cl.   (32, 32, 3)              50,000 / 10,000
cifar2    CIFAR-10, 0-4 -> 0, 5-9 -> 1      (32, 32, 3)              50,000 / 10,000
========  ================================  =======================  ======================

Binary variants ("...2") map original classes 5-9 to label 1 and 0-4 to label 0 (the paper's
CIFAR2 rule); subsampling is stratified on the original ten classes. Nothing is cached between
calls: each call reads the files again (CIFAR-10 takes a few seconds), so load once per process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from raysweep.data.cifar10 import locate_cifar10, read_cifar10
from raysweep.data.dataset import Dataset
from raysweep.data.digits import read_digits
from raysweep.data.mnist import locate_mnist, read_mnist
from raysweep.data.paths import resolve_root
from raysweep.data.preprocess import DEFAULT_POSITIVE_CLASSES, RawSplit, build_dataset
from raysweep.data.subsample import check_count, check_seed


def _cifar10(root: Path) -> RawSplit:
    return read_cifar10(locate_cifar10(root))


def _mnist(root: Path) -> RawSplit:
    return read_mnist(locate_mnist(root))


def _digits(root: Path) -> RawSplit:
    del root  # bundled with scikit-learn
    return read_digits()


_READERS: dict[str, Callable[[Path], RawSplit]] = {
    "digits": _digits,
    "mnist": _mnist,
    "cifar10": _cifar10,
}
# name -> (base dataset, binary?)
_VARIANTS: dict[str, tuple[str, bool]] = {
    "digits": ("digits", False),
    "digits2": ("digits", True),
    "mnist": ("mnist", False),
    "mnist2": ("mnist", True),
    "cifar10": ("cifar10", False),
    "cifar2": ("cifar10", True),
}
_BINARY_NAME = {"digits": "digits2", "mnist": "mnist2", "cifar10": "cifar2"}

DATASET_NAMES: tuple[str, ...] = tuple(_VARIANTS)
"""The built-in names :func:`load_dataset` accepts."""

_REGISTERED: dict[str, Callable] = {}
"""Datasets added by :func:`register_dataset`: name -> loader."""


def registered_datasets() -> tuple[str, ...]:
    """Names added with :func:`register_dataset` in this process."""
    return tuple(_REGISTERED)


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset` (whether or not their files are on disk)."""
    return DATASET_NAMES


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    binary: bool | None = None,
) -> Dataset:
    """Load, subsample and standardize a dataset from local files (never downloads).

    Args:
        name: one of :data:`DATASET_NAMES` (case-insensitive): ``"digits"``, ``"digits2"``,
            ``"mnist"``, ``"mnist2"``, ``"cifar10"``, ``"cifar2"``.
        root: folder holding the files; ``None`` uses ``$RAYSWEEP_DATA`` then
            ``~/.cache/raysweep/data``. Files may sit in ``root`` or ``root/<base name>``
            (``cifar10``, ``mnist``); digits reads no files, but an explicit ``root`` must
            still be an existing folder. See :mod:`raysweep.data.paths`.
        num_train: keep this many training rows (stratified by original class, deterministic in
            ``seed``); ``None`` keeps the full split.
        num_test: same for the test split (an independent stream of ``seed``).
        seed: non-negative int seeding only the subsampling.
        binary: ``True`` selects the binary variant of a multi-class name (``"cifar10"`` ->
            ``"cifar2"``); ``False`` insists on the multi-class one; ``None`` follows ``name``.

    Returns:
        A :class:`~raysweep.data.dataset.Dataset` with ``float32`` NHWC images standardized
        with the training statistics, ``int32`` labels and ``int64`` indices into the full split.

    Raises:
        ValueError: unknown name (the message lists the known ones), ``binary=False`` with a
            binary name, bad ``num_train`` / ``num_test`` / ``seed`` values, or a truncated or
            corrupt file.
        TypeError: arguments of the wrong type.
        FileNotFoundError: the dataset files are not in any searched folder, or an explicit
            ``root`` for digits does not exist. The message is one line.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a str, got {type(name).__name__}; use one of {list(DATASET_NAMES)}."
        )
    key = name.strip().lower()
    if key not in _VARIANTS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}.")
    base, is_binary = _VARIANTS[key]
    if binary is not None and not isinstance(binary, bool):
        raise TypeError(f"binary must be True, False or None, got {binary!r}.")
    if binary is False and is_binary:
        raise ValueError(
            f"dataset {key!r} is binary but binary=False was passed; use {base!r} for the "
            f"multi-class version or drop binary=False."
        )
    if binary:
        is_binary = True
    resolved_name = _BINARY_NAME[base] if is_binary else base
    # Argument checks that need no data run before the (possibly slow) read.
    check_seed(seed)
    for field, num in (("num_train", num_train), ("num_test", num_test)):
        if num is not None:
            check_count(field, num, sys.maxsize)
    folder = resolve_root(root)
    if base == "digits" and root is not None and not folder.is_dir():
        # digits reads no files, but a data folder that is not there is a mistake to report
        raise FileNotFoundError(
            f"data folder {folder} does not exist (or is not a folder); {key} is bundled with "
            "scikit-learn and reads no files: drop --data-dir / data.root, or fix the path."
        )
    raw = _READERS[base](folder)
    return build_dataset(
        resolved_name,
        raw,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        positive_classes=DEFAULT_POSITIVE_CLASSES if is_binary else None,
    )
