"""Top-k eigenpairs of NTK Gram matrices (dense arrays or distributed operator handles).

- :func:`top_eigenpairs`: ``(eigvals, eigvecs)`` as an :class:`EigenPairs` tuple with
  residuals and counts; methods ``"dense"`` (LAPACK subset), ``"block"`` (thick-restart
  block Lanczos over ``matmat``), ``"nystrom"`` (the paper's approximation), ``"auto"``.
- :mod:`raysweep.eigen.progress`: what a long solve reports (:class:`EigenProgress`,
  :func:`progress_reporter`: console lines and the file ``raysweep status`` reads).
- :func:`binarization_diagnostic`, :func:`eigen_labels`: the paper's ``sign(φ)`` labels.

Conventions: eigenvalues float64 descending; eigenvectors are unit **rows** ``(k, N)`` in K's
dtype, each flipped so its largest-magnitude entry is positive (first index on ties);
``sign(0) = +1`` for labels.
"""

from raysweep.eigen.labels import binarization_diagnostic, eigen_labels
from raysweep.eigen.operator import KernelOperator, is_handle
from raysweep.eigen.pairs import ConvergenceWarning, EigenPairs, fix_signs
from raysweep.eigen.progress import PROGRESS_FILE, EigenProgress, progress_reporter, read_progress
from raysweep.eigen.solve import DEFAULT_TOL, resolve_method, top_eigenpairs

__all__ = [
    "DEFAULT_TOL",
    "ConvergenceWarning",
    "EigenPairs",
    "EigenProgress",
    "KernelOperator",
    "PROGRESS_FILE",
    "binarization_diagnostic",
    "eigen_labels",
    "fix_signs",
    "is_handle",
    "progress_reporter",
    "read_progress",
    "resolve_method",
    "top_eigenpairs",
]
