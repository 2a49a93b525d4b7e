"""Θ(x1, x2) through an :class:`~raysweep.ntk.gram.NTKEngine`: the whole matrix or tile by tile.

- :func:`ntk_gram`: the public Gram matrix of a one-logit model, or the traced kernel of C
  logits (engines shared across calls).
- :func:`gram_with_engine`: any engine (any output layout), into a new array or ``out=``
  (a ``numpy.memmap`` for Grams larger than memory).
- :func:`block_slices`: the contiguous blocks the tiles are made of.

For ``x2=None`` only the upper triangle of tiles is computed; diagonal tiles are symmetrized
as ``0.5 (T + swap(T))`` and the others mirrored, so the result is exactly symmetric.
"""

from __future__ import annotations

from collections import OrderedDict

import jax
import numpy as np

from raysweep.ntk.gram import NTKEngine, leaf_spec
from raysweep.ntk.multi_output import prepare_out
from raysweep.ntk.ntk_checks import check_inputs, check_logits, check_method, check_params


def block_slices(n: int, block_size: int) -> list[slice]:
    """Contiguous slices of ``range(n)`` of length ``block_size`` (the last may be shorter)."""
    return [slice(i, min(i + block_size, n)) for i in range(0, n, block_size)]


# Engines reused by ntk_gram across calls with the same apply_fn and shapes (compiled
# programs included); the parameters are never kept.
_ENGINE_CACHE: OrderedDict = OrderedDict()
_ENGINE_CACHE_SIZE = 4


def _shared_engine(apply_fn, params, x1, **options) -> NTKEngine:
    leaves, treedef = jax.tree_util.tree_flatten(params)
    key = (
        apply_fn,
        treedef,
        tuple(leaf_spec(leaf) for leaf in leaves),
        tuple(np.shape(x1)[1:]),
        np.dtype(np.asarray(x1[:1]).dtype),
        tuple(sorted(options.items())),
        bool(jax.config.jax_enable_x64),
        jax.default_backend(),
    )
    try:
        engine = _ENGINE_CACHE.get(key)
    except TypeError:  # unhashable apply_fn: no sharing
        return NTKEngine(apply_fn, params, x1[:1], **options)
    if engine is None:
        engine = NTKEngine(apply_fn, params, x1[:1], **options)
        engine.set_params(None)
        _ENGINE_CACHE[key] = engine
        while len(_ENGINE_CACHE) > _ENGINE_CACHE_SIZE:
            _ENGINE_CACHE.popitem(last=False)
    else:
        _ENGINE_CACHE.move_to_end(key)
    return engine


def ntk_gram(
    apply_fn,
    params,
    x1,
    x2=None,
    *,
    method: str = "auto",
    batch_size: int | None = None,
    memory_budget_mb: float = 2048,
    precision: str = "highest",
) -> np.ndarray:
    """Empirical NTK Gram matrix Θ(x1, x2) = ∇θf(x1) · ∇θf(x2)ᵀ of a single-logit model
    (of C logits: their traced kernel, the mean over the logits).

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, 1)``, or ``(n, C)`` for the traced kernel of C
        logits (the mean of each logit's NTK) (inference mode; batch-norm statistics are
        whatever apply_fn closes over, i.e. frozen).
      params: any pytree of floating-point arrays; the Jacobian is taken with respect to all
        of its leaves.
      x1: ``(n1, ...)`` inputs (NHWC for images).
      x2: ``(n2, ...)`` inputs with the same per-example shape, or ``None`` for x1 with itself
        (then only the upper triangle of tiles is computed and mirrored; the result is exactly
        symmetric).
      method: ``"auto"``, ``"contraction"``, ``"structured"`` or ``"ntvp"`` (module docstring).
      batch_size: examples per tile side (one compiled program per tile, as the distributed
        Gram computes them); ``None`` derives it from ``memory_budget_mb`` and, when all
        inputs fit one block, computes the whole matrix in one compiled program.
      memory_budget_mb: bound on the per-example feature blocks held at once; the N x P
        Jacobian is never formed.
      precision: ``"highest"`` (float32 matmuls, the default) or ``"default"``.

    Returns:
      ``numpy.ndarray`` of shape ``(n1, n2)``, the dtype of the parameters (float32 by
      default). Row i, column j is Θ(x1[i], x2[j]).

    Compiled programs are reused by later calls with the same ``apply_fn`` (the same Python
    object), parameter shapes, input shapes and options, whatever the parameter values.
    """
    check_method(method)
    check_inputs(x1, x2)
    check_params(params)
    check_logits(apply_fn, params, x1)
    options = dict(method=method, memory_budget_mb=memory_budget_mb, precision=precision)
    return engine_gram(apply_fn, params, x1, x2, batch_size=batch_size, **options)


def engine_gram(
    apply_fn, params, x1, x2=None, *, batch_size=None, share=True, out=None, **options
) -> np.ndarray:
    """Θ(x1, x2) through an engine sized for these inputs (checks are the caller's).

    ``options`` go to :class:`NTKEngine`; ``batch_size`` is its ``block_size`` (``None``:
    from the budget, the whole matrix in one program when it fits). ``share`` reuses an
    engine of the same ``apply_fn``, shapes and options from earlier calls.
    """
    x1 = np.asarray(x1)
    symmetric = x2 is None
    x2 = x1 if symmetric else np.asarray(x2)
    options["block_size"] = batch_size
    if share:
        engine = _shared_engine(apply_fn, params, x1, **options)
    else:
        engine = NTKEngine(apply_fn, params, x1[:1], **options)
    n = max(len(x1), len(x2))
    if batch_size is None:
        engine.fit_block_size(n)
        if not engine.can_do_whole(len(x1), len(x2)):
            engine.fit_block_size(n, min_blocks=4 if symmetric else 1)
    return gram_with_engine(
        engine,
        x1,
        None if symmetric else x2,
        params=params,
        whole=batch_size is None,
        out=out,
    )


def gram_with_engine(
    engine: NTKEngine, x1, x2=None, *, params=None, whole=True, out=None
) -> np.ndarray:
    """Θ(x1, x2) with an existing engine (compiled functions are reused).

    Args:
      engine: the engine; ``params`` (default: ``engine.params``) may be any parameter point
        of the engine's shapes.
      whole: compute the whole matrix in one program when every example fits one block
        (:meth:`NTKEngine.whole`); ``False`` always goes tile by tile.
      out: an array or ``numpy.memmap`` of shape ``(n1, n2, *engine.outputs.tail)`` and the
        engine's dtype to write into (tile by tile); ``None`` allocates one.

    Returns:
      ``out``: ``(n1, n2)`` for one output and the default layout.
    """
    symmetric = x2 is None
    n1, n2 = len(x1), len(x1) if symmetric else len(x2)
    dtype = np.dtype(engine.dtype)
    if whole and engine.can_do_whole(n1, None if symmetric else n2):
        result = engine.whole(x1, x2, params)
        if out is None:
            return np.array(result)
        out = prepare_out(out, tuple(result.shape), dtype)
        out[...] = np.asarray(result)
        return out
    out = prepare_out(out, (n1, n2, *engine.outputs.tail), dtype)
    leaves = engine.leaves(params)
    x2 = x1 if symmetric else x2
    rows = block_slices(n1, engine.block_size)
    cols = block_slices(n2, engine.block_size)
    # Keep every column block's features when they all fit the budget (each block's features
    # are then computed once); otherwise stream them, once per row panel.
    cache_cols = engine.fits_in_budget(len(cols) * engine.block_size)
    col_cache: dict[int, tuple] = {}
    for bi, rs in enumerate(rows):
        f_rows = col_cache.get(bi) if symmetric else None
        if f_rows is None:
            f_rows = engine._block_features(x1[rs], leaves)
        for bj, cs in enumerate(cols):
            if symmetric and bj < bi:
                continue
            if symmetric and bj == bi:
                f_cols = f_rows
            elif cache_cols and bj in col_cache:
                f_cols = col_cache[bj]
            else:
                f_cols = engine._block_features(x2[cs], leaves)
                if cache_cols:
                    col_cache[bj] = f_cols
            tile = np.asarray(engine.tile(f_rows, f_cols))
            if symmetric and bj == bi:
                tile = 0.5 * (tile + engine.outputs.swap(tile))
            out[rs, cs] = tile
            if symmetric and bj != bi:
                out[cs, rs] = engine.outputs.swap(tile)
    return out
