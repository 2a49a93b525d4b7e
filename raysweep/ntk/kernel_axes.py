"""Output axes of an empirical kernel, with neural-tangents' conventions.

For one output leaf of shape ``(X_0, ..., X_{d-1})`` (the batch axis is one of them, usually
``X_0 = N``), the kernel between ``f(x1)`` and ``f(x2)`` has, in axis order,

- nothing for a *traced* axis (``trace_axes``): the pair of axes is contracted and the sum is
  divided by the axis size, so a traced kernel is the **mean** over that axis;
- one axis for a *diagonal* axis (``diagonal_axes``): only ``X_a == X'_a`` is kept;
- two adjacent axes ``(X_a, X'_a)`` for every other axis (interleaved).

So a ``(N, C)`` output gives ``(N1, N2)`` with ``trace_axes=(-1,)`` (the default),
``(N1, N2, C, C')`` with ``trace_axes=()`` and ``(N1, N2, C)`` with ``trace_axes=(),
diagonal_axes=(-1,)``. Axes are canonicalized as neural-tangents does (negative values count
from the end, order does not matter); an axis repeated, out of range, or both traced and
diagonal is an error here.

The functions below build every layout from one table of einsum letters, so the
contraction of Jacobians (:func:`contract_kernel`), the reduction of a full kernel
(:func:`trace_and_diagonal`) and the mirror image used for symmetric Grams
(:func:`swap_kernel`) agree by construction.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


def canonical_axes(axes, ndim: int, name: str) -> tuple[int, ...]:
    """``axes`` (an int or a sequence of ints) as sorted non-negative axes of an ``ndim`` array."""
    if isinstance(axes, bool) or (
        not isinstance(axes, int | np.integer) and not isinstance(axes, Sequence)
    ):
        raise TypeError(f"{name} must be an int or a tuple of ints; got {axes!r}.")
    seq = (axes,) if isinstance(axes, int | np.integer) else tuple(axes)
    if any(isinstance(a, bool) or not isinstance(a, int | np.integer) for a in seq):
        raise TypeError(f"{name} must be an int or a tuple of ints; got {axes!r}.")
    bad = [int(a) for a in seq if not -ndim <= a < ndim]
    if bad:
        raise ValueError(
            f"{name}={tuple(int(a) for a in seq)} names axis {bad[0]}, but the output has "
            f"{ndim} axes; use axes in [-{ndim}, {ndim - 1}]."
        )
    out = sorted({int(a) % ndim for a in seq})
    if len(out) != len(seq):
        raise ValueError(f"{name}={tuple(int(a) for a in seq)} names an axis twice.")
    return tuple(out)


def check_kernel_axes(
    shape1: Sequence[int], shape2: Sequence[int], trace: tuple, diagonal: tuple
) -> None:
    """Traced and diagonal axes are disjoint and have equal sizes in both outputs."""
    both = sorted(set(trace) & set(diagonal))
    if both:
        raise ValueError(
            f"axis {both[0]} is in both trace_axes {trace} and diagonal_axes {diagonal}; "
            "an axis is either averaged (trace) or kept once (diagonal)."
        )
    if len(shape1) != len(shape2):
        raise ValueError(
            f"f(x1) and f(x2) must have the same number of axes; got {tuple(shape1)} and "
            f"{tuple(shape2)}."
        )
    for a in (*trace, *diagonal):
        if shape1[a] != shape2[a]:
            raise ValueError(
                f"f(x1) has shape {tuple(shape1)} and f(x2) {tuple(shape2)}: they differ on "
                f"axis {a}, which is traced or diagonal (trace_axes={trace}, "
                f"diagonal_axes={diagonal}) and must match."
            )


def trace_size(shape: Sequence[int], trace: tuple) -> int:
    """The number the traced kernel is divided by: the product of the traced axis sizes."""
    return math.prod(int(shape[a]) for a in trace)


def kernel_shape(shape1: Sequence[int], shape2: Sequence[int], trace: tuple, diagonal: tuple):
    """The kernel's shape for outputs of shapes ``shape1`` and ``shape2``."""
    out: list[int] = []
    for a, (s1, s2) in enumerate(zip(shape1, shape2, strict=True)):
        if a in trace:
            continue
        out += [s1] if a in diagonal else [s1, s2]
    return tuple(out)


def _letters(ndim: int, trace: tuple, diagonal: tuple) -> tuple[str, str, str]:
    """einsum subscripts of the two outputs and of their kernel."""
    pool = iter(string.ascii_letters)
    s1 = s2 = res = ""
    for a in range(ndim):
        first = next(pool)
        if a in trace or a in diagonal:
            s1, s2 = s1 + first, s2 + first
            res += "" if a in trace else first
        else:
            second = next(pool)
            s1, s2, res = s1 + first, s2 + second, res + first + second
    return s1, s2, res


def contract_kernel(a1, a2, ndim: int, trace: tuple, diagonal: tuple, precision=None):
    """Kernel of two Jacobian blocks, summed over their trailing parameter axis.

    ``a1``: ``(X_0, ..., X_{ndim-1}, P)``, ``a2``: ``(X'_0, ..., X'_{ndim-1}, P)`` (the same
    P columns). Returns ``Σ_p`` of the kernel layout above, **not** divided by the traced
    size (callers sum groups of columns first, then divide once).
    """
    s1, s2, res = _letters(ndim, trace, diagonal)
    p = string.ascii_letters[-1]
    return jnp.einsum(f"{s1}{p},{s2}{p}->{res}", a1, a2, precision=precision)


def trace_and_diagonal(full, ndim: int, trace: tuple, diagonal: tuple):
    """Kernel layout from a full kernel ``(X_0, ..., X_{d-1}, X'_0, ..., X'_{d-1})``.

    Traced pairs are summed along their diagonal and divided by the traced size; diagonal
    pairs keep their diagonal. Matches neural-tangents' ``_trace_and_diagonal``.
    """
    s1, s2, res = _letters(ndim, trace, diagonal)
    out = jnp.einsum(f"{s1}{s2}->{res}", full)
    return out / trace_size(full.shape[:ndim], trace)


def swap_permutation(ndim: int, trace: tuple, diagonal: tuple) -> list[int]:
    """Axis permutation taking the kernel of (x1, x2) to the kernel of (x2, x1)."""
    perm: list[int] = []
    for a in range(ndim):
        if a in trace:
            continue
        k = len(perm)
        perm += [k] if a in diagonal else [k + 1, k]
    return perm


def swap_kernel(k, ndim: int, trace: tuple, diagonal: tuple):
    """Θ(x2, x1) from Θ(x1, x2) (numpy or jax arrays)."""
    perm = swap_permutation(ndim, trace, diagonal)
    return k.transpose(perm)
