"""The paper's findings as verdicts: each claim, the statistic that tests it, and whether it holds.

Every claim of the paper that a results folder can speak to is tested by one or more *tests*,
each on one curve (model · dataset · optimizer · network-or-linearization · variant) or one
record, and the claim's verdict follows from its tests by a rule fixed in advance
(:data:`RULES`; written before any result was looked at, and not to be tuned to results):

- **The unit is the eigen-index.** A curve is one value per index: the mean over the
  replicates (seeds) of that index, or for the steps to the loss threshold the median with
  "not reached" as +∞. Seeds only give the spread of each point; a test of a trend over the
  indices never treats seeds as independent samples.
- **Trends** (claims 1 and 3): Spearman ρ between the index and the metric, with a one-sided
  permutation p-value (the metric's values randomly re-paired with the indices,
  :data:`RULES` ``permutations`` draws, seeded) and a 95 % bootstrap interval over the
  indices (pairs resampled). A test *passes* when ρ has the predicted sign with p < ``alpha``,
  *contradicts* when the opposite one-sided p is < ``alpha``, and is *inconclusive*
  otherwise; a curve with fewer than ``min_indices`` indices (or with no variation) has
  *no data*. Claim 3 measures models that fit their labels (Figs 4-5: steps to the
  threshold, and the distance travelled to fit): a curve whose targets reached the loss
  threshold at fewer than ``min_indices`` indices has *no data* for it (trained too short),
  rather than a trend of distances that only says how far an unfinished run got.
- **Differences over indices** (claim 2, eigenfunction tasks): d_j = accuracy of the
  linearization − of the network at each index both have; the mean of d_j with a one-sided
  sign-flip permutation p-value and a bootstrap interval over the indices.
- **Binary task** (claim 2): network − linearization test accuracy, per model and optimizer:
  with two or more seeds of each, Welch's one-sided t-test over the seeds; with one seed, a
  difference beyond ``margin`` passes (or contradicts).
- **Energy concentration** (claim 4): final − initial energy of the binary task's labels on
  the top-K eigenvectors; beyond ``margin`` passes, below −``margin`` contradicts.
- **Alignment** (claim 5): for each trained index j, the gain α_T(φ_i)/α_0(φ_i) of every probed
  eigenfunction i; passes when φ_j's gain ranks in the top ``alignment_top`` share (at least
  the top one), contradicts when it is at or below the median gain.
- **Binarization** (claim 6): the mean of ⟨sign(φ_j)/√N, φ_j⟩ over the artifact's
  eigenvectors passes inside ``binarization_range`` (the paper: ≈ 0.78; a Gaussian vector:
  √(2/π) ≈ 0.80) and contradicts outside it.
- **NADs** (claim 7): per curve of a NAD sweep, the training accuracy at the first NAD must
  reach ``nad_fit`` (else the training was too short to decide: no data); passes when the
  first NAD's test accuracy is ≥ ``nad_learned``, the last one's ≤ ``nad_chance`` and ρ < 0;
  contradicts when the last NAD is learned too (≥ ``nad_learned``).

A claim is **reproduced** when at least ``pass_share`` of its tests with data pass and none
contradicts; **not reproduced** when some test contradicts or fewer pass; **not enough data**
when no test has data (the finding then says which command produces it).

:func:`compute_findings` works on tables and records in memory (tests build them by hand);
:func:`findings_for` reads a results folder; :func:`save_findings` writes ``findings.json``;
:func:`format_findings` is the console table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import stats

from raysweep.atomic import atomic_write
from raysweep.store import latest_rows, variant_of

__all__ = [
    "CLAIMS",
    "FINDINGS_FILE",
    "RULES",
    "VERDICTS",
    "Finding",
    "compute_findings",
    "findings_for",
    "findings_from_inputs",
    "format_findings",
    "load_findings",
    "save_findings",
]

FINDINGS_FILE = "findings.json"
FINDINGS_FORMAT = "raysweep.findings/v1"
REPRODUCED, NOT_REPRODUCED, NO_DATA = "reproduced", "not reproduced", "not enough data"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NO_DATA)
PASS, CONTRADICTS, INCONCLUSIVE, NO_TEST = "pass", "contradicts", "inconclusive", "no data"

RULES: Mapping[str, Any] = {
    "alpha": 0.05,
    "pass_share": 0.75,
    "min_indices": 8,
    "permutations": 9999,
    "bootstrap": 2000,
    "margin": 0.01,
    "alignment_top": 0.05,
    "binarization_range": (0.73, 0.83),
    "nad_fit": 0.95,
    "nad_learned": 0.9,
    "nad_chance": 0.65,
    "seed": 0,
}
"""The verdict rules (see the module doc). Fixed before looking at results."""

CLAIMS: Mapping[int, tuple[str, str]] = {
    1: (
        "Test accuracy falls with the eigen-index, for the network and the linearization",
        "Sec. 3.2, Figs 2-3",
    ),
    2: (
        "The linearization beats the network on eigenfunction tasks; the network beats the "
        "linearization on the natural binary task",
        "Fig. 2",
    ),
    3: (
        "Steps to the loss threshold and ℓ2 / cosine distance from θ₀ grow with the index",
        "Figs 4-5",
    ),
    4: ("Energy concentration on the top-K eigenvectors rises during training", "Table 1"),
    5: (
        "After training on φ_j, the alignment of φ_j rises more than that of other eigenfunctions",
        "Figs 6-7",
    ),
    6: ("The binarization inner product ⟨sign(φ_j)/√N, φ_j⟩ is ≈ 0.78", "App. B"),
    7: (
        "On D(u) built from NADs, networks learn the top NADs' tasks and fall toward chance on "
        "later ones",
        "App. C",
    ),
}

HOW = {
    1: "run the eigen sweep (python sweeps/eigen_sweep.py --out <results>)",
    2: "run the eigen sweep with network and linearized targets and the binary baseline "
    "(python sweeps/binary_baseline.py --out <results>)",
    3: "run the eigen sweep long enough for the loss threshold to be reached",
    4: "run python sweeps/energy_concentration.py --out <results>",
    5: "run python sweeps/kernel_alignment.py --out <results>",
    6: "run the eigen step (python sweeps/eigen_sweep.py --eigen-only --out <results>)",
    7: "run python sweeps/nad_sweep.py --out <results>/nad (its default, 30 epochs, fits the "
    "first NAD; 3-4 minutes on a 2-core CPU), then raysweep findings <results>",
}


@dataclass(frozen=True)
class Finding:
    """One claim: the summary statistic, its uncertainty, the verdict and every test."""

    claim: int
    title: str
    source: str
    statistic: str
    uncertainty: str
    verdict: str
    tests: list[dict] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- statistics


def _rank(values: np.ndarray) -> np.ndarray:
    return stats.rankdata(values, axis=-1)


def _corr_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``x`` (n,) with each row of ``ys`` (R, n)."""
    xc = x - x.mean()
    yc = ys - ys.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc**2).sum() * (yc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (yc @ xc) / den, 0.0)


def _corr_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of two ``(R, n)`` arrays (0 where a row is constant)."""
    ac = a - a.mean(axis=-1, keepdims=True)
    bc = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((ac**2).sum(axis=-1) * (bc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ac * bc).sum(axis=-1) / den, 0.0)


def _rng(*salt: Any) -> np.random.Generator:
    text = json.dumps([RULES["seed"], *map(str, salt)])
    return np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:16], 16))


def trend_test(index: np.ndarray, values: np.ndarray, *, sign: int, salt: Any = "") -> dict:
    """Spearman ρ of ``values`` against ``index`` with one-sided permutation p-values and a
    95 % bootstrap interval over the points; ``sign`` = +1 (grows) or −1 (falls).

    ``values`` may hold +∞ (e.g. a threshold never reached: ranked last). Returns a dict with
    ``n``, ``rho``, ``p`` (in the predicted direction), ``p_opposite``, ``ci`` and ``outcome``.
    """
    index, values = np.asarray(index, float), np.asarray(values, float)
    keep = ~np.isnan(values)
    index, values = index[keep], values[keep]
    n = int(index.size)
    out: dict[str, Any] = {"n": n, "rho": None, "p": None, "p_opposite": None, "ci": None}
    if n < RULES["min_indices"] or np.unique(values).size < 2:
        out["outcome"] = NO_TEST
        out["why"] = (
            f"{n} indices (need {RULES['min_indices']})"
            if n < RULES["min_indices"]
            else "no variation"
        )
        return out
    rx, ry = _rank(index), _rank(values)
    rho = float(_corr_rows(rx, ry[None])[0])
    rng = _rng("trend", salt)
    perms = rng.permuted(np.tile(ry, (RULES["permutations"], 1)), axis=1)
    null = _corr_rows(rx, perms)
    reps = RULES["permutations"] + 1
    p_up = float((1 + np.sum(null >= rho - 1e-12)) / reps)
    p_down = float((1 + np.sum(null <= rho + 1e-12)) / reps)
    pick = rng.integers(0, n, size=(RULES["bootstrap"], n))
    boot = _corr_pairs(_rank(index[pick]), _rank(values[pick]))
    p, p_opp = (p_up, p_down) if sign > 0 else (p_down, p_up)
    out.update(
        rho=rho,
        p=p,
        p_opposite=p_opp,
        ci=[float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
    )
    out["outcome"] = (
        PASS if p < RULES["alpha"] else CONTRADICTS if p_opp < RULES["alpha"] else INCONCLUSIVE
    )
    return out


def mean_difference_test(diffs: np.ndarray, *, salt: Any = "") -> dict:
    """Mean of ``diffs`` (one per index) > 0: sign-flip permutation p-values, bootstrap CI."""
    d = np.asarray(diffs, float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    out: dict[str, Any] = {"n": n, "mean": None, "p": None, "p_opposite": None, "ci": None}
    if n < RULES["min_indices"]:
        out.update(
            outcome=NO_TEST, why=f"{n} indices with both modes (need {RULES['min_indices']})"
        )
        return out
    rng = _rng("diff", salt)
    mean = float(d.mean())
    flips = rng.choice([-1.0, 1.0], size=(RULES["permutations"], n))
    null = (flips * d).mean(axis=1)
    reps = RULES["permutations"] + 1
    p = float((1 + np.sum(null >= mean - 1e-12)) / reps)
    p_opp = float((1 + np.sum(null <= mean + 1e-12)) / reps)
    boot = d[rng.integers(0, n, size=(RULES["bootstrap"], n))].mean(axis=1)
    out.update(
        mean=mean,
        p=p,
        p_opposite=p_opp,
        ci=[float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        ahead=int(np.sum(d > 0)),
    )
    out["outcome"] = (
        PASS if p < RULES["alpha"] else CONTRADICTS if p_opp < RULES["alpha"] else INCONCLUSIVE
    )
    return out


def margin_outcome(diff: float) -> str:
    """A single difference against :data:`RULES` ``margin``."""
    if not np.isfinite(diff):
        return NO_TEST
    if diff > RULES["margin"]:
        return PASS
    return CONTRADICTS if diff < -RULES["margin"] else INCONCLUSIVE


def verdict_of(tests: Sequence[Mapping]) -> str:
    """The claim's verdict from its tests' outcomes (the rule of the module doc)."""
    judged = [t["outcome"] for t in tests if t["outcome"] != NO_TEST]
    if not judged:
        return NO_DATA
    if CONTRADICTS in judged:
        return NOT_REPRODUCED
    share = judged.count(PASS) / len(judged)
    return REPRODUCED if share >= RULES["pass_share"] else NOT_REPRODUCED


# ----------------------------------------------------------------------------- curves


def _curves(table: pa.Table | None, metric: str) -> dict[tuple, dict[int, list]]:
    """``{(model, dataset, optimizer, mode, variant): {index: [values of the replicates]}}``
    from the final row of every target (diverged targets left out)."""
    out: dict[tuple, dict[int, list]] = {}
    if table is None or table.num_rows == 0:
        return out
    for row in latest_rows(table).to_pylist():
        if row["status"] == "diverged":
            continue
        key = (
            row["model"],
            row["dataset"],
            row["optimizer"],
            "linearized" if row["linearized"] else "network",
            variant_of(row["axes"]),
        )
        value = row[metric]
        if metric == "steps_to_threshold":
            value = math.inf if value is None or value < 0 else float(value)
        elif value is None or not np.isfinite(value):
            continue
        out.setdefault(key, {}).setdefault(int(row["eigen_index"]), []).append(float(value))
    return out


def _per_index(points: dict[int, list], metric: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Sorted indices, one value per index, and the mean seed spread (std) of the points."""
    idx = np.array(sorted(points))
    if metric == "steps_to_threshold":
        vals = np.array([float(np.median(points[j])) for j in idx])
        finite = [np.asarray(points[j]) for j in idx]
        spreads = [np.std(v, ddof=1) for v in finite if v.size > 1 and np.all(np.isfinite(v))]
    else:
        vals = np.array([float(np.mean(points[j])) for j in idx])
        spreads = [np.std(points[j], ddof=1) for j in idx if len(points[j]) > 1]
    return idx, vals, float(np.mean(spreads)) if spreads else float("nan")


def _label(key: tuple) -> str:
    model, dataset, optimizer, mode, variant = key
    text = f"{model} · {dataset} · {optimizer} · {mode}"
    return f"{text} · {variant}" if variant else text


def _replicates(points: dict[int, list]) -> int:
    return max((len(v) for v in points.values()), default=0)


def _rho_summary(tests: list[dict]) -> tuple[str, str]:
    rhos = [t["rho"] for t in tests if t.get("rho") is not None]
    if not rhos:
        return "–", "–"
    cis = [t["ci"] for t in tests if t.get("ci")]
    stat = (
        f"Spearman ρ {min(rhos):+.2f} … {max(rhos):+.2f} over {len(rhos)} curve(s) "
        f"(median {np.median(rhos):+.2f})"
    )
    unc = (
        f"95 % bootstrap over indices, widest [{min(c[0] for c in cis):+.2f}, "
        f"{max(c[1] for c in cis):+.2f}]; worst one-sided permutation p = "
        f"{max(t['p'] for t in tests if t.get('p') is not None):.3g}"
    )
    return stat, unc


def _fitted(table) -> dict[tuple, int]:
    """Per curve, the number of indices whose targets reached the loss threshold (median over
    the replicates)."""
    out = {}
    for key, points in _curves(table, "steps_to_threshold").items():
        vals = _per_index(points, "steps_to_threshold")[1]
        out[key] = int(np.sum(np.isfinite(vals)))
    return out


def _trend_tests(
    table, metric: str, sign: int, *, modes=("network", "linearized"), fitted=None
) -> list[dict]:
    """One :func:`trend_test` per curve of ``metric``; with ``fitted`` (:func:`_fitted`), a
    curve whose targets reached the loss threshold at fewer than ``min_indices`` indices has
    no data."""
    tests = []
    for key, points in sorted(_curves(table, metric).items()):
        if key[3] not in modes:
            continue
        idx, vals, spread = _per_index(points, metric)
        reached = None if fitted is None else fitted.get(key, 0)
        if reached is not None and reached < RULES["min_indices"]:
            test = {"n": int(idx.size), "rho": None, "p": None, "p_opposite": None, "ci": None}
            test.update(
                outcome=NO_TEST,
                why=(
                    f"{_label(key)} reached the loss threshold at {reached} of {idx.size} "
                    f"indices (need {RULES['min_indices']}): too short to fit its labels"
                ),
            )
        else:
            test = trend_test(idx, vals, sign=sign, salt=(metric, key))
        test.update(
            curve=_label(key),
            metric=metric,
            seeds=_replicates(points),
            seed_spread=None if not np.isfinite(spread) else spread,
        )
        if metric == "steps_to_threshold":
            test["reached"] = int(np.sum(np.isfinite(vals)))
        tests.append(test)
    return tests


# ----------------------------------------------------------------------------- claims


def _finding(claim: int, tests: list[dict], statistic: str, uncertainty: str, note: str = ""):
    title, source = CLAIMS[claim]
    verdict = verdict_of(tests)
    if verdict == NO_DATA:
        reasons = sorted({t.get("why", "") for t in tests if t.get("why")})
        note = "; ".join(filter(None, [note, *reasons, f"to decide it, {HOW[claim]}"]))
    return Finding(claim, title, source, statistic, uncertainty, verdict, tests, note)


def claim_accuracy(table) -> Finding:
    tests = _trend_tests(table, "test_accuracy", -1)
    return _finding(1, tests, *_rho_summary(tests))


def claim_linearization(table, baseline: Sequence[Mapping] | None) -> Finding:
    tests = []
    curves = _curves(table, "test_accuracy")
    for key, points in sorted(curves.items()):
        if key[3] != "network":
            continue
        lin = curves.get((*key[:3], "linearized", key[4]))
        if lin is None:
            continue
        common = sorted(set(points) & set(lin))
        diffs = np.array([np.mean(lin[j]) - np.mean(points[j]) for j in common])
        test = mean_difference_test(diffs, salt=key)
        neg = [j for j, d in zip(common, diffs, strict=True) if d < 0]
        test.update(
            curve=_label(key).replace(" · network", ""),
            task="eigenfunctions",
            metric="linearized − network test accuracy",
            first_index_network_ahead=neg[0] if neg else None,
        )
        tests.append(test)
    for group, rows in _baseline_groups(baseline).items():
        net = np.array([r["test_accuracy"] for r in rows if r["mode"] == "network"], float)
        lin = np.array([r["test_accuracy"] for r in rows if r["mode"] == "linearized"], float)
        test: dict[str, Any] = {"curve": " · ".join(group), "task": "binary"}
        test["metric"] = "network − linearized test accuracy"
        if net.size == 0 or lin.size == 0:
            test.update(outcome=NO_TEST, why="binary baseline without both modes")
        else:
            diff = float(net.mean() - lin.mean())
            test.update(mean=diff, n=int(min(net.size, lin.size)))
            if net.size >= 2 and lin.size >= 2 and (np.std(net) > 0 or np.std(lin) > 0):
                p = float(stats.ttest_ind(net, lin, equal_var=False, alternative="greater").pvalue)
                p_opp = float(stats.ttest_ind(net, lin, equal_var=False, alternative="less").pvalue)
                test.update(p=p, p_opposite=p_opp)
                test["outcome"] = (
                    PASS
                    if p < RULES["alpha"]
                    else CONTRADICTS
                    if p_opp < RULES["alpha"]
                    else INCONCLUSIVE
                )
            else:
                test["outcome"] = margin_outcome(diff)
        tests.append(test)
    eig = [t for t in tests if t.get("task") == "eigenfunctions" and t.get("mean") is not None]
    binary = [t for t in tests if t.get("task") == "binary" and t.get("mean") is not None]
    parts, unc = [], []
    if eig:
        parts.append(
            "eigenfunctions: mean lin − net accuracy " + ", ".join(f"{t['mean']:+.3f}" for t in eig)
        )
        unc.append(
            "bootstrap over indices "
            + ", ".join(f"[{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]" for t in eig)
        )
    if binary:
        parts.append("binary: net − lin " + ", ".join(f"{t['mean']:+.3f}" for t in binary))
        unc.append("Welch t over seeds (or the margin with one seed)")
    if not any(t.get("task") == "binary" for t in tests):
        tests.append(
            {
                "curve": "binary task",
                "task": "binary",
                "outcome": NO_TEST,
                "why": "no binary baseline",
            }
        )
    finding = _finding(2, tests, "; ".join(parts) or "–", "; ".join(unc) or "–")
    has = {t["task"] for t in tests if t["outcome"] != NO_TEST}
    if finding.verdict == REPRODUCED and has != {"eigenfunctions", "binary"}:
        missing = ({"eigenfunctions", "binary"} - has).pop()
        return Finding(
            2,
            finding.title,
            finding.source,
            finding.statistic,
            finding.uncertainty,
            NO_DATA,
            tests,
            f"the {missing} half has no data; to decide it, {HOW[2]}",
        )
    return finding


def _baseline_groups(baseline: Sequence[Mapping] | None) -> dict[tuple, list[Mapping]]:
    groups: dict[tuple, list[Mapping]] = {}
    for r in baseline or ():
        key = (str(r["model"]), str(r["dataset"]), str(r.get("optimizer") or "?"))
        groups.setdefault(key, []).append(r)
    return groups


def claim_training(table) -> Finding:
    tests, fitted = [], _fitted(table)
    for metric in ("steps_to_threshold", "l2_distance", "cosine_distance"):
        tests += _trend_tests(table, metric, +1, fitted=fitted)
    stat = "; ".join(
        f"{m}: " + _rho_summary([t for t in tests if t["metric"] == m])[0]
        for m in ("steps_to_threshold", "l2_distance", "cosine_distance")
    )
    return _finding(3, tests, stat, _rho_summary(tests)[1])


def claim_energy(records: Sequence[Mapping] | None) -> Finding:
    tests = []
    for r in records or ():
        diff = float(r["energy_final"]) - float(r["energy_init"])
        test = {
            "curve": f"{r['model']} · {r['dataset']} · K={r['k']}",
            "energy_init": float(r["energy_init"]),
            "energy_final": float(r["energy_final"]),
            "mean": diff,
            "outcome": margin_outcome(diff),
        }
        curve = r.get("curve")
        if curve and len(curve) >= 3:
            epochs = np.array([c["epoch"] for c in curve], float)
            energy = np.array([c["energy"] for c in curve], float)
            test["rho_over_epochs"] = float(_corr_rows(_rank(epochs), _rank(energy)[None])[0])
        tests.append(test)
    stat = ", ".join(
        f"{t['curve']}: {t['energy_init']:.1%} → {t['energy_final']:.1%}" for t in tests
    )
    unc = f"one training run per model; a change within ±{RULES['margin']:.0%} is inconclusive"
    return _finding(4, tests, stat or "–", unc if tests else "–")


def claim_alignment(alignment) -> Finding:
    tests = []
    if alignment is not None and alignment.init:
        split = "all" if "all" in alignment.alpha else sorted(alignment.alpha)[0]
        if split in alignment.init:
            init = np.asarray(alignment.init[split], float)
            k = init.size
            top = max(1, math.ceil(RULES["alignment_top"] * k))
            for row, j in enumerate(np.asarray(alignment.trained_indices)):
                j = int(j)
                test: dict[str, Any] = {"curve": f"trained on φ_{j} ({split} samples)"}
                if j >= k:
                    test.update(outcome=NO_TEST, why=f"index {j} is not among the {k} probed")
                    tests.append(test)
                    continue
                with np.errstate(divide="ignore", invalid="ignore"):
                    gain = np.asarray(alignment.alpha[split][row], float) / init
                rank = int(np.sum(gain > gain[j])) + 1
                test.update(
                    gain=float(gain[j]),
                    median_gain=float(np.median(gain)),
                    rank=rank,
                    of=k,
                    outcome=PASS
                    if rank <= top
                    else CONTRADICTS
                    if gain[j] <= np.median(gain)
                    else INCONCLUSIVE,
                )
                tests.append(test)
    stat = ", ".join(
        f"φ_{t['curve'].split('φ_')[1].split()[0]}: gain ×{t['gain']:.2f} (rank {t['rank']}/"
        f"{t['of']})"
        for t in tests
        if "gain" in t
    )
    unc = f"rank of φ_j's gain among the probed eigenfunctions; top {RULES['alignment_top']:.0%}"
    note = "" if tests else "no alignment at initialization to compare with"
    return _finding(5, tests, stat or "–", unc if tests else "–", note if alignment else "")


def claim_binarization(binarization: Mapping[str, np.ndarray] | None) -> Finding:
    tests = []
    low, high = RULES["binarization_range"]
    for key, values in sorted((binarization or {}).items()):
        v = np.asarray(values, float)
        if v.size == 0:
            continue
        mean = float(v.mean())
        tests.append(
            {
                "curve": key,
                "mean": mean,
                "sem": float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None,
                "n": int(v.size),
                "outcome": PASS if low <= mean <= high else CONTRADICTS,
            }
        )
    stat = ", ".join(f"{t['curve']}: {t['mean']:.3f} over {t['n']} eigenvectors" for t in tests)
    unc = ", ".join(f"± {t['sem']:.3f} (s.e.)" for t in tests if t["sem"] is not None)
    return _finding(6, tests, stat or "–", (unc + f"; range {low}-{high}") if tests else "–")


def claim_nads(table) -> Finding:
    tests = []
    acc = _curves(table, "test_accuracy")
    fit = _curves(table, "train_accuracy")
    for key, points in sorted(acc.items()):
        idx, vals, _ = _per_index(points, "test_accuracy")
        test: dict[str, Any] = {"curve": _label(key), "indices": idx.tolist()}
        first_fit = float(np.mean(fit.get(key, {}).get(int(idx[0]), [np.nan])))
        test["train_accuracy_first"] = first_fit
        if idx.size < 3:
            test.update(outcome=NO_TEST, why=f"{idx.size} NAD indices (need 3)")
        elif not first_fit >= RULES["nad_fit"]:
            test.update(
                outcome=NO_TEST,
                why=f"training too short: the first NAD's training accuracy is {first_fit:.2f} "
                f"(need {RULES['nad_fit']}); raise train.epochs",
            )
        else:
            rho = float(_corr_rows(_rank(idx), _rank(vals)[None])[0])
            test.update(first=float(vals[0]), last=float(vals[-1]), rho=rho)
            learned, chance = RULES["nad_learned"], RULES["nad_chance"]
            test["outcome"] = (
                PASS
                if vals[0] >= learned and vals[-1] <= chance and rho < 0
                else CONTRADICTS
                if vals[-1] >= learned
                else INCONCLUSIVE
            )
        tests.append(test)
    stat = ", ".join(
        f"{t['curve']}: {t['first']:.2f} → {t['last']:.2f}" for t in tests if "first" in t
    )
    return _finding(
        7,
        tests,
        stat or "–",
        "test accuracy at the first and last NAD index (mean over seeds)" if stat else "–",
    )


def compute_findings(
    table: pa.Table | None,
    *,
    baseline: Sequence[Mapping] | None = None,
    energy: Sequence[Mapping] | None = None,
    alignment: Any = None,
    binarization: Mapping[str, np.ndarray] | None = None,
    nad_table: pa.Table | None = None,
) -> list[Finding]:
    """The seven findings from what a results folder holds (each argument may be ``None``).

    Args:
      table: the eigen sweep's metrics store (:func:`raysweep.store.read_metrics`).
      baseline: binary-task records ``{model, dataset, optimizer, mode, seed,
        test_accuracy}`` (:func:`raysweep.analysis.load_baseline_records`).
      energy: energy-concentration records (:func:`raysweep.analysis.load_energy_records`),
        optionally with ``curve`` = ``[{epoch, energy}, ...]``.
      alignment: :class:`raysweep.analysis.AlignmentData` with ``init``.
      binarization: ``{artifact key: ⟨sign φ_j/√N, φ_j⟩ per eigenvector}``.
      nad_table: a NAD sweep's metrics store.
    """
    return [
        claim_accuracy(table),
        claim_linearization(table, baseline),
        claim_training(table),
        claim_energy(energy),
        claim_alignment(alignment),
        claim_binarization(binarization),
        claim_nads(nad_table),
    ]


# ----------------------------------------------------------------------------- files


def findings_for(results_dir: str | os.PathLike, nad_dir: str | os.PathLike | None = None):
    """:func:`compute_findings` of a results folder (``nad_dir``: a NAD sweep's folder;
    default ``<results>/nad`` when it holds metrics)."""
    from raysweep.report.collect import collect

    return findings_from_inputs(collect(results_dir), nad_dir)


def findings_from_inputs(inputs, nad_dir: str | os.PathLike | None = None) -> list[Finding]:
    """:func:`compute_findings` of what :func:`raysweep.report.collect.collect` read."""
    nad_table = None
    nad_path = Path(nad_dir) if nad_dir is not None else Path(inputs.results_dir) / "nad"
    if (nad_path / "metrics").is_dir():
        from raysweep.store import scan_metrics

        nad_table = scan_metrics(nad_path)[0]
    return compute_findings(
        inputs.metrics,
        baseline=inputs.baseline_records,
        energy=inputs.energy,
        alignment=inputs.alignment,
        binarization={a.key: a.binarization for a in inputs.artifacts} or None,
        nad_table=nad_table,
    )


def save_findings(results_dir: str | os.PathLike, findings: Sequence[Finding]) -> Path:
    """Write ``<results>/findings.json`` (the rules, then one entry per claim)."""
    payload = {
        "format": FINDINGS_FORMAT,
        "rules": {k: list(v) if isinstance(v, tuple) else v for k, v in RULES.items()},
        "findings": [f.to_dict() for f in findings],
    }
    data = (json.dumps(payload, indent=1, default=_json_default) + "\n").encode()
    return atomic_write(Path(results_dir) / FINDINGS_FILE, lambda fh: fh.write(data))


def load_findings(results_dir: str | os.PathLike) -> list[Finding] | None:
    """The saved findings, or ``None`` without ``findings.json``."""
    path = Path(results_dir) / FINDINGS_FILE
    if not path.exists():
        return None
    payload = json.loads(path.read_text())
    if payload.get("format") != FINDINGS_FORMAT:
        raise ValueError(f"{path}: expected format {FINDINGS_FORMAT!r}.")
    return [Finding(**f) for f in payload["findings"]]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def format_findings(findings: Sequence[Finding]) -> str:
    """The console table: claim, verdict, statistic (and the note of undecided ones)."""
    lines = [f"{'claim':<6}{'verdict':<17}statistic"]
    for f in findings:
        lines.append(f"{f.claim:<6}{f.verdict:<17}{f.title} ({f.source})")
        lines.append(f"{'':<23}{f.statistic}")
        if f.note:
            lines.append(f"{'':<23}note: {f.note}")
    return "\n".join(lines)
