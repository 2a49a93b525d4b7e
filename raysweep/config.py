"""Experiment configuration: frozen dataclasses, presets and command-line overrides.

A run is described by one :class:`Config`, made of five sections that follow the flow of
DESIGN.md: :class:`DataConfig`, :class:`ModelConfig`, :class:`TrainConfig`,
:class:`NTKConfig` and :class:`SweepConfig`. Every section validates itself on
construction and names the bad value and the allowed ones.

Presets are functions (``smoke``, ``cifar10``, ``mnist``, ``cifar2``); ``get_preset(name)``
looks one up. Overrides use dotted ``key=value`` pairs, as on the command line::

    cfg = apply_overrides(get_preset("smoke"), ["train.epochs=3", "sweep.eigen_indices=0,4,9"])

The resolved config is written next to every result with :func:`save_config` and read back
with :func:`load_config` (JSON; tuples round-trip).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep.argcheck import check_int

DATASET_NAMES = ("digits", "digits2", "mnist", "mnist2", "cifar10", "cifar2")
MODEL_NAMES = ("mlp", "lenet5", "resnet18")
ACTIVATIONS = ("relu", "gelu", "tanh", "softplus", "sigmoid")
OPTIMIZERS = ("sgd", "adam")
NTK_METHODS = ("auto", "contraction", "structured", "ntvp")
EIGEN_METHODS = ("auto", "dense", "block", "nystrom")
NAD_METHODS = ("auto", "dense", "svds", "gram")
COMPANION_STUDIES = ("baseline", "energy", "alignment")
DTYPES = ("float32", "float64")
MIN_SPLIT_SIZE = 10
"""Fewest rows ``data.num_train`` / ``data.num_test`` may keep: every dataset has ten
original classes, and a smaller stratified subsample would drop some of them."""


def is_import_path(name: Any) -> bool:
    """Whether ``name`` looks like ``package.module:attr`` (a user's model or data loader)."""
    if not isinstance(name, str) or name.count(":") != 1 or name.startswith("npz:"):
        return False
    module, attr = name.split(":")
    return all(p.isidentifier() for p in module.split(".")) and all(
        p.isidentifier() for p in attr.split(".")
    )


NAD_DATA = "nad"
"""``data.name`` of the NAD experiment: the linearly separable data D(u_j) built from each NAD
(Appendix C.1 of the paper; ``data.num_train``/``num_test`` samples, ``data.seed``)."""


def _check_dataset_name(name: Any) -> None:
    """A built-in or registered dataset, ``npz:PATH``, an import path to a loader, or ``nad``."""
    if isinstance(name, str) and (name in (*DATASET_NAMES, NAD_DATA) or is_import_path(name)):
        return
    if isinstance(name, str) and name.startswith("npz:"):
        if len(name) == 4:
            raise ValueError("data.name='npz:' names no file; write data.name=npz:PATH.npz.")
        return
    from raysweep.data.registry import registered_datasets

    if isinstance(name, str) and name in registered_datasets():
        return
    known = ", ".join((*DATASET_NAMES, *registered_datasets()))
    raise ValueError(
        f"data.name={name!r} is not supported; choose one of {known}, npz:PATH (a .npz with "
        "x_train, y_train, x_test, y_test) or an import path package.module:loader."
    )


def _json_object(section: str, name: str, value: Any) -> str:
    """``value`` (a JSON object as text, or a dict) as canonical JSON text (sorted keys)."""
    if isinstance(value, dict):
        obj = value
    else:
        try:
            obj = json.loads(value) if isinstance(value, str) else None
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{section}.{name}={value!r} is not valid JSON ({err}); write a JSON object, "
                f"e.g. {section}.{name}='{{\"features\": 16}}'."
            ) from None
    if not isinstance(obj, dict):
        raise ValueError(
            f"{section}.{name} must be a JSON object of keyword options, e.g. "
            f"'{{\"features\": 16}}', got {value!r}."
        )
    try:
        return json.dumps(obj, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"{section}.{name}: {err}; use JSON values only.") from None


def _exclusion(value: Any) -> str:
    """One ``sweep.exclude`` entry as canonical JSON ``{axis: [values]}`` (keys sorted)."""
    try:
        obj = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as err:
        raise ValueError(f"sweep.exclude entry {value!r} is not valid JSON ({err}).") from None
    if not isinstance(obj, dict) or not obj:
        raise ValueError(
            f"sweep.exclude entries must be JSON objects {{axis: value or [values]}}, e.g. "
            f'{{"model.name": "lenet5", "train.seed": [1, 2]}}; got {value!r}.'
        )
    out = {}
    for key, vals in obj.items():
        if not isinstance(key, str) or key.count(".") != 1:
            raise ValueError(
                f"sweep.exclude: {key!r} is not an axis name section.field (e.g. train.seed)."
            )
        vals = vals if isinstance(vals, list) else [vals]
        if not vals:
            raise ValueError(f"sweep.exclude: {key} lists no value.")
        out[key] = vals
    return json.dumps(out, sort_keys=True)


def _choice(section: str, name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(
            f"{section}.{name}={value!r} is not supported; choose one of {', '.join(allowed)}."
        )


def _positive(section: str, name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    check_int(value, f"{section}.{name}", minimum=1, hint=" or None" if allow_none else "")


def _non_negative_int(section: str, name: str, value: Any) -> None:
    check_int(value, f"{section}.{name}", minimum=0)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where its files are, and how much of it to use.

    ``root=None`` means the ``RAYSWEEP_DATA`` environment variable, else the default data
    folder of :mod:`raysweep.data`. ``num_train``/``num_test`` subsample (stratified,
    deterministic in ``seed``), at least :data:`MIN_SPLIT_SIZE` rows each; ``None`` keeps the
    whole split.
    """

    name: str = "digits"
    root: str | None = None
    num_train: int | None = None
    num_test: int | None = None
    seed: int = 0

    def __post_init__(self):
        _check_dataset_name(self.name)
        for name in ("num_train", "num_test"):
            value = getattr(self, name)
            _positive("data", name, value, allow_none=True)
            if value is not None and value < MIN_SPLIT_SIZE:
                raise ValueError(
                    f"data.{name}={value} is too small: a split needs at least "
                    f"{MIN_SPLIT_SIZE} rows, one per original class, so that the stratified "
                    f"subsample keeps every class; give data.{name}={MIN_SPLIT_SIZE} or more, "
                    "or none for the whole split."
                )
        _non_negative_int("data", "seed", self.seed)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, activation and initialization seed of the network f(θ, x).

    ``name``: a built-in model (:data:`MODEL_NAMES`) or an import path ``package.module:attr``
    to your own: a Flax NNX Module class or factory (built as ``attr(**options,
    rngs=nnx.Rngs(seed))``), a Flax linen Module (class or instance; called with
    ``train_flag=True/False`` when ``train_flag`` is set) or a function returning ``(apply_fn,
    params)`` (see :mod:`raysweep.models.user`). ``activation`` applies to the built-in
    models only. ``options``: keyword options of the model as a JSON object, e.g.
    ``model.options='{"features": 16}'`` (your model's constructor options; for the built-in
    ones their options, e.g. ``{"hidden_sizes": [512, 512]}`` for the MLP). ``train_flag``:
    the train/eval keyword of your linen module. ``output_index``: which output is the logit
    when the model has several (``None``: it must have exactly one).

    ``zero_init_residual`` (ResNet18 only; default true, as in the authors' code and Flax's
    reference ResNet): the scale of the last batch norm of each residual block starts at 0, so
    at θ₀ every block is its shortcut. The residual branches' convolutions then have zero
    gradient at θ₀ and are absent from Θ₀ (their weights still train). ``false`` starts the
    scales at 1, so Θ₀ includes them.
    """

    name: str = "mlp"
    activation: str = "relu"
    seed: int = 0
    options: str = "{}"
    train_flag: str = "train"
    output_index: int | None = None
    zero_init_residual: bool = True

    def __post_init__(self):
        if not isinstance(self.zero_init_residual, bool):
            raise ValueError(
                f"model.zero_init_residual must be true or false, got {self.zero_init_residual!r}."
            )
        if not is_import_path(self.name):
            _choice("model", "name", self.name, MODEL_NAMES)
        _choice("model", "activation", self.activation, ACTIVATIONS)
        _non_negative_int("model", "seed", self.seed)
        object.__setattr__(self, "options", _json_object("model", "options", self.options))
        if not isinstance(self.train_flag, str) or not (
            self.train_flag == "" or self.train_flag.isidentifier()
        ):
            raise ValueError(
                f"model.train_flag must be the name of your linen module's train/eval keyword "
                f"argument (e.g. train), or empty for none; got {self.train_flag!r}."
            )
        if self.output_index is not None:
            _non_negative_int("model", "output_index", self.output_index)


@dataclass(frozen=True)
class TrainConfig:
    """The paper's training scheme: one logit, binary cross-entropy, SGD or Adam.

    The learning rate decays linearly to 0 over all steps, from ``learning_rate`` for SGD
    (paper: 0.05, momentum 0.9) and from ``adam_learning_rate`` for Adam (the paper does not
    give one; Adam's usual 1e-3, the default of Kingma & Ba and of Optax's examples: Adam's
    step is about the rate in every coordinate, so SGD's 0.05 would be 50 times larger a
    step; at 1e-3 Adam fits the top eigenfunctions of the default run as SGD does).

    ``loss_threshold`` defines "iterations to reach 0.01 training loss" (Figs 4-5): the
    optimizer steps done when the loss on the *whole training set* (not one minibatch's) is
    first at or below it. The loss is checked ``threshold_checks`` times per epoch, evenly
    spaced, the last at the end of the epoch (where the epoch's evaluation gives it for free),
    so the metric's resolution is ``steps_per_epoch / threshold_checks`` steps (default 1 check:
    10 steps on digits, 390 on CIFAR-10, 1% of the paper's 100 epochs). More checks cost one
    forward pass over the training set each.

    ``seed`` is the data-order seed (the batch order of every epoch). ``linearized`` (train
    the linearization instead of the network) and ``eigen_index`` (the labels are
    ``sign(φ_j)`` of eigenfunction ``j``) are what one sweep point trains; the training
    functions of :mod:`raysweep.training` take the mode, the labels and the seed as arguments
    and ignore these three fields.
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.05
    adam_learning_rate: float = 0.001
    momentum: float = 0.9
    batch_size: int = 128
    epochs: int = 100
    loss_threshold: float = 0.01
    threshold_checks: int = 1
    seed: int = 0
    linearized: bool = False
    eigen_index: int = 0

    def __post_init__(self):
        _choice("train", "optimizer", self.optimizer, OPTIMIZERS)
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise ValueError(
                f"train.learning_rate must be a positive number, got {self.learning_rate!r}."
            )
        if not (isinstance(self.adam_learning_rate, int | float) and self.adam_learning_rate > 0):
            raise ValueError(
                "train.adam_learning_rate must be a positive number, got "
                f"{self.adam_learning_rate!r}."
            )
        if not (isinstance(self.momentum, int | float) and 0 <= self.momentum < 1):
            raise ValueError(f"train.momentum must be in [0, 1), got {self.momentum!r}.")
        _positive("train", "batch_size", self.batch_size)
        _positive("train", "epochs", self.epochs)
        if not (isinstance(self.loss_threshold, int | float) and self.loss_threshold > 0):
            raise ValueError(
                f"train.loss_threshold must be a positive number, got {self.loss_threshold!r}."
            )
        _positive("train", "threshold_checks", self.threshold_checks)
        _non_negative_int("train", "seed", self.seed)
        if not isinstance(self.linearized, bool):
            raise ValueError(f"train.linearized must be true or false, got {self.linearized!r}.")
        _non_negative_int("train", "eigen_index", self.eigen_index)


@dataclass(frozen=True)
class NTKConfig:
    """How the Gram matrix Θ₀ is computed and eigendecomposed.

    ``num_eigen`` is k, the number of top eigenpairs kept (the paper: 1,000).
    ``tile_size`` is the block size of the tiled Gram; ``memory_budget_mb`` bounds the
    per-example Jacobian block a worker holds; ``num_workers`` Gram actors (``None``: one per
    GPU, else one per CPU). ``keep_resident``: the Gram workers keep their tiles in host
    memory for the eigensolver's products (about ``2 N²`` bytes in float32 over all workers);
    ``false`` streams them from the tile store at every product instead (slower, but the Gram
    then only needs disk: the way past RAM, see :func:`raysweep.eigenfunctions.gram_memory`).
    """

    method: str = "auto"
    eigen_method: str = "auto"
    num_eigen: int = 1000
    tile_size: int = 1024
    memory_budget_mb: int = 2048
    num_workers: int | None = None
    dtype: str = "float32"
    keep_resident: bool = True

    def __post_init__(self):
        _choice("ntk", "method", self.method, NTK_METHODS)
        _choice("ntk", "eigen_method", self.eigen_method, EIGEN_METHODS)
        _positive("ntk", "num_eigen", self.num_eigen)
        _positive("ntk", "tile_size", self.tile_size)
        _positive("ntk", "memory_budget_mb", self.memory_budget_mb)
        _positive("ntk", "num_workers", self.num_workers, allow_none=True)
        _choice("ntk", "dtype", self.dtype, DTYPES)
        if not isinstance(self.keep_resident, bool):
            raise ValueError(
                f"ntk.keep_resident must be true or false, got {self.keep_resident!r}."
            )


@dataclass(frozen=True)
class NADConfig:
    """The NAD experiment (Appendix C): NADs of the model at the origin, then D(u_j).

    Read only when ``data.name`` is ``"nad"``. ``k``: NADs computed per model (the eigen-indices
    of the sweep are NAD indices, below ``k``); ``input_size`` × ``input_size`` ×
    ``channels``: the input shape; ``epsilon``, ``sigma``: D(u) = ε·y·u + w with
    w ~ N(0, σ(I − u uᵀ)); ``method``: the solver of :func:`raysweep.nads.nads`.
    """

    k: int = 10
    input_size: int = 32
    channels: int = 1
    epsilon: float = 1.0
    sigma: float = 1.0
    method: str = "auto"

    def __post_init__(self):
        _positive("nad", "k", self.k)
        _positive("nad", "input_size", self.input_size)
        _positive("nad", "channels", self.channels)
        for name in ("epsilon", "sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"nad.{name} must be a positive number, got {value!r}.")
        _choice("nad", "method", self.method, NAD_METHODS)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, self.channels)


@dataclass(frozen=True)
class SweepConfig:
    """The grid of trials: eigen-indices × optimizers × {network, linearized}.

    ``eigen_indices`` are 0-based positions in the descending eigenvalue order and must be
    smaller than ``ntk.num_eigen``. ``pack_size`` targets share one compiled program.
    ``storage_path`` is where sweeps are written (made absolute at run time).
    ``max_retries`` retries of a failed trial, which continues from its checkpoint, saved every
    ``checkpoint_every`` epochs (0: no checkpoints; a retry starts at epoch 1).
    ``studies``: the companion studies the main job runs after the sweep, for the findings
    (:mod:`raysweep.studies.companions`): ``baseline`` (network vs linearization on the binary
    task, every model, optimizer and seed of the grid), ``energy`` (Table 1, with its curve
    over epochs) and ``alignment`` (Figs 6-7, first model); ``()`` runs none.
    ``exclude``: grid points left out of the product, each a JSON object ``{axis: value or
    [values]}``: a target is dropped when every named axis has one of the given values, e.g.
    ``'{"model.name": "lenet5", "train.seed": [1, 2]}'`` trains LeNet5 with one seed only
    (command line: ``sweep.exclude='[{"model.name": "lenet5", "train.seed": [1, 2]}]'``).
    """

    name: str = "eigen_sweep"
    eigen_indices: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64)
    optimizers: tuple[str, ...] = ("sgd", "adam")
    linearized: tuple[bool, ...] = (False, True)
    pack_size: int = 8
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_retries: int = 2
    checkpoint_every: int = 5
    storage_path: str = "results"
    studies: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.eigen_indices:
            raise ValueError("sweep.eigen_indices is empty; give at least one index, e.g. 0,1,2.")
        for j in self.eigen_indices:
            _non_negative_int("sweep", "eigen_indices[...]", j)
        if len(set(self.eigen_indices)) != len(self.eigen_indices):
            raise ValueError(
                f"sweep.eigen_indices has duplicates: {self.eigen_indices!r}; list each index "
                "once, e.g. 0,1,2."
            )
        if not self.optimizers:
            raise ValueError("sweep.optimizers is empty; choose from sgd, adam.")
        for opt in self.optimizers:
            _choice("sweep", "optimizers[...]", opt, OPTIMIZERS)
        if not self.linearized or any(not isinstance(v, bool) for v in self.linearized):
            raise ValueError(
                "sweep.linearized must be a non-empty tuple of booleans "
                f"(False = network, True = linearization), got {self.linearized!r}."
            )
        _positive("sweep", "pack_size", self.pack_size)
        if not (isinstance(self.cpus_per_trial, int | float) and self.cpus_per_trial > 0):
            raise ValueError(f"sweep.cpus_per_trial must be > 0, got {self.cpus_per_trial!r}.")
        if not (isinstance(self.gpus_per_trial, int | float) and self.gpus_per_trial >= 0):
            raise ValueError(f"sweep.gpus_per_trial must be >= 0, got {self.gpus_per_trial!r}.")
        _non_negative_int("sweep", "max_retries", self.max_retries)
        _non_negative_int("sweep", "checkpoint_every", self.checkpoint_every)
        if not self.storage_path:
            raise ValueError("sweep.storage_path is empty; give a folder for the results.")
        for name in self.studies:
            _choice("sweep", "studies[...]", name, COMPANION_STUDIES)
        if len(set(self.studies)) != len(self.studies):
            raise ValueError(f"sweep.studies lists a study twice: {self.studies!r}.")
        object.__setattr__(self, "exclude", tuple(_exclusion(e) for e in self.exclude))


@dataclass(frozen=True)
class Config:
    """A whole experiment. ``preset`` records which preset it started from.

    ``grid``: the sweep axes beyond the defaults, ``(("section.field", (v1, v2, ...)), ...)``
    in the order given (command line: ``grid.section.field=v1,v2``); see :data:`FIELD_CLASSES`
    for what each field's axis does, and :mod:`raysweep.sweep.grid` for the expansion. The
    section values are the base point: an axis replaces its field's value.
    """

    preset: str = "smoke"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ntk: NTKConfig = field(default_factory=NTKConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    nad: NADConfig = field(default_factory=NADConfig)
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def __post_init__(self):
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise TypeError(
                    f"Config.{name} must be a {cls.__name__}, got {type(getattr(self, name))}."
                )
        object.__setattr__(self, "grid", check_grid(self.grid, self))
        axes = dict(self.grid)
        indices = axes.get("train.eigen_index", self.sweep.eigen_indices)
        if self.is_nad:
            num_k = min(axes.get("nad.k", (self.nad.k,)))
            too_big = [j for j in indices if j >= num_k]
            if too_big:
                raise ValueError(
                    f"NAD indices {too_big} are >= nad.k={num_k}, the NADs computed per model; "
                    "indices are 0-based: raise nad.k or drop those indices."
                )
            return
        num_eigen = min(axes.get("ntk.num_eigen", (self.ntk.num_eigen,)))
        too_big = [j for j in indices if j >= num_eigen]
        if too_big:
            name = (
                "grid.train.eigen_index" if "train.eigen_index" in axes else "sweep.eigen_indices"
            )
            raise ValueError(
                f"{name} {too_big} are >= ntk.num_eigen={num_eigen}; indices are 0-based into "
                "the top-k eigenvectors: raise ntk.num_eigen or drop those indices."
            )

    @property
    def is_nad(self) -> bool:
        """Whether this is the NAD experiment (``data.name == "nad"``)."""
        return self.data.name == NAD_DATA

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable nested dict (tuples become lists; ``grid`` a dict of lists)."""
        out = dataclasses.asdict(self)
        out["grid"] = {key: list(values) for key, values in self.grid}
        return out

    def axes(self) -> dict[str, tuple[Any, ...]]:
        """Every sweep axis with its values: ``train.eigen_index``, ``train.optimizer`` and
        ``train.linearized`` (from ``sweep.eigen_indices``, ``sweep.optimizers`` and
        ``sweep.linearized`` unless the grid names them), then the grid's other axes."""
        out: dict[str, tuple[Any, ...]] = {
            "train.eigen_index": tuple(self.sweep.eigen_indices),
            "train.optimizer": tuple(self.sweep.optimizers),
            "train.linearized": tuple(self.sweep.linearized),
        }
        out.update(dict(self.grid))
        return out


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "ntk": NTKConfig,
    "sweep": SweepConfig,
    "nad": NADConfig,
}


# ----------------------------------------------------------------------------- axis classes

ARTIFACT, PROGRAM, IN_PACK, RUN = "artifact", "program", "in-pack", "run"
AXIS_LEVELS = (ARTIFACT, PROGRAM, IN_PACK)

FIELD_CLASSES: dict[str, str] = {
    # artifact-level: a point of its own Gram matrix and eigenfunctions
    "data.name": ARTIFACT,
    "data.num_train": ARTIFACT,
    "data.num_test": ARTIFACT,
    "data.seed": ARTIFACT,
    "model.name": ARTIFACT,
    "model.activation": ARTIFACT,
    "model.seed": ARTIFACT,
    "model.options": ARTIFACT,
    "model.train_flag": ARTIFACT,
    "model.output_index": ARTIFACT,
    "model.zero_init_residual": ARTIFACT,
    "ntk.method": ARTIFACT,
    "ntk.eigen_method": ARTIFACT,
    "ntk.num_eigen": ARTIFACT,
    "ntk.dtype": ARTIFACT,
    "nad.k": ARTIFACT,
    "nad.input_size": ARTIFACT,
    "nad.channels": ARTIFACT,
    "nad.epsilon": ARTIFACT,
    "nad.sigma": ARTIFACT,
    "nad.method": ARTIFACT,
    # program-level: another compiled training program, so another Tune trial
    "train.optimizer": PROGRAM,
    "train.linearized": PROGRAM,
    "train.momentum": PROGRAM,
    "train.batch_size": PROGRAM,
    "train.epochs": PROGRAM,
    "train.loss_threshold": PROGRAM,
    "train.threshold_checks": PROGRAM,
    # in-pack: targets of one trial, vmapped in one program
    "train.eigen_index": IN_PACK,
    "train.seed": IN_PACK,
    "train.learning_rate": IN_PACK,
    "train.adam_learning_rate": IN_PACK,
    # run settings: how or where a run computes, not what; never an axis
    "data.root": RUN,
    "ntk.tile_size": RUN,
    "ntk.memory_budget_mb": RUN,
    "ntk.num_workers": RUN,
    "ntk.keep_resident": RUN,
}
"""The class of every config field as a sweep axis (``sweep.*`` fields are all run settings).

- ``artifact``: each value needs its own Gram matrix and eigenfunction artifact (computed
  once per distinct artifact-level point, before the trials that use it);
- ``program``: each value compiles another training program: one Tune trial per value;
- ``in-pack``: the values are targets of one trial, trained side by side in one program
  (eigen-index: the labels; ``train.seed``: the batch order; learning rates: a per-target
  scale of the update);
- ``run``: settings of how or where a run computes (folders, tile sizes, workers,
  resources), which do not change a result: not an axis.
"""

_RUN_REASONS = {
    "data.root": "it says where the data files are, not which data",
    "ntk.tile_size": "it changes how the Gram matrix is computed, not the matrix",
    "ntk.memory_budget_mb": "it changes how the Gram matrix is computed, not the matrix",
    "ntk.num_workers": "it changes how the Gram matrix is computed, not the matrix",
    "ntk.keep_resident": "it changes where the Gram's tiles are kept, not the matrix",
}


def field_class(key: str) -> str:
    """The class (:data:`FIELD_CLASSES`) of ``section.field``, e.g. ``"train.seed"`` →
    ``"in-pack"``; ``ValueError`` for an unknown field."""
    section, _, name = key.partition(".")
    if section not in _SECTIONS or name not in {
        f.name for f in dataclasses.fields(_SECTIONS[section])
    }:
        known = ", ".join(sorted(k for k, c in FIELD_CLASSES.items() if c != RUN))
        raise ValueError(
            f"grid.{key} names no config field; axes are section.field among: {known}."
        )
    return RUN if section == "sweep" else FIELD_CLASSES[key]


def check_grid(grid: Any, config: Config) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``grid`` as a tuple of ``(key, values)``, every key an axis and every value valid.

    Accepts a mapping or pairs. Raises ``ValueError`` naming the axis for an unknown field,
    a run setting, an empty axis, a repeated value or key, or a value its field refuses.
    """
    pairs = list(grid.items()) if isinstance(grid, dict) else list(grid)
    out, seen = [], set()
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise TypeError(f'grid entries must be ("section.field", values) pairs, got {pair!r}.')
        key, values = str(pair[0]), pair[1]
        level = field_class(key)
        if level == RUN:
            why = _RUN_REASONS.get(key, "sweep.* settings describe the run, not a grid point")
            raise ValueError(
                f"grid.{key} cannot be a sweep axis: {why}. Set it once with {key}=VALUE."
            )
        if key in seen:
            raise ValueError(
                f"grid.{key} is given twice; give all its values once: grid.{key}=a,b."
            )
        seen.add(key)
        if isinstance(values, str) or not isinstance(values, Sequence):
            values = (values,)
        values = tuple(values)
        if not values:
            raise ValueError(f"grid.{key} has no values; give at least one, e.g. grid.{key}=a,b.")
        doubles = sorted({repr(v) for v in values if values.count(v) > 1})
        if doubles:
            raise ValueError(f"grid.{key} repeats {', '.join(doubles)}; list each value once.")
        section, name = key.split(".")
        base = getattr(config, section)
        for value in values:
            try:  # the section's own check of the value
                dataclasses.replace(base, **{name: value})
            except (TypeError, ValueError) as err:
                raise ValueError(f"grid.{key}={value!r}: {err}") from None
        out.append((key, values))
    return tuple(out)


# ----------------------------------------------------------------------------- presets


def smoke() -> Config:
    """Offline default: digits (1,797 8x8 images), MLP, 8 eigen-indices, few epochs.

    Minutes on a 2-core CPU: Gram 1,797², top 128 eigenpairs, 2 optimizers x 2 models x
    8 indices = 32 targets in 4 packed trials of 5 epochs.
    """
    return Config(
        preset="smoke",
        data=DataConfig(name="digits"),
        model=ModelConfig(name="mlp"),
        train=TrainConfig(epochs=5),
        ntk=NTKConfig(num_eigen=128, tile_size=512),
        sweep=SweepConfig(eigen_indices=(0, 1, 2, 4, 8, 16, 32, 64)),
    )


DIGITS_INDICES = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987)
"""The default run's eigen-indices: 16, spaced geometrically (Fibonacci) from 0 to 987."""


def digits() -> Config:
    """The default run (``python sweeps/eigen_sweep.py``): the paper's findings on digits.

    sklearn's digits (1,797 8x8 images, offline), MLP and LeNet5, the top 1,024 eigenpairs,
    16 eigen-indices from 0 to 987, SGD and Adam, network and linearization, the paper's
    training (batch 128, SGD momentum 0.9 from 0.05 decayed linearly) for 100 epochs (about
    1,000 steps: the MLP reaches the 0.01 loss on indices up to 55 only after 30-85 epochs),
    then the binary baseline (digits2), the energy concentration with its curve over epochs and
    the alignment after training, and the findings with verdicts. The MLP runs 3 batch orders
    (seeds) with both optimizers; LeNet5 one seed with SGD (``sweep.exclude``): a LeNet5
    target-epoch costs 50-100 ms on a CPU core against 3-8 ms for the MLP, so LeNet5's full
    product alone would take four times the rest of the run. Minutes on a 2-core CPU (README,
    "The default run"); ``sweep.exclude=`` (empty) runs the full product.
    """
    return Config(
        preset="digits",
        data=DataConfig(name="digits"),
        model=ModelConfig(name="mlp"),
        train=TrainConfig(epochs=100),
        ntk=NTKConfig(num_eigen=1024, tile_size=512),
        sweep=SweepConfig(
            eigen_indices=DIGITS_INDICES,
            pack_size=16,
            studies=COMPANION_STUDIES,
            exclude=(
                json.dumps({"model.name": "lenet5", "train.seed": [1, 2]}),
                json.dumps({"model.name": "lenet5", "train.optimizer": "adam"}),
            ),
        ),
        grid=(("model.name", ("mlp", "lenet5")), ("train.seed", (0, 1, 2))),
    )


def _paper_indices(num_eigen: int = 1000) -> tuple[int, ...]:
    """The paper's eigen-index grid: dense at the top of the spectrum, sparser below."""
    dense = list(range(0, 10))
    mid = list(range(10, 100, 10))
    tail = list(range(100, num_eigen, 100))
    return tuple(dense + mid + tail)


def cifar10() -> Config:
    """Paper scale: CIFAR-10 train+test (60,000 images), LeNet5, top 1,000 eigenfunctions,
    100 epochs of SGD/Adam, network and linearized, then the CIFAR2 baseline, Table 1 and the
    alignment, and the findings. Needs GPUs (see README). Models are opt-in:
    ``grid.model.name=mlp,lenet5`` (``resnet18`` alone is tens of GPU-hours)."""
    return Config(
        preset="cifar10",
        data=DataConfig(name="cifar10"),
        model=ModelConfig(name="lenet5"),
        train=TrainConfig(epochs=100),
        ntk=NTKConfig(num_eigen=1000, tile_size=2048),
        sweep=SweepConfig(
            eigen_indices=_paper_indices(), gpus_per_trial=0.25, studies=COMPANION_STUDIES
        ),
    )


def mnist() -> Config:
    """Paper scale on MNIST train+test (70,000 images), LeNet5, top 1,000 eigenfunctions."""
    return Config(
        preset="mnist",
        data=DataConfig(name="mnist"),
        model=ModelConfig(name="lenet5"),
        train=TrainConfig(epochs=100),
        ntk=NTKConfig(num_eigen=1000, tile_size=2048),
        sweep=SweepConfig(
            eigen_indices=_paper_indices(), gpus_per_trial=0.25, studies=COMPANION_STUDIES
        ),
    )


def cifar2() -> Config:
    """CIFAR2 (classes 0-4 vs 5-9): the binary-task baseline, 200 epochs as in the paper."""
    return Config(
        preset="cifar2",
        data=DataConfig(name="cifar2"),
        model=ModelConfig(name="lenet5"),
        train=TrainConfig(epochs=200),
        ntk=NTKConfig(num_eigen=1000, tile_size=2048),
        sweep=SweepConfig(
            eigen_indices=_paper_indices(), gpus_per_trial=0.25, studies=COMPANION_STUDIES
        ),
    )


NAD_PAPER_INDICES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1022)
"""The ``nad_paper`` indices: geometric over all 1,023 NADs of a 32x32x1 input (the directions
that are hard to learn lie deep in the spectrum: see :data:`NAD_INDICES`)."""


NAD_INDICES = (0, 4, 32, 128, 511)
"""The NAD default's indices: from the top NAD to the middle of the 1,024 of a 32x32x1 input.
Measured (GeLU LeNet5, 1,000 samples, 20 epochs): test accuracy 0.998 on D(u_0), 0.69 at
j = 100, 0.51 (chance) at j = 500 and 1,022; the top 32 NADs are all learned (0.89-0.99 at
j = 9, 20, 31), so a sweep over them cannot show the fall toward chance."""


def nad() -> Config:
    """The NAD experiment, small (``sweeps/nad_sweep.py``'s default): GeLU LeNet5 on 32x32x1,
    the top 512 NADs, D(u_j) for j = 0, 4, 32, 128, 511 with 1,000/1,000 samples, 30 epochs of
    SGD, network and linearized: long enough to decide claim 7 (the network fits D(u_0) after
    about 10 epochs, the linearization reaches 95 % training accuracy after about 25), minutes
    on a 2-core CPU."""
    return Config(
        preset="nad",
        data=DataConfig(name=NAD_DATA, num_train=1000, num_test=1000),
        model=ModelConfig(name="lenet5", activation="gelu"),
        train=TrainConfig(epochs=30),
        nad=NADConfig(k=512),
        sweep=SweepConfig(eigen_indices=NAD_INDICES, optimizers=("sgd",), name="nad_sweep"),
    )


def nad_paper() -> Config:
    """The NAD experiment at the paper's sizes (our reading of Appendix C): GeLU LeNet5 and
    ResNet18 (width 64), all 1,023 NADs (the dense solver: 2,048 products), 12 indices from 0
    to 1,022, 10,000/10,000 samples, SGD with momentum 0.9, lr 0.05 decayed linearly, batch
    128, 100 epochs. Wants a GPU (``--gpus-per-trial 0.25``)."""
    return Config(
        preset="nad_paper",
        data=DataConfig(name=NAD_DATA, num_train=10_000, num_test=10_000),
        model=ModelConfig(name="lenet5", activation="gelu"),
        train=TrainConfig(epochs=100),
        nad=NADConfig(k=1023),
        sweep=SweepConfig(eigen_indices=NAD_PAPER_INDICES, optimizers=("sgd",), name="nad_sweep"),
        grid=(("model.name", ("lenet5", "resnet18")),),
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "digits": digits,
    "smoke": smoke,
    "cifar10": cifar10,
    "mnist": mnist,
    "cifar2": cifar2,
    "nad": nad,
    "nad_paper": nad_paper,
}

SMOKE_TRAIN, SMOKE_TEST = 200, 100
"""Data sizes of ``--smoke-test`` (every script uses the same, so they share one artifact)."""


def smoke_config(config: Config) -> Config:
    """``config`` shrunk to what ``--smoke-test`` runs (CI): the one place that says how.

    Every experiment keeps its shape (sections, axes, code paths) and gets tiny sizes: 200/100
    samples, 16 eigenpairs, eigen-indices 0, 3, 15, 2 epochs, packs of 8, sweep name
    ``smoke_test``; the NAD experiment 256/256 samples on 16x16 inputs, 3 NADs, indices 0, 2,
    1 epoch (``smoke_test_nad``). Grid axes are kept (drop them with overrides if needed).
    """
    if config.is_nad:
        return dataclasses.replace(
            config,
            data=dataclasses.replace(config.data, num_train=256, num_test=256),
            train=dataclasses.replace(config.train, epochs=1),
            nad=dataclasses.replace(config.nad, k=3, input_size=16),
            sweep=dataclasses.replace(
                config.sweep, eigen_indices=(0, 2), pack_size=8, name="smoke_test_nad"
            ),
            grid=tuple((k, v) for k, v in config.grid if k != "train.eigen_index"),
        )
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, num_train=SMOKE_TRAIN, num_test=SMOKE_TEST),
        train=dataclasses.replace(config.train, epochs=2),
        ntk=NTKConfig(num_eigen=16, tile_size=128),
        sweep=dataclasses.replace(
            config.sweep, eigen_indices=(0, 3, 15), pack_size=8, name="smoke_test"
        ),
        grid=tuple((k, v) for k, v in config.grid if k != "train.eigen_index"),
    )


def get_preset(name: str) -> Config:
    """The preset called ``name`` (one of ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]()


# ----------------------------------------------------------------------------- overrides


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[name]


def _parse_scalar(text: str, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", ""):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _parse_scalar(text, inner[0], key)
    try:
        if typ is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
    except ValueError:
        raise ValueError(
            f"Override {key}={text!r}: expected a value of type {typ.__name__}."
        ) from None
    return text


def _parse_value(text: str, typ: Any, key: str) -> Any:
    if typing.get_origin(typ) is tuple:
        (inner, *_rest) = typing.get_args(typ)
        text = text.strip()
        if text.startswith("["):
            try:
                items = [v if isinstance(v, str) else json.dumps(v) for v in json.loads(text)]
            except json.JSONDecodeError as err:
                raise ValueError(f"Override {key}={text!r} is not a valid JSON list.") from err
        else:
            items = [t for t in (s.strip() for s in text.split(",")) if t]
        return tuple(_parse_scalar(item, inner, key) for item in items)
    return _parse_scalar(text, typ, key)


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """Apply ``section.field=value`` strings (e.g. ``train.epochs=3``) to ``config``.

    Tuples take comma-separated values (``sweep.eigen_indices=0,5,9``) or a JSON list.
    ``None`` is written ``none``. Unknown keys raise ``ValueError`` naming the valid ones.
    ``grid.section.field=v1,v2`` makes the field a sweep axis (``Config.grid``; a later one
    for the same field replaces it). A plain ``section.field=value`` of a field that is an
    axis of the preset's grid fixes it: the axis goes (``model.name=lenet5`` on the default
    preset runs LeNet5 alone), and so do the ``sweep.exclude`` rules that name it, those
    whose values hold the new value keeping their other axes (:func:`_fix_axis`).
    """
    sections = {name: getattr(config, name) for name in _SECTIONS}
    grid = dict(config.grid)
    fixed: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like section.field=value.")
        key, text = item.split("=", 1)
        key = key.strip()
        if key.startswith("grid."):
            axis = key.removeprefix("grid.")
            if axis.count(".") != 1:
                raise ValueError(
                    f"Sweep axis {key!r} must be grid.section.field=v1,v2 "
                    "(e.g. grid.model.name=mlp,lenet5)."
                )
            field_class(axis)  # names an existing field
            section, name = axis.split(".")
            typ = _field_type(_SECTIONS[section], name)
            if typing.get_origin(typ) is tuple:
                raise ValueError(f"grid.{axis}: a list-valued field cannot be a sweep axis.")
            grid[axis] = _parse_value(text, tuple[typ, ...], key)
            continue
        if key.count(".") != 1:
            raise ValueError(
                f"Override key {key!r} must be section.field with a section among "
                f"{', '.join(_SECTIONS)} (e.g. train.epochs=3)."
            )
        section, name = key.split(".")
        if section not in _SECTIONS:
            raise ValueError(
                f"Unknown config section {section!r} in {key!r}; choose one of "
                f"{', '.join(_SECTIONS)}."
            )
        cls = _SECTIONS[section]
        names = [f.name for f in dataclasses.fields(cls)]
        if name not in names:
            raise ValueError(
                f"Unknown field {name!r} in section {section!r}; fields are {', '.join(names)}."
            )
        value = _parse_value(text, _field_type(cls, name), key)
        sections[section] = dataclasses.replace(sections[section], **{name: value})
        if key in grid:
            del grid[key]
            fixed[key] = value
    if fixed:
        sweep = sections["sweep"]
        rules = _fix_axis(sweep.exclude, fixed)
        if rules != tuple(sweep.exclude):
            sections["sweep"] = dataclasses.replace(sweep, exclude=rules)
    return dataclasses.replace(config, **sections, grid=tuple(grid.items()))


def _fix_axis(exclude: Sequence[str], fixed: dict[str, Any]) -> tuple[str, ...]:
    """``sweep.exclude`` once the axes of ``fixed`` are single values: a rule naming one of
    them applies (without it) when its values hold the fixed value, else it is dropped; a rule
    left with no axis is dropped too (it cannot exclude everything)."""
    out = []
    for text in exclude:
        rule = json.loads(text)
        if any(k in fixed and fixed[k] not in rule[k] for k in rule):
            continue
        rest = {k: v for k, v in rule.items() if k not in fixed}
        if rest:
            out.append(json.dumps(rest, sort_keys=True))
    return tuple(out)


def resolve_paths(config: Config) -> Config:
    """``config`` with relative ``npz:`` data paths (in ``data.name`` and its grid values) made
    absolute against the current folder: call it where the job starts, before Ray or Tune run
    anything from another folder."""
    from raysweep.data import resolve_data_name

    data = dataclasses.replace(config.data, name=resolve_data_name(config.data.name))
    grid = tuple(
        (key, tuple(resolve_data_name(v) for v in values) if key == "data.name" else values)
        for key, values in config.grid
    )
    return dataclasses.replace(config, data=data, grid=grid)


# ----------------------------------------------------------------------------- JSON


def config_from_dict(data: dict[str, Any]) -> Config:
    """Inverse of :meth:`Config.to_dict` (lists become tuples again)."""
    kwargs: dict[str, Any] = {"preset": data.get("preset", "custom")}
    kwargs["grid"] = tuple((k, tuple(v)) for k, v in dict(data.get("grid") or {}).items())
    for name, cls in _SECTIONS.items():
        raw = dict(data.get(name, {}))
        for f in dataclasses.fields(cls):
            if f.name in raw and isinstance(raw[f.name], list):
                raw[f.name] = tuple(raw[f.name])
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown fields {sorted(unknown)} in config section {name!r}.")
        kwargs[name] = cls(**raw)
    return Config(**kwargs)


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as JSON (atomically: temp file + rename)."""
    from raysweep.atomic import atomic_write_json

    return atomic_write_json(path, config.to_dict(), indent=2)


def load_config(path: str | os.PathLike) -> Config:
    """Read a config written by :func:`save_config`."""
    return config_from_dict(json.loads(Path(path).read_text()))
