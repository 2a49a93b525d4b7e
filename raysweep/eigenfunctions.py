"""The eigenfunction step: Gram Θ₀ of the initial network → top-k eigenpairs → artifact.

An *eigenfunction artifact* is one directory that holds everything needed to rebuild the
labels and the model of an eigenfunction experiment exactly:

    eigvals.npy        (k,) float64, descending
    eigvecs.npy        (k, N) float32, unit rows; column order = dataset order below
    residuals.npy      (k,) float64, ‖Θ₀ v − λ v‖₂ of every pair
    binarization.npy   (k,) float64, ⟨sign(φ)/√N, φ⟩ (the paper reports ≈ 0.78)
    dataset.json       dataset manifest: name, sizes, order (train then test), indices,
                       normalization statistics
    variables.msgpack  initial Flax variables θ₀ (flax.serialization)
    config.json        the resolved Config
    meta.json          solver, timings, fingerprints, versions

The directory is written under a temporary name and renamed into place, so a crash never
leaves a half-written artifact. Labels of eigenfunction j are ``sign(φ_j)`` with sign(0) = +1,
split back into the train part (first ``num_train`` columns) and the test part.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from raysweep.atomic import replace_dir, temp_name
from raysweep.config import Config, config_from_dict, save_config
from raysweep.data import Dataset, load_dataset
from raysweep.eigen import binarization_diagnostic, eigen_labels, top_eigenpairs
from raysweep.models import get_model, init_variables, make_apply_fn

ARTIFACT_FILES = (
    "eigvals.npy",
    "eigvecs.npy",
    "residuals.npy",
    "binarization.npy",
    "dataset.json",
    "variables.msgpack",
    "config.json",
    "meta.json",
)


def _model_for(config: Config, input_shape):
    module = get_model(config.model.name, activation=config.model.activation)
    variables = init_variables(module, tuple(input_shape), seed=config.model.seed)
    return module, variables


def _dataset_for(config: Config) -> Dataset:
    return load_dataset(
        config.data.name,
        config.data.root,
        num_train=config.data.num_train,
        num_test=config.data.num_test,
        seed=config.data.seed,
    )


@dataclass(frozen=True)
class EigenArtifact:
    """A loaded eigenfunction artifact (see the module docstring for the files)."""

    path: Path
    config: Config
    manifest: dict[str, Any]
    eigvals: np.ndarray
    eigvecs: np.ndarray
    residuals: np.ndarray
    binarization: np.ndarray
    variables: dict
    meta: dict[str, Any]

    @property
    def num_train(self) -> int:
        return int(self.manifest["num_train"])

    @property
    def num_eigen(self) -> int:
        return int(self.eigvecs.shape[0])

    def labels(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """±1 float32 labels sign(φ_j) for (train, test), sign(0) = +1."""
        y = eigen_labels(self.eigvecs, j)
        return y[: self.num_train], y[self.num_train :]

    def model(self):
        """(module, variables, apply_fn) with the saved initial variables θ₀."""
        module = get_model(self.config.model.name, activation=self.config.model.activation)
        return module, self.variables, make_apply_fn(module, self.variables)

    def dataset(self) -> Dataset:
        """Reload the dataset and check it is the one the eigenvectors were computed on."""
        ds = _dataset_for(self.config)
        check_manifest(ds.manifest(), self.manifest)
        return ds


def check_manifest(found: dict, expected: dict) -> None:
    """Raise ``ValueError`` naming the fields where a reloaded dataset differs."""
    keys = ("name", "num_train", "num_test", "train_indices", "test_indices", "mean", "std")
    differ = []
    for key in keys:
        a, b = found.get(key), expected.get(key)
        if isinstance(a, list) and isinstance(b, list) and key in ("mean", "std"):
            same = np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-6, atol=0)
        else:
            same = a == b
        if not same:
            differ.append(key)
    if differ:
        raise ValueError(
            f"The dataset loaded now differs from the one the eigenvectors were computed on "
            f"(fields: {', '.join(differ)}). Point data.root at the same files, or recompute "
            "the eigenfunctions."
        )


def save_artifact(
    path: str | os.PathLike, *, config: Config, manifest: dict, pairs, variables: dict, meta: dict
) -> Path:
    """Write an artifact directory atomically (temporary directory, then rename)."""
    path = Path(path)
    tmp = temp_name(path)
    tmp.mkdir(parents=True)
    eigvecs = np.asarray(pairs.eigvecs, dtype=np.float32)
    np.save(tmp / "eigvals.npy", np.asarray(pairs.eigvals, dtype=np.float64))
    np.save(tmp / "eigvecs.npy", eigvecs)
    np.save(tmp / "residuals.npy", np.asarray(pairs.residuals, dtype=np.float64))
    np.save(tmp / "binarization.npy", binarization_diagnostic(eigvecs).astype(np.float64))
    (tmp / "dataset.json").write_text(json.dumps(manifest, indent=1))
    (tmp / "variables.msgpack").write_bytes(flax.serialization.to_bytes(variables))
    save_config(config, tmp / "config.json")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return replace_dir(tmp, path)


def load_artifact(path: str | os.PathLike) -> EigenArtifact:
    """Load an artifact written by :func:`save_artifact` / :func:`compute_eigenfunctions`."""
    path = Path(path)
    missing = [name for name in ARTIFACT_FILES if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a complete eigenfunction artifact: missing {', '.join(missing)}. "
            "Run the eigenfunction step (python sweeps/eigen_sweep.py) to create it."
        )
    config = config_from_dict(json.loads((path / "config.json").read_text()))
    manifest = json.loads((path / "dataset.json").read_text())
    variables = flax.serialization.msgpack_restore((path / "variables.msgpack").read_bytes())
    return EigenArtifact(
        path=path,
        config=config,
        manifest=manifest,
        eigvals=np.load(path / "eigvals.npy"),
        eigvecs=np.load(path / "eigvecs.npy"),
        residuals=np.load(path / "residuals.npy"),
        binarization=np.load(path / "binarization.npy"),
        variables=jax.tree_util.tree_map(np.asarray, variables),
        meta=json.loads((path / "meta.json").read_text()),
    )


def config_gram(config: Config, apply_fn, params, x, *, store_dir, model_id: str, progress: bool):
    """:func:`raysweep.distributed.compute_gram` with the settings of ``config.ntk``."""
    from raysweep.distributed import compute_gram

    return compute_gram(
        apply_fn,
        params,
        x,
        store_dir=store_dir,
        tile_size=config.ntk.tile_size,
        num_workers=config.ntk.num_workers,
        method=config.ntk.method,
        memory_budget_mb=config.ntk.memory_budget_mb,
        model_id=model_id,
        progress=progress,
    )


def _same_setup(a: Config, b: Config) -> bool:
    return a.data == b.data and a.model == b.model and a.ntk == b.ntk


def compute_eigenfunctions(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    log=print,
) -> EigenArtifact:
    """Compute (or reuse) the eigenfunction artifact of ``config`` under ``out_dir``.

    ``out_dir/eigenfunctions`` is the artifact, ``out_dir/gram`` the resumable tile store.
    An existing artifact with the same data, model and NTK settings is loaded, not recomputed;
    an interrupted Gram resumes from its finished tiles.
    """
    from raysweep.distributed import ensure_ray

    out_dir = Path(out_dir)
    target = out_dir / "eigenfunctions"
    if (target / "meta.json").exists():
        existing = load_artifact(target)
        if _same_setup(existing.config, config):
            log(f"[eigen] reusing {target}")
            return existing
        raise ValueError(
            f"{target} holds eigenfunctions of another setup (data/model/ntk differ). Use "
            "another results directory or delete that one."
        )

    ds = _dataset_for(config)
    ensure_ray()  # before JAX starts its threads: Ray forks its processes
    x_all, _ = ds.concatenated()
    n = x_all.shape[0]
    k = config.ntk.num_eigen
    if k >= n:
        raise ValueError(
            f"ntk.num_eigen={k} must be smaller than the number of samples N={n} "
            f"({ds.num_train} train + {ds.num_test} test); lower ntk.num_eigen."
        )
    module, variables = _model_for(config, ds.input_shape)
    apply_fn = make_apply_fn(module, variables)
    log(
        f"[eigen] {ds.name}: N={n} ({ds.num_train} train + {ds.num_test} test), "
        f"model {config.model.name}/{config.model.activation}, top k={k}"
    )

    start = time.perf_counter()
    model_id = f"{config.model.name}/{config.model.activation}/seed={config.model.seed}"
    with config_gram(
        config,
        apply_fn,
        variables["params"],
        x_all,
        store_dir=out_dir / "gram",
        model_id=model_id,
        progress=progress,
    ) as gram:
        gram_seconds = time.perf_counter() - start
        log(
            f"[eigen] Gram {n}x{n} ready in {gram_seconds:.1f} s; eigensolver "
            f"{config.ntk.eigen_method}"
        )
        start = time.perf_counter()
        pairs = top_eigenpairs(gram, k, method=config.ntk.eigen_method)
        eigen_seconds = time.perf_counter() - start
    meta = {
        "gram_seconds": gram_seconds,
        "eigen_seconds": eigen_seconds,
        "eigen_method": pairs.method,
        "eigen_iterations": int(getattr(pairs, "iterations", 0) or 0),
        "max_relative_residual": float(np.max(pairs.residuals) / pairs.eigvals[0]),
        "N": int(n),
        "k": int(k),
        "jax": jax.__version__,
    }
    save_artifact(
        target, config=config, manifest=ds.manifest(), pairs=pairs, variables=variables, meta=meta
    )
    log(
        f"[eigen] {k} eigenpairs in {eigen_seconds:.1f} s ({pairs.method}); max residual "
        f"{meta['max_relative_residual']:.1e}·λ_max; artifact {target}"
    )
    return load_artifact(target)
