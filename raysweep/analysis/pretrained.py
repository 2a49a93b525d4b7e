"""Network vs linearization at init vs linearization around the trained network.

A *comparison* (produced by :func:`raysweep.evolution.pretrained_study`, saved by
:func:`raysweep.analysis.save_pretrained` as ``<results>/analysis/pretrained_ntk.json``)::

    {"model": "mlp", "dataset": "digits", "optimizer": "sgd",
     "records": [{"variant": "network", "eigen_index": 8, "status": "finished",
                  "test_accuracy": 0.81, "train_accuracy": 1.0, "train_loss": 0.004,
                  "steps_to_threshold": 212, "rows": [<metric dict per epoch>, ...]}, ...]}

``variant`` is one of :data:`VARIANTS`. ``None`` raises ``ValueError`` saying how to produce it.

- :func:`pretrained_rows`: ``(header, rows)``, one row per eigen-index, accuracy and steps per
  variant.
- :func:`plot_pretrained`: test accuracy and training loss per epoch, one colour per variant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from raysweep.analysis.figure_checks import require_present
from raysweep.analysis.style import COLORS, figure_legend, new_figure, style_axes
from raysweep.argcheck import check_int

VARIANTS = ("network", "linearized_init", "linearized_pretrained")
"""The three trained models, in display order."""

VARIANT_LABELS = {
    "network": "network",
    "linearized_init": "linearized at θ₀",
    "linearized_pretrained": "linearized at θ_T",
}
VARIANT_COLORS = {
    "network": COLORS["network"],
    "linearized_init": COLORS["linearized"],
    "linearized_pretrained": "#2a9d55",
}
FINAL_FIELDS = ("test_accuracy", "train_accuracy", "train_loss", "steps_to_threshold")
PRETRAINED_HOW = (
    "run python sweeps/pretrained_ntk.py --out <results folder> "
    "(raysweep.evolution.pretrained_study)."
)


def pretrained_records(records: Any) -> list[dict[str, Any]]:
    """Validated records: known variant, integer index, accuracy in [0, 1], rows present.

    Raises:
      ValueError: empty, a missing key, an unknown variant or an accuracy outside [0, 1].
      TypeError: not a list of dicts.
    """
    if isinstance(records, Mapping | str | bytes) or not isinstance(records, Sequence):
        raise TypeError(f"records: expected a list of dicts, got {type(records).__name__}.")
    if not records:
        raise ValueError("records: expected at least one record.")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise TypeError(f"records[{i}]: expected a dict, got {type(rec).__name__}.")
        missing = [f for f in ("variant", "eigen_index", *FINAL_FIELDS, "rows") if f not in rec]
        if missing:
            raise ValueError(f"records[{i}]: missing keys {missing}.")
        if rec["variant"] not in VARIANTS:
            raise ValueError(
                f"records[{i}]: variant {rec['variant']!r} is not one of {', '.join(VARIANTS)}."
            )
        j = check_int(rec["eigen_index"], f"records[{i}]['eigen_index']", minimum=0)
        acc = rec["test_accuracy"]
        if isinstance(acc, bool) or not isinstance(acc, int | float) or not 0.0 <= acc <= 1.0:
            raise ValueError(f"records[{i}]: test_accuracy must be in [0, 1], got {acc!r}.")
        if not isinstance(rec["rows"], Sequence) or not rec["rows"]:
            raise ValueError(f"records[{i}]: rows must be a non-empty list of per-epoch dicts.")
        out.append({**rec, "eigen_index": j})
    return out


def _comparison(payload: Any) -> dict[str, Any]:
    require_present(payload, "pretrained-NTK comparison", PRETRAINED_HOW)
    if not isinstance(payload, Mapping):
        raise TypeError(f"expected the comparison dict, got {type(payload).__name__}.")
    return {**payload, "records": pretrained_records(payload.get("records"))}


def pretrained_rows(payload: Any) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: per eigen-index, final test accuracy and steps per variant."""
    by_index: dict[int, dict[str, Mapping]] = {}
    for rec in _comparison(payload)["records"]:
        by_index.setdefault(int(rec["eigen_index"]), {})[rec["variant"]] = rec
    header = ["index"]
    for v in VARIANTS:
        header += [f"{VARIANT_LABELS[v]}: test acc", "steps to threshold"]
    rows = []
    for j in sorted(by_index):
        row = [str(j)]
        for v in VARIANTS:
            rec = by_index[j].get(v)
            if rec is None:
                row += ["-", "-"]
                continue
            steps = rec["steps_to_threshold"]  # None or -1: not reached
            reached = steps is not None and int(steps) >= 0
            row += [f"{rec['test_accuracy']:.3f}", str(int(steps)) if reached else "not reached"]
        rows.append(row)
    return header, rows


def plot_pretrained(payload: Any, *, max_indices: int = 4) -> Figure:
    """Test accuracy and training loss (log) per epoch; colour = variant, style = index.

    At most ``max_indices`` eigen-indices are drawn (evenly picked). Returns a Figure with
    two axes.
    """
    comp = _comparison(payload)
    max_indices = check_int(max_indices, "max_indices", minimum=1)
    indices = sorted({int(r["eigen_index"]) for r in comp["records"]})
    pick = np.unique(np.linspace(0, len(indices) - 1, min(len(indices), max_indices)).round())
    shown = [indices[int(p)] for p in pick]
    styles = ["-", "--", ":", "-."]
    fig, axes = new_figure(1, 2)
    acc_ax, loss_ax = axes[0]
    for rec in comp["records"]:
        j = int(rec["eigen_index"])
        if j not in shown:
            continue
        epochs = [r["epoch"] for r in rec["rows"]]
        style = styles[shown.index(j) % len(styles)]
        color = VARIANT_COLORS[rec["variant"]]
        label = f"{VARIANT_LABELS[rec['variant']]}, j={j}"
        acc_ax.plot(
            epochs, [r["test_accuracy"] for r in rec["rows"]], style, color=color, label=label
        )
        loss = np.asarray([r["train_loss"] for r in rec["rows"]], dtype=float)
        loss_ax.plot(epochs, np.where(loss > 0, loss, np.nan), style, color=color, label="_")
    loss_ax.set_yscale("log")
    style_axes(
        acc_ax, xlabel="epoch", ylabel="test accuracy", title="Test accuracy", index_axis=True
    )
    style_axes(
        loss_ax, xlabel="epoch", ylabel="training loss", title="Training loss", index_axis=True
    )
    title = "Network vs linearization at θ₀ vs at the trained θ_T"
    if comp.get("model"):
        title += f" ({comp['model']} on {comp.get('dataset', '?')}, {comp.get('optimizer', '?')})"
    fig.suptitle(title, fontsize=11)
    figure_legend(fig)
    return fig
