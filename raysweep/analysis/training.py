"""How hard each target was to fit, network vs linearized (paper Figs 4-5).

:func:`plot_training_metrics` draws, against the eigen-index j, at the final epoch of every
target:

- ``steps_to_threshold``: optimizer steps until the whole training set's loss was first at or
  below the threshold (``train.loss_threshold``, the paper's 0.01; checked
  ``train.threshold_checks`` times per epoch), on a log y-axis. Null in the store
  (or -1 in a table built by hand) means *not reached*: that replicate is left out of the mean
  and the index gets a hollow ``^`` at the top of the panel ("not reached"); an index where no
  replicate reached it has no point on the line.
- ``l2_distance``: ‖θ_T − θ₀‖₂, how far the parameters moved.
- ``cosine_distance``: 1 − cos(θ_T, θ₀).

Layout, as :func:`raysweep.analysis.plot_accuracy_vs_index` (the paper's figures): one column
per model; one row per (dataset, optimizer, metric), datasets outermost, then optimizers (only
that optimizer's rows when ``optimizer`` is given), the metrics of one (dataset, optimizer)
stacked. With a single model and (dataset, optimizer) the grid is transposed: one row, one
column per metric. A model without rows for some dataset leaves its panels empty. Diverged
targets (NaN losses) are ``x`` markers at the bottom and never averaged in. Variants (e.g. two
learning rates) are separate curves, as in :func:`raysweep.analysis.plot_accuracy_vs_index`;
the title says what the bands are over (seeds, ``train.seed``) and n.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from matplotlib.figure import Figure

from raysweep.analysis.figure_checks import check_choice, check_table, check_window
from raysweep.analysis.series import band_caption, facets, index_series, select
from raysweep.analysis.style import (
    common_variant,
    draw_curve,
    empty_panel,
    figure_legend,
    index_scale,
    new_figure,
    panel_title,
    plain_log_ticks,
    style_axes,
    variant_styles,
)

TRAINING_METRICS = ("steps_to_threshold", "l2_distance", "cosine_distance")
"""The metrics of :func:`plot_training_metrics`, in its default column order."""

_LOG_METRICS = ("steps_to_threshold",)


def metric_label(metric: str, threshold: float | None = None) -> str:
    """The y-axis label of a training metric."""
    if metric == "steps_to_threshold":
        return f"steps to train loss < {threshold:g}" if threshold else "steps to loss threshold"
    return {
        "l2_distance": r"$\|\theta_T - \theta_0\|_2$",
        "cosine_distance": r"cosine distance($\theta_T$, $\theta_0$)",
    }[metric]


def plot_training_metrics(
    table: pa.Table,
    *,
    optimizer: str | None = None,
    metrics: Sequence[str] = TRAINING_METRICS,
    threshold: float | None = None,
    smooth: int | None = None,
    band: str = "std",
) -> Figure:
    """Steps to the loss threshold and parameter distances vs eigen-index (see module doc).

    Args:
      table: metrics table (:func:`raysweep.store.read_metrics`).
      optimizer: only this optimizer's rows; ``None``: every optimizer of the table.
      metrics: a non-empty subset of :data:`TRAINING_METRICS`, in row order.
      threshold: the loss threshold, for the label only (the store records the step, not the
        threshold; the report passes ``train.loss_threshold``).
      smooth, band: as in :func:`raysweep.analysis.plot_accuracy_vs_index`.

    Returns:
      A Figure with ``(len((dataset, optimizer) pairs) * len(metrics)) x len(models)`` axes
      (``1 x len(metrics)`` for a single model and (dataset, optimizer) pair).
    """
    table = check_table(table, "plot_training_metrics")
    smooth = check_window(smooth)
    if isinstance(metrics, str) or not metrics:
        raise TypeError(
            f"metrics: expected a non-empty sequence of names among {TRAINING_METRICS}, "
            f"got {metrics!r}."
        )
    for m in metrics:
        check_choice(m, "metrics[...]", TRAINING_METRICS)
    grid = facets(table, optimizer)
    curves = {m: index_series(table, m, band=band) for m in metrics}
    every = [c for curves_m in curves.values() for c in curves_m]
    styles, shared = variant_styles(every), common_variant(every)
    rows, ncols = grid.shape
    if rows * ncols == 1:
        fig, axes = new_figure(1, len(metrics), panel_size=(3.4, 2.7))
        axes = axes.T  # axes[metric, model]
    else:
        fig, axes = new_figure(rows * len(metrics), ncols, panel_size=(3.4, 2.7))
    for r, c, model, dataset, opt in grid.cells():
        for k, metric in enumerate(metrics):
            ax = axes[r * len(metrics) + k, c]
            title = panel_title(model, dataset, opt)
            if (model, dataset, opt) not in grid.present:
                empty_panel(ax, title)
                continue
            shown = select(curves[metric], model, dataset, opt)
            for curve in shown:
                draw_curve(
                    ax,
                    curve,
                    smooth=smooth,
                    linestyle=styles[curve.variant],
                    show_variant=shared is None,
                )
            if metric in _LOG_METRICS:
                ax.set_yscale("log")
                plain_log_ticks(ax.yaxis)
                if not any((curve.mean > 0).any() for curve in shown):
                    ax.set_ylim(1, 10)  # nothing reached: an empty but valid log axis
            style_axes(
                ax,
                xlabel="eigenfunction index j",
                ylabel=metric_label(metric, threshold),
                title=title,
                index_axis=True,
            )
            index_scale(ax, [j for curve in shown for j in curve.indices])
    title = r"Training on sign($\phi_j$): steps to the loss threshold and distance from $\theta_0$"
    if shared:
        title += f" ({shared})"
    caption = band_caption(every)
    if caption:
        title += f"\nshaded: {caption}"
    fig.suptitle(title, fontsize=11)
    figure_legend(fig)
    return fig
