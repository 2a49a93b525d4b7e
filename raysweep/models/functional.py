"""The functional boundary between Flax modules and the rest of raysweep.

Everything downstream (empirical NTK, linearisation, NADs, training) sees a model only through
these pure functions:

* :func:`init_variables` — ``(module, (H, W, C), seed) -> variables`` where
  ``variables = {"params": ..., "batch_stats": ...}`` (``"batch_stats"`` only for models with
  batch norm, i.e. ResNet18). All leaves are float32 ``jax.Array``.
* :func:`make_apply_fn` — ``apply_fn(params, x) -> logits (n, 1)`` in **inference mode**: the
  running batch-norm statistics of ``variables`` are closed over (frozen constants), so
  ``params`` is the only argument one differentiates. This is *the* function whose Jacobian
  defines the empirical NTK ``Theta(x, x') = J(x) J(x')^T`` and the linearisation
  ``f_lin(p, x) = f(p0, x) + J(x)(p - p0)``.
* :func:`make_train_apply_fn` — ``train_apply_fn(params, batch_stats, x) ->
  (logits (n, 1), new_batch_stats)`` in **training mode** (batch statistics, running averages
  updated with momentum 0.9 in the Flax convention). For models without batch norm
  ``batch_stats`` is ``{}`` and is returned unchanged.
* :func:`count_params` — total number of scalars in a ``params`` pytree.

``module`` is a built-in Flax linen module or an adapter of a user's model loaded from an import
path (:mod:`raysweep.models.user`: NNX module, linen module or plain function); the three
functions return the same shapes for both.

All returned functions are pure, ``jax.jit``-able, differentiable w.r.t. ``params`` and can be
``jax.vmap``-ed over single examples (``x`` of shape ``(1, H, W, C)`` inside the map).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from raysweep.models.inputs import validate_batch, validate_input_shape
from raysweep.models.user import UserModel

__all__ = [
    "ApplyFn",
    "TrainApplyFn",
    "count_params",
    "init_variables",
    "make_apply_fn",
    "make_train_apply_fn",
]

Params = Any  # nested dict of float32 arrays (a pytree)
BatchStats = Any  # nested dict of float32 arrays, or {} for models without batch norm
ApplyFn = Callable[[Params, jax.Array], jax.Array]
TrainApplyFn = Callable[[Params, BatchStats, jax.Array], tuple[jax.Array, BatchStats]]

_COLLECTIONS = ("params", "batch_stats")


def _check_module(module: Any, where: str) -> None:
    if not isinstance(module, nn.Module | UserModel):
        raise TypeError(
            f"{where}: module must be a flax.linen.Module instance or a model loaded from an "
            f"import path, got {module!r} of type {type(module).__name__}; build one with "
            "raysweep.models.get_model(name)."
        )


def _to_plain_dict(tree: Any) -> Any:
    """Recursively convert (Frozen)Dicts to plain ``dict`` for a uniform pytree structure."""
    if isinstance(tree, Mapping):
        return {k: _to_plain_dict(v) for k, v in tree.items()}
    return tree


def _build_init(
    module: nn.Module, input_shape: tuple[int, int, int], backend: str
) -> Callable[[jax.Array, jax.Array], Any]:
    """``module.init(key, x, train=False)`` compiled once per (module, input shape, backend).

    Modules are frozen dataclasses that hash by value, so re-initialising the same architecture
    with another seed (a seed sweep) reuses the executable. Initialisation runs once per model,
    but its program (one threefry + truncated-normal sampler per parameter tensor) compiles
    super-linearly slowly on the XLA:CPU backend at the default optimisation level (tens of
    seconds for ResNet18 on 2 cores). On CPU it is therefore compiled with
    ``xla_backend_optimization_level=0`` (a few seconds). The sampled values are the same random
    draws as ``module.init`` up to float rounding (~1 ulp of the truncated-normal transform) and
    are bit-reproducible for a given seed on a given platform. Model shape errors (ValueError)
    are raised here while tracing; failures are not cached.
    """
    jitted = jax.jit(functools.partial(module.init, train=False))
    if backend != "cpu":
        return jitted
    dummy = jnp.zeros((1, *input_shape), dtype=jnp.float32)
    lowered = jitted.lower(jax.random.key(0), dummy)
    return lowered.compile(compiler_options={"xla_backend_optimization_level": 0})


_cached_init = functools.lru_cache(maxsize=32)(_build_init)


def _compiled_init(
    module: nn.Module, input_shape: tuple[int, int, int], backend: str
) -> Callable[[jax.Array, jax.Array], Any]:
    """Cached :func:`_build_init`; modules with unhashable attributes are built uncached."""
    try:
        hash(module)
    except TypeError:
        return _build_init(module, input_shape, backend)
    return _cached_init(module, input_shape, backend)


def init_variables(
    module: nn.Module | UserModel, input_shape: tuple[int, int, int], *, seed: int
) -> dict:
    """Initialise a model's variables deterministically from an integer seed.

    Args:
      module: a model from :mod:`raysweep.models` (or any Flax module with the signature
        ``__call__(x, train: bool = False)``), or an adapter of your own model from
        :func:`raysweep.models.get_model` with an import path (:mod:`raysweep.models.user`:
        NNX or linen module, or a function returning ``(apply_fn, params)``). For adapters the
        model is also run once (traced) in its eval and train views on a batch of
        ``input_shape``, and its output and parameter dtypes are checked.
      input_shape: per-example shape ``(H, W, C)`` without the batch axis, e.g. ``(32, 32, 3)``.
      seed: integer seed; parameters are drawn from ``jax.random.key(seed)``. Same seed, module
        and shape -> bit-identical variables (on a given platform; see ``_compiled_init``).

    Returns:
      ``{"params": params}`` or, for models with batch norm, ``{"params": params,
      "batch_stats": stats}``; nested plain ``dict`` of float32 ``jax.Array`` leaves.

    Raises:
      TypeError: if ``module`` is not a Flax module or ``seed`` is not an int; for adapters, a
        parameter that is not float32 or an output that is not float32.
      ValueError: if ``input_shape`` is not 3 positive ints, or the model rejects the shape (e.g.
        LeNet5 on inputs smaller than 4x4); for adapters, a model that fails on a batch of the
        input shape or does not give one logit per example (several outputs need
        ``output_index``; the message names the width).
    """
    _check_module(module, "init_variables")
    shape = validate_input_shape(input_shape)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"init_variables: seed must be an int, got {seed!r} of type {type(seed).__name__}; "
            "pass e.g. seed=0."
        )
    if isinstance(module, UserModel):
        return module.init_variables(shape, int(seed))
    key = jax.random.key(int(seed))
    dummy = jnp.zeros((1, *shape), dtype=jnp.float32)
    init = _compiled_init(module, shape, jax.default_backend())
    variables = _to_plain_dict(init(key, dummy))
    unexpected = sorted(set(variables) - set(_COLLECTIONS))
    if unexpected:
        raise ValueError(
            f"init_variables: module {type(module).__name__} created variable collections "
            f"{unexpected}; only {list(_COLLECTIONS)} are supported by raysweep's apply functions."
        )
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.float32), variables)


def _prepare_x(x: Any, where: str) -> jax.Array:
    validate_batch(x, where=where)
    return jnp.asarray(x, dtype=jnp.float32)


def make_apply_fn(module: nn.Module | UserModel, variables: Mapping[str, Any]) -> ApplyFn:
    """Build the inference-mode function ``apply_fn(params, x) -> (n, 1)``.

    Args:
      module: the Flax module (or user-model adapter) the variables belong to. For an NNX
        adapter this is the eval view (``model.eval()``: running statistics, no dropout).
      variables: as returned by :func:`init_variables` (or after training):
        ``{"params": ..., "batch_stats": ...}``. Only ``variables["batch_stats"]`` (if any) is
        used — it is closed over as frozen running statistics. ``variables["params"]`` is *not*
        captured; pass the parameters to evaluate as the first argument of ``apply_fn``.

    Returns:
      ``apply_fn(params, x)``: ``params`` a pytree like ``variables["params"]``; ``x`` a floating
      NHWC batch ``(n, H, W, C)`` (cast to float32). Returns float32 logits ``(n, 1)``. Batch
      norm (ResNet18) normalises with the frozen running statistics, so the output of one
      example does not depend on the others in the batch. Pure, jit-able, differentiable
      w.r.t. ``params`` (and ``x``), vmap-able over single examples ``(1, H, W, C)``.

    Raises:
      TypeError: if ``module`` is not a Flax module or ``variables`` is not a mapping.
      ValueError: if ``variables`` lacks ``"params"`` or has unknown collections.
      (``apply_fn`` itself raises ValueError/TypeError for non-4-D or non-floating ``x``.)
    """
    _check_module(module, "make_apply_fn")
    if isinstance(module, UserModel):
        return module.make_apply_fn(variables)
    if not isinstance(variables, Mapping) or "params" not in variables:
        got = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
        raise ValueError(
            f"make_apply_fn: variables must be a dict with a 'params' entry (and 'batch_stats' "
            f"for batch-norm models), got {got}; pass the dict returned by init_variables."
        )
    unexpected = sorted(set(variables) - set(_COLLECTIONS))
    if unexpected:
        raise ValueError(
            f"make_apply_fn: unsupported variable collections {unexpected}; allowed are "
            f"{list(_COLLECTIONS)}."
        )
    frozen_stats = variables.get("batch_stats") or {}
    name = type(module).__name__

    def apply_fn(params: Params, x: jax.Array) -> jax.Array:
        x = _prepare_x(x, f"apply_fn({name})")
        model_vars = {"params": params}
        if frozen_stats:
            model_vars["batch_stats"] = frozen_stats
        return module.apply(model_vars, x, train=False)

    return apply_fn


def make_train_apply_fn(module: nn.Module | UserModel) -> TrainApplyFn:
    """Build the training-mode function ``train_apply_fn(params, batch_stats, x)``.

    Args:
      module: the Flax module (or user-model adapter; NNX: batch statistics in use,
        dropout off, so no RNG is needed).

    Returns:
      ``train_apply_fn(params, batch_stats, x) -> (logits, new_batch_stats)`` where ``logits`` is
      float32 ``(n, 1)`` and ``x`` a floating NHWC batch ``(n, H, W, C)``. For batch-norm models
      the forward pass normalises with the statistics of this batch and ``new_batch_stats`` holds
      the updated running averages ``new = momentum * old + (1 - momentum) * batch`` with
      ``momentum = 0.9`` by default (Flax convention; PyTorch's 0.1). For models without batch
      norm pass ``batch_stats={}``; it is returned unchanged. Pure and jit-able; differentiate
      w.r.t. ``params`` with ``jax.grad(..., has_aux=True)`` style wrappers.

    Raises:
      TypeError: if ``module`` is not a Flax module.
      (``train_apply_fn`` raises ValueError when ``batch_stats`` is ``{}`` for a batch-norm
      model, and ValueError/TypeError for a malformed ``x``.)
    """
    _check_module(module, "make_train_apply_fn")
    if isinstance(module, UserModel):
        return module.make_train_apply_fn()
    name = type(module).__name__

    def train_apply_fn(
        params: Params, batch_stats: BatchStats, x: jax.Array
    ) -> tuple[jax.Array, BatchStats]:
        x = _prepare_x(x, f"train_apply_fn({name})")
        if not batch_stats:
            try:
                logits = module.apply({"params": params}, x, train=True)
            except flax.errors.ScopeCollectionNotFound as err:
                raise ValueError(
                    f"train_apply_fn({name}): this model has batch norm but batch_stats is "
                    f"{batch_stats!r}; pass variables['batch_stats'] from init_variables."
                ) from err
            return logits, batch_stats
        logits, updates = module.apply(
            {"params": params, "batch_stats": batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return logits, _to_plain_dict(updates["batch_stats"])

    return train_apply_fn


def count_params(params: Any) -> int:
    """Total number of scalar parameters in a pytree (sum of leaf sizes).

    Args:
      params: ``variables["params"]`` (a nested dict of arrays). Passing the whole variables dict
        is rejected, because it would also count the batch-norm running statistics.

    Returns:
      A Python int, e.g. 317,501 for the MLP on 32x32x3 inputs.

    Raises:
      ValueError: if ``params`` looks like a full variables dict (has a ``"params"`` key).
    """
    if isinstance(params, Mapping) and "params" in params:
        raise ValueError(
            f"count_params: expected variables['params'], got a variables dict with keys "
            f"{sorted(params)}; call count_params(variables['params'])."
        )
    return int(sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(params)))
