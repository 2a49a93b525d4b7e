"""raysweep.distributed: Gram matrices on Ray actors, tile store, resumption, fault tolerance.

One local Ray cluster (no dashboard; ``ray_cluster`` of conftest.py) serves the module, with
4 logical CPUs on what may be a 2-core machine: the shared Gram (``computed``, 2 workers)
stays alive while other tests start 1-2 workers of their own, and each Gram actor asks for
one CPU slot. Each
``compute_gram`` call starts its own actors (a few seconds each on a busy machine, JIT
included), so the tests share one computed Gram wherever they can.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import ray

from raysweep.atomic import crc32_file
from raysweep.distributed import (
    DistributedGram,
    TileStore,
    compute_gram,
    dataset_fingerprint,
    ensure_ray,
    params_fingerprint,
    worker_layout,
)
from raysweep.distributed.tile_store import DamagedTileError
from raysweep.models import get_model, init_variables, make_apply_fn
from raysweep.ntk import ntk_gram

N, TILE = 70, 16  # 5 blocks (last one 6 examples), 15 tiles


@pytest.fixture(scope="module")
def mlp():
    module = get_model("mlp", hidden_sizes=(16, 16))
    variables = init_variables(module, (8, 8, 1), seed=0)
    return make_apply_fn(module, variables), variables["params"]


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).standard_normal((N, 8, 8, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def computed(ray_cluster, mlp, data, tmp_path_factory):
    """One 2-worker Gram of the Flax MLP, shared by several tests; closed at the end."""
    apply_fn, params = mlp
    store = tmp_path_factory.mktemp("gram") / "store"
    gram = compute_gram(
        apply_fn,
        params,
        data,
        store_dir=store,
        tile_size=TILE,
        num_workers=2,
        model_id="mlp 16x16",
        progress=False,
    )
    reference = ntk_gram(apply_fn, params, data, batch_size=TILE)
    yield gram, reference, store
    gram.close()


def tanh_mlp():
    """A tiny pure-JAX model (no Flax)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    params = {"w1": jax.random.normal(k1, (64, 12)) / 8.0, "w2": jax.random.normal(k2, (12, 1))}

    def apply_fn(p, x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"] / np.sqrt(12.0)

    return apply_fn, params


# ----------------------------------------------------------------- correctness


def test_two_workers_match_single_process(computed):
    gram, reference, store = computed
    assert isinstance(gram, DistributedGram)
    assert gram.shape == (N, N) and gram.n == N and gram.dtype == np.float32
    assert gram.tiles_total == 15 and gram.tiles_done == 15
    assert (gram.tiles_computed, gram.tiles_loaded, gram.tiles_recomputed) == (15, 0, 0)
    theta = gram.to_numpy()
    np.testing.assert_allclose(theta, reference, rtol=1e-6, atol=1e-7 * np.abs(reference).max())
    np.testing.assert_array_equal(theta, theta.T)


def test_store_layout_and_manifest(computed, mlp, data):
    gram, _, store = computed
    names = sorted(p.name for p in (store / "tiles").glob("*.npy"))
    assert names[0] == "tile_00000_00000.npy" and names[-1] == "tile_00004_00004.npy"
    assert len(names) == 15 and len(list((store / "tiles").iterdir())) == 30
    assert np.load(store / "tiles" / "tile_00001_00004.npy").shape == (16, 6)
    for name in names:  # each tile carries its checksum: crc32 of the file, 8 hex digits
        tile = store / "tiles" / name
        assert (store / "tiles" / f"{name}.crc32").read_text() == f"{crc32_file(tile):08x}\n"
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["n"] == N and manifest["tile_size"] == TILE and manifest["dtype"] == "float32"
    assert manifest["method"] == gram.method == "structured"
    assert manifest["model_id"] == "mlp 16x16" and manifest["format_version"] == 1
    assert manifest["dataset_fingerprint"] == dataset_fingerprint(data)
    assert manifest["params_fingerprint"] == params_fingerprint(mlp[1])


def test_matmat_matvec_and_tiles(computed):
    gram, reference, _ = computed
    dense = gram.to_numpy().astype(np.float64)
    v = np.random.default_rng(1).standard_normal((N, 3))
    out = gram.matmat(v)
    assert out.shape == (N, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out, dense @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gram.matvec(v[:, 0]), dense @ v[:, 0], rtol=1e-12, atol=1e-12)
    fast = gram.matmat(v.astype(np.float32))  # float32 products, float64 accumulation
    assert fast.dtype == np.float64
    np.testing.assert_allclose(fast, dense @ v.astype(np.float32), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(gram.tile(3, 1), dense[48:64, 16:32].astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \(70, b\)"):
        gram.matmat(np.ones((N + 1, 2)))
    with pytest.raises(ValueError, match=r"shape \(70,\)"):
        gram.matvec(np.ones((N, 1)))


def test_to_numpy_refuses_when_memory_is_short(computed, monkeypatch):
    gram, _, _ = computed
    monkeypatch.setattr("raysweep.distributed.handle.available_memory_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match="GiB is available"):
        gram.to_numpy()
    out = np.zeros((N, N), np.float32)  # an explicit out (e.g. a memmap) skips the check
    assert gram.to_numpy(out=out) is out


def test_dense_eigenpairs_of_a_handle_never_hold_the_gram_twice(ray_cluster, mlp, data, tmp_path):
    """LAPACK needs the dense matrix in the driver: the workers drop their resident tiles
    first, and products keep working by streaming the tiles from the store."""
    from raysweep.eigen import top_eigenpairs

    with compute_gram(
        *mlp, data, store_dir=tmp_path, tile_size=TILE, num_workers=2, progress=False
    ) as gram:
        assert sum(w["resident_tiles"] for w in gram.worker_info()) == 15
        pairs = top_eigenpairs(gram, 4, method="dense")
        assert sum(w["resident_tiles"] for w in gram.worker_info()) == 0
        dense = gram.to_numpy().astype(np.float64)
        expected = np.linalg.eigvalsh(dense)[::-1][:4]
        np.testing.assert_allclose(pairs.eigvals, expected, rtol=1e-5)
        v = np.random.default_rng(2).standard_normal((N, 2))
        np.testing.assert_allclose(gram.matmat(v), dense @ v, rtol=1e-12, atol=1e-12)
        assert gram.release_resident() == 0  # idempotent


# ----------------------------------------------------------------- resumption and identity


def test_resume_recomputes_only_missing_tiles(computed, mlp, data, tmp_path):
    gram, _, store = computed
    resumed_dir = tmp_path / "store"
    shutil.copytree(store, resumed_dir)  # a store "interrupted" after 12 of 15 tiles
    for name in ("tile_00000_00000.npy", "tile_00001_00003.npy", "tile_00004_00004.npy"):
        (resumed_dir / "tiles" / name).unlink()
    apply_fn, params = mlp
    with compute_gram(
        apply_fn,
        params,
        data,
        store_dir=resumed_dir,
        tile_size=TILE,
        num_workers=1,
        model_id="mlp 16x16",
        progress=False,
        keep_resident=False,
    ) as resumed:
        assert (resumed.tiles_computed, resumed.tiles_loaded, resumed.tiles_recomputed) == (
            3,
            12,
            0,
        )
        np.testing.assert_array_equal(resumed.to_numpy(), gram.to_numpy())
        v = np.random.default_rng(2).standard_normal((N, 2))
        np.testing.assert_allclose(resumed.matmat(v), gram.matmat(v), rtol=1e-12)
        # Streamed tiles (keep_resident=False) are verified at each read: a tile damaged now
        # is named, not a worker traceback, and cannot be recomputed by a product.
        path = resumed_dir / "tiles" / "tile_00002_00003.npy"
        np.save(path, np.zeros((TILE, TILE), np.float32))
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: checksum mismatch"):
            resumed.matmat(v)


def zero_tile(path):
    """Overwrite a tile with zeros of the same shape: same size, a valid .npy, wrong values."""
    size = path.stat().st_size
    np.save(path, np.zeros_like(np.load(path)))
    assert path.stat().st_size == size


def test_damaged_tiles_are_named_and_recomputed(computed, mlp, data, tmp_path):
    gram, _, store = computed
    damaged_dir = tmp_path / "store"
    shutil.copytree(store, damaged_dir)
    tiles = damaged_dir / "tiles"
    zeroed, truncated, unchecked = (
        tiles / "tile_00000_00002.npy",
        tiles / "tile_00001_00003.npy",
        tiles / "tile_00004_00004.npy",
    )
    zero_tile(zeroed)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    Path(f"{unchecked}.crc32").unlink()
    lines = []
    with compute_gram(
        *mlp, data, store_dir=damaged_dir, tile_size=TILE, num_workers=1, model_id="mlp 16x16",
        progress=False, log=lines.append,
    ) as repaired:  # fmt: skip
        # Counted from the worker's own reports: the 12 intact tiles were loaded, not computed.
        assert (repaired.tiles_computed, repaired.tiles_loaded, repaired.tiles_recomputed) == (
            0,
            12,
            3,
        )
        size = (store / "tiles" / truncated.name).stat().st_size  # before truncation
        assert len(lines) == 3 and all(line.endswith("; recomputed") for line in lines)
        by_tile = {line.split(" at ")[0]: line for line in lines}
        assert by_tile["[gram] tile (0, 2)"].startswith(
            f"[gram] tile (0, 2) at {zeroed}: checksum mismatch (the file's crc32 is "
        )
        assert by_tile["[gram] tile (1, 3)"].startswith(
            f"[gram] tile (1, 3) at {truncated}: truncated or unreadable ({size - 100} bytes; "
        )
        assert by_tile["[gram] tile (4, 4)"].startswith(
            f"[gram] tile (4, 4) at {unchecked}: no checksum file tile_00004_00004.npy.crc32"
        )
        np.testing.assert_array_equal(repaired.to_numpy(), gram.to_numpy())
        for path in (zeroed, truncated, unchecked):  # rewritten with their checksums
            assert path.read_bytes() == (store / "tiles" / path.name).read_bytes()
            assert Path(f"{path}.crc32").read_text() == f"{crc32_file(path):08x}\n"

        # A tile damaged while resident is caught when a replacement worker reloads it.
        zero_tile(tiles / "tile_00002_00002.npy")
        lines.clear()
        ray.kill(repaired._pool.actors[0])
        v = np.random.default_rng(6).standard_normal((N, 2))
        np.testing.assert_allclose(repaired.matmat(v), gram.matmat(v), rtol=1e-12)
        assert len(lines) == 1 and lines[0].startswith(
            f"[gram] tile (2, 2) at {tiles / 'tile_00002_00002.npy'}: checksum mismatch"
        )
        np.testing.assert_array_equal(repaired.tile(2, 2), gram.tile(2, 2))

        # Driver-side reads cannot recompute: they name the file and say what to do.
        zero_tile(zeroed)
        message = rf"tile \(0, 2\) at {re.escape(str(zeroed))}: checksum mismatch.*compute_gram"
        with pytest.raises(ValueError, match=message):
            repaired.to_numpy()
        with pytest.raises(ValueError, match=message):
            repaired.tile(2, 0)


KILLED_DRIVER = """
import os, signal, sys
import numpy as np
from raysweep.distributed import compute_gram, ensure_ray
from raysweep.models import get_model, init_variables, make_apply_fn

ensure_ray()  # joins the test's cluster through RAY_ADDRESS
module = get_model("mlp", hidden_sizes=(16, 16))
variables = init_variables(module, (8, 8, 1), seed=0)
x = np.random.default_rng(0).standard_normal((70, 8, 8, 1)).astype(np.float32)

def die(event):  # the driver is SIGKILLed after its first finished row panel
    os.kill(os.getpid(), signal.SIGKILL)

compute_gram(make_apply_fn(module, variables), variables["params"], x, store_dir=sys.argv[1],
             tile_size=16, num_workers=2, model_id="mlp 16x16", on_panel_done=die)
"""


def test_killed_driver_resumes_from_the_store(computed, mlp, data, tmp_path):
    gram, _, _ = computed
    store = tmp_path / "store"
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_DRIVER, str(store)], env=env, capture_output=True, timeout=240
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    on_disk = len(list((store / "tiles").glob("tile_*.npy")))
    assert 0 < on_disk < 15
    with compute_gram(
        *mlp, data, store_dir=store, tile_size=TILE, num_workers=1, model_id="mlp 16x16",
        progress=False,
    ) as resumed:  # fmt: skip
        assert (resumed.tiles_loaded, resumed.tiles_computed, resumed.tiles_recomputed) == (
            on_disk,
            15 - on_disk,
            0,
        )
        np.testing.assert_array_equal(resumed.to_numpy(), gram.to_numpy())


def test_store_of_other_inputs_is_refused(computed, mlp, data):
    _, _, store = computed
    apply_fn, params = mlp
    other_params = jax.tree_util.tree_map(lambda a: a * 1.01, params)
    kwargs = dict(store_dir=store, tile_size=TILE, model_id="mlp 16x16", progress=False)
    with pytest.raises(ValueError, match="params_fingerprint.*another store_dir"):
        compute_gram(apply_fn, other_params, data, **kwargs)
    with pytest.raises(ValueError, match="dataset_fingerprint"):
        compute_gram(apply_fn, params, data[::-1], **kwargs)
    with pytest.raises(ValueError, match=r"model_id: store has \"mlp 16x16\""):
        compute_gram(apply_fn, params, data, **{**kwargs, "model_id": "lenet5"})
    with pytest.raises(ValueError, match="tile_size"):
        compute_gram(apply_fn, params, data, **{**kwargs, "tile_size": 32})
    assert len(list((store / "tiles").iterdir())) == 30  # untouched: 15 tiles, 15 checksums


def test_unrelated_nonempty_directory_is_refused(mlp, data, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="no manifest.json"):
        compute_gram(*mlp, data, store_dir=tmp_path, tile_size=TILE, progress=False)


# ----------------------------------------------------------------- fault tolerance


def test_worker_killed_mid_run_gives_identical_matrix(computed, mlp, data, tmp_path, capfd):
    gram, _, _ = computed
    killed = []
    kwargs = dict(store_dir=tmp_path / "store", tile_size=TILE, model_id="mlp 16x16")

    def kill_first_finisher(event):
        # The driver already handed this worker its next panel: kill it while that panel is in
        # flight and with a finished panel resident.
        if not killed:
            killed.append(event.panel)
            ray.kill(event.actor)

    with compute_gram(
        *mlp, data, num_workers=2, on_panel_done=kill_first_finisher, **kwargs
    ) as survivor:
        assert killed and survivor.worker_restarts == 1
        # The dead worker's resident panel was reloaded ("stored") by its successor, and tiles
        # it wrote unreported were found "stored": each tile still counts once, as computed.
        assert survivor.tiles_done == 15
        assert (survivor.tiles_computed, survivor.tiles_loaded, survivor.tiles_recomputed) == (
            15,
            0,
            0,
        )
        np.testing.assert_array_equal(survivor.to_numpy(), gram.to_numpy())  # bit-identical
        v = np.random.default_rng(4).standard_normal((N, 2))
        np.testing.assert_allclose(survivor.matmat(v), gram.matmat(v), rtol=1e-12)
    assert "NTK Gram" in capfd.readouterr().err  # the progress bar
    # Every tile written around the failure is intact and verifiable: nothing is recomputed.
    with compute_gram(*mlp, data, num_workers=1, progress=False, **kwargs) as again:
        assert (again.tiles_computed, again.tiles_loaded, again.tiles_recomputed) == (0, 15, 0)


def one_worker_gram(apply_fn, params, x, store_dir, **options) -> tuple[str, int, np.ndarray]:
    """(method, tiles computed, Θ) of a one-worker distributed Gram of ``x``."""
    with compute_gram(
        apply_fn,
        params,
        x,
        store_dir=store_dir,
        tile_size=TILE,
        num_workers=1,
        progress=False,
        **options,
    ) as gram:
        return gram.method, gram.tiles_computed, gram.to_numpy()


def test_pure_jax_model_contraction(ray_cluster, tmp_path):
    apply_fn, params = tanh_mlp()
    x = np.random.default_rng(3).standard_normal((40, 8, 8, 1)).astype(np.float32)
    method, tiles, theta = one_worker_gram(
        apply_fn, params, x, tmp_path / "store", method="contraction"
    )
    assert method == "contraction" and tiles == 6
    reference = ntk_gram(apply_fn, params, x, method="contraction", batch_size=TILE)
    np.testing.assert_allclose(theta, reference, rtol=1e-6, atol=1e-7 * np.abs(reference).max())


def test_conv_model_through_the_structured_path_matches_brute_force(ray_cluster, tmp_path):
    """Convolution kernels (from patches) and dense layers (factored) on a Gram worker."""
    from jax.flatten_util import ravel_pytree

    module = get_model("lenet5", activation="gelu")
    variables = init_variables(module, (8, 8, 1), seed=2)
    apply_fn, params = make_apply_fn(module, variables), variables["params"]
    x = np.random.default_rng(5).standard_normal((40, 8, 8, 1)).astype(np.float32)
    method, tiles, theta = one_worker_gram(apply_fn, params, x, tmp_path / "store")
    assert method == "structured" and tiles == 6
    flat, unravel = ravel_pytree(params)
    jac = np.asarray(jax.jacobian(lambda p: apply_fn(unravel(p), x)[:, 0])(flat), np.float64)
    expected = jac @ jac.T
    assert np.max(np.abs(theta - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_traced_gram_of_ten_logits_equals_empirical_ntk_fn(ray_cluster, tmp_path):
    """A 10-logit LeNet5 on two workers: the traced kernel (mean over the logits), its store
    records C = 10 and resumes, and the eigen step runs on it through the handle."""
    from raysweep.eigen import top_eigenpairs
    from raysweep.ntk import empirical_ntk_fn

    module = get_model("lenet5", outputs=10)
    variables = init_variables(module, (8, 8, 1), seed=3)
    apply_fn, params = make_apply_fn(module, variables), variables["params"]
    x = np.random.default_rng(6).standard_normal((40, 8, 8, 1)).astype(np.float32)
    expected = empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=1)(x, None, params)
    store = tmp_path / "store"
    options = dict(store_dir=store, tile_size=TILE, num_workers=2, progress=False)
    with compute_gram(apply_fn, params, x, **options) as gram:
        assert gram.method == "structured" and gram.shape == (40, 40)
        theta = gram.to_numpy()
        vals, vecs = top_eigenpairs(gram, 4, method="block")
    scale = np.abs(expected).max()
    assert np.abs(theta - expected).max() <= 1e-5 * scale
    np.testing.assert_array_equal(theta, theta.T)
    want = np.linalg.eigvalsh(expected.astype(np.float64))[::-1][:4]
    np.testing.assert_allclose(vals, want, rtol=0, atol=1e-5 * scale)
    residual = expected @ vecs.T - vecs.T * vals
    assert np.abs(residual).max() <= 1e-4 * scale
    assert json.loads((store / "manifest.json").read_text())["outputs"] == 10
    with compute_gram(apply_fn, params, x, **options) as again:  # resumed: every tile verified
        assert (again.tiles_computed, again.tiles_loaded) == (0, 6)
        np.testing.assert_array_equal(again.to_numpy(), theta)
    with pytest.raises(ValueError, match=r"shape \(n, C\).*returned \(1, 2, 5\)"):
        compute_gram(lambda p, v: apply_fn(p, v).reshape(-1, 2, 5), params, x, **options)


def test_manifest_without_outputs_reads_as_one_logit(tmp_path):
    """Stores written before the ``outputs`` field reopen for one-logit models only."""
    fields = dict(
        n=20, tile_size=8, dtype=np.float32, method="structured", precision="highest",
        example_shape=(8, 8, 1), dataset_fingerprint="d", params_fingerprint="p", model_id="",
    )  # fmt: skip
    TileStore.open_or_create(tmp_path / "t", TileStore.make_manifest(**fields))
    path = tmp_path / "t" / "manifest.json"
    old = json.loads(path.read_text())
    del old["outputs"]
    path.write_text(json.dumps(old))
    assert TileStore.open_or_create(tmp_path / "t", TileStore.make_manifest(**fields)).n == 20
    with pytest.raises(ValueError, match="outputs: store has 1, this call has 10"):
        TileStore.open_or_create(tmp_path / "t", TileStore.make_manifest(**fields, outputs=10))


def test_worker_killed_before_matmat_is_recovered(computed):
    gram, _, _ = computed
    dense = gram.to_numpy().astype(np.float64)
    restarts = gram.worker_restarts
    ray.kill(gram._pool.actors[0])
    v = np.random.default_rng(5).standard_normal((N, 2))
    np.testing.assert_allclose(gram.matmat(v), dense @ v, rtol=1e-12, atol=1e-12)
    assert gram.worker_restarts == restarts + 1 and gram.num_workers == 2


# ----------------------------------------------------------------- validation and helpers


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"tile_size": 0}, ValueError, "tile_size must be a positive integer"),
        ({"tile_size": -4}, ValueError, "tile_size must be a positive integer"),
        ({"tile_size": 2.5}, TypeError, "tile_size must be a positive integer"),
        ({"num_workers": 0}, ValueError, "num_workers must be a positive integer"),
        ({"num_workers": 5}, ValueError, "only 4 CPU slot"),
        ({"method": "fast"}, ValueError, "method='fast' is not supported"),
        (
            {"max_worker_restarts": -1},
            ValueError,
            "max_worker_restarts must be a non-negative integer",
        ),
    ],
)
def test_bad_arguments_fail_before_workers_start(
    ray_cluster, mlp, data, tmp_path, change, error, match
):
    kwargs = {"store_dir": tmp_path / "s", "tile_size": TILE, "progress": False, **change}
    with pytest.raises(error, match=match):
        compute_gram(*mlp, data, **kwargs)


def test_bad_inputs_fail_before_anything_is_written(mlp, data, tmp_path):
    store = tmp_path / "s"
    with pytest.raises(ValueError, match="is empty"):
        compute_gram(*mlp, data[:0], store_dir=store, tile_size=TILE)
    with pytest.raises(TypeError, match="floating point"):
        compute_gram(*mlp, data.astype(np.int32), store_dir=store, tile_size=TILE)
    with pytest.raises(ValueError, match=r"logits of shape \(n, C\).*returned \(1, 8, 8\)"):
        compute_gram(lambda p, x: x.reshape(x.shape[0], 8, -1), mlp[1], data, store_dir=store)
    assert not store.exists()


def test_worker_layout_one_actor_per_gpu(monkeypatch):
    nodes = [
        {"Alive": True, "Resources": {"CPU": 64.0}},  # CPU-only head node
        {"Alive": True, "Resources": {"CPU": 32.0, "GPU": 4.0}},
        {"Alive": True, "Resources": {"CPU": 24.0, "GPU": 4.0}},
    ]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 120.0, "GPU": 8.0})
    layout = worker_layout(None, num_panels=59)
    assert (layout.device, layout.num_workers, layout.slots) == ("gpu", 8, 8)
    assert layout.options["num_gpus"] == 1 and layout.options["num_cpus"] == 6
    assert layout.options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "6"
    assert worker_layout(None, num_panels=3).num_workers == 3  # never more than panels
    with pytest.raises(ValueError, match="only 8 GPU slot"):
        worker_layout(9, num_panels=59)


def test_ensure_ray_is_idempotent(ray_cluster):
    assert ray.is_initialized()
    assert ensure_ray() is False


def test_fingerprints_and_atomic_tiles(mlp, data, tmp_path):
    params = mlp[1]
    copy = jax.tree_util.tree_map(np.array, params)
    assert params_fingerprint(params) == params_fingerprint(copy)
    copy["Dense_0"]["bias"][0] += 1e-7
    assert params_fingerprint(params) != params_fingerprint(copy)
    assert dataset_fingerprint(data) != dataset_fingerprint(data.reshape(N, 64, 1, 1))
    manifest = TileStore.make_manifest(
        n=20, tile_size=8, dtype=np.float32, method="structured", precision="highest",
        example_shape=(8, 8, 1), dataset_fingerprint="d", params_fingerprint="p", model_id="",
    )  # fmt: skip
    store = TileStore.open_or_create(tmp_path / "t", manifest)
    assert store.num_blocks == 3 and store.tiles_total == 6 and store.done_tiles() == set()
    store.save(1, 2, np.ones((8, 4), np.float32))
    assert store.done_tiles() == {(1, 2)} and sorted(p.name for p in store.tiles_dir.iterdir()) == [
        "tile_00001_00002.npy",
        "tile_00001_00002.npy.crc32",
    ]  # the tile, its checksum, and no temporary file left behind
    with pytest.raises(ValueError, match=r"must be \(8, 8\) float32"):
        store.save(0, 0, np.ones((8, 8), np.float64))
    assert TileStore.open_or_create(tmp_path / "t", manifest).done_tiles() == {(1, 2)}


def test_tile_store_verifies_each_tile_it_reads(tmp_path):
    manifest = TileStore.make_manifest(
        n=20, tile_size=8, dtype=np.float32, method="structured", precision="highest",
        example_shape=(8, 8, 1), dataset_fingerprint="d", params_fingerprint="p", model_id="",
    )  # fmt: skip
    store = TileStore.open_or_create(tmp_path / "t", manifest)
    tile = np.arange(32, dtype=np.float32).reshape(8, 4)
    store.save(1, 2, tile)
    path, checksum = store.tile_path(1, 2), store.checksum_path(1, 2)
    assert checksum.read_text() == f"{crc32_file(path):08x}\n"
    np.testing.assert_array_equal(store.load(1, 2), tile)
    original = path.read_bytes()

    def damaged(match):
        with pytest.raises(DamagedTileError, match=match) as info:
            store.load(1, 2)
        assert (info.value.i, info.value.j, info.value.path) == (1, 2, str(path))
        assert "compute_gram again" in str(info.value)
        return info.value

    np.save(path, np.zeros_like(tile))  # same size, valid .npy, other values
    assert len(path.read_bytes()) == len(original)
    damaged(rf"{re.escape(str(path))}: checksum mismatch \(the file's crc32 is [0-9a-f]{{8}}, ")
    path.write_bytes(original[:-10])
    damaged(rf"truncated or unreadable \({len(original) - 10} bytes; numpy: ")
    path.write_bytes(b"")
    damaged(r"truncated or unreadable \(0 bytes; ")
    np.save(path, np.zeros((4, 8), np.float32))
    damaged(r"wrong shape or dtype \(expected \(8, 4\) float32, found \(4, 8\) float32\)")
    path.write_bytes(original)
    np.testing.assert_array_equal(store.load(1, 2), tile)  # intact again
    checksum.write_text("not hex\n")
    damaged(r"checksum file tile_00001_00002.npy.crc32 holds 'not hex', not a hex crc32")
    checksum.unlink()
    err = damaged(r"no checksum file tile_00001_00002.npy.crc32 .* unverified")
    path.unlink()
    damaged(r"the file is missing")
    # Raised in a Ray worker, it reaches the driver with its fields intact.
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is DamagedTileError and str(again) == str(err)
