"""The report of a sweep: every figure as PNG and PDF, and one self-contained HTML page.

Typical use::

    from raysweep.report import build_report

    page = build_report("results/eigen_sweep")      # -> results/eigen_sweep/report/report.html

or from a shell: ``raysweep report results/eigen_sweep``. The page embeds its images (base64
PNG), has no script and no external file, and opens from disk. While the sweep runs the page
reloads itself (``<meta http-equiv="refresh">``) and says so; :func:`watch_report` rebuilds it
until the sweep is complete. It works on a sweep at any
stage: what is not there yet (metrics, artifact, optional inputs) is named on the page with
the command that produces it.

Modules, one idea each:

- ``collect``: read a results directory into :class:`ReportInputs`, noting what is missing.
- ``sections``: what each part of the page shows (figures, tables, notes).
- ``page``: HTML building blocks and the page template (inline CSS, data-URI images).
- ``build``: :func:`build_report`: draw, save the files, write the page.
"""

from raysweep.report.build import (
    FIGURES_DIR,
    PAGE_NAME,
    REFRESH_S,
    REPORT_DIR,
    build_report,
    watch_report,
)
from raysweep.report.collect import ArtifactSummary, ReportInputs, SweepState, collect, sweep_state

__all__ = [
    "FIGURES_DIR",
    "PAGE_NAME",
    "REFRESH_S",
    "REPORT_DIR",
    "ArtifactSummary",
    "ReportInputs",
    "SweepState",
    "build_report",
    "collect",
    "sweep_state",
    "watch_report",
]
