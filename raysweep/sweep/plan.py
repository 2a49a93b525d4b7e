"""The checked plan of a sweep: the grid (:mod:`raysweep.sweep.grid`) over loaded artifacts.

A *trial* trains one pack of targets (eigen-index × ``train.seed`` × learning rate points, in
packs of ``sweep.pack_size``) of one eigenfunction artifact with one program point (optimizer,
network or linearization, and any other program-level axis). Its id is a function of its grid
point only::

    "sgd-lin-pack002-mlp-digits"                       the default grid
    "sgd-nn-pack000-lenet5-digits-model.seed=1"        with other axes, their values

so a retried, restored or re-run trial writes the same part file of the metrics store and
replaces it. (Tune's own trial ids are random and are not used to name anything.)

:func:`plan_sweep` builds the :class:`SweepPlan` from the config and the loaded artifacts and
raises ``ValueError``/``TypeError`` for everything that would otherwise fail inside a trial:
no artifact for a grid point, an eigen-index an artifact has no eigenvector for, an unknown
optimizer, an empty grid, an axis without effect. :meth:`SweepPlan.to_dict` is what is
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

from raysweep.argcheck import check_positive_int
from raysweep.config import Config, TrainConfig
from raysweep.sweep.grid import (
    ArtifactPoint,
    Grid,
    TargetSpec,
    TrialSpec,
    expand_grid,
    name_label,
)

PLAN_FILE = "sweep_plan.json"


def trial_id(optimizer: str, linearized: bool, pack: int, model: str, dataset: str) -> str:
    """The deterministic id of a grid point, e.g. ``"adam-nn-pack000-lenet5-cifar10"``."""
    return f"{optimizer}-{'lin' if linearized else 'nn'}-pack{pack:03d}-{model}-{dataset}"


def trial_id_from_config(config: dict[str, Any]) -> str:
    """Our trial id from a Tune trial config (its ``point``, see
    :func:`raysweep.sweep.tuner.param_space`) or from a grid point itself."""
    point = config.get("point", config)
    if "trial_id" in point:
        return str(point["trial_id"])
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
    check_positive_int(pack_size, "sweep.pack_size")
    indices = tuple(int(j) for j in indices)
    return tuple(indices[i : i + pack_size] for i in range(0, len(indices), pack_size))


@dataclass(frozen=True)
class ArtifactSpec:
    """One eigenfunction artifact as the trials see it (small: names and a path).

    ``key`` (``"<model>-<dataset>"``, plus its other artifact-level axis values) names the
    artifact in trial configs and in the object store; ``values``: those axis values.
    ``path`` is relative to the results folder when the artifact lies inside it (so a results
    folder moved or copied elsewhere still resumes), else absolute; see :meth:`resolve`.
    """

    key: str
    path: str
    model: str
    activation: str
    dataset: str
    num_eigen: int
    num_train: int
    num_test: int
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def resolve(self, out_dir: str | os.PathLike | None) -> Path:
        """The artifact's absolute path, a relative ``path`` taken from ``out_dir``."""
        path = Path(self.path)
        if path.is_absolute() or out_dir is None:
            return path.resolve()
        return (Path(out_dir) / path).resolve()


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep will run, fixed before the first trial.

    Attributes:
      sweep_id: ``sweep.name``; the ``sweep_id`` column of the store.
      artifacts: one :class:`ArtifactSpec` per artifact-level grid point.
      axes: every axis and its values (``train.eigen_index``, ``train.optimizer``,
        ``train.linearized`` and the grid's); ``levels``: each axis's class.
      pack_size: ``sweep.pack_size``.
      train: the base training config (each trial's :attr:`TrialSpec.train` resolves its
        program point).
      trials: artifacts × program points × packs.
      notes: axes collapsed at points they do not act on.
    """

    sweep_id: str
    artifacts: tuple[ArtifactSpec, ...]
    axes: dict[str, tuple[Any, ...]]
    levels: dict[str, str]
    pack_size: int
    train: TrainConfig
    trials: tuple[TrialSpec, ...]
    notes: tuple[str, ...] = ()

    @property
    def num_targets(self) -> int:
        """Target trainings in the sweep (trials × pack sizes)."""
        return sum(len(t.targets) for t in self.trials)

    @property
    def optimizers(self) -> tuple[str, ...]:
        return tuple(self.axes["train.optimizer"])

    @property
    def linearized(self) -> tuple[bool, ...]:
        return tuple(self.axes["train.linearized"])

    @property
    def seed(self) -> int:
        return int(self.train.seed)

    def artifact(self, key: str) -> ArtifactSpec:
        return next(a for a in self.artifacts if a.key == key)

    def trial(self, trial_id: str) -> TrialSpec:
        return next(t for t in self.trials if t.trial_id == trial_id)

    def trial_ids(self) -> list[str]:
        return [t.trial_id for t in self.trials]

    def target_axes(self, trial: TrialSpec, target: TargetSpec) -> dict[str, Any]:
        """Every axis value of one target's grid point (the store's ``axes`` column): the grid's
        artifact-level values, the trial's program point and the target's in-pack values."""
        return {
            **self.artifact(trial.artifact).values,
            **dict(trial.program),
            **dict(target.values),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable; equal for two plans that run exactly the same trials."""
        return {
            "sweep_id": self.sweep_id,
            "artifacts": [dataclasses.asdict(a) for a in self.artifacts],
            "axes": {k: list(v) for k, v in self.axes.items()},
            "levels": dict(self.levels),
            "pack_size": self.pack_size,
            "optimizers": list(self.optimizers),
            "linearized": list(self.linearized),
            "train": dataclasses.asdict(self.train),
            "num_targets": self.num_targets,
            "trials": [t.trial_id for t in self.trials],
            "targets": {t.trial_id: [x.target_id for x in t.targets] for t in self.trials},
        }

    def same_grid(self, saved: dict[str, Any]) -> list[str]:
        """Fields where ``saved`` (a previous :meth:`to_dict`, e.g. read back from JSON) differs."""
        mine = json.loads(json.dumps(self.to_dict()))
        saved = json.loads(json.dumps(saved))
        if "axes" not in saved:  # a plan written before grids: its trials, ids and training
            for field in ("linearized", "eigen_index"):  # TrainConfig fields it did not have
                mine["train"].pop(field, None)
            mine["trials"], saved["trials"] = sorted(mine["trials"]), sorted(saved["trials"])
            keys = ("sweep_id", "trials", "train")  # (it listed trials in another order)
            return sorted(k for k in keys if mine.get(k) != saved.get(k))
        return sorted(k for k in mine.keys() | saved.keys() if mine.get(k) != saved.get(k))


def _artifact_spec(artifact, key: str, values: dict, out_dir) -> ArtifactSpec:
    cfg = artifact.config
    path = artifact.path.resolve()
    if out_dir is not None and path.is_relative_to(Path(out_dir).resolve()):
        path = path.relative_to(Path(out_dir).resolve())
    return ArtifactSpec(
        key=key,
        path=str(path),
        model=cfg.model.name,
        activation=cfg.model.activation,
        dataset=cfg.data.name,
        num_eigen=int(artifact.num_eigen),
        num_train=int(artifact.manifest["num_train"]),
        num_test=int(artifact.manifest["num_test"]),
        values=dict(values),
    )


def artifact_matches(point: ArtifactPoint, artifact_config: Config) -> bool:
    """Whether an artifact computed with ``artifact_config`` is the one of ``point``: equal on
    every artifact-level field (``data``, ``model`` and ``ntk`` values that change a result)."""
    from raysweep.config import ARTIFACT, FIELD_CLASSES

    for key, level in FIELD_CLASSES.items():
        if level != ARTIFACT:
            continue
        section, name = key.split(".")
        mine = getattr(getattr(point.config, section), name)
        if getattr(getattr(artifact_config, section), name) != mine:
            return False
    return True


def plan_sweep(
    config: Config,
    artifacts: Sequence[Any],
    *,
    out_dir: str | os.PathLike | None = None,
    grid: Grid | None = None,
) -> SweepPlan:
    """The checked grid of ``config`` over the loaded ``artifacts``.

    Args:
      config: the resolved config (its axes give the grid, ``train`` the training).
      artifacts: loaded :class:`~raysweep.eigenfunctions.EigenArtifact` objects. With
        artifact-level axes, one per artifact point (matched by their configs); without,
        each given artifact is a point of its own (one per model and dataset).
      out_dir: the results folder; artifacts inside it are recorded by relative path.
      grid: :func:`~raysweep.sweep.grid.expand_grid` of ``config`` if already computed.

    Raises:
      TypeError: ``config`` is not a Config.
      ValueError: empty grid, unknown optimizer, an axis without effect, no artifact for a
        grid point, an eigen-index ≥ the number of eigenvectors of an artifact, two artifacts
        for one point.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a raysweep.config.Config, got {type(config).__name__}.")
    grid = expand_grid(config) if grid is None else grid
    artifacts = list(artifacts)
    if not artifacts:
        raise ValueError(
            "the sweep grid is empty: artifacts has no value. Expected at least one "
            "eigenfunction artifact (python sweeps/eigen_sweep.py computes them)."
        )
    has_artifact_axes = any(len(a.values) for a in grid.artifacts)
    specs: list[ArtifactSpec] = []
    trials: list[TrialSpec] = []
    if not has_artifact_axes:  # each artifact given is a point of its own
        (point,) = grid.artifacts
        for art in artifacts:
            key = f"{name_label(art.config.model.name)}-{name_label(art.config.data.name)}"
            specs.append(_artifact_spec(art, key, {}, out_dir))
        keys = [s.key for s in specs]
        doubles = sorted({k for k in keys if keys.count(k) > 1})
        if doubles:
            raise ValueError(
                f"two artifacts for the same model and dataset {doubles}; trial ids would "
                "collide. Run them as separate sweeps (another out_dir), or make the field "
                "that differs a grid axis (grid.section.field=a,b)."
            )
        for spec in specs:
            suffix, base = f"-{spec.key}", f"-{point.key}"
            for t in grid.trials:
                tid = t.trial_id.replace(base, suffix, 1) if spec.key != point.key else t.trial_id
                trials.append(dataclasses.replace(t, trial_id=tid, artifact=spec.key))
    else:
        for point in grid.artifacts:
            found = [a for a in artifacts if artifact_matches(point, a.config)]
            if not found:
                raise ValueError(
                    f"no eigenfunction artifact for the grid point {point.key} "
                    f"({dict(point.values)}); compute it first (python sweeps/eigen_sweep.py "
                    "computes every artifact of the grid before the sweep)."
                )
            if len(found) > 1:
                raise ValueError(
                    f"{len(found)} artifacts match the grid point {point.key}: "
                    f"{', '.join(str(a.path) for a in found)}; pass one."
                )
            specs.append(_artifact_spec(found[0], point.key, dict(point.values), out_dir))
        trials = list(grid.trials)
    for spec in specs:
        mine = {j for t in trials if t.artifact == spec.key for j in t.eigen_indices}
        too_big = sorted(j for j in mine if j >= spec.num_eigen)
        if too_big:
            raise ValueError(
                f"eigen-index {too_big} >= {spec.num_eigen}, the number of eigenvectors in the "
                f"artifact {spec.path} ({spec.model} on {spec.dataset}); indices are 0-based. "
                f"Use indices below {spec.num_eigen}, or recompute the artifact with a larger "
                "ntk.num_eigen."
            )
    return SweepPlan(
        sweep_id=config.sweep.name,
        artifacts=tuple(specs),
        axes=grid.axes,
        levels=grid.levels,
        pack_size=config.sweep.pack_size,
        train=config.train,
        trials=tuple(trials),
        notes=grid.notes,
    )
