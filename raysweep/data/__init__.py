"""Datasets for raysweep: CIFAR-10 / MNIST from local official files, scikit-learn digits, and
your own data (``npz:PATH``, an import path to a loader, or :func:`register_dataset`; see
:mod:`raysweep.data.user`).

Entry point: :func:`load_dataset` (built-in names in :data:`DATASET_NAMES`). Every loader returns a
:class:`Dataset` with ``float32`` NHWC images standardized per channel with the training
statistics, ``int32`` labels, and the ``int64`` positions of the selected rows in the full split.
Nothing is ever downloaded; see :mod:`raysweep.data.paths` for where files are looked for.
"""

from raysweep.data.cifar10 import CIFAR10_CLASSES, locate_cifar10, read_cifar10
from raysweep.data.dataset import ORDER_CONVENTION, Dataset, split_concatenated
from raysweep.data.digits import digits_split, read_digits
from raysweep.data.mnist import locate_mnist, read_idx, read_mnist
from raysweep.data.paths import DATA_ENV_VAR, DEFAULT_DATA_DIR, resolve_root
from raysweep.data.preprocess import (
    DEFAULT_POSITIVE_CLASSES,
    STD_FLOOR,
    RawSplit,
    binarize,
    build_dataset,
    channel_statistics,
)
from raysweep.data.registry import (
    DATASET_NAMES,
    available_datasets,
    load_dataset,
    register_dataset,
    registered_datasets,
)
from raysweep.data.subsample import split_rng, stratified_allocation, stratified_subsample
from raysweep.data.user import arrays_fingerprint, resolve_data_name

__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "DATA_ENV_VAR",
    "DEFAULT_DATA_DIR",
    "DEFAULT_POSITIVE_CLASSES",
    "ORDER_CONVENTION",
    "STD_FLOOR",
    "Dataset",
    "RawSplit",
    "arrays_fingerprint",
    "available_datasets",
    "binarize",
    "build_dataset",
    "channel_statistics",
    "digits_split",
    "load_dataset",
    "locate_cifar10",
    "locate_mnist",
    "read_cifar10",
    "read_digits",
    "read_idx",
    "read_mnist",
    "register_dataset",
    "registered_datasets",
    "resolve_data_name",
    "resolve_root",
    "split_concatenated",
    "split_rng",
    "stratified_allocation",
    "stratified_subsample",
]
