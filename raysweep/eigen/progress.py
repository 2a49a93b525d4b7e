"""Progress of the eigensolver: what a long eigen step reports while it runs.

:func:`raysweep.eigen.top_eigenpairs` (``progress=``) calls back with an
:class:`EigenProgress` after every product with K while the block solver fills its Krylov
basis, after every Rayleigh-Ritz cycle (the converged pairs are counted there) and once at the
end. :func:`progress_reporter` turns those into throttled console lines and a JSON file that
``raysweep status`` reads (:func:`read_progress`, :data:`PROGRESS_FILE` in the Gram's folder).

The time left is an estimate: the rest of the current cycle at the rate its products have
gone so far, plus, after a cycle has converged some pairs, as many more cycles as that rate of
convergence asks for. NTK spectra converge in 1-3 cycles, so the first cycle's estimate is
most of it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PROGRESS_FILE",
    "EigenProgress",
    "format_seconds",
    "progress_lines",
    "progress_reporter",
    "read_progress",
]

PROGRESS_FILE = "eigen_progress.json"
"""Written beside the Gram's tiles (``<gram>/eigen_progress.json``) by the main job."""


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class EigenProgress:
    """One report of the eigensolver.

    ``cycle``: Rayleigh-Ritz cycles done; ``matvecs``: products of K with single vectors so
    far (the summed widths of the ``K @ V`` products, as :class:`~raysweep.eigen.EigenPairs`
    counts them); ``basis`` / ``capacity``: Krylov basis columns filled of the most it
    holds before the next Rayleigh-Ritz; ``converged`` of ``k`` pairs locked; ``residual``:
    the worst residual ‖Kv − θv‖/λmax of the unconverged wanted pairs at the last cycle
    (None before the first); ``elapsed_s``, ``eta_s`` (None when it cannot be told yet);
    ``done``: the solver returned; ``method``.
    """

    method: str
    k: int
    cycle: int
    matvecs: int
    basis: int
    capacity: int
    converged: int
    residual: float | None
    elapsed_s: float
    eta_s: float | None
    done: bool = False

    def line(self) -> str:
        """One console line."""
        if self.done:
            return (
                f"[eigen] {self.method}: {self.converged}/{self.k} pairs converged after "
                f"{self.cycle} cycle(s), {self.matvecs} matvecs, {format_seconds(self.elapsed_s)}"
            )
        parts = [
            f"[eigen] {self.method}: cycle {self.cycle + 1}",
            f"basis {self.basis}/{self.capacity}",
            f"{self.matvecs} matvecs",
            f"{self.converged}/{self.k} pairs converged",
        ]
        if self.residual is not None:
            parts.append(f"worst residual {self.residual:.1e}·λmax")
        parts.append(f"elapsed {format_seconds(self.elapsed_s)}")
        if self.eta_s is not None:
            parts.append(f"~{format_seconds(self.eta_s)} left (estimate)")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "updated": time.time()}


def read_progress(path: str | os.PathLike) -> dict[str, Any] | None:
    """The last report written to ``path`` (a dict, with ``updated``), or None."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "converged" in data else None


def progress_lines(results_dir: str | os.PathLike, now: float | None = None) -> list[str]:
    """One line per eigen step of a results folder whose Gram folder holds a progress file
    (``gram/`` or ``artifacts/<key>/gram/``): where the solver is, or that it finished."""
    root = Path(results_dir)
    now = time.time() if now is None else now
    lines = []
    for path in sorted(
        [*root.glob(f"gram/{PROGRESS_FILE}"), *root.glob(f"*/*/gram/{PROGRESS_FILE}")]
    ):
        data = read_progress(path)
        if data is None:
            continue
        fields = {k: data[k] for k in EigenProgress.__dataclass_fields__ if k in data}
        try:
            text = EigenProgress(**fields).line().removeprefix("[eigen] ")
        except TypeError:  # a file of another version
            continue
        owner = path.parent.parent
        label = "eigensolver" if owner == root else f"eigensolver ({owner.name})"
        age = format_seconds(max(now - float(data.get("updated", now)), 0.0))
        lines.append(f"{label}: {text} (reported {age} ago)")
    return lines


def progress_reporter(
    log: Callable[[str], Any] | None,
    path: str | os.PathLike | None = None,
    *,
    every_s: float = 15.0,
    write_every_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[EigenProgress], None]:
    """A ``progress=`` callback: a console line on ``log`` at most every ``every_s`` seconds
    (the first after ``every_s``, so a quick solve prints nothing extra; the final report
    always), and the report as JSON in ``path`` at most every ``write_every_s`` (atomic
    replace; the final report always)."""
    last = {"log": clock(), "write": -float("inf")}

    def report(event: EigenProgress) -> None:
        now = clock()
        if log is not None and (
            (event.done and event.elapsed_s >= every_s) or now - last["log"] >= every_s
        ):
            last["log"] = now
            log(event.line())
        if path is not None and (event.done or now - last["write"] >= write_every_s):
            last["write"] = now
            target = Path(path)
            tmp = target.with_name(target.name + ".tmp")
            try:
                tmp.write_text(json.dumps(event.to_dict()))
                os.replace(tmp, target)
            except OSError:  # progress is best effort; the solve goes on
                pass

    return report
