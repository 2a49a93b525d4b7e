"""Input validation for :mod:`raysweep.nads`, run before any compilation or long work.

Every check raises ``ValueError`` or ``TypeError`` saying what was expected, what was received
and what to do instead.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import numpy as np

from raysweep.argcheck import check_int, check_positive_int
from raysweep.config import NAD_METHODS
from raysweep.ntk.ntk_checks import check_params

__all__ = [
    "METHODS",
    "check_activation_hint",
    "check_input_shape",
    "check_k",
    "check_model",
    "check_points",
    "check_positive_int",
]

METHODS = NAD_METHODS
"""Solvers accepted by :func:`raysweep.nads.nads` (see its docstring)."""


def check_input_shape(input_shape: Any) -> tuple[int, ...]:
    """The per-example input shape (no batch axis) as a tuple of positive ints.

    Models in :mod:`raysweep.models` take ``(H, W, C)``; any rank is accepted here so that
    functional models on flat vectors work too.
    """
    if isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
        input_shape = (int(input_shape),)
    if isinstance(input_shape, str | bytes) or not hasattr(input_shape, "__len__"):
        raise TypeError(
            f"input_shape must be a tuple of positive ints without the batch axis, e.g. "
            f"(32, 32, 1); got {input_shape!r}."
        )
    dims = tuple(input_shape)
    if not dims:
        raise ValueError("input_shape is empty; pass the per-example shape, e.g. (32, 32, 1).")
    hint = f" (input_shape={dims!r}; pass e.g. (32, 32, 1))"
    return tuple(
        check_int(d, f"input_shape[{i}]", minimum=1, hint=hint) for i, d in enumerate(dims)
    )


def check_k(k: Any, dim: int, num_params: int) -> int:
    """``1 <= k < d`` (and ``k <= P``): the number of NADs asked for."""
    k = check_int(k, "k", minimum=1, hint=" (the number of NADs)")
    if k >= dim:
        raise ValueError(
            f"k must satisfy 1 <= k < d = prod(input_shape) = {dim} (the input dimension), got "
            f"k={k}; ask for fewer NADs (the paper shows the first 10)."
        )
    if k > num_params:
        raise ValueError(
            f"k={k} exceeds the number of parameters P={num_params}: the mixed derivative "
            f"(P x d) has rank <= {num_params}; ask for k <= {num_params}."
        )
    return k


def check_points(x0: Any, samples: Any, input_shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The points the mixed derivative is averaged over, ``(n, *input_shape)`` float32.

    Returns:
      ``(points, where)`` with ``where`` one of ``"origin"``, ``"x0"``, ``"samples"``.
    """
    if x0 is not None and samples is not None:
        raise ValueError(
            "pass either x0 (one point) or samples (the data average), not both; the paper's "
            "NADs use the origin (x0=None, samples=None)."
        )
    if samples is not None:
        pts = np.asarray(samples)
        if pts.ndim != len(input_shape) + 1 or tuple(pts.shape[1:]) != input_shape:
            expected = ", ".join(["n", *map(str, input_shape)])
            raise ValueError(
                f"samples must have shape (n, *input_shape) = ({expected}), got {pts.shape}; "
                "draw them with gaussian_samples(input_shape, n, sigma, seed)."
            )
        if pts.shape[0] == 0:
            raise ValueError("samples is empty; pass at least one point.")
        where = "samples"
    elif x0 is not None:
        pts = np.asarray(x0)
        if tuple(pts.shape) == input_shape:
            pts = pts[None]
        if tuple(pts.shape) != (1, *input_shape):
            raise ValueError(
                f"x0 must have shape input_shape={input_shape} or (1, *input_shape), got "
                f"{pts.shape}; for an average over several points use samples=."
            )
        where = "x0"
    else:
        return np.zeros((1, *input_shape), np.float32), "origin"
    if not np.issubdtype(pts.dtype, np.floating) and not np.issubdtype(pts.dtype, np.integer):
        raise TypeError(f"{where} must be a numeric array, got dtype {pts.dtype}.")
    pts = pts.astype(np.float32)
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{where} contains NaN or inf.")
    return pts, where


def check_model(apply_fn: Any, params: Any, input_shape: tuple[int, ...]) -> int:
    """``apply_fn(params, zeros((1, *input_shape)))`` traces to shape ``(1, 1)``; returns P.

    Uses :func:`jax.eval_shape` (no FLOPs). A model built for another input shape fails here
    with a message naming the shape that was tried.
    """
    if not callable(apply_fn):
        raise TypeError(
            f"apply_fn must be callable (params, x) -> (n, 1), got {type(apply_fn).__name__}; "
            "build it with raysweep.models.make_apply_fn(module, variables)."
        )
    check_params(params)
    probe = jax.ShapeDtypeStruct((1, *input_shape), np.float32)
    try:
        out = jax.eval_shape(apply_fn, params, probe)
    except Exception as err:  # noqa: BLE001 - re-raised with the shape that was tried
        raise ValueError(
            f"apply_fn(params, x) failed on one example of input_shape={input_shape} "
            f"(d={math.prod(input_shape)}): {type(err).__name__}: {err}. Check that input_shape "
            "is the per-example shape the model was initialized with (e.g. (32, 32, 1)), "
            "without the batch axis."
        ) from err
    if not hasattr(out, "shape") or tuple(out.shape) != (1, 1):
        raise ValueError(
            "apply_fn must return one logit per example, shape (n, 1); on one example of "
            f"input_shape={input_shape} it returned {getattr(out, 'shape', type(out))}."
        )
    return int(sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params)))


def check_activation_hint(activation: Any) -> str | None:
    """The activation hint lower-cased (``None`` allowed)."""
    if activation is None:
        return None
    if not isinstance(activation, str):
        raise TypeError(
            f"activation must be a string hint such as 'gelu' or None, got {activation!r}."
        )
    return activation.strip().lower()
