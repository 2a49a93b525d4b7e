"""Paper scale on one machine: the pipeline on CIFAR-format data at growing N, with cost curves.

Usage::

    python benchmarks/bench_scale.py                    # MLP and LeNet5, N up to 60,000 (long)
    python benchmarks/bench_scale.py --max-n 16000      # the sizes up to 16,000 only
    python benchmarks/bench_scale.py --models mlp --sizes 4000,60000
    python benchmarks/bench_scale.py --smoke-test       # what CI runs: MLP at N = 2,000

Data: the CIFAR-10 folder of ``--data-dir`` (the real ``cifar-10-batches-py`` or the synthetic
one of ``raysweep make-cifar-like``); without one, synthetic images (as many as the largest
N) are written under ``--out`` first (:mod:`raysweep.data.synthetic`; 60,000 in ~40 s). Each
size N takes 5/6 of N training and 1/6 of N test images (a stratified subsample through the
real loader).

For each model and N, one subprocess (so that its peak memory is its own) runs the eigen step
of the main job, :func:`raysweep.eigenfunctions.compute_eigenfunctions`: the distributed Gram
on a local Ray cluster into its tile store, then the top k = 1,000 eigenpairs (k = N/8 when
smaller) by the ``auto`` solver, certified to residual 1e-6·λmax. Then a short packed sweep on
that artifact (8 targets, network, SGD, 1 epoch on the training split) through
:func:`raysweep.sweep.run_sweep`. Printed per row:

- ``gram s``, ``eigen s``: the two stages' wall seconds; ``matvecs``: K-vector products of the
  solver; ``residual``: the largest ‖Kv − λv‖/λ₀ of the returned pairs;
- ``driver GB``: the subprocess's peak RSS (the eigensolver holds its basis there);
  ``worker GB``: the largest peak RSS of a Ray worker process (Gram actors, trials), sampled
  from ``/proc`` every 0.5 s (Linux);
- ``tiles GB``: the tile store's bytes on disk (the float32 Gram's upper triangle);
- ``target-epochs/s``: the sweep's 8 target-epochs over its trial's training seconds (the
  first epoch's compilation included);
- below each row, the eigensolver's seconds by stage (``EigenPairs.seconds``): products with
  the Gram (the workers' share and the round trips), orthogonalization, Rayleigh-Ritz, restarts
  and the final float64 residual product.

Then a log-log plot of the seconds against N with N² and N³ reference slopes
(``<out>/bench_scale.png``) and the table as JSON lines (``<out>/bench_scale.jsonl``).
ResNet18 runs only where a GPU is visible (``--models resnet18``): its CPU Gram at these sizes
takes days.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

SIZES = (4_000, 8_000, 16_000, 32_000, 60_000)
SWEEP_TARGETS = 8


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mlp,lenet5", help="comma-separated (default mlp,lenet5)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="values of N")
    ap.add_argument("--max-n", type=int, default=60_000, help="skip sizes above this")
    ap.add_argument("--k", type=int, default=1000, help="eigenpairs (N/8 when smaller)")
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: synthetic)")
    ap.add_argument("--out", default="results/bench_scale", help="working folder")
    ap.add_argument("--no-sweep", action="store_true", help="skip the sweep rate")
    ap.add_argument("--smoke-test", action="store_true", help="MLP at N = 2,000 (CI)")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke_test:
        args.models, args.sizes, args.max_n = "mlp", "2000", 2000
    return args


def _k_for(n: int, k: int) -> int:
    return min(k, n // 8)


# ----------------------------------------------------------------------------- one size


class _WorkerPeaks:
    """Largest VmHWM (peak RSS) of the Ray worker processes (``ray::...``), sampled."""

    def __init__(self, every_s: float = 0.5):
        self.peak_kb, self._stop, self._every = 0, threading.Event(), every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
                if not pid.isdigit():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if not cmd.startswith(b"ray::"):
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except OSError:
                    continue
            self._stop.wait(self._every)


def _config(model: str, n: int, k: int, data_dir: str, gpu: bool):
    from raysweep.config import apply_overrides, get_preset

    num_train = (n * 5) // 6  # the split of raysweep.data.synthetic (50,000 of 60,000)
    return apply_overrides(
        get_preset("cifar10"),
        [
            f"model.name={model}",
            f"data.root={data_dir}",
            f"data.num_train={num_train}",
            f"data.num_test={n - num_train}",
            f"ntk.num_eigen={_k_for(n, k)}",
            f"sweep.eigen_indices={','.join(map(str, range(SWEEP_TARGETS)))}",
            f"sweep.pack_size={SWEEP_TARGETS}",
            "sweep.optimizers=sgd",
            "sweep.linearized=false",
            "sweep.studies=",
            "train.epochs=1",
            "sweep.max_retries=0",
            f"sweep.gpus_per_trial={0.25 if gpu else 0}",
        ],
    )


def run_one(model: str, n: int, args) -> dict:
    """The eigen step and the sweep rate of one (model, N), in this process."""
    from raysweep.distributed import ensure_ray
    from raysweep.eigenfunctions import compute_eigenfunctions
    from raysweep.store import read_metrics

    ensure_ray()
    import jax

    config = _config(model, n, args.k, args.data_dir, jax.default_backend() != "cpu")
    out = Path(args.out) / f"{model}-{n}"
    shutil.rmtree(out, ignore_errors=True)
    with _WorkerPeaks() as peaks:
        art = compute_eigenfunctions(config, out, progress=False, log=lambda _line: None)
        rate = None
        if not args.no_sweep:
            from raysweep.sweep import run_sweep

            run_sweep(config, out, artifacts=[art.path], progress=False)
            rows = read_metrics(out).to_pylist()
            seconds = max(r["wall_time"] for r in rows)
            rate = len({r["target_id"] for r in rows}) * config.train.epochs / seconds
    tiles = sum(p.stat().st_size for p in (out / "gram").rglob("*.npy"))
    meta = art.meta
    return {
        "model": model,
        "n": n,
        "k": int(meta["k"]),
        "gram_s": meta["gram_seconds"],
        "eigen_s": meta["eigen_seconds"],
        "method": meta["eigen_method"],
        "matvecs": meta.get("eigen_matvecs"),
        "residual": meta["max_relative_residual"],
        "stages": meta.get("eigen_stage_seconds", {}),
        "driver_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "worker_gb": peaks.peak_kb / 2**20,
        "tiles_gb": tiles / 1e9,
        "target_epochs_per_s": rate,
    }


# ----------------------------------------------------------------------------- driver


def _data_dir(args, largest: int) -> str:
    """``--data-dir``, else a synthetic folder under ``--out`` of ``largest`` images (kept for
    the next run; rewritten when a larger N asks for more)."""
    if args.data_dir:
        return args.data_dir
    from raysweep.data.synthetic import write_cifar_like

    folder = Path(args.out) / "data"
    marker = folder / "num_images.txt"
    have = int(marker.read_text()) if marker.exists() else 0
    if have < largest:
        print(f"writing {largest:,} synthetic CIFAR-format images to {folder} ...", flush=True)
        write_cifar_like(folder, largest, force=True)
        marker.write_text(str(largest))
    return str(folder)


def _print_row(r: dict) -> None:
    rate = "-" if r["target_epochs_per_s"] is None else f"{r['target_epochs_per_s']:.2f}"
    print(
        f"{r['model']:>7} {r['n']:>7,} {r['k']:>5} {r['gram_s']:>8.1f} {r['eigen_s']:>8.1f} "
        f"{r['method']:>6} {r['matvecs'] or 0:>8,} {r['residual']:>9.1e} {r['driver_gb']:>9.2f} "
        f"{r['worker_gb']:>9.2f} {r['tiles_gb']:>8.2f} {rate:>15}",
        flush=True,
    )
    if r.get("stages"):
        parts = ", ".join(f"{key} {v:.1f}" for key, v in r["stages"].items())
        print(f"{'':>17}eigen seconds by stage: {parts}", flush=True)


HEADER = (
    f"{'model':>7} {'N':>7} {'k':>5} {'gram s':>8} {'eigen s':>8} {'solver':>6} "
    f"{'matvecs':>8} {'residual':>9} {'driver GB':>9} {'worker GB':>9} {'tiles GB':>8} "
    f"{'target-epochs/s':>15}"
)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for model in sorted({r["model"] for r in rows}):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["n"])
        n = np.array([r["n"] for r in mine], float)
        for key, style in (("gram_s", "-o"), ("eigen_s", "--s")):
            ax.loglog(n, [r[key] for r in mine], style, label=f"{model} {key[:-2]}")
    all_n = np.array(sorted({r["n"] for r in rows}), float)
    if all_n.size:
        ref = max(min(r["gram_s"] for r in rows), 1e-3)
        for power, label in ((2, "∝ N²"), (3, "∝ N³")):
            ax.loglog(all_n, ref * (all_n / all_n[0]) ** power, ":", color="gray", lw=1)
            ax.annotate(label, (all_n[-1], ref * (all_n[-1] / all_n[0]) ** power), fontsize=8)
    ax.set_xlabel("N (images)")
    ax.set_ylabel("seconds")
    ax.set_title("Gram and top-k eigenpairs on one machine")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        model, n = args.one[0], int(args.one[1])
        print("ROW " + json.dumps(run_one(model, n, args)), flush=True)
        return 0
    models = [m for m in args.models.split(",") if m]
    sizes = [int(s) for s in args.sizes.split(",") if s and int(s) <= args.max_n]
    if "resnet18" in models:
        import jax

        if jax.default_backend() == "cpu":
            print("resnet18 needs a GPU (its CPU Gram at these sizes takes days); skipped.")
            models.remove("resnet18")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = _data_dir(args, max(sizes, default=12))
    rows, log = [], out / "bench_scale.jsonl"
    print(HEADER, flush=True)
    for model in models:
        for n in sizes:
            cmd = [sys.executable, __file__, "--one", model, str(n), "--out", str(out)]
            cmd += ["--data-dir", data_dir, "--k", str(args.k)]
            cmd += ["--no-sweep"] if args.no_sweep else []
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("ROW ")), None)
            if done.returncode != 0 or line is None:
                print(
                    f"{model:>7} {n:>7,} failed after {time.perf_counter() - start:.0f} s "
                    f"(exit {done.returncode}): {done.stderr.strip()[-800:]}",
                    flush=True,
                )
                continue
            row = json.loads(line[4:])
            rows.append(row)
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            _print_row(row)
    if rows:
        plot(rows, out / "bench_scale.png")
        print(f"plot: {out / 'bench_scale.png'}; rows: {log}")
    return 0 if rows and len(rows) == len(models) * len(sizes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
