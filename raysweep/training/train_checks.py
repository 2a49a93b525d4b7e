"""Input validation for :mod:`raysweep.training`, run before anything is compiled.

Each check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (wrong shape or value)
naming what was expected, what was received, and what to do. Data checks also convert the
inputs to the dtypes the training program uses (float32 NumPy arrays).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from raysweep.argcheck import check_positive_int
from raysweep.config import TrainConfig
from raysweep.training.metrics import LOSSES
from raysweep.training.optim import SCHEDULES

__all__ = [
    "PackData",
    "check_checkpoint",
    "check_data",
    "check_logits",
    "check_lr_scale",
    "check_options",
    "check_params0",
    "check_seed",
    "check_train_config",
]


class PackData(NamedTuple):
    """Validated host data. ``x_*``: float32 ``(n, ...)``; ``y_*``: float32 ``(T, n)`` in ±1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def pack_size(self) -> int:
        return int(self.y_train.shape[0])


def check_train_config(train: Any) -> TrainConfig:
    if not isinstance(train, TrainConfig):
        raise TypeError(
            f"train must be a raysweep.config.TrainConfig, got {type(train).__name__}; "
            "build one with TrainConfig(optimizer='sgd', epochs=...)."
        )
    return train


def _floating_inputs(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim < 2:
        raise ValueError(
            f"{name} must have an example axis and feature axes, e.g. (n, H, W, C); got shape "
            f"{arr.shape}. Add a batch axis (x[None]) for a single example."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one example.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{name} must be floating (float32 expected), got dtype {arr.dtype}; convert it, "
            "e.g. x.astype(np.float32) / 255."
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {bad} NaN/inf values; training needs finite inputs (check the "
            "preprocessing, e.g. a zero standard deviation)."
        )
    return arr


def _labels(name: str, y: Any, n: int, x_name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 2:
        hint = " (one target: pass y[None])" if arr.ndim == 1 else ""
        raise ValueError(
            f"{name} must have shape (T, {n}): one row of ±1 labels per target{hint}; got "
            f"shape {arr.shape}."
        )
    if arr.shape[0] < 1:
        raise ValueError(f"{name} has shape {arr.shape}: the pack needs T >= 1 label vectors.")
    if arr.shape[1] != n:
        raise ValueError(
            f"{name} has {arr.shape[1]} labels per target but {x_name} has {n} examples; "
            f"expected shape ({arr.shape[0]}, {n})."
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric (±1 labels), got dtype {arr.dtype}.")
    ok = (arr == 1) | (arr == -1)
    if not np.all(ok):
        found = np.unique(arr[~ok])[:5]
        raise ValueError(
            f"{name} must contain only -1 and +1; found other values such as {found.tolist()}. "
            "Map 0/1 labels with 2 * y - 1, or eigenvector labels with np.where(phi >= 0, 1, -1)."
        )
    return arr.astype(np.float32)


def check_data(x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> PackData:
    """Shapes, dtypes, finiteness and label values; returns float32 NumPy arrays."""
    xtr = _floating_inputs("x_train", x_train)
    xte = _floating_inputs("x_test", x_test)
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(
            f"x_train and x_test must have the same per-example shape; got {xtr.shape[1:]} and "
            f"{xte.shape[1:]}."
        )
    ytr = _labels("y_train", y_train, xtr.shape[0], "x_train")
    yte = _labels("y_test", y_test, xte.shape[0], "x_test")
    if ytr.shape[0] != yte.shape[0]:
        raise ValueError(
            f"y_train has {ytr.shape[0]} targets but y_test has {yte.shape[0]}; both need one "
            "row per target of the pack, in the same order."
        )
    return PackData(xtr, ytr, xte, yte)


def check_params0(params0: Any, name: str = "params0") -> None:
    """A non-empty pytree of finite floating arrays."""
    leaves = jax.tree_util.tree_leaves_with_path(params0)
    if not leaves:
        raise ValueError(f"{name} has no array leaves; pass variables['params'].")
    for path, leaf in leaves:
        arr = np.asarray(leaf)
        where = f"{name}{jax.tree_util.keystr(path)}"
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"{where} has dtype {arr.dtype}; parameters must be floating.")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{where} contains NaN/inf; pass finite initial parameters.")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _seed_entries(seed: Any) -> int | tuple[int, ...]:
    """``seed`` as an int or a tuple of ints, each checked to be a non-negative int."""
    if _is_int(seed):
        if seed < 0:
            raise ValueError(
                f"seed must be a non-negative int (the data-order seed) or a sequence of them, "
                f"one per target; got {seed!r}."
            )
        return int(seed)
    if isinstance(seed, np.ndarray) and seed.ndim != 1:
        raise ValueError(
            f"seed must be a non-negative int or a 1-D sequence of them, one per target; got "
            f"an array of shape {seed.shape}."
        )
    if isinstance(seed, str | bytes) or not isinstance(seed, Sequence | np.ndarray):
        raise ValueError(
            f"seed must be a non-negative int (the data-order seed) or a sequence of them, one "
            f"per target; got {seed!r}."
        )
    entries = []
    for i, value in enumerate(seed):
        if isinstance(value, bool | np.bool_):
            raise ValueError(
                f"seed[{i}] is the bool {value!r}; every entry of seed must be a non-negative "
                "int (the data-order seed of that target)."
            )
        if not _is_int(value):
            raise ValueError(
                f"seed[{i}] is {value!r} ({type(value).__name__}); every entry of seed must be "
                "a non-negative int (the data-order seed of that target)."
            )
        if value < 0:
            raise ValueError(
                f"seed[{i}] is {value!r}; every entry of seed must be a non-negative int (the "
                "data-order seed of that target)."
            )
        entries.append(int(value))
    return tuple(entries)


def check_seed(seed: Any, pack_size: int) -> int | tuple[int, ...]:
    """The data-order seed: an int (one order shared by the pack) or ``T`` per-target ints.

    ``seed`` is a non-negative int or a sequence of ``pack_size`` non-negative ints. Returns
    an int when the orders are shared (an int, or a sequence whose entries are all equal) and
    a tuple of ``pack_size`` ints otherwise.
    """
    value = _seed_entries(seed)
    if isinstance(value, int):
        return value
    if len(value) != pack_size:
        raise ValueError(
            f"seed has {len(value)} entries but the pack has {pack_size} targets (rows of "
            f"y_train); pass one data-order seed per target, or a single int for all."
        )
    if len(set(value)) == 1:
        return value[0]
    return value


def check_options(
    *,
    linearized: Any,
    seed: Any,
    eval_batch_size: Any,
    loss: Any,
    schedule: Any,
    on_epoch: Callable | None,
    centered: Any = False,
) -> None:
    if not isinstance(linearized, bool | np.bool_):
        raise TypeError(
            f"linearized must be a bool (False: the network, True: its linearization), got "
            f"{linearized!r}."
        )
    _seed_entries(seed)
    check_positive_int(eval_batch_size, "eval_batch_size")
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not supported; choose one of {', '.join(LOSSES)}.")
    if schedule not in SCHEDULES:
        raise ValueError(
            f"schedule={schedule!r} is not supported; choose one of {', '.join(SCHEDULES)}."
        )
    if not isinstance(centered, bool | np.bool_):
        raise TypeError(f"centered must be a bool, got {centered!r}.")
    if centered and not linearized:
        raise ValueError(
            "centered=True trains the linearization minus f(θ₀, x), so it needs "
            "linearized=True; the network itself cannot be centered."
        )
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(
            f"on_epoch must be None or a callable taking the list of T metric dicts, got "
            f"{type(on_epoch).__name__}."
        )


def check_lr_scale(lr_scale: Any, pack_size: int) -> np.ndarray:
    """``None`` → ones; else a ``(T,)`` array of finite positive floats."""
    if lr_scale is None:
        return np.ones((pack_size,), np.float32)
    arr = np.asarray(lr_scale, dtype=np.float64)
    if arr.shape != (pack_size,):
        raise ValueError(
            f"lr_scale must have shape ({pack_size},), one factor per target, got {arr.shape}."
        )
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"lr_scale must be finite and > 0, got {arr.tolist()}.")
    return arr.astype(np.float32)


def check_logits(where: str, fn: Callable, *args: Any, n: int) -> Any:
    """Trace ``fn(*args)`` abstractly (no compilation) and check it returns ``(n, 1)`` logits.

    ``fn`` may return ``logits`` or ``(logits, aux)``; the abstract output is returned.
    """
    try:
        out = jax.eval_shape(fn, *args)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} failed on a batch of {n} training examples: {err}") from err
    logits = out[0] if isinstance(out, tuple) else out
    if tuple(getattr(logits, "shape", ())) != (n, 1):
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(
            f"{where} must return one logit per example, shape ({n}, 1); got {shape}. Select "
            "one output of a multi-output model, e.g. lambda p, x: f(p, x)[:, :1]."
        )
    return out


def check_checkpoint(
    checkpoint: Any, checkpoint_every: Any, on_resume: Callable | None
) -> Path | None:
    """The checkpoint path (``None``: no checkpoints), after checking the three options."""
    if checkpoint is not None and not isinstance(checkpoint, str | os.PathLike):
        raise TypeError(
            f"checkpoint must be None or a file path (str or os.PathLike), got "
            f"{type(checkpoint).__name__}."
        )
    if checkpoint is not None and not os.fspath(checkpoint):
        raise ValueError("checkpoint is an empty path; pass a file path or None.")
    check_positive_int(checkpoint_every, "checkpoint_every", hint=" (epochs between checkpoints)")
    if on_resume is not None and not callable(on_resume):
        raise TypeError(
            f"on_resume must be None or a callable taking the resumed epoch (int), got "
            f"{type(on_resume).__name__}."
        )
    return None if checkpoint is None else Path(checkpoint)
