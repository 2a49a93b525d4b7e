"""Losses, accuracy, parameter-space distances and the per-epoch metric rows.

Conventions (shared by the training program and the rows it reports):

- One logit ``z`` per example; labels ``y ∈ {-1, +1}`` (float32). The prediction is
  ``sign(z)`` with ``sign(0) = +1``, so accuracy is ``mean(where(z >= 0, 1, -1) == y)``.
- ``"bce"`` (the paper's loss): binary cross-entropy on the logit with targets ``(y + 1) / 2``,
  ``ℓ(z, y) = −t log σ(z) − (1 − t) log(1 − σ(z))`` via :func:`optax.sigmoid_binary_cross_entropy`
  (stable for large ``|z|``). ``"mse"``: ``ℓ(z, y) = ½ (z − y)²``, so the mean over ``n``
  examples is ``L = 1/(2n) ‖f − y‖²`` — the kernel-regression loss of the closed form
  ``f_{t+1} = f_t − (η/n) Θ (f_t − y)``.
- Parameter statistics flatten all leaves of θ and θ₀ into one vector:
  ``l2_distance = ‖θ − θ₀‖₂``, ``weight_norm = ‖θ‖₂`` and
  ``cosine_distance = 1 − ⟨θ, θ₀⟩ / (‖θ‖₂ ‖θ₀‖₂)`` (NaN if either norm is 0).

Every row of :func:`raysweep.training.train_pack` has exactly the keys :data:`METRIC_NAMES`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from raysweep.store.schema import METRIC_COLUMNS

__all__ = [
    "LOSSES",
    "METRIC_NAMES",
    "STATUSES",
    "accuracy_terms",
    "example_losses",
    "make_row",
    "param_statistics",
]

LOSSES: tuple[str, ...] = ("bce", "mse")
"""Loss names accepted by ``train_pack(loss=...)``; ``"bce"`` is the paper's."""

METRIC_NAMES: tuple[str, ...] = METRIC_COLUMNS
"""Keys of every metric row, in this order.

``epoch`` (int, 1-based) · ``step`` (int, optimizer steps so far) · ``train_loss``,
``train_accuracy``, ``test_loss``, ``test_accuracy`` (float, full-split evaluation in inference
mode after the epoch) · ``steps_to_threshold`` (int, the optimizer steps done when the whole
training set's loss was first ≤ ``train.loss_threshold``, checked ``train.threshold_checks``
times per epoch, the last at the epoch's end; ``-1`` if not reached yet) · ``l2_distance``,
``cosine_distance``, ``weight_norm`` (float, see the module docstring) · ``grad_norm`` (float,
mean over the epoch's steps of the minibatch gradient norm ‖∇θL‖₂) · ``status`` (str, one of
:data:`STATUSES`).
"""

STATUSES: tuple[str, ...] = ("running", "finished", "diverged")
"""``running`` for intermediate epochs, ``finished`` for the last one, ``diverged`` for the
single final row of a target whose loss became NaN/inf (that target reports nothing after)."""

_INT_METRICS = ("epoch", "step", "steps_to_threshold")


def example_losses(logits: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    """Per-example loss ``ℓ(z_i, y_i)``.

    Args:
      logits: ``(..., n)`` float32 logits (one per example, the ``(n, 1)`` output squeezed).
      y: ``(..., n)`` float32 labels in ``{-1, +1}``.
      loss: ``"bce"`` or ``"mse"`` (module docstring).

    Returns:
      ``(..., n)`` float32 losses; their mean over the examples is the training objective.
    """
    if loss == "bce":
        return optax.sigmoid_binary_cross_entropy(logits, (y + 1.0) * 0.5)
    if loss == "mse":
        return 0.5 * jnp.square(logits - y)
    raise ValueError(f"loss={loss!r} is not supported; choose one of {', '.join(LOSSES)}.")


def accuracy_terms(logits: jax.Array, y: jax.Array) -> jax.Array:
    """``1.0`` where ``sign(z) == y`` (``sign(0) = +1``), else ``0.0``; shape of ``logits``.

    A NaN logit counts as a prediction of ``-1`` (``NaN >= 0`` is false).
    """
    pred = jnp.where(logits >= 0, 1.0, -1.0)
    return (pred == y).astype(jnp.float32)


def param_statistics(params: Any, params0: Any) -> dict[str, jax.Array]:
    """Distances of one parameter point θ from θ₀, over all leaves flattened.

    Args:
      params: θ, a pytree of float arrays (one target; no pack axis).
      params0: θ₀ with the same structure and shapes.

    Returns:
      ``{"l2_distance", "cosine_distance", "weight_norm"}``, float32 scalars (sums of squares
      and the inner product are accumulated in float32).
    """
    leaves = jax.tree_util.tree_leaves(params)
    leaves0 = jax.tree_util.tree_leaves(params0)
    diff2 = sum(jnp.sum(jnp.square(p - p0)) for p, p0 in zip(leaves, leaves0, strict=True))
    norm2 = sum(jnp.sum(jnp.square(p)) for p in leaves)
    norm02 = sum(jnp.sum(jnp.square(p0)) for p0 in leaves0)
    inner = sum(jnp.sum(p * p0) for p, p0 in zip(leaves, leaves0, strict=True))
    weight_norm = jnp.sqrt(norm2)
    return {
        "l2_distance": jnp.sqrt(diff2),
        "cosine_distance": 1.0 - inner / (weight_norm * jnp.sqrt(norm02)),
        "weight_norm": weight_norm,
    }


def make_row(values: dict[str, Any], target: int, *, epoch: int, status: str) -> dict[str, Any]:
    """One JSON-friendly metric row (keys :data:`METRIC_NAMES`) for pack position ``target``.

    Args:
      values: host arrays from the epoch program, each of shape ``(T,)`` (``"step"`` may be a
        scalar shared by the pack).
      target: index into the pack axis.
      epoch: 1-based epoch number.
      status: one of :data:`STATUSES`.

    Returns:
      ``dict`` with Python ``int`` for ``epoch``/``step``/``steps_to_threshold``, Python
      ``float`` (possibly NaN/inf for a diverged target) for the others, ``str`` status.
    """
    row: dict[str, Any] = {}
    for name in METRIC_NAMES:
        if name == "epoch":
            row[name] = int(epoch)
        elif name == "status":
            row[name] = status
        else:
            value = np.asarray(values[name])
            value = value if value.ndim == 0 else value[target]
            row[name] = int(value) if name in _INT_METRICS else float(value)
    return row
