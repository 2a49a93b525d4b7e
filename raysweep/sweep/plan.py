"""The grid of a sweep, checked before anything runs: artifacts × packs × optimizers × modes.

A *trial* trains one pack of eigen-indices (``sweep.eigen_indices`` chunked by
``sweep.pack_size``) of one eigenfunction artifact (one model on one dataset) with one
optimizer, either the network (``nn``) or its linearization (``lin``). Its id is a function of
its grid point only::

    trial_id(optimizer, linearized, pack, model, dataset) = "sgd-lin-pack002-mlp-digits"

so a retried, restored or re-run trial writes the same part file of the metrics store and
replaces it. (Tune's own trial ids are random and are not used to name anything.)

:func:`plan_sweep` builds the :class:`SweepPlan` from the config and the loaded artifacts and
raises ``ValueError``/``TypeError`` for everything that would otherwise fail inside a trial:
no artifact, an eigen-index the artifact has no eigenvector for, an unknown optimizer, an empty
grid, two artifacts of the same model and dataset. :meth:`SweepPlan.to_dict` is what is
written to ``sweep_plan.json`` and compared when a sweep is resumed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.config import OPTIMIZERS, Config, TrainConfig

PLAN_FILE = "sweep_plan.json"


def trial_id(optimizer: str, linearized: bool, pack: int, model: str, dataset: str) -> str:
    """The deterministic id of a grid point, e.g. ``"adam-nn-pack000-lenet5-cifar10"``."""
    return f"{optimizer}-{'lin' if linearized else 'nn'}-pack{pack:03d}-{model}-{dataset}"


def trial_id_from_config(config: dict[str, Any]) -> str:
    """:func:`trial_id` of a Tune trial config (its ``point``, see
    :func:`raysweep.sweep.tuner.param_space`) or of a grid point itself."""
    point = config.get("point", config)
    art, pack = point["artifact"], point["pack"]
    return trial_id(
        point["optimizer"],
        bool(point["linearized"]),
        int(pack["id"]),
        art["model"],
        art["dataset"],
    )


def chunk_indices(indices: Sequence[int], pack_size: int) -> tuple[tuple[int, ...], ...]:
    """``indices`` in consecutive packs of ``pack_size`` (the last one may be smaller)."""
    if isinstance(pack_size, bool) or not isinstance(pack_size, int) or pack_size < 1:
        raise ValueError(f"sweep.pack_size must be a positive integer, got {pack_size!r}.")
    indices = tuple(int(j) for j in indices)
    return tuple(indices[i : i + pack_size] for i in range(0, len(indices), pack_size))


@dataclass(frozen=True)
class ArtifactSpec:
    """One eigenfunction artifact as the trials see it (small: names and a path).

    ``key`` (``"<model>-<dataset>"``) names the artifact in trial configs and in the object
    store. ``path`` is relative to the results folder when the artifact lies inside it (so a
    results folder moved or copied elsewhere still resumes), else absolute; see
    :meth:`resolve`.
    """

    key: str
    path: str
    model: str
    activation: str
    dataset: str
    num_eigen: int
    num_train: int
    num_test: int

    def resolve(self, out_dir: str | os.PathLike | None) -> Path:
        """The artifact's absolute path, a relative ``path`` taken from ``out_dir``."""
        path = Path(self.path)
        if path.is_absolute() or out_dir is None:
            return path.resolve()
        return (Path(out_dir) / path).resolve()


@dataclass(frozen=True)
class TrialSpec:
    """One grid point."""

    trial_id: str
    artifact: str
    pack: int
    eigen_indices: tuple[int, ...]
    optimizer: str
    linearized: bool


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep will run, fixed before the first trial.

    Attributes:
      sweep_id: ``sweep.name``; the ``sweep_id`` column of the store.
      artifacts: one :class:`ArtifactSpec` per (model, dataset).
      packs: the eigen-index packs, in order (pack ``p`` is ``packs[p]``).
      optimizers, linearized: the other grid axes.
      train: training hyper-parameters shared by all trials (``optimizer`` set per trial).
      seed: data-order seed of every trial (``train.seed``).
      trials: the full grid, artifacts × packs × optimizers × linearized.
    """

    sweep_id: str
    artifacts: tuple[ArtifactSpec, ...]
    packs: tuple[tuple[int, ...], ...]
    optimizers: tuple[str, ...]
    linearized: tuple[bool, ...]
    train: TrainConfig
    seed: int
    trials: tuple[TrialSpec, ...]

    @property
    def num_targets(self) -> int:
        """Target trainings in the sweep (trials × pack sizes)."""
        return sum(len(t.eigen_indices) for t in self.trials)

    def artifact(self, key: str) -> ArtifactSpec:
        return next(a for a in self.artifacts if a.key == key)

    def trial_ids(self) -> list[str]:
        return [t.trial_id for t in self.trials]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable; equal for two plans that run exactly the same trials."""
        out = dataclasses.asdict(self)
        out["trials"] = [t.trial_id for t in self.trials]
        return out

    def same_grid(self, saved: dict[str, Any]) -> list[str]:
        """Fields where ``saved`` (a previous :meth:`to_dict`, e.g. read back from JSON) differs."""
        mine = json.loads(json.dumps(self.to_dict()))
        saved = json.loads(json.dumps(saved))
        return sorted(k for k in mine.keys() | saved.keys() if mine.get(k) != saved.get(k))


def _artifact_spec(artifact, out_dir: str | os.PathLike | None) -> ArtifactSpec:
    cfg = artifact.config
    path = artifact.path.resolve()
    if out_dir is not None and path.is_relative_to(Path(out_dir).resolve()):
        path = path.relative_to(Path(out_dir).resolve())
    return ArtifactSpec(
        key=f"{cfg.model.name}-{cfg.data.name}",
        path=str(path),
        model=cfg.model.name,
        activation=cfg.model.activation,
        dataset=cfg.data.name,
        num_eigen=int(artifact.num_eigen),
        num_train=int(artifact.manifest["num_train"]),
        num_test=int(artifact.manifest["num_test"]),
    )


def plan_sweep(
    config: Config, artifacts: Sequence[Any], *, out_dir: str | os.PathLike | None = None
) -> SweepPlan:
    """The checked grid of ``config.sweep`` over the loaded ``artifacts``.

    Args:
      config: the resolved config (``sweep`` gives the grid, ``train`` the training).
      artifacts: loaded :class:`~raysweep.eigenfunctions.EigenArtifact` objects, one per
        (model, dataset).
      out_dir: the results folder; artifacts inside it are recorded by relative path.

    Raises:
      TypeError: ``config`` is not a Config.
      ValueError: empty grid, unknown optimizer, non-boolean ``linearized``, an eigen-index
        ≥ the number of eigenvectors of an artifact, two artifacts for one (model, dataset).
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a raysweep.config.Config, got {type(config).__name__}.")
    sweep = config.sweep
    artifacts = list(artifacts)
    indices, optimizers, modes = (
        tuple(sweep.eigen_indices),
        tuple(sweep.optimizers),
        tuple(sweep.linearized),
    )
    empty = [
        name
        for name, axis in (
            ("artifacts", artifacts),
            ("sweep.eigen_indices", indices),
            ("sweep.optimizers", optimizers),
            ("sweep.linearized", modes),
        )
        if not axis
    ]
    if empty:
        raise ValueError(
            f"the sweep grid is empty: {', '.join(empty)} has no value. Expected at least one "
            "eigenfunction artifact, one eigen-index, one optimizer and one of "
            "network/linearized (e.g. sweep.eigen_indices=0,1,2 sweep.optimizers=sgd)."
        )
    unknown = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(
            f"unknown optimizer(s) {unknown} in sweep.optimizers; choose among "
            f"{', '.join(OPTIMIZERS)}."
        )
    if any(not isinstance(m, bool) for m in modes):
        raise TypeError(
            f"sweep.linearized must hold booleans (False = network, True = linearized), got "
            f"{modes!r}."
        )
    if any(isinstance(j, bool) or not isinstance(j, int) or j < 0 for j in indices):
        raise ValueError(f"sweep.eigen_indices must be non-negative integers, got {indices!r}.")
    specs = [_artifact_spec(a, out_dir) for a in artifacts]
    for spec in specs:
        too_big = [j for j in indices if j >= spec.num_eigen]
        if too_big:
            raise ValueError(
                f"eigen-index {too_big} >= {spec.num_eigen}, the number of eigenvectors in the "
                f"artifact {spec.path} ({spec.model} on {spec.dataset}); indices are 0-based. "
                f"Use indices below {spec.num_eigen}, or recompute the artifact with a larger "
                "ntk.num_eigen."
            )
    keys = [s.key for s in specs]
    doubles = sorted({k for k in keys if keys.count(k) > 1})
    if doubles:
        raise ValueError(
            f"two artifacts for the same model and dataset {doubles}; trial ids would collide. "
            "Run them as separate sweeps (another out_dir)."
        )
    packs = chunk_indices(indices, sweep.pack_size)
    trials = tuple(
        TrialSpec(
            trial_id=trial_id(opt, lin, p, spec.model, spec.dataset),
            artifact=spec.key,
            pack=p,
            eigen_indices=pack,
            optimizer=opt,
            linearized=lin,
        )
        for spec in specs
        for p, pack in enumerate(packs)
        for opt in optimizers
        for lin in modes
    )
    return SweepPlan(
        sweep_id=sweep.name,
        artifacts=tuple(specs),
        packs=packs,
        optimizers=optimizers,
        linearized=modes,
        train=config.train,
        seed=int(config.train.seed),
        trials=trials,
    )
