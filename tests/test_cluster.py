"""Running on a Ray cluster: cluster.yaml, GPU settings, attaching, and a real multi-node cluster.

The multi-node checks run on one ``ray.cluster_utils.Cluster`` for the whole module: a head and
a worker node, each with one CPU and one *logical* GPU (Ray schedules and pins by it; JAX runs
on the CPU). Ray's temp folder is moved to a private directory (``RAY_TMPDIR``) so that the
cluster's address record, which ``auto`` and the scripts' default look up, never touches other
Ray instances on the machine, and token authentication is off (``RAY_AUTH_MODE=disabled``).
The last test removes the worker node.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raysweep.config import apply_overrides
from raysweep.distributed import compute_gram
from raysweep.distributed.cluster import (
    GPU_SHARE_HEADROOM,
    check_results_dir,
    check_shared_dir,
    connect_or_start,
    gpu_memory_env,
)
from raysweep.eigenfunctions import load_artifact
from raysweep.models import get_model, init_variables, make_apply_fn
from raysweep.ntk import ntk_gram
from raysweep.store import list_parts, read_metrics

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- cluster.yaml


def raw_cluster_yaml() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def check_cluster_config(raw: dict) -> dict:
    """What `ray up` checks (Ray's own prepare + validate), plus a GPU worker type that scales
    from zero with a bound. Returns the prepared config."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    types = config["available_node_types"]
    gpu = {
        name: t
        for name, t in types.items()
        if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1
    }
    if not gpu:
        raise ValueError("cluster.yaml has no GPU worker node type (resources with GPU >= 1)")
    for name, t in gpu.items():
        if t["min_workers"] != 0 or not 1 <= t["max_workers"] <= config["max_workers"]:
            raise ValueError(
                f"GPU worker type {name}: min_workers must be 0 and max_workers in "
                f"[1, {config['max_workers']}]; got {t['min_workers']}, {t['max_workers']}"
            )
    return config


def test_cluster_yaml_passes_rays_validator():
    raw = raw_cluster_yaml()
    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(raw)  # the raw file is not what the launcher validates
    config = check_cluster_config(raw)
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0  # a CPU head
    assert head["node_config"]["InstanceType"].startswith(("m", "c", "r"))
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["node_config"]["ImageId"] == head["node_config"]["ImageId"]  # one AMI to change
    # raysweep is installed from the project's own files, with the gpu extra on GPU workers.
    mounts = config["file_mounts"]
    project = next(remote for remote, local in mounts.items() if local == ".")
    remote_name = project.removeprefix("~/")
    assert any(f"-e ~/{remote_name}" in c for c in config["head_setup_commands"])
    assert any(f"{remote_name}[gpu]" in c for c in config["worker_setup_commands"])
    assert not any("[gpu]" in c for c in config["head_setup_commands"])
    # The dataset folder is synced and becomes $RAYSWEEP_DATA; results go to a shared mount.
    assert "~/data" in mounts
    assert any("RAYSWEEP_DATA=$HOME/data" in c for c in config["setup_commands"])
    assert any("mount -t nfs4" in c and "/mnt/efs" in c for c in config["setup_commands"])
    # JAX on GPU workers does not preallocate unless raysweep sets a process's own share.
    assert any(
        "XLA_PYTHON_CLIENT_PREALLOCATE=false" in c and "ray start" in c
        for c in config["worker_start_ray_commands"]
    )


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda c: c.pop("provider"), "provider"),
        (lambda c: c["provider"].pop("type"), "type"),
        (lambda c: c.pop("head_node_type"), "head_node_type"),
        (lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"), "node_config"),
        (lambda c: c["available_node_types"]["gpu_worker"].pop("resources"), "resources"),
        (lambda c: c["available_node_types"]["head_cpu"].pop("resources"), "resources"),
        (lambda c: c.update(max_workers="four"), "'four' is not of type 'integer'"),
        (lambda c: c["available_node_types"].pop("gpu_worker"), "no GPU worker node type"),
        (
            lambda c: c["available_node_types"]["gpu_worker"]["resources"].pop("GPU"),
            "no GPU worker node type",
        ),
        (
            lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=1),
            "min_workers must be 0",
        ),
        (lambda c: c.update(max_workers=0), "max_workers in \\[1, 0\\]"),
    ],
)
def test_cluster_yaml_validation_catches_a_broken_copy(mutate, match):
    raw = raw_cluster_yaml()
    mutate(raw)
    with pytest.raises((KeyError, ValueError, jsonschema.ValidationError), match=match):
        check_cluster_config(raw)


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("share", "fraction"), [(0.25, "0.225"), (0.5, "0.45"), (0.1, "0.09"), (1 / 3, "0.3")]
)
def test_gpu_memory_env_for_shared_devices(share, fraction):
    env = gpu_memory_env(share)
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["XLA_CLIENT_MEM_FRACTION"] == fraction
    # JAX raises when both fraction variables are set: the deprecated one is blanked (ignored).
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == ""
    assert env["JAX_PLATFORMS"] == ""  # any inherited "cpu" would hide the device
    # The processes that fit on one device never ask for more than the device together.
    sharing = math.floor(1 / share + 1e-9)
    assert sharing * float(fraction) <= GPU_SHARE_HEADROOM + 1e-9


def test_gpu_memory_env_for_whole_devices_and_none():
    for share in (1, 2, 4.0):
        env = gpu_memory_env(share)
        assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"
        assert env["XLA_CLIENT_MEM_FRACTION"] == "0.75"
        assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == ""
    assert gpu_memory_env(0) == {"JAX_PLATFORMS": "cpu"}
    assert gpu_memory_env(0.0) == {"JAX_PLATFORMS": "cpu"}


@pytest.mark.parametrize(
    ("share", "match"),
    [
        (-0.5, "finite number >= 0"),
        (float("nan"), "finite number >= 0"),
        (float("inf"), "finite number >= 0"),
        (1.5, "more than one GPU but not a whole number"),
        (0.00001, "below Ray's resolution"),
        ("0.5", "must be a number"),
        (True, "must be a number"),
        (None, "must be a number"),
    ],
)
def test_gpu_memory_env_rejects_bad_shares(share, match):
    with pytest.raises(ValueError, match=match):
        gpu_memory_env(share)


def test_worker_and_trial_code_leaves_jax_devices_alone_at_import():
    # Ray sets CUDA_VISIBLE_DEVICES when it hands a process its GPU, after the process started
    # and before it loads the actor class or the trainable; JAX honours it only if it has not
    # created its device client yet, so importing that code must not touch a device.
    code = (
        "import raysweep.distributed.worker, raysweep.sweep.trainable, raysweep.training, "
        "raysweep.studies\n"
        "from jax._src import xla_bridge\n"
        "print(xla_bridge.backends_are_initialized())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_results_dir_rejects_uris(tmp_path, monkeypatch):
    for uri in ("s3://bucket/results", "gs://bucket/x", "file:///tmp/x"):
        with pytest.raises(ValueError, match=r"URI, but raysweep's tile store"):
            check_results_dir(uri)
    with pytest.raises(ValueError, match="is empty"):
        check_results_dir(" ")
    monkeypatch.chdir(tmp_path)
    assert check_results_dir("results/run") == tmp_path / "results" / "run"


def test_scripts_refuse_s3_results_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ray.shutdown()  # in case an earlier module left a connection
    eigen = load_script("eigen_sweep")
    assert eigen.main(["--smoke-test", "--out", "s3://bucket/run"]) == 2
    assert "s3:// URI, but raysweep's tile store" in capsys.readouterr().err
    assert eigen.main(["--smoke-test", "sweep.storage_path=s3://bucket/results"]) == 2
    assert "aws s3 sync" in capsys.readouterr().err
    nad = load_script("nad_sweep")
    assert nad.main(["--smoke-test", "--out", "s3://bucket/nad"]) == 2
    assert "s3:// URI" in capsys.readouterr().err
    assert eigen.main(["--smoke-test", "--gpus-per-trial", "1.5", "--out", "r"]) == 2
    assert "not a whole number" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and not ray.is_initialized()


# ----------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def cluster():
    """Head + worker node, 1 CPU and 1 logical GPU each, in a private Ray temp folder."""
    from ray.cluster_utils import Cluster

    ray.shutdown()  # in case an earlier module left a connection
    tmp = tempfile.mkdtemp(prefix="rsc")  # short: Ray's socket paths live under it
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", tmp)
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.delenv("RAY_ADDRESS", raising=False)
        node_args = {"num_cpus": 1, "num_gpus": 1}
        c = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
        try:
            c.worker = c.add_node(**node_args)
            c.node_ids = {c.head_node.node_id, c.worker.node_id}
            yield c
        finally:
            ray.shutdown()
            c.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


@pytest.fixture(scope="module")
def eigen_run(cluster, tmp_path_factory):
    """The main job's eigen step (--smoke-test: 300 digits, 16 eigenpairs), started with no
    address and no RAY_ADDRESS while the cluster runs: it must join it."""
    out = tmp_path_factory.mktemp("eigen") / "smoke"
    job = load_script("eigen_sweep")
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = job.main(
            ["--preset", "smoke", "--smoke-test", "--eigen-only", "--quiet", "--out", str(out)]
        )
    assert code == 0, text.getvalue()[-3000:]
    return job, out, text.getvalue()


@pytest.fixture
def connected(cluster):
    connect_or_start(cluster.address, log=None)
    assert alive_nodes() >= {cluster.head_node.node_id}


def test_main_job_attaches_to_the_running_cluster(cluster, eigen_run):
    job, out, printed = eigen_run
    assert f"[ray] joined the Ray cluster at {cluster.address}" in printed
    assert "the `ray start` cluster running on this machine" in printed
    assert "2 node(s), 2 CPU, 2 GPU" in printed
    assert ray.get_runtime_context().gcs_address == cluster.address
    assert alive_nodes() == cluster.node_ids  # no local cluster of its own
    # Its Gram (computed by workers on the cluster) is the single-process Gram.
    art = load_artifact(out / "eigenfunctions")
    x, _ = art.dataset().concatenated()
    apply_fn = make_apply_fn(get_model("mlp"), art.variables)
    config = job.build_config(job.parse_args(["--preset", "smoke", "--smoke-test"]))
    reference = ntk_gram(apply_fn, art.variables["params"], x, batch_size=config.ntk.tile_size)
    manifest = json.loads((out / "gram" / "manifest.json").read_text())
    tile = manifest["tile_size"]
    tiles = sorted((out / "gram" / "tiles").glob("tile_*.npy"))
    nb = manifest["num_blocks"]
    assert len(tiles) == nb * (nb + 1) // 2
    for path in tiles:
        i, j = (int(t) for t in path.stem.split("_")[1:])
        block = reference[i * tile : (i + 1) * tile, j * tile : (j + 1) * tile]
        np.testing.assert_allclose(np.load(path), block, rtol=1e-5, atol=1e-6 * reference.max())


def test_connect_or_start_joins_by_address_env_and_auto(cluster, monkeypatch):
    for how in ("address", "env", "auto"):
        ray.shutdown()
        if how == "env":
            monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        conn = connect_or_start(
            {"address": cluster.address, "env": None, "auto": "auto"}[how], log=None
        )
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        assert (conn.action, conn.address, conn.num_nodes) == ("joined", cluster.address, 2)
        assert conn.resources == {"CPU": 2.0, "GPU": 2.0}
        assert alive_nodes() == cluster.node_ids
    again = connect_or_start(None, log=None)
    assert again.action == "connected" and "connected to, " + cluster.address in str(again)

    # env_vars reach every process of the job, on every node.
    ray.shutdown()
    connect_or_start(cluster.address, env_vars=gpu_memory_env(0.25), log=None)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def env_here():
        keys = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE")
        return ray.get_runtime_context().get_node_id(), [os.environ.get(k) for k in keys]

    seen = ray.get(
        [
            env_here.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)
            ).remote()
            for n in sorted(cluster.node_ids)
        ]
    )
    assert dict(seen) == {n: ["0.225", "false"] for n in cluster.node_ids}
    ray.shutdown()
    with pytest.raises(ValueError, match="num_cpus=2 only applies when starting a local"):
        connect_or_start(cluster.address, num_cpus=2, log=None)
    with pytest.raises(ConnectionError, match="no Ray cluster answers at 127.0.0.1:9"):
        connect_or_start("127.0.0.1:9", log=None)
    with pytest.raises(ValueError, match="is not 'host:port'"):
        connect_or_start("my-cluster", log=None)
    assert not ray.is_initialized()


def test_gram_workers_spread_over_nodes_one_gpu_each(cluster, connected, tmp_path):
    module = get_model("mlp", hidden_sizes=(16, 16))
    variables = init_variables(module, (8, 8, 1), seed=0)
    apply_fn, params = make_apply_fn(module, variables), variables["params"]
    x = np.random.default_rng(0).standard_normal((70, 8, 8, 1)).astype(np.float32)
    assert set(check_shared_dir(tmp_path)) == cluster.node_ids  # both nodes see tmp_path
    assert not list(tmp_path.iterdir())  # and the marker file is gone
    with compute_gram(
        apply_fn, params, x, store_dir=tmp_path / "gram", tile_size=16, progress=False
    ) as gram:
        infos = gram.worker_info()
        theta = gram.to_numpy()
    assert {i["node_id"] for i in infos} == cluster.node_ids  # one worker on each node
    for info in infos:
        assert info["gpu_ids"] == ["0"]  # one (logical) GPU each, and only that one visible
        assert info["env"]["CUDA_VISIBLE_DEVICES"] == "0"
        assert info["env"]["XLA_CLIENT_MEM_FRACTION"] == "0.75"  # owns its device
        assert info["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"
    reference = ntk_gram(apply_fn, params, x, batch_size=16)
    np.testing.assert_allclose(theta, reference, rtol=1e-6, atol=1e-7 * np.abs(reference).max())


def test_tune_sweep_runs_across_nodes_on_gpu_shares(cluster, connected, eigen_run, tmp_path):
    from raysweep.sweep import run_sweep

    job, out, _ = eigen_run
    config = apply_overrides(
        job.build_config(job.parse_args(["--preset", "smoke", "--smoke-test"])),
        [
            "train.epochs=1",
            "sweep.optimizers=sgd",
            "sweep.cpus_per_trial=1",  # one trial per node at a time
            "sweep.gpus_per_trial=0.5",
            "sweep.max_retries=0",
        ],
    )
    summary = run_sweep(config, out, progress=False, compile_cache=tmp_path / "jax_cache")
    assert summary.ok and summary.trial_counts == {"finished": 2}, str(summary)
    table = read_metrics(out)
    keys = [(r["trial_id"], r["eigen_index"]) for r in table.to_pylist()]
    assert len(keys) == len(set(keys)) == 3 * 2  # 3 indices x {network, linearized}, 1 epoch
    assert len(list_parts(out)) == 2
    results = [
        json.loads(path.read_text().splitlines()[-1])
        for path in (out / "tune" / config.sweep.name).glob("*/result.json")
    ]
    assert len(results) == 2
    assert {r["node_id"] for r in results} == cluster.node_ids  # the two trials, two nodes
    for r in results:
        assert r["gpu_ids"] == "0" and r["xla_client_mem_fraction"] == "0.45"


def test_losing_a_node_mid_gram_loses_and_duplicates_nothing(cluster, connected, tmp_path):
    module = get_model("mlp", hidden_sizes=(16, 16))
    variables = init_variables(module, (8, 8, 1), seed=1)
    apply_fn, params = make_apply_fn(module, variables), variables["params"]
    x = np.random.default_rng(1).standard_normal((70, 8, 8, 1)).astype(np.float32)
    removed = []

    def lose_the_worker_node(event):
        if not removed:
            removed.append(event.panel)
            cluster.remove_node(cluster.worker)

    store = tmp_path / "gram"
    with compute_gram(
        apply_fn,
        params,
        x,
        store_dir=store,
        tile_size=16,
        progress=False,
        on_panel_done=lose_the_worker_node,
    ) as gram:
        assert removed and alive_nodes() == {cluster.head_node.node_id}
        assert gram.tiles_done == gram.tiles_total == 15
        # Counted once per tile from the workers' reports, whoever redid the lost panels.
        assert (gram.tiles_computed, gram.tiles_loaded, gram.tiles_recomputed) == (15, 0, 0)
        # No room for a replacement on the head alone: the survivor took over, nothing waits.
        assert gram.num_workers == 1 and gram.worker_restarts == 0
        theta = gram.to_numpy()
        v = np.random.default_rng(2).standard_normal((70, 3))
        product = gram.matmat(v)  # panels of the lost worker were reloaded by the survivor
    # A worker killed mid-write may leave its temporary file (".tile_….tmp"); the store
    # ignores those, so every finished tile must appear exactly once, with its checksum.
    tiles = sorted(p.name for p in (store / "tiles").iterdir() if not p.name.startswith("."))
    names = [f"tile_{i:05d}_{j:05d}.npy" for i in range(5) for j in range(i, 5)]
    assert tiles == sorted(names + [f"{name}.crc32" for name in names])
    reference = ntk_gram(apply_fn, params, x, batch_size=16)
    np.testing.assert_allclose(theta, reference, rtol=1e-6, atol=1e-7 * np.abs(reference).max())
    np.testing.assert_allclose(product, theta.astype(np.float64) @ v, rtol=1e-5, atol=1e-5)
