"""The Gram worker: a Ray actor that computes row panels of tiles and multiplies by them.

One :class:`GramWorker` runs per GPU (or CPU slot). It builds its
:class:`raysweep.ntk.NTKEngine` once, with ``block_size = tile_size`` (so every tile is the
same compiled program, and bit-identical to :func:`raysweep.ntk.ntk_gram` with
``batch_size=tile_size``), and then serves three kinds of calls from the driver:

``compute_panel(i)``
    Row panel ``i`` = tiles ``(i, j)`` for ``j = i .. num_blocks-1``. Tiles already in the
    tile store are read once and verified against their checksum
    (:meth:`~raysweep.distributed.tile_store.TileStore.load`) and kept (when ``keep_resident``);
    missing and damaged ones are computed through ``engine.panel`` (row features once for the
    whole panel), symmetrized on the diagonal (``0.5 (T + Tᵀ)``, as ``ntk_gram`` does),
    written to the store atomically with their checksum and kept in host memory. It is a
    generator: one ``(i, j, status, reason)`` event per tile, ``status`` being ``"computed"``
    (was missing), ``"stored"`` (read and verified) or ``"recomputed"`` (was damaged;
    ``reason`` says how, else it is ``""``), so the driver can show per-tile progress and
    name damaged tiles.
``load_panels(panels)``
    Make panels resident from the store (after another actor holding them died), verified the
    same way; damaged tiles are recomputed and reported.
``matmat(v, panels)``
    The partial product of the given panels with ``v`` ``(N, b)``, using symmetry: tile
    ``(i, j)`` adds ``T_ij v_j`` to rows of block ``i`` and, for ``j > i``, ``T_ijᵀ v_i`` to
    rows of block ``j``. float32 ``v``: products in float32, accumulated in float64; float64
    ``v``: tiles upcast, all float64. Returns float64 ``(N, b)``. Resident tiles are used as
    they are (verified when they were loaded); non-resident panels are streamed from the store
    and verified at each read, a damaged one raising
    :class:`~raysweep.distributed.tile_store.DamagedTileError`.

Device pinning: a GPU worker asks Ray for one GPU, so Ray sets ``CUDA_VISIBLE_DEVICES`` to that
device before the constructor runs; nothing in this module touches a JAX device at import, so
the engine's JAX client sees that one device only, and the constructor refuses to run if JAX
sees more (:func:`_check_device_pinning`). Its memory settings come with the actor's
``runtime_env`` (:func:`raysweep.distributed.cluster.worker_layout`); :meth:`GramWorker.info`
reports the node, the GPU ids and those variables.

The inputs ``x`` arrive once per actor as an object-store reference resolved by Ray (read-only,
zero-copy on the same node); ``apply_fn`` and ``params`` arrive once per actor too. Workers
never talk to each other: the tile store and the driver are the only shared state.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import ray

from raysweep.distributed.tile_store import DamagedTileError, TileStore

_REPORTED_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_CLIENT_MEM_FRACTION",
    "JAX_PLATFORMS",
    "OMP_NUM_THREADS",
)


def _check_device_pinning() -> None:
    """Fail if JAX sees other GPUs than the ones Ray assigned to this process.

    Ray sets ``CUDA_VISIBLE_DEVICES`` for an actor that requests GPUs before it runs the
    actor's constructor; JAX honours it as long as it creates its GPU client afterwards. If
    something initialized JAX's devices earlier in this process, all actors of a node would
    share GPU 0: refuse that instead of computing on the wrong device.
    """
    import jax

    assigned = ray.get_gpu_ids()
    if not assigned or jax.default_backend() != "gpu":
        return  # no GPU asked for, or a CPU-only JAX (e.g. logical GPUs in tests)
    visible = jax.local_device_count()
    if visible != len(assigned):
        raise RuntimeError(
            f"this Gram worker was given GPU(s) {assigned} by Ray "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}) but JAX sees "
            f"{visible} device(s); JAX initialized its devices before Ray pinned them. Do not "
            "import code that touches a JAX device at module level in worker processes."
        )


@ray.remote
class GramWorker:
    """Ray actor holding one NTK engine and the resident row panels assigned to it.

    Args:
      model: ``(apply_fn, params)`` (shipped once; Ray resolves the object reference).
      x: inputs ``(N, ...)`` as a numpy array (from ``ray.put``; read-only).
      store_dir: the tile store directory (must exist: the driver writes the manifest first).
      method: resolved NTK method (``"structured"``, ``"contraction"`` or ``"ntvp"``).
      memory_budget_mb, precision: passed to :class:`~raysweep.ntk.NTKEngine`.
      keep_resident: keep computed/loaded panels in host memory for :meth:`matmat`.
    """

    def __init__(
        self,
        model,
        x,
        store_dir: str,
        *,
        method: str,
        memory_budget_mb: float,
        precision: str,
        keep_resident: bool,
    ):
        from raysweep.ntk import NTKEngine

        _check_device_pinning()
        apply_fn, params = model
        self.store = TileStore.open(store_dir)
        self.x = x
        self.keep_resident = keep_resident
        self.engine = NTKEngine(
            apply_fn,
            params,
            x[:1],
            method=method,
            block_size=self.store.tile_size,
            memory_budget_mb=memory_budget_mb,
            precision=precision,
        )
        if np.dtype(self.engine.dtype) != self.store.dtype or self.engine.method != method:
            raise ValueError(
                f"worker engine resolved to method={self.engine.method!r} "
                f"dtype={np.dtype(self.engine.dtype).name}, but the store expects "
                f"method={method!r} dtype={self.store.dtype.name}; enable jax_enable_x64 "
                "consistently on the driver and the workers."
            )
        self.resident: dict[int, dict[int, np.ndarray]] = {}
        self.compute_seconds = 0.0

    def info(self) -> dict:
        """pid, host, Ray node id, the GPUs Ray gave this actor and ``CUDA_VISIBLE_DEVICES``,
        JAX devices and memory settings, method, resident tiles, and ``compute_seconds`` (time
        spent computing and writing this actor's tiles, i.e. excluding start-up and idle
        waits)."""
        import jax

        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "env": {k: os.environ.get(k) for k in _REPORTED_ENV},
            "devices": [str(d) for d in jax.devices()],
            "method": self.engine.method,
            "resident_tiles": sum(len(p) for p in self.resident.values()),
            "compute_seconds": self.compute_seconds,
        }

    def compute_panel(self, i: int):
        """Generator of ``(i, j, status, reason)`` for every tile of row panel ``i``.

        ``status``: ``"stored"`` (in the store and intact, or already resident),
        ``"computed"`` (missing) or ``"recomputed"`` (damaged: ``reason`` names the problem;
        it is ``""`` otherwise). Every stored tile is read and verified here, once, whether or
        not it is then kept resident.
        """
        store, slices = self.store, self.store.slices
        keep = self.resident.setdefault(i, {}) if self.keep_resident else None
        todo: list[tuple[int, str]] = []  # (j, reason it is recomputed; "" if missing)
        for _, j in store.panel_tiles(i):
            if keep is not None and j in keep:
                yield i, j, "stored", ""
                continue
            if not store.has(i, j):
                todo.append((j, ""))
                continue
            try:
                tile = store.load(i, j)
            except DamagedTileError as err:
                todo.append((j, err.reason))
                continue
            if keep is not None:
                keep[j] = tile
            yield i, j, "stored", ""
        if not todo:
            return
        start = time.perf_counter()
        tiles = self.engine.panel(self.x[slices[i]], [self.x[slices[j]] for j, _ in todo])
        for (j, reason), tile in zip(todo, tiles, strict=True):
            tile = np.asarray(tile)
            if j == i:
                tile = 0.5 * (tile + tile.T)
            store.save(i, j, tile)
            if keep is not None:
                keep[j] = tile
            self.compute_seconds += time.perf_counter() - start
            yield i, j, ("recomputed" if reason else "computed"), reason
            start = time.perf_counter()

    def load_panels(self, panels: list[int]) -> list[tuple[int, int, str]]:
        """Make ``panels`` resident from the store (no-op without keep_resident).

        Tiles are verified as in :meth:`compute_panel`; missing or damaged ones are computed
        again. Returns ``(i, j, reason)`` for each damaged tile that was recomputed.
        """
        damaged: list[tuple[int, int, str]] = []
        if not self.keep_resident:
            return damaged
        for i in panels:
            for _, j, status, reason in self.compute_panel(i):
                if status == "recomputed":
                    damaged.append((i, j, reason))
        return damaged

    def release_resident(self) -> int:
        """Drop the resident tiles (later products stream them from the store); returns how
        many were dropped. Called before the driver assembles the dense matrix, so that the
        Gram is never held twice."""
        dropped = sum(len(p) for p in self.resident.values())
        self.resident.clear()
        self.keep_resident = False
        return dropped

    def _tile(self, i: int, j: int) -> np.ndarray:
        panel = self.resident.get(i)
        if panel is not None and j in panel:
            return panel[j]
        return self.store.load(i, j)

    def matmat(self, v: np.ndarray, panels: list[int]) -> np.ndarray:
        """Σ over ``panels`` of the symmetric tile products with ``v`` ``(N, b)``.

        float32 ``v`` with float32 tiles: each tile product in float32 (no upcast), added
        into a float64 result. Any other ``v``: tiles upcast, products in float64. Returns
        float64 ``(N, b)``.
        """
        slices = self.store.slices
        v = np.asarray(v)
        single = v.dtype == np.float32 and self.store.dtype == np.float32
        compute = np.float32 if single else np.float64
        v = v.astype(compute, copy=False)
        out = np.zeros(v.shape, dtype=np.float64)
        for i in panels:
            rs = slices[i]
            for _, j in self.store.panel_tiles(i):
                cs = slices[j]
                tile = self._tile(i, j).astype(compute, copy=False)
                out[rs] += tile @ v[cs]
                if j != i:
                    out[cs] += tile.T @ v[rs]
        return out
