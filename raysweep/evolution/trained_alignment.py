"""Alignment of the initial eigenfunctions with the NTK at the end of training (paper Figs 6-7).

For a network trained on the labels sign(φ_j) of eigen-index j, the kernel at the end of
training Θ_T is probed with the first K eigenfunctions φ_i of the kernel at initialization,
on the train part, the test part and all samples, with :func:`raysweep.ntk.kernel_alignment`
(vector-Jacobian products; the Gram matrix is never formed), normalized by each target's
energy on the samples used:

    ᾱ_T(φ_i) = α_T(φ_i) / ((1/n) Σ_x φ_i(x)²) = φ_iᵀ Θ_T φ_i / (n ‖φ_i‖²)

which does not depend on the scale of φ_i (the eigenvectors are unit over all N samples, so
their restrictions to the splits have different norms). The paper's finding: the trained index
j spikes, the kernel rotates towards the one function it learned.

Files: ``<out>/alignment/trained/`` (final variables and rows of the trained pack, reused by a
re-run) and ``<out>/analysis/alignment.npz`` (:class:`raysweep.analysis.AlignmentData`, also
holding ᾱ₀ with the NTK at initialization), which the report draws.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raysweep.analysis import AlignmentData, save_alignment
from raysweep.config import Config
from raysweep.evolution.common import artifact_labels, train_key, trained_networks
from raysweep.models import make_apply_fn
from raysweep.ntk import alignment

__all__ = ["alignment_study", "check_indices", "normalized_alignment", "split_columns"]


def normalized_alignment(apply_fn, params, x, targets, **options: Any) -> np.ndarray:
    """α(φ) / mean(φ²) for each row of ``targets`` ``(m, n)``: ``φᵀΘφ / (n ‖φ‖²)``, shape (m,).

    ``options`` go to :func:`raysweep.ntk.kernel_alignment` (``batch_size``, ``memory_budget_mb``).
    Raises ``ValueError`` for a target that is zero on all ``n`` samples.
    """
    targets = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    energy = np.mean(targets * targets, axis=1)
    if np.any(energy == 0):
        zero = np.flatnonzero(energy == 0)[:5].tolist()
        raise ValueError(f"targets {zero} are zero on every sample: their alignment is undefined.")
    return alignment(apply_fn, params, x, targets.astype(np.float32), **options) / energy


def check_indices(indices: Any, num_eigen: int, what: str = "trained_indices") -> list[int]:
    """``indices`` as a non-empty list of distinct ints in ``[0, num_eigen)``."""
    if isinstance(indices, int | np.integer):
        indices = [indices]
    if not isinstance(indices, Sequence | np.ndarray) or len(indices) == 0:
        raise ValueError(f"{what}: expected a non-empty list of eigen-indices, got {indices!r}.")
    out = []
    for j in indices:
        if isinstance(j, bool) or not isinstance(j, int | np.integer):
            raise TypeError(f"{what}: expected integers, got {j!r}.")
        if not 0 <= j < num_eigen:
            raise ValueError(
                f"{what}: index {j} is outside [0, {num_eigen}); the eigenfunction artifact "
                f"holds {num_eigen} eigenvectors (raise ntk.num_eigen to go further)."
            )
        out.append(int(j))
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: duplicates in {out}.")
    return out


def split_columns(num_train: int, num_total: int) -> dict[str, slice]:
    """Columns of the eigenvectors (train first, then test) for each split."""
    return {
        "train": slice(0, num_train),
        "test": slice(num_train, num_total),
        "all": slice(0, num_total),
    }


def artifact_key(artifact) -> str:
    """A short fingerprint of an eigenfunction artifact (its eigenvectors' bytes)."""
    return hashlib.sha256(np.ascontiguousarray(artifact.eigvecs).tobytes()).hexdigest()[:16]


def alignment_study(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    trained_indices: Sequence[int],
    num_eigen: int | None = None,
    splits: Sequence[str] = ("train", "test", "all"),
    subdir: str = "",
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> AlignmentData:
    """Train the network on each of ``trained_indices`` and align the initial eigenfunctions.

    Args:
      config: the eigen sweep's config; its eigenfunction artifact ``<out_dir>/eigenfunctions``
        is reused when it exists and computed otherwise
        (:func:`raysweep.eigenfunctions.compute_eigenfunctions`). ``config.train`` sets the
        training (the network, batch norm in training mode; all indices in one packed run).
      out_dir: the eigen sweep's results folder.
      trained_indices: eigen-indices j to train on (0-based).
      num_eigen: K, the initial eigenfunctions probed (the paper: 1,000); ``None``: all of
        the artifact's.
      splits: any of ``"train"``, ``"test"``, ``"all"``.
      subdir: where the artifact is under ``out_dir`` (``artifacts/<key>`` for a point of a
        grid with several artifacts; see :func:`raysweep.eigenfunctions.compute_eigenfunctions`).
      progress, log: progress of the eigen step and of training.

    Returns:
      :class:`raysweep.analysis.AlignmentData` with ``alpha[split]`` ``(len(trained_indices),
      K)`` after training and ``init[split]`` ``(K,)`` at initialization (both normalized as
      in the module doc); saved to ``<out_dir>/analysis/alignment.npz``.
    """
    from raysweep.eigenfunctions import compute_eigenfunctions

    splits = list(splits)
    unknown = [s for s in splits if s not in ("train", "test", "all")]
    if not splits or unknown:
        raise ValueError(f"splits: expected a non-empty subset of train, test, all; got {splits}.")
    out_dir = Path(out_dir)
    artifact = compute_eigenfunctions(config, out_dir, subdir=subdir, progress=progress, log=log)
    indices = check_indices(trained_indices, artifact.num_eigen)
    k = artifact.num_eigen if num_eigen is None else num_eigen
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= artifact.num_eigen:
        raise ValueError(
            f"num_eigen must be an integer in [1, {artifact.num_eigen}] (the artifact's "
            f"eigenvectors), got {num_eigen!r}."
        )
    ds = artifact.dataset()
    module, variables0, apply0 = artifact.model()
    n_train = artifact.num_train
    cols = split_columns(n_train, artifact.eigvecs.shape[1])
    if "test" in splits and ds.num_test == 0:
        raise ValueError("split 'test' requested but the dataset has no test samples.")
    x_all, _ = ds.concatenated()
    phi = np.asarray(artifact.eigvecs[:k], dtype=np.float64)
    y_train, y_test = artifact_labels(artifact, indices)
    finals, _ = trained_networks(
        out_dir / "alignment" / "trained",
        train_key(config, artifact=artifact_key(artifact), indices=indices),
        module,
        variables0,
        (ds.x_train, y_train, ds.x_test, y_test),
        train=config.train,
        seed=config.train.seed,
        log=log,
        tag="[alignment]",
    )

    def align(apply_fn, params) -> dict[str, np.ndarray]:
        return {
            s: normalized_alignment(apply_fn, params, x_all[cols[s]], phi[:, cols[s]])
            for s in splits
        }

    start = time.perf_counter()
    init = align(apply0, variables0["params"])
    alpha = {s: np.zeros((len(indices), k)) for s in splits}
    for t, (j, variables) in enumerate(zip(indices, finals, strict=True)):
        found = align(make_apply_fn(module, variables), variables["params"])
        for s in splits:
            alpha[s][t] = found[s]
        first = splits[0]
        top = int(np.argmax(found[first]))
        log(
            f"[alignment] trained on j={j}: ᾱ_T(φ_j) {found[first][j]:.3g} vs ᾱ_0(φ_j) "
            f"{init[first][j]:.3g} ({first}); largest ᾱ_T at i={top}"
        )
    log(
        f"[alignment] {k} eigenfunctions x {len(indices) + 1} kernels in "
        f"{time.perf_counter() - start:.1f} s"
    )
    data = AlignmentData(
        np.asarray(indices, dtype=np.int64),
        alpha,
        init,
        label=f"{config.model.name} on {artifact.manifest.get('name', config.data.name)}",
    )
    save_alignment(out_dir, data)
    return data
