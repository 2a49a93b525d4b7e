"""Can the cluster ever run a trial of this shape? Checked before any work, autoscaler included.

A trial asks for ``cpus`` CPUs and ``gpus`` GPUs on one node. It can run if some node the
cluster has, had, or can start offers both. :func:`node_shapes` gathers those nodes:

- ``alive``: the nodes up now (``ray.nodes()``);
- ``seen``: every node the GCS knows of in this cluster session, idle-terminated ones
  included (Ray's autoscaler state, ``get_cluster_resource_state``): a ``--resume`` after the
  autoscaler removed idle GPU nodes is still accepted;
- ``autoscaler``: the node types of the autoscaler's config, which ``ray up`` copies to the
  head node as ``~/ray_bootstrap_config.yaml`` (``available_node_types`` with their
  ``resources``; worker types with ``max_workers: 0`` cannot start). With ``min_workers: 0``
  (the project's ``cluster.yaml``) GPU nodes exist only once work asks for them, so the
  current resources alone would refuse every GPU trial.

:func:`check_trial_resources` raises ``ValueError`` naming the shapes it found when none fits.
A node type whose ``resources`` the config leaves to the provider (detected from the
instance type at launch) cannot be checked; it is accepted, and the check says so in its
log line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where ``ray up`` puts the autoscaler's config on the head node."""


@dataclass(frozen=True)
class NodeShape:
    """What one node offers: ``resources`` (None: unknown until launch), where it was found."""

    name: str
    resources: dict[str, float] | None
    source: str

    def fits(self, cpus: float, gpus: float) -> bool:
        if self.resources is None:
            return True
        return self.resources.get("CPU", 0) >= cpus and self.resources.get("GPU", 0) >= gpus

    def __str__(self) -> str:
        if self.resources is None:
            return f"{self.name} ({self.source}, resources set at launch)"
        cpu, gpu = self.resources.get("CPU", 0), self.resources.get("GPU", 0)
        return f"{self.name} ({self.source}: {cpu:g} CPU, {gpu:g} GPU)"


def _alive() -> list[NodeShape]:
    import ray

    return [
        NodeShape(n.get("NodeManagerAddress", "node"), dict(n.get("Resources", {})), "alive")
        for n in ray.nodes()
        if n.get("Alive")
    ]


def _seen() -> list[NodeShape]:
    """Nodes of this cluster session from the GCS, dead and idle ones included."""
    try:
        import ray
        from ray._raylet import GcsClient
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        state = get_cluster_resource_state(GcsClient(ray.get_runtime_context().gcs_address))
    except Exception:  # older/newer Ray without this state: the other sources remain
        return []
    return [
        NodeShape(
            node.ray_node_type_name or node.node_ip_address, dict(node.total_resources), "seen"
        )
        for node in state.node_states
    ]


def autoscaler_node_types(path: str | os.PathLike = BOOTSTRAP_CONFIG) -> list[NodeShape]:
    """The node types the autoscaler config at ``path`` can start (empty if no such file)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return []
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    head = config.get("head_node_type")
    shapes = []
    for name, spec in (config.get("available_node_types") or {}).items():
        spec = spec or {}
        if name != head and spec.get("max_workers", 1) == 0:
            continue
        resources = spec.get("resources")
        shapes.append(
            NodeShape(
                name,
                {k: float(v) for k, v in resources.items()} if resources else None,
                "autoscaler",
            )
        )
    return shapes


def node_shapes(bootstrap_config: str | os.PathLike = BOOTSTRAP_CONFIG) -> list[NodeShape]:
    """Alive nodes, nodes seen in this session and the autoscaler's node types."""
    alive = _alive()
    up = [(a.name, a.resources) for a in alive]
    gone = [s for s in _seen() if (s.name, s.resources) not in up]
    return [*alive, *gone, *autoscaler_node_types(bootstrap_config)]


def check_trial_resources(
    cpus: float, gpus: float, *, bootstrap_config: str | os.PathLike = BOOTSTRAP_CONFIG
) -> list[NodeShape]:
    """Raise ``ValueError`` if no node the cluster has, had or can start fits one trial.

    Returns the fitting node shapes. Needs a Ray connection.
    """
    shapes = node_shapes(bootstrap_config)
    fitting = [s for s in shapes if s.fits(cpus, gpus)]
    if fitting:
        return fitting
    seen = sorted({str(s) for s in shapes}) or ["none"]
    raise ValueError(
        f"no trial could ever be scheduled: a trial asks for {cpus:g} CPU and {gpus:g} GPU on "
        f"one node, but no node the cluster has, had or can start offers that (nodes: "
        f"{'; '.join(seen)}). Lower sweep.cpus_per_trial / sweep.gpus_per_trial "
        "(--cpus-per-trial / --gpus-per-trial), or add a node type that fits to the "
        "autoscaler's config (cluster.yaml)."
    )
