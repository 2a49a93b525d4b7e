"""The :class:`Dataset` container: standardized train/test images, labels and their provenance.

Conventions (all loaders in :mod:`raysweep.data` produce these):

- Images are ``float32`` in NHWC layout ``(n, height, width, channels)``. Raw pixels are first
  scaled to ``[0, 1]`` (``uint8 / 255``; digits ``/ 16``) and then standardized per channel with
  the *training* mean and std (computed after subsampling); the test set reuses the training
  statistics. See :mod:`raysweep.data.preprocess` for the std floor.
- Labels are ``int32`` in ``[0, num_classes)``.
- ``train_indices`` / ``test_indices`` are ``int64`` positions into the dataset's full split (the
  official train/test files; for digits the fixed split of :mod:`raysweep.data.digits`), in the
  order the rows are returned (ascending): ``x_train[i]`` is full-split train row
  ``train_indices[i]``.
- The concatenated view (:meth:`Dataset.concatenated`) is "train then test": row ``i < n_train``
  is train row ``i`` and row ``n_train + j`` is test row ``j``. :func:`split_concatenated` undoes
  it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from raysweep.argcheck import check_int

ORDER_CONVENTION = "train then test"
"""Row order of :meth:`Dataset.concatenated` (and of anything computed on it, e.g. Gram rows)."""


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A standardized image classification dataset with a train and a test split.

    Attributes:
        name: registry name, e.g. ``"cifar10"``, ``"cifar2"``, ``"digits"``.
        x_train: ``float32 (n_train, H, W, C)`` standardized training images (NHWC).
        y_train: ``int32 (n_train,)`` labels in ``[0, num_classes)``.
        x_test: ``float32 (n_test, H, W, C)`` test images standardized with train statistics.
        y_test: ``int32 (n_test,)`` labels.
        num_classes: number of label values (2 for binary variants).
        mean: ``float32 (C,)`` per-channel mean of the training images scaled to ``[0, 1]``.
        std: ``float32 (C,)`` per-channel std (population, ``ddof=0``) of the same, already
            floored (the value actually divided by).
        train_indices: ``int64 (n_train,)`` positions of the rows in the full train split.
        test_indices: ``int64 (n_test,)`` positions of the rows in the full test split.
        class_names: optional names, one per label value.
        source: the file or folder read, or ``"sklearn.datasets.load_digits"``.
        seed: the subsampling seed used, or ``None`` if unknown.
        num_train_available: size of the full train split (before subsampling), if known.
        num_test_available: size of the full test split, if known.
        positive_classes: for binary datasets, the original classes mapped to label 1 (all other
            classes are label 0); ``None`` for multi-class datasets.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray
    class_names: tuple[str, ...] | None = None
    source: str = ""
    seed: int | None = None
    num_train_available: int | None = None
    num_test_available: int | None = None
    positive_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _check_images("x_train", self.x_train)
        _check_images("x_test", self.x_test)
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise ValueError(
                f"x_test has image shape {self.x_test.shape[1:]} but x_train has "
                f"{self.x_train.shape[1:]}; both splits must share (H, W, C)."
            )
        object.__setattr__(
            self, "num_classes", check_int(self.num_classes, "num_classes", minimum=1)
        )
        _check_vector("y_train", self.y_train, np.int32, len(self.x_train))
        _check_vector("y_test", self.y_test, np.int32, len(self.x_test))
        for field, labels in (("y_train", self.y_train), ("y_test", self.y_test)):
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(
                    f"{field} has values in [{labels.min()}, {labels.max()}] but num_classes is "
                    f"{self.num_classes}; labels must lie in [0, num_classes)."
                )
        channels = self.x_train.shape[-1]
        _check_vector("mean", self.mean, np.float32, channels)
        _check_vector("std", self.std, np.float32, channels)
        _check_vector("train_indices", self.train_indices, np.int64, len(self.x_train))
        _check_vector("test_indices", self.test_indices, np.int64, len(self.x_test))
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} entries but num_classes is "
                f"{self.num_classes}; give one name per label or None."
            )

    # ------------------------------------------------------------------ shapes
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_train(self) -> int:
        """Number of training rows."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test rows."""
        return int(self.x_test.shape[0])

    @property
    def num_total(self) -> int:
        """``num_train + num_test``, the length of the concatenated view."""
        return self.num_train + self.num_test

    # ------------------------------------------------------- concatenated view
    def concatenated(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x_all, y_all)``: train rows then test rows (a new array, not a view).

        ``x_all`` is ``float32 (n_train + n_test, H, W, C)`` and ``y_all`` ``int32``; row ``i <
        n_train`` is ``x_train[i]`` and row ``n_train + j`` is ``x_test[j]``.
        """
        x_all = np.concatenate([self.x_train, self.x_test], axis=0)
        y_all = np.concatenate([self.y_train, self.y_test], axis=0)
        return x_all, y_all

    def split_concatenated(self, values: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Split an array laid out like :meth:`concatenated` back into ``(train, test)``.

        See :func:`split_concatenated`.
        """
        return split_concatenated(values, self, axis=axis)

    # ---------------------------------------------------------------- manifest
    def manifest(self) -> dict[str, Any]:
        """Return a JSON-serializable description sufficient to reproduce the selection.

        Keys: ``name``, ``source``, ``seed``, ``num_train``, ``num_test``, ``num_total``,
        ``num_train_available``, ``num_test_available``, ``input_shape`` (list), ``num_classes``,
        ``class_names``, ``positive_classes``, ``mean``, ``std`` (lists of floats),
        ``order`` (``"train then test"``), ``train_indices``, ``test_indices`` (lists of ints).
        """
        return {
            "name": self.name,
            "source": self.source,
            "seed": self.seed,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "num_total": self.num_total,
            "num_train_available": self.num_train_available,
            "num_test_available": self.num_test_available,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": None if self.class_names is None else list(self.class_names),
            "positive_classes": (
                None if self.positive_classes is None else [int(c) for c in self.positive_classes]
            ),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "order": ORDER_CONVENTION,
            "train_indices": self.train_indices.tolist(),
            "test_indices": self.test_indices.tolist(),
        }

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"source={self.source!r})"
        )


def split_concatenated(
    values: Any, dataset: Dataset, axis: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``values`` (train-then-test along ``axis``) into its train and test parts.

    Args:
        values: array-like whose length along ``axis`` is ``dataset.num_total``, e.g. per-example
            predictions of shape ``(N,)`` or eigenfunction values of shape ``(N, k)``.
        dataset: the dataset whose :meth:`Dataset.concatenated` order ``values`` follows.
        axis: the axis to split (use ``axis=1`` for the columns of an ``(M, N)`` matrix).

    Returns:
        ``(train_part, test_part)``, views of ``np.asarray(values)`` with ``dataset.num_train``
        and ``dataset.num_test`` entries along ``axis``.

    Raises:
        TypeError: ``dataset`` is not a :class:`Dataset`.
        ValueError: the length along ``axis`` is not ``num_train + num_test``.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"dataset must be a raysweep.data.Dataset, got {type(dataset).__name__}; pass the "
            f"Dataset whose concatenated() order the values follow."
        )
    arr = np.asarray(values)
    if arr.ndim == 0:
        raise ValueError("values must have at least one dimension, got a scalar.")
    length = arr.shape[axis]
    if length != dataset.num_total:
        raise ValueError(
            f"values has length {length} along axis {axis} but dataset {dataset.name!r} has "
            f"{dataset.num_train} train + {dataset.num_test} test = {dataset.num_total} rows; pass "
            f"values computed on dataset.concatenated() ({ORDER_CONVENTION})."
        )
    train, test = np.split(arr, [dataset.num_train], axis=axis)
    return train, test


def _check_images(field: str, x: Any) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{field} must be a numpy array, got {type(x).__name__}.")
    if x.dtype != np.float32 or x.ndim != 4:
        raise ValueError(
            f"{field} must be float32 of shape (n, H, W, C) (NHWC), got {x.dtype} with shape "
            f"{x.shape}."
        )


def _check_vector(field: str, v: Any, dtype: type, length: int) -> None:
    if not isinstance(v, np.ndarray):
        raise TypeError(f"{field} must be a numpy array, got {type(v).__name__}.")
    if v.dtype != dtype or v.shape != (length,):
        raise ValueError(
            f"{field} must be {np.dtype(dtype)} of shape ({length},), got {v.dtype} with shape "
            f"{v.shape}."
        )
