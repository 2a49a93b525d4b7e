"""Distributed empirical NTK Gram matrices on Ray (the only package of raysweep using Ray).

Typical use::

    from raysweep.distributed import compute_gram, ensure_ray

    ensure_ray()                                   # $RAY_ADDRESS, or a local cluster
    with compute_gram(apply_fn, params, x, store_dir="results/gram_mlp",
                      tile_size=1024, model_id="mlp relu") as gram:
        y = gram.matmat(v)                          # (N, b) float64, tiles stay on workers
        theta = gram.to_numpy()                     # (N, N) float32, if it fits in RAM

Modules, one idea each:

- ``cluster``: :func:`connect_or_start` (join a running cluster, else start a local one; what
  the scripts call), :func:`ensure_ray`; one actor per GPU, else per CPU
  (:func:`worker_layout`); :func:`gpu_memory_env` (JAX memory settings for a GPU share);
  :func:`check_results_dir` / :func:`check_shared_dir` (the results folder on a cluster).
- ``fingerprint``: sha256 of the dataset and of the parameters.
- ``tile_store``: the on-disk tile store (``tiles/tile_{i:05d}_{j:05d}.npy``, each with its
  CRC-32 in ``tile_….npy.crc32``, + ``manifest.json``); damaged tiles are named and recomputed.
- ``worker``: the ``GramWorker`` actor (engine, resident panels, partial matmat).
- ``pool``: actor slots and replacement of dead actors.
- ``schedule``: dynamic largest-panel-first assignment, progress bar, recovery.
- ``handle``: :class:`DistributedGram` (matmat, matvec, to_numpy, close).
- ``compute``: :func:`compute_gram`, the entry point.
"""

from raysweep.distributed.cluster import (
    check_results_dir,
    check_shared_dir,
    connect_or_start,
    ensure_ray,
    gpu_memory_env,
    worker_layout,
)
from raysweep.distributed.compute import compute_gram
from raysweep.distributed.fingerprint import (
    dataset_fingerprint,
    model_fingerprint,
    params_fingerprint,
)
from raysweep.distributed.handle import DistributedGram
from raysweep.distributed.schedule import PanelEvent, TileCounts
from raysweep.distributed.tile_store import DamagedTileError, TileStore

__all__ = [
    "DamagedTileError",
    "DistributedGram",
    "PanelEvent",
    "TileCounts",
    "TileStore",
    "check_results_dir",
    "check_shared_dir",
    "compute_gram",
    "connect_or_start",
    "dataset_fingerprint",
    "ensure_ray",
    "gpu_memory_env",
    "model_fingerprint",
    "params_fingerprint",
    "worker_layout",
]
