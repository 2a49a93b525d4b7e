"""Reading a sweep's table back as people want to see it: trial states and final accuracies.

Everything here is plain pyarrow over a table of :data:`~raysweep.store.METRICS_SCHEMA` (from
:func:`~raysweep.store.read_metrics`), so it works while a sweep is running and without Ray.

- :func:`latest_rows`: for every target (trial_id, target_id), the row of its latest epoch.
- :func:`trial_states`: one :class:`TrialState` per trial (status aggregated over its targets:
  ``error`` if any target errored, else ``running`` if any is still training, else
  ``diverged`` if any diverged, else ``finished``).
- :func:`variant_of`: the *variant* of a row, its grid point's axis values other than the
  replicate axis (``train.seed``) and the axes every view already splits by (eigen-index,
  model, dataset, optimizer, network/linearized), e.g. ``"train.learning_rate=0.02"``. Rows
  of different variants are never averaged together.
- :func:`format_trial_states`, :func:`format_accuracy`: the text printed by
  ``raysweep status`` and at the end of the main job.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raysweep.store.schema import STATUSES, parse_axes

_STATUS_RANK = {"error": 0, "running": 1, "diverged": 2, "finished": 3}

VARIANT_EXCLUDE = (
    "train.seed",
    "train.eigen_index",
    "model.name",
    "data.name",
    "train.optimizer",
    "train.linearized",
)
"""Axes left out of a variant: the replicate axis (``train.seed``) and the axes that the
tables and figures show as rows, columns or panels."""

REPLICATE_AXIS = "train.seed (batch order)"
"""What the replicates of one grid point differ in, as the tables and figures say it."""

_TARGET_SORT = [
    ("trial_id", "ascending"),
    ("eigen_index", "ascending"),
    ("seed", "ascending"),
    ("learning_rate", "ascending"),
    ("target_id", "ascending"),
]


def latest_rows(table: pa.Table) -> pa.Table:
    """For every target (trial_id, target_id), its row with the highest epoch.

    Sorted by (trial_id, eigen_index, seed, learning_rate, target_id), nulls last; all columns
    of ``table`` are kept.
    """
    if table.num_rows == 0:
        return table
    keys = ["trial_id", "target_id"]
    last = table.group_by(keys).aggregate([("epoch", "max")])
    last = last.rename_columns([*keys, "epoch"])
    out = table.join(last, keys=[*keys, "epoch"], join_type="inner")
    out = out.select(table.schema.names).cast(table.schema)
    return out.sort_by(_TARGET_SORT)  # nulls last (the default)


def _axis_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


@functools.lru_cache(maxsize=4096)
def _axes_items(axes_json: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, _axis_text(v)) for k, v in parse_axes(axes_json).items()))


def variant_of(axes_json: str, *, exclude: Iterable[str] = VARIANT_EXCLUDE) -> str:
    """The variant of a row: its ``axes`` without ``exclude``, as ``"k=v, k=v"`` (keys sorted).

    ``""`` when no other axis is left (e.g. ``"{}"``, or a grid of seeds and indices only).

    >>> variant_of('{"train.learning_rate": 0.02, "train.seed": 1, "model.name": "mlp"}')
    'train.learning_rate=0.02'
    """
    skip = {exclude} if isinstance(exclude, str) else set(exclude)
    return ", ".join(f"{k}={v}" for k, v in _axes_items(axes_json) if k not in skip)


def describe_replicates(counts: Iterable[int], *, by_seed: bool = True) -> str:
    """``"over train.seed (batch order), n=3"`` for a spread over replicates.

    ``counts``: the number of replicates of each point that shows a spread (``n=2-3`` when they
    differ). ``by_seed=False`` when the replicates of a point do not all differ in
    ``train.seed`` (e.g. the same grid point from two sweeps): ``"over replicates, n=2"``.
    """
    ns = sorted({int(c) for c in counts})
    what = REPLICATE_AXIS if by_seed else "replicates"
    if not ns:
        return f"over {what}"
    n = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"
    return f"over {what}, {n}"


@dataclass(frozen=True)
class TrialState:
    """Where one trial stands, from its latest rows (one per target).

    ``eigen_indices``: the distinct eigen-indices of its targets, sorted; ``target_ids``: its
    targets (several per eigen-index when seeds or learning rates share the trial).
    """

    trial_id: str
    model: str
    dataset: str
    optimizer: str
    linearized: bool
    eigen_indices: tuple[int, ...]
    epoch: int
    step: int
    status: str
    mean_train_loss: float
    mean_test_accuracy: float
    wall_time: float
    target_statuses: dict[str, int] = field(default_factory=dict)
    target_ids: tuple[str, ...] = ()


def _trial_status(statuses: Counter) -> str:
    return min(statuses, key=lambda s: _STATUS_RANK[s])


def trial_states(table: pa.Table) -> list[TrialState]:
    """One :class:`TrialState` per trial in ``table``, sorted by trial id."""
    by_trial: dict[str, list[dict]] = {}
    for row in latest_rows(table).to_pylist():
        by_trial.setdefault(row["trial_id"], []).append(row)
    states = []
    for trial_id, rows in sorted(by_trial.items()):
        statuses = Counter(r["status"] for r in rows)
        first = rows[0]
        states.append(
            TrialState(
                trial_id=trial_id,
                model=first["model"],
                dataset=first["dataset"],
                optimizer=first["optimizer"],
                linearized=first["linearized"],
                eigen_indices=tuple(sorted({r["eigen_index"] for r in rows})),
                epoch=min(r["epoch"] for r in rows),
                step=max(r["step"] for r in rows),
                status=_trial_status(statuses),
                mean_train_loss=sum(r["train_loss"] for r in rows) / len(rows),
                mean_test_accuracy=sum(r["test_accuracy"] for r in rows) / len(rows),
                wall_time=max(r["wall_time"] for r in rows),
                target_statuses=dict(statuses),
                target_ids=tuple(r["target_id"] for r in rows),
            )
        )
    return states


def count_states(states: list[TrialState]) -> dict[str, int]:
    """Trials per status, in the order of :data:`STATUSES` (zero counts left out)."""
    counts = Counter(s.status for s in states)
    return {s: counts[s] for s in STATUSES if counts[s]}


def _kind(linearized: bool) -> str:
    return "lin" if linearized else "nn"


def format_trial_states(states: list[TrialState], *, expected: int | None = None) -> str:
    """A text table: one line per trial with status, epoch and latest mean metrics."""
    counts = count_states(states)
    head = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no trial has written rows yet"
    if expected is not None:
        pending = max(expected - len(states), 0)
        head = f"{len(states)}/{expected} trials with rows ({head}); {pending} not started"
    lines = [f"trials: {head}"]
    if not states:
        return lines[0]
    width = max(len(s.trial_id) for s in states)
    lines.append(
        f"  {'trial':<{width}}  {'status':<8} {'epoch':>5} {'step':>7} {'targets':>7}"
        f" {'train_loss':>10} {'test_acc':>8} {'time_s':>7}"
    )
    for s in states:
        targets = len(s.target_ids) or len(s.eigen_indices)
        lines.append(
            f"  {s.trial_id:<{width}}  {s.status:<8} {s.epoch:>5} {s.step:>7}"
            f" {targets:>7} {s.mean_train_loss:>10.4g} {s.mean_test_accuracy:>8.3f}"
            f" {s.wall_time:>7.1f}"
        )
    return "\n".join(lines)


def _cell(rows: list[dict] | None) -> tuple[str, int]:
    """The text of one cell (the final rows of one grid point's replicates) and the number of
    values its ± std is over (0 when there is no spread)."""
    if not rows:
        return "-", 0
    alive = [r for r in rows if r["status"] != "diverged"]
    if not alive:
        return "div", 0
    values = [r["test_accuracy"] for r in alive if math.isfinite(r["test_accuracy"])]
    if not values:
        text, spread = "nan", 0
    elif len(values) == 1:
        text, spread = f"{values[0]:.3f}", 0
    else:
        mean, std = statistics.fmean(values), statistics.stdev(values)
        text, spread = f"{mean:.3f}±{std:.3f}", len(values)
    if len(alive) < len(rows):
        text += f" ({len(rows) - len(alive)} div)"
    if any(r["status"] in ("running", "error") for r in alive):
        text += "*"
    return text, spread


def _seeds_distinct(cells: Iterable[list[dict]]) -> bool:
    """True when the replicates of every cell with several rows differ in ``seed``."""
    return all(len({r["seed"] for r in rows}) == len(rows) for rows in cells if len(rows) > 1)


def format_accuracy(table: pa.Table) -> str:
    """Final test accuracy by eigen-index: network (nn) vs linearized (lin), per optimizer.

    One block per (model, dataset, variant) (:func:`variant_of`; the heading names a non-empty
    variant). A cell is the final test accuracy of one grid point: its value, or ``mean±std``
    over its seeds (``train.seed``, the batch order; the line under the table says over what
    and n). ``div``: every seed diverged; ``(n div)``: n seeds diverged and are left out; ``*``:
    not finished (the value of its latest epoch); ``-``: no row yet. The ``mean`` row is over
    finished targets only; rows ``diverged`` and ``unfinished`` count the others (shown when
    there are any).
    """
    last = latest_rows(table)
    if last.num_rows == 0:
        return "final test accuracy: no rows yet"
    rows = last.to_pylist()
    for r in rows:
        r["variant"] = variant_of(r["axes"])
    blocks = []
    for model, dataset, variant in sorted({(r["model"], r["dataset"], r["variant"]) for r in rows}):
        mine = [
            r for r in rows if (r["model"], r["dataset"], r["variant"]) == (model, dataset, variant)
        ]
        columns = sorted({(r["optimizer"], r["linearized"]) for r in mine})
        cells: dict[tuple, list[dict]] = {}
        for r in mine:
            cells.setdefault((r["optimizer"], r["linearized"], r["eigen_index"]), []).append(r)
        indices = sorted({r["eigen_index"] for r in mine})
        names = [f"{opt} {_kind(lin)}" for opt, lin in columns]
        grid = [["index", *names]]
        spreads = []
        for j in indices:
            line = [str(j)]
            for opt, lin in columns:
                text, spread = _cell(cells.get((opt, lin, j)))
                line.append(text)
                if spread:
                    spreads.append(spread)
            grid.append(line)
        means, counts = ["mean"], {"diverged": ["diverged"], "unfinished": ["unfinished"]}
        for opt, lin in columns:
            col = [r for r in mine if (r["optimizer"], r["linearized"]) == (opt, lin)]
            vals = [r["test_accuracy"] for r in col if r["status"] == "finished"]
            means.append(f"{sum(vals) / len(vals):.3f}" if vals else "-")
            div = sum(r["status"] == "diverged" for r in col)
            unfinished = sum(r["status"] in ("running", "error") for r in col)
            counts["diverged"].append(f"{div}/{len(col)}")
            counts["unfinished"].append(f"{unfinished}/{len(col)}")
        grid.append(means)
        extra = [line for line in counts.values() if any(not c.startswith("0/") for c in line[1:])]
        grid += extra
        widths = [max(6, *(len(line[0]) for line in grid))] + [
            max(10, *(len(line[i]) for line in grid)) for i in range(1, len(grid[0]))
        ]
        where = f"{model} on {dataset}" + (f", {variant}" if variant else "")
        lines = [f"final test accuracy, {where} (nn = network, lin = linearized):"]
        for line in grid:
            lines.append("  " + " ".join(f"{c:>{w}}" for c, w in zip(line, widths, strict=True)))
        if spreads:
            over = describe_replicates(spreads, by_seed=_seeds_distinct(cells.values()))
            lines.append(f"  (± std {over})")
        if extra:
            lines.append(
                "  (mean over finished targets only; diverged and unfinished counted above)"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def count_target_statuses(table: pa.Table) -> dict[str, int]:
    """Targets (trial_id, target_id) per status of their latest row."""
    last = latest_rows(table)
    if last.num_rows == 0:
        return {}
    counts = pc.value_counts(last.column("status")).to_pylist()
    found = {c["values"]: c["counts"] for c in counts}
    return {s: found[s] for s in STATUSES if s in found}
