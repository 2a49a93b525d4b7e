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

Your own data (details in :mod:`raysweep.data.user`): ``npz:PATH`` (a ``.npz`` with
``x_train``, ``y_train``, ``x_test``, ``y_test``), an import path ``package.module:loader``, or
a name added with :func:`register_dataset`. They give the same :class:`Dataset` as the
built-ins, after checking every array before any work.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raysweep.data.cifar10 import locate_cifar10, read_cifar10
from raysweep.data.dataset import Dataset
from raysweep.data.digits import read_digits
from raysweep.data.mnist import locate_mnist, read_mnist
from raysweep.data.paths import resolve_root
from raysweep.data.preprocess import DEFAULT_POSITIVE_CLASSES, RawSplit, build_dataset
from raysweep.data.subsample import check_count, check_seed
from raysweep.data.user import (
    ARRAY_KEYS,
    NPZ_PREFIX,
    binary_classes,
    call_loader,
    describe_loader,
    import_loader,
    is_loader_path,
    is_npz_name,
    read_npz,
    user_split,
)


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

_REGISTERED: dict[str, Callable[..., Any]] = {}
"""Datasets added by :func:`register_dataset`: name -> loader."""


def register_dataset(name: str, loader: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Make ``name`` a dataset of this process: ``load_dataset(name)`` / ``data.name=name``.

    Args:
        name: a new name: not a built-in one (compared case-insensitively), no ``":"`` (kept
            for ``npz:PATH`` and import paths), no whitespace.
        loader: a callable taking no arguments (or a ``root`` keyword, which receives the data
            folder) that returns ``(x_train, y_train, x_test, y_test)`` or a dict with those
            keys and optionally ``positive_classes`` (label values mapped to 1 in the binary
            task) or ``binary_rule`` (``label -> bool``); arrays are anything
            ``numpy.asarray`` accepts. Shapes, dtypes and checks: :mod:`raysweep.data.user`.
            It is called at each :func:`load_dataset`, not here.
        overwrite: replace a loader registered earlier under ``name``.

    The registry lives in this process only: a worker process must register the name again
    (e.g. by importing the module that registers it) before loading it.

    Raises:
        TypeError: ``name`` is not a str, ``loader`` is not callable, or ``overwrite`` is not a
            bool.
        ValueError: a built-in name, a malformed name, or a name already registered without
            ``overwrite=True``.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__} ({name!r}).")
    if name.strip().lower() in DATASET_NAMES:
        raise ValueError(
            f"{name!r} is the name of a built-in dataset ({', '.join(DATASET_NAMES)}); "
            "register your loader under another name."
        )
    if not name or ":" in name or any(c.isspace() for c in name):
        raise ValueError(
            f"dataset name {name!r} must be non-empty, without ':' (reserved for npz:PATH and "
            "import paths) and without whitespace."
        )
    if not callable(loader):
        raise TypeError(
            f"loader for dataset {name!r} must be callable, got {type(loader).__name__}; pass "
            "a function returning (x_train, y_train, x_test, y_test) or a dict of them."
        )
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
    if name in _REGISTERED and not overwrite:
        raise ValueError(
            f"dataset {name!r} is already registered ({describe_loader(_REGISTERED[name])}); "
            "pass overwrite=True to replace it."
        )
    _REGISTERED[name] = loader


def registered_datasets() -> tuple[str, ...]:
    """Names added with :func:`register_dataset` in this process."""
    return tuple(_REGISTERED)


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset` (whether or not their files are on disk): the
    built-ins, then the registered ones. ``npz:PATH`` and import paths are accepted too."""
    return (*DATASET_NAMES, *registered_datasets())


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
            ``"mnist"``, ``"mnist2"``, ``"cifar10"``, ``"cifar2"``; or your own data (see
            :mod:`raysweep.data.user`): ``"npz:PATH"`` (relative to the working directory),
            an import path ``"package.module:loader"``, or a name added with
            :func:`register_dataset` (case-sensitive).
        root: folder holding the files; ``None`` uses ``$RAYSWEEP_DATA`` then
            ``~/.cache/raysweep/data``. Files may sit in ``root`` or ``root/<base name>``
            (``cifar10``, ``mnist``); digits reads no files, but an explicit ``root`` must
            still be an existing folder. See :mod:`raysweep.data.paths`. ``npz:`` names ignore
            it; a loader that declares a ``root`` parameter receives the resolved folder.
        num_train: keep this many training rows (stratified by original class, deterministic in
            ``seed``); ``None`` keeps the full split.
        num_test: same for the test split (an independent stream of ``seed``).
        seed: non-negative int seeding only the subsampling.
        binary: ``True`` selects the binary variant of a multi-class name (``"cifar10"`` ->
            ``"cifar2"``); ``False`` insists on the multi-class one; ``None`` follows ``name``.
            For your own data ``True`` applies its binary rule (two classes: the larger label
            is 1; more: the ``positive_classes`` / ``binary_rule`` the data comes with, else an
            error); ``None`` and ``False`` keep all classes.

    Returns:
        A :class:`~raysweep.data.dataset.Dataset` with ``float32`` NHWC images standardized
        with the training statistics, ``int32`` labels and ``int64`` indices into the full split.

    Raises:
        ValueError: unknown name (the message lists the known ones), ``binary=False`` with a
            binary name, bad ``num_train`` / ``num_test`` / ``seed`` values, a truncated or
            corrupt file, or your own arrays failing a check.
        TypeError: arguments of the wrong type, a loader that is not callable or returns
            neither a dict nor a 4-tuple.
        ImportError: an import path whose module or attribute does not exist.
        FileNotFoundError: the dataset files are not in any searched folder, an ``npz:`` file
            does not exist, or an explicit ``root`` for digits does not exist. The message is
            one line.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a str, got {type(name).__name__}; use one of {list(DATASET_NAMES)}."
        )
    key = name.strip().lower()
    if key not in _VARIANTS:
        return _load_user_dataset(
            name, root, num_train=num_train, num_test=num_test, seed=seed, binary=binary
        )
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


def _load_user_dataset(
    name: str,
    root: str | os.PathLike[str] | None,
    *,
    num_train: int | None,
    num_test: int | None,
    seed: int,
    binary: bool | None,
) -> Dataset:
    """:func:`load_dataset` for ``npz:PATH``, import paths and registered names."""
    if is_npz_name(name):
        kind = "npz"
    elif is_loader_path(name):
        kind = "import"
    elif name in _REGISTERED:
        kind = "registered"
    else:
        known = ", ".join((*DATASET_NAMES, *registered_datasets()))
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {known}; or {NPZ_PREFIX}PATH (a .npz "
            f"with {', '.join(ARRAY_KEYS)}) or an import path package.module:loader."
        )
    # Argument checks that need no data run before the loader or the file read.
    if binary is not None and not isinstance(binary, bool):
        raise TypeError(f"binary must be True, False or None, got {binary!r}.")
    check_seed(seed)
    for field, num in (("num_train", num_train), ("num_test", num_test)):
        if num is not None:
            check_count(field, num, sys.maxsize)
    folder = resolve_root(root)
    if kind == "npz":
        payload, source = read_npz(name)
    elif kind == "import":
        payload = call_loader(name, import_loader(name), folder)
        source = name
    else:
        loader = _REGISTERED[name]
        payload = call_loader(name, loader, folder)
        source = f"registered {name} ({describe_loader(loader)})"
    raw, positive = user_split(name, payload, source)
    if binary:
        positive = binary_classes(name, raw, positive, from_npz=kind == "npz")
    else:
        positive = None
    return build_dataset(
        name, raw, num_train=num_train, num_test=num_test, seed=seed, positive_classes=positive
    )
