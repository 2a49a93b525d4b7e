"""DistributedGram: the handle to a Gram matrix held by Ray workers and a tile store.

The matrix Θ ``(N, N)`` is never assembled unless asked for (:meth:`to_numpy`). Its upper
triangle of tiles lives in the tile store on disk, and (with ``keep_resident=True``) in the
host memory of the Gram workers, each holding the row panels it computed. Products with Θ run
where the tiles are:

``matmat(V)`` for ``V`` ``(N, b)``
    ``ray.put(V)`` once; every worker returns the partial product of its panels (tile
    ``(i, j)`` contributes ``T_ij V_j`` to rows ``i`` and ``T_ijᵀ V_i`` to rows ``j`` for
    ``j > i``); the driver sums the partials. Precision: with a float32 ``V`` each tile
    product runs in float32 (fast SGEMM, no tile upcast; relative error ~1e-7 per product)
    and is accumulated in float64; with a float64 ``V`` (or any other real dtype) tiles are
    upcast and everything is float64 (use it for residuals). The result is float64
    ``(N, b)`` either way. Cost per call: one pass over the stored triangle (N²/2 entries),
    split over the workers.

If a worker dies during ``matmat``, its panels are reloaded from the tile store into a
replacement actor (or, once the restart budget is spent, into the least-loaded survivor) and
only its partial product is redone. Reloaded tiles are verified against their checksums, and
a damaged one is recomputed by that worker and named through ``log``.

Tiles read from the store are verified once per read (checksum, shape, dtype), never on each
product of resident tiles. Where a damaged tile cannot be recomputed (:meth:`tile`,
:meth:`to_numpy`, and ``matmat`` with ``keep_resident=False``, which streams tiles from the
store) the read raises :class:`~raysweep.distributed.tile_store.DamagedTileError`, a ``ValueError``
naming the file and the reason and saying to run ``compute_gram`` again (which recomputes it).

The handle owns the actors: :meth:`close` (or leaving a ``with`` block) kills them. After
``close`` the store-backed methods (:meth:`to_numpy`, :meth:`tile`) still work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from raysweep.atomic import available_memory_bytes
from raysweep.distributed.pool import WorkerPool
from raysweep.distributed.schedule import log_damaged
from raysweep.distributed.tile_store import DamagedTileError, TileStore

_MEMORY_MARGIN = 0.9


class DistributedGram:
    """The empirical NTK Gram matrix of a dataset, distributed over Gram workers.

    Returned by :func:`raysweep.distributed.compute_gram`; not constructed directly.

    Attributes:
      shape: ``(N, N)``. n: N. dtype: the tile dtype (float32 by default).
      tile_size, num_blocks: the block decomposition. method: the resolved NTK method.
      store_dir: the tile store. tiles_total: ``num_blocks (num_blocks + 1) / 2``.
      tiles_computed: tiles that were missing and were computed by the call that made this
        handle.
      tiles_loaded: tiles found in the store at its start, verified and reused.
      tiles_recomputed: tiles found in the store at its start but damaged (checksum mismatch,
        truncated, wrong shape, no checksum file), and computed again.
      All three are counted from the workers' reports, once per tile:
      ``tiles_computed + tiles_loaded + tiles_recomputed == tiles_total``.
      worker_restarts: actors replaced after failures so far.
    """

    def __init__(
        self,
        pool: WorkerPool,
        store: TileStore,
        owners: dict[int, int],
        *,
        tiles_computed: int,
        tiles_loaded: int,
        tiles_recomputed: int = 0,
        keep_resident: bool,
        log: Callable[[str], None] = print,
    ):
        self._pool = pool
        self._store = store
        self._owners = dict(owners)
        self._keep_resident = keep_resident
        self._log = log
        self.tiles_computed = int(tiles_computed)
        self.tiles_loaded = int(tiles_loaded)
        self.tiles_recomputed = int(tiles_recomputed)

    # ----------------------------------------------------------------- description

    @property
    def n(self) -> int:
        return self._store.n

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def dtype(self) -> np.dtype:
        return self._store.dtype

    @property
    def tile_size(self) -> int:
        return self._store.tile_size

    @property
    def num_blocks(self) -> int:
        return self._store.num_blocks

    @property
    def method(self) -> str:
        return self._store.manifest["method"]

    @property
    def store_dir(self) -> Path:
        return self._store.root

    @property
    def manifest(self) -> dict:
        return dict(self._store.manifest)

    @property
    def tiles_total(self) -> int:
        return self._store.tiles_total

    @property
    def tiles_done(self) -> int:
        """Tiles present in the store (all of them once :func:`compute_gram` returned)."""
        return len(self._store.done_tiles())

    @property
    def num_workers(self) -> int:
        return len(self._pool.live_slots())

    @property
    def worker_restarts(self) -> int:
        return self._pool.restarts

    def worker_info(self) -> list[dict]:
        """Per live worker: pid, host, devices, method, resident tiles, compute seconds."""
        return ray.get([self._pool.actors[s].info.remote() for s in self._pool.live_slots()])

    def __repr__(self) -> str:
        return (
            f"DistributedGram(shape={self.shape}, dtype={self.dtype.name}, "
            f"tile_size={self.tile_size}, method={self.method!r}, workers={self.num_workers}, "
            f"store_dir='{self.store_dir}')"
        )

    # ----------------------------------------------------------------- products

    def matmat(self, v) -> np.ndarray:
        """Θ V for ``V`` ``(N, b)`` -> float64 ``(N, b)``; float32 V = float32 products.

        See the module docstring for the precision conventions.

        Raises:
          DamagedTileError: (a ``ValueError``) with ``keep_resident=False``, a tile streamed
            from the store is damaged; run ``compute_gram`` again to recompute it.
        """
        v = np.asarray(v)
        if v.ndim != 2 or v.shape[0] != self.n:
            raise ValueError(f"matmat expects V of shape ({self.n}, b); got {v.shape}.")
        if not np.issubdtype(v.dtype, np.floating) and not np.issubdtype(v.dtype, np.integer):
            raise TypeError(f"matmat expects a real-valued V; got dtype {v.dtype}.")
        if self._pool.closed:
            raise RuntimeError(
                "this DistributedGram is closed (its workers were killed); to_numpy() and "
                "tile() still read the store, or call compute_gram again to reload it."
            )
        work = np.float32 if v.dtype == np.float32 else np.float64
        v_ref = ray.put(np.ascontiguousarray(v, dtype=work))
        tasks = [(s, panels, self._submit(s, v_ref, panels)) for s, panels in self._by_slot()]
        out = np.zeros(v.shape, dtype=np.float64)
        while tasks:
            slot, panels, ref = tasks.pop(0)
            try:
                out += ray.get(ref)
            except RayTaskError as err:
                if isinstance(err.cause, DamagedTileError):
                    raise err.cause from None  # its path and reason, not a worker traceback
                raise
            except RayActorError as err:
                self._pool.raise_if_init_failed(err)
                target = self._recover(slot, panels)
                tasks.append((target, panels, self._submit(target, v_ref, panels)))
        return out

    def matvec(self, v) -> np.ndarray:
        """Θ v for ``v`` ``(N,)`` -> float64 ``(N,)``."""
        v = np.asarray(v)
        if v.shape != (self.n,):
            raise ValueError(f"matvec expects v of shape ({self.n},); got {v.shape}.")
        return self.matmat(v[:, None])[:, 0]

    def _by_slot(self) -> list[tuple[int, list[int]]]:
        slots: dict[int, list[int]] = {}
        for panel, slot in sorted(self._owners.items()):
            slots.setdefault(slot, []).append(panel)
        return sorted(slots.items())

    def _submit(self, slot: int, v_ref, panels: list[int]):
        return self._pool.actors[slot].matmat.remote(v_ref, panels)

    def _recover(self, slot: int, panels: list[int]) -> int:
        """Move ``panels`` of the dead ``slot`` to a fresh or surviving actor; returns it."""
        while True:
            if self._pool.replace(slot):
                target = slot
            else:
                live = self._pool.live_slots()
                if not live:
                    raise RuntimeError(
                        "every Gram worker died during matmat and the restart budget "
                        f"({self._pool.max_restarts}) is spent; the tiles are safe in "
                        f"{self.store_dir}: call compute_gram again to reload them."
                    )
                load = {s: 0 for s in live}
                for p, s in self._owners.items():
                    if s in load:
                        load[s] += self.num_blocks - p
                target = min(live, key=lambda s: (load[s], s))
            try:
                damaged = ray.get(self._pool.actors[target].load_panels.remote(panels))
            except RayActorError as err:
                self._pool.raise_if_init_failed(err)
                slot = target
                continue
            for i, j, reason in damaged:
                log_damaged(self._log, self._store.tile_path(i, j).absolute(), reason, i, j)
            for p in panels:
                self._owners[p] = target
            return target

    # ----------------------------------------------------------------- store access

    def tile(self, i: int, j: int) -> np.ndarray:
        """Θ[block i, block j] from the store (any i, j; transposed when i > j).

        Raises:
          DamagedTileError: (a ``ValueError``) the stored tile is damaged; the message names
            the file and says to run ``compute_gram`` again, which recomputes it.
        """
        nb = self.num_blocks
        if not (0 <= i < nb and 0 <= j < nb):
            raise ValueError(f"block indices must be in [0, {nb}); got ({i}, {j}).")
        return self._store.load(i, j) if i <= j else self._store.load(j, i).T

    def to_numpy(self, out: np.ndarray | None = None) -> np.ndarray:
        """Assemble the full symmetric ``(N, N)`` matrix from the tile store.

        Args:
          out: optional ``(N, N)`` array of the Gram dtype to fill, e.g. a
            ``numpy.lib.format.open_memmap`` file when the matrix exceeds RAM.

        Raises:
          MemoryError: without ``out``, when ``N*N*itemsize`` exceeds 90% of the available
            memory (nothing is allocated then).
          DamagedTileError: (a ``ValueError``) a stored tile is damaged; the message names the
            file and says to run ``compute_gram`` again, which recomputes it.
        """
        n, dtype = self.n, self.dtype
        if out is None:
            need, avail = n * n * dtype.itemsize, available_memory_bytes()
            if need > _MEMORY_MARGIN * avail:
                raise MemoryError(
                    f"to_numpy needs {need / 2**30:.2f} GiB for the ({n}, {n}) {dtype.name} "
                    f"matrix but only {avail / 2**30:.2f} GiB is available. Use matmat/matvec "
                    "(tiles stay distributed), tile(i, j), or pass out= a numpy memmap."
                )
            out = np.empty((n, n), dtype=dtype)
        elif out.shape != (n, n) or out.dtype != dtype:
            raise ValueError(f"out must be ({n}, {n}) {dtype.name}; got {out.shape} {out.dtype}.")
        slices = self._store.slices
        for i in range(self.num_blocks):
            for _, j in self._store.panel_tiles(i):
                t = self._store.load(i, j)
                out[slices[i], slices[j]] = t
                if j != i:
                    out[slices[j], slices[i]] = t.T
        return out

    def release_resident(self) -> int:
        """Make the workers drop their resident tiles; returns how many were dropped.

        Later :meth:`matmat` calls stream tiles from the store (verified at each read), as
        with ``keep_resident=False``. :func:`raysweep.eigen.top_eigenpairs` calls this before
        it assembles the dense matrix for LAPACK (:meth:`to_numpy`), so that the driver's copy
        replaces the workers' instead of doubling the memory.
        """
        if self._pool.closed:
            return 0
        self._keep_resident = False
        slots = self._pool.live_slots()
        return int(sum(ray.get([self._pool.actors[s].release_resident.remote() for s in slots])))

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Kill the Gram workers (idempotent); store-backed methods keep working."""
        self._pool.close()

    def __enter__(self) -> DistributedGram:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
