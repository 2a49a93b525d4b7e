"""Multi-output NTKs of the Flax paper models with a 10-logit head, every method and layout.

References are brute force: ``jax.jacobian`` of the whole batch with respect to the
flattened parameters, contracted in float64. Tolerances: float32 rounding of a sum of ``L`` products
grows like ``sqrt(L)`` units of the largest entry; ``L`` is the parameter count times the
traced outputs.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import assert_f32_close, flat_jacobian
from jax.flatten_util import ravel_pytree

import raysweep.ntk as nt
from raysweep.models import get_model, init_variables, make_apply_fn
from raysweep.ntk import NTKEngine
from raysweep.ntk.structured import ConvSite, DenseSite

C = 10
LAYOUTS = {  # name: (trace_axes, diagonal_axes)
    "traced": ((-1,), ()),
    "diagonal": ((), (-1,)),
    "full": ((), ()),
}
METHODS = ("contraction", "structured", "ntvp", "auto")


def brute_full(apply_fn, params, x1, x2) -> np.ndarray:
    """Θ ``(n1, n2, C, C)`` from Jacobians ``(n, C, P)`` (float64 products)."""
    j1 = np.asarray(flat_jacobian(apply_fn, params, x1), np.float64)
    j2 = np.asarray(flat_jacobian(apply_fn, params, x2), np.float64)
    return np.einsum("icp,jdp->ijcd", j1, j2)


def layout_of(full: np.ndarray, layout: str) -> np.ndarray:
    if layout == "traced":
        return np.einsum("ijcc->ij", full) / full.shape[-1]
    if layout == "diagonal":
        return np.einsum("ijcc->ijc", full)
    return full


_MODELS: dict = {}


def model(name: str):
    """(apply_fn, params, x1, x2, full self kernel, full cross kernel), built once."""
    if name not in _MODELS:
        options = {"width": 4} if name == "resnet18" else {}
        module = get_model(name, outputs=C, **options)
        variables = init_variables(module, (8, 8, 3), seed=0)
        apply_fn, params = make_apply_fn(module, variables), variables["params"]
        rng = np.random.default_rng(1)
        x1 = rng.standard_normal((9, 8, 8, 3)).astype(np.float32)
        x2 = rng.standard_normal((4, 8, 8, 3)).astype(np.float32)
        _MODELS[name] = (
            apply_fn,
            params,
            x1,
            x2,
            brute_full(apply_fn, params, x1, x1),
            brute_full(apply_fn, params, x1, x2),
        )
    return _MODELS[name]


@pytest.mark.parametrize("name", ["mlp", "lenet5"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_paper_models_with_ten_logits_every_method(name, layout):
    apply_fn, params, x1, x2, full_self, full_cross = model(name)
    trace, diagonal = LAYOUTS[layout]
    num_params = ravel_pytree(params)[0].size
    reduction = num_params * (C if layout == "traced" else 1)
    for method in METHODS:
        ntk_fn = nt.empirical_ntk_fn(apply_fn, trace, diagonal, 0, method)
        got_self = ntk_fn(x1, None, params)
        got_cross = ntk_fn(x1, x2, params)
        what = f"{name} {layout} {method}"
        assert isinstance(got_self, np.ndarray), f"{what}: not the engine"
        assert_f32_close(got_self, layout_of(full_self, layout), reduction, what + " self")
        assert_f32_close(got_cross, layout_of(full_cross, layout), reduction, what + " cross")
    engine = NTKEngine(
        apply_fn, params, x1[:1], method="auto", trace_axes=trace, diagonal_axes=diagonal
    )
    assert engine.method == "structured"  # factored dense layers beat C·P Jacobian columns
    assert engine.outputs.tail == {"traced": (), "diagonal": (C,), "full": (C, C)}[layout]


def test_structured_widths_count_the_outputs():
    """Layer inputs once per example, cotangents and other columns once per output."""
    apply_fn, params, x1, *_ = model("mlp")
    one = NTKEngine(lambda p, x: apply_fn(p, x)[:, :1], params, x1[:1], method="structured")
    ten = NTKEngine(apply_fn, params, x1[:1], method="structured")
    dense = [s for s in ten.structured_sites if isinstance(s, DenseSite)]
    biases = sum(s.out_features for s in dense)  # the MLP's other leaves
    ins = sum(s.in_features for s in dense)
    outs = sum(s.out_features for s in dense)
    assert ten.feature_width == ins + C * (outs + biases)
    assert one.feature_width == ins + outs + biases  # the sliced head keeps its 10 columns


@pytest.mark.parametrize("layout", ["traced", "full"])
def test_resnet18_convolutions_with_ten_logits(layout):
    """Factored convolutions (the last stage, one position) for the traced kernel; kernel
    gradients from patches for the full layout."""
    apply_fn, params, x1, x2, full_self, full_cross = model("resnet18")
    trace, diagonal = LAYOUTS[layout]
    engine = NTKEngine(
        apply_fn, params, x1[:1], method="structured", trace_axes=trace, diagonal_axes=diagonal
    )
    convs = [s for s in engine.structured_sites if isinstance(s, ConvSite)]
    factored = [s.factored_for(C, layout == "full") for s in convs]
    assert len(convs) >= 17 and (any(factored) == (layout == "traced"))
    # the budget's width is what the features hold per example
    feats, _ = engine.features(x1[:2])
    assert engine.feature_width == sum(a[0].size for a in jax.tree_util.tree_leaves(feats))
    num_params = ravel_pytree(params)[0].size
    reduction = num_params * (C if layout == "traced" else 1)
    assert_f32_close(engine.whole(x1), layout_of(full_self, layout), reduction, "self")
    assert_f32_close(engine.whole(x1, x2), layout_of(full_cross, layout), reduction, "cross")
    tiles = nt.empirical_ntk_fn(apply_fn, trace, diagonal, 0, "structured", batch_size=4)
    assert_f32_close(tiles(x1, None, params), layout_of(full_self, layout), reduction, "tiles")
