"""Energy concentration of the task's labels on the top NTK eigenfunctions (paper Table 1).

A *record* is one trained network on a binary task: how much of the labels' energy lies in the
span of the top-k eigenvectors of the NTK, at initialization and after training
(:func:`raysweep.ntk.energy_concentration`), and the test accuracy it reached::

    {"model": "lenet5", "dataset": "cifar2", "k": 50,
     "energy_init": 0.31, "energy_final": 0.74, "test_accuracy": 0.82,
     "curve": [{"epoch": 0, "energy": 0.31}, {"epoch": 1, "energy": 0.45}, ...]}

``curve`` (optional): the energy with the NTK after each of some epochs (0: initialization),
the main text's curve of energy concentration during training.

``sweeps/energy_concentration.py`` (:func:`raysweep.evolution.energy_study`) computes them and
saves them with :func:`raysweep.analysis.save_energy_records`
(``<results>/analysis/energy_concentration.json``).
``None`` for ``records`` raises a ``ValueError`` saying so.

- :func:`energy_rows`: the records as ``(header, rows)`` of text cells.
- :func:`energy_concentration_table`: the table as text, Markdown or HTML.
- :func:`plot_energy_concentration`: grouped bars (init vs after training) per record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from raysweep.analysis.figure_checks import require_present
from raysweep.analysis.style import COLORS, finish_legend, new_figure, style_axes
from raysweep.analysis.tables import format_table
from raysweep.argcheck import check_int

ENERGY_FIELDS = ("model", "dataset", "k", "energy_init", "energy_final", "test_accuracy")
"""The keys of one energy-concentration record."""

ENERGY_HOW = (
    "run python sweeps/energy_concentration.py --out <results folder> once per model "
    "(raysweep.evolution.energy_study; it saves them with raysweep.analysis.save_energy_records)."
)


def energy_records(records: Any) -> list[dict[str, Any]]:
    """Validated records (see the module doc), in the given order.

    Raises:
      ValueError: ``records`` is ``None`` ("energy concentration records not present: …"),
        empty, a record misses keys, or a fraction / accuracy is outside [0, 1].
      TypeError: not a sequence of mappings, or a value of the wrong type.
    """
    require_present(records, "energy concentration records", ENERGY_HOW)
    if isinstance(records, Mapping | str | bytes) or not isinstance(records, Sequence):
        raise TypeError(
            f"records: expected a list of dicts with keys {ENERGY_FIELDS}, got "
            f"{type(records).__name__}."
        )
    if not records:
        raise ValueError(f"records: expected at least one record with keys {ENERGY_FIELDS}.")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise TypeError(f"records[{i}]: expected a dict, got {type(rec).__name__}.")
        missing = [f for f in ENERGY_FIELDS if f not in rec]
        if missing:
            raise ValueError(f"records[{i}]: missing keys {missing}; expected {ENERGY_FIELDS}.")
        clean = {"model": rec["model"], "dataset": rec["dataset"]}
        for name in ("model", "dataset"):
            if not isinstance(clean[name], str):
                raise TypeError(f"records[{i}][{name!r}]: expected a string, got {rec[name]!r}.")
        clean["k"] = check_int(rec["k"], f"records[{i}]['k']", minimum=1)
        for name in ("energy_init", "energy_final", "test_accuracy"):
            value = rec[name]
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise TypeError(f"records[{i}][{name!r}]: expected a number, got {value!r}.")
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(
                    f"records[{i}][{name!r}]: expected a value in [0, 1], got {value}."
                )
            clean[name] = float(value)
        if rec.get("curve") is not None:
            clean["curve"] = _curve(rec["curve"], f"records[{i}]['curve']")
        out.append(clean)
    return out


def _curve(curve: Any, where: str) -> list[dict[str, Any]]:
    """``[{"epoch": e, "energy": E}, ...]`` checked: epochs >= 0 increasing, E in [0, 1]."""
    if isinstance(curve, Mapping | str | bytes) or not isinstance(curve, Sequence):
        raise TypeError(f"{where}: expected a list of {{epoch, energy}} dicts, got {curve!r:.80}.")
    out, last = [], -1
    for point in curve:
        if not isinstance(point, Mapping) or set(point) != {"epoch", "energy"}:
            raise ValueError(f"{where}: expected {{epoch, energy}} dicts, got {point!r:.80}.")
        epoch = check_int(point["epoch"], f"{where} epoch", minimum=0)
        energy = float(point["energy"])
        if epoch <= last or not 0.0 <= energy <= 1.0:
            raise ValueError(
                f"{where}: epochs must increase and energies lie in [0, 1], got {point!r}."
            )
        out.append({"epoch": epoch, "energy": energy})
        last = epoch
    return out


def energy_rows(records: Any) -> tuple[list[str], list[list[str]]]:
    """The records as ``(header, rows)`` of text cells, one row per record."""
    recs = energy_records(records)
    header = ["model", "dataset", "k", "energy at init", "energy after training", "test accuracy"]
    rows = [
        [
            r["model"],
            r["dataset"],
            str(r["k"]),
            f"{r['energy_init']:.3f}",
            f"{r['energy_final']:.3f}",
            f"{r['test_accuracy']:.3f}",
        ]
        for r in recs
    ]
    return header, rows


def energy_concentration_table(records: Any, *, fmt: str = "text") -> str:
    """Table 1 of the paper from ``records``; ``fmt``: ``"text"``, ``"markdown"``, ``"html"``."""
    header, rows = energy_rows(records)
    return format_table(header, rows, fmt=fmt)


def plot_energy_concentration(records: Any) -> Figure:
    """Grouped bars per record: energy on the top-k eigenfunctions at init vs after training.

    The test accuracy of each record is written above its bars. One axes; two bar containers
    labelled ``at initialization`` and ``after training``.
    """
    recs = energy_records(records)
    curves = [r for r in recs if r.get("curve")]
    fig, axes = new_figure(1, 2 if curves else 1, panel_size=(max(4.5, 1.3 * len(recs) + 2), 3.6))
    ax = axes[0, 0]
    x = np.arange(len(recs))
    init = [r["energy_init"] for r in recs]
    final = [r["energy_final"] for r in recs]
    ax.bar(
        x - 0.2, init, width=0.38, color=COLORS["network"], alpha=0.55, label="at initialization"
    )
    ax.bar(x + 0.2, final, width=0.38, color=COLORS["network"], label="after training")
    for xi, r in zip(x, recs, strict=True):
        ax.annotate(
            f"acc {r['test_accuracy']:.2f}",
            (xi, max(r["energy_init"], r["energy_final"])),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=8,
        )
    ax.set_xticks(x, [f"{r['model']}\n{r['dataset']} (k={r['k']})" for r in recs], fontsize=8)
    ax.set_ylim(0, 1.12)
    style_axes(
        ax,
        xlabel="",
        ylabel="energy on top-k eigenfunctions",
        title="Energy concentration of the labels",
    )
    finish_legend(ax, loc="upper left")
    if curves:
        ax = axes[0, 1]
        for i, r in enumerate(curves):
            epochs = [p["epoch"] for p in r["curve"]]
            ax.plot(
                [max(e, 0.5) for e in epochs],
                [p["energy"] for p in r["curve"]],
                marker="o",
                ms=3,
                color=COLORS["network"] if i == 0 else None,
                label=f"{r['model']} · {r['dataset']} (k={r['k']})",
            )
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        style_axes(
            ax,
            xlabel="epoch (initialization drawn at 0.5)",
            ylabel="energy on top-k eigenfunctions",
            title="Energy concentration during training",
        )
        finish_legend(ax, loc="lower right")
    return fig
