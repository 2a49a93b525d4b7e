"""raysweep.analysis: each figure on small synthetic tables (panels, series, labels, scales)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from raysweep.analysis import (
    GAUSSIAN_BINARIZATION,
    AlignmentData,
    MissingInputError,
    accuracy_rows,
    energy_concentration_table,
    format_table,
    fourier_magnitude,
    index_series,
    load_alignment,
    load_baseline,
    load_energy_records,
    load_nads,
    moving_average,
    plot_accuracy_vs_index,
    plot_alignment,
    plot_binarization,
    plot_energy_concentration,
    plot_nads,
    plot_spectrum,
    plot_training_metrics,
    save_alignment,
    save_baseline,
    save_energy_records,
    save_nads,
)
from raysweep.analysis.style import COLORS
from raysweep.store import METRICS_SCHEMA, axes_json, empty_table, make_target_id, rows_to_table

INDICES = (0, 1, 2, 4, 8, 16)


def synthetic_rows(
    models=("mlp", "lenet5"),
    optimizers=("sgd", "adam"),
    seeds=(0, 1, 2),
    indices=INDICES,
    epochs=2,
    diverge=None,
    learning_rates=(None,),
):
    """Rows of a small sweep; ``diverge=(model, optimizer, linearized, j, seed)`` diverges.

    The seeds of one learning rate share a trial (packed targets); ``learning_rates`` other
    than ``(None,)`` are a grid axis (``train.learning_rate`` in ``axes``), one trial each.
    """
    rng = np.random.default_rng(0)
    rows = []
    for model in models:
        for opt in optimizers:
            for lin in (False, True):
                for lr in learning_rates:
                    trial = f"{opt}-{'lin' if lin else 'nn'}-pack000-{model}-digits"
                    if lr is not None:
                        trial += f"-train.learning_rate={lr:g}"
                    for seed, j in ((seed, j) for seed in seeds for j in indices):
                        axes = {"model.name": model, "train.eigen_index": j, "train.seed": seed}
                        if lr is not None:
                            axes["train.learning_rate"] = lr
                        for epoch in range(1, epochs + 1):
                            last = epoch == epochs
                            acc = 0.97 - 0.02 * math.log1p(j) - (0.05 if lin else 0.0)
                            acc -= 0.2 if lr == 0.5 else 0.0
                            bad = diverge == (model, opt, lin, j, seed)
                            rows.append(
                                {
                                    "sweep_id": "synthetic",
                                    "trial_id": trial,
                                    "target_id": make_target_id(j, seed),
                                    "model": model,
                                    "dataset": "digits",
                                    "optimizer": opt,
                                    "linearized": lin,
                                    "eigen_index": j,
                                    "seed": seed,
                                    "learning_rate": lr or 0.05,
                                    "axes": axes_json(axes),
                                    "epoch": epoch,
                                    "step": 50 * epoch,
                                    "train_loss": math.nan if bad else 0.1 / epoch,
                                    "train_accuracy": 0.5 if bad else 0.99,
                                    "test_loss": math.nan if bad else 0.3,
                                    "test_accuracy": 0.5
                                    if bad
                                    else float(np.clip(acc + rng.normal(0, 0.01), 0, 1)),
                                    # large indices never reach the threshold
                                    "steps_to_threshold": None
                                    if (j >= 8 or not last or bad)
                                    else 20 + 10 * j + seed,
                                    "l2_distance": math.inf if bad else 1.0 + 0.1 * j,
                                    "cosine_distance": math.nan if bad else 0.01 * (1 + j),
                                    "weight_norm": 10.0,
                                    "grad_norm": 0.1,
                                    "status": (
                                        "diverged" if bad else "finished" if last else "running"
                                    ),
                                    "wall_time": 2.0 * epoch,
                                }
                            )
    return rows


@pytest.fixture(scope="module")
def table():
    return rows_to_table(synthetic_rows())


@pytest.fixture(scope="module")
def diverged_table():
    return rows_to_table(synthetic_rows(diverge=("mlp", "sgd", False, 2, 0)))


def labels(ax, kind=None):
    artists = ax.lines if kind is None else kind
    return [a.get_label() for a in artists]


def bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


# ------------------------------------------------------------------ accuracy (Figs 2-3)


def test_accuracy_one_row_per_optimizer_one_column_per_model(table):
    fig = plot_accuracy_vs_index(table)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # 2 optimizers x 2 models
    titles = sorted(ax.get_title() for ax in fig.axes)
    assert titles == sorted(
        f"{m} · digits · {o}" for m in ("mlp", "lenet5") for o in ("sgd", "adam")
    )
    for ax in fig.axes:
        assert labels(ax).count("network") == 1 and labels(ax).count("linearized") == 1
        assert ax.get_xlabel() == "eigenfunction index j"
        assert ax.get_ylabel() == "test accuracy"
        net = next(line for line in ax.lines if line.get_label() == "network")
        assert list(net.get_xdata()) == list(INDICES)
        # three seeds: a band around each curve, saying what it is over
        over = "mean ± std over train.seed (batch order), n=3"
        assert sorted(c.get_label() for c in bands(ax)) == [
            f"linearized band: {over}",
            f"network band: {over}",
        ]
    assert "shaded: mean ± std over train.seed (batch order), n=3" in fig.get_suptitle()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["network", "linearized"] and not any("band" in t for t in legend)


def test_accuracy_single_optimizer_baseline_and_smoothing(table):
    fig = plot_accuracy_vs_index(
        table, optimizer="adam", baseline={"mlp": 0.9, "other": 0.5}, smooth=3
    )
    assert len(fig.axes) == 2
    by_title = {ax.get_title(): ax for ax in fig.axes}
    mlp, lenet = by_title["mlp · digits · adam"], by_title["lenet5 · digits · adam"]
    base = [line for line in mlp.lines if line.get_label().startswith("baseline")]
    assert len(base) == 1 and base[0].get_ydata()[0] == pytest.approx(0.9)
    assert not [line for line in lenet.lines if line.get_label().startswith("baseline")]
    assert labels(mlp).count("_raw") == 2  # raw means kept behind the smoothed curves
    assert "moving average over 3" in fig.get_suptitle()
    assert len(fig.legends) == 1  # one legend for all panels, below them


def test_accuracy_no_band_with_one_seed():
    fig = plot_accuracy_vs_index(
        rows_to_table(synthetic_rows(seeds=(0,), models=("mlp",))), optimizer="sgd"
    )
    (ax,) = fig.axes
    assert bands(ax) == []
    assert labels(ax).count("network") == 1


def test_accuracy_argument_errors(table):
    with pytest.raises(ValueError, match="optimizer='rmsprop' is not available; expected one"):
        plot_accuracy_vs_index(table, optimizer="rmsprop")
    with pytest.raises(ValueError, match="keyed by model name"):
        plot_accuracy_vs_index(table, baseline={"resnet18": 0.9})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        plot_accuracy_vs_index(table, baseline={"mlp": 90})
    with pytest.raises(TypeError, match="integer window"):
        plot_accuracy_vs_index(table, smooth=2.5)
    with pytest.raises(TypeError, match="pyarrow.Table"):
        plot_accuracy_vs_index({"test_accuracy": [1.0]})
    with pytest.raises(ValueError, match="metrics not present.*run the sweep"):
        plot_accuracy_vs_index(empty_table())


def test_diverged_rows_are_marked_not_averaged(diverged_table):
    fig = plot_accuracy_vs_index(diverged_table, optimizer="sgd")
    ax = next(a for a in fig.axes if a.get_title().startswith("mlp"))
    div = [line for line in ax.lines if line.get_label() == "diverged"]
    assert len(div) == 1 and list(div[0].get_xdata()) == [2]
    fig = plot_training_metrics(diverged_table)  # NaN / inf metrics: no crash
    assert len(fig.axes) == 2 * 6
    header, rows = accuracy_rows(diverged_table)
    row = next(r for r in rows if r[0] == "mlp" and r[2] == "2")
    assert "(1 div)" in row[header.index("sgd network")]


FACET_INDICES = (0, 1, 3, 7)
MOMENTA = (0.0, 0.9)


def facet_rows(cells=None):
    """2 models x 2 datasets x network/linearized x 3 seeds x 4 indices x 2 momenta, 2 epochs.

    ``train.momentum`` is an extra grid axis (a variant: separate lines); the accuracies are
    random so that means and spreads differ everywhere. ``cells``: keep only these
    (model, dataset) pairs.
    """
    rng = np.random.default_rng(7)
    rows = []
    for model in ("lenet5", "mlp"):  # not in column order: the figure orders them
        for dataset in ("mnist", "digits"):
            if cells is not None and (model, dataset) not in cells:
                continue
            for lin in (False, True):
                for mom in MOMENTA:
                    trial = f"sgd-{'lin' if lin else 'nn'}-pack000-{model}-{dataset}-m{mom}"
                    for seed in (0, 1, 2):
                        for j in FACET_INDICES:
                            axes = {
                                "model.name": model,
                                "data.name": dataset,
                                "train.eigen_index": j,
                                "train.seed": seed,
                                "train.momentum": mom,
                            }
                            for epoch in (1, 2):
                                acc = float(rng.uniform(0.5, 1.0))
                                rows.append(
                                    {
                                        "sweep_id": "facets",
                                        "trial_id": trial,
                                        "target_id": make_target_id(j, seed),
                                        "model": model,
                                        "dataset": dataset,
                                        "optimizer": "sgd",
                                        "linearized": lin,
                                        "eigen_index": j,
                                        "seed": seed,
                                        "learning_rate": 0.05,
                                        "axes": axes_json(axes),
                                        "epoch": epoch,
                                        "step": 10 * epoch,
                                        "train_loss": 0.1,
                                        "train_accuracy": 0.99,
                                        "test_loss": 0.3,
                                        "test_accuracy": acc,
                                        "steps_to_threshold": 5,
                                        "l2_distance": 1.0,
                                        "cosine_distance": 0.01,
                                        "weight_norm": 10.0,
                                        "grad_norm": 0.1,
                                        "status": "finished" if epoch == 2 else "running",
                                        "wall_time": 1.0 * epoch,
                                    }
                                )
    return rows


def grid_position(ax) -> tuple[int, int]:
    spec = ax.get_subplotspec()
    return spec.rowspan.start, spec.colspan.start


def test_accuracy_facets_models_in_columns_and_seed_bands_match_numpy():
    rows = facet_rows()
    fig = plot_accuracy_vs_index(rows_to_table(rows))
    models, datasets = ["mlp", "lenet5"], ["digits", "mnist"]  # paper order; datasets sorted
    assert len(fig.axes) == 4
    by_cell = {}
    for ax in fig.axes:
        model, dataset, optimizer = ax.get_title().split(" · ")
        assert optimizer == "sgd"
        assert grid_position(ax) == (datasets.index(dataset), models.index(model))
        by_cell[model, dataset] = ax
    assert set(by_cell) == {(m, d) for m in models for d in datasets}
    assert "shaded: mean ± std over train.seed (batch order), n=3" in fig.get_suptitle()

    # numpy over the final epoch: (model, dataset, linearized, momentum) -> (seed, index)
    acc = {}
    for r in rows:
        if r["epoch"] == 2:
            key = (
                r["model"],
                r["dataset"],
                r["linearized"],
                json.loads(r["axes"])["train.momentum"],
            )
            acc.setdefault(key, np.full((3, len(FACET_INDICES)), np.nan))[
                r["seed"], FACET_INDICES.index(r["eigen_index"])
            ] = r["test_accuracy"]
    x = np.array(FACET_INDICES, dtype=float)
    over = "mean ± std over train.seed (batch order), n=3"
    for (model, dataset), ax in by_cell.items():
        lines = {line.get_label(): line for line in ax.lines}
        polys = {c.get_label(): c for c in bands(ax)}
        assert len(polys) == 2 * len(MOMENTA)  # one band per line: momenta never averaged
        for lin, kind in ((False, "network"), (True, "linearized")):
            for mom in MOMENTA:
                values = acc[model, dataset, lin, mom]
                mean, std = values.mean(axis=0), np.std(values, axis=0, ddof=1)
                label = f"{kind} · train.momentum={mom!r}"
                np.testing.assert_allclose(lines[label].get_xdata(), x)
                np.testing.assert_allclose(lines[label].get_ydata(), mean, rtol=1e-12)
                (path,) = polys[f"{label} band: {over}"].get_paths()
                for xi, m, s in zip(x, mean, std, strict=True):
                    ys = np.unique(path.vertices[path.vertices[:, 0] == xi, 1])
                    np.testing.assert_allclose(ys, [m - s, m + s], rtol=1e-12)
        mine = [line for line in ax.lines if line.get_label().split(" · ")[0] in COLORS]
        assert len({line.get_linestyle() for line in mine}) == len(MOMENTA)
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {f"network · train.momentum={m!r}" for m in MOMENTA} <= legend


def test_a_model_missing_on_a_dataset_leaves_an_empty_panel():
    rows = facet_rows(cells={("mlp", "digits"), ("mlp", "mnist"), ("lenet5", "digits")})
    for plot in (plot_accuracy_vs_index, plot_training_metrics):
        fig = plot(rows_to_table(rows))
        empty = [ax for ax in fig.axes if not ax.lines]
        assert {ax.get_title() for ax in empty} == {"lenet5 · mnist · sgd"}
        assert all(ax.texts[0].get_text() == "no results" for ax in empty)
        assert {grid_position(ax)[1] for ax in empty} == {1}  # lenet5's column
    fig = plot_training_metrics(rows_to_table(rows), metrics=["l2_distance", "steps_to_threshold"])
    assert len(fig.axes) == 2 * 2 * 2  # (2 datasets x 2 metrics) rows x 2 models
    titles = [[ax.get_title() for ax in fig.axes if grid_position(ax)[0] == r] for r in range(4)]
    assert titles[1] == ["mlp · digits · sgd", "lenet5 · digits · sgd"]
    assert titles[2] == ["mlp · mnist · sgd", "lenet5 · mnist · sgd"]


def test_index_series_mean_band_and_ci(table):
    curves = index_series(table, "test_accuracy", band="ci95")
    assert len(curves) == 2 * 2 * 2
    c = curves[0]
    assert list(c.count) == [3] * len(INDICES)
    assert np.all(c.low < c.mean) and np.all(c.mean < c.high)
    std = index_series(table, "test_accuracy", band="std")[0]
    assert np.all(c.high - c.mean > std.high - std.mean)  # t(2) * std / sqrt(3) > std
    assert list(index_series(table, "steps_to_threshold")[0].unreached) == [8, 16]
    with pytest.raises(ValueError, match="band='iqr'"):
        index_series(table, "test_accuracy", band="iqr")


def test_moving_average_ignores_nan():
    out = moving_average(np.array([1.0, np.nan, 3.0, 5.0]), 3)
    np.testing.assert_allclose(out, [1.0, 2.0, 4.0, 4.0])


def test_accuracy_table_cells(table):
    header, rows = accuracy_rows(table)
    assert header[:3] == ["model", "dataset", "index"]
    assert {"sgd network", "sgd linearized", "adam network"} <= set(header)
    assert len(rows) == 2 * len(INDICES)
    assert " ± " in rows[0][3]


def test_learning_rate_variants_are_curves_and_seeds_are_the_band():
    rows = synthetic_rows(
        models=("mlp",), optimizers=("sgd",), seeds=(0, 1, 2), learning_rates=(0.05, 0.5)
    )
    table = rows_to_table(rows)
    curves = index_series(table, "test_accuracy")
    assert [(c.kind, c.variant) for c in curves] == [
        ("network", "train.learning_rate=0.05"),
        ("network", "train.learning_rate=0.5"),
        ("linearized", "train.learning_rate=0.05"),
        ("linearized", "train.learning_rate=0.5"),
    ]
    # each curve averages the three seeds of its own rate, never the two rates
    assert all(list(c.count) == [3] * len(INDICES) for c in curves)
    base, worse = curves[0], curves[1]
    np.testing.assert_allclose(base.mean - worse.mean, 0.2, atol=0.05)
    assert np.all(base.high - base.low < 0.1)
    assert base.band_label() == "mean ± std over train.seed (batch order), n=3"

    fig = plot_accuracy_vs_index(table)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.lines}
    net_a, net_b = "network · train.learning_rate=0.05", "network · train.learning_rate=0.5"
    assert {net_a, net_b} <= set(lines)
    assert lines[net_a].get_linestyle() != lines[net_b].get_linestyle()
    band_labels = sorted(c.get_label() for c in bands(ax))
    assert len(band_labels) == 4
    assert all("over train.seed (batch order), n=3" in label for label in band_labels)
    assert f"{net_b} band: mean ± std over train.seed (batch order), n=3" in band_labels
    assert "shaded: mean ± std over train.seed (batch order), n=3" in fig.get_suptitle()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == [net_a, net_b] and not any("band" in t for t in legend)

    header, table_rows = accuracy_rows(table)
    assert header[:4] == ["model", "dataset", "variant", "index"]
    assert [r[2] for r in table_rows[:: len(INDICES)]] == [
        "train.learning_rate=0.05",
        "train.learning_rate=0.5",
    ]
    fig = plot_training_metrics(table, metrics=["l2_distance"])
    assert "over train.seed (batch order), n=3" in fig.get_suptitle()
    assert len([line for line in fig.axes[0].lines if line.get_label().startswith("net")]) == 2


def test_one_variant_is_named_in_the_title_and_one_seed_has_no_band():
    rows = synthetic_rows(models=("mlp",), optimizers=("sgd",), seeds=(4,), learning_rates=(0.5,))
    fig = plot_accuracy_vs_index(rows_to_table(rows))
    (ax,) = fig.axes
    assert "(train.learning_rate=0.5)" in fig.get_suptitle()
    assert labels(ax).count("network") == 1 and bands(ax) == []
    assert "shaded" not in fig.get_suptitle()


def test_band_n_counts_the_valid_seeds(diverged_table):
    (curve,) = [
        c
        for c in index_series(diverged_table, "test_accuracy")
        if (c.model, c.optimizer, c.kind) == ("mlp", "sgd", "network")
    ]
    assert list(curve.count) == [3, 3, 2, 3, 3, 3]
    assert curve.band_label() == "mean ± std over train.seed (batch order), n=2-3"


def test_not_reached_is_null_or_minus_one():
    rows = synthetic_rows(models=("mlp",), optimizers=("sgd",), seeds=(0, 1))
    stored = rows_to_table(rows)
    assert None in stored.column("steps_to_threshold").to_pylist()
    for row in rows:  # a table built by hand with the training API's -1
        if row["steps_to_threshold"] is None:
            row["steps_to_threshold"] = -1
    by_hand = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
    for t in (stored, by_hand):
        curve = index_series(t, "steps_to_threshold")[0]
        assert list(curve.unreached) == [8, 16]
        assert np.isnan(curve.mean[-1]) and curve.mean[0] == pytest.approx(20.5)
    fig = plot_training_metrics(by_hand, metrics=["steps_to_threshold"])
    (ax,) = fig.axes
    unreached = [line for line in ax.lines if line.get_label() == "not reached"]
    assert len(unreached) == 2 and list(unreached[0].get_xdata()) == [8, 16]


# ------------------------------------------------------------------ training (Figs 4-5)


def test_training_metrics_panels_log_scale_and_unreached(table):
    fig = plot_training_metrics(table, optimizer="sgd", threshold=0.01)
    assert len(fig.axes) == 3 * 2  # 3 metrics (rows) x 2 models, one optimizer
    assert fig.axes[0].get_ylabel() == fig.axes[1].get_ylabel()  # a row is one metric
    steps = [ax for ax in fig.axes if ax.get_ylabel() == "steps to train loss < 0.01"]
    assert len(steps) == 2 and all(ax.get_yscale() == "log" for ax in steps)
    unreached = [line for line in steps[0].lines if line.get_label() == "not reached"]
    assert len(unreached) == 2 and list(unreached[0].get_xdata()) == [8, 16]
    ylabels = {ax.get_ylabel() for ax in fig.axes}
    l2 = r"$\|\theta_T - \theta_0\|_2$"
    assert ylabels == {"steps to train loss < 0.01", l2, r"cosine distance($\theta_T$, $\theta_0$)"}
    dist = next(ax for ax in fig.axes if ax.get_ylabel() == l2)
    assert dist.get_yscale() == "linear" and len(bands(dist)) == 2


def test_training_metrics_subset_and_errors(table):
    fig = plot_training_metrics(table, metrics=["l2_distance"])
    assert len(fig.axes) == 2 * 2
    with pytest.raises(ValueError, match="metrics"):
        plot_training_metrics(table, metrics=["weight_decay"])
    with pytest.raises(TypeError, match="non-empty sequence"):
        plot_training_metrics(table, metrics="l2_distance")


def test_training_metrics_single_panel_column_is_one_row():
    rows = synthetic_rows(models=("mlp",), optimizers=("sgd",), seeds=(0,))
    fig = plot_training_metrics(rows_to_table(rows))
    assert len(fig.axes) == 3
    assert len({round(ax.get_subplotspec().rowspan.start) for ax in fig.axes}) == 1
    assert [ax.get_subplotspec().colspan.start for ax in fig.axes] == [0, 1, 2]


def test_training_metrics_nothing_reached():
    rows = synthetic_rows(models=("mlp",), optimizers=("sgd",), seeds=(0,), indices=(8, 16))
    fig = plot_training_metrics(rows_to_table(rows), metrics=["steps_to_threshold"])
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    fig.savefig(io.BytesIO(), format="png")  # an empty log axis still renders


# ------------------------------------------------------------------ artifact diagnostics


def test_spectrum_log_log_and_several_artifacts():
    vals = 1.0 / np.arange(1, 51) ** 1.5
    fig = plot_spectrum(vals)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.lines) == 1 and ax.get_ylabel() == r"eigenvalue $\lambda_i$"
    fig = plot_spectrum({"mlp": vals, "lenet5": np.append(vals, -1e-9)})
    (ax,) = fig.axes
    assert labels(ax) == ["mlp", "lenet5"]
    assert "1 non-positive left out" in ax.get_title()
    with pytest.raises(ValueError, match="expected positive eigenvalues"):
        plot_spectrum(np.zeros(3))
    with pytest.raises(TypeError, match="1-D array"):
        plot_spectrum("eigvals")


def test_binarization_reference_lines():
    fig = plot_binarization(np.full(20, 0.79))
    (ax,) = fig.axes
    refs = {line.get_label(): line.get_ydata()[0] for line in ax.lines[1:]}
    assert refs[f"Gaussian √(2/π) ≈ {GAUSSIAN_BINARIZATION:.3f}"] == pytest.approx(
        math.sqrt(2 / math.pi)
    )
    assert refs["paper (CIFAR-10) ≈ 0.78"] == pytest.approx(0.78)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        plot_binarization(np.array([0.5, 1.5]))


# ------------------------------------------------------------------ optional inputs

ENERGY = [
    {
        "model": "mlp",
        "dataset": "mnist2",
        "k": 50,
        "energy_init": 0.2,
        "energy_final": 0.7,
        "test_accuracy": 0.99,
    },
    {
        "model": "lenet5",
        "dataset": "cifar2",
        "k": 50,
        "energy_init": 0.1,
        "energy_final": 0.55,
        "test_accuracy": 0.81,
    },
]


def test_energy_table_and_figure():
    text = energy_concentration_table(ENERGY)
    assert "energy at init" in text and "0.550" in text and "cifar2" in text
    html = energy_concentration_table(ENERGY, fmt="html")
    assert html.startswith('<table class="data">') and html.count("<tr>") == 3
    assert energy_concentration_table(ENERGY, fmt="markdown").startswith("| model |")
    fig = plot_energy_concentration(ENERGY)
    (ax,) = fig.axes
    assert [c.get_label() for c in ax.containers] == ["at initialization", "after training"]
    with pytest.raises(ValueError, match="missing keys"):
        energy_concentration_table([{"model": "mlp"}])
    with pytest.raises(ValueError, match=r"energy_final.*\[0, 1\]"):
        energy_concentration_table([dict(ENERGY[0], energy_final=1.5)])


def alignment_data(init=True):
    k = 30
    trained = np.array([0, 3, 10])
    alpha = {s: np.exp(-np.arange(k) / 10.0)[None].repeat(3, 0) for s in ("train", "test", "all")}
    for a in alpha.values():
        a[np.arange(3), trained] *= 10
    return AlignmentData(
        trained,
        alpha,
        {s: np.exp(-np.arange(k) / 10.0) for s in alpha} if init else None,
        label="mlp · digits",
    )


def test_alignment_panels_log_scale():
    fig = plot_alignment(alignment_data())
    assert [ax.get_title() for ax in fig.axes] == ["train samples", "test samples", "all samples"]
    for ax in fig.axes:
        assert ax.get_yscale() == "log"
        assert [lb for lb in labels(ax) if lb.startswith("trained")] == [
            "trained j=0",
            "trained j=3",
            "trained j=10",
        ]
        assert "at initialization" in labels(ax)
    fig = plot_alignment(alignment_data(init=False).to_arrays(), max_lines=2)
    assert len([lb for lb in labels(fig.axes[0]) if lb.startswith("trained")]) == 2
    with pytest.raises(ValueError, match=r"expected shape \(3, 30\)"):
        AlignmentData(np.array([0, 3, 10]), {"train": np.ones((2, 30))})


def test_nads_space_and_fourier():
    rng = np.random.default_rng(1)
    dirs = rng.normal(size=(4, 8 * 8 * 3))
    fig = plot_nads(np.array([4.0, 3.0, 2.0, 1.0]), dirs, (8, 8, 3), num=10)
    assert len(fig.axes) == 2 * 4  # num > k: all k shown
    top = fig.axes[0].images[0].get_array()
    assert top.shape == (8, 8, 3) and top.min() >= 0 and top.max() <= 1
    expected = np.mean(
        [np.fft.fftshift(np.abs(np.fft.fft2(dirs[0].reshape(8, 8, 3)[..., c]))) for c in range(3)],
        axis=0,
    )
    np.testing.assert_allclose(fourier_magnitude(dirs[0].reshape(8, 8, 3)), expected)
    grey = plot_nads(np.ones(3), rng.normal(size=(3, 36)), (6, 6), num=2)
    assert len(grey.axes) == 4
    with pytest.raises(ValueError, match=r"expected shape \(k, H\*W\*C\) = \(4, 64\)"):
        plot_nads(np.ones(4), dirs, (8, 8))


@pytest.mark.parametrize(
    "call, what",
    [
        (lambda: energy_concentration_table(None), "energy concentration records not present"),
        (lambda: plot_energy_concentration(None), "energy concentration records not present"),
        (lambda: plot_alignment(None), "end-of-training alignment not present"),
        (lambda: plot_nads(None, None, None), "NADs not present"),
        (lambda: plot_nads(np.ones(2), None, (2, 2)), r"NADs \(directions\) not present"),
    ],
)
def test_missing_optional_inputs_say_how_to_make_them(call, what):
    with pytest.raises(ValueError, match=what + ": .*save_") as info:
        call()
    assert isinstance(info.value, MissingInputError)


def test_optional_input_files_roundtrip(tmp_path):
    assert load_energy_records(tmp_path) is None
    assert load_alignment(tmp_path) is None and load_nads(tmp_path) is None
    assert load_baseline(tmp_path) is None
    save_energy_records(tmp_path, ENERGY)
    assert load_energy_records(tmp_path) == ENERGY
    save_alignment(tmp_path, alignment_data())
    back = load_alignment(tmp_path)
    assert (
        back.label == "mlp · digits"
        and back.num_eigen == 30
        and set(back.init) == {"train", "test", "all"}
    )
    save_nads(tmp_path, np.ones(2), np.zeros((2, 12)), (2, 2, 3))
    nads = load_nads(tmp_path)
    assert nads["input_shape"] == (2, 2, 3) and nads["directions"].shape == (2, 12)
    save_baseline(tmp_path, "cifar2", {"mlp": 0.8})
    assert load_baseline(tmp_path) == ("cifar2", {"mlp": 0.8})
    (tmp_path / "analysis" / "energy_concentration.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="raysweep.energy/v1"):
        load_energy_records(tmp_path)


def test_format_table_text_alignment_and_errors():
    text = format_table(["a", "value"], [["x", "1.5"], ["yy", "10.25*"]])
    assert text.splitlines()[2] == "x      1.5"
    with pytest.raises(ValueError, match="expected 2 cells"):
        format_table(["a", "b"], [["only one"]])
    with pytest.raises(ValueError, match="fmt='latex'"):
        format_table(["a"], [], fmt="latex")
    assert "&lt;b&gt;" in format_table(["<b>"], [], fmt="html")


def test_figures_render_to_png_and_pdf(table):
    fig = plot_accuracy_vs_index(table, optimizer="sgd")
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt)
        assert buf.getvalue()[:4] in (b"\x89PNG", b"%PDF")


def test_table_types_are_checked():
    bad = pa.table({"model": ["mlp"]})
    with pytest.raises(ValueError, match="lacks the metrics columns"):
        plot_training_metrics(bad)


# ----------------------------------------------------------------------------- pretrained


def _pretrained_record(variant, j, acc, steps):
    rows = [{"epoch": 1, "test_accuracy": acc, "train_loss": 0.3}]
    return {
        "variant": variant,
        "eigen_index": j,
        "status": "finished",
        "test_accuracy": acc,
        "train_accuracy": 1.0,
        "train_loss": 0.3,
        "steps_to_threshold": steps,
        "rows": rows,
    }


def test_pretrained_rows_plot_and_file_round_trip(tmp_path):
    from raysweep.analysis import (
        load_pretrained,
        plot_pretrained,
        pretrained_rows,
        save_pretrained,
    )

    records = [
        _pretrained_record("network", 3, 0.9, 12),
        _pretrained_record("linearized_init", 3, 0.6, -1),
        _pretrained_record("linearized_pretrained", 3, 0.8, 30),
        _pretrained_record("network", 1, 0.95, 5),
    ]
    header, rows = pretrained_rows({"records": records})
    assert header[0] == "index" and len(header) == 7
    assert rows == [
        ["1", "0.950", "5", "-", "-", "-", "-"],
        ["3", "0.900", "12", "0.600", "not reached", "0.800", "30"],
    ]
    fig = plot_pretrained({"records": records, "model": "mlp"})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 4
    save_pretrained(tmp_path, records, model="mlp", dataset="digits", optimizer="sgd")
    loaded = load_pretrained(tmp_path)
    assert loaded["records"] == records and loaded["dataset"] == "digits"
    assert load_pretrained(tmp_path / "nothing") is None


def test_pretrained_records_rejects_bad_input(tmp_path):
    from raysweep.analysis import MissingInputError, plot_pretrained, pretrained_records

    with pytest.raises(ValueError, match="variant 'lin' is not one of network"):
        pretrained_records([_pretrained_record("lin", 0, 0.5, 1)])
    with pytest.raises(ValueError, match=r"test_accuracy must be in \[0, 1\], got 1.5"):
        pretrained_records([_pretrained_record("network", 0, 1.5, 1)])
    bad = _pretrained_record("network", 0, 0.5, 1)
    del bad["rows"]
    with pytest.raises(ValueError, match=r"missing keys \['rows'\]"):
        pretrained_records([bad])
    with pytest.raises(MissingInputError, match="sweeps/pretrained_ntk.py"):
        plot_pretrained(None)
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "pretrained_ntk.json").write_text('{"format": "other"}')
    from raysweep.analysis import load_pretrained

    with pytest.raises(ValueError, match="raysweep.pretrained/v1"):
        load_pretrained(tmp_path)
