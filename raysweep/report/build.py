"""``build_report``: a results directory → figures (PNG + PDF) and one self-contained HTML page.

Output (default ``<results_dir>/report/``)::

    report.html                one page, images embedded as base64 PNG: open it from disk
    figures/<name>.png|.pdf    every figure, for papers and slides

Figures the data does not allow yet (no metrics, no artifact, no optional inputs) are replaced
on the page by a note that says what to run; figure files of an earlier report that this one
did not draw are removed, so the folder always matches the page. Only a ``results_dir`` that
does not exist is an error.

While the sweep runs (:func:`raysweep.report.collect.sweep_state`: planned trials without the
final row of every target) the page carries ``<meta http-equiv="refresh" content="N">`` and a
line "sweep running: X of Y trials complete; this page reloads every N s (…)"; the page of a
complete sweep has neither. A reload only shows new results once the page is rebuilt:
:func:`watch_report` rebuilds it every N s until the sweep is complete.
"""

from __future__ import annotations

import io
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from raysweep.analysis import MissingInputError
from raysweep.argcheck import check_positive_int
from raysweep.atomic import atomic_write, atomic_write_text, unwritable_reason
from raysweep.report.collect import SweepState, collect
from raysweep.report.page import figure, note, render_page
from raysweep.report.sections import (
    accuracy_section,
    eigen_section,
    findings_section,
    optional_sections,
    progress_section,
    run_section,
    summary_section,
    training_section,
)

REPORT_DIR = "report"
PAGE_NAME = "report.html"
FIGURES_DIR = "figures"
REFRESH_S = 30
"""Default seconds between reloads of a running sweep's page (and rebuilds of watch_report)."""


class FigureWriter:
    """Draws figures for the page: saves ``figures/<name>.png`` and ``.pdf``, returns HTML."""

    def __init__(self, out_dir: Path, *, dpi: int):
        self.out_dir = out_dir
        self.dpi = dpi
        self.written: list[Path] = []

    def __call__(self, name: str, make: Callable[[], Figure], *, alt: str, caption: str) -> str:
        try:
            fig = make()
        except MissingInputError as err:
            text = str(err).rstrip(".") + "."
            return note(text[:1].upper() + text[1:])
        except (TypeError, ValueError) as err:
            return note(f"The figure '{alt}' could not be drawn: {err}", problem=True)
        folder = self.out_dir / FIGURES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi)
        png = buf.getvalue()
        atomic_write(folder / f"{name}.png", png)
        fig.set_layout_engine("none")  # keep the layout of the PNG: the PDF draws once
        atomic_write(folder / f"{name}.pdf", lambda fh: fig.savefig(fh, format="pdf"))
        self.written += [folder / f"{name}.png", folder / f"{name}.pdf"]
        links = [("PNG", f"{FIGURES_DIR}/{name}.png"), ("PDF", f"{FIGURES_DIR}/{name}.pdf")]
        return figure(png, alt=alt, caption=caption, links=links)

    def remove_stale(self) -> None:
        """Delete figure files in ``figures/`` that this report did not write."""
        folder = self.out_dir / FIGURES_DIR
        if not folder.is_dir():
            return
        keep = {p.name for p in self.written}
        for path in folder.iterdir():
            if path.suffix in (".png", ".pdf") and path.name not in keep:
                path.unlink()


def _check_seconds(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}.")
    return float(value)


def running_line(
    state: SweepState, every_s: int, results_dir: Path, out_dir: str | os.PathLike | None
) -> str:
    """``"sweep running: 3 of 8 trials complete; this page reloads every 30 s (…)"``."""
    command = f"raysweep report {shlex.quote(str(results_dir))}"
    if out_dir is not None:
        command += f" --out {shlex.quote(str(out_dir))}"
    return (
        f"sweep running: {state.line()}; this page reloads every {every_s} s (rebuild it with "
        f"{command}, or run {command} --watch)"
    )


def stopped_line(state: SweepState, results_dir: Path) -> str:
    """An incomplete sweep that no driver runs: say so, and how to finish it (no reload)."""
    return (
        f"sweep stopped before it finished: {state.line()}; no driver holds this folder. Finish "
        f"it with the same command plus --resume --out {shlex.quote(str(results_dir))}."
    )


def build_report(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    dpi: int = 110,
    refresh_s: float = REFRESH_S,
) -> Path:
    """Write the report of a results directory; return the path of ``report.html``.

    Args:
      results_dir: a sweep's results folder (``config.json``, ``eigenfunctions/``,
        ``metrics/``, …); any of its parts may be missing.
      out_dir: where to write (default ``<results_dir>/report``); created if needed.
      dpi: resolution of the PNGs (the PDFs are vector).
      refresh_s: while the sweep runs, the page reloads itself every that many seconds
        (rounded up to whole seconds); a complete sweep's page never reloads.

    Raises:
      FileNotFoundError: ``results_dir`` does not exist.
      ValueError: ``dpi`` is not a positive integer, ``refresh_s`` not a positive number, or
        the output folder cannot be written (read-only, or a file where a folder is
        expected); checked before anything is read, drawn or written.
    """
    return _build(results_dir, out_dir, dpi=dpi, refresh_s=refresh_s)[0]


def _build(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    *,
    dpi: int,
    refresh_s: float,
) -> tuple[Path, SweepState]:
    check_positive_int(dpi, "dpi")
    every = math.ceil(_check_seconds(refresh_s, "refresh_s"))
    target = Path(out_dir) if out_dir is not None else Path(results_dir) / REPORT_DIR
    if Path(results_dir).is_dir():  # else collect names the missing folder
        for folder in (target, target / FIGURES_DIR):
            problem = unwritable_reason(folder)
            if problem:
                raise ValueError(
                    f"the report cannot be written to {target.absolute()}: {problem}. Write "
                    f"it elsewhere: raysweep report {results_dir} --out DIR (a folder you can "
                    "write to), or fix the permissions."
                )
    inputs = collect(results_dir)
    out = Path(out_dir) if out_dir is not None else inputs.results_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    draw = FigureWriter(out, dpi=dpi)
    sections = [
        summary_section(inputs),
        findings_section(inputs),
        accuracy_section(inputs, draw),
        training_section(inputs, draw),
        eigen_section(inputs, draw),
        *optional_sections(inputs, draw),
        progress_section(inputs),
        run_section(inputs),
    ]
    draw.remove_stale()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    state = inputs.sweep
    banner = None
    if state.running:
        banner = running_line(state, every, inputs.results_dir, out_dir)
    elif state.incomplete:
        banner = stopped_line(state, inputs.results_dir)
    page = render_page(
        f"raysweep report: {inputs.sweep_name}",
        f"{inputs.results_dir} · generated {stamp}",
        sections,
        refresh_s=every if state.running else None,
        banner=banner,
    )
    path = out / PAGE_NAME
    return atomic_write_text(path, page), inputs.sweep


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def watch_report(
    results_dir: str | os.PathLike,
    every_s: float = REFRESH_S,
    *,
    stop_when_done: bool = True,
    out_dir: str | os.PathLike | None = None,
    dpi: int = 110,
    log: Callable[[str], None] | None = _stderr,
) -> Path:
    """Rebuild the report every ``every_s`` seconds while the sweep runs; return the page's path.

    Each build is :func:`build_report` with ``refresh_s=every_s``, so a browser tab showing
    the page reloads it about as often as it is rebuilt. One line per build goes to ``log``
    (default: stderr; ``None``: silent), e.g. ``"…/report.html: sweep running: 3 of 8 trials
    complete"``.

    Args:
      results_dir, out_dir, dpi: as in :func:`build_report`.
      every_s: seconds between builds (and between reloads of the page).
      stop_when_done: return after the first build that finds the sweep not running: complete,
        or stopped with no driver holding the folder (those pages have no refresh tag);
        ``False``: keep rebuilding until interrupted (e.g. to follow a sweep that will be
        resumed).

    Ctrl-C (``KeyboardInterrupt``) between or during builds stops the loop and returns the last
    page written (the interrupt propagates when none was written yet).

    Raises:
      FileNotFoundError, ValueError: as :func:`build_report` (at any build); ``every_s`` not a
      positive number.
    """
    every = _check_seconds(every_s, "every_s")
    page = None
    try:
        while True:
            page, state = _build(results_dir, out_dir, dpi=dpi, refresh_s=every)
            if log is not None:
                done = (
                    "sweep running"
                    if state.running
                    else "sweep stopped (no driver)"
                    if state.incomplete
                    else "sweep complete"
                )
                log(f"{page}: {done}: {state.line()}" if state.total else f"{page}")
            if stop_when_done and not state.running:
                return page
            time.sleep(every)
    except KeyboardInterrupt:
        if page is None:
            raise
        return page
