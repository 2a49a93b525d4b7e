"""What the eigenfunction artifact says before any training: the spectrum and binarization.

- :func:`plot_spectrum`: the top-k NTK eigenvalues λ_1 ≥ λ_2 ≥ … on log-log axes (rank 1 = the
  largest), the usual view of a power-law-like decay.
- :func:`plot_binarization`: per eigen-index, ``⟨sign(φ_j)/√N, φ_j⟩``, how much of the unit
  eigenvector survives taking its sign (the labels are sign(φ_j)). Reference lines: the value
  for a Gaussian vector, ``sqrt(2/π) ≈ 0.798``, and the paper's ≈ 0.78 on CIFAR-10.

Both take one array (``artifact.eigvals``, ``artifact.binarization`` of
:func:`raysweep.eigenfunctions.load_artifact`) or a mapping ``{label: array}`` to overlay
several artifacts (e.g. ``{"mlp-digits": ..., "lenet5-digits": ...}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from raysweep.analysis.figure_checks import as_series_mapping
from raysweep.analysis.style import COLORS, REFERENCE_COLOR, finish_legend, new_figure, style_axes

GAUSSIAN_BINARIZATION = math.sqrt(2.0 / math.pi)
"""``E|g|`` for g ~ N(0, 1): the binarization value of a Gaussian vector (≈ 0.798)."""

PAPER_BINARIZATION = 0.78
"""The value the paper reports for CIFAR-10 eigenfunctions."""


def _colors(n: int) -> list:
    return [COLORS["network"]] if n == 1 else [f"C{i % 10}" for i in range(n)]


def plot_spectrum(eigvals: np.ndarray | Mapping[str, np.ndarray]) -> Figure:
    """The NTK eigenvalue spectrum on log-log axes.

    Args:
      eigvals: ``(k,)`` eigenvalues (any order; sorted descending here), or ``{label: (k,)}``.

    Returns:
      A Figure with one axes; one line per series; x = rank (1 = largest), y = λ.
      Non-positive eigenvalues (round-off of a PSD matrix) cannot be shown on a log axis and
      are left out; the title says how many.

    Raises:
      TypeError / ValueError: not 1-D numbers, or no positive eigenvalue at all.
    """
    series = as_series_mapping(eigvals, "eigvals")
    fig, axes = new_figure(1, 1, panel_size=(5.4, 3.8))
    ax = axes[0, 0]
    dropped = 0
    for (label, vals), color in zip(series.items(), _colors(len(series)), strict=True):
        vals = np.sort(vals[np.isfinite(vals)])[::-1]
        positive = vals[vals > 0]
        if positive.size == 0:
            raise ValueError(
                f"eigvals{'[' + repr(label) + ']' if label else ''}: expected positive "
                f"eigenvalues to draw on a log axis, got none among {vals.size}."
            )
        dropped += vals.size - positive.size
        rank = np.arange(1, positive.size + 1)
        ax.plot(
            rank,
            positive,
            "-",
            marker="." if positive.size <= 64 else None,
            color=color,
            linewidth=1.5,
            label=label or f"top {positive.size}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    title = "NTK eigenvalue spectrum at initialization"
    if dropped:
        title += f" ({dropped} non-positive left out)"
    style_axes(ax, xlabel="rank i (1 = largest)", ylabel=r"eigenvalue $\lambda_i$", title=title)
    finish_legend(ax, loc="lower left")
    return fig


def plot_binarization(binarization: np.ndarray | Mapping[str, np.ndarray]) -> Figure:
    """``⟨sign(φ_j)/√N, φ_j⟩`` against the eigen-index j, with the reference values.

    Args:
      binarization: ``(k,)`` values in ``[0, 1]`` (``artifact.binarization``), or
        ``{label: (k,)}``.

    Returns:
      A Figure with one axes: one line per series, a dashed line at ``sqrt(2/π)`` (label
      ``Gaussian …``) and a dotted line at 0.78 (label ``paper …``).
    """
    series = as_series_mapping(binarization, "binarization")
    for label, vals in series.items():
        finite = vals[np.isfinite(vals)]
        if finite.size and (finite.min() < 0 or finite.max() > 1 + 1e-9):
            raise ValueError(
                f"binarization{'[' + repr(label) + ']' if label else ''}: expected values in "
                f"[0, 1], got a range [{finite.min():.3g}, {finite.max():.3g}]."
            )
    fig, axes = new_figure(1, 1, panel_size=(5.4, 3.8))
    ax = axes[0, 0]
    for (label, vals), color in zip(series.items(), _colors(len(series)), strict=True):
        j = np.arange(vals.size)
        ax.plot(
            j,
            vals,
            "-",
            marker="." if vals.size <= 64 else None,
            color=color,
            linewidth=1.2,
            label=label or f"mean {np.nanmean(vals):.3f}",
        )
    ax.axhline(
        GAUSSIAN_BINARIZATION,
        color=REFERENCE_COLOR,
        linestyle="--",
        linewidth=1,
        label=f"Gaussian √(2/π) ≈ {GAUSSIAN_BINARIZATION:.3f}",
    )
    ax.axhline(
        PAPER_BINARIZATION,
        color="#b3261e",
        linestyle=":",
        linewidth=1.2,
        label=f"paper (CIFAR-10) ≈ {PAPER_BINARIZATION}",
    )
    lows = [np.nanmin(v) for v in series.values() if np.any(np.isfinite(v))]
    ax.set_ylim(min([0.7, *lows]) - 0.02, 1.0)
    style_axes(
        ax,
        xlabel="eigenfunction index j",
        ylabel=r"$\langle \mathrm{sign}(\phi_j)/\sqrt{N}, \phi_j \rangle$",
        title="How binary the eigenfunctions are",
        index_axis=True,
    )
    finish_legend(ax, loc="lower right")
    return fig
