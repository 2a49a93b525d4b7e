"""Model registry: build the paper's models by name.

* :data:`MODEL_NAMES` — ``("mlp", "lenet5", "resnet18")``; ``"lenet"`` is accepted as an alias
  of ``"lenet5"``. Names are case-insensitive (``"ResNet18"`` works).
* :func:`get_model` — ``name -> flax.linen.Module`` (unbound, no parameters yet).
* :func:`create_model` — convenience for scripts: module + initialised variables + the
  inference ``apply_fn`` in one call, returned as a :class:`ModelBundle` named tuple.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn

from raysweep.models.activations import DEFAULT_ACTIVATION, normalize_activation
from raysweep.models.functional import ApplyFn, init_variables, make_apply_fn
from raysweep.models.lenet import LeNet5
from raysweep.models.mlp import MLP
from raysweep.models.resnet import ResNet18

__all__ = ["MODEL_NAMES", "ModelBundle", "create_model", "get_model", "normalize_model_name"]

MODEL_NAMES: tuple[str, ...] = ("mlp", "lenet5", "resnet18")
"""Canonical model names, in the paper's order of increasing size."""

_MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "lenet5": LeNet5,
    "resnet18": ResNet18,
}
_ALIASES: dict[str, str] = {"lenet": "lenet5"}


def normalize_model_name(name: str) -> str:
    """Return the canonical model name (one of :data:`MODEL_NAMES`), resolving aliases.

    Raises:
      TypeError: if ``name`` is not a string.
      ValueError: if ``name`` is unknown; the message lists the allowed names.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"model name must be a string, got {name!r} of type {type(name).__name__}; "
            f"pass one of {list(MODEL_NAMES)}."
        )
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _MODEL_CLASSES:
        raise ValueError(
            f"unknown model name {name!r}; allowed names are {list(MODEL_NAMES)} "
            f"(aliases: {_ALIASES}). Names are case-insensitive."
        )
    return key


def _allowed_options(cls: type[nn.Module]) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.name not in ("parent", "name", "activation")
    ]


def get_model(name: str, *, activation: str = DEFAULT_ACTIVATION, **kwargs: Any) -> nn.Module:
    """Build one of the paper's models by name.

    Args:
      name: ``"mlp"``, ``"lenet5"`` (alias ``"lenet"``) or ``"resnet18"``, case-insensitive.
      activation: activation name, one of
        :data:`raysweep.models.activations.ACTIVATION_NAMES` (default ``"relu"``).
      **kwargs: model-specific options: ``MLP(hidden_sizes=...)``;
        ``ResNet18(width=..., zero_init_residual=..., bn_momentum=..., bn_epsilon=...)``;
        LeNet5 has none.

    Returns:
      An unbound ``flax.linen.Module``; initialise it with
      :func:`raysweep.models.init_variables`.

    Raises:
      TypeError: for a non-string name/activation or an option the model does not have (the
        message lists the allowed options).
      ValueError: for an unknown model or activation name, or an invalid option value.
    """
    key = normalize_model_name(name)
    act = normalize_activation(activation)
    cls = _MODEL_CLASSES[key]
    allowed = _allowed_options(cls)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"get_model({key!r}): unknown option(s) {unknown}; allowed options for {key} are "
            f"{allowed or 'none'}."
        )
    return cls(activation=act, **kwargs)


class ModelBundle(NamedTuple):
    """What :func:`create_model` returns; unpack as ``module, variables, apply_fn = ...``.

    Attributes:
      module: the Flax module.
      variables: ``{"params": ..., ["batch_stats": ...]}``, float32.
      apply_fn: inference-mode ``apply_fn(params, x) -> (n, 1)`` (see
        :func:`raysweep.models.make_apply_fn`); evaluate at init with
        ``apply_fn(variables["params"], x)``.
    """

    module: nn.Module
    variables: dict
    apply_fn: ApplyFn


def create_model(
    name: str,
    input_shape: tuple[int, int, int],
    *,
    seed: int,
    activation: str = DEFAULT_ACTIVATION,
    **kwargs: Any,
) -> ModelBundle:
    """Build, initialise and wrap a model in one call.

    Args:
      name: model name (see :func:`get_model`).
      input_shape: per-example ``(H, W, C)``, e.g. ``(32, 32, 3)``.
      seed: integer seed for :func:`raysweep.models.init_variables`.
      activation: activation name (default ``"relu"``).
      **kwargs: model options forwarded to :func:`get_model`.

    Returns:
      ``ModelBundle(module, variables, apply_fn)``.
    """
    module = get_model(name, activation=activation, **kwargs)
    variables = init_variables(module, input_shape, seed=seed)
    return ModelBundle(module, variables, make_apply_fn(module, variables))
