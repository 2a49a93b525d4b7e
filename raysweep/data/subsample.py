"""Deterministic, class-stratified subsampling of a labelled split.

Allocation is proportional with largest-remainder rounding, computed in exact integer arithmetic:
class ``k`` with ``c_k`` of ``n`` rows gets ``floor(num * c_k / n)`` rows, and the
``num - sum(floors)`` leftover rows go to the classes with the largest remainders
``(num * c_k) mod n`` (ties broken by smaller class label). The total is exactly ``num`` and no
class gets more rows than it has. A class may get zero rows when ``num`` is small.

Within each class the rows are drawn without replacement with ``rng.choice``; classes are visited
in ascending label order from a single generator, so the result depends only on the labels,
``num`` and the generator state. The returned indices are sorted ascending (original order).

Streams: :func:`split_rng` derives independent generators for the train and the test split from
one integer seed (``np.random.default_rng([seed, stream])``), so changing ``num_test`` never
changes the training selection and vice versa. No global numpy random state is used.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

TRAIN_STREAM = 0
"""Stream id of the training-split generator in :func:`split_rng`."""
TEST_STREAM = 1
"""Stream id of the test-split generator in :func:`split_rng`."""


def check_seed(seed: Any) -> int:
    """Return ``seed`` as a Python int, or raise if it is not a non-negative integer."""
    if isinstance(seed, bool):
        raise TypeError(f"seed must be a non-negative int, got bool ({seed!r}).")
    try:
        value = operator.index(seed)
    except TypeError:
        raise TypeError(
            f"seed must be a non-negative int, got {type(seed).__name__} ({seed!r})."
        ) from None
    if value < 0:
        raise ValueError(f"seed must be a non-negative int, got {value}.")
    return value


def split_rng(seed: int, stream: int) -> np.random.Generator:
    """Generator for one split: ``np.random.default_rng([seed, stream])``.

    Use :data:`TRAIN_STREAM` or :data:`TEST_STREAM` as ``stream``.
    """
    return np.random.default_rng([check_seed(seed), stream])


def check_count(field: str, num: Any, available: int) -> int:
    """Validate a requested subsample size against the ``available`` rows.

    Raises:
        TypeError: ``num`` is not an integer (``bool`` is rejected).
        ValueError: ``num <= 0`` or ``num > available``; the message names both numbers.
    """
    if isinstance(num, bool):
        raise TypeError(f"{field} must be a positive int or None, got bool ({num!r}).")
    try:
        value = operator.index(num)
    except TypeError:
        raise TypeError(
            f"{field} must be a positive int or None, got {type(num).__name__} ({num!r})."
        ) from None
    if value <= 0:
        raise ValueError(
            f"{field} must be positive, got {value}; pass None to keep all {available} rows."
        )
    if value > available:
        raise ValueError(
            f"{field}={value} is larger than the {available} rows available in the split; "
            f"pass at most {available} (or None for all of them)."
        )
    return value


def stratified_allocation(labels: np.ndarray, num: int) -> dict[int, int]:
    """Rows per class for a stratified subsample of size ``num`` (largest-remainder rounding).

    Args:
        labels: ``(n,)`` integer labels.
        num: total size, ``1 <= num <= n``.

    Returns:
        ``{class_label: count}`` for every class present in ``labels``; counts sum to ``num``.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    num = check_count("num", num, n)
    classes, counts = np.unique(labels, return_counts=True)
    products = [num * int(c) for c in counts]
    floors = [p // n for p in products]
    remainders = [p % n for p in products]
    leftover = num - sum(floors)
    # Largest remainder first, ties by smaller label (classes are sorted ascending).
    order = sorted(range(len(classes)), key=lambda k: (-remainders[k], k))
    for k in order[:leftover]:
        floors[k] += 1
    return {int(cls): q for cls, q in zip(classes, floors, strict=True)}


def stratified_subsample(labels: Any, num: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``num`` rows stratified by label; return their ``int64`` indices, sorted ascending.

    Args:
        labels: ``(n,)`` integer labels (the original classes, also for binary variants).
        num: number of rows to keep, ``1 <= num <= n``.
        rng: the generator to draw from (see :func:`split_rng`).

    Raises:
        TypeError: ``rng`` is not a ``numpy.random.Generator`` or ``num`` is not an int.
        ValueError: ``labels`` is not 1-D, or ``num`` is out of range.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}; create one with "
            f"np.random.default_rng(seed)."
        )
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
    allocation = stratified_allocation(labels, num)
    picked = []
    for cls, quota in allocation.items():
        members = np.flatnonzero(labels == cls)
        if quota == len(members):
            picked.append(members)
        elif quota > 0:
            picked.append(rng.choice(members, size=quota, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64, copy=False)
