"""The one integer-argument check every package uses (config fields, solver and training options).

A wrong type raises :class:`ArgumentTypeError`, which is both a ``TypeError`` (the Python
convention for a wrong kind of object) and a ``ValueError`` (what the scripts catch to print a
one-line error), so that every caller can keep its own ``except`` clause.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["ArgumentTypeError", "check_int", "check_positive_int"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (e.g. a float or a bool where an int is expected)."""


def _expected(minimum: int, maximum: int | None) -> str:
    if maximum is not None:
        return f"an integer in [{minimum}, {maximum}]"
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    return f"an integer >= {minimum}"


def check_int(
    value: Any, name: str, *, minimum: int, maximum: int | None = None, hint: str = ""
) -> int:
    """``value`` as a Python ``int`` in ``[minimum, maximum]``; bools are refused.

    Args:
      value: the argument (``int`` or a NumPy integer).
      name: how the message names it, e.g. ``"train.epochs"`` or ``"batch_size"``.
      minimum, maximum: the accepted range (``maximum=None``: no upper bound).
      hint: appended to the message, e.g. ``" (epochs between checkpoints)"``.
    """
    expected = _expected(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(
            f"{name} must be {expected}{hint}, got {value!r} ({type(value).__name__})."
        )
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {expected}{hint}, got {int(value)}.")
    return int(value)


def check_positive_int(value: Any, name: str, *, hint: str = "") -> int:
    """``value`` as a Python ``int`` ≥ 1 (:func:`check_int` with ``minimum=1``)."""
    return check_int(value, name, minimum=1, hint=hint)
