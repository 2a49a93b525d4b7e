"""Connecting to Ray and deciding where the Gram workers run.

:func:`ensure_ray` is the only place that starts or joins a Ray cluster for this package:

* Ray already initialized in this process: nothing happens (idempotent).
* ``address`` given, or the ``RAY_ADDRESS`` environment variable set: join that cluster
  (``ray.init(address=...)``; ``"ray://host:10001"`` for Ray Client, ``"host:6379"`` inside the
  cluster).
* otherwise: start a private local cluster (``ray.init(address="local", ...)``), even if some
  other ``ray start`` cluster is running on the machine.

:func:`worker_layout` reads the cluster's resources and returns how many Gram actors to start
and the Ray options for each: with GPUs, one actor per GPU (``num_gpus=1``, so Ray sets
``CUDA_VISIBLE_DEVICES`` and each actor's JAX sees exactly one device, plus that node's CPUs per
GPU for the host-side BLAS of ``matmat``); without, one actor per CPU slot (``num_cpus=1``,
with XLA limited to one intra-op thread so that N actors on N cores do not oversubscribe
them). ``JAX_ENABLE_X64`` is forwarded when the driver enabled x64, so
float64 parameters stay float64 in the workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import jax
import ray

_CPU_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def ensure_ray(address: str | None = None, num_cpus: int | None = None, **init_kwargs) -> bool:
    """Make sure this process is connected to Ray; start a local cluster if needed.

    Args:
      address: cluster to join (``"host:port"``, ``"ray://host:port"``, ``"auto"``), or
        ``"local"`` to force a fresh local cluster. ``None``: ``$RAY_ADDRESS`` if set, else
        local.
      num_cpus: CPUs of a *local* cluster (``None``: all cores). Not allowed when joining.
      **init_kwargs: passed to ``ray.init`` (e.g. ``include_dashboard=False``,
        ``object_store_memory=...``).

    Returns:
      True if this call initialized Ray, False if it was already initialized.
    """
    if ray.is_initialized():
        return False
    if num_cpus is not None and (not isinstance(num_cpus, int) or num_cpus < 1):
        raise ValueError(f"num_cpus must be a positive int or None; got {num_cpus!r}.")
    join = address if address is not None else os.environ.get("RAY_ADDRESS") or None
    if join is not None and join != "local":
        if num_cpus is not None:
            raise ValueError(
                f"num_cpus={num_cpus} only applies when starting a local cluster, but this call "
                f"joins the cluster at {join!r} (from address= or RAY_ADDRESS). Drop num_cpus, "
                "or pass address='local'."
            )
        ray.init(address=join, **init_kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, **init_kwargs)
    return True


@dataclass(frozen=True)
class WorkerLayout:
    """How many Gram actors to start and the ``.options(...)`` for each.

    Attributes:
      num_workers: actors to start. device: ``"gpu"`` or ``"cpu"``. slots: actors the
      cluster can host at once (GPUs or CPUs). options: keyword arguments of
      ``GramWorker.options``.
    """

    num_workers: int
    device: str
    slots: int
    options: dict = field(default_factory=dict)


def cpus_per_gpu() -> int:
    """CPUs a GPU actor may take: min over alive GPU nodes of floor(CPUs / GPUs), at least 1."""
    shares = []
    for node in ray.nodes():
        res = node.get("Resources", {})
        if node.get("Alive") and res.get("GPU", 0) >= 1:
            shares.append(int(res.get("CPU", 0) // res["GPU"]))
    return max(1, min(shares, default=1))


def worker_layout(num_workers: int | None, num_panels: int) -> WorkerLayout:
    """Pick actor count and resources from ``ray.cluster_resources()``.

    ``num_workers=None`` means one per GPU (or per CPU without GPUs), capped at the number of
    row panels (more actors than panels would idle). Raises ValueError, before any actor is
    created, when ``num_workers`` exceeds what the cluster can ever schedule.
    """
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    env = {}
    if jax.config.jax_enable_x64:
        env["JAX_ENABLE_X64"] = "1"
    if gpus > 0:
        per_gpu = cpus_per_gpu()
        device, slots, options = "gpu", gpus, {"num_gpus": 1, "num_cpus": per_gpu}
        env["OMP_NUM_THREADS"] = str(per_gpu)  # host BLAS threads for matmat
    else:
        device, slots, options = "cpu", cpus, {"num_cpus": 1}
        flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""), _CPU_XLA_FLAGS]))
        env["XLA_FLAGS"] = flags
    if slots < 1:
        raise ValueError(
            f"the Ray cluster has no GPU and no CPU to run Gram workers on (resources: "
            f"{resources}); start Ray with at least one CPU."
        )
    if num_workers is None:
        num_workers = slots
    elif num_workers > slots:
        raise ValueError(
            f"num_workers={num_workers}, but the cluster has only {slots} {device.upper()} "
            f"slot(s) for Gram workers (one actor per {device.upper()}); pass "
            f"num_workers<={slots} or add nodes."
        )
    num_workers = min(num_workers, num_panels)
    if env:
        options["runtime_env"] = {"env_vars": env}
    return WorkerLayout(num_workers, device, slots, options)
