"""Final test accuracy against the eigenfunction index, network vs linearized (paper Figs 2-3).

:func:`plot_accuracy_vs_index` draws one panel per (model, dataset, optimizer), laid out as the
paper's Fig 2: one column per model (MLP, LeNet, ResNet18, then others), one row per (dataset,
optimizer) pair (datasets outermost; one optimizer when ``optimizer`` is given); a model without
rows for some dataset leaves that panel empty ("no results"). In each panel the network and
its linearization are two curves of the test accuracy at the final epoch of every target (the
latest epoch of a target still running), against the eigen-index j of the labels sign(φ_j),
as lines at the mean over the seeds (``train.seed``, the batch order) with a shaded band of ±
one standard deviation (``np.std(ddof=1)``). Grid points that differ in other axes (variants,
e.g. two learning rates or ``model.options`` values) are separate curves (line styles) named in
the legend, never averaged together. See :mod:`raysweep.analysis.series` for how replicates
(the seeds, ``train.seed``) are aggregated and :mod:`raysweep.analysis.style` for the markers.

:func:`accuracy_rows` gives the same numbers as a table (used by the report).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure

from raysweep.analysis.figure_checks import check_probability_map, check_table, check_window
from raysweep.analysis.series import band_caption, facets, index_series, select
from raysweep.analysis.style import (
    REFERENCE_COLOR,
    common_variant,
    draw_curve,
    empty_panel,
    figure_legend,
    index_scale,
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
      A Figure with ``len((dataset, optimizer) pairs) x len(models)`` axes (models in columns,
      :func:`raysweep.analysis.series.facets`). A dotted line marks chance (0.5). Diverged
      targets are ``x`` markers at the bottom, not averaged in.

    Raises:
      TypeError / ValueError: a wrong argument, an optimizer not in the table, an empty table.
    """
    table = check_table(table, "plot_accuracy_vs_index")
    smooth = check_window(smooth)
    grid = facets(table, optimizer)
    if baseline is not None:
        baseline = check_probability_map(baseline, "baseline")
        models = set(grid.models)
        if not models & set(baseline):
            raise ValueError(
                f"baseline: expected accuracies keyed by model name among {sorted(models)}, "
                f"got keys {sorted(baseline)}."
            )
    curves = index_series(table, "test_accuracy", band=band)
    styles, shared = variant_styles(curves), common_variant(curves)
    fig, axes = new_figure(*grid.shape)
    for r, c, model, dataset, opt in grid.cells():
        ax = axes[r, c]
        if (model, dataset, opt) not in grid.present:
            empty_panel(ax, panel_title(model, dataset, opt))
            continue
        lows = [0.45]
        for curve in select(curves, model, dataset, opt):
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
        if baseline is not None and model in baseline:
            acc = baseline[model]
            ax.axhline(
                acc,
                color="#2a9d3a",
                linestyle="--",
                linewidth=1.4,
                label=f"baseline {model}: {acc:.3f}",
            )
            lows.append(acc - 0.03)
        ax.set_ylim(max(min(lows), -0.02), 1.02)
        style_axes(
            ax,
            xlabel="eigenfunction index j",
            ylabel="test accuracy",
            title=panel_title(model, dataset, opt),
            index_axis=True,
        )
        index_scale(ax, [j for c in select(curves, model, dataset, opt) for j in c.indices])
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
