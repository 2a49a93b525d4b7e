"""Every experiment of the paper as a study function: ``study(config, out_dir, ...)``.

One shape for all of them: a config (presets in :mod:`raysweep.config`, saved with the
results), a grid through :mod:`raysweep.sweep.grid` and one Tuner
(:func:`raysweep.sweep.run_sweep`), a study function here, and a thin script in ``sweeps/``
on the shared parser (:mod:`raysweep.script`).

- :func:`eigen_study` (``sweeps/eigen_sweep.py``): NTK eigenfunctions, then the sweep.
- :func:`nad_study` (``sweeps/nad_sweep.py``): NADs, then the sweep on D(u_j).
- the kernel-evolution studies (:mod:`raysweep.evolution`): :func:`energy_study`,
  :func:`alignment_study`, :func:`pretrained_study`, :func:`baseline_study`.

Importing this package does not import Ray (the sweep layer does, when a study runs).
"""

from raysweep.evolution import alignment_study, baseline_study, energy_study, pretrained_study
from raysweep.studies.eigen import EigenStudy, eigen_study, summarize_artifact
from raysweep.studies.nad import NADArtifact, NADStudy, compute_nads, load_nads, nad_study

__all__ = [
    "EigenStudy",
    "NADArtifact",
    "NADStudy",
    "alignment_study",
    "baseline_study",
    "compute_nads",
    "eigen_study",
    "energy_study",
    "load_nads",
    "nad_study",
    "pretrained_study",
    "summarize_artifact",
]
