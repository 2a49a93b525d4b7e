"""Neural anisotropy directions (NADs) and the linearly separable data built from them.

Typical use (Appendix C of the paper: GeLU networks, NADs at the origin)::

    from raysweep.models import create_model
    from raysweep.nads import nad_dataset, nads

    module, variables, apply_fn = create_model("lenet5", (32, 32, 1), seed=0, activation="gelu")
    eigvals, directions = nads(apply_fn, variables["params"], (32, 32, 1), k=10)
    x_tr, y_tr, x_te, y_te = nad_dataset(directions[3], (32, 32, 1), seed=0)

Modules, one idea each:

- ``operator``: M = ∇²_{x,θ} f (P × d) as matrix-free products M v, Mᵀ w, MᵀM V.
- ``solve``: :func:`nads`, the top right singular vectors of M (Theorem 1), and :class:`NADs`.
- ``dataset``: :func:`nad_dataset` (D(u), equation (1) of Appendix C.1) and
  :func:`gaussian_samples` (x ~ N(0, σ²I) for the data average of Theorem 1).
- ``nad_checks``: input validation.

Only numerics live here (no Ray, no sweep layer). The experiment, NADs per model and then
network vs linearization on D(u_j) through the eigen sweep's machinery, is the study
:func:`raysweep.studies.nad_study` (``sweeps/nad_sweep.py``).

Figures: :func:`raysweep.analysis.plot_nads` (space and Fourier magnitude) and
:func:`raysweep.analysis.plot_accuracy_vs_index` (the NAD index is the store's
``eigen_index``).
"""

from raysweep.nads.dataset import gaussian_samples, nad_dataset, unit_direction
from raysweep.nads.operator import GramHandle, MixedDerivative
from raysweep.nads.solve import DEFAULT_DENSE_MAX_DIM, VANISHING_RTOL, NADs, nads

__all__ = [
    "DEFAULT_DENSE_MAX_DIM",
    "VANISHING_RTOL",
    "GramHandle",
    "MixedDerivative",
    "NADs",
    "gaussian_samples",
    "nad_dataset",
    "nads",
    "unit_direction",
]
