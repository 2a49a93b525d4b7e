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
    checksums.json     {"algorithm": "crc32", "files": {name: {"crc32": "8 hex digits",
                       "bytes": size}}} for every file above; written last

The directory is written under a temporary name and renamed into place, so a crash never
leaves a half-written artifact. :func:`load_artifact` checks every file against
``checksums.json`` once, when it loads the artifact, and raises :class:`DamagedArtifactError`
naming the file that was truncated or changed; :func:`compute_eigenfunctions` then moves the
damaged artifact aside (``eigenfunctions.damaged-<UTC time>``, never deleted) and recomputes it
from the kept Gram tiles. Artifacts written before checksums were kept (no ``checksums.json``)
still load, unverified.

Labels of eigenfunction j are ``sign(φ_j)`` with sign(0) = +1, split back into the train part
(first ``num_train`` columns) and the test part.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from raysweep.atomic import (
    atomic_write_json,
    available_memory_bytes,
    crc32_file,
    replace_dir,
    temp_name,
)
from raysweep.config import Config, ModelConfig, config_from_dict, save_config
from raysweep.data import Dataset, load_dataset
from raysweep.eigen import (
    PROGRESS_FILE,
    binarization_diagnostic,
    eigen_labels,
    progress_reporter,
    top_eigenpairs,
)
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
CHECKSUMS_FILE = "checksums.json"


class DamagedArtifactError(ValueError):
    """An eigenfunction artifact file that is truncated, changed or unreadable.

    Attributes:
      path: the artifact directory. file: the damaged file's name. reason: what is wrong.
    """

    def __init__(self, path, file: str, reason: str):
        self.path, self.file, self.reason = Path(path), str(file), str(reason)
        super().__init__(
            f"eigenfunction artifact {self.path} is damaged: {self.file} {self.reason}. Run the "
            "eigen step again on the same results folder (python sweeps/eigen_sweep.py, or "
            "raysweep.eigenfunctions.compute_eigenfunctions): it moves the damaged artifact "
            "aside and recomputes it from the Gram tiles kept beside it."
        )

    def __reduce__(self):  # pickled (e.g. by Ray) with its fields, not its message
        return (type(self), (self.path, self.file, self.reason))


def model_of(model: ModelConfig):
    """The module of a model config: a built-in model (``model.options`` are its keyword
    options; ``model.zero_init_residual=false`` reaches ResNet18 as its option) or your own
    from its import path, options, train flag and output index
    (:func:`raysweep.models.get_model`)."""
    options = model.options
    if model.name == "resnet18" and not model.zero_init_residual:
        options = json.dumps({**json.loads(model.options), "zero_init_residual": False})
    return get_model(
        model.name,
        activation=model.activation,
        options=options,
        train_flag=model.train_flag,
        output_index=model.output_index,
    )


def _model_for(config: Config, input_shape):
    module = model_of(config.model)
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


def check_num_eigen(config: Config, ds: Dataset) -> None:
    """Raise ``ValueError`` unless ``ntk.num_eigen`` k is smaller than N, the dataset's size."""
    k, n = config.ntk.num_eigen, ds.num_total
    if k >= n:
        raise ValueError(
            f"ntk.num_eigen={k} must be smaller than the number of samples N={n} "
            f"({ds.num_train} train + {ds.num_test} test); lower ntk.num_eigen below {n} "
            "or keep more data (data.num_train / data.num_test)."
        )


_GiB = 2**30
# Per Gram worker beyond its tiles (Python, JAX, the model), and the driver beyond the
# eigensolver and the dataset: lower bounds (digits: workers 0.7 GB, driver 1.4 GB at their
# peaks), so that the check refuses only what cannot fit.
_WORKER_OVERHEAD = 3 * _GiB // 4
_DRIVER_OVERHEAD = 5 * _GiB // 4


def gram_memory(
    n: int, k: int, *, tile_size: int, dtype: str = "float32", keep_resident: bool = True
) -> dict[str, int]:
    """Host memory of the eigen step for N examples and k eigenpairs, in bytes, by holder.

    - ``tiles``: the Gram's stored upper triangle (diagonal tiles whole), spread over the Gram
      workers while ``keep_resident`` (0 otherwise: products stream the tiles from the store);
      the same bytes are on disk either way.
    - ``eigensolver``: the block solver's basis and its product with K (``2 · max_basis``
      columns of N), the locked pairs and the Ritz vectors of a restart, in the driver.

    Without the overheads of the processes (:data:`_WORKER_OVERHEAD` per worker, the driver's
    :data:`_DRIVER_OVERHEAD` and the dataset), which :func:`check_gram_memory` adds.
    """
    from raysweep.eigen.block import default_block_size, default_guard, default_max_basis

    itemsize = np.dtype(dtype).itemsize
    full, rest = divmod(n, tile_size)
    stored = (n * n + full * tile_size**2 + rest**2) // 2  # Σ_{i<=j} s_i s_j, s the tile sides
    b = default_block_size(k, n)
    basis = default_max_basis(k, n, b)
    ritz = k + default_guard(k)
    columns = 2 * basis + k + 2 * ritz
    return {
        "tiles": stored * itemsize if keep_resident else 0,
        "tiles_on_disk": stored * itemsize,
        "eigensolver": columns * n * itemsize,
    }


def _data_bytes(ds: Dataset) -> int:
    """The driver's images: the splits and their concatenation for the Gram."""
    return 2 * (np.asarray(ds.x_train).nbytes + np.asarray(ds.x_test).nbytes)


def check_gram_memory(config: Config, n: int, *, data_bytes: int = 0) -> None:
    """Refuse, before any work, an eigen step that cannot fit in this machine's memory.

    Applies when the Gram workers run here (a one-node Ray cluster, or Ray not started yet):
    the resident tiles, the eigensolver, the dataset (``data_bytes``, held by the driver) and
    lower bounds of the processes' own memory must fit in the available memory. Measured
    peaks are higher (README, "Paper scale on one machine"); this refuses only what surely
    cannot fit. A multi-node cluster is not checked (its workers' memory is theirs).

    Raises:
      MemoryError: naming the need, what is available, and the settings that move it.
    """
    if "ray" in sys.modules:  # connected to a cluster only if Ray was imported
        from raysweep.distributed.cluster import alive_nodes

        if alive_nodes() > 1:
            return
    ntk = config.ntk
    need = gram_memory(
        n,
        ntk.num_eigen,
        tile_size=ntk.tile_size,
        dtype=ntk.dtype,
        keep_resident=ntk.keep_resident,
    )
    # as compute_gram lays them out on CPUs: one per CPU, at most one per row panel
    workers = ntk.num_workers or min(os.cpu_count() or 1, -(-n // ntk.tile_size))
    overhead = workers * _WORKER_OVERHEAD + _DRIVER_OVERHEAD + data_bytes
    total = need["tiles"] + need["eigensolver"] + overhead
    avail = available_memory_bytes()
    if total <= avail:
        return
    fix = (
        "set ntk.keep_resident=false (the tiles then stream from the tile store at every "
        f"product: {need['tiles_on_disk'] / _GiB:.1f} GiB read per product, slower but only "
        "disk), use fewer ntk.num_workers, lower ntk.num_eigen, or use less data "
        "(data.num_train / data.num_test)"
        if ntk.keep_resident
        else "lower ntk.num_eigen, use fewer ntk.num_workers or less data "
        "(data.num_train / data.num_test), or run on a cluster (--address)"
    )
    raise MemoryError(
        f"the eigen step for N={n:,}, k={ntk.num_eigen} needs about {total / _GiB:.1f} GiB "
        f"here (Gram tiles kept by the workers {need['tiles'] / _GiB:.1f} GiB, eigensolver "
        f"{need['eigensolver'] / _GiB:.1f} GiB, the {workers} workers, the driver and the data "
        f"{overhead / _GiB:.1f} GiB) but "
        f"{avail / _GiB:.1f} GiB is available; {fix}."
    )


def load_checked_dataset(config: Config) -> Dataset:
    """The dataset of ``config``, read and validated, with k < N checked: before any work.

    What a driver calls before it starts Ray or computes anything, so that missing, empty,
    truncated or malformed data files and a k that is too large are reported in one line
    while nothing has been written. Pass the result to :func:`compute_eigenfunctions`
    (``dataset=``) so that the files are read once.

    Raises:
      FileNotFoundError: the data folder or files are missing.
      ValueError / TypeError: a file is truncated or malformed, a subsample size exceeds the
        split, or ``ntk.num_eigen`` is not smaller than N.
    """
    ds = _dataset_for(config)
    check_num_eigen(config, ds)
    check_gram_memory(config, ds.num_total, data_bytes=_data_bytes(ds))
    return ds


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
        module = model_of(self.config.model)
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
    """Write an artifact directory atomically (temporary directory, then rename).

    Every file is checksummed (CRC-32 of its bytes) into ``checksums.json``, written last,
    so that :func:`load_artifact` can tell a damaged file from an intact one.
    """
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
    files = {
        name: {"crc32": f"{crc32_file(tmp / name):08x}", "bytes": (tmp / name).stat().st_size}
        for name in ARTIFACT_FILES
    }
    atomic_write_json(tmp / CHECKSUMS_FILE, {"algorithm": "crc32", "files": files})
    return replace_dir(tmp, path)


def _read_checksums(path: Path) -> dict[str, dict] | None:
    """The ``files`` table of ``checksums.json``, or None for an artifact without one."""
    file = path / CHECKSUMS_FILE
    if not file.exists():
        return None
    try:
        table = json.loads(file.read_text())
        files = table["files"]
        if table.get("algorithm") != "crc32":
            raise ValueError(f"unknown algorithm {table.get('algorithm')!r}")
        for name in ARTIFACT_FILES:
            int(files[name]["crc32"], 16)
            int(files[name]["bytes"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise DamagedArtifactError(path, CHECKSUMS_FILE, f"is unreadable ({err!r})") from None
    return files


def _verify(path: Path, name: str, checksums: dict[str, dict]) -> None:
    """Check ``path/name`` against its size and CRC-32 in ``checksums``."""
    file = path / name
    expected_size, expected_crc = int(checksums[name]["bytes"]), int(checksums[name]["crc32"], 16)
    try:
        size = file.stat().st_size
        crc = crc32_file(file) if size == expected_size else None
    except FileNotFoundError:
        raise DamagedArtifactError(path, name, f"is missing (listed in {CHECKSUMS_FILE})") from None
    except OSError as err:
        raise DamagedArtifactError(path, name, f"is unreadable ({err})") from None
    if size != expected_size:
        what = "truncated" if size < expected_size else "longer than when it was written"
        raise DamagedArtifactError(
            path, name, f"is {what} ({size} bytes; {expected_size} when written)"
        )
    if crc != expected_crc:
        raise DamagedArtifactError(
            path,
            name,
            f"does not match its checksum (crc32 {crc:08x}, {expected_crc:08x} when written): "
            "it was changed after it was written",
        )


def _parse(path: Path, name: str, parse):
    """``parse(path/name)``; a file that cannot be parsed is reported as damaged."""
    try:
        return parse(path / name)
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated or garbled, e.g. in an artifact without checksums
        raise DamagedArtifactError(path, name, f"cannot be parsed ({err!r})") from None


def load_artifact(path: str | os.PathLike) -> EigenArtifact:
    """Load an artifact written by :func:`save_artifact` / :func:`compute_eigenfunctions`.

    Every file is first checked against ``checksums.json`` (size and CRC-32), once, here. An
    artifact written before checksums were kept has no ``checksums.json``: it is accepted
    unverified (only a file that cannot be parsed is detected), so that older results folders
    keep working.

    Raises:
      FileNotFoundError: ``path`` is not an artifact (a file is missing and there is no
        ``checksums.json`` saying it was written).
      DamagedArtifactError: (a ``ValueError``) a file is truncated, does not match its
        checksum, is missing although listed in ``checksums.json``, or cannot be parsed; the
        message names the file and says how to recompute the artifact.
    """
    path = Path(path)
    checksums = _read_checksums(path)
    if checksums is None:
        missing = [name for name in ARTIFACT_FILES if not (path / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"{path} is not a complete eigenfunction artifact: missing "
                f"{', '.join(missing)}. Run the eigenfunction step (python "
                "sweeps/eigen_sweep.py) to create it."
            )
    else:
        for name in ARTIFACT_FILES:
            _verify(path, name, checksums)

    def npy(file: Path) -> np.ndarray:
        return np.load(file, allow_pickle=False)

    def json_file(file: Path):
        return json.loads(file.read_text())

    config = config_from_dict(_parse(path, "config.json", json_file))
    variables = _parse(
        path, "variables.msgpack", lambda f: flax.serialization.msgpack_restore(f.read_bytes())
    )
    return EigenArtifact(
        path=path,
        config=config,
        manifest=_parse(path, "dataset.json", json_file),
        eigvals=_parse(path, "eigvals.npy", npy),
        eigvecs=_parse(path, "eigvecs.npy", npy),
        residuals=_parse(path, "residuals.npy", npy),
        binarization=_parse(path, "binarization.npy", npy),
        variables=jax.tree_util.tree_map(np.asarray, variables),
        meta=_parse(path, "meta.json", json_file),
    )


def config_gram(
    config: Config, apply_fn, params, x, *, store_dir, model_id: str, progress: bool, log=None
):
    """:func:`raysweep.distributed.compute_gram` with the settings of ``config.ntk``.

    ``log`` receives the lines naming damaged tiles that were recomputed (default: printed).
    """
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
        keep_resident=config.ntk.keep_resident,
        model_id=model_id,
        progress=progress,
        log=log,
    )


def _move_aside(target: Path) -> Path:
    """Rename ``target`` to an unused ``<name>.damaged-<UTC time>[-n]`` sibling; returns it."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = target.with_name(f"{target.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = target.with_name(f"{target.name}.damaged-{stamp}-{n}")
    os.rename(target, aside)
    return aside


def _same_setup(a: Config, b: Config) -> bool:
    return a.data == b.data and a.model == b.model and a.ntk == b.ntk


def model_id_of(config: Config, fingerprint: str) -> str:
    """The tile store's ``model_id``: name, activation, seed and the model's jaxpr hash."""
    return (
        f"{config.model.name}/{config.model.activation}/seed={config.model.seed}/"
        f"jaxpr={fingerprint}"
    )


def _check_model_unchanged(existing: EigenArtifact, config: Config) -> None:
    """Refuse to reuse an artifact whose model code changed since it was computed."""
    from raysweep.distributed.fingerprint import model_fingerprint

    saved = existing.meta.get("model_fingerprint")
    if saved is None:  # written before models were fingerprinted: cannot tell
        return
    module = model_of(config.model)
    variables = existing.variables
    now = model_fingerprint(
        make_apply_fn(module, variables), variables["params"], existing.manifest["input_shape"]
    )
    if now != saved:
        raise ValueError(
            f"the model {config.model.name!r} computes something else than when the artifact "
            f"{existing.path} was made (its jaxpr hash was {saved[:19]}…, now {now[:19]}…): "
            "its eigenfunctions and Gram tiles describe the old code. Use another results "
            "folder (--out), or delete that artifact and its gram/ folder to recompute them."
        )


def compute_eigenfunctions(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    subdir: str = "",
    progress: bool = True,
    log=print,
    dataset: Dataset | None = None,
) -> EigenArtifact:
    """Compute (or reuse) the eigenfunction artifact of ``config`` under ``out_dir``.

    ``out_dir/<subdir>/eigenfunctions`` is the artifact, ``out_dir/<subdir>/gram`` the
    resumable tile store (``subdir``: ``""`` for a sweep with one artifact, ``artifacts/<key>``
    for each point of a grid with several, see :mod:`raysweep.sweep.grid`).
    An existing artifact with the same data, model and NTK settings is loaded (and verified),
    not recomputed; an interrupted Gram resumes from its finished tiles, and damaged tiles are
    recomputed. A damaged existing artifact (:class:`DamagedArtifactError`, or files missing)
    is named through ``log``, moved aside to ``eigenfunctions.damaged-<UTC time>`` (never
    deleted) and recomputed, which is cheap as long as the tiles are kept. The tile store and
    the artifact record a hash of the model's computation (its jaxpr on a probe batch), so
    edited model code never reuses stale tiles or eigenfunctions.

    ``dataset``: the dataset of ``config`` already loaded (:func:`load_checked_dataset`);
    ``None`` reads it here, when it is needed.
    """
    from raysweep.lease import hold_results_dir

    purpose = "raysweep.eigenfunctions.compute_eigenfunctions"
    with hold_results_dir(out_dir, purpose=purpose) as lease:
        return _compute_eigenfunctions(
            config,
            Path(out_dir),
            lease,
            subdir=subdir,
            progress=progress,
            log=log,
            dataset=dataset,
        )


def _compute_eigenfunctions(
    config: Config, out_dir: Path, lease, *, subdir: str, progress: bool, log, dataset
) -> EigenArtifact:
    from raysweep.distributed import ensure_ray
    from raysweep.distributed.fingerprint import model_fingerprint

    target = out_dir / subdir / "eigenfunctions"
    if target.exists():
        try:
            existing = load_artifact(target)
        except (DamagedArtifactError, FileNotFoundError) as err:
            what = f"{err.file} {err.reason}" if isinstance(err, DamagedArtifactError) else err
            aside = _move_aside(target)
            log(
                f"[eigen] the artifact {target} is damaged ({what}); moved it to {aside} and "
                f"recomputing it from the Gram tiles in {out_dir / subdir / 'gram'}"
            )
        else:
            if _same_setup(existing.config, config):
                _check_model_unchanged(existing, config)
                log(f"[eigen] reusing {target}")
                return existing
            raise ValueError(
                f"{target} holds eigenfunctions of another setup (data/model/ntk differ). Use "
                "another results directory or delete that one."
            )

    ds = _dataset_for(config) if dataset is None else dataset
    check_num_eigen(config, ds)
    check_gram_memory(config, ds.num_total, data_bytes=_data_bytes(ds))
    ensure_ray()  # before JAX starts its threads: Ray forks its processes
    x_all, _ = ds.concatenated()
    n = x_all.shape[0]
    k = config.ntk.num_eigen
    module, variables = _model_for(config, ds.input_shape)
    apply_fn = make_apply_fn(module, variables)
    log(
        f"[eigen] {ds.name}: N={n} ({ds.num_train} train + {ds.num_test} test), "
        f"model {config.model.name}/{config.model.activation}, top k={k}"
    )

    start = time.perf_counter()
    fingerprint = model_fingerprint(apply_fn, variables["params"], ds.input_shape)
    with config_gram(
        config,
        apply_fn,
        variables["params"],
        x_all,
        store_dir=out_dir / subdir / "gram",
        model_id=model_id_of(config, fingerprint),
        progress=progress,
        log=log,
    ) as gram:
        gram_seconds = time.perf_counter() - start
        log(
            f"[eigen] Gram {n}x{n} ready in {gram_seconds:.1f} s; eigensolver "
            f"{config.ntk.eigen_method}"
        )
        start = time.perf_counter()
        report = progress_reporter(
            log if progress else None, out_dir / subdir / "gram" / PROGRESS_FILE
        )
        pairs = top_eigenpairs(gram, k, method=config.ntk.eigen_method, progress=report)
        eigen_seconds = time.perf_counter() - start
    meta = {
        "gram_seconds": gram_seconds,
        "eigen_seconds": eigen_seconds,
        "eigen_method": pairs.method,
        "eigen_iterations": int(getattr(pairs, "iterations", 0) or 0),
        "eigen_matvecs": int(getattr(pairs, "matvecs", 0) or 0),
        "eigen_stage_seconds": {key: float(v) for key, v in pairs.seconds.items()},
        "max_relative_residual": float(np.max(pairs.residuals) / pairs.eigvals[0]),
        "N": int(n),
        "k": int(k),
        "jax": jax.__version__,
        "model_fingerprint": fingerprint,
    }
    lease.check()  # another driver took the folder over (this one was paused): do not write
    save_artifact(
        target, config=config, manifest=ds.manifest(), pairs=pairs, variables=variables, meta=meta
    )
    stages = ", ".join(f"{key} {v:.1f} s" for key, v in pairs.seconds.items())
    log(
        f"[eigen] {k} eigenpairs in {eigen_seconds:.1f} s ({pairs.method}: {stages}); max "
        f"residual {meta['max_relative_residual']:.1e}·λ_max; artifact {target}"
    )
    return load_artifact(target)


def load_checked_datasets(config: Config) -> dict[Any, Dataset]:
    """:func:`load_checked_dataset` for every artifact point of ``config``'s grid, each
    distinct data section read once, and each point's model checked on it
    (:func:`check_model`): ``{DataConfig: Dataset}``.

    Expands the grid first (:func:`raysweep.sweep.grid.expand_grid`), so a bad grid, a missing
    or malformed data file, a k that is too large and a model that cannot run on the data are
    all reported before any work.
    """
    from raysweep.sweep.grid import expand_grid

    datasets: dict[Any, Dataset] = {}
    for point in expand_grid(config).artifacts:
        data = point.config.data
        if data not in datasets:
            datasets[data] = _dataset_for(point.config)
        check_num_eigen(point.config, datasets[data])
        check_gram_memory(
            point.config, datasets[data].num_total, data_bytes=_data_bytes(datasets[data])
        )
        check_model(point.config, datasets[data])
    return datasets


def check_model(config: Config, ds: Dataset) -> None:
    """Build and initialize the model of ``config`` and run it on two examples of ``ds``.

    :func:`raysweep.models.init_variables` checks the output (one float32 logit per example,
    or the one ``model.output_index`` selects) and the parameters (float32); this adds the
    data: the model must run on the dataset's images and give finite logits. The compiled
    initialization is cached, so the eigen step does not pay for it twice.

    Raises:
      ImportError / ValueError / TypeError: naming the model and what is wrong.
    """
    module, variables = _model_for(config, ds.input_shape)
    x = np.asarray(ds.x_train[:2], np.float32)
    try:
        out = np.asarray(make_apply_fn(module, variables)(variables["params"], x))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"model {config.model.name!r} does not run on the images of {ds.name} "
            f"(shape {tuple(x.shape[1:])}): {err}"
        ) from None
    if out.shape != (2, 1) or not np.isfinite(out).all():
        hint = ""
        if out.shape[1:] != (1,) and "outputs" in json.loads(config.model.options):
            hint = (
                " model.options 'outputs' gives several logits for the NTK library "
                "(raysweep.ntk, e.g. the traced kernel of a 10-class head); the sweep trains "
                "one logit: drop it."
            )
        raise ValueError(
            f"model {config.model.name!r} gave {out.shape} outputs with values {out.ravel()[:4]} "
            f"on two images of {ds.name}; expected one finite logit per example, shape (n, 1)."
            + hint
        )


def compute_artifacts(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    log=print,
    datasets: dict[Any, Dataset] | None = None,
) -> list[tuple[Any, EigenArtifact]]:
    """Compute (or reuse) the artifact of every artifact-level point of ``config``'s grid.

    One artifact per distinct point (data, model and NTK values), each with
    :func:`compute_eigenfunctions` in its own folder (:func:`raysweep.sweep.grid.artifact_dir`),
    one after the other: each is resumable, and an artifact already in ``out_dir`` is reused.
    Returns ``[(ArtifactPoint, EigenArtifact), ...]`` in grid order.

    ``datasets``: from :func:`load_checked_datasets` (default: read here).
    """
    from raysweep.lease import hold_results_dir
    from raysweep.sweep.grid import expand_grid

    points = expand_grid(config).artifacts
    datasets = load_checked_datasets(config) if datasets is None else datasets
    out = []
    with hold_results_dir(out_dir, purpose="raysweep.eigenfunctions.compute_artifacts"):
        for i, point in enumerate(points):
            if len(points) > 1:
                log(f"[eigen] artifact {i + 1}/{len(points)}: {point.key}")
            artifact = compute_eigenfunctions(
                point.config,
                out_dir,
                subdir=point.subdir,
                progress=progress,
                log=log,
                dataset=datasets.get(point.config.data),
            )
            out.append((point, artifact))
    return out
