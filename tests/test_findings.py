"""The findings: verdict logic on constructed tables where each claim holds, fails or lacks
data."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from raysweep.analysis import (
    AlignmentData,
    load_baseline,
    load_baseline_records,
    save_baseline,
    save_baseline_records,
)
from raysweep.analysis.energy import energy_records
from raysweep.analysis.findings import (
    CONTRADICTS,
    NO_DATA,
    NO_TEST,
    NOT_REPRODUCED,
    PASS,
    REPRODUCED,
    RULES,
    claim_accuracy,
    claim_alignment,
    claim_binarization,
    claim_energy,
    claim_linearization,
    claim_nads,
    claim_training,
    compute_findings,
    format_findings,
    load_findings,
    mean_difference_test,
    save_findings,
    trend_test,
    verdict_of,
)
from raysweep.store import axes_json, make_target_id, rows_to_table

INDICES = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55)


def make_table(
    metrics,
    *,
    models=("mlp", "lenet5"),
    indices=INDICES,
    seeds=(0, 1, 2),
    optimizers=("sgd", "adam"),
    dataset="digits",
):
    """A finished sweep whose final rows have ``metrics(model, opt, lin, j, seed)``."""
    rows = []
    for model, opt, lin in itertools.product(models, optimizers, (False, True)):
        trial = f"{opt}-{'lin' if lin else 'nn'}-pack000-{model}-{dataset}"
        for j, seed in itertools.product(indices, seeds):
            base = {
                "train_loss": 0.01,
                "train_accuracy": 1.0,
                "test_loss": 0.3,
                "test_accuracy": 0.9,
                "steps_to_threshold": 100,
                "l2_distance": 1.0,
                "cosine_distance": 0.1,
            }
            base.update(metrics(model, opt, lin, j, seed))
            rows.append(
                {
                    "sweep_id": "s",
                    "trial_id": trial,
                    "target_id": make_target_id(j, seed),
                    "model": model,
                    "dataset": dataset,
                    "optimizer": opt,
                    "linearized": lin,
                    "eigen_index": j,
                    "seed": seed,
                    "learning_rate": 0.05,
                    "axes": axes_json({"model.name": model, "train.seed": seed}),
                    "epoch": 10,
                    "step": 100,
                    "weight_norm": 1.0,
                    "grad_norm": 0.1,
                    "status": "finished",
                    "wall_time": 1.0,
                    **base,
                }
            )
    return rows_to_table(rows)


def noise(*key):
    return float(np.random.default_rng(abs(hash(key)) % 2**32).normal(0, 0.005))


def paper_like(model, opt, lin, j, seed):
    """Accuracy falls with j, the linearization ahead; steps and distances grow with j."""
    return {
        "test_accuracy": 0.95
        - 0.05 * math.log1p(j)
        + (0.02 if lin else 0.0)
        + noise(model, opt, lin, j, seed),
        "steps_to_threshold": None if j >= 34 else 50 + 20 * j + seed,
        "l2_distance": 1.0 + 0.3 * math.log1p(j) + noise(j, seed, "l2"),
        "cosine_distance": 0.01 * (1 + j) + abs(noise(j, seed, "cos")),
    }


@pytest.fixture(scope="module")
def paper_table():
    return make_table(paper_like)


# ----------------------------------------------------------------------------- statistics


def test_trend_test_rho_is_spearman_and_p_matches_the_exact_permutation_distribution():
    rng = np.random.default_rng(3)
    x = np.arange(8.0)
    y = -0.3 * x + rng.normal(0, 1.0, 8)
    out = trend_test(x, y, sign=-1)
    assert out["rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    ry = stats.rankdata(y)
    perms = ry[np.array(list(itertools.permutations(range(8))))]  # all 40,320 pairings
    xc, pc = x - x.mean(), perms - perms.mean(axis=1, keepdims=True)
    exact = (pc @ xc) / np.sqrt((xc**2).sum() * (pc**2).sum(axis=1))
    p_exact = np.mean(exact <= out["rho"] + 1e-12)
    # Monte Carlo with 9,999 draws: standard error < 0.005
    assert out["p"] == pytest.approx(p_exact, abs=0.02)
    assert out["ci"][0] <= out["rho"] <= out["ci"][1]


def test_trend_test_outcomes_and_no_data():
    x = np.arange(10)
    assert trend_test(x, -x, sign=-1)["outcome"] == PASS
    assert trend_test(x, x, sign=-1)["outcome"] == CONTRADICTS
    flat = trend_test(x, np.array([1, 0] * 5, float), sign=+1)
    assert flat["outcome"] == "inconclusive"
    short = trend_test(
        np.arange(RULES["min_indices"] - 1), np.arange(RULES["min_indices"] - 1), sign=+1
    )
    assert short["outcome"] == NO_TEST and "need" in short["why"]
    assert trend_test(x, np.ones(10), sign=+1)["why"] == "no variation"
    # +inf (never reached) ranks last: a growing series with the tail unreached passes
    steps = np.array([1, 2, 3, 4, 5, 6, 7, np.inf, np.inf, np.inf])
    assert trend_test(x, steps, sign=+1)["outcome"] == PASS


def test_mean_difference_test_sign_flip():
    assert mean_difference_test(np.full(10, 0.02) + np.linspace(0, 0.01, 10))["outcome"] == PASS
    assert mean_difference_test(-np.linspace(0.01, 0.02, 10))["outcome"] == CONTRADICTS
    assert mean_difference_test(np.ones(3))["outcome"] == NO_TEST


def test_verdict_rule():
    def tests(*outcomes):
        return [{"outcome": o} for o in outcomes]

    assert verdict_of(tests(PASS, PASS, PASS, "inconclusive")) == REPRODUCED
    assert verdict_of(tests(PASS, PASS, "inconclusive", "inconclusive")) == NOT_REPRODUCED
    assert verdict_of(tests(PASS, PASS, PASS, CONTRADICTS)) == NOT_REPRODUCED
    assert verdict_of(tests(NO_TEST, NO_TEST)) == NO_DATA
    assert verdict_of(tests(PASS, NO_TEST)) == REPRODUCED
    assert verdict_of([]) == NO_DATA


# ----------------------------------------------------------------------------- claims


def test_claim_1_holds_fails_and_lacks_data(paper_table):
    found = claim_accuracy(paper_table)
    assert found.verdict == REPRODUCED
    assert len(found.tests) == 8  # 2 models x 2 optimizers x network/linearized
    assert all(t["rho"] < -0.9 and t["seeds"] == 3 for t in found.tests)
    rising = make_table(lambda m, o, lin, j, s: {"test_accuracy": 0.4 + 0.01 * j})
    assert claim_accuracy(rising).verdict == NOT_REPRODUCED
    short = make_table(paper_like, indices=(0, 1, 2, 3))
    lacking = claim_accuracy(short)
    assert lacking.verdict == NO_DATA and "4 indices" in lacking.note
    assert claim_accuracy(None).verdict == NO_DATA


def test_seeds_are_not_the_unit(paper_table):
    """Ten seeds of three indices are still three points: not enough data."""
    table = make_table(paper_like, indices=(0, 5, 55), seeds=tuple(range(10)))
    assert claim_accuracy(table).verdict == NO_DATA


def baseline_records(net, lin, seeds=(0, 1, 2)):
    return [
        {
            "model": m,
            "dataset": "digits2",
            "optimizer": o,
            "mode": mode,
            "seed": s,
            "test_accuracy": acc + 0.002 * s,
        }
        for m in ("mlp", "lenet5")
        for o in ("sgd", "adam")
        for mode, acc in (("network", net), ("linearized", lin))
        for s in seeds
    ]


def test_claim_2_needs_both_halves(paper_table):
    holds = claim_linearization(paper_table, baseline_records(0.95, 0.90))
    assert holds.verdict == REPRODUCED
    eig = [t for t in holds.tests if t["task"] == "eigenfunctions"]
    assert len(eig) == 4 and all(t["mean"] == pytest.approx(0.02, abs=0.01) for t in eig)
    binary = [t for t in holds.tests if t["task"] == "binary"]
    assert len(binary) == 4 and all(t["outcome"] == PASS for t in binary)
    assert claim_linearization(paper_table, baseline_records(0.90, 0.95)).verdict == (
        NOT_REPRODUCED
    )
    missing = claim_linearization(paper_table, None)
    assert missing.verdict == NO_DATA and "binary" in missing.note
    one_seed = claim_linearization(paper_table, baseline_records(0.95, 0.90, seeds=(0,)))
    assert one_seed.verdict == REPRODUCED  # beyond the margin with one seed


def test_claim_3_steps_with_unreached_and_distances(paper_table):
    found = claim_training(paper_table)
    assert found.verdict == REPRODUCED
    steps = [t for t in found.tests if t["metric"] == "steps_to_threshold"]
    assert steps and all(t["reached"] == 8 for t in steps)  # indices 0..21 reached
    never = make_table(
        lambda m, o, lin, j, s: {**paper_like(m, o, lin, j, s), "steps_to_threshold": None}
    )
    nothing = [t for t in claim_training(never).tests if t["metric"] == "steps_to_threshold"]
    assert all(t["outcome"] == NO_TEST for t in nothing)
    shrinking = make_table(
        lambda m, o, lin, j, s: {
            "l2_distance": 5.0 - 0.05 * j,
            "cosine_distance": 1.0 / (1 + j),
            "steps_to_threshold": 1000 - j,
        }
    )
    assert claim_training(shrinking).verdict == NOT_REPRODUCED


def test_claim_3_leaves_out_curves_that_did_not_fit_their_labels():
    """A linearization that reached the threshold at 5 of 10 indices (fewer than min_indices)
    has no data for claim 3, though its distances fall; the networks decide the claim."""

    def unfinished_lin(model, opt, lin, j, seed):
        row = paper_like(model, opt, lin, j, seed)
        if lin:
            row.update(
                steps_to_threshold=None if j > 5 else 500 + j,
                l2_distance=2.0 - 0.1 * math.log1p(j),
                cosine_distance=0.5 / (1 + j),
            )
        return row

    found = claim_training(make_table(unfinished_lin))
    lin = [t for t in found.tests if "linearized" in t["curve"]]
    net = [t for t in found.tests if "network" in t["curve"]]
    assert len(lin) == 12 and all(t["outcome"] == NO_TEST for t in lin)
    assert all("at 5 of 10 indices" in t["why"] for t in lin)
    assert len(net) == 12 and all(t["outcome"] == PASS for t in net)
    assert found.verdict == REPRODUCED


def test_claim_4_energy():
    rec = {"model": "mlp", "dataset": "digits2", "k": 50, "test_accuracy": 0.9}
    assert claim_energy([{**rec, "energy_init": 0.3, "energy_final": 0.6}]).verdict == REPRODUCED
    assert claim_energy([{**rec, "energy_init": 0.6, "energy_final": 0.3}]).verdict == (
        NOT_REPRODUCED
    )
    flat = claim_energy([{**rec, "energy_init": 0.5, "energy_final": 0.505}])
    assert flat.verdict == NOT_REPRODUCED and flat.tests[0]["outcome"] == "inconclusive"
    assert claim_energy(None).verdict == NO_DATA
    curve = [{"epoch": e, "energy": 0.3 + 0.003 * e} for e in (0, 1, 10, 100)]
    with_curve = claim_energy([{**rec, "energy_init": 0.3, "energy_final": 0.6, "curve": curve}])
    assert with_curve.tests[0]["rho_over_epochs"] == pytest.approx(1.0)


def alignment(spike_at, k=40, trained=(0, 5, 20)):
    init = np.linspace(1.0, 0.5, k)
    alpha = np.tile(init * np.linspace(1.0, 2.0, k), (len(trained), 1))  # gains 1 ... 2
    for row, j in enumerate(trained):
        alpha[row, spike_at(j)] *= 5.0
    return AlignmentData(np.asarray(trained), {"all": alpha}, {"all": init})


def test_claim_5_alignment():
    holds = claim_alignment(alignment(lambda j: j))
    assert holds.verdict == REPRODUCED and all(t["rank"] == 1 for t in holds.tests)
    elsewhere = claim_alignment(alignment(lambda j: (j + 7) % 40))
    assert elsewhere.verdict == NOT_REPRODUCED
    no_init = AlignmentData(np.asarray([0]), {"all": np.ones((1, 5))})
    assert claim_alignment(no_init).verdict == NO_DATA
    assert claim_alignment(None).verdict == NO_DATA


def test_claim_6_binarization():
    rng = np.random.default_rng(0)
    gaussian = np.abs(rng.normal(size=(64, 2000))).mean(axis=1) / np.sqrt(1.0)  # ≈ √(2/π)
    assert claim_binarization({"mlp-digits": gaussian}).verdict == REPRODUCED
    assert claim_binarization({"mlp-digits": np.full(10, 0.55)}).verdict == NOT_REPRODUCED
    assert claim_binarization(None).verdict == NO_DATA


def nad_table(first_train_acc, test_acc):
    idx = (0, 1, 2, 4, 9)

    def metrics(m, o, lin, j, s):
        return {"train_accuracy": first_train_acc if j == 0 else 0.8, "test_accuracy": test_acc(j)}

    return make_table(metrics, models=("lenet5",), indices=idx, optimizers=("sgd",), dataset="nad")


def test_claim_7_nads_needs_fitted_training():
    holds = claim_nads(nad_table(1.0, lambda j: 0.99 - 0.05 * j))
    assert holds.verdict == REPRODUCED
    short = claim_nads(nad_table(0.7, lambda j: 0.65))
    assert short.verdict == NO_DATA and "training too short" in short.note
    all_learned = claim_nads(nad_table(1.0, lambda j: 0.98))
    assert all_learned.verdict == NOT_REPRODUCED
    assert claim_nads(None).verdict == NO_DATA


# ----------------------------------------------------------------------------- files


def test_findings_json_round_trip_and_console_table(tmp_path, paper_table):
    found = compute_findings(paper_table, baseline=baseline_records(0.95, 0.9))
    assert [f.claim for f in found] == [1, 2, 3, 4, 5, 6, 7]
    path = save_findings(tmp_path, found)
    payload = json.loads(path.read_text())
    assert payload["rules"]["alpha"] == RULES["alpha"]
    assert load_findings(tmp_path) == found
    text = format_findings(found)
    assert text.count(REPRODUCED) >= 3 and NO_DATA in text
    assert load_findings(tmp_path / "none") is None


def test_baseline_records_v2_and_v1(tmp_path):
    records = baseline_records(0.95, 0.9)
    save_baseline_records(
        tmp_path, "digits2", [{k: v for k, v in r.items() if k != "dataset"} for r in records]
    )
    back = load_baseline_records(tmp_path)
    assert len(back) == len(records) and back[0]["dataset"] == "digits2"
    dataset, acc = load_baseline(tmp_path)
    assert dataset == "digits2" and acc["mlp"] == pytest.approx(0.952)
    old = tmp_path / "old"
    (old / "analysis").mkdir(parents=True)
    (old / "analysis" / "baseline.json").write_text(
        json.dumps(
            {"format": "raysweep.baseline/v1", "dataset": "cifar2", "accuracy": {"lenet5": 0.8}}
        )
    )
    assert load_baseline_records(old) == [
        {
            "model": "lenet5",
            "optimizer": None,
            "mode": "network",
            "seed": None,
            "test_accuracy": 0.8,
            "dataset": "cifar2",
        }
    ]
    save_baseline(tmp_path, "cifar2", {"mlp": 0.7})
    assert load_baseline(tmp_path) == ("cifar2", {"mlp": 0.7})
    with pytest.raises(ValueError, match="network or linearized"):
        save_baseline_records(
            tmp_path, "cifar2", [{"model": "m", "mode": "both", "test_accuracy": 0.5}]
        )


def test_energy_curve_is_validated():
    rec = {
        "model": "mlp",
        "dataset": "digits2",
        "k": 50,
        "energy_init": 0.3,
        "energy_final": 0.6,
        "test_accuracy": 0.9,
    }
    curve = [{"epoch": 0, "energy": 0.3}, {"epoch": 5, "energy": 0.6}]
    assert energy_records([{**rec, "curve": curve}])[0]["curve"] == curve
    with pytest.raises(ValueError, match="epochs must increase"):
        energy_records([{**rec, "curve": curve[::-1]}])
    with pytest.raises(ValueError, match="epoch, energy"):
        energy_records([{**rec, "curve": [{"epoch": 0}]}])
