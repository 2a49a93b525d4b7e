"""Argument checks shared by the figure functions: one clear error per wrong input.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong
shape or value) naming the argument, what was expected and what was received. A ``None`` for
an optional input raises :class:`MissingInputError` (a ``ValueError``) whose message says
which input is not present and how to produce it, so the report can show it as a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from raysweep.store import COLUMNS


class MissingInputError(ValueError):
    """An optional input of a figure is not present (``None``); the message says how to make it."""


def require_present(value: Any, what: str, how: str) -> Any:
    """Return ``value``, or raise :class:`MissingInputError` ``"<what> not present: <how>"``."""
    if value is None:
        raise MissingInputError(f"{what} not present: {how}")
    return value


def check_table(table: Any, where: str) -> pa.Table:
    """A non-empty metrics table with the store's columns (``raysweep.store.read_metrics``)."""
    if not isinstance(table, pa.Table):
        raise TypeError(
            f"{where}: expected a pyarrow.Table of the metrics store "
            f"(raysweep.store.read_metrics), got {type(table).__name__}."
        )
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{where}: the table lacks the metrics columns {missing}; expected the columns of "
            "raysweep.store.METRICS_SCHEMA."
        )
    if table.num_rows == 0:
        raise MissingInputError(
            f"{where}: metrics not present (the table has no rows): run the sweep "
            "(python sweeps/eigen_sweep.py) and wait for the first epoch."
        )
    return table


def as_vector(value: Any, name: str, *, min_size: int = 1) -> np.ndarray:
    """``value`` as a finite-or-NaN float64 1-D array of at least ``min_size`` entries."""
    if isinstance(value, str | bytes | Mapping) or value is None:
        raise TypeError(f"{name}: expected a 1-D array of numbers, got {type(value).__name__}.")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected a 1-D array of numbers, got {value!r:.80}.") from err
    if arr.ndim != 1 or arr.size < min_size:
        raise ValueError(
            f"{name}: expected a 1-D array with at least {min_size} entries, got shape {arr.shape}."
        )
    return arr


def as_series_mapping(value: Any, name: str) -> dict[str, np.ndarray]:
    """One array or a mapping ``{label: array}`` as ``{label: 1-D float array}``.

    A single array gets the label ``""`` (no legend entry).
    """
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{name}: expected at least one series, got an empty mapping.")
        return {str(k): as_vector(v, f"{name}[{k!r}]") for k, v in value.items()}
    return {"": as_vector(value, name)}


def check_choice(value: Any, name: str, allowed) -> Any:
    """``value`` if it is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed) or "(none in the table)"
        raise ValueError(f"{name}={value!r} is not available; expected one of {shown}.")
    return value


def check_window(smooth: Any) -> int | None:
    """``None`` (no smoothing) or a moving-average window, an integer >= 1."""
    if smooth is None:
        return None
    if isinstance(smooth, bool) or not isinstance(smooth, int | np.integer):
        raise TypeError(
            f"smooth: expected None or an integer window >= 1, got {type(smooth).__name__}."
        )
    if smooth < 1:
        raise ValueError(f"smooth: expected an integer window >= 1, got {smooth}.")
    return int(smooth)


def check_probability_map(value: Any, name: str) -> dict[str, float]:
    """A mapping ``{model: accuracy in [0, 1]}`` (the baseline accuracies)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a dict {{model: accuracy}}, got {type(value).__name__}.")
    out = {}
    for key, acc in value.items():
        if isinstance(acc, bool) or not isinstance(acc, int | float | np.number):
            raise TypeError(f"{name}[{key!r}]: expected a number in [0, 1], got {acc!r}.")
        if not 0.0 <= float(acc) <= 1.0:
            raise ValueError(f"{name}[{key!r}]: expected an accuracy in [0, 1], got {acc}.")
        out[str(key)] = float(acc)
    return out
