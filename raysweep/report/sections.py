"""The sections of the report page, each from :class:`~raysweep.report.collect.ReportInputs`.

Every function returns one :class:`~raysweep.report.page.Section`. Figures go through a
``draw(name, make, *, alt, caption) -> html`` callable supplied by the builder (it renders,
saves the PNG/PDF and embeds the image, or returns a note when ``make`` raises), so this module
decides *what* is shown and never touches files. A piece that is absent becomes a note that
says how to produce it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from raysweep.analysis import (
    TRAINING_METRICS,
    accuracy_rows,
    band_caption,
    energy_rows,
    index_series,
    plot_accuracy_vs_index,
    plot_alignment,
    plot_binarization,
    plot_energy_concentration,
    plot_nads,
    plot_pretrained,
    plot_spectrum,
    plot_training_metrics,
    pretrained_rows,
)
from raysweep.report.collect import ReportInputs
from raysweep.report.page import (
    Section,
    cards,
    details,
    heading,
    json_block,
    key_values,
    note,
    paragraph,
    row,
    table,
)
from raysweep.store import STATUSES, count_target_statuses, trial_states, variant_of

Draw = Callable[..., str]

NO_METRICS = (
    "No metrics yet: metrics/*.parquet is absent or empty. Run the sweep "
    "(python sweeps/eigen_sweep.py --out <this folder>); figures appear after the "
    "first epoch of the first trial."
)
NO_ARTIFACT = (
    "No eigenfunction artifact (eigenfunctions/): run the eigen step "
    "(python sweeps/eigen_sweep.py --eigen-only --out <this folder>)."
)
NO_CONFIG = (
    "No config.json: the main job has not started in this folder "
    "(python sweeps/eigen_sweep.py --out <this folder>)."
)


def seconds(value: float) -> str:
    """``"42.0 s"``, ``"3.5 min"`` or ``"2.1 h"``."""
    if not np.isfinite(value):
        return "–"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def missing_pieces(inputs: ReportInputs) -> list[str]:
    """One line per absent main input (config, metrics, artifact)."""
    out = []
    if inputs.config is None:
        out.append(NO_CONFIG)
    if not inputs.artifacts:
        out.append(NO_ARTIFACT)
    if inputs.metrics is None:
        out.append(NO_METRICS)
    return out


def _expected_trials(inputs: ReportInputs) -> int | None:
    trials = (inputs.plan or {}).get("trials")
    return len(trials) if isinstance(trials, list) else None


def _trial_time(inputs: ReportInputs) -> tuple[float, float]:
    """(sum over trials, longest trial) of the store's wall time, in seconds."""
    if inputs.metrics is None:
        return float("nan"), float("nan")
    times = [s.wall_time for s in trial_states(inputs.metrics)]
    return float(sum(times)), float(max(times))


def _eigen_time(inputs: ReportInputs) -> float:
    meta = [a.meta for a in inputs.artifacts]
    return (
        float(sum(m.get("gram_seconds", 0) + m.get("eigen_seconds", 0) for m in meta))
        if meta
        else float("nan")
    )


def _variants(inputs: ReportInputs) -> list[str]:
    """The distinct non-empty variants of the store's rows (e.g. learning rates of the grid)."""
    axes = set(inputs.metrics.column("axes").to_pylist())
    return sorted({v for v in map(variant_of, axes) if v})


def _spread(inputs: ReportInputs, metrics) -> str:
    """What the bands (and ± of the tables) of ``metrics`` are over, or "" when none."""
    return band_caption([c for m in metrics for c in index_series(inputs.metrics, m)])


def summary_section(inputs: ReportInputs) -> Section:
    """Headline numbers, what is missing, what could not be read."""
    sec = Section("summary", "Summary")
    facts: dict[str, Any] = {}
    if inputs.metrics is not None:
        states = trial_states(inputs.metrics)
        finished = sum(s.status == "finished" for s in states)
        expected = _expected_trials(inputs)
        facts["trials finished"] = f"{finished} / {expected if expected else len(states)}"
        facts["targets"] = sum(count_target_statuses(inputs.metrics).values())
        facts["models"] = ", ".join(sorted(set(inputs.metrics.column("model").to_pylist())))
        facts["eigen-indices"] = len(set(inputs.metrics.column("eigen_index").to_pylist()))
        facts["seeds (train.seed, batch order)"] = len(
            set(inputs.metrics.column("seed").to_pylist())
        )
        rates = {r for r in inputs.metrics.column("learning_rate").to_pylist() if r is not None}
        if len(rates) > 1:
            facts["learning rates η₀"] = ", ".join(f"{r:g}" for r in sorted(rates))
        variants = _variants(inputs)
        if variants:
            facts["variants (other grid axes)"] = "; ".join(variants)
        facts["training time (sum of trials)"] = seconds(_trial_time(inputs)[0])
    if inputs.artifacts:
        facts["eigen step (Gram + solver)"] = seconds(_eigen_time(inputs))
        facts["top-k eigenpairs"] = ", ".join(str(a.eigvals.size) for a in inputs.artifacts)
    if facts:
        sec.add(cards(facts))
    for line in missing_pieces(inputs):
        sec.add(note(line))
    for line in inputs.problems:
        sec.add(note(line, problem=True))
    if not facts and not inputs.problems and not missing_pieces(inputs):
        sec.add(paragraph("Nothing to show yet."))
    return sec


def findings_section(inputs: ReportInputs) -> Section:
    """The paper's claims with their statistic, uncertainty and verdict."""
    from raysweep.analysis.findings import RULES, findings_from_inputs

    sec = Section("findings", "Findings: the paper's claims, tested")
    try:
        found = findings_from_inputs(inputs)
    except Exception as err:  # the page still shows everything else
        return sec.add(note(f"The findings could not be computed: {err}", problem=True))
    rows = [
        [
            f"{f.claim}",
            f"{f.title} ({f.source})",
            f.verdict,
            f.statistic,
            f.uncertainty + (f" — {f.note}" if f.note else ""),
        ]
        for f in found
    ]
    sec.add(
        paragraph(
            "Each claim is tested on the eigen-indices as the unit (seeds give each point's "
            f"spread): Spearman ρ with one-sided permutation p < {RULES['alpha']}, and a claim "
            f"is reproduced when at least {RULES['pass_share']:.0%} of its tests pass and none "
            "contradicts (rules fixed in raysweep.analysis.findings; every test in "
            "findings.json, written by the main job and by raysweep findings)."
        ),
        table(["claim", "statement", "verdict", "statistic", "uncertainty / note"], rows),
    )
    return sec


def run_section(inputs: ReportInputs) -> Section:
    """The resolved config, the grid and the eigenfunction artifacts."""
    sec = Section("run", "What was run")
    if inputs.config is None:
        sec.add(note(NO_CONFIG))
    else:
        top = {k: v for k, v in inputs.config.items() if not isinstance(v, dict)}
        blocks = [key_values(top, caption="config")] if top else []
        for name, part in sorted(inputs.config.items()):
            if isinstance(part, dict):
                shown = {
                    k: ", ".join(map(str, v)) if isinstance(v, list) else ("—" if v is None else v)
                    for k, v in sorted(part.items())
                }
                blocks.append(key_values(shown, caption=name))
        sec.add(
            paragraph(
                "The resolved config of the sweep (config.json; —: not set, the default applies).",
                lead=True,
            ),
            row(*blocks),
            details("config.json as saved", json_block(inputs.config)),
        )
    if inputs.plan is not None:
        plan = inputs.plan
        facts = {"sweep id": plan.get("sweep_id", "?"), "trials": _expected_trials(inputs) or "?"}
        if "axes" in plan:  # a grid plan: every axis with its class and values
            facts["targets"] = plan.get("num_targets", "?")
            facts["pack size"] = plan.get("pack_size", "?")
            levels = plan.get("levels") or {}
            for key, values in plan["axes"].items():
                shown = ", ".join(str(v) for v in values[:12])
                more = f" … ({len(values)} values)" if len(values) > 12 else ""
                facts[f"{key} ({levels.get(key, '?')})"] = shown + more
        else:  # a plan written before grids
            packs = plan.get("packs") or []
            facts["eigen-index packs"] = len(packs)
            facts["indices per trial"] = ", ".join(str(len(p)) for p in packs) or "?"
            facts["optimizers"] = ", ".join(plan.get("optimizers") or [])
        sec.add(heading("Grid"), key_values(facts))
    if inputs.artifacts:
        header = [
            "artifact",
            "N",
            "k",
            "solver",
            "Gram time",
            "solver time",
            "max residual / λ₁",
            "mean binarization",
        ]
        rows = [
            [
                a.key,
                str(a.meta.get("N", a.dataset.get("num_train", 0) + a.dataset.get("num_test", 0))),
                str(a.eigvals.size),
                str(a.meta.get("eigen_method", "?")),
                seconds(float(a.meta.get("gram_seconds", np.nan))),
                seconds(float(a.meta.get("eigen_seconds", np.nan))),
                f"{np.max(a.residuals) / a.eigvals.max():.1e}" if a.eigvals.max() > 0 else "–",
                f"{np.nanmean(a.binarization):.3f}",
            ]
            for a in inputs.artifacts
        ]
        sec.add(heading("Eigenfunction artifacts"), table(header, rows))
    return sec


def progress_section(inputs: ReportInputs) -> Section:
    """Trials and targets by status; wall time; one line per trial (collapsed)."""
    sec = Section("progress", "Trials and wall time")
    if inputs.metrics is None:
        return sec.add(note(NO_METRICS))
    states = trial_states(inputs.metrics)
    by_trial = {s: sum(t.status == s for t in states) for s in STATUSES}
    by_target = count_target_statuses(inputs.metrics)
    expected = _expected_trials(inputs)
    rows = [[s, str(by_trial[s]), str(by_target.get(s, 0))] for s in STATUSES]
    if expected is not None:
        rows.append(["not started", str(max(expected - len(states), 0)), "–"])
    total, longest = _trial_time(inputs)
    sec.add(table(["status", "trials", "targets"], rows))
    sec.add(
        key_values(
            {
                "training, summed over trials": seconds(total),
                "longest trial": seconds(longest),
                "eigen step (Gram + eigensolver)": seconds(_eigen_time(inputs)),
            }
        )
    )
    header = [
        "trial",
        "status",
        "epoch",
        "targets",
        "mean train loss",
        "mean test acc",
        "wall time",
    ]
    trial_rows = [
        [
            s.trial_id,
            s.status,
            str(s.epoch),
            str(len(s.target_ids)),
            f"{s.mean_train_loss:.4g}",
            f"{s.mean_test_accuracy:.3f}",
            seconds(s.wall_time),
        ]
        for s in states
    ]
    sec.add(details(f"all {len(states)} trials", table(header, trial_rows, scroll=True)))
    return sec


def accuracy_section(inputs: ReportInputs, draw: Draw) -> Section:
    """Figs 2-3 and the table of final accuracies."""
    sec = Section("accuracy", "Test accuracy vs eigenfunction index")
    if inputs.metrics is None:
        return sec.add(note(NO_METRICS))
    baseline = None
    if inputs.baseline is not None:
        models = set(inputs.metrics.column("model").to_pylist())
        baseline = inputs.baseline[1] if models & set(inputs.baseline[1]) else None
    caption = (
        "Final-epoch test accuracy of the network and its linearization trained on "
        "sign(φ_j); columns: models, rows: dataset · optimizer. Lines: the mean over seeds. "
        "× marks diverged targets (left out of the mean)."
    )
    spread = _spread(inputs, ["test_accuracy"])
    if spread:
        caption += f" Shaded: {spread}."
    if _variants(inputs):
        caption += (
            " Line styles: grid points that differ in other axes (separate lines, never "
            "averaged together; named in the legend)."
        )
    if baseline is not None:
        caption += f" Dashed green: accuracy on {inputs.baseline[0]} (the dataset's own task)."
    elif inputs.baseline is not None:
        caption += (
            f" No baseline: analysis/baseline.json has no entry for these models "
            f"(it has {', '.join(sorted(inputs.baseline[1]))})."
        )
    else:
        caption += (
            " No baseline (analysis/baseline.json absent: python sweeps/binary_baseline.py "
            "--out <this folder>)."
        )
    sec.add(
        draw(
            "accuracy_vs_index",
            lambda: plot_accuracy_vs_index(inputs.metrics, baseline=baseline),
            alt="test accuracy vs eigen-index",
            caption=caption,
        )
    )
    header, rows = accuracy_rows(inputs.metrics)
    sec.add(
        heading("Final test accuracy by eigen-index"),
        paragraph(
            f"{spread or 'one seed per cell (no spread)'}; div: diverged; "
            "*: still running (latest epoch); –: no row.",
            lead=True,
        ),
        table(header, rows, scroll=len(rows) > 25),
    )
    return sec


def training_section(inputs: ReportInputs, draw: Draw) -> Section:
    """Figs 4-5."""
    sec = Section("training", "Training: steps to threshold and distance from θ₀")
    if inputs.metrics is None:
        return sec.add(note(NO_METRICS))
    threshold = inputs.config_value("train", "loss_threshold")
    caption = (
        "At the final epoch: optimizer steps done when the whole training set's loss first "
        "reached the threshold (checked train.threshold_checks times per epoch; △ at the top: "
        "not reached), ℓ2 and cosine distance between θ_T and θ₀; columns: "
        "models, rows: dataset · optimizer · metric."
    )
    spread = _spread(inputs, TRAINING_METRICS)
    if spread:
        caption += f" Shaded: {spread}."
    return sec.add(
        draw(
            "training_metrics",
            lambda: plot_training_metrics(inputs.metrics, threshold=threshold),
            alt="training metrics vs eigen-index",
            caption=caption,
        )
    )


def eigen_section(inputs: ReportInputs, draw: Draw) -> Section:
    """Spectrum and binarization of the artifacts."""
    sec = Section("eigen", "Eigenfunctions at initialization")
    if not inputs.artifacts:
        return sec.add(note(NO_ARTIFACT))
    one = len(inputs.artifacts) == 1
    vals = inputs.artifacts[0].eigvals if one else {a.key: a.eigvals for a in inputs.artifacts}
    binz = (
        inputs.artifacts[0].binarization
        if one
        else {a.key: a.binarization for a in inputs.artifacts}
    )
    return sec.add(
        row(
            draw(
                "spectrum",
                lambda: plot_spectrum(vals),
                alt="NTK eigenvalue spectrum",
                caption="Top-k eigenvalues of the empirical NTK Gram matrix at θ₀.",
            ),
            draw(
                "binarization",
                lambda: plot_binarization(binz),
                alt="binarization diagnostic",
                caption="⟨sign(φ_j)/√N, φ_j⟩: the share of each eigenvector that its sign keeps "
                "(Gaussian: √(2/π) ≈ 0.798; paper ≈ 0.78).",
            ),
        )
    )


def optional_sections(inputs: ReportInputs, draw: Draw) -> list[Section]:
    """Energy concentration (Table 1), alignment (Figs 6-7), the pretrained-NTK comparison and
    NADs (Fig 1), or notes saying how to produce them."""
    energy = Section("energy", "Energy concentration (Table 1)")
    if inputs.energy is None:
        energy.add(
            note(
                "Energy concentration records not present: run python "
                "sweeps/energy_concentration.py --out <this folder> once per model "
                "(analysis/energy_concentration.json)."
            )
        )
    else:
        header, rows = energy_rows(inputs.energy)
        energy.add(
            row(
                table(header, rows),
                draw(
                    "energy_concentration",
                    lambda: plot_energy_concentration(inputs.energy),
                    alt="energy concentration",
                    caption="Energy of the labels on the top-k NTK "
                    "eigenfunctions, at initialization and after training.",
                ),
            )
        )
    align = Section("alignment", "Alignment after training")
    align.add(
        draw(
            "alignment",
            lambda: plot_alignment(inputs.alignment),
            alt="alignment after training",
            caption="Normalized alignment α_T(φ_i)/mean(φ_i²) of the initial "
            "eigenfunctions with the NTK after training on sign(φ_j); ● marks i = j.",
        )
    )
    pretrained = Section("pretrained", "Linearization around the trained network")
    if inputs.pretrained is None:
        pretrained.add(
            note(
                "Pretrained-NTK comparison not present: run python sweeps/pretrained_ntk.py "
                "--out <this folder> (analysis/pretrained_ntk.json). Not in the default run: "
                "it is no claim of the paper's figures (an extension: the linearization around "
                "the trained network), and it trains three more models per index."
            )
        )
    else:
        header, rows = pretrained_rows(inputs.pretrained)
        pretrained.add(
            table(header, rows),
            draw(
                "pretrained_ntk",
                lambda: plot_pretrained(inputs.pretrained),
                alt="pretrained NTK comparison",
                caption="The network, its linearization at θ₀ and its linearization around "
                "the trained θ_T (both centered: f_lin − f(θ_base)) on sign(φ_j).",
            ),
        )
    nads = Section("nads", "Neural anisotropy directions")
    nad = inputs.nads or {}
    if not nad:
        nads.add(
            note(
                "NADs not present: run python sweeps/nad_sweep.py --out <this folder>/nad "
                "(its figures and analysis/nads.npz; raysweep findings <this folder> then "
                "decides claim 7). Not in the default run: NADs are a task of their own on "
                "32x32 inputs, and training LeNet5 on D(u_j) long enough to decide the claim "
                "adds 3-4 minutes on a 2-core CPU to the default's 6."
            )
        )
        return [energy, align, pretrained, nads]
    nads.add(
        draw(
            "nads",
            lambda: plot_nads(nad.get("eigvals"), nad.get("directions"), nad.get("input_shape")),
            alt="neural anisotropy directions",
            caption="The first NADs in space and as |FFT| (zero frequency centred).",
        )
    )
    return [energy, align, pretrained, nads]
