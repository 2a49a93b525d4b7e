"""Plan and cost before launch: what a sweep will run and an estimate of what it costs.

:func:`estimate_plan` (and :func:`describe_plan`, its text) is what ``raysweep plan`` and every
script's ``--dry-run`` print before any work, write, Ray start or ``ray up``: the trials (count
and the first few ids with their pack sizes), the targets, the artifacts to compute (one per
artifact-level grid point: key, dataset, model and N = num_train + num_test, with where N came
from) and an estimate of CPU-hours (GPU-hours where a GPU was measured), and of the wall-clock
time on the resources given.

It reads no dataset when the sizes are known from the config (built-in datasets, ``data.num_train``
/ ``data.num_test``, the NAD experiment); an ``npz:`` file is sized from its array headers, and
only an import-path loader is called. It never starts Ray.

The estimate scales the measurements of :data:`MEASUREMENTS` (README.md, section Performance;
each with its hardware). The cost model, in CPU-seconds (one CPU busy for one second):

- **training** of a target: ``epochs × steps × batch × MACs × rate × (3 if linearized)``, where
  ``steps = ceil(n_train / batch)``, ``MACs`` the model's multiply-adds per example forward
  (:func:`forward_macs`, from its architecture and input shape) and ``rate`` the CPU-seconds per
  MAC of a training step measured on the MLP on digits (network only, packed); a linearized
  step is taken as 3 network steps (the README's assumption in "Cost of the paper-scale run").
  Plus a per-trial start-up (actor, payload, XLA compilation), derived per model family from
  the end-to-end measurements. Trials are taken to use 1 CPU each, as measured.
- **Gram** of an artifact: the measured Gram of the same model (CIFAR-shaped inputs) scaled by
  ``(N / N_ref)²`` and by the parameter count ``P / P_ref`` (the pair products are P long), plus
  a fixed start-up (actors, compilation) taken from the default run. On a GPU run
  (``sweep.gpus_per_trial > 0``) the H200 measurement is used where there is one (LeNet5,
  ResNet18), else CPU-hours are shown and the output says so.
- **eigensolver**: the measured block solver (CPU) scaled by ``(N / N_ref)² × (k / k_ref)``.
- **NADs** (the NAD experiment, instead of a Gram): the measured NAD computation of the same
  model scaled by ``k / k_ref`` and by the forward MACs.

When a results folder with finished trials is given (``--out``), the training estimate is
rescaled by the ratio of its measured trial times (the metrics store's ``wall_time``) to what
this model predicts for that folder's own grid, and the output says so.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.config import Config, is_import_path

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
]

# ----------------------------------------------------------------------------- measurements

CPU_2CORE = "a shared 2-core CPU (this repository's dev machine)"
H200 = "one NVIDIA H200 (JAX 0.11.2, float32 at full precision)"


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


_PERF = "README.md, Performance"
MEASUREMENTS: dict[str, Measurement] = {
    m.key: m
    for m in (
        Measurement(
            "train.mlp",
            "sweep, MLP on digits, SGD, network, packs of 64, 3 epochs, 2 trials at a time: "
            "262,921 targets/h marginal",
            3600 / 262_921,
            2,
            CPU_2CORE,
            f"{_PERF}, Distributed Gram and sweep (bench_sweep.py --targets 64,192)",
            per="per target (3 epochs)",
        ),
        Measurement(
            "sweep.mlp",
            "2,000-target sweep end to end, MLP on digits, sgd/adam x network/linearized, "
            "1 epoch, 16 trials (packs of 125): 249,200 targets/h",
            28.9,
            2,
            CPU_2CORE,
            f"{_PERF}, Sweep grid (bench_sweep.py --only-grid)",
        ),
        Measurement(
            "trial.conv",
            "NAD sweep trial, LeNet5 on 32x32x1, 1 target, 1,000 samples, 3 epochs "
            "(30-50 s each; midpoint)",
            40.0,
            1,
            "a busy 2-core CPU",
            "sweeps/nad_sweep.py docstring (timings)",
            per="per trial",
        ),
        Measurement(
            "gram.mlp",
            "MLP NTK Gram, 4,000 CIFAR-shaped inputs (auto)",
            0.884,
            2,
            CPU_2CORE,
            f"{_PERF}, NTK Gram (bench_ntk.py)",
        ),
        Measurement(
            "gram.lenet5",
            "LeNet5 NTK Gram, 4,000 CIFAR-shaped inputs (auto)",
            2.95,
            2,
            CPU_2CORE,
            f"{_PERF}, NTK Gram (bench_ntk.py)",
        ),
        Measurement(
            "gram.resnet18",
            "ResNet18 NTK Gram, 256 CIFAR-shaped inputs (auto)",
            19.5,
            2,
            CPU_2CORE,
            f"{_PERF}, NTK Gram (bench_ntk.py)",
        ),
        Measurement(
            "run.default",
            "default run (preset smoke: Gram + 128 eigenpairs, 4 trials of 8 targets x 5 "
            "epochs), after installation",
            34.0,
            2,
            CPU_2CORE,
            "README.md, The main job",
        ),
        Measurement(
            "gram.start",
            "default run: Gram of 1,797 digits (MLP) and 128 eigenpairs, actors and compilation",
            5.0,
            2,
            CPU_2CORE,
            "README.md, The main job",
        ),
        Measurement(
            "gpu.gram.lenet5",
            "LeNet5 NTK Gram, 10,000 CIFAR-shaped inputs (auto)",
            0.85,
            0,
            H200,
            f"{_PERF}, NTK Gram (gpu_suite.sh)",
        ),
        Measurement(
            "gpu.gram.resnet18",
            "ResNet18 NTK Gram, 2,000 CIFAR-shaped inputs (contraction, 40 GB budget)",
            4.04,
            0,
            H200,
            f"{_PERF}, NTK Gram (gpu_suite.sh)",
        ),
        Measurement(
            "eigen",
            "block eigensolver, top 1,000 of N = 12,000 (synthetic NTK-like spectrum)",
            46.3,
            2,
            CPU_2CORE,
            f"{_PERF}, Eigensolvers (bench_eigen.py --large)",
        ),
        Measurement(
            "nad.lenet5",
            "LeNet5 NADs, k = 10, 32x32x1 (svds)",
            9.0,
            2,
            "a busy 2-core CPU",
            "sweeps/nad_sweep.py docstring (timings)",
        ),
        Measurement(
            "nad.resnet18",
            "ResNet18 (width 8) NADs, k = 10, 32x32x1 (svds)",
            90.0,
            2,
            "a busy 2-core CPU",
            "sweeps/nad_sweep.py docstring (timings)",
        ),
    )
}
"""Every figure the estimate uses (README.md, section Performance, unless said)."""

LINEARIZED_FACTOR = 3.0
"""A linearized training step costs this many network steps (README, "Cost of the
paper-scale run": an assumption, not a measurement)."""

EIGEN_CORES = 2
"""Cores the eigensolver (on the driver) is taken to use for the wall-clock (as measured)."""

# Reference shapes of the measurements.
DIGITS = (8, 8, 1)
CIFAR = (32, 32, 3)
_REF_BATCH, _REF_TRAIN = 128, 1_347  # digits train split, the sweep benchmarks' batch
_GRAM_REF_N = {"mlp": 4_000, "lenet5": 4_000, "resnet18": 256}
_GPU_GRAM_REF_N = {"lenet5": 10_000, "resnet18": 2_000}
_EIGEN_REF = (12_000, 1_000)
_NAD_REF = {"lenet5": ((32, 32, 1), "{}", 10), "resnet18": ((32, 32, 1), '{"width": 8}', 10)}

# ----------------------------------------------------------------------------- model sizes


def _options(options: str | dict | None) -> dict:
    if isinstance(options, dict):
        return options
    try:
        out = json.loads(options or "{}")
    except json.JSONDecodeError:
        return {}
    return out if isinstance(out, dict) else {}


def _family(name: str) -> str:
    """``mlp``, ``lenet5`` or ``resnet18``; your own model (an import path) is costed as
    LeNet5 (its architecture is not known without importing it)."""
    return name if name in ("mlp", "lenet5", "resnet18") else "lenet5"


def _layers(name: str, shape: Sequence[int], options: str | dict | None):
    """``(MACs per example, parameters)`` of the built-in model ``name`` on inputs ``shape``
    (H, W, C): the architectures of :mod:`raysweep.models` (SAME convolutions, 2x2 pooling)."""
    h, w, c = (int(s) for s in shape)
    opts = _options(options)
    family = _family(name)
    if family == "mlp":
        sizes = [h * w * c, *(int(s) for s in opts.get("hidden_sizes", (100, 100))), 1]
        macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        return macs, macs + sum(sizes[1:])
    if family == "lenet5":
        h2, w2 = h // 2, w // 2
        h4, w4 = h2 // 2, w2 // 2
        conv = h * w * 25 * c * 6 + h2 * w2 * 25 * 6 * 16
        dense = h4 * w4 * 16 * 120 + 120 * 84 + 84
        params = (25 * c * 6 + 6) + (25 * 6 * 16 + 16) + (h4 * w4 * 16 * 120 + 120)
        return conv + dense, params + (120 * 84 + 84) + 85
    width = int(opts.get("width", 64))
    macs, params = h * w * 9 * c * width, 9 * c * width + 2 * width
    in_ch = width
    for stage in range(4):
        out_ch = width * 2**stage
        for j in range(2):
            stride = 2 if stage > 0 and j == 0 else 1
            if stride == 2:
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            proj = stride != 1 or in_ch != out_ch
            macs += (
                h * w * (9 * in_ch * out_ch + 9 * out_ch * out_ch + (in_ch * out_ch if proj else 0))
            )
            params += 9 * in_ch * out_ch + 9 * out_ch * out_ch + 4 * out_ch
            params += in_ch * out_ch + 2 * out_ch if proj else 0
            in_ch = out_ch
    return macs + in_ch, params + in_ch + 1


def forward_macs(name: str, shape: Sequence[int], options: str | dict | None = None) -> int:
    """Multiply-adds per example of one forward pass (2 FLOP each); an import-path model is
    costed as LeNet5."""
    return _layers(name, shape, options)[0]


def param_count(name: str, shape: Sequence[int], options: str | dict | None = None) -> int:
    """Parameters of the built-in model (equal to :mod:`raysweep.models`' closed forms)."""
    return _layers(name, shape, options)[1]


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


def _derive_overheads() -> dict[str, float]:
    """Per-trial start-up CPU-seconds: measured trial time minus its modelled compute."""
    e2e = MEASUREMENTS["sweep.mlp"]
    compute = (
        2_000
        * sum(
            _train_seconds(_MLP_DIGITS_MACS, _REF_TRAIN, _REF_BATCH, 1, lin)
            for lin in (False, True)
        )
        / 2
    )
    mlp = max((e2e.cpu_seconds - compute) / 16, 0.0)
    nad = MEASUREMENTS["trial.conv"]
    macs = forward_macs("lenet5", (32, 32, 1))
    conv_compute = sum(_train_seconds(macs, 1_000, 128, 3, lin) for lin in (False, True)) / 2
    conv = max(nad.cpu_seconds - conv_compute, 0.0)
    return {"mlp": mlp, "lenet5": conv, "resnet18": conv}


TRIAL_START_CPU_S = _derive_overheads()
"""Per-trial start-up (actor, payload, compilation) in CPU-seconds, by model family; ResNet18
is assumed to start like LeNet5 (not measured; it compiles longer)."""

ARTIFACT_START_CPU_S = MEASUREMENTS["gram.start"].cpu_seconds
"""Fixed cost of one Gram artifact (actors, compilation): the default run's Gram + eigen step
(its compute is under a tenth of a second by the scaling below)."""


def _derive_run_start() -> float:
    """Wall seconds of a run's one-off start (Ray, Tune, first compilations): the default
    run's measured time minus its modelled Gram step and trials (2 at a time on 2 cores)."""
    per_target = [
        _train_seconds(_MLP_DIGITS_MACS, _REF_TRAIN, _REF_BATCH, 5, lin) for lin in (0, 1)
    ]
    trials = 2 * (TRIAL_START_CPU_S["mlp"] + 8 * per_target[0]) + 2 * (
        TRIAL_START_CPU_S["mlp"] + 8 * per_target[1]
    )
    gram = MEASUREMENTS["gram.start"].seconds
    return max(MEASUREMENTS["run.default"].seconds - gram - trials / 2, 0.0)


RUN_START_S = _derive_run_start()
"""One-off wall seconds of a run (Ray and Tune start-up, first compilations), added to the
wall-clock estimate."""

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
    import numpy as np

    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for key in ("x_train", "x_test"):
            with archive.open(f"{key}.npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read = (
                    np.lib.format.read_array_header_1_0
                    if major == 1
                    else np.lib.format.read_array_header_2_0
                )
                shapes[key] = tuple(read(f)[0])
    return shapes


def _nhwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 1:
        return (shape[0], 1, 1)
    if len(shape) == 2:
        return (shape[0], shape[1], 1)
    return tuple(shape[:3])  # type: ignore[return-value]


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
    if name in _BUILTIN_SIZES:
        full_train, full_test, shape = _BUILTIN_SIZES[name]
        how = "built-in split size, not read"
        if want_train is not None or want_test is not None:
            how += "; subsampled by data.num_train/num_test"
        return DatasetSize(
            min(want_train or full_train, full_train),
            min(want_test or full_test, full_test),
            shape,
            "known",
            how,
        )
    if name.startswith("npz:"):
        path = name[4:]
        try:
            shapes = _npz_shapes(path)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            return DatasetSize(None, None, None, "unknown", f"cannot read {path}: {err}")
        full_train, full_test = shapes["x_train"][0], shapes["x_test"][0]
        return DatasetSize(
            min(want_train or full_train, full_train),
            min(want_test or full_test, full_test),
            _nhwc(shapes["x_train"][1:]),
            "read",
            "read from the .npz array headers (no data loaded)",
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


# ----------------------------------------------------------------------------- calibration


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
        table, _ = scan_metrics(folder)
        states = trial_states(table)
        grid = expand_grid(config)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    sizes = {a.key: dataset_size(a.config) for a in grid.artifacts}
    configs = {a.key: a.config for a in grid.artifacts}
    predicted = {
        t.trial_id: _trial_cpu_seconds(t, configs[t.artifact], sizes[t.artifact])
        for t in grid.trials
    }
    done = [
        s
        for s in states
        if s.status in ("finished", "diverged") and predicted.get(s.trial_id) is not None
    ]
    if not done:
        return None
    return Calibration(
        folder=folder.resolve(),
        trials=len(done),
        measured_s=sum(float(s.wall_time) for s in done),
        predicted_s=sum(predicted[s.trial_id] for s in done),  # type: ignore[misc]
        device="GPU" if config.sweep.gpus_per_trial > 0 else "CPU",
    )


# ----------------------------------------------------------------------------- the estimate


def _trial_cpu_seconds(trial, art_config: Config, size: DatasetSize) -> float | None:
    """Modelled seconds of one trial on 1 CPU: start-up plus its targets' training."""
    if size.num_train is None or size.input_shape is None:
        return None
    model = art_config.model
    macs = forward_macs(model.name, size.input_shape, model.options)
    train = trial.train
    per_target = _train_seconds(
        macs, size.num_train, int(train.batch_size), int(train.epochs), trial.linearized
    )
    return TRIAL_START_CPU_S[_family(model.name)] + len(trial.targets) * per_target


@dataclass(frozen=True)
class ArtifactEstimate:
    """One artifact-level grid point: what it computes and its estimated cost."""

    key: str
    kind: str  # "Gram + eigenpairs" or "NADs"
    dataset: str
    model: str
    family: str  # the measured model it is costed as: mlp, lenet5 or resnet18
    size: DatasetSize
    k: int
    gram_cpu_s: float = 0.0
    gram_gpu_s: float = 0.0
    eigen_cpu_s: float = 0.0
    nad_cpu_s: float = 0.0

    @property
    def n(self) -> int | None:
        return self.size.n


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

    # -- totals
    @property
    def gram_cpu_hours(self) -> float:
        return sum(a.gram_cpu_s for a in self.artifacts) / 3600

    @property
    def gram_gpu_hours(self) -> float:
        return sum(a.gram_gpu_s for a in self.artifacts) / 3600

    @property
    def eigen_hours(self) -> float:
        return sum(a.eigen_cpu_s for a in self.artifacts) / 3600

    @property
    def nad_hours(self) -> float:
        return sum(a.nad_cpu_s for a in self.artifacts) / 3600

    @property
    def train_hours(self) -> float:
        return self.train_compute_hours + self.trial_start_hours

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
        return self.gram_gpu_hours + (
            self.train_hours * self.gpus_per_trial if self.train_on_gpu else 0.0
        )

    @property
    def wall_hours(self) -> float:
        """Stages one after another: artifacts on all CPUs (GPUs), the eigensolver on the
        driver's cores, then the trials ``slots`` at a time (at least the longest trial)."""
        cpus = max(self.cpus or 1.0, 1.0)
        gpus = max(self.gpus or 1.0, 1.0)
        artifacts = self.gram_cpu_hours / cpus + self.gram_gpu_hours / gpus
        artifacts += (self.eigen_hours + self.nad_hours) / min(cpus, EIGEN_CORES)
        slots = min(max(1, int(cpus // self.cpus_per_trial)), max(self.num_trials, 1))
        if self.gpu_run and self.gpus:
            slots = min(slots, max(1, int(gpus // self.gpus_per_trial)))
        trials = max(self.train_hours / slots, self.longest_trial_hours)
        return self.run_start_hours + artifacts + trials

    def __str__(self) -> str:
        return _format(self)


def _h(hours: float) -> str:
    """Hours with a readable unit beside them: ``0.0125 h (45 s)``."""
    if hours <= 0:
        return "0 h"
    text = f"{hours:.3g} h"
    seconds = hours * 3600
    if seconds < 1:
        return f"{text} (<1 s)"
    if seconds < 60:
        return f"{text} ({seconds:.0f} s)"
    if hours < 1:
        return f"{text} ({seconds / 60:.0f} min)"
    if hours >= 48:
        return f"{text} ({hours / 24:.1f} days)"
    return text


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
    from raysweep.sweep.grid import expand_grid, name_label

    grid = expand_grid(config)
    gpu_run = config.sweep.gpus_per_trial > 0
    notes: list[str] = list(grid.notes)
    arts: list[ArtifactEstimate] = []
    sizes: dict[str, DatasetSize] = {}
    no_gpu_gram: set[str] = set()
    for point in grid.artifacts:
        cfg = point.config
        size = dataset_size(cfg)
        sizes[point.key] = size
        model, family = cfg.model.name, _family(cfg.model.name)
        common = dict(
            key=point.key,
            dataset=name_label(cfg.data.name),
            model=name_label(model),
            family=family,
            size=size,
        )
        if model != family:
            notes.append(f"{model}: your own model, costed as LeNet5 (its size is not known).")
        if cfg.is_nad:
            ref_shape, ref_opts, ref_k = _NAD_REF[family]
            ref = MEASUREMENTS[f"nad.{family}"]
            ratio = forward_macs(model, cfg.nad.input_shape, cfg.model.options) / forward_macs(
                family, ref_shape, ref_opts
            )
            arts.append(
                ArtifactEstimate(
                    kind="NADs",
                    k=cfg.nad.k,
                    nad_cpu_s=ref.cpu_seconds * (cfg.nad.k / ref_k) * ratio,
                    **common,
                )
            )
            continue
        n, shape = size.n, size.input_shape
        k = min(cfg.ntk.num_eigen, n) if n else cfg.ntk.num_eigen
        if n is None or shape is None:
            arts.append(ArtifactEstimate(kind="Gram + eigenpairs", k=k, **common))
            notes.append(f"{point.key}: N unknown ({size.how}); its Gram is not costed.")
            continue
        params = param_count(model, shape, cfg.model.options)
        gram_cpu = gram_gpu = 0.0
        if gpu_run and family in _GPU_GRAM_REF_N:
            ref, ref_n = MEASUREMENTS[f"gpu.gram.{family}"], _GPU_GRAM_REF_N[family]
            gram_gpu = ref.seconds * (n / ref_n) ** 2 * params / param_count(family, CIFAR)
        else:
            if gpu_run:
                no_gpu_gram.add(family)
            ref, ref_n = MEASUREMENTS[f"gram.{family}"], _GRAM_REF_N[family]
            gram_cpu = ref.cpu_seconds * (n / ref_n) ** 2 * params / param_count(family, CIFAR)
        gram_cpu += ARTIFACT_START_CPU_S
        ref_n, ref_k = _EIGEN_REF
        eigen = MEASUREMENTS["eigen"].cpu_seconds * (n / ref_n) ** 2 * (k / ref_k)
        arts.append(
            ArtifactEstimate(
                kind="Gram + eigenpairs",
                k=k,
                gram_cpu_s=gram_cpu,
                gram_gpu_s=gram_gpu,
                eigen_cpu_s=eigen,
                **common,
            )
        )
    for family in sorted(no_gpu_gram):
        notes.append(f"{family} Gram: no GPU measurement; CPU-hours shown.")

    configs = {a.key: a.config for a in grid.artifacts}
    compute = start = longest = 0.0
    unknown = 0
    for trial in grid.trials:
        seconds = _trial_cpu_seconds(trial, configs[trial.artifact], sizes[trial.artifact])
        if seconds is None:
            unknown += 1
            continue
        first = TRIAL_START_CPU_S[_family(configs[trial.artifact].model.name)]
        start += first
        compute += seconds - first
        longest = max(longest, seconds)
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
    if gpu_run and (calibration is None or calibration.device != "GPU"):
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
        notes=tuple(notes),
        launch=launch,
        unknown_trials=unknown,
        sweep_name=config.sweep.name,
    )


def describe_plan(config: Config, **kwargs: Any) -> str:
    """The text of :func:`estimate_plan` (what ``raysweep plan`` and ``--dry-run`` print)."""
    return str(estimate_plan(config, **kwargs))


def _used_measurements(plan: PlanEstimate) -> list[Measurement]:
    keys = ["train.mlp", "sweep.mlp", "run.default"]
    if {a.family for a in plan.artifacts} - {"mlp"}:
        keys.append("trial.conv")
    for a in plan.artifacts:
        family = a.family
        if a.kind == "NADs":
            keys.append(f"nad.{family}")
            continue
        if a.gram_gpu_s:
            keys.append(f"gpu.gram.{family}")
        elif a.gram_cpu_s:
            keys.append(f"gram.{family}")
        if a.gram_cpu_s or a.gram_gpu_s:
            keys += ["gram.start", "eigen"]
    return [MEASUREMENTS[k] for k in dict.fromkeys(keys)]


def _format(p: PlanEstimate) -> str:
    lines = [f"Plan: {p.title}"]
    lines.append(
        f"  trials:    {p.num_trials:,} ({p.num_artifacts} artifact(s) x {p.num_programs} "
        f"program(s) x packs of up to {p.pack_size} targets)"
    )
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
        what = f"{a.kind}, k = {a.k:,}"
        lines.append(f"    {a.key}: {a.dataset}, {a.model}, {n}; {what}")
    lines.append(
        "  axes:      " + ", ".join(f"{key} ({count}, {level})" for key, count, level in p.axes)
    )
    lines.append(f"  resources: {p.cpus_per_trial:g} CPU + {p.gpus_per_trial:g} GPU per trial")

    lines.append("Cost estimate (scaled from the measurements below; an estimate, not a quote):")
    if any(a.kind != "NADs" for a in p.artifacts):
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
    total = f"{_h(p.cpu_hours)} CPU"
    if p.gpu_hours:
        total += f" + {_h(p.gpu_hours)} GPU"
    lines.append(f"  total:        {total}")
    if p.cpus:
        where = p.resources or f"{p.cpus:g} CPUs"
        if p.gpus:
            where += f" and {p.gpus:g} GPUs"
    else:
        where = p.resources or "1 CPU" + (" and 1 GPU" if p.gpu_hours else "")
    slots = min(max(1, int(max(p.cpus or 1, 1) // p.cpus_per_trial)), max(p.num_trials, 1))
    if p.gpu_run and p.gpus:
        slots = min(slots, max(1, int(p.gpus // p.gpus_per_trial)))
    lines.append(
        f"  wall-clock:   ~{_h(p.wall_hours)} on {where} ({slots} trial(s) at a time; stages "
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
        "  - training = epochs x ceil(n_train/batch) steps x batch x forward MACs of the model, "
        "at the MLP-on-digits rate per MAC; a linearized step = 3 network steps; 1 CPU per "
        "trial, as measured; plus a per-trial start-up (actors, compilation)"
    )
    if any(a.kind != "NADs" for a in p.artifacts):
        lines.append(
            "  - Gram = measured Gram of the model x (N/N_ref)^2 x (params/params_ref) + a fixed "
            "start-up; eigensolver = measured x (N/N_ref)^2 x (k/k_ref), on CPU"
        )
    if p.nad_hours:
        lines.append("  - NADs = measured NADs of the model x (k/k_ref) x (MACs/MACs_ref), on CPU")
    if p.calibration is not None:
        lines.append(f"  - {p.calibration.line()}")
    for note in p.notes:
        lines.append(f"  - {note}")
    lines.append("Measurements used (README.md unless said):")
    for m in _used_measurements(p):
        lines.append(f"  - {m.line()}")
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
