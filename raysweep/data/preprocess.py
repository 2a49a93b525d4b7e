"""From raw pixels to a :class:`~raysweep.data.dataset.Dataset`: subsample, scale, standardize.

Pipeline of :func:`build_dataset` (the same for every dataset):

1. Stratified subsampling of each split on the *original* class labels
   (:mod:`raysweep.data.subsample`; train and test use independent streams of ``seed``).
2. Scaling to ``[0, 1]``: ``float32(raw) / max_value`` (255 for ``uint8`` images, 16 for digits).
3. Per-channel statistics on the (subsampled) training images: mean and population std
   (``ddof=0``) accumulated in float64, then ``std = max(std, STD_FLOOR)`` so constant channels
   do not divide by zero.
4. Standardization of both splits with the *training* statistics: ``(x - mean) / std``.
5. Optionally :func:`binarize` (label 1 for ``positive_classes``, 0 otherwise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from raysweep.data.dataset import Dataset
from raysweep.data.subsample import (
    TEST_STREAM,
    TRAIN_STREAM,
    check_count,
    check_seed,
    split_rng,
    stratified_subsample,
)

STD_FLOOR = 1e-6
"""Lower bound applied to the per-channel std before dividing (in ``[0, 1]`` pixel units)."""

DEFAULT_POSITIVE_CLASSES = (5, 6, 7, 8, 9)
"""Classes mapped to label 1 by :func:`binarize` by default (the paper's CIFAR2: 0-4 vs 5-9)."""

_STATS_CHUNK = 256  # images per float64 chunk when computing statistics (bounds memory)


@dataclasses.dataclass(frozen=True, eq=False)
class RawSplit:
    """Full official train/test split as read from disk, before any preprocessing.

    Attributes:
        x_train: ``(n_train, H, W, C)`` raw pixels (NHWC), ``uint8`` or float, in
            ``[0, max_value]``.
        y_train: ``(n_train,)`` integer class labels.
        x_test: ``(n_test, H, W, C)`` raw pixels.
        y_test: ``(n_test,)`` integer class labels.
        num_classes: number of classes.
        max_value: the pixel value that maps to 1.0 (255 for ``uint8`` images).
        class_names: one name per class.
        source: the file or folder read.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    max_value: float
    class_names: tuple[str, ...]
    source: str


def channel_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and floored population std of NHWC images.

    Two passes in float64 over chunks of :data:`_STATS_CHUNK` images (memory stays bounded);
    each image is viewed as one row of ``H * W * C`` values so reductions run over long
    contiguous rows rather than a length-``C`` inner axis.

    Args:
        x: ``(n, H, W, C)`` images, any real dtype, ``n >= 1``.

    Returns:
        ``(mean, std)``, each ``float32 (C,)``; ``std`` is ``max(std, STD_FLOOR)``.
    """
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"expected non-empty NHWC images (n, H, W, C), got shape {x.shape}.")
    n, channels = x.shape[0], x.shape[-1]
    rows = np.ascontiguousarray(x).reshape(n, -1)  # (n, H*W*C), channel = column % C
    pixels = rows.shape[1] // channels
    count = n * pixels
    total = np.zeros(rows.shape[1], dtype=np.float64)
    for start in range(0, n, _STATS_CHUNK):
        total += rows[start : start + _STATS_CHUNK].sum(axis=0, dtype=np.float64)
    mean = total.reshape(pixels, channels).sum(axis=0) / count
    mean_row = np.tile(mean, pixels)
    sq = np.zeros(rows.shape[1], dtype=np.float64)
    for start in range(0, n, _STATS_CHUNK):
        diff = rows[start : start + _STATS_CHUNK].astype(np.float64)
        diff -= mean_row
        diff *= diff
        sq += diff.sum(axis=0)
    std = np.maximum(np.sqrt(sq.reshape(pixels, channels).sum(axis=0) / count), STD_FLOOR)
    return mean.astype(np.float32), std.astype(np.float32)


def scale_and_standardize(
    x_train_raw: np.ndarray, x_test_raw: np.ndarray, max_value: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scale raw pixels to ``[0, 1]`` and standardize both splits with train statistics.

    Computes ``(float32(raw) / max_value - mean) / std`` in float32, in place on one new
    C-contiguous array per split.

    Returns:
        ``(x_train, x_test, mean, std)``; images ``float32`` NHWC (C-contiguous), statistics
        ``float32 (C,)`` of the scaled training images.
    """
    scale = np.float32(max_value)
    x_train = x_train_raw.astype(np.float32, order="C")
    x_train /= scale
    x_test = x_test_raw.astype(np.float32, order="C")
    x_test /= scale
    mean, std = channel_statistics(x_train)
    pixels = int(np.prod(x_train.shape[1:3]))
    mean_row, std_row = np.tile(mean, pixels), np.tile(std, pixels)
    for x in (x_train, x_test):
        rows = x.reshape(x.shape[0], -1)  # a view: x is C-contiguous
        rows -= mean_row
        rows /= std_row
    return x_train, x_test, mean, std


def binarize(
    dataset: Dataset,
    positive_classes: Iterable[int] = DEFAULT_POSITIVE_CLASSES,
    *,
    name: str | None = None,
) -> Dataset:
    """Map a multi-class dataset to two labels: 1 for ``positive_classes``, 0 for the rest.

    With the default ``positive_classes = range(5, 10)`` this is the paper's rule (CIFAR2 is
    CIFAR-10 classes 0-4 -> 0 versus 5-9 -> 1). Images, statistics and indices are unchanged
    (shared, not copied).

    Args:
        dataset: a multi-class :class:`Dataset` (not already binarized).
        positive_classes: original labels mapped to 1; non-empty, a strict subset of
            ``range(num_classes)``.
        name: name of the result; default ``f"{dataset.name}-binary"``.

    Returns:
        A new :class:`Dataset` with ``int32`` 0/1 labels, ``num_classes == 2`` and
        ``positive_classes`` recorded.

    Raises:
        TypeError: ``dataset`` is not a :class:`Dataset`.
        ValueError: the dataset is already binary or ``positive_classes`` is invalid.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a raysweep.data.Dataset, got {type(dataset).__name__}.")
    if dataset.positive_classes is not None:
        raise ValueError(
            f"dataset {dataset.name!r} is already binary (positive classes "
            f"{list(dataset.positive_classes)}); binarize the multi-class dataset instead."
        )
    positive = tuple(sorted({int(c) for c in positive_classes}))
    valid = range(dataset.num_classes)
    if not positive or any(c not in valid for c in positive) or len(positive) == len(valid):
        raise ValueError(
            f"positive_classes must be a non-empty strict subset of range({dataset.num_classes}) "
            f"for dataset {dataset.name!r}, got {list(positive)}."
        )
    negative = tuple(c for c in valid if c not in positive)
    lookup = np.zeros(dataset.num_classes, dtype=np.int32)
    lookup[list(positive)] = 1
    return dataclasses.replace(
        dataset,
        name=name if name is not None else f"{dataset.name}-binary",
        y_train=lookup[dataset.y_train],
        y_test=lookup[dataset.y_test],
        num_classes=2,
        class_names=(_describe(negative, dataset), _describe(positive, dataset)),
        positive_classes=positive,
    )


def build_dataset(
    name: str,
    raw: RawSplit,
    *,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    positive_classes: Iterable[int] | None = None,
) -> Dataset:
    """Run the module pipeline (subsample, scale, standardize, optionally binarize) on ``raw``.

    ``num_train`` / ``num_test`` of ``None`` keep the whole split (indices ``arange(n)``).
    Stratification always uses the original labels of ``raw``, also when ``positive_classes``
    is given.
    """
    seed = check_seed(seed)
    n_train, n_test = len(raw.y_train), len(raw.y_test)
    if num_train is None:
        train_idx = np.arange(n_train, dtype=np.int64)
    else:
        check_count("num_train", num_train, n_train)
        train_idx = stratified_subsample(raw.y_train, num_train, split_rng(seed, TRAIN_STREAM))
    if num_test is None:
        test_idx = np.arange(n_test, dtype=np.int64)
    else:
        check_count("num_test", num_test, n_test)
        test_idx = stratified_subsample(raw.y_test, num_test, split_rng(seed, TEST_STREAM))
    x_train_raw = raw.x_train if num_train is None else raw.x_train[train_idx]
    x_test_raw = raw.x_test if num_test is None else raw.x_test[test_idx]
    x_train, x_test, mean, std = scale_and_standardize(x_train_raw, x_test_raw, raw.max_value)
    dataset = Dataset(
        name=name,
        x_train=x_train,
        y_train=np.asarray(raw.y_train)[train_idx].astype(np.int32),
        x_test=x_test,
        y_test=np.asarray(raw.y_test)[test_idx].astype(np.int32),
        num_classes=raw.num_classes,
        mean=mean,
        std=std,
        train_indices=train_idx,
        test_indices=test_idx,
        class_names=raw.class_names,
        source=raw.source,
        seed=seed,
        num_train_available=n_train,
        num_test_available=n_test,
    )
    if positive_classes is not None:
        dataset = binarize(dataset, positive_classes, name=name)
    return dataset


def _describe(classes: tuple[int, ...], dataset: Dataset) -> str:
    """Readable name of a group of classes, e.g. ``"classes 5-9"`` or ``"classes 0,2,4"``."""
    contiguous = classes == tuple(range(classes[0], classes[-1] + 1))
    if len(classes) == 1:
        label = f"class {classes[0]}"
    elif contiguous:
        label = f"classes {classes[0]}-{classes[-1]}"
    else:
        label = "classes " + ",".join(str(c) for c in classes)
    if dataset.class_names is not None and len(classes) <= 5:
        label += " (" + ", ".join(dataset.class_names[c] for c in classes) + ")"
    return label
