"""raysweep.ntk's neural-tangents API against neural-tangents 0.6.5 fixtures and brute force.

Fixtures: tests/fixtures/nt_api/*.npz from tools/nt_api_reference.py (pinned oracle env).
Tolerances: float32 rounding of sums of ``L`` products grows like ``sqrt(L)`` units of the
largest entry; each comparison states its reduction length ``L``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_f32_close, flat_jacobian

import raysweep.ntk as nt
from raysweep.ntk import NTKEngine, NtkImplementation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nt_models  # noqa: E402

FIXTURES = {p.stem: p for p in sorted((ROOT / "tests" / "fixtures" / "nt_api").glob("*.npz"))}


class Fixture:
    """One fixture file: data, θ₀ with its tuple/list structure, θ, configurations."""

    def __init__(self, path: Path):
        with np.load(path, allow_pickle=False) as z:
            self.data = {k: z[k] for k in z.files}
        self.meta = json.loads(str(self.data["meta"]))
        model = nt_models.MODELS[self.meta["file_model"]]
        shape = tuple(self.meta["input_shape"])
        self.params = model.init_fn(jax.random.PRNGKey(0), shape)  # tuples and lists kept
        leaves, treedef = jax.tree_util.tree_flatten(self.params)
        for i, leaf in enumerate(leaves):  # the same θ₀ as the oracle's
            np.testing.assert_array_equal(leaf, self.data[f"param_{i}"])
        shifted = [jnp.asarray(self.data[f"shifted_param_{i}"]) for i in range(len(leaves))]
        self.shifted = jax.tree_util.tree_unflatten(treedef, shifted)
        self.num_params = nt_models.count_params(self.params)
        self.x1, self.x2 = self.data["x1"], self.data["x2"]

    def tree(self, key: str):
        if key in self.data:
            return self.data[key]
        return tuple(self.data[f"{key}__out{i}"] for i in range(2))

    def configs(self):
        return {c["name"]: c for c in self.meta["configs"]}

    def call_args(self, cfg):
        """(vmap_axes, keyword arguments) of a configuration."""
        vmap = (0, 0, {"x_shift": 0}) if cfg["vmap_axes"] == "kwargs" else cfg["vmap_axes"]
        kw = {}
        if cfg["kwargs"] == "pair":
            kw = {
                "scale": self.meta["scale"],
                "x_shift": (self.data["x_shift1"], self.data["x_shift2"]),
            }
        return vmap, kw


_LOADED: dict[str, Fixture] = {}


def fixture(name: str) -> Fixture:
    if name not in _LOADED:
        _LOADED[name] = Fixture(FIXTURES[name])
    return _LOADED[name]


def config_ids():
    out = []
    for name, path in FIXTURES.items():
        with np.load(path) as z:
            out += [(name, c["name"]) for c in json.loads(str(z["meta"]))["configs"]]
    return out


def apply_fn_of(cfg):
    return nt_models.MODELS[cfg["model"]].make_apply_fn({})


def reduction(fx: Fixture, cfg) -> int:
    """Products summed per NTK entry: parameters times the traced output size."""
    traced = {(): 1, (-1,): 10, (1,): 2, (-2,): 2, (1, 2): 4}[tuple(cfg["trace_axes"])]
    return fx.num_params * traced


# ----------------------------------------------------------------------------- neural-tangents


@pytest.mark.parametrize("file,config", config_ids(), ids=lambda v: str(v))
def test_traced_kernels_match_neural_tangents(file, config):
    """Inside jax.jit: NNGP, and the NTK by Jacobian contraction (1) and NTK-vector products
    (2), x2 given and None, against neural-tangents' implementation 1."""
    fx = fixture(file)
    cfg = fx.configs()[config]
    vmap, kw = fx.call_args(cfg)
    f = apply_fn_of(cfg)
    axes = (tuple(cfg["trace_axes"]), tuple(cfg["diagonal_axes"]))
    kernel_fn = nt.empirical_kernel_fn(f, *axes, vmap, 1)
    ntvp_fn = nt.empirical_ntk_fn(f, *axes, vmap, 2)

    @jax.jit
    def run(params, x1, x2):
        sides = {"cross": x2, "self": None}
        return {
            side: (
                kernel_fn(x1, sides[side], ("nngp", "ntk"), params, **kw),
                ntvp_fn(x1, sides[side], params, **kw),
            )
            for side in cfg["sides"]
        }

    got = run(fx.params, fx.x1, fx.x2)
    for side in cfg["sides"]:
        both, ntvp = got[side]
        want = fx.tree(f"{config}__ntk__{side}")
        if isinstance(want, tuple):  # two outputs: a namedtuple per output
            ntk, nngp = tuple(k.ntk for k in both), tuple(k.nngp for k in both)
        else:
            assert both._fields == ("nngp", "ntk")
            ntk, nngp = both.ntk, both.nngp
        assert_f32_close(nngp, fx.tree(f"{config}__nngp__{side}"), 64, f"{config} nngp {side}")
        assert_f32_close(ntk, want, reduction(fx, cfg), f"{config} ntk {side} contraction")
        assert_f32_close(ntvp, want, reduction(fx, cfg), f"{config} ntk {side} ntvp")


def engine_configs():
    """Configurations the tiled engine computes eagerly (vmap_axes=0, one output, ...)."""
    return [
        (file, config)
        for file, config in config_ids()
        if config.endswith("_vmap0") and not config.startswith(("diagbatch", "heads"))
    ]


def swap(k, cfg):
    """Θ(x2, x1) from Θ(x1, x2) in neural-tangents' layout."""
    from raysweep.ntk.kernel_axes import canonical_axes, swap_kernel

    ndim = 4 if cfg["model"] == "grid10" else 2
    trace = canonical_axes(tuple(cfg["trace_axes"]), ndim, "trace_axes")
    diagonal = canonical_axes(tuple(cfg["diagonal_axes"]), ndim, "diagonal_axes")
    return swap_kernel(k, ndim, trace, diagonal)


@pytest.mark.parametrize("file,config", engine_configs(), ids=lambda v: str(v))
def test_engine_kernels_match_neural_tangents(file, config):
    """Eager calls with vmap_axes=0 go through the engine (numpy results), each method."""
    fx = fixture(file)
    cfg = fx.configs()[config]
    f = apply_fn_of(cfg)
    axes = (tuple(cfg["trace_axes"]), tuple(cfg["diagonal_axes"]))
    for impl in (NtkImplementation.JACOBIAN_CONTRACTION, "ntvp", 3):
        ntk_fn = nt.empirical_ntk_fn(f, *axes, 0, impl)
        for side in cfg["sides"]:
            got = ntk_fn(fx.x1, fx.x2 if side == "cross" else None, fx.params)
            assert isinstance(got, np.ndarray), type(got)  # the engine, not plain JAX
            want = fx.tree(f"{config}__ntk__{side}")
            assert_f32_close(got, want, reduction(fx, cfg), f"{config} {side} {impl}")
            if side == "self":  # exactly symmetric: Θ(x1, x1) equals its mirror image
                np.testing.assert_array_equal(got, swap(got, cfg))


def test_single_output_structured_engine_matches_neural_tangents():
    """Implementation 3 on one logit is the structured engine; layouts are reshapes."""
    fx = nt_models.load_fixture(ROOT / "tests" / "fixtures" / "nt_mlp.npz")
    p = nt_models.count_params(fx["params"])
    got = nt.empirical_ntk_fn(fx["apply_fn"], (), (), 0, 3)(fx["x1"], fx["x2"], fx["params"])
    assert got.shape == (12, 7, 1, 1)
    assert_f32_close(got[..., 0, 0], fx["gram_cross"], p, "structured, trace_axes=()")


@pytest.mark.parametrize("file", sorted(FIXTURES))
def test_linearize_and_taylor_expand_match_neural_tangents(file):
    """linearize and taylor_expand (degrees 0-3) at θ = θ₀ + 0.1 N(0, 1), inside jax.jit,
    with two outputs (mlp10_heads) and keyword arguments (mlp10)."""
    fx = fixture(file)
    degrees = fx.meta["taylor_degrees"]
    for model in fx.meta["models"]:
        f = nt_models.MODELS[model].make_apply_fn({})
        prefix = "" if model == file else f"{model}__"
        f_lin = nt.linearize(f, fx.params)

        @jax.jit
        def run(theta, x, f=f, f_lin=f_lin):
            taylor = [nt.taylor_expand(f, fx.params, d)(theta, x) for d in degrees]
            return f_lin(fx.params, x), f_lin(theta, x), taylor

        f0, lin, taylor = run(fx.shifted, fx.x1)
        assert_f32_close(f0, fx.tree(f"{prefix}f0"), 1, f"{model} linearize at θ₀")
        assert_f32_close(lin, fx.tree(f"{prefix}lin"), fx.num_params, f"{model} linearize")
        for degree, got in zip(degrees, taylor, strict=True):
            want = fx.tree(f"{prefix}taylor{degree}")
            assert_f32_close(got, want, degree * fx.num_params, f"{model} taylor {degree}")
    if file == "mlp10":  # eager, with keyword arguments
        f = nt_models.MODELS["mlp10"].make_apply_fn({})
        kw = {"scale": fx.meta["scale"], "x_shift": fx.data["x_shift1"]}
        got = nt.linearize(f, fx.params)(fx.shifted, fx.x1, **kw)
        assert_f32_close(got, fx.tree("lin_kwargs"), fx.num_params, "linearize kwargs")
        got = nt.taylor_expand(f, fx.params, 2)(fx.shifted, fx.x1, **kw)
        assert_f32_close(got, fx.tree("taylor2_kwargs"), 2 * fx.num_params, "taylor kwargs")
        got = nt.taylor_expand(f, fx.params, 0)(fx.shifted, fx.x1, **kw)
        assert_f32_close(got, f(fx.params, fx.x1, **kw), 1, "taylor degree 0 = f(θ₀)")


# ----------------------------------------------------------------------------- tiles


@pytest.mark.parametrize("method", ["contraction", "ntvp"])
def test_batch_size_invariance(method, tmp_path):
    """Every tile size gives neural-tangents' kernel to float32 rounding (x2 given and None,
    C = 10 outputs with trace_axes=(), diagonal grid axes), also written into a memmap."""
    cases = [("mlp10", "full_vmap0", (1, 3))]
    if method == "contraction":
        cases.append(("grid10", "diaghw_vmap0", (2,)))
    for file, config, sizes in cases:
        fx = fixture(file)
        cfg = fx.configs()[config]
        axes = (tuple(cfg["trace_axes"]), tuple(cfg["diagonal_axes"]))
        for batch_size in sizes:
            tiled = nt.empirical_ntk_fn(apply_fn_of(cfg), *axes, 0, method, batch_size=batch_size)
            for side, x2 in (("cross", fx.x2), ("self", None)):
                got = tiled(fx.x1, x2, fx.params)
                want = fx.tree(f"{config}__ntk__{side}")
                what = f"{config} {method} batch_size={batch_size} {side}"
                assert_f32_close(got, want, reduction(fx, cfg), what)
                if x2 is None:
                    np.testing.assert_array_equal(got, swap(got, cfg))
        want = fx.tree(f"{config}__ntk__cross")
        path = tmp_path / f"{file}.npy"
        out = np.lib.format.open_memmap(path, "w+", np.float32, want.shape)
        assert tiled(fx.x1, fx.x2, fx.params, out=out) is out
        del out
        assert_f32_close(np.load(path), want, reduction(fx, cfg), f"{config} memmap")


def test_engine_budget_counts_outputs():
    """C outputs: features are C·P wide, so a budget that fits one output's contraction
    features sends ten outputs to NTK-vector products, with fewer columns in flight."""
    fx = fixture("mlp10")
    f10 = nt_models.MODELS["mlp10"].make_apply_fn({})

    def f1(p, x):
        return f10(p, x)[:, :1]

    def unstructured(f):  # weights scaled before use: no factored sites, P columns each
        return lambda p, x: f(jax.tree_util.tree_map(lambda a: 1.0 * a, p), x)

    p = fx.num_params
    budget_mb = 40 * p * 4 / 2**20  # fits 2 blocks of 8 examples of P columns, not of 10 P
    options = dict(method="auto", memory_budget_mb=budget_mb)
    one = NTKEngine(unstructured(f1), fx.params, fx.x1[:1], **options)
    ten = NTKEngine(unstructured(f10), fx.params, fx.x1[:1], **options)
    assert one.method == "contraction" and ten.method == "ntvp"
    assert ten._ntvp_chunk < one._ntvp_chunk or ten._ntvp_chunk == 1
    full = NTKEngine(f10, fx.params, fx.x1[:1], method="contraction", trace_axes=())
    assert full.feature_width == 10 * p and full.outputs.tail == (10, 10)


# ----------------------------------------------------------------------------- jit and grad


def tiny_model():
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.normal(size=(6, 5)) / 2.5, jnp.float32),
        "b1": jnp.asarray(0.1 * rng.normal(size=(5,)), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(5, 3)) / 2.2, jnp.float32),
    }

    def f(p, x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"]

    x1 = rng.normal(size=(4, 3, 2)).astype(np.float32)
    x2 = rng.normal(size=(3, 3, 2)).astype(np.float32)
    return f, params, x1, x2


def brute_ntk(f, params, x1, x2):
    """(n1, n2, C, C') from jax.jacobian of the flattened parameters."""
    j1, j2 = flat_jacobian(f, params, x1), flat_jacobian(f, params, x2)
    return jnp.einsum("icp,jdp->ijcd", j1, j2, precision="highest")


def test_jit_and_grad_through_ntk_fn():
    """jax.grad (params and inputs) of a function of the NTK, inside jax.jit, both traced
    methods, against the gradient of a brute-force NTK; jax.vmap over parameter points."""
    f, params, x1, x2 = tiny_model()
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3, 3, 3)), jnp.float32)
    ntk_fns = [nt.empirical_ntk_fn(f, (), (), 0, impl) for impl in (1, 2)]

    def losses(p, x):
        kernels = [fn(x, x2, p) for fn in ntk_fns] + [brute_ntk(f, p, x, x2)]
        return jnp.stack([jnp.sum(weights * k) for k in kernels])

    values = jax.jit(losses)(params, x1)
    grads = jax.jit(jax.jacrev(losses, argnums=(0, 1)))(params, x1)  # leaves (3, ...)
    p_count = 6 * 5 + 5 + 5 * 3
    for i in (0, 1):
        assert_f32_close(values[i], values[2], 4 * 3 * 3 * 3 * p_count, f"value {i}")
        for g in jax.tree_util.tree_leaves(grads):
            assert_f32_close(g[i], g[2], p_count, f"grad {i}", ulps=64)
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), params)
    batched = jax.jit(jax.vmap(lambda q: ntk_fns[0](x1, None, q)))(stacked)
    assert batched.shape == (2, 4, 4, 3, 3)
    assert_f32_close(
        batched[1], ntk_fns[0](x1, None, jax.tree_util.tree_map(lambda a: 2 * a, params)), p_count
    )


def test_implementations_and_names():
    """neural-tangents' codes and names map to the engine's methods; each path agrees."""
    from raysweep.ntk.call_conventions import resolve_implementation as method_of

    codes = [None, 0, 1, 2, 3]
    assert [method_of(c) for c in codes] == ["auto", "auto", "contraction", "ntvp", "structured"]
    for code in NtkImplementation:
        assert method_of(code.name) == method_of(code.name.lower()) == method_of(code)
    assert method_of("ntvp") == "ntvp" and method_of(" Structured ") == "structured"
    f, params, x1, x2 = tiny_model()
    want = jax.jit(brute_ntk, static_argnums=0)(f, params, x1, x2)
    eager = nt.empirical_ntk_fn(f, (), (), 0)  # engine, auto
    assert_f32_close(eager(x1, x2, params), want, 50, "engine auto")
    structured = nt.empirical_ntk_fn(f, (), (), 0, NtkImplementation.STRUCTURED_DERIVATIVES)
    traced = jax.jit(structured)(x1, x2, params)  # plain JAX: Jacobian contraction
    assert_f32_close(traced, want, 50, "traced 3")
    plain = nt.empirical_ntk_fn(f, (), (), None, "NTK_VECTOR_PRODUCTS")(x1, x2, params)
    assert isinstance(plain, jax.Array)  # vmap_axes=None: plain JAX, also when eager
    assert_f32_close(plain, want, 50, "eager plain JAX ntvp")


def test_rng_keyword_is_split_like_neural_tangents():
    """rng=key gives x1 the key and x2 fold_in(key, 1), unless x2 equals x1 (same key)."""
    f, params, x1, x2 = tiny_model()

    def noisy(p, x, rng):
        return f(p, x) * (1.0 + 0.1 * jax.random.normal(rng, (x.shape[0], 3)))

    ntk_fn = nt.empirical_ntk_fn(noisy, trace_axes=())
    key = jax.random.PRNGKey(3)

    @jax.jit
    def run(p):
        return (
            ntk_fn(x1, x2, p, rng=key),
            ntk_fn(x1, x2, p, rng=(key, jax.random.fold_in(key, 1))),
            ntk_fn(x1, None, p, rng=key),
            ntk_fn(x1, jnp.array(x1), p, rng=key),
            ntk_fn(x1, x1 + 1e-3, p, rng=key),
        )

    split, pair, same, copy, moved = run(params)
    np.testing.assert_array_equal(split, pair)
    assert_f32_close(copy, same, 45)  # equal inputs, equal keys
    assert np.max(np.abs(np.asarray(moved) - np.asarray(same))) > 1e-3


def test_kernel_fn_get():
    f, params, x1, x2 = tiny_model()
    kernel_fn = nt.empirical_kernel_fn(f, vmap_axes=0, implementation=1)
    both = kernel_fn(x1, x2, None, params)
    assert type(both).__name__ == "EmpiricalKernel" and both._fields == ("nngp", "ntk")
    ntk = kernel_fn(x1, x2, "NTK", params)
    np.testing.assert_array_equal(ntk, both.ntk)
    (only,) = kernel_fn(x1, x2, ("nngp",), params)
    want = jnp.einsum("ic,jc->ij", f(params, x1), f(params, x2)) / 3
    assert_f32_close(only, want, 3)
    assert ntk.shape == (4, 3)


# ----------------------------------------------------------------------------- bad arguments


def test_bad_arguments_raise_clear_errors():
    f, params, x1, x2 = tiny_model()
    with pytest.raises(ValueError, match=r"implementation=5 is not supported.*2 \(NTK_VECTOR"):
        nt.empirical_ntk_fn(f, implementation=5)
    with pytest.raises(ValueError, match="implementation=True"):
        nt.empirical_ntk_fn(f, implementation=True)
    with pytest.raises(TypeError, match="trace_axes must be an int or a tuple of ints"):
        nt.empirical_ntk_fn(f, trace_axes="last")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        nt.empirical_ntk_fn(f, batch_size=0)
    with pytest.raises(ValueError, match=r"trace_axes=\(2,\) names axis 2, but the output has 2"):
        nt.empirical_ntk_fn(f, trace_axes=(2,))(x1, x2, params)
    with pytest.raises(ValueError, match="names an axis twice"):
        nt.empirical_ntk_fn(f, trace_axes=(1, -1))(x1, x2, params)
    with pytest.raises(ValueError, match=r"axis 1 is in both trace_axes \(1,\) and diagonal"):
        nt.empirical_ntk_fn(f, diagonal_axes=(-1,))(x1, x2, params)
    with pytest.raises(ValueError, match="differ on axis 0, which is traced or diagonal"):
        nt.empirical_ntk_fn(f, trace_axes=(), diagonal_axes=(0,))(x1, x2, params)
    with pytest.raises(TypeError, match=r"kwargs part of vmap_axes must be a dict"):
        nt.empirical_ntk_fn(f, vmap_axes=(0, 0, "mask"))(x1, x2, params)
    with pytest.raises(ValueError, match=r"vmap_axes batches keyword argument\(s\) \['mask'\]"):
        nt.empirical_ntk_fn(f, vmap_axes=(0, 0, {"mask": 0}))(x1, x2, params)
    with pytest.raises(ValueError, match="vmap_axes names axis 3 of x, which has 3 axes"):
        nt.empirical_ntk_fn(f, vmap_axes=3)(x1, x2, params)
    with pytest.raises(TypeError, match=r"parameter \['w1'\] has dtype int32"):
        nt.empirical_ntk_fn(f)(x1, x2, dict(params, w1=jnp.ones((6, 5), jnp.int32)))
    with pytest.raises(ValueError, match=r"f\(params, x1, \*\*kwargs\) failed for x1 of shape"):
        nt.empirical_ntk_fn(f)(x1[..., :1], None, params)
    with pytest.raises(ValueError, match=r"out= has shape \(2, 2\).*needs shape \(4, 3\)"):
        nt.empirical_ntk_fn(f, vmap_axes=0)(x1, x2, params, out=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="out= needs concrete inputs"):
        jax.jit(lambda p: nt.empirical_ntk_fn(f)(x1, x2, p, out=np.zeros((4, 3))))(params)
    kernel_fn = nt.empirical_kernel_fn(f)
    with pytest.raises(ValueError, match=r"get=\('ntk', 'ntk'\): each entry must be one of"):
        kernel_fn(x1, x2, ("ntk", "ntk"), params)
    with pytest.raises(ValueError, match=r"unknown: \['nngq'\]"):
        kernel_fn(x1, x2, "nngq", params)
    with pytest.raises(ValueError, match="degree must be a non-negative integer, got -1"):
        nt.taylor_expand(f, params, -1)
    with pytest.raises(ValueError, match="params has a different structure"):
        nt.linearize(f, params)({"w1": params["w1"]}, x1)
    with pytest.raises(ValueError, match="keeps the example axis"):
        NTKEngine(f, params, x1[:1], trace_axes=(0,))
