"""Fixtures shared by the sweep tests: a local Ray cluster, a compilation cache, a tiny artifact.

The eigenfunction artifact is tiny (digits, 60 train + 30 test images, 8 eigenvectors from a
dense eigensolve of the exact Gram) and built once per module that asks for it.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import ray
from jax.flatten_util import ravel_pytree

from raysweep.config import apply_overrides, get_preset
from raysweep.distributed import ensure_ray
from raysweep.eigen import top_eigenpairs
from raysweep.eigenfunctions import _dataset_for, _model_for, save_artifact
from raysweep.models import make_apply_fn
from raysweep.ntk import ntk_gram

F32_EPS = float(np.finfo(np.float32).eps)


def assert_f32_close(got, want, reduction: int, what: str = "", ulps: float = 8) -> None:
    """max|Δ| ≤ ulps · eps32 · sqrt(reduction) · max|want| (entry by entry, one tree): float32
    rounding of a sum of ``reduction`` products grows like its square root."""
    got_leaves, want_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves), what
    for g, w in zip(got_leaves, want_leaves, strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape, f"{what}: shape {g.shape} != {w.shape}"
        tol = ulps * F32_EPS * np.sqrt(reduction) * np.max(np.abs(w))
        err = np.max(np.abs(g - w))
        assert err <= tol, f"{what}: max|Δ| {err:.3g} > {tol:.3g} ({ulps} eps sqrt({reduction}))"


def flat_jacobian(apply_fn, params, x):
    """``(n, *outputs, P)``: ``jax.jacobian`` of the whole batch with respect to the
    parameters flattened by ``ravel_pytree`` (brute force for the NTK tests)."""
    flat, unravel = ravel_pytree(params)
    return jax.jacobian(lambda q: apply_fn(unravel(q), x))(flat)


def assert_close_f32(actual, desired, *, ulps: float = 64) -> None:
    """float32 results of two orderings of the same computation agree to ``ulps`` units of
    float32 rounding of the largest entry (batch, tile and jit choices change the order of
    sums; the bound must not depend on this machine's kernels)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    scale = max(float(np.abs(desired).max(initial=0.0)), float(np.finfo(np.float32).tiny))
    np.testing.assert_allclose(actual, desired, rtol=0, atol=ulps * F32_EPS * scale)


BASE = (
    "data.num_train=60",
    "data.num_test=30",
    "ntk.num_eigen=8",
    "train.epochs=2",
    "train.batch_size=16",
    "sweep.eigen_indices=0,1",
    "sweep.pack_size=2",
    "sweep.max_retries=0",
    "sweep.cpus_per_trial=2",  # 2 trials at a time on the 4 logical CPUs: 2 compiles in parallel
)


def make_config(*overrides):
    return apply_overrides(get_preset("smoke"), [*BASE, *overrides])


@pytest.fixture(scope="module")
def ray_cluster():
    started = ensure_ray(address="local", num_cpus=4, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """One persistent compilation cache for the module: sweeps of equal shapes compile once."""
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A tiny eigenfunction artifact: exact Gram of the initial MLP, dense top-8 eigenpairs."""
    config = make_config()
    ds = _dataset_for(config)
    module, variables = _model_for(config, ds.input_shape)
    x, _ = ds.concatenated()
    gram = ntk_gram(make_apply_fn(module, variables), variables["params"], x)
    pairs = top_eigenpairs(np.asarray(gram, np.float64), 8, method="dense")
    path = tmp_path_factory.mktemp("artifact") / "eigenfunctions"
    save_artifact(
        path, config=config, manifest=ds.manifest(), pairs=pairs, variables=variables, meta={}
    )
    return path
