"""Your own model behind raysweep's functional boundary.

``model.name`` may be an import path ``package.module:attr`` instead of a built-in name. The
attribute is resolved by :func:`load_user_model` (which :func:`raysweep.models.get_model` calls
for import paths) into an *adapter*, a small frozen value object that the three boundary
functions :func:`~raysweep.models.init_variables`, :func:`~raysweep.models.make_apply_fn` and
:func:`~raysweep.models.make_train_apply_fn` accept exactly like a built-in module. Everything
downstream (empirical NTK, linearization, NADs, packed training, the sweep) therefore works
unchanged. Three kinds of attribute are accepted:

* **NNX** (:class:`NNXModel`): a ``flax.nnx.Module`` subclass, or a factory (any callable with
  an ``rngs`` parameter) returning an ``nnx.Module``. It is built the NNX way,
  ``attr(**options, rngs=nnx.Rngs(seed))``. Its state is split into parameters (``nnx.Param``
  -> ``variables["params"]``) and batch statistics (``nnx.BatchStat`` ->
  ``variables["batch_stats"]``). Everything else (RNG streams, other ``nnx.Variable`` types)
  is not part of the variables: it is a constant of the adapter, taken from the model built
  with ``nnx.Rngs(0)`` (whatever the seed of :func:`init_variables`; a warning is issued when
  such state depends on the seed). Two views of the model are derived, each with its own
  graph definition because the flags are static:

  - *eval view* (``make_apply_fn``): ``model.eval()``, i.e. ``deterministic=True`` and
    ``use_running_average=True`` on every submodule that has them (batch norm normalises
    with the running statistics of ``variables``, dropout is off);
  - *train view* (``make_train_apply_fn``): ``use_running_average=False`` (batch norm uses
    the statistics of the batch and updates the running averages) and ``deterministic=True``
    (dropout stays off, so no RNG is needed during training).

  Both graph definitions come from ``nnx.eval_shape`` of the constructor, so any process can
  rebuild the apply functions from the adapter and saved variables alone.
* **linen** (:class:`LinenModel`): a ``flax.linen.Module`` subclass (instantiated with
  ``**options``) or a module instance (``options`` must then be empty). It is initialised with
  ``module.init(key, x, **{train_flag: False})`` and called as ``module.apply(variables, x,
  **{train_flag: False})`` (eval view) and ``module.apply(..., **{train_flag: True},
  mutable=["batch_stats"])`` (train view); with ``train_flag=""`` no keyword is passed. Only
  the ``params`` and ``batch_stats`` collections are supported.
* **function** (:class:`FunctionModel`): any other callable ``attr(**options, seed=...,
  input_shape=...) -> (apply_fn, params)`` (only the keywords its signature accepts are
  passed; ``input_shape`` is ``(H, W, C)``) with ``apply_fn(params, x)`` a JAX function of an
  NHWC batch. ``params`` may be any pytree; ``variables["params"]`` holds it as a nested dict
  with string keys (lists and tuples become ``{"0": ..., "1": ...}``) and the apply function
  converts back. ``apply_fn`` and the structure of ``params`` must not depend on ``seed``
  (the apply function used everywhere is the one returned for ``seed=0``). No batch
  statistics; the train view is the eval view.

Outputs: the model must return a float32 array of shape ``(n,)`` or ``(n, k)``. With ``k == 1``
(or ``(n,)``) that is the logit; with ``k > 1`` ``output_index`` selects the logit column. The
apply functions always return ``(n, 1)``. Parameters must be float32.

Checks, raised by :func:`init_variables` before any Gram or training work: the model builds
and runs (eval and train view, traced with ``jax.eval_shape``) on a batch of the input shape,
its output is float32 with one logit per example (or ``output_index`` selects one), and every
parameter is float32.

Adapters hash and compare by value (kind, import path, options, ``train_flag``,
``output_index``), so compile caches keyed by the model (the training program cache, init
caches) compile once per model, and they pickle (``pickle``/``cloudpickle``) as those few
strings: resolved attributes, graph definitions, jitted functions and constants live in
process-local caches and are rebuilt on first use after unpickling. Modules are imported with
the current directory and the directory of the running script on ``sys.path`` (appended), and
an adapter remembers the directory its module came from, so a worker process that unpickles it
can import the module too.

Example (``my_models.py`` next to the script)::

    from flax import nnx

    class SmallCNN(nnx.Module):
        def __init__(self, features: int = 8, *, rngs: nnx.Rngs):
            self.conv = nnx.Conv(1, features, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(features, rngs=rngs)
            self.head = nnx.Linear(features, 1, rngs=rngs)

        def __call__(self, x):
            h = nnx.relu(self.bn(self.conv(x)))
            return self.head(h.mean(axis=(1, 2)))

    module = get_model("my_models:SmallCNN", options={"features": 16})
    variables = init_variables(module, (8, 8, 1), seed=0)
    apply_fn = make_apply_fn(module, variables)          # (n, 1), eval view

or on the command line ``model.name=my_models:SmallCNN model.options='{"features": 16}'``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from raysweep.argcheck import check_int
from raysweep.config import is_import_path
from raysweep.models.inputs import validate_batch, validate_input_shape

__all__ = [
    "ACCEPTED_KINDS",
    "FunctionModel",
    "LinenModel",
    "NNXModel",
    "UserModel",
    "load_user_model",
]

ACCEPTED_KINDS = (
    "a flax.nnx.Module class (or a factory with an `rngs` parameter returning an nnx.Module), "
    "a flax.linen.Module class or instance, or a function returning (apply_fn, params)"
)
"""What an import path ``model.name=package.module:attr`` may name, in words."""

_PROBE_BATCH = 2
_COLLECTIONS = ("params", "batch_stats")
_REFERENCE_SEED = 0  # seed of the build whose non-parameter state an NNX adapter keeps


# --- options, keys, nested dicts -------------------------------------------------------------


def _canonical_options(options: Any, where: str) -> str:
    """``options`` (dict, JSON object text or None) as canonical JSON text (sorted keys)."""
    if options is None:
        return "{}"
    if isinstance(options, str):
        try:
            obj = json.loads(options)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{where}: options={options!r} is not valid JSON ({err}); write a JSON object, "
                "e.g. '{\"features\": 16}'."
            ) from None
    else:
        obj = options
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{where}: options must be a JSON object (dict) of constructor keywords, e.g. "
            f"{{'features': 16}}, got {options!r}."
        )
    try:
        return json.dumps(dict(obj), sort_keys=True)
    except TypeError as err:
        raise ValueError(f"{where}: options must hold JSON values only ({err}).") from None


def _key_str(entry: Any) -> str:
    """One path entry (NNX path part or ``jax.tree_util`` key) as a string key."""
    tu = jax.tree_util
    if isinstance(entry, tu.DictKey | tu.FlattenedIndexKey):
        return str(entry.key)
    if isinstance(entry, tu.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, tu.GetAttrKey):
        return str(entry.name)
    return str(entry)


def _nest(pairs: Sequence[tuple[tuple[str, ...], Any]], where: str) -> dict:
    """Nested plain dict from ``(location, value)`` pairs (locations are tuples of strings)."""
    out: dict = {}
    for loc, value in pairs:
        node = out
        for part in loc[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{where}: parameter paths collide at {'/'.join(loc)}.")
        if loc[-1] in node:
            raise ValueError(f"{where}: parameter paths collide at {'/'.join(loc)}.")
        node[loc[-1]] = value
    return out


def _lookup(tree: Any, loc: tuple[str, ...], what: str, where: str) -> Any:
    node = tree
    for i, part in enumerate(loc):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(
                f"{where}: {what} has no entry {'/'.join(loc[: i + 1])!r}; pass the "
                f"{what} of this model (as returned by init_variables)."
            )
        node = node[part]
    return node


def _plain(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


def _check_params(params: Any, where: str) -> None:
    """Every parameter leaf is a float32 array (checked before any conversion)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError(f"{where}: the model has no parameters; raysweep needs at least one.")
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path) or "<params>"
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not hasattr(leaf, "shape"):
            raise TypeError(
                f"{where}: parameter {name} is a {type(leaf).__name__}, not an array; parameters "
                "must be float32 arrays."
            )
        if np.dtype(dtype) != np.float32:
            raise TypeError(
                f"{where}: parameter {name} has dtype {np.dtype(dtype)}; raysweep computes in "
                "float32, so every parameter must be float32 (cast it, e.g. "
                "param_dtype=jnp.float32 or .astype(np.float32))."
            )


# --- outputs ---------------------------------------------------------------------------------


def _check_output(y: Any, output_index: int | None, where: str) -> None:
    """Static checks of a model output (array, tracer or ``ShapeDtypeStruct``)."""
    if not (hasattr(y, "shape") and hasattr(y, "dtype")):
        raise TypeError(
            f"{where}: the model returned a {type(y).__name__}; it must return one float32 "
            "array of logits of shape (n,) or (n, k)."
        )
    if np.dtype(y.dtype) != np.float32:
        raise TypeError(
            f"{where}: the model returned dtype {np.dtype(y.dtype)}; its output must be float32 "
            "(one logit per example)."
        )
    shape = tuple(y.shape)
    if len(shape) not in (1, 2):
        raise ValueError(
            f"{where}: the model returned shape {shape}; expected (n,) or (n, k) for a batch "
            "of n examples."
        )
    width = 1 if len(shape) == 1 else shape[1]
    if output_index is None:
        if width != 1:
            raise ValueError(
                f"{where}: the model has {width} outputs (shape {shape}) but raysweep trains one "
                f"logit; set model.output_index to one of 0..{width - 1} to pick the logit "
                "column."
            )
    elif output_index >= width:
        raise ValueError(
            f"{where}: output_index={output_index} is out of range for a model with {width} "
            f"output(s) (shape {shape}); choose one of 0..{width - 1}."
        )


def _select(y: jax.Array, output_index: int | None, where: str) -> jax.Array:
    """The logit column of a checked output, shape ``(n, 1)``."""
    _check_output(y, output_index, where)
    if y.ndim == 1:
        y = y[:, None]
    if output_index is None:
        return y
    return y[:, output_index : output_index + 1]


def _prepare_x(x: Any, where: str) -> jax.Array:
    validate_batch(x, where=where)
    return jnp.asarray(x, dtype=jnp.float32)


def _probe(fn: Callable, args: tuple, view: str, where: str, input_shape) -> Any:
    """``jax.eval_shape(fn, *args)``; failures of the model become a clear ValueError."""
    try:
        return jax.eval_shape(fn, *args)
    except Exception as err:  # the model's own error, any type
        raise ValueError(
            f"{where}: the model failed in its {view} on a batch of shape "
            f"{(_PROBE_BATCH, *input_shape)} (float32, NHWC): {type(err).__name__}: {err}"
        ) from err


# --- import-path resolution ------------------------------------------------------------------


def _script_dir() -> str | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else None)
    if not path or not os.path.exists(path):
        return None
    return os.path.dirname(os.path.abspath(path))


def _add_to_sys_path(dirs: Sequence[str]) -> bool:
    added = False
    for d in dirs:
        if d and os.path.isdir(d) and d not in sys.path:
            sys.path.append(d)
            added = True
    if added:
        importlib.invalidate_caches()
    return added


def _missing_is(err: ModuleNotFoundError, module_name: str) -> bool:
    """Whether ``err`` is about ``module_name`` (or a parent package) itself."""
    name = err.name or ""
    return bool(name) and (module_name == name or module_name.startswith(name + "."))


def _import_module(module_name: str, path: str, search_path: Sequence[str]):
    _add_to_sys_path(search_path)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if not _missing_is(err, module_name):
            raise
    extra = [os.getcwd(), _script_dir()]
    if _add_to_sys_path([d for d in extra if d]):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if not _missing_is(err, module_name):
                raise
    looked = ", ".join(repr(d) for d in dict.fromkeys(d for d in extra if d))
    raise ModuleNotFoundError(
        f"model.name={path!r}: no module named {module_name!r} (searched sys.path, including "
        f"{looked}); put {module_name.replace('.', '/')}.py next to your script or in the "
        "current directory, or install the package.",
        name=module_name,
    )


def _module_root(module: Any, module_name: str) -> str | None:
    """The sys.path entry ``module`` was imported from (None if unknown)."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    root = os.path.dirname(os.path.abspath(file))
    levels = module_name.count(".") + (1 if os.path.basename(file).startswith("__init__.") else 0)
    for _ in range(levels):
        root = os.path.dirname(root)
    return root


def _resolve_path(path: str, search_path: Sequence[str] = ()) -> tuple[Any, str | None]:
    """``(attribute, module root)`` of ``package.module:attr`` (``attr`` may be dotted)."""
    if not is_import_path(path):
        raise ValueError(
            f"model.name={path!r} is not an import path; write package.module:attr (e.g. "
            "my_models:SmallCNN) or use a built-in model name."
        )
    module_name, attr_path = path.split(":")
    module = _import_module(module_name, path, search_path)
    obj = module
    for i, part in enumerate(attr_path.split(".")):
        if not hasattr(obj, part):
            owner = module_name if i == 0 else f"{module_name}:{'.'.join(attr_path.split('.')[:i])}"
            names = sorted(n for n in dir(obj) if not n.startswith("_"))
            raise AttributeError(
                f"model.name={path!r}: {owner} has no attribute {part!r}; it defines "
                f"{names[:20]}{' ...' if len(names) > 20 else ''}."
            )
        obj = getattr(obj, part)
    return obj, _module_root(module, module_name)


@functools.lru_cache(maxsize=64)
def _resolved(path: str, search_path: tuple[str, ...]) -> Any:
    return _resolve_path(path, search_path)[0]


def _parameters(fn: Callable) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def _accepts(fn: Callable, name: str) -> bool:
    params = _parameters(fn)
    if params is None:
        return True
    if name in params and params[name].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.VAR_POSITIONAL,
    ):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _check_signature(fn: Callable, kwargs: dict, path: str, what: str) -> None:
    """Options the callable cannot take are reported before anything is built."""
    try:
        sig = inspect.signature(fn)
        if isinstance(fn, type):  # a metaclass may hide the constructor's own signature
            init = inspect.signature(fn.__init__)
            sig = init.replace(parameters=list(init.parameters.values())[1:])
    except (TypeError, ValueError):
        return
    try:
        sig.bind(**kwargs)
    except TypeError as err:
        raise TypeError(
            f"model.name={path!r}: {what} cannot be called with {sorted(kwargs)} ({err}); its "
            f"signature is {sig}. Check model.options."
        ) from None


# --- the adapters ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UserModel:
    """A model given by import path, as the functional boundary sees it (see module docstring).

    Fields (the value the adapter hashes and compares by, apart from ``search_path``):
    ``path`` (``package.module:attr``), ``options`` (canonical JSON object text of constructor
    options), ``output_index`` (the logit column, or None for single-output models) and, for
    :class:`LinenModel`, ``train_flag``. ``search_path``: directories to put on ``sys.path``
    before importing (the directory the module was found in); not part of the value.
    Build adapters with :func:`load_user_model` (or :func:`raysweep.models.get_model`).
    """

    path: str
    options: str = "{}"
    output_index: int | None = None
    search_path: tuple[str, ...] = dataclasses.field(default=(), compare=False, repr=False)

    kind: ClassVar[str] = "user"

    def __post_init__(self) -> None:
        if not is_import_path(self.path):
            raise ValueError(
                f"{type(self).__name__}: path={self.path!r} is not an import path "
                "package.module:attr."
            )
        object.__setattr__(
            self, "options", _canonical_options(self.options, f"model.name={self.path!r}")
        )
        if self.output_index is not None:
            idx = check_int(
                self.output_index,
                f"model.name={self.path!r}: output_index",
                minimum=0,
                hint=" or None",
            )
            object.__setattr__(self, "output_index", idx)
        object.__setattr__(self, "search_path", tuple(str(d) for d in self.search_path))

    # -- helpers shared by the kinds --
    @property
    def where(self) -> str:
        return f"model {self.path}"

    def option_dict(self) -> dict:
        """The constructor options as a dict."""
        return json.loads(self.options)

    def resolve(self) -> Any:
        """The attribute the import path names (imported once per process)."""
        return _resolved(self.path, self.search_path)

    def _checked_variables(self, variables: Any, fn: str) -> dict:
        if not isinstance(variables, Mapping) or "params" not in variables:
            got = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
            raise ValueError(
                f"{fn}({self.path}): variables must be a dict with a 'params' entry (and "
                f"'batch_stats' for batch-norm models), got {got}; pass the dict returned by "
                "init_variables."
            )
        unexpected = sorted(set(variables) - set(_COLLECTIONS))
        if unexpected:
            raise ValueError(
                f"{fn}({self.path}): unsupported variable collections {unexpected}; allowed are "
                f"{list(_COLLECTIONS)}."
            )
        return dict(variables)

    # -- to implement per kind --
    def _init(self, input_shape: tuple[int, int, int], seed: int) -> dict:
        raise NotImplementedError

    def _eval_fn(self, batch_stats: Any) -> Callable[[Any, jax.Array], Any]:
        """Raw eval view ``(params, x) -> model output`` with frozen ``batch_stats``."""
        raise NotImplementedError

    def _train_fn(self) -> Callable[[Any, Any, jax.Array], tuple[Any, Any]]:
        """Raw train view ``(params, batch_stats, x) -> (model output, new batch_stats)``."""
        raise NotImplementedError

    # -- the functional boundary (called by raysweep.models.functional) --
    def init_variables(self, input_shape: tuple[int, int, int], seed: int) -> dict:
        """Variables ``{"params": ..., ["batch_stats": ...]}``, all checks of the module doc."""
        shape = validate_input_shape(input_shape)
        variables = self._init(shape, int(seed))
        _check_params(variables["params"], self.where)
        stats = variables.get("batch_stats") or {}
        x = jax.ShapeDtypeStruct((_PROBE_BATCH, *shape), jnp.float32)
        out = _probe(self._eval_fn(stats), (variables["params"], x), "eval view", self.where, shape)
        _check_output(out, self.output_index, self.where)
        out_train, _ = _probe(
            self._train_fn(), (variables["params"], stats, x), "train view", self.where, shape
        )
        _check_output(out_train, self.output_index, f"{self.where} (train view)")
        return variables

    def make_apply_fn(self, variables: Mapping[str, Any]) -> Callable:
        """Eval view ``apply_fn(params, x) -> (n, 1)``, batch statistics of ``variables`` frozen."""
        variables = self._checked_variables(variables, "make_apply_fn")
        raw = self._eval_fn(variables.get("batch_stats") or {})
        where, idx = f"apply_fn({self.path})", self.output_index

        def apply_fn(params: Any, x: jax.Array) -> jax.Array:
            return _select(raw(params, _prepare_x(x, where)), idx, where)

        return apply_fn

    def make_train_apply_fn(self) -> Callable:
        """Train view ``train_apply_fn(params, batch_stats, x) -> (logits (n, 1), new_stats)``."""
        raw = self._train_fn()
        where, idx = f"train_apply_fn({self.path})", self.output_index

        def train_apply_fn(params: Any, batch_stats: Any, x: jax.Array) -> tuple[jax.Array, Any]:
            y, new_stats = raw(params, batch_stats, _prepare_x(x, where))
            return _select(y, idx, where), new_stats

        return train_apply_fn


def _compile_init(fn: Callable, example_args: tuple, backend: str) -> Callable:
    """``jax.jit(fn)``; on CPU compiled at backend optimisation level 0 (fast compile of the
    many random samplers of an initialiser; see ``raysweep.models.functional._build_init``)."""
    jitted = jax.jit(fn)
    if backend != "cpu":
        return jitted
    return jitted.lower(*example_args).compile(
        compiler_options={"xla_backend_optimization_level": 0}
    )


# --- NNX --------------------------------------------------------------------------------------


class _NNXParts(NamedTuple):
    eval_graph: Any
    train_graph: Any
    params: tuple  # ((nnx path, abstract Variable), ...) in flat-state order
    param_locs: tuple  # string locations in variables["params"]
    stats: tuple
    stat_locs: tuple
    other: tuple  # non-parameter, non-statistics state (RNG streams, ...)


def _flat(state: Any) -> tuple:
    return tuple(nnx.to_flat_state(state))


def _locs(flat: tuple) -> tuple:
    return tuple(tuple(_key_str(p) for p in path) for path, _ in flat)


def _value(var: Any) -> Any:
    return var.get_value() if isinstance(var, nnx.Variable) else var


def _replaced(var: Any, value: Any) -> Any:
    return var.replace(value) if isinstance(var, nnx.Variable) else value


def _state_from(template: tuple, values: Sequence[Any]) -> Any:
    return nnx.from_flat_state(
        [(path, _replaced(var, v)) for (path, var), v in zip(template, values, strict=True)]
    )


@functools.lru_cache(maxsize=32)
def _nnx_parts(model: NNXModel) -> _NNXParts:
    """Graph definitions of both views and the state templates, from ``nnx.eval_shape``."""
    try:
        abstract = nnx.eval_shape(lambda: model.build(nnx.Rngs(_REFERENCE_SEED)))
    except Exception as err:  # the constructor's own error, any type
        kind = TypeError if isinstance(err, TypeError) else ValueError
        raise kind(
            f"{model.where}: building {model.path}(**{model.option_dict()}, rngs=nnx.Rngs(seed)) "
            f"failed: {type(err).__name__}: {err}"
        ) from err
    _, params, stats, other = nnx.split(abstract, nnx.Param, nnx.BatchStat, ...)
    abstract.eval()
    eval_graph = nnx.graphdef(abstract)
    abstract.set_attributes(deterministic=True, use_running_average=False, raise_if_not_found=False)
    train_graph = nnx.graphdef(abstract)
    p, s = _flat(params), _flat(stats)
    return _NNXParts(eval_graph, train_graph, p, _locs(p), s, _locs(s), _flat(other))


@functools.lru_cache(maxsize=32)
def _nnx_init(model: NNXModel, backend: str) -> Callable:
    """Compiled ``key -> (param values, stat values, other values)`` (flat-state order)."""

    def init(key: jax.Array) -> tuple:
        built = model.build(nnx.Rngs(key))
        _, params, stats, other = nnx.split(built, nnx.Param, nnx.BatchStat, ...)
        return tuple(tuple(_value(v) for _, v in _flat(s)) for s in (params, stats, other))

    return _compile_init(init, (jax.random.key(0),), backend)


@functools.lru_cache(maxsize=32)
def _nnx_constants(model: NNXModel) -> tuple:
    """Values of the non-parameter state of the reference build (concrete, process-local)."""
    with jax.ensure_compile_time_eval():
        init = _nnx_init(model, jax.default_backend())
        return init(jax.random.key(_REFERENCE_SEED))[2]


@dataclasses.dataclass(frozen=True)
class NNXModel(UserModel):
    """A ``flax.nnx.Module`` class or factory, built as ``attr(**options, rngs=nnx.Rngs(seed))``."""

    kind: ClassVar[str] = "nnx"

    def build(self, rngs: nnx.Rngs) -> nnx.Module:
        """The model built with ``rngs`` (checked to be an ``nnx.Module``)."""
        built = self.resolve()(**self.option_dict(), rngs=rngs)
        if not isinstance(built, nnx.Module):
            raise TypeError(
                f"{self.where}: {self.path}(**options, rngs=...) returned a "
                f"{type(built).__name__}, not a flax.nnx.Module. A function returning "
                "(apply_fn, params) must not have an `rngs` parameter (take `seed` instead)."
            )
        return built

    def graphdefs(self) -> tuple[Any, Any]:
        """``(eval view, train view)`` graph definitions (from ``nnx.eval_shape``)."""
        parts = _nnx_parts(self)
        return parts.eval_graph, parts.train_graph

    def _init(self, input_shape: tuple[int, int, int], seed: int) -> dict:
        parts = _nnx_parts(self)
        p, s, o = _nnx_init(self, jax.default_backend())(jax.random.key(seed))
        self._warn_seed_dependent(parts, o)
        variables = {"params": _nest(list(zip(parts.param_locs, p, strict=True)), self.where)}
        if parts.stats:
            variables["batch_stats"] = _nest(list(zip(parts.stat_locs, s, strict=True)), self.where)
        return variables

    def _warn_seed_dependent(self, parts: _NNXParts, other: tuple) -> None:
        reference = _nnx_constants(self)
        for (path, var), a, b in zip(parts.other, other, reference, strict=True):
            if isinstance(var, nnx.RngState) or not hasattr(a, "dtype"):
                continue
            if np.asarray(a).shape != np.asarray(b).shape or not np.array_equal(
                np.asarray(a), np.asarray(b)
            ):
                warnings.warn(
                    f"{self.where}: state {'/'.join(map(str, path))} ({type(var).__name__}) is "
                    "neither nnx.Param nor nnx.BatchStat and depends on the seed; raysweep keeps "
                    f"its value from nnx.Rngs({_REFERENCE_SEED}). Declare it nnx.Param or "
                    "nnx.BatchStat to keep it per seed.",
                    UserWarning,
                    stacklevel=4,
                )
                return

    def _merged(self, graph: Any, params: Any, stats: Any) -> nnx.Module:
        parts, where = _nnx_parts(self), self.where
        # jnp.asarray: NNX layers assign into their variables (batch norm's running averages);
        # a NumPy leaf (e.g. restored from msgpack) must never be written in place.
        p = [jnp.asarray(_lookup(params, loc, "params", where)) for loc in parts.param_locs]
        s = [jnp.asarray(_lookup(stats, loc, "batch_stats", where)) for loc in parts.stat_locs]
        return nnx.merge(
            graph,
            _state_from(parts.params, p),
            _state_from(parts.stats, s),
            _state_from(parts.other, _nnx_constants(self)),
        )

    def _check_stats(self, stats: Any, fn: str) -> None:
        if _nnx_parts(self).stats and not stats:
            raise ValueError(
                f"{fn}({self.path}): this model has batch statistics but batch_stats is "
                f"{stats!r}; pass variables['batch_stats'] from init_variables."
            )

    def _eval_fn(self, batch_stats: Any) -> Callable:
        self._check_stats(batch_stats, "make_apply_fn")
        graph = _nnx_parts(self).eval_graph

        def raw(params: Any, x: jax.Array) -> Any:
            return self._merged(graph, params, batch_stats)(x)

        return raw

    def _train_fn(self) -> Callable:
        parts = _nnx_parts(self)

        def raw(params: Any, batch_stats: Any, x: jax.Array) -> tuple[Any, Any]:
            if not parts.stats:
                return self._merged(parts.train_graph, params, {})(x), batch_stats
            self._check_stats(batch_stats, "train_apply_fn")
            model = self._merged(parts.train_graph, params, batch_stats)
            y = model(x)
            new = dict(_flat(nnx.state(model, nnx.BatchStat)))
            pairs = [
                (loc, _value(new[path]))
                for (path, _), loc in zip(parts.stats, parts.stat_locs, strict=True)
            ]
            return y, _nest(pairs, self.where)

        return raw


# --- linen -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _linen_module(model: LinenModel) -> nn.Module:
    obj = model.resolve()
    if isinstance(obj, nn.Module):
        return obj
    return obj(**model.option_dict())


@functools.lru_cache(maxsize=32)
def _linen_init(model: LinenModel, input_shape: tuple[int, int, int], backend: str) -> Callable:
    module = _linen_module(model)

    def init(key: jax.Array, x: jax.Array) -> Any:
        return module.init(key, x, **model.flag(False))

    example = (jax.random.key(0), jnp.zeros((1, *input_shape), jnp.float32))
    return _compile_init(init, example, backend)


@dataclasses.dataclass(frozen=True)
class LinenModel(UserModel):
    """A ``flax.linen.Module`` class (built with ``**options``) or instance.

    ``train_flag``: the keyword of ``__call__`` that switches train/eval mode (``"train"``;
    ``""``: the module takes none).
    """

    train_flag: str = "train"

    kind: ClassVar[str] = "linen"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.train_flag, str) or not (
            self.train_flag == "" or self.train_flag.isidentifier()
        ):
            raise ValueError(
                f"model.name={self.path!r}: train_flag must be the name of the module's "
                f"train/eval keyword (e.g. 'train') or '' for none, got {self.train_flag!r}."
            )

    def flag(self, train: bool) -> dict:
        """``{train_flag: train}``, or ``{}`` when the module takes no flag."""
        return {self.train_flag: train} if self.train_flag else {}

    def module(self) -> nn.Module:
        """The linen module (instantiated once per process)."""
        return _linen_module(self)

    def _init(self, input_shape: tuple[int, int, int], seed: int) -> dict:
        dummy = jnp.zeros((1, *input_shape), jnp.float32)
        try:
            init = _linen_init(self, input_shape, jax.default_backend())
            raw = init(jax.random.key(seed), dummy)
        except Exception as err:
            hint = (
                f" (is model.train_flag={self.train_flag!r} the keyword of its __call__? "
                "Use '' for a module without one.)"
                if self.train_flag and self.train_flag in str(err)
                else ""
            )
            raise ValueError(
                f"{self.where}: module.init on a batch of shape {(1, *input_shape)} "
                f"{'with ' + self.train_flag + '=False ' if self.train_flag else ''}failed: "
                f"{type(err).__name__}: {err}{hint}"
            ) from err
        variables = _plain(raw)
        unexpected = sorted(set(variables) - set(_COLLECTIONS))
        if unexpected:
            raise ValueError(
                f"{self.where}: the module created variable collections {unexpected}; only "
                f"{list(_COLLECTIONS)} are supported (parameters and batch-norm statistics)."
            )
        if not variables.get("batch_stats"):
            variables.pop("batch_stats", None)
        if "params" not in variables:
            raise ValueError(f"{self.where}: the module has no parameters.")
        return variables

    def _eval_fn(self, batch_stats: Any) -> Callable:
        module, flag = self.module(), self.flag(False)

        def raw(params: Any, x: jax.Array) -> Any:
            model_vars = {"params": params}
            if batch_stats:
                model_vars["batch_stats"] = batch_stats
            return module.apply(model_vars, x, **flag)

        return raw

    def _train_fn(self) -> Callable:
        module, flag, path = self.module(), self.flag(True), self.path

        def raw(params: Any, batch_stats: Any, x: jax.Array) -> tuple[Any, Any]:
            if not batch_stats:
                try:
                    return module.apply({"params": params}, x, **flag), batch_stats
                except Exception as err:
                    if "batch_stats" not in str(err):
                        raise
                    raise ValueError(
                        f"train_apply_fn({path}): this model has batch statistics but "
                        f"batch_stats is {batch_stats!r}; pass variables['batch_stats'] from "
                        "init_variables."
                    ) from err
            y, updates = module.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                mutable=["batch_stats"],
                **flag,
            )
            return y, _plain(updates["batch_stats"])

        return raw


# --- plain functions ---------------------------------------------------------------------------


class _FunctionParts(NamedTuple):
    apply: Callable
    treedef: Any
    locs: tuple


def _call_function(model: FunctionModel, seed: int, input_shape) -> tuple[Callable, Any]:
    fn = model.resolve()
    kwargs = model.option_dict()
    if _accepts(fn, "seed"):
        kwargs["seed"] = seed
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    result = fn(**kwargs)
    if not (isinstance(result, tuple | list) and len(result) == 2 and callable(result[0])):
        if isinstance(result, nnx.Module):
            hint = " It returned an nnx.Module: give the factory an `rngs` parameter."
        else:
            hint = ""
        raise TypeError(
            f"{model.where}: {model.path}(**options, seed=..., input_shape=...) must return "
            f"(apply_fn, params), got {type(result).__name__}.{hint}"
        )
    return result[0], result[1]


def _structure(params: Any, where: str) -> tuple[Any, tuple]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    locs = tuple(tuple(_key_str(e) for e in path) or ("value",) for path, _ in leaves)
    _nest([(loc, None) for loc in locs], where)  # collisions
    return treedef, locs


@functools.lru_cache(maxsize=64)
def _function_parts(model: FunctionModel, input_shape: tuple | None) -> _FunctionParts:
    with jax.ensure_compile_time_eval():
        apply, params = _call_function(model, _REFERENCE_SEED, input_shape)
    treedef, locs = _structure(params, model.where)
    return _FunctionParts(apply, treedef, locs)


@dataclasses.dataclass(frozen=True)
class FunctionModel(UserModel):
    """A function ``attr(**options, seed=..., input_shape=...) -> (apply_fn, params)``."""

    kind: ClassVar[str] = "function"

    def _shape_key(self, input_shape: Sequence[int]) -> tuple | None:
        return (
            tuple(int(d) for d in input_shape) if _accepts(self.resolve(), "input_shape") else None
        )

    def _init(self, input_shape: tuple[int, int, int], seed: int) -> dict:
        key = self._shape_key(input_shape)
        _, params = _call_function(self, seed, key)
        _check_params(params, self.where)
        treedef, locs = _structure(params, self.where)
        ref = _function_parts(self, key)
        if treedef != ref.treedef:
            raise ValueError(
                f"{self.where}: the structure of params depends on the seed ({treedef} for "
                f"seed={seed}, {ref.treedef} for seed={_REFERENCE_SEED}); it must not."
            )
        leaves = [jnp.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)]
        return {"params": _nest(list(zip(locs, leaves, strict=True)), self.where)}

    def _eval_fn(self, batch_stats: Any) -> Callable:
        del batch_stats  # no batch statistics

        def raw(params: Any, x: jax.Array) -> Any:
            parts = _function_parts(self, self._shape_key(x.shape[1:]))
            leaves = [_lookup(params, loc, "params", self.where) for loc in parts.locs]
            return parts.apply(jax.tree_util.tree_unflatten(parts.treedef, leaves), x)

        return raw

    def _train_fn(self) -> Callable:
        eval_raw = self._eval_fn({})

        def raw(params: Any, batch_stats: Any, x: jax.Array) -> tuple[Any, Any]:
            return eval_raw(params, x), batch_stats

        return raw


# --- loading -----------------------------------------------------------------------------------


def load_user_model(
    path: str,
    *,
    options: Mapping[str, Any] | str | None = None,
    train_flag: str = "train",
    output_index: int | None = None,
) -> UserModel:
    """Resolve ``package.module:attr`` into the adapter of its kind (module docstring).

    Args:
      path: import path ``package.module:attr`` (``attr`` may be dotted, ``mod:Outer.inner``).
        The module is imported with the current directory and the script's directory on
        ``sys.path``.
      options: constructor options, a dict or JSON object text (``model.options``).
      train_flag: the linen module's train/eval keyword (``""``: none); ignored by the other
        kinds.
      output_index: the logit column of a model with several outputs (None: exactly one).

    Returns:
      An :class:`NNXModel`, :class:`LinenModel` or :class:`FunctionModel`; pass it to
      :func:`raysweep.models.init_variables` like a built-in module.

    Raises:
      ModuleNotFoundError: the module cannot be imported.
      AttributeError: the module has no such attribute.
      TypeError: the attribute is of a kind raysweep does not accept (the message lists the
        accepted kinds), an nnx.Module instance, or ``options`` do not fit its signature.
      ValueError: a malformed path, options or output_index.
    """
    if not isinstance(path, str) or not is_import_path(path):
        raise ValueError(
            f"model.name={path!r} is not an import path; write package.module:attr (e.g. "
            "my_models:SmallCNN)."
        )
    opts_text = _canonical_options(options, f"model.name={path!r}")
    opts = json.loads(opts_text)
    obj, root = _resolve_path(path)
    search_path = (root,) if root else ()
    common = {"options": opts_text, "output_index": output_index, "search_path": search_path}
    if isinstance(obj, type) and issubclass(obj, nnx.Module):
        _check_signature(obj, {**opts, "rngs": None}, path, "the nnx.Module")
        return NNXModel(path, **common)
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        _check_signature(obj, opts, path, "the linen Module")
        return LinenModel(path, train_flag=train_flag, **common)
    if isinstance(obj, nn.Module):
        if opts:
            raise TypeError(
                f"model.name={path!r} names a linen Module instance; it takes no options (got "
                f"{sorted(opts)}). Point model.name at its class to pass options."
            )
        return LinenModel(path, train_flag=train_flag, **common)
    if isinstance(obj, nnx.Module):
        raise TypeError(
            f"model.name={path!r} names an nnx.Module instance; raysweep builds NNX models "
            "itself from a seed, so point model.name at its class or at a factory "
            "`def make(..., *, rngs): return Model(..., rngs=rngs)`."
        )
    if callable(obj) and not isinstance(obj, type):
        params = _parameters(obj)
        if params is not None and "rngs" in params:
            _check_signature(obj, {**opts, "rngs": None}, path, "the NNX factory")
            return NNXModel(path, **common)
        extra = {k: None for k in ("seed", "input_shape") if _accepts(obj, k)}
        _check_signature(obj, {**opts, **extra}, path, "the model function")
        return FunctionModel(path, **common)
    raise TypeError(
        f"model.name={path!r} names {type(obj).__name__} {obj!r:.80}; accepted are "
        f"{ACCEPTED_KINDS}."
    )
