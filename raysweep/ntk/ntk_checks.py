"""Input validation at the public boundary of :mod:`raysweep.ntk`.

Every check runs before any compilation or long work and raises ``ValueError``/``TypeError``
with the expected and the received values.
"""

from __future__ import annotations

import jax
import numpy as np

METHODS = ("auto", "contraction", "structured", "ntvp")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {', '.join(METHODS)}.")


def check_inputs(x1, x2=None) -> None:
    """x1 (and x2) are non-empty arrays with a leading example axis, equal feature shapes and
    finite values."""
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None:
            continue
        shape = np.shape(x)
        if len(shape) < 2:
            raise ValueError(
                f"{name} must have a leading example axis and feature axes, e.g. (n, H, W, C); "
                f"got shape {shape}."
            )
        if shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {shape}); pass at least one example.")
        check_finite(name, x)
    if x2 is not None and np.shape(x1)[1:] != np.shape(x2)[1:]:
        raise ValueError(
            f"x1 and x2 must have the same per-example shape; got {np.shape(x1)[1:]} and "
            f"{np.shape(x2)[1:]}."
        )


def check_finite(name: str, x) -> None:
    """Every value of the floating-point array ``x`` is finite (integer arrays always are)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.inexact):
        return
    rows = arr.reshape(arr.shape[0], -1)
    step = max(1, 2**24 // max(rows.shape[1], 1))  # bounded temporaries on large datasets
    bad = np.concatenate(
        [~np.isfinite(rows[i : i + step]).all(axis=1) for i in range(0, len(rows), step)]
    )
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{name} contains NaN or inf in {rows.size} of {arr.shape[0]} examples (first: "
            f"example {rows[0]}); the NTK of a non-finite input is undefined: drop or repair "
            "those examples (e.g. np.nan_to_num) before computing the Gram."
        )


def check_params(params) -> None:
    """Every parameter leaf is a finite floating-point array."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("params has no array leaves; pass the model's parameter pytree.")
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(
                f"parameter {jax.tree_util.keystr(path)} has dtype {arr.dtype}; the NTK needs "
                "floating-point parameters."
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"parameter {jax.tree_util.keystr(path)} contains NaN or inf; the NTK of a "
                "non-finite model is undefined (check the initialization or training run)."
            )


def _output_shape(apply_fn, params, x):
    """Shape of ``apply_fn(params, x[:1])`` (``None`` for a non-array), without computing it."""
    try:
        out = jax.eval_shape(apply_fn, params, x[:1])
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"apply_fn(params, x) failed on one example of shape {np.shape(x)[1:]}: {err}"
        ) from err
    shape = getattr(out, "shape", None)
    return None if shape is None else tuple(shape), type(out).__name__


def check_single_output(apply_fn, params, x) -> None:
    """``apply_fn(params, x[:1])`` has shape (1, 1): one logit per example."""
    shape, kind = _output_shape(apply_fn, params, x)
    if shape != (1, 1):
        raise ValueError(
            "apply_fn must return one logit per example, shape (n, 1); on 1 example it returned "
            f"{shape if shape is not None else kind}. For a multi-output model, select one "
            "output, e.g. lambda p, x: f(p, x)[:, :1]."
        )


def check_logits(apply_fn, params, x) -> int:
    """``apply_fn(params, x[:1])`` has shape (1, C); returns C.

    One logit gives the NTK Gram; C logits give the traced kernel, the mean over the logits
    of each logit's NTK (neural-tangents' default ``trace_axes=(-1,)``).
    """
    shape, kind = _output_shape(apply_fn, params, x)
    if shape is None or len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise ValueError(
            "apply_fn must return logits of shape (n, C): C = 1 for the NTK Gram, C > 1 for the "
            f"traced kernel (mean over the logits); on 1 example it returned "
            f"{shape if shape is not None else kind}. For other output shapes or kernel "
            "layouts use raysweep.ntk.empirical_ntk_fn."
        )
    return int(shape[1])
