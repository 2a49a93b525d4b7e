"""Model registry: build the paper's models by name.

* :data:`MODEL_NAMES` — ``("mlp", "lenet5", "resnet18")``; ``"lenet"`` is accepted as an alias
  of ``"lenet5"``. Names are case-insensitive (``"ResNet18"`` works).
* :func:`get_model` — ``name -> flax.linen.Module`` (unbound, no parameters yet), or for an
  import path ``package.module:attr`` the adapter of your own model
  (:func:`raysweep.models.user.load_user_model`).
* :func:`create_model` — convenience for scripts: module + initialised variables + the
  inference ``apply_fn`` in one call, returned as a :class:`ModelBundle` named tuple.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn

from raysweep.config import is_import_path
from raysweep.models.activations import DEFAULT_ACTIVATION, normalize_activation
from raysweep.models.functional import ApplyFn, init_variables, make_apply_fn
from raysweep.models.lenet import LeNet5
from raysweep.models.mlp import MLP
from raysweep.models.resnet import ResNet18
from raysweep.models.user import UserModel, _canonical_options, load_user_model

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
        if f.init and f.name not in ("parent", "name", "activation", *_TRAINING_ONLY)
    ]


_TRAINING_ONLY = ("patch_convs",)
"""Module attributes that only change how training computes (raysweep.models.training_variant
sets them), never the model: not options, so they cannot change an artifact's key."""


def _options(options: Any) -> dict:
    """``options`` (None, dict or JSON object text, as ``model.options``) as a dict."""
    return json.loads(_canonical_options(options, "model options"))


def _hashable(value: Any) -> Any:
    """JSON lists become tuples so built-in modules stay hashable (compile caches)."""
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


def get_model(
    name: str,
    *,
    activation: str = DEFAULT_ACTIVATION,
    options: Mapping[str, Any] | str | None = None,
    train_flag: str = "train",
    output_index: int | None = None,
    **kwargs: Any,
) -> nn.Module | UserModel:
    """Build one of the paper's models by name, or load your own from an import path.

    Args:
      name: ``"mlp"``, ``"lenet5"`` (alias ``"lenet"``) or ``"resnet18"``, case-insensitive;
        or an import path ``package.module:attr`` naming a Flax NNX Module class or factory, a
        Flax linen Module (class or instance) or a function returning ``(apply_fn, params)``
        (see :mod:`raysweep.models.user`).
      activation: activation name, one of
        :data:`raysweep.models.activations.ACTIVATION_NAMES` (default ``"relu"``); built-in
        models only (ignored for import paths).
      options: model options as a dict or JSON object text (``model.options``); for built-ins
        they are merged with ``**kwargs`` (JSON lists become tuples), for import paths they
        are the constructor options.
      train_flag: the train/eval keyword of a linen module given by import path (``""``:
        none); ignored otherwise (the built-ins use ``train``).
      output_index: which output column is the logit of a model with several outputs (None:
        the model must have exactly one). Built-ins have one output (only None or 0).
      **kwargs: model-specific options: ``MLP(hidden_sizes=...)``;
        ``ResNet18(width=..., zero_init_residual=..., bn_momentum=..., bn_epsilon=...)``;
        LeNet5 has none. For import paths they are added to ``options``.

    Returns:
      An unbound ``flax.linen.Module`` or, for an import path, a user-model adapter
      (:class:`~raysweep.models.user.NNXModel`, :class:`~raysweep.models.user.LinenModel` or
      :class:`~raysweep.models.user.FunctionModel`); initialise either with
      :func:`raysweep.models.init_variables`.

    Raises:
      TypeError: for a non-string name/activation or an option the model does not have (the
        message lists the allowed options); for an import path naming an object of a kind
        that is not accepted.
      ModuleNotFoundError, AttributeError: for an import path whose module or attribute does
        not exist.
      ValueError: for an unknown model or activation name, or an invalid option value.
    """
    opts = _options(options)
    if isinstance(name, str) and is_import_path(name.strip()):
        clash = sorted(set(opts) & set(kwargs))
        if clash:
            raise TypeError(f"get_model({name!r}): option(s) {clash} given twice.")
        return load_user_model(
            name.strip(),
            options={**opts, **kwargs},
            train_flag=train_flag,
            output_index=output_index,
        )
    key = normalize_model_name(name)
    act = normalize_activation(activation)
    if output_index not in (None, 0) or isinstance(output_index, bool):
        raise ValueError(
            f"get_model({key!r}): output_index={output_index!r}, but the built-in models have "
            "one output; leave output_index unset."
        )
    clash = sorted(set(opts) & set(kwargs))
    if clash:
        raise TypeError(f"get_model({key!r}): option(s) {clash} given twice.")
    kwargs = {**{k: _hashable(v) for k, v in opts.items()}, **kwargs}
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

    module: nn.Module | UserModel
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
      name: model name or import path (see :func:`get_model`).
      input_shape: per-example ``(H, W, C)``, e.g. ``(32, 32, 3)``.
      seed: integer seed for :func:`raysweep.models.init_variables`.
      activation: activation name (default ``"relu"``).
      **kwargs: forwarded to :func:`get_model` (model options, ``options=``, ``train_flag=``,
        ``output_index=``).

    Returns:
      ``ModelBundle(module, variables, apply_fn)``.
    """
    module = get_model(name, activation=activation, **kwargs)
    variables = init_variables(module, input_shape, seed=seed)
    return ModelBundle(module, variables, make_apply_fn(module, variables))
