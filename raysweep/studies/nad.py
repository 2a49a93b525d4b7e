"""The NAD experiment (Appendix C of the paper) as a study: NADs per model, then the sweep.

For every artifact-level point of the config's grid (``model.name``, ``model.seed``,
``nad.*``, ``data.*``; e.g. ``grid.model.name=lenet5,resnet18``) the model is initialized
(GeLU for the built-in models in the presets) for a ``nad.input_size``² × ``nad.channels``
input and its top ``nad.k`` NADs are computed at the origin (:func:`raysweep.nads.nads`,
matrix-free): a :class:`NADArtifact` in ``<out>/nads/<key>/`` (``nads.npz``,
``variables.msgpack``, ``config.json`` written last), with its figure
``<out>/figures/nads_<key>.png``. An artifact already there with the same config is reused.

Then the sweep is the eigen sweep's (:func:`raysweep.sweep.run_sweep`: one Tuner, the
metrics store, resume, progress, trial ids): the eigen-indices are NAD indices j, each pack
holds targets of one j (their inputs D(u_j) depend on it; ``sweep.pack_size`` packs seeds and
learning rates of one j), and a trial builds D(u_j), x = ε·y·u_j + w with
w ~ N(0, σ(I − u_j u_jᵀ)) (:func:`raysweep.nads.nad_dataset`; ``data.num_train``,
``data.num_test``, ``data.seed``), from its artifact's payload (:meth:`NADArtifact.trial_payload`).

Results: ``metrics/`` (``dataset`` column ``"nad"``, ``eigen_index`` the NAD index),
``figures/accuracy_vs_nad_index[_<optimizer>].png``, ``analysis/nads.npz`` (the first model's
NADs, for ``raysweep report``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.serialization
import numpy as np

from raysweep.atomic import atomic_write, atomic_write_json
from raysweep.config import NAD_DATA, Config, config_from_dict

__all__ = ["NAD_DIR", "NADArtifact", "NADStudy", "compute_nads", "load_nads", "nad_study"]

NAD_DIR = "nads"
"""Folder of the NAD artifacts in a results folder."""


@dataclass(frozen=True)
class NADArtifact:
    """The NADs of one model at one grid point: what the NAD trials of that point train on.

    ``config``: the point's config (artifact-level fields resolved); ``eigvals`` ``(k,)`` σᵢ²,
    descending; ``directions`` ``(k, d)`` float32 unit NADs; ``variables``: θ₀ they were
    computed at; ``path``: its folder.
    """

    path: Path
    config: Config
    eigvals: np.ndarray
    directions: np.ndarray
    residuals: np.ndarray
    variables: dict
    method: str
    products: int
    seconds: float

    @property
    def num_eigen(self) -> int:
        """k, the number of NADs (the NAD indices of a sweep are below it)."""
        return int(self.eigvals.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.config.nad.input_shape

    @property
    def manifest(self) -> dict[str, Any]:
        data = self.config.data
        return {"num_train": int(data.num_train), "num_test": int(data.num_test)}

    def trial_payload(self, indices: Sequence[int]) -> dict[str, Any]:
        """What the trials of this artifact receive (:func:`raysweep.sweep.trainable.pack_data`
        builds D(u_j) from it): the NADs of ``indices`` only, θ₀, the model and the data spec."""
        indices = sorted({int(j) for j in indices})
        data, nad = self.config.data, self.config.nad
        return {
            "kind": NAD_DATA,
            "eigen_indices": np.asarray(indices, dtype=np.int64),
            "directions": np.ascontiguousarray(self.directions[indices], dtype=np.float32),
            "input_shape": tuple(self.input_shape),
            "data": {
                "num_train": int(data.num_train),
                "num_test": int(data.num_test),
                "epsilon": float(nad.epsilon),
                "sigma": float(nad.sigma),
                "seed": int(data.seed),
            },
            "variables": self.variables,
            "model": self.config.model.name,
            "activation": self.config.model.activation,
            "model_config": dataclasses.asdict(self.config.model),
        }


def _check_nad_config(config: Config) -> None:
    if not isinstance(config, Config):
        raise TypeError(f"config must be a raysweep.config.Config, got {type(config).__name__}.")
    if not config.is_nad:
        raise ValueError(
            f"the NAD study needs data.name={NAD_DATA!r} (its data D(u_j) are built from the "
            f"NADs), got data.name={config.data.name!r}; start from --preset nad or nad_paper."
        )
    for name in ("num_train", "num_test"):
        if getattr(config.data, name) is None:
            raise ValueError(
                f"data.{name} must be a number of D(u_j) samples for the NAD study, got None "
                "(e.g. data.num_train=1000)."
            )


def _same(a: Config, b: Config) -> bool:
    """Equal on what the NADs depend on: the model and the NAD section."""
    return a.model == b.model and a.nad == b.nad


def load_nads(path: str | Path) -> NADArtifact:
    """Read a NAD artifact folder written by :func:`compute_nads`.

    Raises:
      FileNotFoundError: the folder has no ``config.json`` (not written, or interrupted).
    """
    path = Path(path)
    config = config_from_dict(json.loads((path / "config.json").read_text()))
    with np.load(path / "nads.npz") as f:
        arrays = {k: f[k] for k in f.files}
    variables = flax.serialization.msgpack_restore((path / "variables.msgpack").read_bytes())
    import jax

    return NADArtifact(
        path=path,
        config=config,
        eigvals=arrays["eigvals"],
        directions=arrays["directions"],
        residuals=arrays["residuals"],
        variables=jax.tree_util.tree_map(np.asarray, variables),
        method=str(arrays["method"]),
        products=int(arrays["products"]),
        seconds=float(arrays["seconds"]),
    )


def compute_nads(
    config: Config, out_dir: str | Path, key: str, *, log: Callable[[str], Any] = print
) -> NADArtifact:
    """The NADs of ``config``'s model at the origin, saved in ``<out_dir>/nads/<key>/``.

    Reuses the artifact there when it was computed with the same model and NAD settings.
    Also writes the figure ``<out_dir>/figures/nads_<key>.png`` (first 10 NADs in space and
    as Fourier magnitude, :func:`raysweep.analysis.plot_nads`).
    """
    from raysweep.analysis import plot_nads
    from raysweep.eigenfunctions import model_of
    from raysweep.models import count_params, init_variables, make_apply_fn
    from raysweep.nads import nads

    _check_nad_config(config)
    out_dir = Path(out_dir)
    path = out_dir / NAD_DIR / key
    if (path / "config.json").exists():
        found = load_nads(path)
        if _same(found.config, config):
            log(f"  {key}: reusing the {found.num_eigen} NADs in {path}")
            return found
        log(f"  {key}: the NADs in {path} are of another model or NAD setting; recomputing")
    shape = config.nad.input_shape
    t0 = time.perf_counter()
    module = model_of(config.model)
    variables = init_variables(module, shape, seed=config.model.seed)
    t1 = time.perf_counter()
    result = nads(
        make_apply_fn(module, variables),
        variables["params"],
        shape,
        config.nad.k,
        method=config.nad.method,
        activation=config.model.activation,
    )
    seconds = time.perf_counter() - t1
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").unlink(missing_ok=True)  # incomplete until it is written again
    arrays = {
        "eigvals": np.asarray(result.eigvals),
        "directions": np.asarray(result.directions, np.float32),
        "residuals": np.asarray(result.residuals),
        "input_shape": np.asarray(shape),
        "method": np.asarray(result.method),
        "products": np.asarray(result.products),
        "seconds": np.asarray(seconds),
    }
    atomic_write(path / "nads.npz", lambda fh: np.savez(fh, **arrays))
    atomic_write(
        path / "variables.msgpack", lambda fh: fh.write(flax.serialization.to_bytes(variables))
    )
    atomic_write_json(path / "config.json", config.to_dict(), indent=2)
    fig = plot_nads(result.eigvals, result.directions, shape, num=min(10, config.nad.k))
    atomic_write(
        out_dir / "figures" / f"nads_{key}.png", lambda fh: fig.savefig(fh, format="png", dpi=120)
    )
    rel = float(np.max(result.residuals) / result.eigvals[0]) if result.eigvals[0] > 0 else 0.0
    k = config.nad.k
    log(
        f"  {key}: P={count_params(variables['params']):,}, d={int(np.prod(shape))}, k={k} "
        f"NADs by {result.method} in {seconds:.1f} s ({result.products} products; init "
        f"{t1 - t0:.1f} s); σ²: {np.array2string(np.asarray(result.eigvals[:5]), precision=4)}"
        f"{' ...' if k > 5 else ''}; max residual/σ₁² {rel:.1e}"
    )
    return load_nads(path)


@dataclass(frozen=True)
class NADStudy:
    """What :func:`nad_study` returns: the artifacts, the sweep's summary, the metrics table
    and the figures written."""

    artifacts: tuple[NADArtifact, ...]
    summary: Any
    table: Any
    figures: tuple[Path, ...]


def nad_study(
    config: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> NADStudy:
    """NADs for every artifact point of ``config``'s grid, then network vs linearization on
    D(u_j) for every NAD index j of the grid (``sweep.eigen_indices`` or
    ``grid.train.eigen_index``), through :func:`raysweep.sweep.run_sweep`.

    Ray must be running (or is started locally by the sweep). Raises ``ValueError`` for a
    config that is not the NAD experiment, a NAD index ≥ ``nad.k`` or a grid the sweep refuses,
    before any trial starts.
    """
    from raysweep.distributed.cluster import check_results_dir
    from raysweep.lease import hold_results_dir
    from raysweep.sweep.grid import expand_grid

    _check_nad_config(config)
    grid = expand_grid(config)  # a bad grid stops here
    out_dir = check_results_dir(out_dir)
    with hold_results_dir(out_dir, purpose="raysweep.studies.nad_study"):
        return _nad_study(config, out_dir, grid, resume=resume, progress=progress, log=log)


def _nad_study(config: Config, out_dir: Path, grid, *, resume: bool, progress: bool, log):
    from raysweep.analysis import plot_accuracy_vs_index, save_nads
    from raysweep.store import read_metrics
    from raysweep.sweep import run_sweep

    shape = config.nad.input_shape
    log(f"1. NADs at the origin ({'x'.join(map(str, shape))}, {config.model.activation}):")
    artifacts = tuple(compute_nads(p.config, out_dir, p.key, log=log) for p in grid.artifacts)
    first = artifacts[0]
    save_nads(out_dir, first.eigvals, first.directions, first.input_shape)
    indices = sorted({j for t in grid.trials for j in t.eigen_indices})
    log(
        f"2. training on D(u_j) for j in {indices}: {config.data.num_train} train / "
        f"{config.data.num_test} test samples, {config.train.epochs} epochs"
    )
    summary = run_sweep(
        config, out_dir, artifacts=artifacts, resume=resume, progress=progress, log=log
    )
    table = read_metrics(out_dir)
    figures = []
    optimizers = [o for o in config.axes()["train.optimizer"]]
    for optimizer in optimizers:
        fig = plot_accuracy_vs_index(table, optimizer=optimizer)
        fig.suptitle("Final test accuracy on D(u_j), the linearly separable data of NAD j")
        for ax in fig.axes:
            ax.set_xlabel("NAD index j")
        suffix = "" if len(optimizers) == 1 else f"_{optimizer}"
        path = out_dir / "figures" / f"accuracy_vs_nad_index{suffix}.png"
        atomic_write(path, lambda fh, fig=fig: fig.savefig(fh, format="png", dpi=120))
        figures.append(path)
    return NADStudy(artifacts=artifacts, summary=summary, table=table, figures=tuple(figures))
