"""Final test accuracy against the eigenfunction index, network vs linearized (paper Figs 2-3).

:func:`plot_accuracy_vs_index` draws one panel per (optimizer, (model, dataset)): rows are
optimizers (one row when ``optimizer`` is given), columns are the (model, dataset) pairs of the
table. In each panel the network and its linearization are two curves of the test accuracy at
the final epoch of every target (the latest epoch of a target still running), against the
eigen-index j of the labels sign(φ_j). Grid points that differ in other axes (variants, e.g.
two learning rates) are separate curves (line styles) named in the legend. See
:mod:`raysweep.analysis.series` for how replicates (the seeds, ``train.seed``) are aggregated
and :mod:`raysweep.analysis.style` for the markers.

:func:`accuracy_rows` gives the same numbers as a table (used by the report).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure

from raysweep.analysis.checks import check_probability_map, check_table, check_window
from raysweep.analysis.series import band_caption, index_series, panels, select
from raysweep.analysis.style import (
    REFERENCE_COLOR,
    common_variant,
    draw_curve,
    figure_legend,
    new_figure,
    panel_title,
    style_axes,
    variant_styles,
)


def plot_accuracy_vs_index(
    table: pa.Table,
    *,
    optimizer: str | None = None,
    baseline: Mapping[str, float] | None = None,
    smooth: int | None = None,
    band: str = "std",
) -> Figure:
    """Final-epoch test accuracy vs eigen-index, network vs linearized.

    Args:
      table: metrics table (:func:`raysweep.store.read_metrics`).
      optimizer: plot only this optimizer (one row of panels); ``None``: one row per optimizer.
      baseline: ``{model: accuracy}``, the test accuracy of that model on the dataset's own
        binary task (e.g. CIFAR2); a dashed horizontal line labelled ``baseline <model>: …``.
        Entries for models not in the table are ignored, but at least one must match.
      smooth: moving-average window over consecutive indices (``None``: raw means); the raw
        means stay visible as faint markers.
      band: ``"std"`` (mean ± std over seeds, ``train.seed``) or ``"ci95"``; drawn only where
        several seeds have a final row. The title says what the band is over and n.

    Returns:
      A Figure with ``len(optimizers) x len((model, dataset) pairs)`` axes. A dotted line marks
      chance (0.5). Diverged targets are ``x`` markers at the bottom, not averaged in.

    Raises:
      TypeError / ValueError: a wrong argument, an optimizer not in the table, an empty table.
    """
    table = check_table(table, "plot_accuracy_vs_index")
    smooth = check_window(smooth)
    optimizers, pairs = panels(table, optimizer)
    if baseline is not None:
        baseline = check_probability_map(baseline, "baseline")
        models = {m for m, _ in pairs}
        if not models & set(baseline):
            raise ValueError(
                f"baseline: expected accuracies keyed by model name among {sorted(models)}, "
                f"got keys {sorted(baseline)}."
            )
    curves = index_series(table, "test_accuracy", band=band)
    styles, shared = variant_styles(curves), common_variant(curves)
    fig, axes = new_figure(len(optimizers), len(pairs))
    for r, opt in enumerate(optimizers):
        for c, pair in enumerate(pairs):
            ax = axes[r, c]
            lows = [0.45]
            for curve in select(curves, opt, pair):
                draw_curve(
                    ax,
                    curve,
                    smooth=smooth,
                    linestyle=styles[curve.variant],
                    show_variant=shared is None,
                )
                if np.any(np.isfinite(curve.low)):
                    lows.append(float(np.nanmin(curve.low)) - 0.03)
            ax.axhline(0.5, color=REFERENCE_COLOR, linestyle=":", linewidth=1, label="chance")
            if baseline is not None and pair[0] in baseline:
                acc = baseline[pair[0]]
                ax.axhline(
                    acc,
                    color="#2a9d3a",
                    linestyle="--",
                    linewidth=1.4,
                    label=f"baseline {pair[0]}: {acc:.3f}",
                )
                lows.append(acc - 0.03)
            ax.set_ylim(max(min(lows), -0.02), 1.02)
            style_axes(
                ax,
                xlabel="eigenfunction index j",
                ylabel="test accuracy",
                title=panel_title(*pair, opt),
                index_axis=True,
            )
    title = r"Final test accuracy on labels sign($\phi_j$)"
    if shared:
        title += f" ({shared})"
    caption = band_caption(curves)
    if caption:
        title += f"\nshaded: {caption}"
    if smooth and smooth > 1:
        title += f"\n(moving average over {smooth} indices)"
    fig.suptitle(title, fontsize=11)
    figure_legend(fig)
    return fig


def _cell(mean: float, low: float, count: int, total: int, diverged: bool, running: bool) -> str:
    if count == 0:
        return "div" if diverged else "–"
    text = f"{mean:.3f}"
    if count >= 2:
        text += f" ± {mean - low:.3f}"
    if diverged:
        text += f" ({total - count} div)"
    return text + ("*" if running else "")


def accuracy_rows(table: pa.Table, *, band: str = "std") -> tuple[list[str], list[list[str]]]:
    """Final test accuracy by eigen-index as (header, rows) of text cells.

    Columns: ``model``, ``dataset``, ``variant`` (only when some row has one:
    :func:`raysweep.store.variant_of`, e.g. ``train.learning_rate=0.02``), ``index``, then one
    per (optimizer, network/linearized): ``mean`` or ``mean ± std`` over seeds (``train.seed``;
    :func:`raysweep.analysis.series.band_caption` of the same curves says over what and n);
    ``div``: every seed diverged; ``(n div)``: n seeds diverged and were left out; ``*``: not
    finished (value of the latest epoch); ``–``: no row.
    """
    table = check_table(table, "accuracy_rows")
    curves = index_series(table, "test_accuracy", band=band)
    columns = sorted({(c.optimizer, c.linearized) for c in curves})
    with_variant = any(c.variant for c in curves)
    header = ["model", "dataset", *(["variant"] if with_variant else []), "index"] + [
        f"{opt} {'linearized' if lin else 'network'}" for opt, lin in columns
    ]
    rows = []
    for point in sorted({(c.model, c.dataset, c.variant) for c in curves}):
        mine = {
            (c.optimizer, c.linearized): c
            for c in curves
            if (c.model, c.dataset, c.variant) == point
        }
        indices = sorted({int(j) for c in mine.values() for j in c.indices})
        for j in indices:
            cells = [point[0], point[1], *([point[2] or "–"] if with_variant else []), str(j)]
            for col in columns:
                curve = mine.get(col)
                hit = np.flatnonzero(curve.indices == j) if curve is not None else []
                if len(hit) == 0:
                    cells.append("–")
                    continue
                i = int(hit[0])
                cells.append(
                    _cell(
                        curve.mean[i],
                        curve.low[i],
                        int(curve.count[i]),
                        int(curve.total[i]),
                        j in curve.diverged,
                        j in curve.running,
                    )
                )
            rows.append(cells)
    return header, rows
