"""compute_gram: the empirical NTK Gram matrix of a whole dataset on Ray workers.

Flow of one call (every check comes before any Ray work):

1. Validate the arguments, the parameters and one forward pass (``jax.eval_shape``).
2. Resolve the NTK method on the driver (an :class:`~raysweep.ntk.NTKEngine` is built but never
   run, so nothing is compiled here), fingerprint the dataset and the parameters, and open the
   tile store: create it (manifest first) or reopen it if its manifest matches; a mismatching
   store is refused with a ``ValueError`` naming the differing fields.
3. :func:`~raysweep.distributed.cluster.ensure_ray`, then ``ray.put`` the inputs and
   ``(apply_fn, params)`` once each and start the Gram actors
   (:class:`~raysweep.distributed.pool.WorkerPool`): one per GPU, else one per CPU.
4. :func:`~raysweep.distributed.schedule.run_panels` hands row panels to idle workers, largest
   remaining first; tiles already in the store are read, verified against their checksums
   and reused, not recomputed; damaged ones (checksum mismatch, truncated, wrong shape, no
   checksum file) are named in one line each and recomputed. Dead workers are replaced and
   their panels redone/reloaded. The workers' per-tile reports are counted into
   ``tiles_computed`` / ``tiles_loaded`` / ``tiles_recomputed``.
5. Return a :class:`~raysweep.distributed.handle.DistributedGram` owning the actors.

Determinism: each worker's engine uses ``block_size = tile_size``, exactly like
``ntk_gram(..., batch_size=tile_size)``, and diagonal tiles are symmetrized the same way, so
the assembled matrix equals the single-process one bit for bit on the same hardware, whatever
the number of workers, failures or resumptions.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable

import jax
import numpy as np
import ray
from tqdm.auto import tqdm

from raysweep.argcheck import check_int
from raysweep.distributed.cluster import ensure_ray, worker_layout
from raysweep.distributed.fingerprint import dataset_fingerprint, params_fingerprint
from raysweep.distributed.handle import DistributedGram
from raysweep.distributed.pool import WorkerPool
from raysweep.distributed.schedule import PanelEvent, run_panels
from raysweep.distributed.tile_store import TileStore
from raysweep.ntk import NTKEngine
from raysweep.ntk.ntk_checks import check_inputs, check_logits, check_method, check_params


def _check_arguments(x, store_dir, tile_size, num_workers, memory_budget_mb, model_id, restarts):
    if not isinstance(store_dir, str | os.PathLike):
        raise TypeError(
            f"store_dir must be a path (str or os.PathLike); got {type(store_dir).__name__}."
        )
    check_int(tile_size, "tile_size", minimum=1, hint=" (examples per tile side, e.g. 1024)")
    if num_workers is not None:
        check_int(num_workers, "num_workers", minimum=1, hint=" or None (one per GPU/CPU)")
    check_int(restarts, "max_worker_restarts", minimum=0)
    if not isinstance(memory_budget_mb, numbers.Real) or not memory_budget_mb > 0:
        raise ValueError(f"memory_budget_mb must be a positive number; got {memory_budget_mb!r}.")
    if not isinstance(model_id, str):
        raise TypeError(f"model_id must be a string; got {type(model_id).__name__}.")
    if not isinstance(x, np.ndarray | jax.Array):
        raise TypeError(f"x must be a numpy or JAX array (n, ...); got {type(x).__name__}.")
    check_inputs(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be floating point (e.g. float32 NHWC); got dtype {x.dtype}.")


def compute_gram(
    apply_fn,
    params,
    x,
    *,
    store_dir,
    tile_size: int = 1024,
    num_workers: int | None = None,
    method: str = "auto",
    memory_budget_mb: float = 2048,
    precision: str = "highest",
    model_id: str = "",
    progress: bool = True,
    max_worker_restarts: int = 3,
    keep_resident: bool = True,
    on_panel_done: Callable[[PanelEvent], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> DistributedGram:
    """Empirical NTK Gram matrix Θ(x, x) ``(N, N)`` computed by Ray actors, tile by tile.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, 1)``, picklable by cloudpickle (closures over
        Flax modules and their variables are). A model with C logits, ``(n, C)``, gives
        the traced kernel: the mean over the logits of each logit's NTK, what
        ``empirical_ntk_fn(apply_fn)`` (``trace_axes=(-1,)``) returns; the manifest records
        C.
      params: parameter pytree θ (floating leaves).
      x: inputs ``(N, ...)`` (NHWC float32 for images), numpy or JAX; sent to the object
        store once.
      store_dir: tile store directory (created if missing). Reusing it with the same inputs
        resumes: stored tiles are verified and loaded, only missing or damaged ones computed.
        A store of other inputs is refused (``ValueError``); nothing is ever deleted.
      tile_size: examples per tile side (also the engine's block size). The last block may
        be shorter. Memory per tile: ``tile_size² · 4`` bytes.
      num_workers: Gram actors; ``None`` = one per GPU, else one per CPU (capped at the
        number of row panels).
      method, memory_budget_mb, precision: as in :func:`raysweep.ntk.ntk_gram`; ``"auto"``
        is resolved once, on the driver, and recorded in the manifest.
      model_id: free text identifying the model (e.g. ``"mlp relu 100x100"``), recorded and
        checked in the manifest alongside the parameter and dataset fingerprints.
      progress: show a tqdm bar (tiles done / total, rate, ETA) on stderr.
      max_worker_restarts: actor replacements allowed after worker deaths; beyond it the
        survivors take over.
      keep_resident: workers keep their panels in host memory for ``matmat``
        (``~N²/2 · 4`` bytes in total); ``False`` streams tiles from disk instead.
      on_panel_done: optional driver-side callback ``f(PanelEvent)`` after each row panel.
      log: receives one line per damaged tile that was recomputed (its path and what was
        wrong), here and in later recoveries of the handle; default: printed above the
        progress bar (``tqdm.write``).

    Returns:
      :class:`~raysweep.distributed.handle.DistributedGram` (owns the actors: use it as a
      context manager or call ``close()``). ``tiles_computed`` / ``tiles_loaded`` /
      ``tiles_recomputed`` tell how many tiles this call computed (missing), reused (verified)
      and recomputed (damaged), counted from the workers' own reports, once per tile.

    Raises:
      ValueError / TypeError: bad arguments, a model whose output is not ``(n, C)``, a store
        of other inputs — all before any worker starts.
      RuntimeError: every worker died and the restart budget is spent (tiles written so far
        stay in the store; call again to resume), or a worker's constructor raised.
    """
    _check_arguments(
        x, store_dir, tile_size, num_workers, memory_budget_mb, model_id, max_worker_restarts
    )
    check_method(method)
    check_params(params)
    outputs = check_logits(apply_fn, params, x)
    x = np.ascontiguousarray(x)

    engine = NTKEngine(
        apply_fn,
        params,
        x[:1],
        method=method,
        block_size=tile_size,
        memory_budget_mb=memory_budget_mb,
        precision=precision,
    )
    manifest = TileStore.make_manifest(
        n=x.shape[0],
        tile_size=tile_size,
        dtype=engine.dtype,
        method=engine.method,
        precision=precision,
        example_shape=x.shape[1:],
        dataset_fingerprint=dataset_fingerprint(x),
        params_fingerprint=params_fingerprint(params),
        model_id=model_id,
        outputs=outputs,
    )
    store = TileStore.open_or_create(store_dir, manifest)
    done = store.done_tiles()
    log = tqdm.write if log is None else log

    ensure_ray()
    layout = worker_layout(num_workers, store.num_blocks)
    worker_kwargs = {
        "method": engine.method,
        "memory_budget_mb": float(memory_budget_mb),
        "precision": precision,
        "keep_resident": bool(keep_resident),
    }
    del engine
    pool = WorkerPool(
        layout,
        ray.put((apply_fn, params)),
        ray.put(x),
        str(store.root.resolve()),
        worker_kwargs,
        max_worker_restarts,
    )
    try:
        pool.wait_started()
        owners, counts = run_panels(
            pool, store, done, progress=progress, on_panel_done=on_panel_done, log=log
        )
    except BaseException:
        pool.close()
        raise
    return DistributedGram(
        pool,
        store,
        owners,
        tiles_computed=counts.computed,
        tiles_loaded=counts.loaded,
        tiles_recomputed=counts.recomputed,
        keep_resident=keep_resident,
        log=log,
    )
