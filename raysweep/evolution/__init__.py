"""How the NTK changes during training: the kernel-evolution studies of the paper.

Each study trains networks with :mod:`raysweep.training`, probes the kernel with
:mod:`raysweep.ntk` / :mod:`raysweep.distributed` / :mod:`raysweep.eigen`, and saves what the
analysis and the report read under ``<results>/analysis/``. Every study keeps its trained
state next to its results, so a re-run after a crash in a later step does not train again.

- :func:`energy_study` (Table 1): energy of the binary task's labels on the top-K
  eigenvectors of the NTK at initialization and after training.
- :func:`alignment_study` (Figs 6-7): alignment of the first K initial eigenfunctions with the
  NTK after training on eigenfunction j, on the train, test and all samples.
- :func:`pretrained_study`: network vs linearization at initialization vs linearization
  around the trained network (both centered), on eigenfunction targets.
- :func:`baseline_study`: network vs linearization on the dataset's binary task (CIFAR2),
  the baseline line of the accuracy figures.

Scripts: ``sweeps/energy_concentration.py``, ``sweeps/kernel_alignment.py``,
``sweeps/pretrained_ntk.py``, ``sweeps/binary_baseline.py``.
"""

from raysweep.evolution.baseline import baseline_study
from raysweep.evolution.common import BINARY_TASKS, binary_task_name, target_variables
from raysweep.evolution.energy import energy_study, kernel_energy
from raysweep.evolution.pretrained import VARIANTS, centered_linearization, pretrained_study
from raysweep.evolution.trained_alignment import alignment_study, normalized_alignment

__all__ = [
    "BINARY_TASKS",
    "VARIANTS",
    "alignment_study",
    "baseline_study",
    "binary_task_name",
    "centered_linearization",
    "energy_study",
    "kernel_energy",
    "normalized_alignment",
    "pretrained_study",
    "target_variables",
]
