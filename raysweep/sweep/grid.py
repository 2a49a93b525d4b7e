"""The sweep grid: any config field as an axis, expanded into artifacts, trials and targets.

Axes come from :meth:`raysweep.config.Config.axes`: ``train.eigen_index``,
``train.optimizer`` and ``train.linearized`` (defaults ``sweep.eigen_indices``,
``sweep.optimizers``, ``sweep.linearized``) and every ``grid.section.field=v1,v2`` of the
config. Each axis has the class of its field (:data:`raysweep.config.FIELD_CLASSES`), which
decides where its values go:

- **artifact-level** axes (``data.*``, ``model.*``, ``ntk.*``): the cartesian product of their
  values gives the :class:`ArtifactPoint`\\ s, each its own Gram matrix and eigenfunction
  artifact, computed once;
- **program-level** axes (optimizer, network/linearized, momentum, epochs, batch size, loss
  threshold): their product gives the program points; one Tune trial never mixes two;
- **in-pack** axes (eigen-index, ``train.seed``, learning rates): their product gives the
  targets of a program point, cut into packs of ``sweep.pack_size`` consecutive targets, one
  Tune trial per pack (the values vary fastest along the last axis: the seeds of one
  eigen-index share a pack).

So the trials are artifact points × program points × packs, and the targets (rows of the
store) are artifact points × program points × in-pack points: the cartesian product of all
axes, with collapsed points removed once, and the points ``sweep.exclude`` names left out
(e.g. ``{"model.name": "lenet5", "train.seed": [1, 2]}``: LeNet5 with one seed).

Axes without effect: ``train.learning_rate`` and ``train.momentum`` act on SGD only,
``train.adam_learning_rate`` on Adam only, and ``data.seed`` only when ``data.num_train`` or
``data.num_test`` subsamples. Such an axis is *collapsed* at the points it does not act on
(they run once, and their rows do not carry it; :attr:`Grid.notes` says so) and *refused*
(``ValueError``) when it acts on no point at all.

Names: an artifact's key is ``<model>-<dataset>`` plus ``-<field>=<value>`` for its other
artifact-level axes (``lenet5-digits-model.seed=1``); a trial's id is
``<optimizer>-<nn|lin>-pack<p>-<model>-<dataset>`` plus ``-<field>=<value>`` for its other
artifact- and program-level axes (``sgd-nn-pack000-mlp-digits-train.momentum=0.5``); a target's
id within its trial is :func:`raysweep.store.make_target_id` (``j5-seed1``, ``-lr0.02`` when
learning rates are an axis). Characters a file name cannot hold become ``_``; an id that would
be too long or clash ends in a short hash of its point.

:func:`expand_grid` is pure (no artifacts, no Ray): it is what a driver calls first, to know
which artifacts to compute and to refuse a bad grid before any work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.argcheck import check_int
from raysweep.config import (
    ARTIFACT,
    IN_PACK,
    NAD_DATA,
    PROGRAM,
    Config,
    field_class,
    is_import_path,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_MAX_ID = 180
LEARNING_RATE_AXES = ("train.learning_rate", "train.adam_learning_rate")
_NAMED = ("model.name", "data.name", "train.optimizer", "train.linearized")


def _value_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and value.startswith("{"):  # JSON options: k=v+k=v
        try:
            obj = json.loads(value)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return "+".join(f"{_value_text(k)}={_value_text(v)}" for k, v in obj.items()) or "none"
    return _UNSAFE.sub("_", str(value))


def name_label(name: str) -> str:
    """A model or data name as it appears in ids: ``npz:/data/x.npz`` → ``npz-x``, an import
    path ``pkg.mod:Net`` → ``pkg.mod_Net``, a built-in name unchanged."""
    if name.startswith("npz:"):
        return "npz-" + _value_text(Path(name[4:]).stem)
    return _value_text(name)


def _suffix(values: dict[str, Any]) -> str:
    return "".join(f"-{k}={_value_text(v)}" for k, v in values.items() if k not in _NAMED)


def _short_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _fit(name: str, payload: Any) -> str:
    if len(name) <= _MAX_ID:
        return name
    return f"{name[: _MAX_ID - 10]}-h{_short_hash(payload)}"


def applies(key: str, point: dict[str, Any], config: Config) -> bool:
    """Whether axis ``key`` changes anything at ``point`` (its resolved values so far)."""
    if key in ("train.learning_rate", "train.momentum"):
        return point.get("train.optimizer", config.train.optimizer) == "sgd"
    if key == "train.adam_learning_rate":
        return point.get("train.optimizer", config.train.optimizer) == "adam"
    if key == "model.activation":  # the built-in models take it; your own define theirs
        return not is_import_path(point.get("model.name", config.model.name))
    if key in ("model.train_flag", "model.output_index"):
        return is_import_path(point.get("model.name", config.model.name))
    if key == "model.zero_init_residual":
        return point.get("model.name", config.model.name) == "resnet18"
    is_nad = point.get("data.name", config.data.name) == NAD_DATA
    if key.startswith("nad."):
        return is_nad
    if key.startswith("ntk."):  # the NAD experiment computes no Gram
        return not is_nad
    if key == "data.seed":
        if is_nad:  # the seed of the D(u_j) samples
            return True
        num_train = point.get("data.num_train", config.data.num_train)
        num_test = point.get("data.num_test", config.data.num_test)
        return num_train is not None or num_test is not None
    return True


def _product(axes: dict[str, tuple], config: Config, context: dict[str, Any]) -> list[dict]:
    """The product of ``axes`` in order, each point without the axes that do not apply to it
    (given ``context``, the point's values on other levels); duplicates removed."""
    out, seen = [], set()
    keys = list(axes)
    for combo in itertools.product(*(axes[k] for k in keys)):
        full = dict(zip(keys, combo, strict=True))
        point = {k: v for k, v in full.items() if applies(k, {**context, **full}, config)}
        key = tuple(point.items())
        if key not in seen:
            seen.add(key)
            out.append(point)
    return out


@dataclass(frozen=True)
class ArtifactPoint:
    """One artifact-level grid point: its key, axis values and the config it is computed with
    (the base config with those values, no grid). ``subdir``: where its artifact lives in the
    results folder (``""``: ``<out>/eigenfunctions``, the single-artifact layout; else
    ``artifacts/<key>``, holding ``eigenfunctions/`` and ``gram/``)."""

    key: str
    values: tuple[tuple[str, Any], ...]
    config: Config
    subdir: str = ""


@dataclass(frozen=True)
class TargetSpec:
    """One target of a pack: labels ``sign(φ_j)``, batch-order seed, base learning rate η₀,
    and its in-pack axis values."""

    target_id: str
    eigen_index: int
    seed: int
    learning_rate: float
    values: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class TrialSpec:
    """One Tune trial: a pack of targets of one artifact and one program point.

    ``program``: the trial's program-level axis values (at least ``train.optimizer`` and
    ``train.linearized``); ``train``: the resolved :class:`~raysweep.config.TrainConfig` of the
    program point (its rates are the base config's; each target carries its own).
    """

    trial_id: str
    artifact: str
    pack: int
    program: tuple[tuple[str, Any], ...]
    targets: tuple[TargetSpec, ...]
    train: Any = None

    @property
    def optimizer(self) -> str:
        return dict(self.program)["train.optimizer"]

    @property
    def linearized(self) -> bool:
        return bool(dict(self.program)["train.linearized"])

    @property
    def eigen_indices(self) -> tuple[int, ...]:
        """Eigen-index of each target (repeated when seeds or rates share the pack)."""
        return tuple(t.eigen_index for t in self.targets)

    @property
    def epochs(self) -> int:
        return int(self.train.epochs)


@dataclass(frozen=True)
class Grid:
    """:func:`expand_grid`'s result. ``axes``: every axis and its values; ``levels``: each
    axis's class; ``notes``: one line per collapsed axis."""

    axes: dict[str, tuple[Any, ...]]
    levels: dict[str, str]
    artifacts: tuple[ArtifactPoint, ...]
    programs: tuple[dict[str, Any], ...]
    trials: tuple[TrialSpec, ...]
    notes: tuple[str, ...] = ()

    @property
    def num_targets(self) -> int:
        return sum(len(t.targets) for t in self.trials)

    def point_axes(self, trial: TrialSpec, target: TargetSpec) -> dict[str, Any]:
        """Every axis value of one target's grid point (the store's ``axes`` column)."""
        art = next(a for a in self.artifacts if a.key == trial.artifact)
        return {**dict(art.values), **dict(trial.program), **dict(target.values)}


def artifact_dir(out_dir: str | os.PathLike, point: ArtifactPoint) -> Path:
    """Where the artifact of ``point`` lives: ``<out_dir>/<subdir>/eigenfunctions``."""
    return Path(out_dir) / point.subdir / "eigenfunctions"


def gram_dir(out_dir: str | os.PathLike, point: ArtifactPoint) -> Path:
    """Where the Gram tiles of ``point`` live: ``<out_dir>/<subdir>/gram``."""
    return Path(out_dir) / point.subdir / "gram"


def _artifact_config(config: Config, values: dict[str, Any]) -> Config:
    sections: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    replaced = {s: dataclasses.replace(getattr(config, s), **f) for s, f in sections.items()}
    return dataclasses.replace(config, grid=(), **replaced)


_DEFAULT_AXES = {
    "train.eigen_index": "sweep.eigen_indices",
    "train.optimizer": "sweep.optimizers",
    "train.linearized": "sweep.linearized",
}


def _axis_name(config: Config, key: str) -> str:
    """How the user wrote axis ``key``: ``grid.<key>``, or the sweep field it defaults to."""
    if key in dict(config.grid) or key not in _DEFAULT_AXES:
        return f"grid.{key}"
    return _DEFAULT_AXES[key]


def _check_axes(config: Config, axes: dict[str, tuple]) -> None:
    from raysweep.config import OPTIMIZERS

    empty = [_axis_name(config, k) for k, v in axes.items() if not v]
    if empty:
        raise ValueError(
            f"the sweep grid is empty: {', '.join(empty)} has no value. Expected at least one "
            "eigen-index, one optimizer and one of network/linearized (e.g. "
            "sweep.eigen_indices=0,1,2 sweep.optimizers=sgd)."
        )
    unknown = [o for o in axes["train.optimizer"] if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(
            f"unknown optimizer(s) {unknown} in {_axis_name(config, 'train.optimizer')}; choose "
            "among "
            f"{', '.join(OPTIMIZERS)}."
        )
    modes = axes["train.linearized"]
    if any(not isinstance(m, bool) for m in modes):
        raise TypeError(
            f"{_axis_name(config, 'train.linearized')} must hold booleans (False = network, "
            "True = linearized), got "
            f"{modes!r}."
        )
    indices = axes["train.eigen_index"]
    name = _axis_name(config, "train.eigen_index")
    indices = tuple(
        check_int(j, f"each of {name}", minimum=0, hint=f" ({name}={indices!r})") for j in indices
    )
    axes["train.eigen_index"] = indices  # Python ints (NumPy integers are accepted)
    if len(set(indices)) != len(indices):
        raise ValueError(f"the eigen-indices {indices!r} repeat a value; list each once.")


def _combos(axes: dict[str, tuple]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, c, strict=True)) for c in itertools.product(*axes.values())]


def _check_effect(config: Config, axes: dict, levels: dict, programs: list[dict]) -> list[str]:
    """Refuse axes that act on no point; one note per axis collapsed at some points."""
    notes = []
    contexts = {
        ARTIFACT: _combos({k: v for k, v in axes.items() if levels[k] == ARTIFACT}),
        PROGRAM: _combos({k: v for k, v in axes.items() if levels[k] == PROGRAM}),
        IN_PACK: programs,
    }
    for key, values in axes.items():
        points = contexts[levels[key]]
        acting = sum(applies(key, p, config) for p in points)
        if not acting:
            raise ValueError(_no_effect(key, config, axes))
        if len(values) > 1 and acting < len(points):
            notes.append(
                f"grid.{key} acts only where {_where(key)}; the other points run once "
                f"(collapsed), not {len(values)} times."
            )
    return notes


def _where(key: str) -> str:
    return {
        "train.learning_rate": "train.optimizer=sgd",
        "train.momentum": "train.optimizer=sgd",
        "train.adam_learning_rate": "train.optimizer=adam",
        "data.seed": "data.num_train or data.num_test subsamples",
        "model.activation": "model.name is a built-in model",
        "model.train_flag": "model.name is an import path to your own model",
        "model.output_index": "model.name is an import path to your own model",
        "model.zero_init_residual": "model.name=resnet18",
    }.get(key, "data.name is nad" if key.startswith("nad.") else "data.name is not nad")


def _no_effect(key: str, config: Config, axes: dict) -> str:
    if key in ("train.learning_rate", "train.momentum"):
        hint = (
            " (Adam's rate is train.adam_learning_rate: sweep grid.train.adam_learning_rate)"
            if key == "train.learning_rate"
            else ""
        )
        return (
            f"grid.{key} has no effect on this sweep: it acts on SGD only and the optimizers "
            f"are {', '.join(axes['train.optimizer'])}{hint}. Drop the axis or add sgd to "
            "sweep.optimizers."
        )
    if key == "train.adam_learning_rate":
        return (
            "grid.train.adam_learning_rate has no effect on this sweep: it acts on Adam only and "
            f"the optimizers are {', '.join(axes['train.optimizer'])} (SGD's rate is "
            "train.learning_rate: sweep grid.train.learning_rate). Drop the axis or add adam."
        )
    if key == "model.activation":
        return (
            "grid.model.activation has no effect on this sweep: it applies to the built-in "
            "models only, and every model.name is your own (give it as a constructor option in "
            "grid.model.options instead)."
        )
    if key.startswith(("nad.", "ntk.")):
        where = "the NAD experiment (data.name=nad)" if key.startswith("nad.") else "Gram matrices"
        return (
            f"grid.{key} has no effect on this sweep: it applies to {where} only. Drop the axis"
            f"{' or use python sweeps/nad_sweep.py' if key.startswith('nad.') else ''}."
        )
    if key == "model.zero_init_residual":
        return (
            "grid.model.zero_init_residual has no effect on this sweep: it applies to "
            "model.name=resnet18 only. Add resnet18 to the models or drop the axis."
        )
    if key.startswith("model."):
        return (
            f"grid.{key} has no effect on this sweep: it applies to your own models "
            "(model.name=package.module:attr) only, and every model.name is a built-in one."
        )
    return (
        f"grid.{key} has no effect on this sweep: the subsampling seed matters only with "
        "data.num_train or data.num_test set. Drop the axis or subsample."
    )


def _exclusions(config: Config, axes: dict[str, tuple]) -> list[dict[str, list]]:
    """``sweep.exclude`` as ``[{axis: values}]``, checked against the grid's axes."""
    out = []
    for text in config.sweep.exclude:
        rule = json.loads(text)
        unknown = [k for k in rule if k not in axes]
        if unknown:
            raise ValueError(
                f"sweep.exclude names {', '.join(unknown)}, which is not an axis of this sweep; "
                f"the axes are {', '.join(axes)}."
            )
        out.append(rule)  # values the grid does not have match nothing (e.g. fewer seeds)
    return out


def excluded(point: dict[str, Any], rules: list[dict[str, list]]) -> bool:
    """Whether a target's full grid point matches one ``sweep.exclude`` rule."""
    return any(all(k in point and point[k] in vals for k, vals in r.items()) for r in rules)


def _chunks(seq: list, size: int) -> list[list]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def _packs(targets: list, size: int, one_index: bool) -> list[list]:
    """Targets cut into packs of ``size``; with ``one_index`` (the NAD experiment, whose
    inputs D(u_j) depend on the index j) each pack holds targets of a single index."""
    if not one_index:
        return _chunks(targets, size)
    by_index: dict[int, list] = {}
    for t in targets:
        by_index.setdefault(t.eigen_index, []).append(t)
    return [pack for group in by_index.values() for pack in _chunks(group, size)]


def expand_grid(config: Config) -> Grid:
    """The grid of ``config``: artifact points, program points, trials and their targets.

    Raises:
      TypeError: ``config`` is not a Config, or ``sweep.linearized`` is not booleans.
      ValueError: an empty axis, an unknown optimizer, repeated eigen-indices, or an axis that
        has no effect on any point (the message says which field to sweep instead).
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a raysweep.config.Config, got {type(config).__name__}.")
    from raysweep.store.schema import make_target_id

    axes = {k: tuple(v) for k, v in config.axes().items()}
    _check_axes(config, axes)
    rules = _exclusions(config, axes)
    levels = {k: field_class(k) for k in axes}
    art_axes = {k: v for k, v in axes.items() if levels[k] == ARTIFACT}
    prog_axes = {k: v for k, v in axes.items() if levels[k] == PROGRAM}
    pack_axes = {k: v for k, v in axes.items() if levels[k] == IN_PACK}

    art_points = _product(art_axes, config, {})
    programs = _product(prog_axes, config, {})
    notes = _check_effect(config, axes, levels, programs)

    artifacts = []
    for values in art_points:
        cfg = _artifact_config(config, values)
        name = f"{name_label(cfg.model.name)}-{name_label(cfg.data.name)}"
        key = _fit(f"{name}{_suffix(values)}", values)
        artifacts.append(ArtifactPoint(key=key, values=tuple(values.items()), config=cfg))
    if len({a.key for a in artifacts}) != len(artifacts):
        artifacts = [
            dataclasses.replace(a, key=f"{a.key}-h{_short_hash(a.values)}") for a in artifacts
        ]
    if len(artifacts) > 1:
        artifacts = [dataclasses.replace(a, subdir=f"artifacts/{a.key}") for a in artifacts]

    rate_axis = any(k in pack_axes for k in LEARNING_RATE_AXES)
    trials: list[TrialSpec] = []
    for art in artifacts:
        model, dataset = name_label(art.config.model.name), name_label(art.config.data.name)
        for program in programs:
            full = {"train.optimizer": config.train.optimizer, **program}
            train_fields = {k.split(".")[1]: v for k, v in full.items()}
            train = dataclasses.replace(config.train, **train_fields)
            base_rate = (
                train.learning_rate if train.optimizer == "sgd" else train.adam_learning_rate
            )
            targets = []
            for values in _product(pack_axes, config, full):
                if rules and excluded({**dict(art.values), **full, **values}, rules):
                    continue
                rate = values.get(
                    "train.learning_rate"
                    if train.optimizer == "sgd"
                    else "train.adam_learning_rate",
                    base_rate,
                )
                j, seed = (
                    int(values["train.eigen_index"]),
                    int(values.get("train.seed", train.seed)),
                )
                targets.append(
                    TargetSpec(
                        target_id=make_target_id(j, seed, float(rate) if rate_axis else None),
                        eigen_index=j,
                        seed=seed,
                        learning_rate=float(rate),
                        values=tuple(values.items()),
                    )
                )
            if not targets:
                continue
            mode = "lin" if full["train.linearized"] else "nn"
            suffix = _suffix({**dict(art.values), **program})
            packs = _packs(targets, config.sweep.pack_size, art.config.is_nad)
            for p, pack in enumerate(packs):
                name = f"{full['train.optimizer']}-{mode}-pack{p:03d}-{model}-{dataset}{suffix}"
                trials.append(
                    TrialSpec(
                        trial_id=_fit(name, [art.key, program, p]),
                        artifact=art.key,
                        pack=p,
                        program=tuple(full.items()),
                        targets=tuple(pack),
                        train=train,
                    )
                )
    ids = [t.trial_id for t in trials]
    if len(set(ids)) != len(ids):  # values that differ only in unsafe characters
        trials = [
            dataclasses.replace(
                t,
                trial_id=f"{t.trial_id[: _MAX_ID - 10]}-h"
                + _short_hash([t.artifact, t.program, t.pack]),
            )
            for t in trials
        ]
    return Grid(
        axes=axes,
        levels=levels,
        artifacts=tuple(artifacts),
        programs=tuple(programs),
        trials=tuple(trials),
        notes=tuple(notes),
    )
