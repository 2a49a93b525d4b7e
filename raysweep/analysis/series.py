"""From the metrics table to plot-ready curves: final epoch per target, mean and spread over seeds.

A *target* is one (trial_id, target_id); its *final* row is the row of its latest epoch
(:func:`raysweep.store.latest_rows`). A *curve* (:class:`IndexSeries`) is one metric against the
eigen-index for one (model, dataset, optimizer, network-or-linearized, variant), where the
*variant* is the grid point's other axis values (:func:`raysweep.store.variant_of`, e.g.
``"train.learning_rate=0.02"``): two learning rates are two curves, never replicates. At each
index a curve aggregates the final rows of all replicates of that grid point (its seeds,
``train.seed``: the batch order; or the same point from repeated sweeps):

- ``mean``, ``low``, ``high``: the mean and a band over the *valid* replicates. ``band="std"``
  gives mean ± standard deviation (ddof=1), ``band="ci95"`` the 95 % Student-t confidence
  interval of the mean; with one valid replicate the band collapses onto the mean.
- A value is *invalid* when it is not finite (a diverged target has NaN losses), when its target
  diverged (status ``diverged``; it is never averaged in) or, for ``steps_to_threshold``, when it
  is null (the loss threshold was not reached; a negative value, the training API's -1, in a
  table built by hand means the same).
- ``diverged``, ``unreached``, ``running``: the indices where at least one replicate diverged,
  did not reach the threshold, or is not finished yet (its latest epoch is shown).
- :meth:`IndexSeries.band_label` / :func:`band_caption` say what a band is over, e.g.
  ``"mean ± std over train.seed (batch order), n=3"`` (n: the valid replicates).

Everything is plain numpy over the (small) table of final rows; nothing is read from disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy.special import stdtrit

from raysweep.analysis.figure_checks import check_choice
from raysweep.store import describe_replicates, latest_rows, variant_of

BANDS = ("std", "ci95")
BAND_NAMES = {"std": "mean ± std", "ci95": "95 % CI of the mean"}
CURVE_KEY = ("model", "dataset", "optimizer", "linearized", "variant")
"""What makes two final rows belong to different curves (``variant``: see the module doc)."""


@dataclass(frozen=True)
class IndexSeries:
    """One metric against the eigen-index, aggregated over replicates (see the module doc)."""

    model: str
    dataset: str
    optimizer: str
    linearized: bool
    metric: str
    indices: np.ndarray  # (m,) sorted eigen-indices with at least one final row
    mean: np.ndarray  # (m,) NaN where no replicate is valid
    low: np.ndarray
    high: np.ndarray
    count: np.ndarray  # (m,) valid replicates
    total: np.ndarray  # (m,) replicates (final rows)
    diverged: np.ndarray  # indices where a replicate diverged
    unreached: np.ndarray  # indices where a replicate did not reach the loss threshold
    running: np.ndarray  # indices where a replicate is not finished
    variant: str = ""  # the grid point's other axis values, "" when none
    band: str = "std"  # what low/high are: "std" or "ci95"
    by_seed: bool = True  # the replicates of each index differ in train.seed

    @property
    def kind(self) -> str:
        """``"linearized"`` or ``"network"``."""
        return "linearized" if self.linearized else "network"

    @property
    def label(self) -> str:
        """``"network"``, or ``"network · train.learning_rate=0.02"`` with a variant."""
        return f"{self.kind} · {self.variant}" if self.variant else self.kind

    @property
    def has_band(self) -> bool:
        """True when some index has two or more valid replicates."""
        return bool(np.any(self.count >= 2))

    @property
    def band_counts(self) -> np.ndarray:
        """The valid replicates at the indices where a band is drawn (count >= 2)."""
        return self.count[self.count >= 2]

    def band_label(self) -> str:
        """What the band is: ``"mean ± std over train.seed (batch order), n=3"``."""
        over = describe_replicates(self.band_counts, by_seed=self.by_seed)
        return f"{BAND_NAMES[self.band]} {over}"


def band_caption(curves: list[IndexSeries]) -> str:
    """What the bands of ``curves`` are, in one phrase (``""`` when none has a band).

    E.g. ``"mean ± std over train.seed (batch order), n=3"``; ``n=2-3`` when the number of
    valid replicates differs between indices or curves.
    """
    shown = [c for c in curves if c.has_band]
    if not shown:
        return ""
    bands = sorted({c.band for c in shown})
    counts = np.concatenate([c.band_counts for c in shown])
    over = describe_replicates(counts, by_seed=all(c.by_seed for c in shown))
    return f"{' / '.join(BAND_NAMES[b] for b in bands)} {over}"


def final_rows(table: pa.Table) -> list[dict]:
    """The final row of every target, as dicts (see :func:`raysweep.store.latest_rows`)."""
    return latest_rows(table).to_pylist()


def _valid(row: dict, metric: str) -> bool:
    value = row[metric]
    if row["status"] == "diverged" or value is None or not np.isfinite(value):
        return False
    return not (metric == "steps_to_threshold" and value < 0)


def _unreached(row: dict) -> bool:
    """The loss threshold was not reached: null (the store) or negative (-1, built by hand)."""
    value = row["steps_to_threshold"]
    return row["status"] != "diverged" and (value is None or value < 0)


def _numeric_columns(table: pa.Table) -> list[str]:
    return [
        f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
    ]


def _band(values: np.ndarray, band: str) -> tuple[float, float, float]:
    mean = float(np.mean(values))
    if values.size < 2:
        return mean, mean, mean
    std = float(np.std(values, ddof=1))
    if band == "std":
        return mean, mean - std, mean + std
    half = float(stdtrit(values.size - 1, 0.975)) * std / np.sqrt(values.size)
    return mean, mean - half, mean + half


def index_series(table: pa.Table, metric: str, *, band: str = "std") -> list[IndexSeries]:
    """One :class:`IndexSeries` of ``metric`` per (model, dataset, optimizer, linearized,
    variant).

    Args:
      table: a metrics table (:func:`raysweep.store.read_metrics`), any number of epochs.
      metric: a numeric column, e.g. ``"test_accuracy"`` or ``"steps_to_threshold"``.
      band: ``"std"`` (mean ± std over replicates) or ``"ci95"`` (95 % CI of the mean).

    Returns:
      Curves sorted by (model, dataset, optimizer, linearized, variant); network before
      linearized.
    """
    check_choice(band, "band", BANDS)
    check_choice(metric, "metric", _numeric_columns(table))
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for row in final_rows(table):
        row["variant"] = variant_of(row["axes"])
        key = tuple(row[c] for c in CURVE_KEY)
        groups.setdefault(key, {}).setdefault(int(row["eigen_index"]), []).append(row)
    out = []
    for key in sorted(groups):
        by_index = groups[key]
        indices = np.array(sorted(by_index), dtype=np.int64)
        mean, low, high = (np.full(indices.size, np.nan) for _ in range(3))
        count = np.zeros(indices.size, dtype=np.int64)
        total = np.zeros(indices.size, dtype=np.int64)
        diverged, unreached, running = [], [], []
        for i, j in enumerate(indices):
            rows = by_index[int(j)]
            vals = np.array([r[metric] for r in rows if _valid(r, metric)], dtype=np.float64)
            total[i], count[i] = len(rows), vals.size
            if vals.size:
                mean[i], low[i], high[i] = _band(vals, band)
            statuses = {r["status"] for r in rows}
            if "diverged" in statuses:
                diverged.append(j)
            if statuses & {"running", "error"}:
                running.append(j)
            if metric == "steps_to_threshold" and any(_unreached(r) for r in rows):
                unreached.append(j)
        model, dataset, optimizer, linearized, variant = key
        out.append(
            IndexSeries(
                model=model,
                dataset=dataset,
                optimizer=optimizer,
                linearized=linearized,
                variant=variant,
                band=band,
                by_seed=all(
                    len({r["seed"] for r in rows}) == len(rows) for rows in by_index.values()
                ),
                metric=metric,
                indices=indices,
                mean=mean,
                low=low,
                high=high,
                count=count,
                total=total,
                diverged=np.array(diverged, dtype=np.int64),
                unreached=np.array(unreached, dtype=np.int64),
                running=np.array(running, dtype=np.int64),
            )
        )
    return out


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average over consecutive points, ignoring NaN (window 1: unchanged).

    The window counts points, not index units: with indices 0, 1, 2, 4, 8, ... it averages
    neighbours in that list. Ends use the points available (a shorter window).
    """
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values.copy()
    half_lo, half_hi = (window - 1) // 2, window // 2
    out = np.full(values.size, np.nan)
    for i in range(values.size):
        chunk = values[max(0, i - half_lo) : i + half_hi + 1]
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size:
            out[i] = chunk.mean()
    return out


MODEL_ORDER = ("mlp", "lenet5", "resnet18")
"""Column order of the models (the paper's Fig 2: MLP, LeNet, ResNet18); others follow, sorted."""


def _model_key(model: str) -> tuple[int, str]:
    return (MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER), model)


@dataclass(frozen=True)
class Facets:
    """The panel grid of a figure, as in the paper's Fig 2.

    ``rows``: (dataset, optimizer) pairs, datasets outermost (sorted); ``models``: one column
    each, in :data:`MODEL_ORDER`. ``present``: the (model, dataset, optimizer) cells that have
    rows in the table (a model not run on some dataset leaves its cell empty).
    """

    rows: list[tuple[str, str]]
    models: list[str]
    present: frozenset[tuple[str, str, str]]

    @property
    def shape(self) -> tuple[int, int]:
        """(number of rows, number of columns)."""
        return len(self.rows), len(self.models)

    def cells(self):
        """``(r, c, model, dataset, optimizer)`` for every panel, row by row."""
        for r, (dataset, optimizer) in enumerate(self.rows):
            for c, model in enumerate(self.models):
                yield r, c, model, dataset, optimizer


def facets(table: pa.Table, optimizer: str | None = None) -> Facets:
    """The panel grid of a sweep: models in columns, (dataset, optimizer) pairs in rows.

    ``optimizer`` keeps only that optimizer (it must be in the table).
    """
    optimizers = sorted(set(table.column("optimizer").to_pylist()))
    if optimizer is not None:
        check_choice(optimizer, "optimizer", optimizers)
    present = frozenset(
        zip(
            table.column("model").to_pylist(),
            table.column("dataset").to_pylist(),
            table.column("optimizer").to_pylist(),
            strict=True,
        )
    )
    if optimizer is not None:
        present = frozenset(p for p in present if p[2] == optimizer)
    rows = sorted({(d, o) for _, d, o in present})
    models = sorted({m for m, _, _ in present}, key=_model_key)
    return Facets(rows=rows, models=models, present=present)


def select(
    curves: list[IndexSeries], model: str, dataset: str, optimizer: str
) -> list[IndexSeries]:
    """The curves of one panel (network first)."""
    return [c for c in curves if (c.model, c.dataset, c.optimizer) == (model, dataset, optimizer)]
