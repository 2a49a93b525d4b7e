"""Figures and tables of a sweep: pure functions from tables and arrays to matplotlib Figures.

Typical use::

    from raysweep.store import read_metrics
    from raysweep.analysis import plot_accuracy_vs_index, plot_training_metrics

    table = read_metrics("results/eigen_sweep")
    fig = plot_accuracy_vs_index(table, optimizer="sgd", baseline={"mlp": 0.97})
    fig.savefig("accuracy.png", dpi=150)

Every ``plot_*`` function only draws: it reads no file, writes none, and returns a
``matplotlib.figure.Figure`` with an Agg canvas (no pyplot state). Wrong arguments raise
``TypeError``/``ValueError`` saying what was expected and what was received; an optional input
given as ``None`` raises :class:`MissingInputError` (a ``ValueError``) "… not present: <how to
produce it>". The report (:mod:`raysweep.report`) does the I/O.

Modules, one idea each:

- ``series``: final row per target → curves over the eigen-index, one per variant (e.g. per
  learning rate; :func:`raysweep.store.variant_of`), mean and band over the seeds.
- ``style``: Agg figures, colours, how one curve (line, band, markers) is drawn.
- ``accuracy``: test accuracy vs index, network vs linearized (paper Figs 2-3) and its table.
- ``training``: steps to the loss threshold, ℓ2 and cosine distance from θ₀ (Figs 4-5).
- ``spectrum``: eigenvalue spectrum and binarization diagnostic of the artifact.
- ``energy``: energy concentration records → Table 1 and a bar chart.
- ``alignment_figures``: alignment of initial eigenfunctions with the final NTK (Figs 6-7).
- ``nads``: neural anisotropy directions, spatial and Fourier (Fig 1).
- ``pretrained``: network vs linearization at θ₀ vs linearization at the trained θ_T.
- ``tables``: (header, rows) → text / Markdown / HTML.
- ``inputs``: the optional inputs' files under ``<results>/analysis/``.
- ``figure_checks``: argument checks and :class:`MissingInputError`.
"""

from raysweep.analysis.accuracy import accuracy_rows, plot_accuracy_vs_index
from raysweep.analysis.alignment_figures import SPLITS, AlignmentData, plot_alignment
from raysweep.analysis.energy import (
    ENERGY_FIELDS,
    energy_concentration_table,
    energy_records,
    energy_rows,
    plot_energy_concentration,
)
from raysweep.analysis.figure_checks import MissingInputError
from raysweep.analysis.inputs import (
    ANALYSIS_DIR,
    analysis_dir,
    load_alignment,
    load_baseline,
    load_baseline_records,
    load_energy_records,
    load_nads,
    load_pretrained,
    save_alignment,
    save_baseline,
    save_baseline_records,
    save_energy_records,
    save_nads,
    save_pretrained,
)
from raysweep.analysis.nads import fourier_magnitude, plot_nads
from raysweep.analysis.pretrained import (
    VARIANTS,
    plot_pretrained,
    pretrained_records,
    pretrained_rows,
)
from raysweep.analysis.series import (
    IndexSeries,
    band_caption,
    final_rows,
    index_series,
    moving_average,
)
from raysweep.analysis.spectrum import (
    GAUSSIAN_BINARIZATION,
    PAPER_BINARIZATION,
    plot_binarization,
    plot_spectrum,
)
from raysweep.analysis.tables import format_table
from raysweep.analysis.training import TRAINING_METRICS, plot_training_metrics

__all__ = [
    "ANALYSIS_DIR",
    "ENERGY_FIELDS",
    "GAUSSIAN_BINARIZATION",
    "PAPER_BINARIZATION",
    "SPLITS",
    "TRAINING_METRICS",
    "VARIANTS",
    "AlignmentData",
    "IndexSeries",
    "MissingInputError",
    "accuracy_rows",
    "analysis_dir",
    "band_caption",
    "energy_concentration_table",
    "energy_records",
    "energy_rows",
    "final_rows",
    "format_table",
    "fourier_magnitude",
    "index_series",
    "load_alignment",
    "load_baseline",
    "load_baseline_records",
    "load_energy_records",
    "load_nads",
    "load_pretrained",
    "moving_average",
    "plot_accuracy_vs_index",
    "plot_alignment",
    "plot_binarization",
    "plot_energy_concentration",
    "plot_nads",
    "plot_pretrained",
    "plot_spectrum",
    "plot_training_metrics",
    "pretrained_records",
    "pretrained_rows",
    "save_alignment",
    "save_baseline",
    "save_baseline_records",
    "save_energy_records",
    "save_nads",
    "save_pretrained",
]
