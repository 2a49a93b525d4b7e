"""scikit-learn's 8x8 handwritten digits (bundled with scikit-learn: offline, no files needed).

``sklearn.datasets.load_digits`` gives 1,797 images of 8x8 pixels with integer values ``0..16``
and labels ``0..9``. There is no official split, so this module fixes one that never changes and
does not depend on any user seed:

- test: 450 rows (25 %), chosen by :func:`raysweep.data.subsample.stratified_subsample` on the
  labels with ``np.random.default_rng(DIGITS_SPLIT_SEED)`` (``DIGITS_SPLIT_SEED = 0``), i.e.
  proportional per class with largest-remainder rounding;
- train: the other 1,347 rows;
- both in ascending ``load_digits`` row order (see :func:`digits_split`).

The ``seed`` of :func:`raysweep.data.load_dataset` only affects ``num_train`` / ``num_test``
subsampling *within* this split. Pixels are scaled by ``/ 16`` to ``[0, 1]``; images are NHWC
``(n, 8, 8, 1)``.
"""

from __future__ import annotations

import numpy as np

from raysweep.data.preprocess import RawSplit
from raysweep.data.subsample import stratified_subsample

DIGITS_SOURCE = "sklearn.datasets.load_digits"
DIGITS_SPLIT_SEED = 0
DIGITS_NUM_TEST = 450
DIGITS_MAX_VALUE = 16.0
DIGITS_CLASSES = tuple(str(d) for d in range(10))


def digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split: ``(train_rows, test_rows)``, ``int64`` ascending ``load_digits`` rows.

    Args:
        labels: the ``(1797,)`` ``load_digits().target`` array.
    """
    test_rows = stratified_subsample(
        labels, DIGITS_NUM_TEST, np.random.default_rng(DIGITS_SPLIT_SEED)
    )
    mask = np.ones(len(labels), dtype=bool)
    mask[test_rows] = False
    return np.flatnonzero(mask).astype(np.int64), test_rows


def read_digits() -> RawSplit:
    """Load ``load_digits`` and apply the fixed split.

    Returns:
        :class:`~raysweep.data.preprocess.RawSplit` with ``float64`` NHWC ``(n, 8, 8, 1)``
        images in ``[0, 16]``, ``int64`` labels, ``max_value=16``; 1,347 train / 450 test rows.
    """
    from sklearn.datasets import load_digits  # local import: sklearn is slow to import

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_rows, test_rows = digits_split(labels)
    return RawSplit(
        x_train=images[train_rows],
        y_train=labels[train_rows],
        x_test=images[test_rows],
        y_test=labels[test_rows],
        num_classes=len(DIGITS_CLASSES),
        max_value=DIGITS_MAX_VALUE,
        class_names=DIGITS_CLASSES,
        source=DIGITS_SOURCE,
    )
