"""Reading a sweep's table back as people want to see it: trial states and final accuracies.

Everything here is plain pyarrow over a table of :data:`~raysweep.store.METRICS_SCHEMA` (from
:func:`~raysweep.store.read_metrics`), so it works while a sweep is running and without Ray.

- :func:`latest_rows`: for every (trial, eigen-index), the row of its latest epoch.
- :func:`trial_states`: one :class:`TrialState` per trial (status aggregated over its targets:
  ``error`` if any target errored, else ``running`` if any is still training, else
  ``diverged`` if any diverged, else ``finished``).
- :func:`format_trial_states`, :func:`format_accuracy`: the text printed by
  ``raysweep status`` and at the end of the main job.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from raysweep.store.schema import STATUSES

_STATUS_RANK = {"error": 0, "running": 1, "diverged": 2, "finished": 3}


def latest_rows(table: pa.Table) -> pa.Table:
    """For every (trial_id, eigen_index), its row with the highest epoch."""
    if table.num_rows == 0:
        return table
    last = table.group_by(["trial_id", "eigen_index"]).aggregate([("epoch", "max")])
    last = last.rename_columns(["trial_id", "eigen_index", "epoch"])
    out = table.join(last, keys=["trial_id", "eigen_index", "epoch"], join_type="inner")
    out = out.select(table.schema.names).cast(table.schema)
    return out.sort_by([("trial_id", "ascending"), ("eigen_index", "ascending")])


@dataclass(frozen=True)
class TrialState:
    """Where one trial stands, from its latest rows (one per target)."""

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
                eigen_indices=tuple(r["eigen_index"] for r in rows),
                epoch=min(r["epoch"] for r in rows),
                step=max(r["step"] for r in rows),
                status=_trial_status(statuses),
                mean_train_loss=sum(r["train_loss"] for r in rows) / len(rows),
                mean_test_accuracy=sum(r["test_accuracy"] for r in rows) / len(rows),
                wall_time=max(r["wall_time"] for r in rows),
                target_statuses=dict(statuses),
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
        lines.append(
            f"  {s.trial_id:<{width}}  {s.status:<8} {s.epoch:>5} {s.step:>7}"
            f" {len(s.eigen_indices):>7} {s.mean_train_loss:>10.4g} {s.mean_test_accuracy:>8.3f}"
            f" {s.wall_time:>7.1f}"
        )
    return "\n".join(lines)


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if row["status"] == "diverged":
        return "div"
    text = f"{row['test_accuracy']:.3f}"
    return text + ("*" if row["status"] in ("running", "error") else "")


def format_accuracy(table: pa.Table) -> str:
    """Final test accuracy by eigen-index: network (nn) vs linearized (lin), per optimizer.

    One block per (model, dataset). ``div``: the target diverged; ``*``: not finished (the value
    of its latest epoch); ``-``: no row yet. The mean is over finished targets only; rows
    ``diverged`` and ``unfinished`` count the others (shown when there are any).
    """
    last = latest_rows(table)
    if last.num_rows == 0:
        return "final test accuracy: no rows yet"
    rows = last.to_pylist()
    blocks = []
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in rows}):
        mine = [r for r in rows if r["model"] == model and r["dataset"] == dataset]
        columns = sorted(
            {(r["optimizer"], r["linearized"]) for r in mine}, key=lambda c: (c[0], c[1])
        )
        cells = {(r["optimizer"], r["linearized"], r["eigen_index"]): r for r in mine}
        indices = sorted({r["eigen_index"] for r in mine})
        names = [f"{opt} {_kind(lin)}" for opt, lin in columns]
        lines = [f"final test accuracy, {model} on {dataset} (nn = network, lin = linearized):"]
        lines.append(f"  {'index':>6}" + "".join(f"{n:>11}" for n in names))
        for j in indices:
            lines.append(
                f"  {j:>6}"
                + "".join(f"{_cell(cells.get((opt, lin, j))):>11}" for opt, lin in columns)
            )
        means, counts = [], {"diverged": [], "unfinished": []}
        for opt, lin in columns:
            mine_col = [cells[(opt, lin, j)] for j in indices if (opt, lin, j) in cells]
            vals = [r["test_accuracy"] for r in mine_col if r["status"] == "finished"]
            means.append(f"{sum(vals) / len(vals):.3f}" if vals else "-")
            counts["diverged"].append(sum(r["status"] == "diverged" for r in mine_col))
            counts["unfinished"].append(sum(r["status"] in ("running", "error") for r in mine_col))
        lines.append(f"  {'mean':>6}" + "".join(f"{m:>11}" for m in means))
        for label, values in counts.items():
            if any(values):
                total = [
                    len([j for j in indices if (opt, lin, j) in cells]) for opt, lin in columns
                ]
                lines.append(
                    f"  {label:>6}"
                    + "".join(f"{f'{v}/{t}':>11}" for v, t in zip(values, total, strict=True))
                )
        if any(any(v) for v in counts.values()):
            lines.append(
                "  (mean over finished targets only; diverged and unfinished counted above)"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def count_target_statuses(table: pa.Table) -> dict[str, int]:
    """Targets (trial, eigen-index) per status of their latest row."""
    last = latest_rows(table)
    if last.num_rows == 0:
        return {}
    counts = pc.value_counts(last.column("status")).to_pylist()
    found = {c["values"]: c["counts"] for c in counts}
    return {s: found[s] for s in STATUSES if s in found}
