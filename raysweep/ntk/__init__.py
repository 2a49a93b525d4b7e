"""The empirical neural tangent kernel on current JAX.

- :func:`ntk_gram`: Θ(x1, x2) = ∇θf(x1)·∇θf(x2)ᵀ, tiled, three methods.
- :class:`NTKEngine`: the tile-level entry point (features once per panel).
- :func:`linearize`: f(θ₀, x) + J(θ₀, x)(θ − θ₀); :func:`taylor_expand`: any order.
- :func:`alignment`: ‖(1/n) Σᵢ y(xᵢ) ∇θf(xᵢ)‖² without the Gram matrix.
- :func:`energy_concentration`: ‖Φ_k y‖² / ‖y‖².
- :func:`empirical_ntk_fn`, :func:`empirical_nngp_fn`, :func:`empirical_kernel_fn`,
  :class:`NtkImplementation`: neural-tangents 0.6.5's API and output layout (any number of
  outputs, usable inside ``jax.jit`` and ``jax.grad``), so ``import raysweep.ntk as nt``
  replaces ``import neural_tangents as nt`` for empirical kernels.

Conventions: kernels are float32 (the parameters' dtype); row i, column j pairs x1[i] with
x2[j]; traced output axes are averaged (divided by their size); ``x2=None`` means x1.
"""

from raysweep.ntk.call_conventions import NtkImplementation
from raysweep.ntk.empirical import empirical_kernel_fn, empirical_nngp_fn, empirical_ntk_fn
from raysweep.ntk.gram import NTKEngine
from raysweep.ntk.kernel_alignment import alignment, energy_concentration
from raysweep.ntk.linearize import linearize, taylor_expand
from raysweep.ntk.tiled import block_slices, gram_with_engine, ntk_gram

__all__ = [
    "NTKEngine",
    "NtkImplementation",
    "alignment",
    "block_slices",
    "empirical_kernel_fn",
    "empirical_nngp_fn",
    "empirical_ntk_fn",
    "energy_concentration",
    "gram_with_engine",
    "linearize",
    "ntk_gram",
    "taylor_expand",
]
