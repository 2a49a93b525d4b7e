"""Small models given by import path (``user_models_fixture:...``) for tests/test_user_models.py.

One of each kind raysweep accepts (NNX module, linen module, plain function), plus a few that
break one rule each (outputs, dtypes, kinds).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class SmallCNN(nnx.Module):
    """Conv -> BatchNorm -> relu -> mean pool -> Dropout -> Linear(outputs)."""

    def __init__(
        self,
        features: int = 4,
        in_channels: int = 1,
        outputs: int = 1,
        dropout: float = 0.25,
        *,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(in_channels, features, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(features, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(features, outputs, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x)))
        return self.head(self.drop(h.mean(axis=(1, 2))))


def make_small_cnn(features: int = 4, *, rngs: nnx.Rngs) -> SmallCNN:
    """An NNX factory (a function with an ``rngs`` parameter)."""
    return SmallCNN(features, rngs=rngs)


class IntParamNNX(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.head = nnx.Linear(4, 1, rngs=rngs)
        self.offset = nnx.Param(jnp.arange(1, dtype=jnp.int32))

    def __call__(self, x):
        return self.head(x.reshape(x.shape[0], -1)[:, :4]) + self.offset[...]


class Buffer(nnx.Variable):
    """A non-parameter state type: kept by raysweep as a constant of the model."""


class WithBuffer(nnx.Module):
    """A Linear layer plus a fixed random offset drawn from the seed (not a parameter)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.head = nnx.Linear(int(np.prod((6, 6, 1))), 1, rngs=rngs)
        self.offset = Buffer(jax.random.normal(rngs.params(), (1,)))

    def __call__(self, x):
        return self.head(x.reshape(x.shape[0], -1)) + self.offset[...]


class LinenBN(nn.Module):
    """Conv -> BatchNorm -> relu -> mean pool -> Dense(1), with a ``train`` flag."""

    features: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Conv(self.features, (3, 3))(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        return nn.Dense(1)(nn.relu(h).mean(axis=(1, 2)))


class LinenNoFlag(nn.Module):
    """A linen MLP without a train/eval keyword and with a (n,) output."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(5)(x.reshape((x.shape[0], -1))))
        return nn.Dense(1)(h)[:, 0]


class LinenSows(nn.Module):
    """Stores intermediates: a collection raysweep does not support."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.variable("cache", "last", lambda: jnp.zeros(()))
        return nn.Dense(1)(x.reshape((x.shape[0], -1)))


linen_instance = LinenBN(features=3)


def pure_mlp(hidden: int = 6, outputs: int = 1, *, seed: int, input_shape):
    """A plain-JAX two-layer tanh MLP; ``params`` is a list (not a dict) on purpose."""
    d = int(np.prod(input_shape))
    k1, k2 = jax.random.split(jax.random.key(seed))
    f32 = jnp.float32
    params = [
        {
            "w": jax.random.normal(k1, (d, hidden), f32) / float(np.sqrt(d)),
            "b": jnp.zeros(hidden, f32),
        },
        (
            jax.random.normal(k2, (hidden, outputs), f32) / float(np.sqrt(hidden)),
            jnp.full(outputs, 0.1, f32),
        ),
    ]

    def apply_fn(params, x):
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ params[0]["w"] + params[0]["b"])
        w, b = params[1]
        return h @ w + b

    return apply_fn, params


def three_outputs(*, seed: int, input_shape):
    return pure_mlp(outputs=3, seed=seed, input_shape=input_shape)


def float64_output(*, seed: int, input_shape):
    apply_fn, params = pure_mlp(seed=seed, input_shape=input_shape)
    return (lambda p, x: apply_fn(p, x).astype(jnp.float64)), params  # float64 under x64


def bfloat16_output(*, seed: int, input_shape):
    apply_fn, params = pure_mlp(seed=seed, input_shape=input_shape)
    return (lambda p, x: apply_fn(p, x).astype(jnp.bfloat16)), params


def float64_params(*, seed: int, input_shape):
    """NumPy float64 parameters (float64 whatever JAX's x64 setting)."""
    d = int(np.prod(input_shape))
    w = np.random.default_rng(seed).normal(size=(d, 1))
    return (lambda p, x: x.reshape(x.shape[0], -1) @ p["w"]), {"w": w}


def numpy_apply(*, seed: int, input_shape):
    """An apply function that JAX cannot trace."""
    apply_fn, params = pure_mlp(seed=seed, input_shape=input_shape)
    return (lambda p, x: np.asarray(apply_fn(p, x))), params


def wrong_return(*, seed: int):
    return "not a model"


NOT_A_MODEL = 3


class PlainClass:
    pass
