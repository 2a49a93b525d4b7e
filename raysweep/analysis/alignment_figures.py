"""Alignment of the initial eigenfunctions with the NTK after training (paper Figs 6-7).

After a network is trained on the labels sign(φ_j) of one eigen-index j (the *trained
index*), its NTK Θ_T has changed. The alignment of the *initial* eigenfunctions φ_i,
i = 0 … K-1, with Θ_T, ``α_T(φ_i) = φ_iᵀ Θ_T φ_i / n²`` (:func:`raysweep.ntk.kernel_alignment`),
computed on the train samples, the test samples and all of them, shows which directions the
kernel has grown towards: in the paper, mostly towards φ_j itself. The study
(:func:`raysweep.evolution.alignment_study`) stores it normalized by the energy of φ_i on the
samples used, ``α_T(φ_i) / mean(φ_i²) = φ_iᵀ Θ_T φ_i / (n ‖φ_i‖²)``, so the splits compare.

Format (:class:`AlignmentData`, saved by :func:`raysweep.analysis.save_alignment` as
``<results>/analysis/alignment.npz``)::

    trained_indices  (m,)    int, the trained eigen-index of each row
    alpha            {split: (m, K)} for split in "train", "test", "all" (at least one)
    init             {split: (K,)}, optional: α_0(φ_i) with the NTK at initialization

``sweeps/kernel_alignment.py`` (:func:`raysweep.evolution.alignment_study`) computes them;
``None`` raises a ``ValueError`` saying how.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from raysweep.analysis.figure_checks import require_present
from raysweep.analysis.style import REFERENCE_COLOR, figure_legend, new_figure, style_axes
from raysweep.argcheck import check_int

SPLITS = ("train", "test", "all")
ALIGNMENT_HOW = (
    "run python sweeps/kernel_alignment.py --out <results folder> "
    "(raysweep.evolution.alignment_study; it saves them with raysweep.analysis.save_alignment)."
)


@dataclass(frozen=True)
class AlignmentData:
    """End-of-training alignments (see the module doc). Checked on construction."""

    trained_indices: np.ndarray
    alpha: Mapping[str, np.ndarray]
    init: Mapping[str, np.ndarray] | None = None
    label: str = ""

    def __post_init__(self):
        idx = np.asarray(self.trained_indices)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"trained_indices: expected a non-empty 1-D integer array, got {idx!r:.80}."
            )
        if not isinstance(self.alpha, Mapping) or not self.alpha:
            raise TypeError(
                f"alpha: expected a dict {{split: (m, K) array}} with splits among "
                f"{SPLITS}, got {type(self.alpha).__name__}."
            )
        alpha, k = {}, None
        for split, arr in self.alpha.items():
            if split not in SPLITS:
                raise ValueError(f"alpha: split {split!r} is not one of {SPLITS}.")
            arr = np.asarray(arr, dtype=np.float64)
            k = (arr.shape[-1] if arr.ndim else 0) if k is None else k
            if arr.shape != (idx.size, k):
                raise ValueError(
                    f"alpha[{split!r}]: expected shape ({idx.size}, {k}) "
                    f"(trained indices x initial eigenfunctions), got {arr.shape}."
                )
            alpha[split] = arr
        init = None
        if self.init is not None:
            init = {s: np.asarray(v, dtype=np.float64) for s, v in dict(self.init).items()}
            bad = {s: v.shape for s, v in init.items() if s not in alpha or v.shape != (k,)}
            if bad:
                raise ValueError(
                    f"init: expected a ({k},) array for splits among {sorted(alpha)}, got {bad}."
                )
        object.__setattr__(self, "trained_indices", idx.astype(np.int64))
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "init", init)

    @property
    def num_eigen(self) -> int:
        """K, the number of initial eigenfunctions."""
        return int(next(iter(self.alpha.values())).shape[1])

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], label: str = "") -> AlignmentData:
        """From flat arrays ``trained_indices``, ``alpha_<split>``, ``init_<split>`` (npz keys)."""
        if "trained_indices" not in arrays:
            raise ValueError(f"alignment arrays: missing 'trained_indices'; got {sorted(arrays)}.")
        alpha = {s: arrays[f"alpha_{s}"] for s in SPLITS if f"alpha_{s}" in arrays}
        init = {s: arrays[f"init_{s}"] for s in SPLITS if f"init_{s}" in arrays}
        return cls(arrays["trained_indices"], alpha, init or None, label)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The inverse of :meth:`from_arrays`."""
        out = {"trained_indices": self.trained_indices}
        out.update({f"alpha_{s}": v for s, v in self.alpha.items()})
        out.update({f"init_{s}": v for s, v in (self.init or {}).items()})
        return out


def plot_alignment(data: AlignmentData | Mapping[str, Any] | None, *, max_lines: int = 8) -> Figure:
    """α_T(φ_i) against the initial eigen-index i, log y, one panel per split.

    Args:
      data: an :class:`AlignmentData` or its flat arrays (:meth:`AlignmentData.from_arrays`);
        ``None`` raises ``ValueError("end-of-training alignment not present: …")``.
      max_lines: at most this many trained indices are drawn (evenly picked), for legibility.

    Returns:
      A Figure with one axes per split present (order train, test, all); one line per drawn
      trained index (labelled ``trained j=…``, a dot marks i = j) and, when given, the
      alignment at initialization as a dashed black line (``at initialization``).
    """
    require_present(data, "end-of-training alignment", ALIGNMENT_HOW)
    if not isinstance(data, AlignmentData):
        if not isinstance(data, Mapping):
            raise TypeError(
                f"data: expected AlignmentData or a dict of arrays, got {type(data).__name__}."
            )
        data = AlignmentData.from_arrays(data)
    max_lines = check_int(max_lines, "max_lines", minimum=1)
    splits = [s for s in SPLITS if s in data.alpha]
    m = data.trained_indices.size
    rows = np.unique(np.linspace(0, m - 1, min(m, max_lines)).round().astype(int))
    cmap = colormaps["viridis"]
    fig, axes = new_figure(1, len(splits))
    i = np.arange(data.num_eigen)
    for ax, split in zip(axes[0], splits, strict=True):
        alpha = data.alpha[split]
        for n, r in enumerate(rows):
            color = cmap(0.9 * n / max(len(rows) - 1, 1))
            vals = np.where(alpha[r] > 0, alpha[r], np.nan)
            j = int(data.trained_indices[r])
            ax.plot(i, vals, "-", color=color, linewidth=1.2, label=f"trained j={j}")
            if j < data.num_eigen and np.isfinite(vals[j]):
                ax.plot([j], [vals[j]], "o", color=color, markersize=5, label="_peak")
        if data.init is not None and split in data.init:
            init = np.where(data.init[split] > 0, data.init[split], np.nan)
            ax.plot(i, init, "--", color=REFERENCE_COLOR, linewidth=1.4, label="at initialization")
        ax.set_yscale("log")
        style_axes(
            ax,
            xlabel="initial eigenfunction index i",
            ylabel=r"alignment $\alpha_T(\phi_i)$",
            title=f"{split} samples",
            index_axis=True,
        )
    title = "Alignment of the initial eigenfunctions with the NTK after training"
    fig.suptitle(f"{title} ({data.label})" if data.label else title, fontsize=11)
    figure_legend(fig)
    return fig
