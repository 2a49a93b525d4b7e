"""The companion studies of the main job and its findings: what the sweep alone cannot show.

After the sweep, :func:`run_companions` runs the studies that ``sweep.studies`` names, each
into the same results folder, so that the report and the findings
(:mod:`raysweep.analysis.findings`) have every input:

- ``baseline``: network vs linearization on the dataset's binary task (digits2, CIFAR2), for
  every model of the grid, every optimizer of the sweep and every ``train.seed`` of the grid
  that ``sweep.exclude`` keeps for the model (a rule naming ``train.optimizer`` drops that
  optimizer for the model)
  (:func:`raysweep.evolution.baseline_study`): the baseline line of the accuracy figure and
  the second half of claim 2.
- ``energy``: Table 1 for every model of the grid, with the energy curve over training
  epochs (:func:`raysweep.evolution.energy_study`; K = 50, the paper's 12,000 Gram samples
  on CIFAR, all training samples on smaller sets): claim 4.
- ``alignment``: Figs 6-7 for the grid's first artifact (``analysis/alignment.npz`` holds one
  model): the network trained on three of the sweep's indices (first, a third and two thirds
  of the way), probing the top :data:`ALIGNMENT_PROBES` eigenfunctions: claim 5.

A companion that fails is logged and recorded, never raised: the sweep's results stand, and
rerunning the main job with the same ``--out`` retries it (each study reuses what it already
trained or computed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raysweep.config import Config

__all__ = ["ALIGNMENT_PROBES", "ENERGY_CURVE", "ENERGY_K", "alignment_indices", "run_companions"]

ENERGY_K = 50
"""K of Table 1 (the paper's 50)."""
ENERGY_CURVE = (1, 3, 10, 30, 100, 300)
"""Epochs at which the energy curve is measured (those within ``train.epochs``; the
initialization and the end are always measured)."""
ALIGNMENT_PROBES = 256
"""Initial eigenfunctions probed by the alignment study (at most the artifact's k)."""
CIFAR_GRAM_SAMPLES = 12_000
"""Training samples of Table 1's Grams on CIFAR (the paper's 12,000)."""


def alignment_indices(indices: tuple[int, ...]) -> list[int]:
    """Three trained indices for the alignment study: the sweep's first, and those a third and
    two thirds of the way along its sorted indices (fewer when the sweep has fewer)."""
    ordered = sorted(set(indices))
    picks = {ordered[0], ordered[len(ordered) // 3], ordered[(2 * len(ordered)) // 3]}
    return sorted(picks)


def _models(config: Config, artifacts) -> list[tuple[Any, Config]]:
    """One (artifact point, config) per distinct model and dataset of the grid."""
    seen, out = set(), []
    for point, _artifact in artifacts:
        cfg = dataclasses.replace(point.config, train=config.train)
        key = (cfg.model, cfg.data)
        if key not in seen:
            seen.add(key)
            out.append((point, cfg))
    return out


def run_companions(
    config: Config,
    out_dir: str | os.PathLike,
    artifacts: list,
    *,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> dict[str, str]:
    """Run ``config.sweep.studies`` after the sweep; ``{study: error}`` of those that failed.

    ``artifacts``: the ``[(ArtifactPoint, EigenArtifact), ...]`` of the main job.
    """
    from raysweep.evolution import alignment_study, baseline_study, energy_study
    from raysweep.evolution.common import BINARY_TASKS
    from raysweep.sweep.grid import excluded

    out_dir = Path(out_dir)
    errors: dict[str, str] = {}
    models = _models(config, artifacts)
    seeds = dict(config.grid).get("train.seed", (config.train.seed,))
    rules = [json.loads(r) for r in config.sweep.exclude]

    def seeds_of(model: str) -> list[int]:
        """The grid's seeds that ``sweep.exclude`` keeps for ``model``."""
        return [s for s in seeds if not excluded({"model.name": model, "train.seed": s}, rules)]

    def optimizers_of(model: str) -> list[str]:
        """The sweep's optimizers that ``sweep.exclude`` keeps for ``model``."""
        return [
            o
            for o in config.sweep.optimizers
            if not excluded({"model.name": model, "train.optimizer": o}, rules)
        ]

    def attempt(name: str, label: str, run: Callable[[], Any]) -> None:
        start = time.perf_counter()
        try:
            run()
        except Exception as err:  # a companion never fails the sweep
            errors[f"{name} {label}"] = f"{type(err).__name__}: {err}"
            log(f"[{name}] {label} failed: {err} (rerun the main job with the same --out)")
            return
        log(f"[{name}] {label} done in {time.perf_counter() - start:.1f} s")

    for name in config.sweep.studies:
        if name == "baseline":
            for _point, cfg in models:
                if cfg.data.name not in BINARY_TASKS:
                    log(f"[baseline] {cfg.data.name} has no binary task; skipped")
                    continue
                attempt(
                    "baseline",
                    f"{cfg.model.name} on {cfg.data.name}",
                    lambda cfg=cfg: baseline_study(
                        cfg,
                        out_dir,
                        optimizers=optimizers_of(cfg.model.name) or config.sweep.optimizers,
                        seeds=seeds_of(cfg.model.name) or seeds[:1],
                        log=log,
                    ),
                )
        elif name == "energy":
            for _point, cfg in models:
                if cfg.data.name not in BINARY_TASKS:
                    log(f"[energy] {cfg.data.name} has no binary task; skipped")
                    continue
                cifar = cfg.data.name in ("cifar10", "cifar2")
                curve = tuple(e for e in ENERGY_CURVE if e < cfg.train.epochs)
                attempt(
                    "energy",
                    f"{cfg.model.name} on {cfg.data.name}",
                    lambda cfg=cfg, cifar=cifar, curve=curve: energy_study(
                        cfg,
                        out_dir,
                        k=ENERGY_K,
                        gram_samples=CIFAR_GRAM_SAMPLES if cifar else None,
                        curve_epochs=curve,
                        progress=progress,
                        log=log,
                    ),
                )
        elif name == "alignment":
            point, cfg = models[0]
            indices = alignment_indices(dict(config.axes())["train.eigen_index"])
            probes = min(ALIGNMENT_PROBES, cfg.ntk.num_eigen)
            attempt(
                "alignment",
                f"{cfg.model.name} on {cfg.data.name}, trained on {indices}",
                lambda cfg=cfg, indices=indices, probes=probes, point=point: alignment_study(
                    cfg,
                    out_dir,
                    trained_indices=indices,
                    num_eigen=probes,
                    subdir=point.subdir,
                    progress=progress,
                    log=log,
                ),
            )
    return errors
