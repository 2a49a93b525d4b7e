"""Connecting to Ray, pinning devices, and deciding where the Gram workers run.

Joining or starting a cluster:

* :func:`connect_or_start` is what the sweep scripts call: it joins a running cluster when
  there is one (``address``, else ``$RAY_ADDRESS``, else the ``ray start`` cluster recorded on
  this machine) and otherwise starts a local one, and says which it did.
* :func:`ensure_ray` is the library's quiet variant (``compute_gram``, ``run_sweep``): it does
  nothing when Ray is already initialized, joins ``address`` / ``$RAY_ADDRESS`` when given and
  otherwise starts a private local cluster, even if some ``ray start`` cluster is running.

GPU memory and pinning: :func:`gpu_memory_env` turns a GPU share (Ray's ``num_gpus`` of one
process) into the environment JAX needs — no preallocation and a memory cap matched to the
share when processes share a device, JAX's defaults when a process owns whole devices, the CPU
backend when it has none. Ray sets ``CUDA_VISIBLE_DEVICES`` for a process that requests GPUs,
so JAX there sees only its device(s); the variables reach processes through ``runtime_env``
``env_vars`` (job-wide from :func:`connect_or_start`, per actor from :func:`worker_layout`).

:func:`worker_layout` reads the cluster's resources and returns how many Gram actors to start
and the Ray options for each: with GPUs, one actor per GPU (``num_gpus=1``, so Ray sets
``CUDA_VISIBLE_DEVICES`` and each actor's JAX sees exactly one device, plus that node's CPUs per
GPU for the host-side BLAS of ``matmat``); without, one actor per CPU slot (``num_cpus=1``,
with XLA limited to one intra-op thread so that N actors on N cores do not oversubscribe
them). ``JAX_ENABLE_X64`` is forwarded when the driver enabled x64, so
float64 parameters stay float64 in the workers. :func:`slot_capacity` says how many actors of
a layout the live nodes can host (a lost node lowers it).

Shared storage: every node opens the tile store and writes its trials' Parquet parts by path,
so on a multi-node cluster the results folder must be on storage all nodes mount at the same
path (EFS, NFS). :func:`check_results_dir` rejects URIs (``s3://...``) up front, and
:func:`check_shared_dir` asks every live node whether it sees a marker file written there.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jax
import ray

from raysweep.argcheck import check_int
from raysweep.atomic import unwritable_reason

logger = logging.getLogger(__name__)

_CPU_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

#: Fraction of a GPU share a process's JAX memory pool may take; the rest is left for each
#: process's CUDA context and library workspaces, which live outside JAX's pool.
GPU_SHARE_HEADROOM = 0.9
#: JAX's own default pool for a process that owns its device(s): preallocate 75 %.
WHOLE_DEVICE_MEM_FRACTION = 0.75
#: Ray's resolution for fractional resources.
RAY_RESOURCE_RESOLUTION = 1e-4


# ----------------------------------------------------------------------------- GPU memory


def gpu_memory_env(share) -> dict[str, str]:
    """Environment variables for JAX in a process that holds ``share`` GPUs (Ray's num_gpus).

    * ``0 < share < 1`` (several processes share one device): ``XLA_PYTHON_CLIENT_PREALLOCATE
      =false`` and ``XLA_CLIENT_MEM_FRACTION = 0.9 * share``, so each process grows its pool
      on demand up to its part of the device (0.25 → 0.225), leaving room for the CUDA
      contexts of the processes sharing it;
    * whole devices (``share`` a positive integer): JAX's defaults stated explicitly
      (preallocate 75 %), so that a fractional setting made for the whole job does not leak
      into processes that own their device;
    * ``0``: ``JAX_PLATFORMS=cpu``: a process that was given no GPU must not initialize (and
      preallocate on) the devices of other processes on a GPU node, since Ray leaves
      ``CUDA_VISIBLE_DEVICES`` unset for it.

    ``XLA_PYTHON_CLIENT_MEM_FRACTION`` (deprecated; JAX refuses it together with
    ``XLA_CLIENT_MEM_FRACTION``) is set to the empty string, which JAX ignores, so that a value
    inherited from a node's environment cannot make JAX raise.

    Raises:
      ValueError: ``share`` not a finite number ≥ 0, a fraction finer than Ray's 0.0001, or
        more than one GPU but not a whole number.
    """
    if isinstance(share, bool) or not isinstance(share, numbers.Real):
        raise ValueError(
            f"GPU share must be a number (GPUs per process, e.g. 0.25 or 1); got {share!r}."
        )
    share = float(share)
    if not math.isfinite(share) or share < 0:
        raise ValueError(f"GPU share must be a finite number >= 0; got {share!r}.")
    if share == 0:
        return {"JAX_PLATFORMS": "cpu"}
    if share < 1:
        if share < RAY_RESOURCE_RESOLUTION:
            raise ValueError(
                f"GPU share {share!r} is below Ray's resolution for fractional resources "
                f"({RAY_RESOURCE_RESOLUTION}); use e.g. 0.25 for four processes per GPU."
            )
        fraction = f"{GPU_SHARE_HEADROOM * share:.4f}".rstrip("0").rstrip(".")
        return {
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            "XLA_CLIENT_MEM_FRACTION": fraction,
            "XLA_PYTHON_CLIENT_MEM_FRACTION": "",
            "JAX_PLATFORMS": "",
        }
    if not share.is_integer():
        raise ValueError(
            f"GPU share {share!r} is more than one GPU but not a whole number; a process "
            "sharing devices must take a fraction of one (< 1), otherwise whole GPUs (1, 2, ...)."
        )
    return {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "true",
        "XLA_CLIENT_MEM_FRACTION": str(WHOLE_DEVICE_MEM_FRACTION),
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "",
        "JAX_PLATFORMS": "",
    }


def apply_env(env: dict[str, str] | None) -> dict[str, str]:
    """Set ``env`` in this process, for JAX settings that arrive after start-up.

    Must run before the process first uses a JAX device: the XLA memory variables are read when
    JAX creates its GPU client. ``JAX_PLATFORMS`` is read when ``jax`` is imported, so it is
    also applied through ``jax.config``. Returns the variables whose value changed; logs a
    warning when JAX's devices were already initialized with other settings.
    """
    if not env:
        return {}
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    os.environ.update(env)
    if "jax" in sys.modules and "JAX_PLATFORMS" in env:
        jax.config.update("jax_platforms", env["JAX_PLATFORMS"] or None)
    if changed and _jax_devices_initialized():
        logger.warning(
            "JAX's devices were initialized in this process before %s were set; they apply "
            "from the next process on.",
            ", ".join(sorted(changed)),
        )
    return changed


def _jax_devices_initialized() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - a JAX without that module
        return False
    probe = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(probe()) if probe is not None else False


# ----------------------------------------------------------------------------- joining


def _check_num_cpus(num_cpus) -> int | None:
    if num_cpus is None:
        return None
    return check_int(num_cpus, "num_cpus", minimum=1, hint=" or None")


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
    num_cpus = _check_num_cpus(num_cpus)
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


DASHBOARD_TOKEN_COMMAND = "ray get-auth-token"
"""Prints the token the Ray dashboard asks for (Ray >= 2.60; ``--generate`` makes one)."""


@dataclass(frozen=True)
class RayConnection:
    """What :func:`connect_or_start` did; ``str()`` is the line it prints.

    Attributes:
      action: ``"joined"`` (an existing cluster), ``"started"`` (a new local one) or
        ``"connected"`` (this process was already connected; nothing changed).
      address: the cluster's GCS address (``host:port``). source: where the address came from.
      num_nodes: live nodes. resources: the cluster's total CPU and GPU.
      dashboard_url: the Ray dashboard, when known. Ray 2.60 turns token authentication on
        for the clusters ``ray.init()`` starts (and for ``ray start`` where a token exists):
        the dashboard then opens on "Authentication Token Required"; the token is printed by
        :data:`DASHBOARD_TOKEN_COMMAND` (``~/.ray/auth_token`` of the head node).
    """

    action: str
    address: str
    source: str
    num_nodes: int
    resources: dict[str, float] = field(default_factory=dict)
    dashboard_url: str | None = None

    @property
    def joined(self) -> bool:
        return self.action == "joined"

    def __str__(self) -> str:
        cpus, gpus = self.resources.get("CPU", 0), self.resources.get("GPU", 0)
        size = f"{self.num_nodes} node(s), {cpus:g} CPU, {gpus:g} GPU"
        head = {
            "joined": f"joined the Ray cluster at {self.address} ({self.source})",
            "started": f"started a local Ray cluster at {self.address} ({self.source})",
            "connected": f"using the Ray cluster this process is connected to, {self.address}",
        }[self.action]
        where = "" if self.action == "started" else " on the head node"
        dash = (
            f"; dashboard {self.dashboard_url} (if it asks for an authentication token: "
            f"{DASHBOARD_TOKEN_COMMAND}{where})"
            if self.dashboard_url
            else ""
        )
        return f"[ray] {head}: {size}{dash}"


_HOST_PORT = re.compile(r"^\[?([^\s/\]]+)\]?:(\d+)$")


def _reachable(address: str, timeout_s: float) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (a cheap liveness probe)."""
    match = _HOST_PORT.match(address)
    if match is None:
        return False
    try:
        with socket.create_connection((match[1], int(match[2])), timeout=timeout_s):
            return True
    except OSError:
        return False


def recorded_cluster_address() -> str | None:
    """The GCS address of the last ``ray start`` on this machine, if Ray recorded one.

    Ray keeps it in ``<temp dir>/ray/ray_current_cluster`` (``$RAY_TMPDIR`` moves it) and
    removes it on ``ray stop``; a record left by a killed cluster is ignored by the caller.
    """
    try:
        from ray._private.services import find_bootstrap_address

        return find_bootstrap_address(None) or None
    except Exception:  # noqa: BLE001 - an unreadable record is no record
        return None


def _resolve(address: str | None, probe_s: float) -> tuple[str | None, str]:
    """``(address to join or None for a new local cluster, where it came from)``."""
    if address is not None:
        if not isinstance(address, str) or not address.strip():
            raise ValueError(
                f"address must be 'host:port', 'ray://host:port', 'auto', 'local' or None; "
                f"got {address!r}."
            )
        address = address.strip()
        if address == "local":
            return None, "address='local'"
        if address == "auto":
            return "auto", "address='auto'"
        if not address.startswith("ray://") and _HOST_PORT.match(address) is None:
            raise ValueError(
                f"address {address!r} is not 'host:port' (e.g. 10.0.0.5:6379), "
                "'ray://host:10001', 'auto' or 'local'."
            )
        return address, "given address"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env:
        return env, "from RAY_ADDRESS"
    recorded = recorded_cluster_address()
    if recorded and _reachable(recorded, probe_s):
        return recorded, "the `ray start` cluster running on this machine"
    if recorded:
        logger.info("ignoring the stale Ray cluster record %s (nothing answers there)", recorded)
    return None, "no running cluster found"


def connect_or_start(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    env_vars: dict[str, str] | None = None,
    log=print,
    **init_kwargs,
) -> RayConnection:
    """Join a running Ray cluster if there is one, else start a local one; print which.

    Args:
      address: ``None`` (default): ``$RAY_ADDRESS`` if set, else the cluster a ``ray start``
        on this machine recorded (if it answers), else a new local cluster. ``"auto"``: a
        running cluster must be found (Ray's own discovery); ``"local"``: always a new local
        cluster; ``"host:port"`` / ``"ray://host:port"``: join that cluster.
      num_cpus: CPUs of a new local cluster (``None``: all cores). A ValueError when the call
        joins a cluster instead.
      env_vars: environment for every process of this job (Ray ``runtime_env`` ``env_vars``),
        e.g. :func:`gpu_memory_env` of the trials' GPU share; actors override single keys.
      log: where the one-line summary goes (``None``: nowhere).
      **init_kwargs: passed to ``ray.init`` (``include_dashboard=False``, ``runtime_env``...).

    Returns:
      A :class:`RayConnection`. When Ray is already initialized in this process nothing is
      changed (``action="connected"``; ``env_vars`` are then not applied).

    Raises:
      ValueError: a malformed address, ``num_cpus`` when joining, or non-string env_vars.
      ConnectionError: nothing answers at the address, or ``"auto"`` found no cluster.
    """
    num_cpus = _check_num_cpus(num_cpus)
    if env_vars is not None and (
        not isinstance(env_vars, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items())
    ):
        raise ValueError(f"env_vars must be a dict of str to str; got {env_vars!r}.")
    if ray.is_initialized():
        conn = _connection("connected", "already initialized", None, None)
        if env_vars:
            logger.warning(
                "Ray was already initialized in this process: env_vars %s are not applied to "
                "the job's processes.",
                sorted(env_vars),
            )
        if log:
            log(str(conn))
        return conn
    target, source = _resolve(address, probe_s=2.0)
    if target is not None and num_cpus is not None:
        raise ValueError(
            f"num_cpus={num_cpus} only applies when starting a local cluster, but this call "
            f"joins the cluster at {target!r} ({source}). Drop num_cpus (--num-cpus), or pass "
            "address='local' (--address local)."
        )
    if target is not None and _HOST_PORT.match(target) and not _reachable(target, 5.0):
        raise ConnectionError(
            f"no Ray cluster answers at {target} ({source}). Start it (ray start --head, or "
            "ray up cluster.yaml), fix the address, or pass --address local for a new local "
            "cluster."
        )
    runtime_env = dict(init_kwargs.pop("runtime_env", None) or {})
    if env_vars:
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env_vars}
    if runtime_env:
        init_kwargs["runtime_env"] = runtime_env
    if target is None:
        context = ray.init(address="local", num_cpus=num_cpus, **init_kwargs)
        action = "started"
    else:
        try:
            context = ray.init(address=target, **init_kwargs)
        except ConnectionError as err:
            raise ConnectionError(
                f"could not join a Ray cluster ({source}: {target!r}): {err} Start one with "
                "ray start --head (or ray up cluster.yaml), or pass --address local."
            ) from err
        action = "joined"
    conn = _connection(action, source, target, getattr(context, "dashboard_url", None))
    if log:
        log(str(conn))
    return conn


def _connection(
    action: str, source: str, target: str | None, dashboard: str | None
) -> RayConnection:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - e.g. a Ray Client connection
        address = target or "?"
    if dashboard and not dashboard.startswith("http"):
        dashboard = f"http://{dashboard}"
    return RayConnection(
        action=action,
        address=address,
        source=source,
        num_nodes=len(nodes),
        resources={"CPU": float(total.get("CPU", 0)), "GPU": float(total.get("GPU", 0))},
        dashboard_url=dashboard or None,
    )


# ----------------------------------------------------------------------------- storage


def check_results_dir(path) -> Path:
    """The results folder as an absolute local path, checked before any work.

    The tile store and the Parquet metrics store write files by path (atomic rename), which
    object stores do not offer: on a cluster, use a shared file system mounted at the same path
    on every node (EFS, NFS) and copy the folder to S3 afterwards if you want it there.

    Raises:
      ValueError: ``path`` is empty or a URI such as ``s3://``, or files cannot be created
        in it (or, when it does not exist yet, in the folder it would be created in): a
        read-only folder or mount, or a file where a folder is expected. Nothing is created.
    """
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"results folder must be a path; got {path!r}.")
    text = os.fspath(path)
    if not text.strip():
        raise ValueError("results folder is empty; give a folder, e.g. results/ or /mnt/efs.")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme:
        raise ValueError(
            f"results folder {text!r} is a {scheme[1]}:// URI, but raysweep's tile store and "
            "Parquet metrics store write files by path. On a multi-node cluster use storage "
            "every node mounts at the same path (e.g. EFS at /mnt/efs: --out "
            "/mnt/efs/results/NAME) and copy it to object storage afterwards (aws s3 sync)."
        )
    folder = Path(text).expanduser().resolve()
    problem = unwritable_reason(folder)
    if problem:
        raise ValueError(
            f"results folder {folder} cannot be written: {problem}. Choose a folder you can "
            "write to (--out PATH, or sweep.storage_path=PATH), or fix its permissions."
        )
    return folder


@ray.remote(num_cpus=0, max_retries=0)
def _read_marker(path: str) -> tuple[str, str | None]:
    try:
        text = Path(path).read_text()
    except OSError:
        text = None
    return ray.get_runtime_context().get_node_id(), text


def check_shared_dir(path, *, timeout_s: float = 120.0) -> list[str]:
    """Check that every live node of the cluster sees the folder ``path``; returns their ids.

    Writes a marker file in ``path`` (created if needed) and reads it back from a zero-CPU
    task pinned to each live node. On a single-node cluster nothing is checked. Nodes that do
    not answer within ``timeout_s`` (e.g. still starting) are logged and skipped, and nodes
    the autoscaler adds later are not seen here: a Gram worker there stops at start-up when the
    tile store is not visible (:meth:`raysweep.distributed.tile_store.TileStore.open`), and the
    sweep checks again, with the nodes then alive, before its first trial.

    Raises:
      ValueError: some node does not see the marker (the folder is local to this machine),
        or ``path`` is a URI.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    path = check_results_dir(path)
    nodes = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
    if len(nodes) <= 1:
        return list(nodes)
    path.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = path / f".raysweep-shared-{token}"
    marker.write_text(token)
    try:
        refs = [
            _read_marker.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
            ).remote(str(marker))
            for node_id in nodes
        ]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        seen, blind = [], []
        for ref in ready:
            try:
                node_id, text = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - a node that died meanwhile
                logger.warning("could not check shared storage on a node: %s", err)
                continue
            (seen if text == token else blind).append(node_id)
        if pending:
            logger.warning(
                "%d node(s) did not answer the shared-storage check within %.0f s; not checked.",
                len(pending),
                timeout_s,
            )
            for ref in pending:
                ray.cancel(ref, force=True)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        where = ", ".join(
            f"{nodes[n].get('NodeManagerAddress', '?')} ({n[:8]})" for n in sorted(blind)
        )
        raise ValueError(
            f"results folder {path} is not shared: node(s) {where} do not see it. On a "
            "multi-node cluster the Gram workers and the trials write there from every node: "
            "put it on storage all nodes mount at the same path (EFS/NFS, e.g. --out "
            "/mnt/efs/results/NAME; see cluster.yaml)."
        )
    return seen


# ----------------------------------------------------------------------------- Gram workers


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


def alive_nodes() -> int:
    """Alive nodes of the Ray cluster this process is connected to (0 when it is not)."""
    if not ray.is_initialized():
        return 0
    try:
        return sum(1 for node in ray.nodes() if node.get("Alive"))
    except Exception:  # noqa: BLE001 - a GCS hiccup: count as one node (checks stay local)
        return 1


def cpus_per_gpu() -> int:
    """CPUs a GPU actor may take: min over alive GPU nodes of floor(CPUs / GPUs), at least 1."""
    shares = []
    for node in ray.nodes():
        res = node.get("Resources", {})
        if node.get("Alive") and res.get("GPU", 0) >= 1:
            shares.append(int(res.get("CPU", 0) // res["GPU"]))
    return max(1, min(shares, default=1))


def slot_capacity(options: dict) -> int:
    """Actors with these Ray ``options`` (``num_cpus``, ``num_gpus``) the live nodes can host.

    Counted from each live node's total resources, so a lost node lowers it at once; other
    jobs' use is not subtracted (an actor may still wait for a slot they hold).
    """
    need = {
        "CPU": float(options.get("num_cpus", 1) or 0),
        "GPU": float(options.get("num_gpus") or 0),
    }
    total = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        fits = [int(res.get(k, 0) // v) for k, v in need.items() if v > 0]
        total += min(fits) if fits else 0
    return total


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
        env.update(gpu_memory_env(1))  # owns its device, whatever the job's trials share
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
