"""Plan and cost before launch: what a sweep will run and an estimate of what it costs.

:func:`estimate_plan` (:func:`describe_plan`, its text) is what ``raysweep plan`` and every
script's ``--dry-run`` print before any work, write, Ray start or ``ray up``: the trials (count
and the first few ids with their pack sizes), the targets, the artifacts to compute (one per
artifact-level grid point: key, dataset, model and N = num_train + num_test, with where N came
from) and an estimate of CPU-hours (GPU-hours where a GPU was measured) and of the wall-clock
time on the resources given. It reads no dataset when the config tells the sizes (built-in
datasets, ``data.num_train`` / ``data.num_test``, the NAD experiment); an ``npz:`` file is
sized from its array headers, and only an import-path loader is called. It never starts Ray.

The estimate scales the measurements of :data:`MEASUREMENTS` (each with its hardware and
source) by the model's size as JAX/XLA gives it, for the built-in models and your own alike:
:func:`forward_macs` (multiply-adds per example, half the flops of XLA's cost analysis of the
forward pass) and :func:`param_count` (``jax.eval_shape`` of the initialization). The cost
model, in CPU-seconds (one CPU busy for one second), is stated in the printed "Assumptions":
training ∝ epochs × steps × batch × MACs at the MLP-on-digits rate (× 3 if linearized), plus a
per-trial start-up; the Gram ∝ N² × parameters from the measured Gram of the model family (the
H200 figure on a GPU run where there is one), plus a fixed start-up; the eigensolver ∝ N² × k;
NADs ∝ k × MACs. Your own model is scaled from LeNet5's figures. With a results folder of
finished trials (``--out``) the training estimate is rescaled by their measured times (the
metrics store's ``wall_time``) over what this model predicts for them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Sizing lowers programs (never runs one) and may start JAX's backends: in a planning process
# JAX must not take most of a GPU (set before JAX starts; the scripts do the same).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import flax.linen as nn
import jax
import jax.numpy as jnp

from raysweep.config import Config, ModelConfig, is_import_path
from raysweep.eigenfunctions import model_of
from raysweep.models import (
    FunctionModel,
    LinenModel,
    count_params,
    init_variables,
    make_apply_fn,
)

__all__ = [
    "MEASUREMENTS",
    "ArtifactEstimate",
    "Calibration",
    "DatasetSize",
    "Measurement",
    "PlanEstimate",
    "dataset_size",
    "describe_plan",
    "estimate_plan",
    "forward_macs",
    "measured_calibration",
    "param_count",
    "trial_seconds",
]

# ----------------------------------------------------------------------------- measurements

CPU_2CORE = "a shared 2-core CPU (this repository's dev machine)"
BUSY_2CORE = "a busy 2-core CPU"
H200 = "one NVIDIA H200 (JAX 0.11.2, float32 at full precision)"
_PERF, _MAIN = "README.md, Performance", "README.md, The main job"
_NTK, _GPU = f"{_PERF}, NTK Gram (bench_ntk.py)", f"{_PERF}, NTK Gram (gpu_suite.sh)"
_NAD = "sweeps/nad_sweep.py docstring (timings)"

# fmt: off
_TABLE = {  # key: (what, seconds, CPU cores busy (0: a GPU figure), hardware, source, per)
    "train.mlp": (
        "sweep, MLP on digits, SGD, network, packs of 64, 3 epochs, 2 trials at a time: "
        "262,921 targets/h marginal", 3600 / 262_921, 2, CPU_2CORE,
        f"{_PERF}, Distributed Gram and sweep (bench_sweep.py --targets 64,192)",
        "per target (3 epochs)"),
    "sweep.mlp": (
        "2,000-target sweep end to end, MLP on digits, sgd/adam x network/linearized, "
        "1 epoch, 16 trials (packs of 125): 249,200 targets/h", 28.9, 2, CPU_2CORE,
        f"{_PERF}, Sweep grid (bench_sweep.py --only-grid)", ""),
    "trial.conv": (
        "NAD sweep trial, LeNet5 on 32x32x1, 1 target, 1,000 samples, 3 epochs "
        "(30-50 s each; midpoint)", 40.0, 1, BUSY_2CORE, _NAD, "per trial"),
    "gram.mlp": ("MLP NTK Gram, 4,000 CIFAR-shaped inputs (auto)", 0.884, 2, CPU_2CORE, _NTK, ""),
    "gram.lenet5": (
        "LeNet5 NTK Gram, 4,000 CIFAR-shaped inputs (auto)", 2.95, 2, CPU_2CORE, _NTK, ""),
    "gram.resnet18": (
        "ResNet18 NTK Gram, 256 CIFAR-shaped inputs (auto)", 19.5, 2, CPU_2CORE, _NTK, ""),
    "run.default": (
        "default run (preset smoke: Gram + 128 eigenpairs, 4 trials of 8 targets x 5 "
        "epochs), after installation", 34.0, 2, CPU_2CORE, _MAIN, ""),
    "gram.start": (
        "default run: Gram of 1,797 digits (MLP) and 128 eigenpairs, actors and compilation",
        5.0, 2, CPU_2CORE, _MAIN, ""),
    "gpu.gram.lenet5": (
        "LeNet5 NTK Gram, 10,000 CIFAR-shaped inputs (auto)", 0.85, 0, H200, _GPU, ""),
    "gpu.gram.resnet18": (
        "ResNet18 NTK Gram, 2,000 CIFAR-shaped inputs (contraction, 40 GB budget)",
        4.04, 0, H200, _GPU, ""),
    "eigen": (
        "block eigensolver, top 1,000 of the MLP Gram of N = 12,000 CIFAR-format images",
        47.6, 2, CPU_2CORE, f"{_PERF}, Eigensolvers (bench_eigen.py --cases cifar)", ""),
    "nad.lenet5": ("LeNet5 NADs, k = 10, 32x32x1 (svds)", 9.0, 2, BUSY_2CORE, _NAD, ""),
    "nad.resnet18": (
        "ResNet18 (width 8) NADs, k = 10, 32x32x1 (svds)", 90.0, 2, BUSY_2CORE, _NAD, ""),
}
# fmt: on

# The measurements' reference shapes and sizes.
DIGITS = (8, 8, 1)
CIFAR = (32, 32, 3)
_REF_BATCH, _REF_TRAIN = 128, 1_347  # digits train split, the sweep benchmarks' batch
_GRAM_REF_N = {"mlp": 4_000, "lenet5": 4_000, "resnet18": 256}
_GPU_GRAM_REF_N = {"lenet5": 10_000, "resnet18": 2_000}
_EIGEN_REF = (12_000, 1_000)
# the NAD figures (and trial.conv) were measured with the nad preset's GeLU: XLA counts its flops
_NAD_REF = {"lenet5": ((32, 32, 1), "{}", 10), "resnet18": ((32, 32, 1), '{"width": 8}', 10)}

LINEARIZED_FACTOR = 3.0
"""A linearized training step costs this many network steps (README, "Cost of the
paper-scale run": an assumption, not a measurement)."""

EIGEN_CORES = 2
"""Cores the eigensolver (on the driver) is taken to use for the wall-clock (as measured)."""


@dataclass(frozen=True)
class Measurement:
    """One measured figure the estimate scales, with its provenance."""

    key: str
    what: str
    seconds: float
    cores: int  # CPU cores busy during the measurement (0: a GPU figure)
    hardware: str
    source: str
    per: str = ""  # what the seconds are per (e.g. "per target"), when not the whole run

    @property
    def cpu_seconds(self) -> float:
        return self.seconds * max(self.cores, 1)

    def line(self) -> str:
        device = f"{self.cores} core{'s' if self.cores != 1 else ''} busy" if self.cores else "GPU"
        per = f" {self.per}" if self.per else ""
        return (
            f"{self.what}: {self.seconds:.3g} s{per} ({device}) on {self.hardware} [{self.source}]"
        )


MEASUREMENTS: dict[str, Measurement] = {k: Measurement(k, *row) for k, row in _TABLE.items()}
"""Every figure the estimate uses (README.md, section Performance, unless said)."""

# ----------------------------------------------------------------------------- model sizes

_BATCH = 8  # examples in the forward pass XLA counts (the count is divided by it)


def _family(name: str) -> str:
    """The measured model whose figures ``name`` is scaled from: ``mlp``, ``lenet5`` or
    ``resnet18``; your own model (an import path) is scaled from LeNet5's."""
    return name if name in ("mlp", "lenet5", "resnet18") else "lenet5"


def _abstract_variables(module: Any, shape: tuple[int, int, int]) -> Any:
    """The variables of ``module`` on inputs ``shape`` with ``jax.ShapeDtypeStruct`` leaves,
    from ``jax.eval_shape`` of its initialization (no compute). An NNX model is initialized
    for real: its initializer is compiled once (on CPU) and cannot be traced."""
    if isinstance(module, FunctionModel):
        return jax.eval_shape(lambda: init_variables(module, shape, seed=0))
    if not isinstance(module, nn.Module | LinenModel):
        return init_variables(module, shape, seed=0)
    builtin = isinstance(module, nn.Module)
    linen = module if builtin else module.module()
    flag = {"train": False} if builtin else module.flag(False)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    variables = jax.eval_shape(lambda x: linen.init(jax.random.key(0), x, **flag), x)
    return {k: v for k, v in variables.items() if k in ("params", "batch_stats") and v}


def _xla_size(model: ModelConfig, shape: tuple[int, int, int]) -> tuple[int, int]:
    """``(MACs per example, parameters)``: half the flops XLA counts in the lowered forward
    pass (:func:`raysweep.models.make_apply_fn`) on a batch of ``_BATCH``, per example."""
    module = model_of(model)
    variables = _abstract_variables(module, shape)
    stats = variables.get("batch_stats") or {}

    def forward(params: Any, stats: Any, x: Any) -> Any:
        full = {"params": params, **({"batch_stats": stats} if stats else {})}
        return make_apply_fn(module, full)(params, x)

    x = jax.ShapeDtypeStruct((_BATCH, *shape), jnp.float32)
    lowered = jax.jit(forward).lower(variables["params"], stats, x)
    cost = lowered.cost_analysis() or lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return round(cost["flops"] / (2 * _BATCH)), count_params(variables["params"])


@functools.lru_cache(maxsize=256)
def _model_size(model: ModelConfig, shape: tuple[int, int, int]) -> tuple[int, int, str]:
    """``(MACs per example, parameters, why)``; ``why`` is ``""``, or why your own model could
    not be built here: it is then sized as LeNet5. A built-in model that cannot be built on
    ``shape`` raises ValueError."""
    try:
        return (*_xla_size(model, shape), "")
    except Exception as err:  # noqa: BLE001 - your model's own error, any type
        if not is_import_path(model.name):
            raise ValueError(
                f"model {model.name} cannot run on inputs {'x'.join(map(str, shape))}: {err}"
            ) from err
        why = textwrap.shorten(f"{type(err).__name__}: {err}", 200, placeholder=" ...")
    lenet = _model_size(ModelConfig(name="lenet5"), shape if min(shape[:2]) >= 4 else CIFAR)
    return (*lenet[:2], why)


def _size(model: ModelConfig, shape) -> tuple[int, int, str]:
    """:func:`_model_size`, cached per architecture (the seed does not change the size)."""
    fields = ("name", "activation", "options", "train_flag", "output_index")
    key = ModelConfig(**{f: getattr(model, f) for f in fields})
    return _model_size(key, tuple(int(s) for s in shape))


def _model(name: str, options: str | dict | None, fields: dict) -> ModelConfig:
    text = json.dumps(options, sort_keys=True) if isinstance(options, dict) else options
    return ModelConfig(name=name, options=text or "{}", **fields)


def forward_macs(name: str, shape, options: str | dict | None = None, **fields: Any) -> int:
    """Multiply-adds per example of one forward pass of ``name`` (a built-in model or an
    import path; ``options`` and other ``fields`` as :class:`~raysweep.config.ModelConfig`'s)
    on inputs ``shape`` (H, W, C), as XLA counts them (half its flops)."""
    return _size(_model(name, options, fields), shape)[0]


def param_count(name: str, shape, options: str | dict | None = None, **fields: Any) -> int:
    """Parameters of the model (as :func:`forward_macs`), from ``jax.eval_shape`` of its
    initialization."""
    return _size(_model(name, options, fields), shape)[1]


# ----------------------------------------------------------------------------- derived rates

_MLP_DIGITS_MACS = forward_macs("mlp", DIGITS)
TRAIN_CPU_S_PER_TARGET_EPOCH = MEASUREMENTS["train.mlp"].cpu_seconds / 3
"""CPU-seconds per target-epoch, MLP on digits, network (packed, marginal)."""
TRAIN_CPU_S_PER_MAC = TRAIN_CPU_S_PER_TARGET_EPOCH / (
    math.ceil(_REF_TRAIN / _REF_BATCH) * _REF_BATCH * _MLP_DIGITS_MACS
)
"""CPU-seconds per forward multiply-add of a network training step (per example)."""


def _train_seconds(macs: int, n_train: int, batch: int, epochs: int, linearized: bool) -> float:
    steps = math.ceil(n_train / batch)
    mode = LINEARIZED_FACTOR if linearized else 1.0
    return epochs * steps * batch * macs * TRAIN_CPU_S_PER_MAC * mode


def _mixed(macs: int, n_train: int, batch: int, epochs: int) -> float:
    """Seconds of one target, averaged over network and linearized (the measured mix)."""
    return sum(_train_seconds(macs, n_train, batch, epochs, lin) for lin in (False, True)) / 2


_MLP_START = MEASUREMENTS["sweep.mlp"].cpu_seconds - 2_000 * _mixed(
    _MLP_DIGITS_MACS, _REF_TRAIN, _REF_BATCH, 1
)
_CONV_START = MEASUREMENTS["trial.conv"].cpu_seconds - _mixed(
    forward_macs("lenet5", (32, 32, 1), activation="gelu"), 1_000, 128, 3
)
TRIAL_START_CPU_S = {
    "mlp": max(_MLP_START / 16, 0.0),
    "lenet5": max(_CONV_START, 0.0),
    "resnet18": max(_CONV_START, 0.0),
}
"""Per-trial start-up (actor, payload, compilation) in CPU-seconds by model family: a measured
trial's time minus its modelled compute; ResNet18 is assumed to start like LeNet5 (not
measured; it compiles longer)."""

ARTIFACT_START_CPU_S = MEASUREMENTS["gram.start"].cpu_seconds
"""Fixed cost of one Gram artifact (actors, compilation): the default run's Gram + eigen step
(its compute is under a tenth of a second by the scaling below)."""

RUN_START_S = max(
    MEASUREMENTS["run.default"].seconds
    - MEASUREMENTS["gram.start"].seconds
    - 2 * (TRIAL_START_CPU_S["mlp"] + 8 * _mixed(_MLP_DIGITS_MACS, _REF_TRAIN, _REF_BATCH, 5)),
    0.0,
)
"""One-off wall seconds of a run (Ray and Tune start-up, first compilations): the default
run's measured time minus its Gram step and its 4 trials (2 at a time on 2 cores)."""

# ----------------------------------------------------------------------------- dataset sizes

_BUILTIN_SIZES = {
    "digits": (1_347, 450, DIGITS),
    "digits2": (1_347, 450, DIGITS),
    "mnist": (60_000, 10_000, (28, 28, 1)),
    "mnist2": (60_000, 10_000, (28, 28, 1)),
    "cifar10": (50_000, 10_000, CIFAR),
    "cifar2": (50_000, 10_000, CIFAR),
}


@dataclass(frozen=True)
class DatasetSize:
    """Train and test rows of an artifact's dataset, its image shape and where they came from
    (``source``: ``"known"`` without reading, ``"read"`` from the files, or ``"unknown"``)."""

    num_train: int | None
    num_test: int | None
    input_shape: tuple[int, int, int] | None
    source: str
    how: str

    @property
    def n(self) -> int | None:
        if self.num_train is None or self.num_test is None:
            return None
        return self.num_train + self.num_test


def _npz_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the arrays of an ``.npz`` from their headers (no array data is read)."""
    from numpy.lib import format as npy

    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for key in ("x_train", "x_test"):
            with archive.open(f"{key}.npy") as f:
                major, _ = npy.read_magic(f)
                read = npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0
                shapes[key] = tuple(read(f)[0])
    return shapes


def _nhwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple((*shape[:3], 1, 1)[:3])  # type: ignore[return-value]


def dataset_size(config: Config) -> DatasetSize:
    """The sizes of ``config``'s dataset, without reading it where the config says them."""
    data = config.data
    want_train, want_test = data.num_train, data.num_test
    if config.is_nad:
        shape = config.nad.input_shape
        if want_train is None or want_test is None:
            return DatasetSize(
                want_train, want_test, shape, "unknown", "data.num_train/num_test unset"
            )
        return DatasetSize(want_train, want_test, shape, "known", "D(u_j) sizes from the config")
    name = data.name
    if name in _BUILTIN_SIZES or name.startswith("npz:"):
        if name in _BUILTIN_SIZES:
            full_train, full_test, shape = _BUILTIN_SIZES[name]
            source, how = "known", "built-in split size, not read"
            if want_train is not None or want_test is not None:
                how += "; subsampled by data.num_train/num_test"
        else:
            try:
                shapes = _npz_shapes(name[4:])
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
                return DatasetSize(None, None, None, "unknown", f"cannot read {name[4:]}: {err}")
            full_train, full_test = shapes["x_train"][0], shapes["x_test"][0]
            shape = _nhwc(shapes["x_train"][1:])
            source, how = "read", "read from the .npz array headers (no data loaded)"
        return DatasetSize(
            min(want_train or full_train, full_train),
            min(want_test or full_test, full_test),
            shape,
            source,
            how,
        )
    if want_train is not None and want_test is not None and not is_import_path(name):
        return DatasetSize(want_train, want_test, None, "known", "data.num_train/num_test")
    try:  # an import-path or registered loader: only calling it tells the sizes
        from raysweep.data import load_dataset

        ds = load_dataset(name, data.root, num_train=want_train, num_test=want_test, seed=data.seed)
    except Exception as err:  # noqa: BLE001 - the plan says why N is unknown
        return DatasetSize(want_train, want_test, None, "unknown", f"loader failed: {err}")
    return DatasetSize(
        ds.num_train, ds.num_test, tuple(ds.input_shape), "read", "read (the loader was called)"
    )


# ----------------------------------------------------------------------------- trials


def trial_seconds(grid: Any, sizes: dict[str, DatasetSize]) -> dict[str, tuple | None]:
    """Per trial id, its modelled ``(start-up, total)`` CPU-seconds on 1 CPU (start-up plus its
    targets' training), or None where its training-set size is unknown."""
    configs = {a.key: a.config for a in grid.artifacts}
    out: dict[str, tuple | None] = {}
    for t in grid.trials:
        model, size = configs[t.artifact].model, sizes[t.artifact]
        if size.num_train is None or size.input_shape is None:
            out[t.trial_id] = None
            continue
        macs = _size(model, size.input_shape)[0]
        batch, epochs = int(t.train.batch_size), int(t.train.epochs)
        per_target = _train_seconds(macs, size.num_train, batch, epochs, t.linearized)
        start = TRIAL_START_CPU_S[_family(model.name)]
        out[t.trial_id] = (start, start + len(t.targets) * per_target)
    return out


@dataclass(frozen=True)
class Calibration:
    """Training times measured in a results folder against what the model predicts for it."""

    folder: Path
    trials: int
    measured_s: float
    predicted_s: float
    device: str  # "CPU" or "GPU": where that folder's trials ran

    @property
    def scale(self) -> float:
        return self.measured_s / self.predicted_s if self.predicted_s > 0 else 1.0

    def line(self) -> str:
        return (
            f"training rates measured in {self.folder} ({self.trials} finished trials on "
            f"{self.device}: {self.measured_s:,.0f} s measured vs {self.predicted_s:,.0f} s "
            f"predicted): training estimates x{self.scale:.3g}"
        )


def measured_calibration(folder: str | os.PathLike) -> Calibration | None:
    """The calibration from a results folder's metrics store and ``config.json``; ``None``
    when it has no finished trial (or is not a results folder). Only reads."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "metrics").is_dir():
        return None
    try:
        from raysweep.config import load_config
        from raysweep.store import scan_metrics, trial_states
        from raysweep.sweep.grid import expand_grid

        config = load_config(folder / "config.json")
        states = trial_states(scan_metrics(folder)[0])
        grid = expand_grid(config)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    predicted = trial_seconds(grid, {a.key: dataset_size(a.config) for a in grid.artifacts})
    done = [
        (float(s.wall_time), predicted[s.trial_id][1])  # type: ignore[index]
        for s in states
        if s.status in ("finished", "diverged") and predicted.get(s.trial_id) is not None
    ]
    if not done:
        return None
    return Calibration(
        folder=folder.resolve(),
        trials=len(done),
        measured_s=sum(m for m, _ in done),
        predicted_s=sum(p for _, p in done),
        device="GPU" if config.sweep.gpus_per_trial > 0 else "CPU",
    )


# ----------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class ArtifactEstimate:
    """One artifact-level grid point: what it computes and its estimated cost."""

    key: str
    kind: str  # "Gram + eigenpairs" or "NADs"
    dataset: str
    model: str
    family: str  # the measured model its figures are scaled from: mlp, lenet5 or resnet18
    size: DatasetSize
    k: int
    gram_cpu_s: float = 0.0
    gram_gpu_s: float = 0.0
    eigen_cpu_s: float = 0.0
    nad_cpu_s: float = 0.0

    @property
    def n(self) -> int | None:
        return self.size.n

    @property
    def measurements(self) -> tuple[str, ...]:
        """Keys of the :data:`MEASUREMENTS` this artifact's cost is scaled from."""
        if self.kind == "NADs":
            return (f"nad.{self.family}",)
        if not (self.gram_cpu_s or self.gram_gpu_s):
            return ()
        gram = f"gpu.gram.{self.family}" if self.gram_gpu_s else f"gram.{self.family}"
        return (gram, "gram.start", "eigen")


@dataclass(frozen=True)
class PlanEstimate:
    """The plan of a config and its cost estimate; ``str()`` is what ``--dry-run`` prints.

    Hours are CPU-hours (one CPU for one hour) unless named GPU; ``train_compute_hours`` scales
    with epochs x steps x targets, ``trial_start_hours`` with the number of trials.
    """

    title: str
    num_trials: int
    num_targets: int
    num_artifacts: int
    num_programs: int
    pack_size: int
    trials_preview: tuple[tuple[str, int], ...]
    axes: tuple[tuple[str, int, str], ...]
    artifacts: tuple[ArtifactEstimate, ...]
    train_compute_hours: float
    trial_start_hours: float
    longest_trial_hours: float
    gpu_run: bool
    cpus_per_trial: float
    gpus_per_trial: float
    cpus: float | None = None
    gpus: float | None = None
    resources: str = ""
    calibration: Calibration | None = None
    notes: tuple[str, ...] = ()
    launch: str = ""
    unknown_trials: int = 0
    run_start_hours: float = RUN_START_S / 3600
    sweep_name: str = "eigen_sweep"

    def _total(self, field: str) -> float:
        return sum(getattr(a, field) for a in self.artifacts) / 3600

    gram_cpu_hours = property(lambda self: self._total("gram_cpu_s"))
    gram_gpu_hours = property(lambda self: self._total("gram_gpu_s"))
    eigen_hours = property(lambda self: self._total("eigen_cpu_s"))
    nad_hours = property(lambda self: self._total("nad_cpu_s"))
    train_hours = property(lambda self: self.train_compute_hours + self.trial_start_hours)

    @property
    def train_on_gpu(self) -> bool:
        """Whether the training hours are GPU-hours (measured in a GPU results folder)."""
        return self.gpu_run and self.calibration is not None and self.calibration.device == "GPU"

    @property
    def cpu_hours(self) -> float:
        train = 0.0 if self.train_on_gpu else self.train_hours
        return self.gram_cpu_hours + self.eigen_hours + self.nad_hours + train

    @property
    def gpu_hours(self) -> float:
        train = self.train_hours * self.gpus_per_trial if self.train_on_gpu else 0.0
        return self.gram_gpu_hours + train

    @property
    def slots(self) -> int:
        """Trials at a time: as many as the CPUs (and GPUs) hold, at most all of them."""
        slots = min(max(1, int(max(self.cpus or 1.0, 1.0) // self.cpus_per_trial)), self.num_trials)
        if self.gpu_run and self.gpus:
            slots = min(slots, max(1, int(max(self.gpus, 1.0) // self.gpus_per_trial)))
        return max(slots, 1)

    @property
    def wall_hours(self) -> float:
        """Stages one after another: artifacts on all CPUs (GPUs), the eigensolver on the
        driver's cores, then the trials :attr:`slots` at a time (at least the longest one)."""
        cpus, gpus = max(self.cpus or 1.0, 1.0), max(self.gpus or 1.0, 1.0)
        artifacts = self.gram_cpu_hours / cpus + self.gram_gpu_hours / gpus
        artifacts += (self.eigen_hours + self.nad_hours) / min(cpus, EIGEN_CORES)
        trials = max(self.train_hours / self.slots, self.longest_trial_hours)
        return self.run_start_hours + artifacts + trials

    def __str__(self) -> str:
        return _format(self)


def _artifact(point: Any, size: DatasetSize, gpu_run: bool, notes: list[str]) -> ArtifactEstimate:
    """The cost of one artifact-level grid point (notes about it are appended to ``notes``)."""
    from raysweep.sweep.grid import name_label

    cfg = point.config
    model, family = cfg.model.name, _family(cfg.model.name)
    common = dict(
        key=point.key,
        dataset=name_label(cfg.data.name),
        model=name_label(model),
        family=family,
        size=size,
    )
    shape = cfg.nad.input_shape if cfg.is_nad else size.input_shape
    if shape is not None:
        macs, params, why = _size(cfg.model, shape)
        if why:
            notes.append(f"{model}: cannot be built here ({why}); costed as LeNet5.")
        elif model != family:
            notes.append(
                f"{model}: your own model, {params:,} parameters, {macs:,} MACs per example "
                "(XLA's count); scaled from LeNet5's measurements."
            )
    if cfg.is_nad:
        ref_shape, ref_opts, ref_k = _NAD_REF[family]
        ratio = macs / forward_macs(family, ref_shape, ref_opts, activation="gelu")
        from raysweep.nads.solve import nad_products

        # the measurement is svds for k = 10; scale by the products the config's solver needs
        dim = int(math.prod(cfg.nad.input_shape))
        products = nad_products(dim, cfg.nad.k, cfg.nad.method) / nad_products(
            int(math.prod(ref_shape)), ref_k, "svds"
        )
        nad = MEASUREMENTS[f"nad.{family}"].cpu_seconds * products * ratio
        return ArtifactEstimate(kind="NADs", k=cfg.nad.k, nad_cpu_s=nad, **common)
    n = size.n
    k = min(cfg.ntk.num_eigen, n) if n else cfg.ntk.num_eigen
    if n is None or shape is None:
        notes.append(f"{point.key}: N unknown ({size.how}); its Gram is not costed.")
        return ArtifactEstimate(kind="Gram + eigenpairs", k=k, **common)
    scale = params / param_count(family, CIFAR)  # the pair products are P long
    gram_cpu, gram_gpu = ARTIFACT_START_CPU_S, 0.0
    if gpu_run and family in _GPU_GRAM_REF_N:
        ref_n = _GPU_GRAM_REF_N[family]
        gram_gpu = MEASUREMENTS[f"gpu.gram.{family}"].seconds * (n / ref_n) ** 2 * scale
    else:
        ref_n = _GRAM_REF_N[family]
        gram_cpu += MEASUREMENTS[f"gram.{family}"].cpu_seconds * (n / ref_n) ** 2 * scale
    ref_n, ref_k = _EIGEN_REF
    eigen = MEASUREMENTS["eigen"].cpu_seconds * (n / ref_n) ** 2 * (k / ref_k)
    return ArtifactEstimate(
        kind="Gram + eigenpairs",
        k=k,
        gram_cpu_s=gram_cpu,
        gram_gpu_s=gram_gpu,
        eigen_cpu_s=eigen,
        **common,
    )


def estimate_plan(
    config: Config,
    *,
    cpus: float | None = None,
    gpus: float | None = None,
    resources: str = "",
    results: str | os.PathLike | None = None,
    launch: str = "",
    title: str = "",
    preview: int = 5,
) -> PlanEstimate:
    """The plan of ``config`` (:func:`raysweep.sweep.grid.expand_grid`) and its cost.

    Args:
      config: the resolved config (preset, overrides, grid).
      cpus, gpus: the resources the run gets, for the wall-clock (``None``: per 1 CPU / GPU).
      resources: words for those resources (``"this machine's 8 CPUs"``).
      results: a results folder whose finished trials calibrate the training rates (read
        only; ignored when it has none).
      launch: the command that runs the plan.
      title: the first line's subject.
      preview: how many trial ids to list.

    Raises:
      ValueError, TypeError: a bad grid (as :func:`expand_grid`).
    """
    from raysweep.sweep.grid import expand_grid

    grid = expand_grid(config)
    gpu_run = config.sweep.gpus_per_trial > 0
    notes: list[str] = list(grid.notes)
    sizes = {point.key: dataset_size(point.config) for point in grid.artifacts}
    arts = [_artifact(point, sizes[point.key], gpu_run, notes) for point in grid.artifacts]
    for family in sorted({a.family for a in arts if gpu_run and a.gram_cpu_s and not a.gram_gpu_s}):
        notes.append(f"{family} Gram: no GPU measurement; CPU-hours shown.")

    known = [c for c in trial_seconds(grid, sizes).values() if c is not None]
    unknown = len(grid.trials) - len(known)
    start = sum(first for first, _ in known)
    compute = sum(total for _, total in known) - start
    longest = max((total for _, total in known), default=0.0)
    calibration = measured_calibration(results) if results is not None else None
    if calibration is not None:
        if calibration.device == ("GPU" if gpu_run else "CPU"):
            compute, start, longest = (v * calibration.scale for v in (compute, start, longest))
        else:
            notes.append(
                f"{calibration.folder} ran on {calibration.device}, this plan on "
                f"{'GPU' if gpu_run else 'CPU'}: its rates are not used."
            )
            calibration = None
    if unknown:
        notes.append(f"{unknown} trial(s) not costed: their training-set size is unknown.")
    if gpu_run and calibration is None:
        notes.append(
            "training: no GPU measurement; CPU-hours shown (a GPU should be faster; README "
            '"Cost of the paper-scale run" gives a flop-based GPU guess).'
        )
    return PlanEstimate(
        title=title or f"preset {config.preset}, sweep {config.sweep.name}",
        num_trials=len(grid.trials),
        num_targets=grid.num_targets,
        num_artifacts=len(grid.artifacts),
        num_programs=len(grid.programs),
        pack_size=config.sweep.pack_size,
        trials_preview=tuple((t.trial_id, len(t.targets)) for t in grid.trials[:preview]),
        axes=tuple((k, len(v), grid.levels[k]) for k, v in grid.axes.items()),
        artifacts=tuple(arts),
        train_compute_hours=compute / 3600,
        trial_start_hours=start / 3600,
        longest_trial_hours=longest / 3600,
        gpu_run=gpu_run,
        cpus_per_trial=float(config.sweep.cpus_per_trial),
        gpus_per_trial=float(config.sweep.gpus_per_trial),
        cpus=cpus,
        gpus=gpus,
        resources=resources,
        calibration=calibration,
        notes=tuple(dict.fromkeys(notes)),
        launch=launch,
        unknown_trials=unknown,
        sweep_name=config.sweep.name,
    )


def describe_plan(config: Config, **kwargs: Any) -> str:
    """The text of :func:`estimate_plan` (what ``raysweep plan`` and ``--dry-run`` print)."""
    return str(estimate_plan(config, **kwargs))


# ----------------------------------------------------------------------------- the text


def _h(hours: float) -> str:
    """Hours with a readable unit beside them: ``0.0125 h (45 s)``."""
    if hours <= 0:
        return "0 h"
    text, seconds = f"{hours:.3g} h", hours * 3600
    if seconds < 1:
        return f"{text} (<1 s)"
    if seconds < 60:
        return f"{text} ({seconds:.0f} s)"
    if hours < 1:
        return f"{text} ({seconds / 60:.0f} min)"
    return f"{text} ({hours / 24:.1f} days)" if hours >= 48 else text


def _format(p: PlanEstimate) -> str:
    lines = [
        f"Plan: {p.title}",
        f"  trials:    {p.num_trials:,} ({p.num_artifacts} artifact(s) x {p.num_programs} "
        f"program(s) x packs of up to {p.pack_size} targets)",
    ]
    for trial_id, size in p.trials_preview:
        lines.append(f"    {trial_id}  ({size} target{'s' if size != 1 else ''})")
    if p.num_trials > len(p.trials_preview):
        lines.append(f"    ... {p.num_trials - len(p.trials_preview):,} more")
    lines.append(f"  targets:   {p.num_targets:,}")
    lines.append(f"  artifacts: {p.num_artifacts} to compute (one per artifact-level grid point)")
    for a in p.artifacts:
        s = a.size
        n = (
            f"N = {s.n:,} ({s.num_train:,} train + {s.num_test:,} test; {s.how})"
            if s.n is not None
            else f"N unknown ({s.how})"
        )
        lines.append(f"    {a.key}: {a.dataset}, {a.model}, {n}; {a.kind}, k = {a.k:,}")
    lines.append("  axes:      " + ", ".join(f"{k} ({n}, {level})" for k, n, level in p.axes))
    lines.append(f"  resources: {p.cpus_per_trial:g} CPU + {p.gpus_per_trial:g} GPU per trial")

    lines.append("Cost estimate (scaled from the measurements below; an estimate, not a quote):")
    grams = any(a.kind != "NADs" for a in p.artifacts)
    if grams:
        gram = _h(p.gram_cpu_hours) + " CPU"
        if p.gram_gpu_hours:
            gram = f"{_h(p.gram_gpu_hours)} GPU (H200) + {gram} (start-up)"
        lines.append(f"  Gram:         {gram}")
        lines.append(f"  eigensolver:  {_h(p.eigen_hours)} CPU")
    if p.nad_hours:
        lines.append(f"  NADs:         {_h(p.nad_hours)} CPU")
    unit = f"GPU-share ({p.gpus_per_trial:g} GPU per trial)" if p.train_on_gpu else "CPU"
    lines.append(
        f"  training:     {_h(p.train_hours)} {unit} = {_h(p.train_compute_hours)} compute "
        f"+ {_h(p.trial_start_hours)} trial start-up ({p.num_trials:,} trials)"
    )
    gpu_total = f" + {_h(p.gpu_hours)} GPU" if p.gpu_hours else ""
    lines.append(f"  total:        {_h(p.cpu_hours)} CPU{gpu_total}")
    if p.cpus:
        where = (p.resources or f"{p.cpus:g} CPUs") + (f" and {p.gpus:g} GPUs" if p.gpus else "")
    else:
        where = p.resources or "1 CPU" + (" and 1 GPU" if p.gpu_hours else "")
    lines.append(
        f"  wall-clock:   ~{_h(p.wall_hours)} on {where} ({p.slots} trial(s) at a time; stages "
        f"one after another; incl. ~{p.run_start_hours * 3600:.0f} s of Ray/Tune start-up)"
    )
    if p.launch:
        lines.append(f"  how to launch: {p.launch}")
        if p.gpu_run:
            lines.append(
                "  on a cluster:  ray up cluster.yaml, then ray job submit --address "
                f"http://127.0.0.1:8265 --working-dir . -- {p.launch} --out "
                f"/mnt/efs/results/{p.sweep_name} (README, Running on a cluster)"
            )

    lines.append("Assumptions:")
    lines.append(
        "  - training = epochs x ceil(n_train/batch) steps x batch x forward MACs of the model "
        "(XLA's count), at the MLP-on-digits rate per MAC; a linearized step = 3 network steps; "
        "1 CPU per trial, as measured; plus a per-trial start-up (actors, compilation)"
    )
    if grams:
        lines.append(
            "  - Gram = measured Gram of the model x (N/N_ref)^2 x (params/params_ref) + a fixed "
            "start-up; eigensolver = measured x (N/N_ref)^2 x (k/k_ref), on CPU"
        )
    if p.nad_hours:
        lines.append("  - NADs = measured NADs of the model x (k/k_ref) x (MACs/MACs_ref), on CPU")
    if p.calibration is not None:
        lines.append(f"  - {p.calibration.line()}")
    lines += [f"  - {note}" for note in p.notes]
    lines.append("Measurements used (README.md unless said):")
    keys = ["train.mlp", "sweep.mlp", "run.default"]
    keys += ["trial.conv"] if {a.family for a in p.artifacts} - {"mlp"} else []
    keys += [key for a in p.artifacts for key in a.measurements]
    lines += [f"  - {MEASUREMENTS[key].line()}" for key in dict.fromkeys(keys)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- resources


def local_resources(address: str | None) -> tuple[float | None, str]:
    """``(CPUs, words)`` of the cluster a script would use, known without connecting: this
    machine's CPUs when it would start a local one, else ``None`` (per 1 CPU)."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if (address is None and not env) or address == "local":
        cpus = os.cpu_count() or 1
        return float(cpus), f"this machine's {cpus} CPUs (a new local Ray cluster)"
    target = address or env
    return None, (
        f"1 CPU (the cluster at {target} is not queried by a dry run; "
        "raysweep plan --cpus N --gpus M for its size)"
    )
