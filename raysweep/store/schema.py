"""The schema of the metrics store (``metrics/v2``) and the checks every row passes first.

A *row* is one (trial, target, epoch): the state of one target of one trial after one epoch.
A *target* is one grid point trained inside a trial: an eigen-index together with the
batch-order seed (``train.seed``), the learning rate and any other axis value that the trial
packs. The columns, in order:

    identity  sweep_id, trial_id, target_id (string; unique within a trial, see
              :func:`make_target_id`), model, dataset, optimizer (string), linearized (bool),
              eigen_index (int32, 0-based into the descending eigenvalues),
              seed (int64, ``train.seed``: the batch order of the target),
              learning_rate (float64, nullable: the target's base rate η₀, i.e.
              ``train.learning_rate`` for SGD or ``train.adam_learning_rate`` for Adam; null
              only in rows upgraded from ``metrics/v1`` parts, where it is unknown),
              axes (string: a JSON object, keys sorted, of the grid point's axis values, e.g.
              ``{"model.name": "mlp", "train.learning_rate": 0.02, "train.seed": 1}``; ``"{}"``
              when unknown)
    progress  epoch (int32, 1-based), step (int64, optimizer steps so far)
    metrics   train_loss, train_accuracy, test_loss, test_accuracy (float64),
              steps_to_threshold (int64, nullable; the optimizer steps done when the whole
              training set's loss was first ≤ ``train.loss_threshold``, checked
              ``train.threshold_checks`` times per epoch; null if not reached),
              l2_distance, cosine_distance (float64; of θ_t from θ₀), weight_norm, grad_norm
    state     status (string: running | finished | diverged | error),
              wall_time (float64, seconds since the trial started)

Only ``learning_rate`` and ``steps_to_threshold`` are nullable. Losses may be NaN or inf (a
diverged target); accuracies lie in [0, 1]. The training API reports ``steps_to_threshold =
-1`` for "not reached"; the store does not: a negative value is rejected (pass ``None``).
Within one trial (one part file), (target_id, epoch) is unique: that is what makes a retried or
resumed trial *replace* its rows instead of adding to them.

:func:`rows_to_table` turns a list of row dicts into a ``pyarrow.Table`` of
:data:`METRICS_SCHEMA`, or raises ``ValueError``/``TypeError`` naming the row, the column,
what was expected and what was received. :data:`METRICS_SCHEMA_V1` is the schema of parts
written before ``metrics/v2``; :func:`upgrade_v1` turns such a table into the current schema.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STATUSES = ("running", "finished", "diverged", "error")
"""Values of the ``status`` column. ``error``: the trial raised; its rows up to then are kept."""

TERMINAL_STATUSES = ("finished", "diverged")
"""Statuses after which a target is not trained further."""

SCHEMA_VERSION = "metrics/v2"
"""The ``raysweep.store`` entry of the schema metadata."""

IDENTITY_COLUMNS = (
    "sweep_id",
    "trial_id",
    "target_id",
    "model",
    "dataset",
    "optimizer",
    "linearized",
    "eigen_index",
    "seed",
    "learning_rate",
    "axes",
)
"""Columns that say which target a row belongs to (the same in every row of a target)."""

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

KEY_COLUMNS = ("trial_id", "target_id", "epoch")
"""A row's identity in the whole sweep: never two rows with the same key."""

SORT_COLUMNS = ("trial_id", "eigen_index", "seed", "learning_rate", "target_id", "epoch")
"""The order of the rows of :func:`raysweep.store.read_metrics` (nulls last)."""

NULLABLE_COLUMNS = ("learning_rate", "steps_to_threshold")
"""The only columns that may hold nulls."""

_TYPES: dict[str, pa.DataType] = {
    "sweep_id": pa.string(),
    "trial_id": pa.string(),
    "target_id": pa.string(),
    "model": pa.string(),
    "dataset": pa.string(),
    "optimizer": pa.string(),
    "linearized": pa.bool_(),
    "eigen_index": pa.int32(),
    "seed": pa.int64(),
    "learning_rate": pa.float64(),
    "axes": pa.string(),
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
    [pa.field(name, typ, nullable=name in NULLABLE_COLUMNS) for name, typ in _TYPES.items()],
    metadata={"raysweep.store": SCHEMA_VERSION},
)
"""The schema of every part file written and of :func:`raysweep.store.read_metrics`."""

COLUMNS = tuple(METRICS_SCHEMA.names)
assert COLUMNS == (*IDENTITY_COLUMNS, *METRIC_COLUMNS, "wall_time")

_V1_ADDED = ("target_id", "learning_rate", "axes")
METRICS_SCHEMA_V1 = pa.schema(
    [pa.field(name, typ, nullable=False) for name, typ in _TYPES.items() if name not in _V1_ADDED],
    metadata={"raysweep.store": "metrics/v1"},
)
"""The schema of parts written before ``metrics/v2`` (read back through :func:`upgrade_v1`):
no ``target_id``, ``learning_rate`` or ``axes``; ``steps_to_threshold`` -1 for "not reached"."""

NO_AXES = "{}"
"""The ``axes`` value of a row whose grid point is unknown."""

# numpy scalars are accepted as well (the trainer may hand them over).
_NP_INTS, _NP_FLOATS, _NP_BOOLS = np.integer, np.floating, np.bool_
_TRIAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")


def make_target_id(eigen_index: int, seed: int, learning_rate: float | None = None) -> str:
    """The ``target_id`` of a target: ``"j5-seed0"``, or ``"j5-seed1-lr0.02"`` with a rate.

    Give ``learning_rate`` when a trial packs several learning rates of one eigen-index (and
    seed); other packed axes need their own suffix so that the id stays unique in the trial.
    """
    for name, value in (("eigen_index", eigen_index), ("seed", seed)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"make_target_id: {name} must be an integer >= 0, got {value!r}.")
    text = f"j{int(eigen_index)}-seed{int(seed)}"
    if learning_rate is not None:
        if not _is_float(learning_rate) or not math.isfinite(learning_rate):
            raise ValueError(
                f"make_target_id: learning_rate must be a finite number or None, "
                f"got {learning_rate!r}."
            )
        text += f"-lr{float(learning_rate):g}"
    return text


def axes_json(axes: Mapping[str, Any] | None) -> str:
    """The ``axes`` value of a grid point: ``{"section.field": value}`` as JSON, keys sorted.

    ``None`` or an empty mapping gives ``"{}"``.
    """
    if axes is None:
        return NO_AXES
    if not isinstance(axes, Mapping):
        raise TypeError(f"axes must be a mapping of axis values, got {type(axes).__name__}.")
    return json.dumps({str(k): _plain(v) for k, v in axes.items()}, sort_keys=True)


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars (so that json can write them)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_axes(text: str, where: str = "axes") -> dict[str, Any]:
    """The axis values of an ``axes`` JSON string, or ``ValueError`` saying what is wrong."""
    if not isinstance(text, str):
        raise TypeError(f"{where}: expected a JSON object as a string, got {type(text).__name__}.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{where}: {text!r:.80} is not valid JSON ({err}); expected a JSON object of the grid "
            'point\'s axis values, e.g. \'{"train.seed": 1}\', or "{}".'
        ) from None
    if not isinstance(value, dict):
        raise ValueError(
            f"{where}: expected a JSON object of the grid point's axis values, e.g. "
            f'\'{{"train.seed": 1}}\', or "{{}}"; got a JSON {type(value).__name__} {text!r:.80}.'
        )
    return value


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
        if name in NULLABLE_COLUMNS:
            return None
        raise ValueError(
            f"{where} is None; every column of the metrics schema is required except "
            f"{' and '.join(NULLABLE_COLUMNS)}."
        )
    if typ == pa.string():
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {type(value).__name__} {value!r}.")
        if name == "status" and value not in STATUSES:
            raise ValueError(f"{where}: status {value!r} is not one of {', '.join(STATUSES)}.")
        if name == "target_id" and not value:
            raise ValueError(f"{where}: expected a non-empty target id, e.g. 'j5-seed0'.")
        if name == "axes":
            return axes_json(parse_axes(value, where))
        return value
    if typ == pa.bool_():
        if not isinstance(value, bool | _NP_BOOLS):
            raise TypeError(f"{where}: expected a bool, got {type(value).__name__} {value!r}.")
        return bool(value)
    if pa.types.is_integer(typ):
        if not _is_int(value):
            raise TypeError(f"{where}: expected an integer, got {type(value).__name__} {value!r}.")
        value = int(value)
        if value < 0:
            if name == "steps_to_threshold":
                raise ValueError(
                    f"{where}: {value} is negative; the store writes None when the loss threshold "
                    "was not reached (-1 is no longer used in the store: use None)."
                )
            raise ValueError(f"{where}: expected an integer >= 0, got {value}.")
        if typ == pa.int32() and value >= 2**31:
            raise ValueError(f"{where}: {value} does not fit in int32.")
        return value
    if not _is_float(value):
        raise TypeError(f"{where}: expected a number, got {type(value).__name__} {value!r}.")
    value = float(value)
    if name.endswith("accuracy") and not (math.isnan(value) or 0.0 <= value <= 1.0):
        raise ValueError(f"{where}: an accuracy must lie in [0, 1], got {value}.")
    if name == "learning_rate" and not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{where}: expected the target's base learning rate, a finite number > 0 "
            f"(or None when unknown), got {value}."
        )
    return value


_TARGET_IDENTITY = tuple(c for c in IDENTITY_COLUMNS if c not in ("sweep_id", "trial_id"))


def validate_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check every row against :data:`METRICS_SCHEMA`; return them as plain-Python dicts.

    ``axes`` is returned re-serialized with sorted keys (:func:`axes_json`).

    Raises:
      TypeError: a row is not a mapping, or a value has the wrong type.
      ValueError: a row misses columns or has extra ones, a value is out of range (e.g. a
        negative ``steps_to_threshold``: use None), ``axes`` is not a JSON object, two rows
        share (trial_id, target_id, epoch), or two rows of one target disagree on its identity
        (eigen_index, seed, learning_rate, ...).
    """
    if isinstance(rows, Mapping) or isinstance(rows, str | bytes):
        raise TypeError("rows must be a sequence of dicts (one per target and epoch).")
    expected = set(COLUMNS)
    clean, seen, targets = [], set(), {}
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
                f"row {i} repeats (trial_id, target_id, epoch) = {key}; a trial writes each "
                "target's epoch once (rewrite the whole part file instead of appending)."
            )
        seen.add(key)
        identity = tuple(out[c] for c in _TARGET_IDENTITY)
        first = targets.setdefault((out["trial_id"], out["target_id"]), identity)
        if first != identity:
            pairs = zip(_TARGET_IDENTITY, first, identity, strict=True)
            differ = [c for c, a, b in pairs if a != b]
            raise ValueError(
                f"row {i}: target {out['target_id']!r} of trial {out['trial_id']!r} has other "
                f"values of {differ} than an earlier row of that target; each target (one grid "
                "point) needs its own target_id (make_target_id)."
            )
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


def _same_columns(table: pa.Table, schema: pa.Schema) -> bool:
    return table.schema.names == schema.names and all(
        f.type == schema.field(f.name).type for f in table.schema
    )


def is_v1(table: pa.Table) -> bool:
    """True when ``table`` has exactly the columns and types of :data:`METRICS_SCHEMA_V1`."""
    return _same_columns(table, METRICS_SCHEMA_V1)


def upgrade_v1(table: pa.Table) -> pa.Table:
    """A table of :data:`METRICS_SCHEMA_V1` in the current schema.

    ``target_id`` = :func:`make_target_id` (eigen_index, seed), ``learning_rate`` null,
    ``axes`` ``"{}"``, and ``steps_to_threshold`` -1 (not reached) becomes null.
    """
    table = table.cast(METRICS_SCHEMA_V1.remove_metadata())
    n = table.num_rows
    columns = {name: table.column(name) for name in table.column_names}
    indices, seeds = table.column("eigen_index").to_pylist(), table.column("seed").to_pylist()
    columns["target_id"] = pa.array(
        [make_target_id(j, s) for j, s in zip(indices, seeds, strict=True)], type=pa.string()
    )
    columns["learning_rate"] = pa.nulls(n, type=pa.float64())
    columns["axes"] = pa.array([NO_AXES] * n, type=pa.string())
    steps = table.column("steps_to_threshold")
    columns["steps_to_threshold"] = pc.if_else(
        pc.less(steps, 0), pa.scalar(None, type=pa.int64()), steps
    )
    return pa.Table.from_arrays([columns[name] for name in COLUMNS], schema=METRICS_SCHEMA)


def check_schema(table: pa.Table, where: str) -> pa.Table:
    """Return ``table`` cast to :data:`METRICS_SCHEMA`, or raise naming the differing columns.

    Nulls are allowed only in :data:`NULLABLE_COLUMNS`; a negative ``steps_to_threshold`` is
    rejected (the store writes null for "not reached").
    """
    if table.schema.names != list(COLUMNS):
        raise ValueError(
            f"{where} has columns {table.schema.names}, expected {list(COLUMNS)}; it was not "
            f"written by this version of raysweep.store ({SCHEMA_VERSION})."
        )
    wrong = [
        f"{f.name}: {f.type} (expected {_TYPES[f.name]})"
        for f in table.schema
        if f.type != _TYPES[f.name]
    ]
    if wrong:
        raise ValueError(f"{where} has column types that differ from the schema: {wrong}.")
    nulls = [
        name for name in COLUMNS if name not in NULLABLE_COLUMNS and table.column(name).null_count
    ]
    if nulls:
        raise ValueError(
            f"{where} has nulls in the required column(s) {nulls}; only "
            f"{' and '.join(NULLABLE_COLUMNS)} may be null."
        )
    low = pc.min(table.column("steps_to_threshold")).as_py() if table.num_rows else None
    if low is not None and low < 0:
        raise ValueError(
            f"{where} has steps_to_threshold {low}; the store writes null when the threshold "
            "was not reached (-1 is no longer used in the store: use None)."
        )
    return table.cast(METRICS_SCHEMA)
