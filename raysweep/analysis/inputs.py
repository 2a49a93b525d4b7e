"""The optional inputs of the analysis on disk: ``<results>/analysis/`` of a sweep directory.

The kernel-evolution studies save them here with the ``save_*`` functions, and the report
picks them up. Each ``load_*`` returns ``None`` when
its file is absent (the report then says what is missing) and raises ``ValueError`` for a file
that is present but malformed.

=============================  ==========================================================
file                           content
=============================  ==========================================================
energy_concentration.json      ``{"format": "raysweep.energy/v1", "records": [...]}``,
                               records as in :mod:`raysweep.analysis.energy`
alignment.npz                  ``trained_indices``, ``alpha_<split>``, ``init_<split>``,
                               as in :mod:`raysweep.analysis.alignment_figures`
nads.npz                       ``eigvals``, ``directions``, ``input_shape``
                               (:mod:`raysweep.analysis.nads`)
baseline.json                  ``{"format": "raysweep.baseline/v2", "dataset": "cifar2",
                               "records": [{"model", "optimizer", "mode", "seed",
                               "test_accuracy"}, ...]}``: network and linearization on the
                               dataset's own binary task (drawn on the accuracy figure, and
                               claim 2 of the findings); v1 files (``"accuracy": {"<model>":
                               0.85}``) are still read
pretrained_ntk.json            ``{"format": "raysweep.pretrained/v1", "model", "dataset",
                               "optimizer", "records": [...]}``, records as in
                               :mod:`raysweep.analysis.pretrained`
=============================  ==========================================================

The scripts ``sweeps/energy_concentration.py``, ``sweeps/kernel_alignment.py``,
``sweeps/binary_baseline.py``, ``sweeps/pretrained_ntk.py`` (:mod:`raysweep.evolution`) and
``sweeps/nad_sweep.py`` write them.

Files are written atomically (temporary name, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raysweep.analysis.alignment_figures import AlignmentData
from raysweep.analysis.energy import energy_records
from raysweep.analysis.figure_checks import check_probability_map
from raysweep.analysis.nads import check_nads
from raysweep.analysis.pretrained import pretrained_records
from raysweep.atomic import atomic_write

ANALYSIS_DIR = "analysis"
ENERGY_FILE = "energy_concentration.json"
ALIGNMENT_FILE = "alignment.npz"
NADS_FILE = "nads.npz"
BASELINE_FILE = "baseline.json"
PRETRAINED_FILE = "pretrained_ntk.json"
PRETRAINED_FORMAT = "raysweep.pretrained/v1"


def analysis_dir(results_dir: str | os.PathLike) -> Path:
    """``<results_dir>/analysis``."""
    return Path(results_dir) / ANALYSIS_DIR


def _write_json(path: Path, payload: dict) -> Path:
    # NaN/inf stay readable by json.loads (a diverged target's loss).
    data = (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode()
    return atomic_write(path, lambda fh: fh.write(data))


def _read_json(path: Path, fmt: str) -> dict | None:
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from err
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(
            f'{path}: expected a JSON object with "format": {fmt!r}, got {str(payload)[:80]}.'
        )
    return payload


def save_energy_records(results_dir: str | os.PathLike, records: Sequence[Mapping]) -> Path:
    """Validate and write ``analysis/energy_concentration.json``."""
    payload = {"format": "raysweep.energy/v1", "records": energy_records(records)}
    return _write_json(analysis_dir(results_dir) / ENERGY_FILE, payload)


def load_energy_records(results_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The energy-concentration records, or ``None`` without the file."""
    payload = _read_json(analysis_dir(results_dir) / ENERGY_FILE, "raysweep.energy/v1")
    return None if payload is None else energy_records(payload.get("records"))


def save_alignment(results_dir: str | os.PathLike, data: AlignmentData) -> Path:
    """Write ``analysis/alignment.npz`` (the label goes in as ``label``)."""
    if not isinstance(data, AlignmentData):
        raise TypeError(f"data: expected AlignmentData, got {type(data).__name__}.")
    arrays = dict(data.to_arrays(), label=np.array(data.label))
    return atomic_write(
        analysis_dir(results_dir) / ALIGNMENT_FILE, lambda fh: np.savez(fh, **arrays)
    )


def load_alignment(results_dir: str | os.PathLike) -> AlignmentData | None:
    """The end-of-training alignment, or ``None`` without the file."""
    path = analysis_dir(results_dir) / ALIGNMENT_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    label = str(arrays.pop("label", ""))
    try:
        return AlignmentData.from_arrays(arrays, label=label)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err


def save_nads(results_dir: str | os.PathLike, eigvals, directions, input_shape) -> Path:
    """Validate and write ``analysis/nads.npz``."""
    vals, dirs, shape = check_nads(eigvals, directions, input_shape)
    arrays = {
        "eigvals": vals,
        "directions": dirs.reshape(vals.size, -1).astype(np.float32),
        "input_shape": np.array(shape, dtype=np.int64),
    }
    return atomic_write(analysis_dir(results_dir) / NADS_FILE, lambda fh: np.savez(fh, **arrays))


def load_nads(results_dir: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """``{"eigvals", "directions", "input_shape"}`` (keyword arguments of ``plot_nads``)."""
    path = analysis_dir(results_dir) / NADS_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in ("eigvals", "directions", "input_shape") if k not in npz.files]
        if missing:
            raise ValueError(
                f"{path}: missing arrays {missing}; expected eigvals, directions, input_shape."
            )
        out = {k: npz[k] for k in ("eigvals", "directions", "input_shape")}
    out["input_shape"] = tuple(int(s) for s in out["input_shape"])
    return out


BASELINE_MODES = ("network", "linearized")


def save_baseline(
    results_dir: str | os.PathLike, dataset: str, accuracy: Mapping[str, float]
) -> Path:
    """Write ``analysis/baseline.json`` from ``{model: network test accuracy}`` (no optimizer,
    seed or linearization: prefer :func:`save_baseline_records`)."""
    records = [
        {"model": m, "optimizer": None, "mode": "network", "seed": None, "test_accuracy": a}
        for m, a in check_probability_map(accuracy, "accuracy").items()
    ]
    return save_baseline_records(results_dir, dataset, records)


def _check_baseline_record(r: Any) -> dict:
    if not isinstance(r, Mapping):
        raise TypeError(f"a baseline record must be a dict, got {r!r:.80}.")
    missing = [k for k in ("model", "mode", "test_accuracy") if k not in r]
    if missing:
        raise ValueError(f"baseline record {dict(r)!r:.120} lacks {', '.join(missing)}.")
    if r["mode"] not in BASELINE_MODES:
        raise ValueError(f"baseline record mode {r['mode']!r}: expected network or linearized.")
    out = {
        "model": str(r["model"]),
        "optimizer": None if r.get("optimizer") is None else str(r["optimizer"]),
        "mode": r["mode"],
        "seed": None if r.get("seed") is None else int(r["seed"]),
        "test_accuracy": check_probability_map(
            {"test_accuracy": r["test_accuracy"]}, "baseline record"
        )["test_accuracy"],
    }
    for extra in ("train_accuracy", "epochs"):
        if r.get(extra) is not None:
            out[extra] = r[extra]
    return out


def save_baseline_records(
    results_dir: str | os.PathLike, dataset: str, records: Sequence[Mapping]
) -> Path:
    """Write ``analysis/baseline.json`` (``raysweep.baseline/v2``): one record per model,
    optimizer, mode (network or linearized) and seed, with its test accuracy on the binary
    task ``dataset``."""
    if not isinstance(dataset, str) or not dataset:
        raise TypeError(f"dataset: expected a dataset name such as 'cifar2', got {dataset!r}.")
    payload = {
        "format": "raysweep.baseline/v2",
        "dataset": dataset,
        "records": [_check_baseline_record(r) for r in records],
    }
    return _write_json(analysis_dir(results_dir) / BASELINE_FILE, payload)


def load_baseline_records(results_dir: str | os.PathLike) -> list[dict] | None:
    """The baseline records (``dataset`` added to each), or ``None`` without the file.

    A ``raysweep.baseline/v1`` file (``{model: accuracy}``) is read as network records without
    optimizer or seed.
    """
    read = _read_baseline(results_dir)
    return None if read is None else [{**r, "dataset": read[0]} for r in read[1]]


def _read_baseline(results_dir: str | os.PathLike) -> tuple[str, list[dict]] | None:
    path = analysis_dir(results_dir) / BASELINE_FILE
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from err
    fmt = payload.get("format") if isinstance(payload, dict) else None
    try:
        if fmt == "raysweep.baseline/v1":
            accuracy = check_probability_map(payload["accuracy"], "accuracy")
            records = [
                {"model": m, "optimizer": None, "mode": "network", "seed": None, "test_accuracy": a}
                for m, a in accuracy.items()
            ]
        elif fmt == "raysweep.baseline/v2":
            records = [_check_baseline_record(r) for r in payload["records"]]
        else:
            raise ValueError(
                'expected a JSON object with "format": "raysweep.baseline/v2" (or v1), got '
                f"{str(payload)[:80]}."
            )
        dataset = str(payload["dataset"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
    return dataset, records


def load_baseline(results_dir: str | os.PathLike) -> tuple[str, dict[str, float]] | None:
    """``(dataset, {model: network test accuracy})`` (mean over optimizers and seeds), or
    ``None`` without the file: the line the accuracy figure draws."""
    read = _read_baseline(results_dir)
    if read is None:
        return None
    by_model: dict[str, list[float]] = {}
    for r in read[1]:
        if r["mode"] == "network":
            by_model.setdefault(r["model"], []).append(r["test_accuracy"])
    return read[0], {m: float(np.mean(v)) for m, v in by_model.items()}


def save_pretrained(
    results_dir: str | os.PathLike,
    records: Sequence[Mapping],
    *,
    model: str,
    dataset: str,
    optimizer: str,
) -> Path:
    """Validate and write ``analysis/pretrained_ntk.json``."""
    for name, value in (("model", model), ("dataset", dataset), ("optimizer", optimizer)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name}: expected a non-empty string, got {value!r}.")
    payload = {
        "format": PRETRAINED_FORMAT,
        "model": model,
        "dataset": dataset,
        "optimizer": optimizer,
        "records": pretrained_records(records),
    }
    return _write_json(analysis_dir(results_dir) / PRETRAINED_FILE, payload)


def load_pretrained(results_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The pretrained-NTK comparison (``model``, ``dataset``, ``optimizer``, ``records``)."""
    path = analysis_dir(results_dir) / PRETRAINED_FILE
    payload = _read_json(path, PRETRAINED_FORMAT)
    if payload is None:
        return None
    try:
        payload["records"] = pretrained_records(payload.get("records"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
    return payload
