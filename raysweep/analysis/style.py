"""The look shared by every figure: Agg figures, colours, and how one curve is drawn.

Figures are ``matplotlib.figure.Figure`` objects with an Agg canvas attached, created without
``pyplot``: no global figure registry, no GUI backend, nothing to close, safe in a worker.
``fig.savefig(...)`` writes PNG or PDF; in Jupyter the returned figure displays as usual.

One curve (:func:`draw_curve`) is a line with markers at the mean over replicates, a shaded
band (a ``PolyCollection``) where several replicates exist, and special markers:

- ``x`` at the bottom of the panel: a replicate diverged at that index (not averaged in);
- hollow ``^`` at the top of the panel: a replicate never reached the loss threshold
  (``steps_to_threshold`` null, or -1 in a table built by hand; only for that metric).

Colour and marker say network or linearized; when a figure holds several variants (e.g. two
learning rates, :func:`raysweep.store.variant_of`) the line style tells them apart
(:func:`variant_styles`) and the labels name them.

Artists carry labels ``"network"``/``"linearized"`` (the lines; ``"network · <variant>"`` when
variants are shown), ``"… band: mean ± std over train.seed (batch order), n=3"`` (the bands,
gid ``"band"``), ``"diverged"``, ``"not reached"``, ``"baseline …"`` so tests and readers can
find them. Multi-panel figures have one legend below the panels (:func:`figure_legend`); bands
are not in it (the title says what they are).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator
from matplotlib.transforms import blended_transform_factory

from raysweep.analysis.series import IndexSeries, moving_average

COLORS = {"network": "#1f5fa8", "linearized": "#e07b00"}
MARKERS = {"network": "o", "linearized": "s"}
REFERENCE_COLOR = "#555555"
LINESTYLES = ("-", "--", ":", "-.")
BAND_GID = "band"
PANEL_SIZE = (4.2, 3.2)  # inches per panel


def new_figure(
    nrows: int = 1, ncols: int = 1, *, panel_size=PANEL_SIZE, min_width=6.4, squeeze=False
):
    """A Figure with an Agg canvas and an ``(nrows, ncols)`` array of axes (constrained layout).

    The figure is at least ``min_width`` inches wide, so that a title and a legend below the
    panels fit even with a single panel.
    """
    width = max(panel_size[0] * ncols, min_width)
    fig = Figure(figsize=(width, panel_size[1] * nrows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze)
    return fig, axes


def variant_styles(curves: list[IndexSeries]) -> dict[str, str]:
    """A line style per variant of ``curves`` (sorted; ``""`` first), the same in every panel."""
    variants = sorted({c.variant for c in curves})
    return {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(variants)}


def common_variant(curves: list[IndexSeries]) -> str | None:
    """The variant shared by all ``curves`` (``""`` when none), or None when they differ."""
    variants = {c.variant for c in curves}
    return variants.pop() if len(variants) == 1 else None


def draw_curve(
    ax,
    curve: IndexSeries,
    *,
    smooth: int | None = None,
    linestyle: str = "-",
    show_variant: bool = True,
) -> None:
    """Draw one curve (line, band when several replicates, diverged / not-reached markers).

    ``show_variant``: name the curve's variant in its label (False when the whole figure has
    one variant, said in its title instead).
    """
    kind = curve.kind
    color = COLORS[kind]
    label = curve.label if show_variant else kind
    x = curve.indices.astype(np.float64)
    mean, low, high = curve.mean, curve.low, curve.high
    if smooth and smooth > 1:
        ax.plot(x, mean, MARKERS[kind], color=color, alpha=0.3, markersize=3, label="_raw")
        mean, low, high = (moving_average(v, smooth) for v in (mean, low, high))
    ax.plot(
        x,
        mean,
        linestyle=linestyle,
        marker=MARKERS[kind],
        color=color,
        markersize=4,
        linewidth=1.6,
        label=label,
    )
    if curve.has_band:
        band = ax.fill_between(
            x,
            low,
            high,
            color=color,
            alpha=0.22,
            linewidth=0,
            label=f"{label} band: {curve.band_label()}",
        )
        band.set_gid(BAND_GID)
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    if curve.diverged.size:
        ax.plot(
            curve.diverged,
            np.full(curve.diverged.size, 0.03),
            "x",
            color=color,
            markersize=7,
            mew=1.8,
            transform=edge,
            clip_on=False,
            label="diverged",
        )
    if curve.unreached.size:
        ax.plot(
            curve.unreached,
            np.full(curve.unreached.size, 0.97),
            "^",
            color=color,
            markerfacecolor="none",
            markersize=7,
            transform=edge,
            clip_on=False,
            label="not reached",
        )


def _is_band(handle, label: str) -> bool:
    return getattr(handle, "get_gid", lambda: None)() == BAND_GID or label.endswith(" band")


def _legend_entries(axes) -> list[tuple]:
    """Unique (handle, label) pairs of ``axes``; private (``_``) labels and bands skipped."""
    seen, keep = set(), []
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        for h, label in zip(handles, labels, strict=True):
            if label.startswith("_") or _is_band(h, label) or label in seen:
                continue
            seen.add(label)
            keep.append((h, label))
    first = {"network": 0, "linearized": 1}  # the curves, then references and markers
    return sorted(keep, key=lambda entry: first.get(entry[1].split(" · ")[0], 2))


def finish_legend(ax, *, loc="best", fontsize=8) -> None:
    """A legend of one axes without duplicate, private or band labels."""
    keep = _legend_entries([ax])
    if keep:
        ax.legend(*zip(*keep, strict=True), loc=loc, fontsize=fontsize, framealpha=0.85)


def figure_legend(fig, *, fontsize=8) -> None:
    """One legend for all panels, below them (bands are explained in the title instead)."""
    keep = _legend_entries(fig.axes)
    if keep:
        width = fig.get_figwidth()
        longest = max(len(label) for _, label in keep)  # inches per entry ~ handle + text
        per_row = max(1, min(int(width / 1.5), int(width / (0.6 + 0.065 * longest))))
        fig.legend(
            *zip(*keep, strict=True),
            loc="outside lower center",
            fontsize=fontsize,
            ncols=min(len(keep), per_row),
            frameon=False,
        )


def plain_log_ticks(axis) -> None:
    """Tick labels of a log axis as plain numbers (20, 30, 100) instead of 2×10¹.

    Minor ticks are labelled only when the axis spans few decades (matplotlib's thinning).
    """
    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))


def style_axes(
    ax, *, xlabel: str, ylabel: str, title: str | None = None, index_axis: bool = False
) -> None:
    """Labels, a light grid, a title; ``index_axis``: integer ticks on x (eigen-indices)."""
    if index_axis:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def geometric_indices(indices) -> bool:
    """Whether eigen-indices are spaced geometrically: they span more than a decade (largest
    >= 32) and are dense at the top of the spectrum (median below a quarter of the largest),
    as the paper's grid (0-9, 10-90, 100-900) and the default run's (0, 1, 2, 3, 5, ..., 987)."""
    values = np.unique(np.asarray(list(indices), dtype=float))
    return values.size >= 4 and values[-1] >= 32 and np.median(values) < values[-1] / 4


def index_scale(ax, indices) -> None:
    """A symlog x axis (linear in [0, 1], log above; index 0 stays on the axis) with plain
    integer labels when ``indices`` are geometric (:func:`geometric_indices`); else linear."""
    if not geometric_indices(indices):
        return
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))


def empty_panel(ax, title: str) -> None:
    """A panel of the grid with no rows (e.g. a model not run on that dataset): title, a note."""
    ax.set_title(title, fontsize=10)
    ax.text(
        0.5,
        0.5,
        "no results",
        transform=ax.transAxes,
        ha="center",
        va="center",
        color=REFERENCE_COLOR,
        fontsize=9,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def panel_title(model: str, dataset: str, optimizer: str | None = None) -> str:
    """``"mlp · digits · sgd"``."""
    return " · ".join(p for p in (model, dataset, optimizer) if p)
