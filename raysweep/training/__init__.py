"""Packed training of networks and their linearizations on ±1 labels (plain JAX + Optax).

Typical use (one trial of the sweep: T eigenfunction targets, one compiled program)::

    from raysweep.training import METRIC_NAMES, train_pack

    result = train_pack(module, variables, x_train, y_train, x_test, y_test,
                        train=TrainConfig(optimizer="sgd", epochs=100), linearized=False)
    rows = result.rows
    rows[t][-1]["test_accuracy"], rows[t][-1]["steps_to_threshold"]

``y_train`` is ``(T, n_tr)`` with entries ``±1`` (e.g. ``sign(φ_j)``), ``rows[t][e]`` a dict
with keys :data:`METRIC_NAMES`. The first two arguments are a Flax module (or an import-path
model) and its variables (batch norm handled), or ``apply_fn(params, x)`` and ``params0``
(batch-norm models then also pass ``train_apply_fn``, ``batch_stats`` and ``eval_apply_fn``).
The :class:`PackResult` also holds the final parameters and optimizer states. With
``checkpoint=path`` a run saves its state every ``checkpoint_every`` epochs and a retried run
resumes from it (contract in :mod:`raysweep.training.pack`; :func:`checkpoint_epoch`).

Files: ``metrics`` (losses, accuracy, distances, rows), ``optim`` (SGD/Adam and schedules),
``train_checks`` (input validation), ``program`` (the jitted, vmapped epoch), ``checkpoint`` (saving
and resuming the loop state), ``pack`` (entry points and the epoch loop).
"""

from raysweep.training.checkpoint import checkpoint_epoch
from raysweep.training.metrics import LOSSES, METRIC_NAMES, STATUSES
from raysweep.training.optim import SCHEDULES, make_optimizer, make_schedule
from raysweep.training.pack import PackResult, train_pack

__all__ = [
    "LOSSES",
    "METRIC_NAMES",
    "SCHEDULES",
    "STATUSES",
    "PackResult",
    "checkpoint_epoch",
    "make_optimizer",
    "make_schedule",
    "train_pack",
]
