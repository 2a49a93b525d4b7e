"""``build_report``: a results directory → figures (PNG + PDF) and one self-contained HTML page.

Output (default ``<results_dir>/report/``)::

    report.html                one page, images embedded as base64 PNG: open it from disk
    figures/<name>.png|.pdf    every figure, for papers and slides

Figures the data does not allow yet (no metrics, no artifact, no optional inputs) are replaced
on the page by a note that says what to run; figure files of an earlier report that this one
did not draw are removed, so the folder always matches the page. Only a ``results_dir`` that
does not exist is an error.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from raysweep.analysis import MissingInputError
from raysweep.atomic import atomic_write, atomic_write_text, unwritable_reason
from raysweep.report.collect import collect
from raysweep.report.page import figure, note, render_page
from raysweep.report.sections import (
    accuracy_section,
    eigen_section,
    optional_sections,
    progress_section,
    run_section,
    summary_section,
    training_section,
)

REPORT_DIR = "report"
PAGE_NAME = "report.html"
FIGURES_DIR = "figures"


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


def build_report(
    results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, dpi: int = 110
) -> Path:
    """Write the report of a results directory; return the path of ``report.html``.

    Args:
      results_dir: a sweep's results folder (``config.json``, ``eigenfunctions/``,
        ``metrics/``, …); any of its parts may be missing.
      out_dir: where to write (default ``<results_dir>/report``); created if needed.
      dpi: resolution of the PNGs (the PDFs are vector).

    Raises:
      FileNotFoundError: ``results_dir`` does not exist.
      ValueError: ``dpi`` is not a positive integer, or the output folder cannot be written
        (read-only, or a file where a folder is expected); checked before anything is read,
        drawn or written.
    """
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi <= 0:
        raise ValueError(f"dpi: expected a positive integer, got {dpi!r}.")
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
        accuracy_section(inputs, draw),
        training_section(inputs, draw),
        eigen_section(inputs, draw),
        *optional_sections(inputs, draw),
        progress_section(inputs),
        run_section(inputs),
    ]
    draw.remove_stale()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    page = render_page(
        f"raysweep report: {inputs.sweep_name}",
        f"{inputs.results_dir} · generated {stamp}",
        sections,
    )
    path = out / PAGE_NAME
    return atomic_write_text(path, page)
