"""Everything a report shows, read from one results directory, with what is missing noted.

A results directory (``sweeps/eigen_sweep.py``) may hold::

    config.json          the resolved Config (raw JSON is shown; not re-validated)
    sweep_plan.json      the grid of trials (raysweep.sweep.plan)
    eigenfunctions/      the eigenfunction artifact (raysweep.eigenfunctions)
    metrics/*.parquet    the metrics store (raysweep.store.scan_metrics; parts of the
                         previous schema are read upgraded)
    analysis/            optional inputs (raysweep.analysis.inputs)
    nad/                 a NAD sweep run with --out <results>/nad (its NADs; claim 7 of the
                         findings)

:func:`collect` reads what is there and never raises for a missing or broken piece: a missing
one leaves its field ``None`` (the page says what to run), a broken one adds a line to
``problems`` (e.g. a folder above several sweeps: the line names the sweep folders to pass).
Only the artifact's small files are read (eigenvalues, residuals, binarization,
``meta.json``, ``dataset.json``, ``config.json``), so neither JAX nor the model is loaded.
Artifacts are looked up at ``<results>/eigenfunctions`` and at the paths of the plan.

:func:`sweep_state` says whether the sweep is still running (planned trials without the final
row of every target), for the page's auto-refresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raysweep.analysis import (
    AlignmentData,
    load_alignment,
    load_baseline,
    load_baseline_records,
    load_energy_records,
    load_nads,
    load_pretrained,
)
from raysweep.lease import active_holder
from raysweep.store import CONFIG_FILE, latest_rows, scan_metrics

PLAN_FILE = "sweep_plan.json"  # raysweep.sweep.plan.PLAN_FILE (not imported: it imports Ray)
ARTIFACT_DIR = "eigenfunctions"
_ARTIFACT_ARRAYS = ("eigvals", "residuals", "binarization")


@dataclass(frozen=True)
class ArtifactSummary:
    """The small part of an eigenfunction artifact that the report shows."""

    key: str  # "<model>-<dataset>"
    path: Path
    eigvals: np.ndarray
    residuals: np.ndarray
    binarization: np.ndarray
    meta: dict[str, Any]
    dataset: dict[str, Any]  # name, sizes, input shape (no index lists)


FINAL_STATUSES = ("finished", "diverged")
"""A target whose latest row has one of these is done (``finished`` is only written at its last
epoch; a diverged target stops)."""


@dataclass(frozen=True)
class SweepState:
    """How far a sweep is: ``complete`` of ``total`` trials have the final row of every target.

    ``planned``: ``total`` comes from ``sweep_plan.json`` (else: the trials in the store, so a
    folder without a plan is running only while some stored trial is unfinished).
    ``errored``: trials with a target in status ``error`` (they run again on ``--resume``).
    """

    complete: int
    total: int
    planned: bool
    errored: int = 0
    active: bool = True

    @property
    def incomplete(self) -> bool:
        """Some trial (planned or stored) is not complete yet."""
        return self.complete < self.total

    @property
    def running(self) -> bool:
        """Incomplete, and a driver holds the results folder (``active``: its lease is live,
        :func:`raysweep.lease.active_holder`); an incomplete sweep without one has stopped
        (crashed or interrupted) and waits for ``--resume``."""
        return self.incomplete and self.active

    def line(self) -> str:
        """``"3 of 8 trials complete"`` (``", 1 errored"`` when some trial errored)."""
        text = f"{self.complete} of {self.total} trials complete"
        return text + (f", {self.errored} errored" if self.errored else "")


def sweep_state(
    plan: dict[str, Any] | None, metrics: pa.Table | None, *, active: bool = True
) -> SweepState:
    """Complete and total trials of a sweep (see :class:`SweepState`); ``active``: whether a
    driver holds the results folder.

    A trial is complete when every target of it (the plan's ``targets``; without them, the
    targets the store has) has its latest row ``finished`` or ``diverged``.
    """
    latest: dict[str, dict[str, str]] = {}
    if metrics is not None:
        last = latest_rows(metrics).select(["trial_id", "target_id", "status"])
        for row in last.to_pylist():
            latest.setdefault(row["trial_id"], {})[row["target_id"]] = row["status"]
    trials = (plan or {}).get("trials")
    planned = isinstance(trials, list)
    if planned:
        ids = [str(t.get("trial_id")) if isinstance(t, dict) else str(t) for t in trials]
    else:
        ids = sorted(latest)
    targets = (plan or {}).get("targets")
    targets = targets if isinstance(targets, dict) else {}
    complete = errored = 0
    for trial in ids:
        rows = latest.get(trial, {})
        wanted = targets.get(trial) or list(rows)
        if wanted and all(rows.get(t) in FINAL_STATUSES for t in wanted):
            complete += 1
        errored += "error" in rows.values()
    return SweepState(
        complete=complete, total=len(ids), planned=planned, errored=errored, active=active
    )


@dataclass
class ReportInputs:
    """What :func:`collect` found; ``None`` fields are absent."""

    results_dir: Path
    config: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    metrics: pa.Table | None = None  # None: no part file yet
    artifacts: list[ArtifactSummary] = field(default_factory=list)
    energy: list[dict[str, Any]] | None = None
    alignment: AlignmentData | None = None
    nads: dict[str, Any] | None = None
    baseline: tuple[str, dict[str, float]] | None = None
    baseline_records: list[dict[str, Any]] | None = None
    pretrained: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    sweep: SweepState = field(default_factory=lambda: SweepState(0, 0, planned=False))

    @property
    def sweep_name(self) -> str:
        """The sweep's name: plan id, else ``sweep.name`` of the config, else the folder name."""
        if self.plan and self.plan.get("sweep_id"):
            return str(self.plan["sweep_id"])
        sweep = (self.config or {}).get("sweep")
        if isinstance(sweep, dict) and sweep.get("name"):
            return str(sweep["name"])
        return self.results_dir.name

    def config_value(self, section: str, key: str, default: Any = None) -> Any:
        """``config[section][key]`` or ``default``."""
        part = (self.config or {}).get(section)
        return part.get(key, default) if isinstance(part, dict) else default


def _read_json(path: Path, problems: list[str]) -> dict | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        problems.append(f"{path.name} could not be read ({err}).")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} is not a JSON object.")
        return None
    return data


def read_artifact_summary(path: Path, key: str | None = None) -> ArtifactSummary:
    """The report's view of the artifact at ``path``.

    Raises:
      FileNotFoundError: a file is missing. ValueError: a file is malformed.
    """
    names = [f"{a}.npy" for a in _ARTIFACT_ARRAYS] + ["meta.json", "dataset.json"]
    missing = [n for n in names if not (path / n).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not a complete artifact: missing {', '.join(missing)}")
    arrays = {a: np.load(path / f"{a}.npy", allow_pickle=False) for a in _ARTIFACT_ARRAYS}
    meta = json.loads((path / "meta.json").read_text())
    manifest = json.loads((path / "dataset.json").read_text())
    if key is None:
        cfg = (
            json.loads((path / "config.json").read_text())
            if (path / "config.json").exists()
            else {}
        )
        model = cfg.get("model", {}).get("name", "?")
        key = f"{model}-{manifest.get('name', cfg.get('data', {}).get('name', '?'))}"
    dataset = {k: v for k, v in manifest.items() if not isinstance(v, list) or len(v) <= 8}
    return ArtifactSummary(key=key, path=path, meta=meta, dataset=dataset, **arrays)


def _artifact_paths(results_dir: Path, plan: dict | None) -> list[tuple[Path, str | None]]:
    found: list[tuple[Path, str | None]] = []
    for spec in (plan or {}).get("artifacts", []) or []:
        if isinstance(spec, dict) and spec.get("path"):  # relative paths: inside results_dir
            found.append((results_dir / spec["path"], spec.get("key")))
    own = results_dir / ARTIFACT_DIR
    if own.exists() and all(p.resolve() != own.resolve() for p, _ in found):
        found.insert(0, (own, None))
    return found


def _guard(problems: list[str], what: str, load, *args):
    try:
        return load(*args)
    except (OSError, ValueError, TypeError, KeyError) as err:
        problems.append(f"{what} could not be read: {err}")
        return None


def collect(results_dir: str | os.PathLike) -> ReportInputs:
    """Read a results directory (see the module doc).

    Raises:
      FileNotFoundError: ``results_dir`` does not exist or is not a directory.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(
            f"results directory {results_dir} does not exist (or is not a folder); pass the "
            "folder printed by the main job, e.g. results/eigen_sweep."
        )
    found = ReportInputs(results_dir=results_dir.resolve())
    problems = found.problems
    found.config = _read_json(results_dir / CONFIG_FILE, problems)
    found.plan = _read_json(results_dir / PLAN_FILE, problems)
    scanned = _guard(problems, "the metrics store (metrics/*.parquet)", scan_metrics, results_dir)
    table, damaged = scanned if scanned is not None else (None, [])
    for part in damaged:
        problems.append(
            f"the part file {part.path} is damaged ({part.reason}); the other parts are shown. "
            "Resume the sweep (--resume) to quarantine it and run its trial again."
        )
    found.metrics = table if table is not None and table.num_rows else None
    found.sweep = sweep_state(
        found.plan, found.metrics, active=active_holder(results_dir) is not None
    )
    for path, key in _artifact_paths(results_dir, found.plan):
        if not path.exists():
            problems.append(f"the plan names the artifact {path}, which does not exist.")
            continue
        summary = _guard(problems, f"the artifact {path}", read_artifact_summary, path, key)
        if summary is not None:
            found.artifacts.append(summary)
    found.energy = _guard(
        problems, "analysis/energy_concentration.json", load_energy_records, results_dir
    )
    found.alignment = _guard(problems, "analysis/alignment.npz", load_alignment, results_dir)
    found.nads = _guard(problems, "analysis/nads.npz", load_nads, results_dir)
    if found.nads is None and (results_dir / "nad" / "analysis").is_dir():  # a NAD sweep's
        found.nads = _guard(problems, "nad/analysis/nads.npz", load_nads, results_dir / "nad")
    found.baseline = _guard(problems, "analysis/baseline.json", load_baseline, results_dir)
    if found.baseline is not None:
        found.baseline_records = load_baseline_records(results_dir)
    found.pretrained = _guard(
        problems, "analysis/pretrained_ntk.json", load_pretrained, results_dir
    )
    return found
