"""The paper's optimizers as Optax transformations, with an optional per-target lr scale.

- ``train.optimizer == "sgd"``: :func:`optax.sgd` with ``momentum=train.momentum`` (heavy ball,
  ``v ← μ v + g``, ``θ ← θ − η_k v``; ``momentum=0`` is plain gradient descent) and base rate
  ``train.learning_rate`` (paper: 0.05, μ = 0.9).
- ``train.optimizer == "adam"``: :func:`optax.adam` with base rate ``train.adam_learning_rate``
  (Optax defaults β₁ = 0.9, β₂ = 0.999, ε = 1e-8).

Schedules (``schedule=``):

- ``"linear"`` (the paper's): ``η_k = η₀ (1 − k / K)`` for the ``k``-th update, ``k = 0, …, K−1``
  (:func:`optax.linear_schedule` from η₀ to 0 over ``K = epochs × steps_per_epoch`` steps), so
  the last update still has ``η₀ / K > 0``.
- ``"constant"``: ``η_k = η₀`` (used for the kernel-regression closed form).

Per-target learning-rate scale: a pack can give target ``t`` the rate ``s_t η_k`` by scaling its
*final* update by ``s_t`` (:func:`scale_updates`). For SGD (momentum or not) and Adam the update
is linear in the learning rate, so this is exactly the optimizer with rate ``s_t η_k``.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from raysweep.config import TrainConfig

__all__ = ["SCHEDULES", "base_learning_rate", "make_optimizer", "make_schedule", "scale_updates"]

SCHEDULES: tuple[str, ...] = ("linear", "constant")
"""Learning-rate schedules accepted by ``train_pack(schedule=...)``; ``"linear"`` is the paper's."""


def base_learning_rate(train: TrainConfig) -> float:
    """η₀: ``train.learning_rate`` for SGD, ``train.adam_learning_rate`` for Adam."""
    if train.optimizer == "sgd":
        return float(train.learning_rate)
    if train.optimizer == "adam":
        return float(train.adam_learning_rate)
    raise ValueError(f"train.optimizer={train.optimizer!r} is not supported; choose sgd or adam.")


def make_schedule(learning_rate: Any, total_steps: int, schedule: str) -> optax.Schedule:
    """The learning rate as a function of the 0-based update count ``k`` (module docstring).

    Args:
      learning_rate: η₀, a float or a float32 scalar array (may be traced: the training
        program passes it as an argument so that a new rate does not recompile).
      total_steps: ``K = epochs × steps_per_epoch`` ≥ 1, the number of updates of the run.
      schedule: ``"linear"`` or ``"constant"``.
    """
    if schedule == "linear":
        return optax.linear_schedule(
            init_value=learning_rate, end_value=0.0, transition_steps=total_steps
        )
    if schedule == "constant":
        return optax.constant_schedule(learning_rate)
    raise ValueError(f"schedule={schedule!r} is not supported; choose one of {SCHEDULES}.")


def make_optimizer(
    optimizer: str,
    learning_rate: Any,
    *,
    momentum: float,
    total_steps: int,
    schedule: str = "linear",
) -> optax.GradientTransformation:
    """SGD (heavy-ball ``momentum``; 0 = plain) or Adam on :func:`make_schedule`'s schedule.

    Args:
      optimizer: ``"sgd"`` or ``"adam"`` (``TrainConfig.optimizer``).
      learning_rate: η₀ (see :func:`base_learning_rate`); float or float32 scalar array.
      momentum: SGD momentum in ``[0, 1)`` (ignored by Adam).
      total_steps: ``K``, the number of updates of the whole run (for the linear decay).
      schedule: ``"linear"`` or ``"constant"``.

    The transformation acts on one target's parameter pytree; the training program
    ``jax.vmap``-s its ``init`` and ``update`` over the pack axis, so every target has its own
    state (momentum buffer or Adam moments, and update count). The state's structure does not
    depend on ``learning_rate``.
    """
    lr = make_schedule(learning_rate, total_steps, schedule)
    if optimizer == "sgd":
        return optax.sgd(learning_rate=lr, momentum=float(momentum) if momentum > 0 else None)
    if optimizer == "adam":
        return optax.adam(learning_rate=lr)
    raise ValueError(f"optimizer={optimizer!r} is not supported; choose sgd or adam.")


def scale_updates(updates: Any, scale: jax.Array) -> Any:
    """``updates × scale`` leaf by leaf: learning rate ``scale × η_k`` for one target.

    Args:
      updates: the optimizer's update pytree for one target.
      scale: float32 scalar ``s_t`` (1.0 leaves the updates unchanged).
    """
    return jax.tree_util.tree_map(lambda u: u * scale.astype(u.dtype), updates)
