"""The one fixed schema of the metrics store, and the checks every row passes before it is written.

A *row* is one (trial, eigen-index, epoch): the state of one target of one trial after one epoch.
The columns, in order:

    identity  sweep_id, trial_id, model, dataset, optimizer (string), linearized (bool),
              eigen_index (int32, 0-based into the descending eigenvalues), seed (int64)
    progress  epoch (int32, 1-based), step (int64, optimizer steps so far)
    metrics   train_loss, train_accuracy, test_loss, test_accuracy (float64),
              steps_to_threshold (int64; first step where the training loss fell below
              ``train.loss_threshold``, -1 if not reached yet),
              l2_distance, cosine_distance (float64; of θ_t from θ₀), weight_norm, grad_norm
    state     status (string: running | finished | diverged | error),
              wall_time (float64, seconds since the trial started)

No column is nullable. Losses may be NaN or inf (a diverged target); accuracies lie in [0, 1].
Within one trial (one part file), (eigen_index, epoch) is unique: that is what makes a retried
or resumed trial *replace* its rows instead of adding to them.

:func:`rows_to_table` turns a list of row dicts into a ``pyarrow.Table`` of
:data:`METRICS_SCHEMA`, or raises ``ValueError``/``TypeError`` naming the row, the column,
what was expected and what was received.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

STATUSES = ("running", "finished", "diverged", "error")
"""Values of the ``status`` column. ``error``: the trial raised; its rows up to then are kept."""

TERMINAL_STATUSES = ("finished", "diverged")
"""Statuses after which a target is not trained further."""

IDENTITY_COLUMNS = (
    "sweep_id",
    "trial_id",
    "model",
    "dataset",
    "optimizer",
    "linearized",
    "eigen_index",
    "seed",
)

METRIC_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "steps_to_threshold",
    "l2_distance",
    "cosine_distance",
    "weight_norm",
    "grad_norm",
    "status",
)
"""Columns a trainer reports for each target after each epoch (``raysweep.training``)."""

KEY_COLUMNS = ("trial_id", "eigen_index", "epoch")
"""A row's identity in the whole sweep: never two rows with the same key."""

_TYPES: dict[str, pa.DataType] = {
    "sweep_id": pa.string(),
    "trial_id": pa.string(),
    "model": pa.string(),
    "dataset": pa.string(),
    "optimizer": pa.string(),
    "linearized": pa.bool_(),
    "eigen_index": pa.int32(),
    "seed": pa.int64(),
    "epoch": pa.int32(),
    "step": pa.int64(),
    "train_loss": pa.float64(),
    "train_accuracy": pa.float64(),
    "test_loss": pa.float64(),
    "test_accuracy": pa.float64(),
    "steps_to_threshold": pa.int64(),
    "l2_distance": pa.float64(),
    "cosine_distance": pa.float64(),
    "weight_norm": pa.float64(),
    "grad_norm": pa.float64(),
    "status": pa.string(),
    "wall_time": pa.float64(),
}

METRICS_SCHEMA = pa.schema(
    [pa.field(name, typ, nullable=False) for name, typ in _TYPES.items()],
    metadata={"raysweep.store": "metrics/v1"},
)
"""The schema of every part file and of :func:`raysweep.store.read_metrics`."""

COLUMNS = tuple(METRICS_SCHEMA.names)

# numpy scalars are accepted as well (the trainer may hand them over).
_NP_INTS, _NP_FLOATS, _NP_BOOLS = np.integer, np.floating, np.bool_
_TRIAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")


def check_trial_id(trial_id: Any) -> str:
    """Return ``trial_id`` if it can name a part file (letters, digits, ``._=+-``)."""
    if not isinstance(trial_id, str):
        raise TypeError(f"trial_id must be a string, got {type(trial_id).__name__}.")
    if not _TRIAL_ID.match(trial_id):
        raise ValueError(
            f"trial_id {trial_id!r} cannot name a part file: expected 1-200 characters among "
            "letters, digits and ._=+- (not starting with . or -), "
            "e.g. 'sgd-nn-pack000-mlp-digits'."
        )
    return trial_id


def _is_int(value: Any) -> bool:
    return isinstance(value, int | _NP_INTS) and not isinstance(value, bool | _NP_BOOLS)


def _is_float(value: Any) -> bool:
    return isinstance(value, int | float | _NP_INTS | _NP_FLOATS) and not isinstance(
        value, bool | _NP_BOOLS
    )


def _check_value(i: int, name: str, value: Any) -> Any:
    """The value converted to a plain Python scalar of the column's type, or an error."""
    typ = _TYPES[name]
    where = f"row {i}, column {name!r}"
    if value is None:
        raise ValueError(f"{where} is None; every column of the metrics schema is required.")
    if typ == pa.string():
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {type(value).__name__} {value!r}.")
        if name == "status" and value not in STATUSES:
            raise ValueError(f"{where}: status {value!r} is not one of {', '.join(STATUSES)}.")
        return value
    if typ == pa.bool_():
        if not isinstance(value, bool | _NP_BOOLS):
            raise TypeError(f"{where}: expected a bool, got {type(value).__name__} {value!r}.")
        return bool(value)
    if pa.types.is_integer(typ):
        if not _is_int(value):
            raise TypeError(f"{where}: expected an integer, got {type(value).__name__} {value!r}.")
        value = int(value)
        low = -1 if name == "steps_to_threshold" else 0
        if value < low:
            raise ValueError(f"{where}: expected an integer >= {low}, got {value}.")
        if typ == pa.int32() and value >= 2**31:
            raise ValueError(f"{where}: {value} does not fit in int32.")
        return value
    if not _is_float(value):
        raise TypeError(f"{where}: expected a number, got {type(value).__name__} {value!r}.")
    value = float(value)
    if name.endswith("accuracy") and not (math.isnan(value) or 0.0 <= value <= 1.0):
        raise ValueError(f"{where}: an accuracy must lie in [0, 1], got {value}.")
    return value


def validate_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check every row against :data:`METRICS_SCHEMA`; return them as plain-Python dicts.

    Raises:
      TypeError: a row is not a mapping, or a value has the wrong type.
      ValueError: a row misses columns or has extra ones, a value is out of range, or two rows
        share (trial_id, eigen_index, epoch).
    """
    if isinstance(rows, Mapping) or isinstance(rows, str | bytes):
        raise TypeError("rows must be a sequence of dicts (one per target and epoch).")
    expected = set(COLUMNS)
    clean, seen = [], set()
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"row {i} must be a dict, got {type(row).__name__}.")
        missing = [c for c in COLUMNS if c not in row]
        extra = sorted(set(row) - expected)
        if missing or extra:
            raise ValueError(
                f"row {i} does not match the metrics schema: missing {missing or 'none'}, "
                f"unexpected {extra or 'none'}. Expected exactly the columns "
                f"{', '.join(COLUMNS)}."
            )
        out = {name: _check_value(i, name, row[name]) for name in COLUMNS}
        key = tuple(out[c] for c in KEY_COLUMNS)
        if key in seen:
            raise ValueError(
                f"row {i} repeats (trial_id, eigen_index, epoch) = {key}; a trial writes each "
                "target's epoch once (rewrite the whole part file instead of appending)."
            )
        seen.add(key)
        clean.append(out)
    return clean


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Validated rows as a ``pyarrow.Table`` of :data:`METRICS_SCHEMA` (empty rows → 0 rows)."""
    clean = validate_rows(rows)
    columns = [pa.array([row[name] for row in clean], type=_TYPES[name]) for name in COLUMNS]
    return pa.Table.from_arrays(columns, schema=METRICS_SCHEMA)


def empty_table() -> pa.Table:
    """A table with :data:`METRICS_SCHEMA` and no rows."""
    return METRICS_SCHEMA.empty_table()


def check_schema(table: pa.Table, where: str) -> pa.Table:
    """Return ``table`` cast to :data:`METRICS_SCHEMA`, or raise naming the differing columns."""
    if table.schema.names != list(COLUMNS):
        raise ValueError(
            f"{where} has columns {table.schema.names}, expected {list(COLUMNS)}; it was not "
            "written by this version of raysweep.store."
        )
    wrong = [
        f"{f.name}: {f.type} (expected {_TYPES[f.name]})"
        for f in table.schema
        if f.type != _TYPES[f.name]
    ]
    if wrong:
        raise ValueError(f"{where} has column types that differ from the schema: {wrong}.")
    return table.cast(METRICS_SCHEMA)
