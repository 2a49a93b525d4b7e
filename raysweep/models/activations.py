"""Activation functions selectable by name.

Every model in :mod:`raysweep.models` stores its activation as a *string* attribute (hashable,
serialisable into configs and Ray results) and resolves it with :func:`get_activation` inside
``__call__``. The allowed names are :data:`ACTIVATION_NAMES`:

==========  ==============================================================================
name        function (elementwise, dtype-preserving: float32 in -> float32 out)
==========  ==============================================================================
relu        ``max(x, 0)`` (:func:`jax.nn.relu`; gradient at 0 is 0). The paper's default.
gelu        exact GELU ``x * Phi(x)`` via ``jax.nn.gelu(x, approximate=False)`` (erf-based,
            *not* the tanh approximation that ``jax.nn.gelu`` uses by default).
tanh        :func:`jax.numpy.tanh`.
softplus    ``log(1 + exp(x))`` (:func:`jax.nn.softplus`, numerically stable).
sigmoid     ``1 / (1 + exp(-x))`` (:func:`jax.nn.sigmoid`).
==========  ==============================================================================

Names are matched exactly after lower-casing and stripping surrounding whitespace, so
``"ReLU"`` (the spelling of the paper's configs) is accepted.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATION_NAMES", "DEFAULT_ACTIVATION", "get_activation", "normalize_activation"]

Activation = Callable[[jax.Array], jax.Array]


def _gelu_exact(x: jax.Array) -> jax.Array:
    """Exact (erf-based) GELU; ``jax.nn.gelu`` defaults to the tanh approximation."""
    return jax.nn.gelu(x, approximate=False)


_ACTIVATIONS: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "gelu": _gelu_exact,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
}

ACTIVATION_NAMES: tuple[str, ...] = tuple(_ACTIVATIONS)
"""Allowed activation names, in documentation order: relu, gelu, tanh, softplus, sigmoid."""

DEFAULT_ACTIVATION: str = "relu"
"""The activation used by the paper for all three models."""


def normalize_activation(name: str) -> str:
    """Return the canonical (lower-case) activation name, validating it.

    Args:
      name: an activation name, case-insensitive (e.g. ``"relu"``, ``"ReLU"``, ``"gelu"``).

    Returns:
      The canonical name, one of :data:`ACTIVATION_NAMES`.

    Raises:
      TypeError: if ``name`` is not a string (e.g. a callable such as ``jax.nn.relu``).
      ValueError: if ``name`` is not one of :data:`ACTIVATION_NAMES`.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"activation must be a string name, got {name!r} of type {type(name).__name__}; "
            f"pass one of {list(ACTIVATION_NAMES)} (e.g. activation='relu')."
        )
    key = name.strip().lower()
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; allowed activations are {list(ACTIVATION_NAMES)}. "
            "Pick one of these names (matching is case-insensitive)."
        )
    return key


def get_activation(name: str) -> Activation:
    """Look up an elementwise activation function by name.

    Args:
      name: one of :data:`ACTIVATION_NAMES` (case-insensitive).

    Returns:
      A function ``f(x: jax.Array) -> jax.Array`` applied elementwise; the output has the shape
      and dtype of ``x``. It is jit-, grad- and vmap-compatible.

    Raises:
      TypeError: if ``name`` is not a string.
      ValueError: if ``name`` is unknown; the message lists the allowed names.
    """
    return _ACTIVATIONS[normalize_activation(name)]
