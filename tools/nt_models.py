"""Pure-JAX reference models shared by the neural-tangents oracle and the project.

This module must import and behave identically under the pinned oracle environment
(jax 0.4.23 + neural-tangents 0.6.5, see tools/README.md) and the project environment
(current jax). Hence it only uses long-stable primitives: ``jnp`` ops,
``jax.lax.conv_general_dilated`` with ``("NHWC", "HWIO", "NHWC")``, ``jax.nn`` activations
and legacy ``jax.random.PRNGKey`` keys. It never imports flax or neural_tangents.

Model interface (``MODELS[name]`` is a :class:`ModelDef`):

* ``init_fn(key, input_shape) -> params``: a plain pytree of nested ``dict`` s (and, for the
  10-logit models, tuples and lists) of float32 arrays. ``input_shape`` is ``(H, W, C)`` or
  ``(N, H, W, C)`` (N ignored).
* ``init_state(key, input_shape) -> state``: frozen, non-trainable constants (inference-mode
  batch-norm statistics); ``{}`` for models without state.
* ``make_apply_fn(state) -> apply_fn``; ``apply_fn(params, x) -> (n, 1)`` for NHWC float32
  ``x`` (the 10-logit API-fixture models ``mlp10``, ``mlp10_heads``, ``cnn10`` and
  ``grid10`` return ``(n, 10)``, a pair of outputs, or ``(n, 2, 2, 10)``; ``paper_mlp10`` and
  ``paper_lenet10``, the paper models with a 10-logit head, return ``(n, 10)``). The state
  is closed over and wrapped in ``jax.lax.stop_gradient``: it is never a differentiated
  argument.
* ``get_model(name, seed, input_shape) -> (params, state, apply_fn)`` bundles the three.

Initialisation is *version independent*: the key is only used to seed a
``numpy.random.default_rng`` (JAX changed its default PRNG bit-stream in 0.5, so
``jax.random.normal`` with the same key gives different numbers in the two environments,
``numpy`` does not). ``init_fn(jax.random.PRNGKey(0), shape)`` therefore returns exactly the
same arrays under jax 0.4.23 and jax 0.10. Weights use standard parameterisation with
He-normal (before relu) / LeCun-normal scaling; biases and BN gamma/beta are small non-zero
random values so their gradients are exercised.

Fixtures (``tests/fixtures/nt_<model>.npz``, written by tools/nt_reference.py) store
params as ``param_0, param_1, ...`` in :func:`flatten_params` order (depth-first, dict keys
sorted, list indices ascending -- the same leaf order as ``jax.tree_util``), plus a JSON
``treedef`` string listing the key path of each leaf. :func:`load_fixture` rebuilds
everything, including ``apply_fn`` with the saved state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
_DN = ("NHWC", "HWIO", "NHWC")
BN_EPS = 1e-5

# --------------------------------------------------------------------------------------
# deterministic, version-independent random numbers
# --------------------------------------------------------------------------------------


def _rng(key) -> np.random.Generator:
    """numpy Generator seeded from a legacy uint32[2] PRNGKey, an int, or a Generator."""
    if isinstance(key, np.random.Generator):
        return key
    if isinstance(key, (int, np.integer)):
        return np.random.default_rng(int(key))
    data = np.asarray(key)
    if not np.issubdtype(data.dtype, np.integer):  # new-style typed key
        data = np.asarray(jax.random.key_data(key))
    return np.random.default_rng([int(v) for v in data.astype(np.uint64).ravel()])


def _normal(rng, shape, std) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(np.float32)


def _dense_init(rng, fan_in, fan_out, gain=2.0):
    return {
        "w": _normal(rng, (fan_in, fan_out), np.sqrt(gain / fan_in)),
        "b": _normal(rng, (fan_out,), 0.1),
    }


def _conv_init(rng, k, c_in, c_out, gain=2.0, bias=True):
    p = {"w": _normal(rng, (k, k, c_in, c_out), np.sqrt(gain / (k * k * c_in)))}
    if bias:
        p["b"] = _normal(rng, (c_out,), 0.1)
    return p


def _bn_init(rng, c):
    return {
        "gamma": (1.0 + 0.1 * rng.standard_normal(c)).astype(np.float32),
        "beta": _normal(rng, (c,), 0.1),
    }


def _bn_state(rng, c):
    """Non-trivial frozen statistics (running mean / variance)."""
    return {
        "mean": _normal(rng, (c,), 0.2),
        "var": rng.uniform(0.5, 1.5, c).astype(np.float32),
    }


def _hwc(input_shape):
    shape = tuple(int(s) for s in input_shape)
    return shape[-3:]


def _to_jnp(tree):
    return jax.tree_util.tree_map(jnp.asarray, tree)


# --------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------


def dense(p, x):
    return jnp.dot(x, p["w"]) + p["b"]


def conv(p, x, stride=1, padding="SAME"):
    y = jax.lax.conv_general_dilated(
        x, p["w"], window_strides=(stride, stride), padding=padding, dimension_numbers=_DN
    )
    if "b" in p:
        y = y + p["b"]
    return y


def avg_pool2(x):
    """2x2 average pool, stride 2 (H and W must be even)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def frozen_bn(p, s, x):
    """Inference-mode batch norm; ``s`` (mean/var) is a constant, ``p`` (gamma/beta) trains."""
    mean = jax.lax.stop_gradient(s["mean"])
    var = jax.lax.stop_gradient(s["var"])
    return (x - mean) * jax.lax.rsqrt(var + BN_EPS) * p["gamma"] + p["beta"]


def flatten_batch(x):
    return x.reshape(x.shape[0], -1)


# --------------------------------------------------------------------------------------
# model definitions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDef:
    name: str
    init_fn: Callable[[Any, tuple], PyTree]
    make_apply_fn: Callable[[PyTree], Callable]
    init_state: Callable[[Any, tuple], PyTree] = lambda key, input_shape: {}
    description: str = ""


def _no_state_apply(fn):
    def make_apply_fn(state=None):
        return fn

    return make_apply_fn


# ---- small fixture models ------------------------------------------------------------


def _mlp_factory(widths, outputs=1):
    def init_fn(key, input_shape):
        rng = _rng(key)
        d = int(np.prod(_hwc(input_shape)))
        params = {}
        for i, w in enumerate(widths):
            params[f"dense_{i}"] = _dense_init(rng, d, w, gain=2.0)
            d = w
        params[f"dense_{len(widths)}"] = _dense_init(rng, d, outputs, gain=1.0)
        return _to_jnp(params)

    def apply_fn(params, x):
        h = flatten_batch(x)
        for i in range(len(widths)):
            h = jax.nn.relu(dense(params[f"dense_{i}"], h))
        return dense(params[f"dense_{len(widths)}"], h)

    return init_fn, apply_fn


_mlp_init, _mlp_apply = _mlp_factory((32, 32))


def _cnn_init(key, input_shape):
    rng = _rng(key)
    h, w, c = _hwc(input_shape)
    params = {
        "conv_0": _conv_init(rng, 3, c, 4, gain=2.0),
        "conv_1": _conv_init(rng, 3, 4, 8, gain=1.0),
        "dense_0": _dense_init(rng, (h // 4) * (w // 4) * 8, 16, gain=1.0),
    }
    params["dense_1"] = _dense_init(rng, 16, 1, gain=1.0)
    return _to_jnp(params)


def _cnn_apply(params, x):
    h = avg_pool2(jax.nn.relu(conv(params["conv_0"], x)))
    h = avg_pool2(jnp.tanh(conv(params["conv_1"], h)))
    h = jax.nn.relu(dense(params["dense_0"], flatten_batch(h)))
    return dense(params["dense_1"], h)


def _resnet_small_init(key, input_shape):
    rng = _rng(key)
    c = _hwc(input_shape)[-1]
    params = {
        "stem": {"conv": _conv_init(rng, 3, c, 4, bias=False), "bn": _bn_init(rng, 4)},
        "block": {
            "conv1": _conv_init(rng, 3, 4, 4, bias=False),
            "bn1": _bn_init(rng, 4),
            "conv2": _conv_init(rng, 3, 4, 4, bias=False),
            "bn2": _bn_init(rng, 4),
        },
        "head": _dense_init(rng, 4, 1, gain=1.0),
    }
    return _to_jnp(params)


def _resnet_small_state(key, input_shape):
    rng = _rng(key)
    state = {
        "stem": {"bn": _bn_state(rng, 4)},
        "block": {"bn1": _bn_state(rng, 4), "bn2": _bn_state(rng, 4)},
    }
    return _to_jnp(state)


def _resnet_small_make_apply(state):
    state = _to_jnp(state)

    def apply_fn(params, x):
        p, s = params["stem"], state["stem"]
        h = jax.nn.relu(frozen_bn(p["bn"], s["bn"], conv(p["conv"], x)))
        p, s = params["block"], state["block"]
        y = jax.nn.relu(frozen_bn(p["bn1"], s["bn1"], conv(p["conv1"], h)))
        y = frozen_bn(p["bn2"], s["bn2"], conv(p["conv2"], y))
        h = jax.nn.relu(y + h)
        h = h.mean(axis=(1, 2))  # global average pooling
        return dense(params["head"], h)

    return apply_fn


# ---- 10-logit models for the neural-tangents API fixtures -------------------------------
# Params nest dicts with tuples/lists (the API takes any pytree); mlp10 takes keyword
# arguments: ``scale`` (scalar) and ``x_shift`` (per-example, added to the flattened input).


def _mlp10_init(key, input_shape):
    rng = _rng(key)
    d = int(np.prod(_hwc(input_shape)))
    hidden = (_dense_init(rng, d, 16, gain=1.0), _dense_init(rng, 16, 16, gain=1.0))
    return _to_jnp({"hidden": hidden, "readout": _dense_init(rng, 16, 10, gain=1.0)})


def _mlp10_features(params, x, x_shift=None):
    h = flatten_batch(x)
    if x_shift is not None:
        h = h + x_shift
    for layer in params["hidden"]:
        h = jnp.tanh(dense(layer, h))
    return h


def _mlp10_apply(params, x, scale=1.0, x_shift=None):
    return scale * dense(params["readout"], _mlp10_features(params, x, x_shift))


def _mlp10_heads_apply(params, x):
    """Two outputs: the 10 logits and the 16 last hidden features."""
    h = _mlp10_features(params, x)
    return dense(params["readout"], h), h


def _cnn10_init(key, input_shape):
    rng = _rng(key)
    h, w, c = _hwc(input_shape)
    convs = [_conv_init(rng, 3, c, 8, gain=2.0)]
    return _to_jnp({"convs": convs, "head": _dense_init(rng, (h // 4) * (w // 4) * 8, 10, 1.0)})


def _cnn10_apply(params, x):
    (c0,) = params["convs"]
    h = avg_pool2(avg_pool2(jax.nn.relu(conv(c0, x))))
    return dense(params["head"], flatten_batch(h))


def _grid10_init(key, input_shape):
    rng = _rng(key)
    d = int(np.prod(_hwc(input_shape)))
    return _to_jnp({"layers": [_dense_init(rng, d, 16, 1.0), _dense_init(rng, 16, 40, 1.0)]})


def _grid10_apply(params, x):
    """10 logits at each of 2x2 positions: output (n, 2, 2, 10)."""
    first, second = params["layers"]
    h = jnp.tanh(dense(first, flatten_batch(x)))
    return dense(second, h).reshape(x.shape[0], 2, 2, 10)


# ---- paper models (CIFAR-shaped 32x32x3) -----------------------------------------------

_paper_mlp_init, _paper_mlp_apply = _mlp_factory((100, 100))
_paper_mlp10_init, _ = _mlp_factory((100, 100), outputs=10)


def _lenet_init(key, input_shape, outputs):
    rng = _rng(key)
    h, w, c = _hwc(input_shape)
    params = {
        "conv_0": _conv_init(rng, 5, c, 6),
        "conv_1": _conv_init(rng, 5, 6, 16),
        "dense_0": _dense_init(rng, (h // 4) * (w // 4) * 16, 120),
        "dense_1": _dense_init(rng, 120, 84),
        "dense_2": _dense_init(rng, 84, outputs, gain=1.0),
    }
    return _to_jnp(params)


def _paper_lenet_init(key, input_shape):
    return _lenet_init(key, input_shape, 1)


def _paper_lenet10_init(key, input_shape):
    return _lenet_init(key, input_shape, 10)


def _paper_lenet_apply(params, x):
    h = avg_pool2(jax.nn.relu(conv(params["conv_0"], x)))
    h = avg_pool2(jax.nn.relu(conv(params["conv_1"], h)))
    h = jax.nn.relu(dense(params["dense_0"], flatten_batch(h)))
    h = jax.nn.relu(dense(params["dense_1"], h))
    return dense(params["dense_2"], h)


RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, first stride)
RESNET18_BLOCKS = (2, 2, 2, 2)


def _resnet18_layout():
    """Yields (stage, block, c_in, c_out, stride) for the CIFAR ResNet18."""
    c_in = 64
    for si, ((c_out, stride), nb) in enumerate(zip(RESNET18_STAGES, RESNET18_BLOCKS, strict=True)):
        for bi in range(nb):
            yield si, bi, c_in, c_out, stride if bi == 0 else 1
            c_in = c_out


def _paper_resnet18_init(key, input_shape):
    rng = _rng(key)
    c = _hwc(input_shape)[-1]
    params = {"stem": {"conv": _conv_init(rng, 3, c, 64, bias=False), "bn": _bn_init(rng, 64)}}
    for si, bi, c_in, c_out, stride in _resnet18_layout():
        blk = {
            "conv1": _conv_init(rng, 3, c_in, c_out, bias=False),
            "bn1": _bn_init(rng, c_out),
            "conv2": _conv_init(rng, 3, c_out, c_out, bias=False),
            "bn2": _bn_init(rng, c_out),
        }
        if stride != 1 or c_in != c_out:
            blk["proj_conv"] = _conv_init(rng, 1, c_in, c_out, bias=False)
            blk["proj_bn"] = _bn_init(rng, c_out)
        params[f"layer{si + 1}_{bi}"] = blk
    params["head"] = _dense_init(rng, 512, 1, gain=1.0)
    return _to_jnp(params)


def _paper_resnet18_state(key, input_shape):
    rng = _rng(key)
    state = {"stem": {"bn": _bn_state(rng, 64)}}
    for si, bi, c_in, c_out, stride in _resnet18_layout():
        blk = {"bn1": _bn_state(rng, c_out), "bn2": _bn_state(rng, c_out)}
        if stride != 1 or c_in != c_out:
            blk["proj_bn"] = _bn_state(rng, c_out)
        state[f"layer{si + 1}_{bi}"] = blk
    return _to_jnp(state)


def _paper_resnet18_make_apply(state):
    state = _to_jnp(state)
    layout = list(_resnet18_layout())

    def apply_fn(params, x):
        p, s = params["stem"], state["stem"]
        h = jax.nn.relu(frozen_bn(p["bn"], s["bn"], conv(p["conv"], x)))
        for si, bi, _c_in, _c_out, stride in layout:
            name = f"layer{si + 1}_{bi}"
            p, s = params[name], state[name]
            y = jax.nn.relu(frozen_bn(p["bn1"], s["bn1"], conv(p["conv1"], h, stride=stride)))
            y = frozen_bn(p["bn2"], s["bn2"], conv(p["conv2"], y))
            if "proj_conv" in p:
                sc = frozen_bn(p["proj_bn"], s["proj_bn"], conv(p["proj_conv"], h, stride=stride))
            else:
                sc = h
            h = jax.nn.relu(y + sc)
        h = h.mean(axis=(1, 2))
        return dense(params["head"], h)

    return apply_fn


MODELS: dict[str, ModelDef] = {
    "mlp": ModelDef(
        "mlp",
        _mlp_init,
        _no_state_apply(_mlp_apply),
        description="flatten, dense 32, relu, dense 32, relu, dense 1",
    ),
    "cnn": ModelDef(
        "cnn",
        _cnn_init,
        _no_state_apply(_cnn_apply),
        description="conv3x3 4 SAME, relu, avgpool2, conv3x3 8 SAME, tanh, avgpool2, "
        "flatten, dense 16, relu, dense 1",
    ),
    "resnet": ModelDef(
        "resnet",
        _resnet_small_init,
        _resnet_small_make_apply,
        _resnet_small_state,
        description="conv3x3 4 (no bias), frozen BN, relu, basic block "
        "(conv-BN-relu-conv-BN + identity), relu, global avg pool, dense 1",
    ),
    "mlp10": ModelDef(
        "mlp10",
        _mlp10_init,
        _no_state_apply(_mlp10_apply),
        description="flatten (+ x_shift), dense 16, tanh, dense 16, tanh, dense 10 (x scale); "
        "params {'hidden': (layer, layer), 'readout': layer}",
    ),
    "mlp10_heads": ModelDef(
        "mlp10_heads",
        _mlp10_init,
        _no_state_apply(_mlp10_heads_apply),
        description="mlp10 returning (logits (n, 10), last hidden features (n, 16))",
    ),
    "cnn10": ModelDef(
        "cnn10",
        _cnn10_init,
        _no_state_apply(_cnn10_apply),
        description="conv3x3 8 SAME, relu, avgpool2, avgpool2, flatten, dense 10; "
        "params {'convs': [conv], 'head': layer}",
    ),
    "grid10": ModelDef(
        "grid10",
        _grid10_init,
        _no_state_apply(_grid10_apply),
        description="flatten, dense 16, tanh, dense 40, reshape: 10 logits on a 2x2 grid, "
        "output (n, 2, 2, 10); params {'layers': [layer, layer]}",
    ),
    "paper_mlp": ModelDef(
        "paper_mlp",
        _paper_mlp_init,
        _no_state_apply(_paper_mlp_apply),
        description="flatten, dense 100, relu, dense 100, relu, dense 1 (317,501 params "
        "on 32x32x3)",
    ),
    "paper_lenet": ModelDef(
        "paper_lenet",
        _paper_lenet_init,
        _no_state_apply(_paper_lenet_apply),
        description="conv5x5 6 SAME, relu, avgpool2, conv5x5 16 SAME, relu, avgpool2, "
        "dense 120, relu, dense 84, relu, dense 1",
    ),
    "paper_mlp10": ModelDef(
        "paper_mlp10",
        _paper_mlp10_init,
        _no_state_apply(_paper_mlp_apply),
        description="paper_mlp with a 10-logit head: output (n, 10)",
    ),
    "paper_lenet10": ModelDef(
        "paper_lenet10",
        _paper_lenet10_init,
        _no_state_apply(_paper_lenet_apply),
        description="paper_lenet with a 10-logit head: output (n, 10)",
    ),
    "paper_resnet18": ModelDef(
        "paper_resnet18",
        _paper_resnet18_init,
        _paper_resnet18_make_apply,
        _paper_resnet18_state,
        description="CIFAR ResNet18: conv3x3 64 stem, [2,2,2,2] basic blocks 64..512, "
        "1x1 projection shortcuts, frozen BN, global avg pool, dense 1",
    ),
}


def get_model(name: str, seed: int = 0, input_shape=(8, 8, 2)):
    """Returns ``(params, state, apply_fn)``; state uses seed + 1000."""
    m = MODELS[name]
    params = m.init_fn(jax.random.PRNGKey(seed), input_shape)
    state = m.init_state(jax.random.PRNGKey(seed + 1000), input_shape)
    return params, state, m.make_apply_fn(state)


def count_params(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


# --------------------------------------------------------------------------------------
# deterministic pytree <-> list-of-arrays (for .npz fixtures)
# --------------------------------------------------------------------------------------


def flatten_params(tree) -> tuple[list[np.ndarray], str]:
    """Flattens nested dicts/lists/tuples of arrays.

    Returns ``(leaves, treedef_json)``: leaves in depth-first order with sorted dict keys
    (same order as ``jax.tree_util.tree_leaves``) and a JSON list of key paths, one per leaf;
    each path is a list of ``["d", key]`` (dict key) or ``["l", index]`` (list/tuple index).
    """
    leaves: list[np.ndarray] = []
    paths: list[list] = []

    def rec(node, path):
        if isinstance(node, dict):
            for k in sorted(node):
                if not isinstance(k, str):
                    raise TypeError(f"only str dict keys are supported, got {k!r}")
                rec(node[k], path + [["d", k]])
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                rec(v, path + [["l", i]])
        else:
            leaves.append(np.asarray(node))
            paths.append(path)

    rec(tree, [])
    return leaves, json.dumps(paths)


def unflatten_params(leaves, treedef_json: str, as_jnp: bool = True):
    """Inverse of :func:`flatten_params` (lists come back as lists, never tuples)."""
    paths = json.loads(treedef_json)
    if len(paths) != len(leaves):
        raise ValueError(f"{len(paths)} paths but {len(leaves)} leaves")
    if paths == [[]]:
        return jnp.asarray(leaves[0]) if as_jnp else leaves[0]
    root: Any = None

    def container(kind):
        return {} if kind == "d" else []

    for path, leaf in zip(paths, leaves, strict=True):
        leaf = jnp.asarray(leaf) if as_jnp else np.asarray(leaf)
        if root is None:
            root = container(path[0][0])
        node = root
        for depth, (kind, key) in enumerate(path):
            last = depth == len(path) - 1
            nxt = leaf if last else container(path[depth + 1][0])
            if kind == "d":
                if last:
                    node[key] = leaf
                else:
                    node = node.setdefault(key, nxt)
            else:
                while len(node) <= key:
                    node.append(None)
                if last:
                    node[key] = leaf
                else:
                    if node[key] is None:
                        node[key] = nxt
                    node = node[key]
    return root


def pack_tree(tree, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix}_0 ...`` arrays plus ``{prefix}_treedef`` JSON string (0-d str array)."""
    leaves, td = flatten_params(tree)
    out = {f"{prefix}_{i}": leaf for i, leaf in enumerate(leaves)}
    out[f"{prefix}_treedef"] = np.array(td)
    return out


def unpack_tree(data, prefix: str, treedef_key: str | None = None, as_jnp: bool = True):
    td = str(np.asarray(data[treedef_key or f"{prefix}_treedef"]))
    n = len(json.loads(td))
    if n == 0:
        return {}
    return unflatten_params([np.asarray(data[f"{prefix}_{i}"]) for i in range(n)], td, as_jnp)


def load_fixture(path) -> dict:
    """Loads ``tests/fixtures/nt_<model>.npz`` (written by tools/nt_reference.py).

    Returns a dict with ``model``, ``apply_fn`` (rebuilt with the saved frozen state),
    ``params``, ``shifted_params`` (jnp pytrees), ``state``, ``x1``, ``x2``, ``gram_self``,
    ``gram_cross``, ``lin_out_shifted``, ``f0_x1``, ``f_shifted_x1`` and, when present,
    ``gram_self_f64``, ``gram_self_impl{1,2,3}``, ``gram_cross_impl{1,2,3}`` plus a
    ``meta`` dict (jax / neural-tangents versions, implementation, ...). Arrays are numpy.
    """
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    model = str(data["model"])
    params = unpack_tree(data, "param", treedef_key="treedef")
    shifted = unpack_tree(data, "shifted_param", treedef_key="treedef")
    state = unpack_tree(data, "state")
    out = {
        "model": model,
        "apply_fn": MODELS[model].make_apply_fn(state),
        "params": params,
        "shifted_params": shifted,
        "state": state,
        "meta": json.loads(str(data["meta"])),
    }
    for k, v in data.items():
        if k.startswith(("param_", "shifted_param_", "state_")):
            continue
        if k in ("treedef", "model", "meta"):
            continue
        out[k] = v
    return out
