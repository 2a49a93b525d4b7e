"""raysweep.report: the HTML page as a user sees it (headless Chromium), and partial results."""

from __future__ import annotations

import html
import importlib
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raysweep.analysis import (
    save_alignment,
    save_baseline,
    save_energy_records,
    save_nads,
    save_pretrained,
)
from raysweep.analysis.alignment_figures import AlignmentData
from raysweep.cli import main as cli_main
from raysweep.config import get_preset
from raysweep.report import SweepState, build_report, sweep_state, watch_report
from raysweep.report import build as report_build
from raysweep.store import axes_json, make_target_id, save_sweep_config, write_trial_rows

report_collect = importlib.import_module("raysweep.report.collect")  # the module, not the function
CHROMIUM = Path("/usr/bin/chromium")
FIGURES = (
    "accuracy_vs_index",
    "training_metrics",
    "spectrum",
    "binarization",
    "energy_concentration",
    "alignment",
    "pretrained_ntk",
    "nads",
)


def write_metrics(
    results: Path,
    *,
    seeds=(0, 1),
    indices=(0, 1, 4, 9),
    learning_rates=(None,),
    epochs=(1, 2),
    pack=0,
    linearized=(False, True),
) -> list[str]:
    """One model, one optimizer, network and linearized, a diverged target, 2 epochs.

    The seeds share a trial (packed targets); ``learning_rates`` other than ``(None,)`` are a
    grid axis (one trial each, ``train.learning_rate`` in ``axes``). ``epochs=(1,)``: the
    first epoch only, a sweep still running (status ``finished`` comes with epoch 2). Returns
    the trial ids written.
    """
    trials = []
    for lin in linearized:
        for lr in learning_rates:
            trial = f"sgd-{'lin' if lin else 'nn'}-pack{pack:03d}-mlp-digits"
            trial += f"-train.learning_rate={lr:g}" if lr is not None else ""
            rows = []
            for seed, j in ((seed, j) for seed in seeds for j in indices):
                axes = {"model.name": "mlp", "train.eigen_index": j, "train.seed": seed}
                if lr is not None:
                    axes["train.learning_rate"] = lr
                for epoch in epochs:
                    bad = (lin, j, seed) == (False, 4, 1)
                    rows.append(
                        {
                            "sweep_id": "demo",
                            "trial_id": trial,
                            "target_id": make_target_id(j, seed),
                            "model": "mlp",
                            "dataset": "digits",
                            "optimizer": "sgd",
                            "linearized": lin,
                            "eigen_index": j,
                            "seed": seed,
                            "learning_rate": lr or 0.05,
                            "axes": axes_json(axes),
                            "epoch": epoch,
                            "step": 40 * epoch,
                            "train_loss": float("nan") if bad else 0.2 / epoch,
                            "train_accuracy": 0.95,
                            "test_loss": float("nan") if bad else 0.4,
                            "test_accuracy": 0.5
                            if bad
                            else 0.95 - 0.02 * j - 0.04 * lin + 0.01 * seed,
                            "steps_to_threshold": 30 + 5 * j if epoch == 2 and j < 9 else None,
                            "l2_distance": 1 + 0.1 * j,
                            "cosine_distance": 0.01 * (1 + j),
                            "weight_norm": 5.0,
                            "grad_norm": 0.1,
                            "status": "diverged"
                            if bad
                            else "finished"
                            if epoch == 2
                            else "running",
                            "wall_time": 3.0 * epoch,
                        }
                    )
            write_trial_rows(results, trial, rows)
            trials.append(trial)
    return trials


def write_artifact(results: Path, config) -> None:
    """A tiny artifact through the real writer (k = 12 eigenpairs of N = 40 points)."""
    from raysweep.eigenfunctions import save_artifact

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(40, 12)))
    pairs = types.SimpleNamespace(
        eigvals=1.0 / np.arange(1, 13) ** 1.5, eigvecs=q.T, residuals=np.full(12, 1e-8)
    )
    manifest = {"name": "digits", "num_train": 30, "num_test": 10, "input_shape": [8, 8, 1]}
    meta = {"gram_seconds": 4.5, "eigen_seconds": 0.5, "eigen_method": "dense", "N": 40, "k": 12}
    save_artifact(
        results / "eigenfunctions",
        config=config,
        manifest=manifest,
        pairs=pairs,
        variables={"params": {"w": np.zeros(2, np.float32)}},
        meta=meta,
    )


def write_optional(results: Path) -> None:
    save_energy_records(
        results,
        [
            {
                "model": "mlp",
                "dataset": "digits2",
                "k": 50,
                "energy_init": 0.3,
                "energy_final": 0.8,
                "test_accuracy": 0.97,
            }
        ],
    )
    alpha = np.exp(-np.arange(12) / 4.0)[None].repeat(2, 0)
    save_alignment(
        results, AlignmentData(np.array([0, 4]), {"train": alpha, "test": alpha, "all": alpha})
    )
    save_nads(
        results, np.array([3.0, 2.0, 1.0]), np.random.default_rng(1).normal(size=(3, 48)), (4, 4, 3)
    )
    save_baseline(results, "digits2", {"mlp": 0.97})
    records = []
    for variant, acc in (
        ("network", 0.9),
        ("linearized_init", 0.7),
        ("linearized_pretrained", 0.8),
    ):
        rows = [{"epoch": e, "test_accuracy": acc - 0.1 / e, "train_loss": 0.5 / e} for e in (1, 2)]
        records.append(
            {
                "variant": variant,
                "eigen_index": 4,
                "status": "finished",
                "test_accuracy": rows[-1]["test_accuracy"],
                "train_accuracy": 1.0,
                "train_loss": 0.25,
                "steps_to_threshold": 40 if variant != "linearized_init" else -1,
                "rows": rows,
            }
        )
    save_pretrained(results, records, model="mlp", dataset="digits", optimizer="sgd")


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """A results folder with everything, and its report (built once for this module)."""
    results = tmp_path_factory.mktemp("full")
    config = get_preset("smoke")
    save_sweep_config(config, results)
    write_metrics(results)
    write_artifact(results, config)
    write_optional(results)
    page = build_report(results, dpi=72)
    return results, page


def test_full_report_files_and_self_contained_page(full_report):
    results, page = full_report
    assert page == results / "report" / "report.html"
    for name in FIGURES:
        assert (page.parent / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (page.parent / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    text = page.read_text()
    assert not re.search(r"<script|<link|@import|url\(", text, re.I)
    sources = re.findall(r'<img src="([^"]*)"', text)
    assert len(sources) == len(FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    # what was run, trial counts, wall time, the tables
    assert "sweep.eigen_indices" not in text and "eigen_indices" in text and "0.05" in text
    num = '</td><td class="num">'
    assert f"<td>finished{num}1{num}15</td>" in text  # trials, targets
    assert f"<td>diverged{num}1{num}1</td>" in text  # one target diverged: its trial too
    # the bands and the ± of the table say what they are over
    assert text.count("Shaded: mean ± std over train.seed (batch order), n=2.") == 2  # captions
    assert "mean ± std over train.seed (batch order), n=2; div: diverged" in text
    assert "seeds (train.seed, batch order)" in text and "variants" not in text
    assert "training, summed over trials" in text and "eigen step (Gram + eigensolver)" in text
    assert "sgd network" in text and "sgd linearized" in text and "(1 div)" in text
    assert "energy after training" in text and "0.800" in text
    assert "Dashed green: accuracy on digits2" in text
    assert 'class="note' not in text  # nothing missing, nothing broken
    # the findings: one row per claim, each with its verdict
    assert "Findings: the paper" in text
    verdicts = re.findall(r"<td>(reproduced|not reproduced|not enough data)</td>", text)
    assert len(verdicts) == 7, verdicts


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent: apt-get install -y chromium "
    "(.ci/run does) to render the report in a real browser",
)


def chromium_body(page: Path, profile: Path, *flags: str) -> re.Match:
    """Open ``page`` in headless Chromium, dump its DOM; the ``<body ...>`` tag (probes write
    their findings into its data- attributes)."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *flags,
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body, f"no DOM from Chromium (rc {done.returncode}): {done.stderr[-2000:]}"
    return body


@needs_chromium
def test_page_renders_in_headless_chromium(full_report, tmp_path):
    """Open the page from disk as a user would: every image decodes, the page is not blank."""
    _, page = full_report
    probe = tmp_path / "probe.html"  # the report plus a probe that counts decoded images
    script = (
        "<script>addEventListener('load',()=>{const i=[...document.images];"
        "document.body.dataset.images=i.length;document.body.dataset.decoded="
        "i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script></body>"
    )
    probe.write_text(page.read_text().replace("</body>", script))
    shot = tmp_path / "shot.png"
    body = chromium_body(
        probe,
        tmp_path / "profile",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1200,3000",
    )
    images = re.search(r'data-images="(\d+)"', body.group(0))
    decoded = re.search(r'data-decoded="(\d+)"', body.group(0))
    assert images and decoded, f"the load probe did not run: {body.group(0)}"
    assert int(images.group(1)) == len(FIGURES)
    assert int(decoded.group(1)) == len(FIGURES), "some images did not decode"
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (3000, 1200)
    colors = np.unique(pixels.reshape(-1, 3)[::7], axis=0).shape[0]
    assert colors > 500, f"the screenshot looks blank ({colors} colours)"
    assert (pixels.std(axis=(0, 1)) > 10).all()


def test_report_from_metrics_only_names_what_is_missing(tmp_path):
    write_metrics(tmp_path, seeds=(0,), indices=(0, 2))
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "baseline.json").write_text("{not json")
    page = build_report(tmp_path, tmp_path / "out", dpi=60)
    assert page == tmp_path / "out" / "report.html"
    text = page.read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 2
    assert sorted(p.name for p in (tmp_path / "out" / "figures").iterdir()) == [
        "accuracy_vs_index.pdf",
        "accuracy_vs_index.png",
        "training_metrics.pdf",
        "training_metrics.png",
    ]
    assert "No eigenfunction artifact (eigenfunctions/)" in text
    assert "No config.json" in text and "No metrics yet" not in text
    assert "analysis/baseline.json could not be read" in text  # broken file: a red note
    assert "Energy concentration records not present" in text
    assert "End-of-training alignment not present" in text
    assert "NADs not present" in text


def test_report_from_an_empty_folder_says_everything_is_missing(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    page = build_report(results)
    assert page == results / "report" / "report.html"
    text = page.read_text()
    assert "<img" not in text
    for missing in ("No metrics yet", "No eigenfunction artifact", "No config.json"):
        assert missing in text
    assert not (results / "report" / "figures").exists()


def test_stale_figures_are_removed(full_report, tmp_path):
    results, page = full_report
    out = tmp_path / "out"
    shutil.copytree(page.parent, out)
    empty = tmp_path / "empty"
    empty.mkdir()
    build_report(empty, out)
    assert list((out / "figures").iterdir()) == []


def test_missing_results_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results directory .*nope does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(ValueError, match="dpi must be a positive integer"):
        build_report(tmp_path, dpi=0)


def test_cli_report(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "report.html")
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_of_learning_rate_variants_and_seeds(tmp_path):
    results = tmp_path / "lr_sweep"
    write_metrics(results, seeds=(0, 1, 2), indices=(0, 3), learning_rates=(0.02, 0.1))
    page = build_report(results, dpi=50)
    text = page.read_text()
    assert "learning rates η₀" in text and "0.02, 0.1" in text
    assert "train.learning_rate=0.02; train.learning_rate=0.1" in text  # the variants card
    assert "<th>variant</th><th>index</th>" in text  # one table row per variant and index
    assert "<td>train.learning_rate=0.02</td>" in text
    assert "<td>train.learning_rate=0.1</td>" in text
    assert "Line styles: grid points that differ in other axes" in text
    # seed 1 of index 4 diverges only where index 4 exists: here all three seeds count
    assert "Shaded: mean ± std over train.seed (batch order), n=3." in text
    assert "mean ± std over train.seed (batch order), n=3; div: diverged" in text


def test_report_of_a_folder_above_sweeps_names_the_sweep(tmp_path):
    write_metrics(tmp_path / "sweeps" / "demo", seeds=(0,), indices=(0,))
    page = build_report(tmp_path / "sweeps", tmp_path / "out", dpi=50)
    text = page.read_text()
    assert "No metrics yet" in text  # nothing shown as if it were this folder's
    assert "the metrics store (metrics/*.parquet) could not be read" in text
    assert (
        f"Pass one sweep folder (the folder that holds metrics/): {tmp_path / 'sweeps' / 'demo'}"
        in text
    )


# ------------------------------------------------------------------ a sweep still running

REFRESH = re.compile(r'<meta http-equiv="refresh" content="(\d+)">')


def write_plan(results: Path, trials: dict[str, list[str]]) -> None:
    """A sweep_plan.json with these trials and their target ids (the fields the report reads)."""
    plan = {"sweep_id": "demo", "trials": list(trials), "targets": trials, "num_targets": 0}
    (results / "sweep_plan.json").write_text(json.dumps(plan))


@pytest.fixture
def driver_running(monkeypatch):
    """A driver holds the results folder (its lease is live): an incomplete sweep is running."""
    monkeypatch.setattr(report_collect, "active_holder", lambda folder: {"pid": 1})


def running_line(results: Path, complete: int, total: int, every: int = 30, out=None) -> str:
    command = f"raysweep report {results}" + (f" --out {out}" if out else "")
    return (
        f"sweep running: {complete} of {total} trials complete; this page reloads every "
        f"{every} s (rebuild it with {command}, or run {command} --watch)"
    )


@pytest.mark.usefixtures("driver_running")
def test_running_sweep_page_reloads_itself_until_complete(tmp_path):
    results = tmp_path / "sweep"
    targets = [make_target_id(j, s) for s in (0, 1) for j in (0, 1, 4, 9)]
    trials = {t: targets for t in write_metrics(results, epochs=(1,))}  # epoch 1 of 2
    trials["sgd-nn-pack001-mlp-digits"] = [make_target_id(16, 0)]  # planned, not started
    write_plan(results, trials)
    text = build_report(results, dpi=40).read_text()
    assert REFRESH.findall(text) == ["30"]
    assert running_line(results, 0, 3) in text and 'id="running"' in text

    write_metrics(results)  # both trials of pack000 complete (one target diverged)
    text = build_report(results, dpi=40, refresh_s=4.5).read_text()
    assert REFRESH.findall(text) == ["5"]  # whole seconds, rounded up
    assert running_line(results, 2, 3, every=5) in text

    write_metrics(results, indices=(16,), seeds=(0,), pack=1, linearized=(False,))
    text = build_report(results, dpi=40).read_text()
    assert not REFRESH.findall(text) and "http-equiv" not in text
    assert "sweep running" not in text and 'id="running"' not in text


@pytest.mark.usefixtures("driver_running")
def test_running_state_without_a_plan_comes_from_the_store(tmp_path):
    results, out = tmp_path / "sweep", tmp_path / "out dir"
    write_metrics(results, epochs=(1,))  # no sweep_plan.json: the stored trials count
    text = build_report(results, out, dpi=40).read_text()
    assert REFRESH.findall(text) == ["30"]
    quoted = f"'{out}'"  # a path with a space, quoted for the shell
    assert running_line(results, 0, 2, out=quoted) in html.unescape(text)
    write_metrics(results)
    assert "http-equiv" not in build_report(results, out, dpi=40).read_text()
    # a plan written before grids (no target lists): the store's targets decide
    (results / "sweep_plan.json").write_text(json.dumps({"trials": ["sgd-nn-pack000-mlp-digits"]}))
    assert "http-equiv" not in build_report(results, out, dpi=40).read_text()
    assert sweep_state({"trials": ["x"]}, None) == SweepState(0, 1, planned=True)
    with pytest.raises(ValueError, match="refresh_s must be a positive number"):
        build_report(results, refresh_s=0)


@pytest.mark.usefixtures("driver_running")
def test_watch_report_rebuilds_until_the_sweep_is_complete(tmp_path, monkeypatch):
    results = tmp_path / "sweep"
    write_metrics(results, epochs=(1,))
    naps, lines = [], []

    def nap(seconds):  # the sweep advances while watch_report sleeps
        naps.append(seconds)
        text = (results / "report" / "report.html").read_text()
        assert REFRESH.findall(text) == ["7"]
        if len(naps) == 2:
            write_metrics(results)

    monkeypatch.setattr(report_build.time, "sleep", nap)
    page = watch_report(results, 7, dpi=40, log=lines.append)
    assert page == results / "report" / "report.html"
    assert naps == [7, 7] and len(lines) == 3
    assert lines[0] == f"{page}: sweep running: 0 of 2 trials complete"
    assert lines[-1] == f"{page}: sweep complete: 2 of 2 trials complete"
    assert "http-equiv" not in page.read_text()

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_build.time, "sleep", interrupt)  # Ctrl-C: the last page
    assert watch_report(results, stop_when_done=False, dpi=40, log=None) == page
    with pytest.raises(ValueError, match="every_s must be a positive number"):
        watch_report(results, 0)


def test_stopped_sweep_says_how_to_finish_it_and_does_not_reload(tmp_path):
    """Incomplete and no driver holds the folder (crashed, interrupted): no refresh, a line
    that says the sweep stopped and how to resume it; watch_report returns at once."""
    results = tmp_path / "sweep"
    write_metrics(results, epochs=(1,))
    text = html.unescape(build_report(results, dpi=40).read_text())
    assert "http-equiv" not in text and "sweep running" not in text
    assert (
        "sweep stopped before it finished: 0 of 2 trials complete; no driver holds this folder. "
        f"Finish it with the same command plus --resume --out {results}." in text
    )
    lines = []
    assert watch_report(results, 5, dpi=40, log=lines.append) == results / "report" / "report.html"
    assert lines == [
        f"{results / 'report' / 'report.html'}: sweep stopped (no driver): 0 of 2 trials complete"
    ]


def test_active_holder_sees_another_process_lease_only(tmp_path):
    from raysweep.lease import active_holder, hold_results_dir

    folder = tmp_path / "sweep"
    assert active_holder(folder) is None  # no folder, no lease
    with hold_results_dir(folder, purpose="this test"):
        assert active_holder(folder) is None  # this process's own lease does not count
    code = (
        "import sys, time\n"
        "from raysweep.lease import hold_results_dir\n"
        f"with hold_results_dir({str(folder)!r}, purpose='other driver'):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        record = active_holder(folder)
        assert record is not None and record["purpose"] == "other driver"
        assert record["pid"] == proc.pid
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0 and active_holder(folder) is None  # released at exit


@needs_chromium
@pytest.mark.usefixtures("driver_running")
def test_chromium_follows_the_refresh_of_a_running_sweep(tmp_path):
    """A running sweep's page, opened in a frame: Chromium reloads it (virtual time); a complete
    sweep's page loads once."""
    results = tmp_path / "sweep"
    write_metrics(results, epochs=(1,), seeds=(0,), indices=(0,))
    running = build_report(results, tmp_path / "running", dpi=30, refresh_s=1)
    write_metrics(results, seeds=(0,), indices=(0,))
    complete = build_report(results, tmp_path / "complete", dpi=30, refresh_s=1)
    found = {}
    for name, page in (("running", running), ("complete", complete)):
        probe = tmp_path / f"probe_{name}.html"  # counts the loads of the page in its frame
        probe.write_text(
            '<!DOCTYPE html><html><body data-loads="0">'
            f'<iframe id="f" src="{page.as_uri()}"></iframe><script>'
            "const f=document.getElementById('f');f.addEventListener('load',()=>{"
            "const b=document.body.dataset,d=f.contentDocument;b.loads=Number(b.loads)+1;"
            "const m=d.querySelector('meta[http-equiv=\"refresh\"]');"
            "b.refresh=m?m.content:'none';const r=d.getElementById('running');"
            "b.running=r?r.textContent.split(';')[0]:'none';"
            "b.figures=d.images.length;});</script></body></html>"
        )
        body = chromium_body(
            probe,
            tmp_path / f"profile_{name}",
            "--allow-file-access-from-files",  # the probe reads the frame's DOM
            "--virtual-time-budget=3500",  # 3.5 s of page time, run as fast as it goes
        ).group(0)
        found[name] = {k: v for k, v in re.findall(r'data-(\w+)="([^"]*)"', body)}
    assert found["running"]["refresh"] == "1"
    assert found["running"]["running"] == "sweep running: 0 of 2 trials complete"
    assert int(found["running"]["loads"]) >= 2, f"the page did not reload: {found}"
    assert found["running"]["figures"] == "2"
    assert found["complete"] == {
        "loads": "1",
        "refresh": "none",
        "running": "none",
        "figures": "2",
    }
