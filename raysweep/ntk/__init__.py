"""The empirical neural tangent kernel on current JAX.

- :func:`ntk_gram`: Θ(x1, x2) = ∇θf(x1)·∇θf(x2)ᵀ, tiled, three methods.
- :class:`NTKEngine`: the tile-level entry point (features once per panel).
- :func:`linearize`: f(θ₀, x) + J(θ₀, x)(θ − θ₀).
- :func:`alignment`: ‖(1/n) Σᵢ y(xᵢ) ∇θf(xᵢ)‖² without the Gram matrix.
- :func:`energy_concentration`: ‖Φ_k y‖² / ‖y‖².
"""

from raysweep.ntk.alignment import alignment, energy_concentration
from raysweep.ntk.gram import NTKEngine, block_slices, gram_with_engine, ntk_gram
from raysweep.ntk.linearize import linearize

__all__ = [
    "NTKEngine",
    "alignment",
    "block_slices",
    "energy_concentration",
    "gram_with_engine",
    "linearize",
    "ntk_gram",
]
