"""The main experiment as a study: eigenfunctions at initialization, then the sweep on them.

:func:`eigen_study` is what ``python sweeps/eigen_sweep.py`` runs after its checks: for every
artifact-level point of the grid, the empirical NTK Gram Θ₀ on Ray workers and its top-k
eigenpairs (:func:`raysweep.eigenfunctions.compute_artifacts`, resumable, reused when
present); then the network-vs-linearization sweep on the labels ``sign(φ_j)``
(:func:`raysweep.sweep.run_sweep`); then the companion studies of ``sweep.studies``
(:mod:`raysweep.studies.companions`: binary baseline, energy concentration, alignment); then
the findings (the paper's claims with verdicts, ``findings.json``) and the report. The script
adds the command line and the console output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raysweep.config import Config, save_config

__all__ = ["EigenStudy", "eigen_study", "summarize_artifact"]


@dataclass(frozen=True)
class EigenStudy:
    """What :func:`eigen_study` returns.

    ``artifacts``: ``[(ArtifactPoint, EigenArtifact), ...]`` in grid order; ``summary``: the
    sweep's :class:`~raysweep.sweep.SweepSummary` (None with ``eigen_only``); ``report``: the
    report page (None if it could not be built: ``report_error`` says why);
    ``eigen_seconds``/``seconds``: the eigen step's and the whole study's wall time;
    ``findings``: the paper's claims with verdicts (:mod:`raysweep.analysis.findings`, also in
    ``findings.json``; None if they could not be computed: ``findings_error`` says why);
    ``companion_errors``: ``{study: error}`` of the companion studies that failed.
    """

    artifacts: list
    summary: Any = None
    report: Path | None = None
    report_error: str | None = None
    eigen_seconds: float = 0.0
    seconds: float = 0.0
    findings: list | None = None
    findings_error: str | None = None
    companion_errors: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.summary is None or self.summary.ok


def summarize_artifact(artifact) -> str:
    """The spectrum, residuals and binarization diagnostic of one artifact, as text."""
    vals, res, binz = artifact.eigvals, artifact.residuals, artifact.binarization
    k = len(vals)
    show = sorted({0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, k - 1} & set(range(k)))
    lines = [f"  {'index':>6}{'eigenvalue':>14}{'residual/λ0':>14}{'⟨sign φ/√N, φ⟩':>17}"]
    for j in show:
        lines.append(f"  {j:>6}{vals[j]:>14.5g}{res[j] / vals[0]:>14.2e}{binz[j]:>17.3f}")
    lines.append(
        f"  binarization diagnostic: mean {np.mean(binz):.3f} over {k} eigenvectors "
        "(the paper reports ≈ 0.78 on CIFAR-10)"
    )
    return "\n".join(lines)


def eigen_study(
    config: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    eigen_only: bool = False,
    progress: bool = True,
    datasets: dict | None = None,
    report: bool = True,
    log: Callable[[str], Any] = print,
) -> EigenStudy:
    """Eigenfunctions of every artifact point of ``config``'s grid, then the sweep and report.

    Args:
      config: a resolved config (not the NAD experiment: :func:`raysweep.studies.nad_study`).
      out_dir: the results folder (the caller holds its lease, e.g. through
        :func:`raysweep.script.run_script`; Ray is joined or started by then).
      resume: finish an interrupted sweep of the same grid in ``out_dir``.
      eigen_only: stop after the eigen step (the config is saved if none is there yet).
      progress: progress bars and per-trial lines.
      datasets: from :func:`raysweep.eigenfunctions.load_checked_datasets` (else read here).
      report: build ``report/`` at the end (a failure is recorded, never raised).
      log: where the spectrum summaries and progress lines go.

    Raises:
      ValueError: before the Gram, for trial resources the cluster cannot provide; before the
        sweep, for what :func:`raysweep.sweep.run_sweep` refuses.
    """
    from raysweep.eigenfunctions import compute_artifacts

    out_dir = Path(out_dir)
    start = time.perf_counter()
    if not eigen_only:  # before the Gram: a trial that can never run is refused now
        from raysweep.distributed.capacity import check_trial_resources

        check_trial_resources(config.sweep.cpus_per_trial, config.sweep.gpus_per_trial)
    artifacts = compute_artifacts(config, out_dir, progress=progress, log=log, datasets=datasets)
    for point, artifact in artifacts:
        if len(artifacts) > 1:
            log(f"artifact {point.key}:")
        log(summarize_artifact(artifact))
    eigen_seconds = time.perf_counter() - start
    log(f"eigen step done in {eigen_seconds:.1f} s.")
    if eigen_only:
        if not (out_dir / "config.json").exists():  # never overwrite the record of a sweep
            save_config(config, out_dir / "config.json")
        return EigenStudy(artifacts, eigen_seconds=eigen_seconds, seconds=eigen_seconds)

    from raysweep.sweep import run_sweep

    summary = run_sweep(config, out_dir, resume=resume, progress=progress, log=log)
    companion_errors = {}
    if config.sweep.studies:
        from raysweep.studies.companions import run_companions

        companion_errors = run_companions(config, out_dir, artifacts, progress=progress, log=log)
    findings, findings_error = None, None
    try:  # a view of the results, like the report: never fails the study
        from raysweep.analysis.findings import findings_for, save_findings

        findings = findings_for(out_dir)
        save_findings(out_dir, findings)
    except Exception as err:
        findings_error = f"{type(err).__name__}: {err}"
    page, error = None, None
    if report:
        from raysweep.report import build_report

        try:  # the report is a view of the results: never fail the study because of it
            page = build_report(out_dir)
        except Exception as err:
            error = str(err)
    return EigenStudy(
        artifacts,
        summary=summary,
        report=page,
        report_error=error,
        eigen_seconds=eigen_seconds,
        seconds=time.perf_counter() - start,
        findings=findings,
        findings_error=findings_error,
        companion_errors=companion_errors,
    )
