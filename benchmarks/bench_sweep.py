"""Benchmark the sweep: packed Tune trials vs one Tune trial per eigenfunction target.

Usage::

    python benchmarks/bench_sweep.py                       # 64 MLP targets on digits, 3 epochs
    python benchmarks/bench_sweep.py --targets 32 --epochs 2 --pack-sizes 32,8

Setup: the paper's MLP on scikit-learn digits (1,347 train + 450 test images), the eigenfunction
artifact of the default main job (computed on first use under ``--out``, then reused), the
first ``--targets`` eigen-indices, SGD, network only, ``--epochs`` epochs. The same targets
are swept with ``run_sweep`` once per pack size, each into a fresh sweep directory of the same
local Ray cluster: pack size 1 (one Tune trial per target) and each of ``--pack-sizes`` (the
targets of a pack trained together in one compiled, vmapped program).

Reported per run: wall seconds of ``run_sweep`` (Tune start-up, actor start, payload fetch,
JIT compilation, training, per-epoch Parquet writes and ``tune.report`` included; the
eigen step and the Ray start are not), trials and targets per hour, and targets/hour relative
to pack size 1. Goal: packed ≥ 20x.

Breakdown per run, from the metrics store (``wall_time`` of each row counts from its trial's
start): ``trial s`` is the sum over trials of their duration, ``1st epoch s`` the sum of their
first epochs (payload fetch, labels, XLA compilation, one epoch), and ``driver s`` =
``seconds − trial s / concurrent trials``, roughly Tune's start-up and per-trial scheduling.

Run on an idle machine for stable figures; on a shared one compare ratios within one
invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import time
from pathlib import Path

from raysweep.config import apply_overrides, get_preset


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=64, help="eigen-indices 0..targets-1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pack-sizes", default="64,16", help="packed runs, comma-separated")
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    ap.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs (default all)")
    ap.add_argument("--out", default="results/bench_sweep", help="working folder")
    return ap.parse_args(argv)


def trial_seconds(sweep_dir: Path) -> tuple[float, float]:
    """(sum of trial durations, sum of first-epoch durations) from the store's wall_time."""
    from raysweep.store import read_metrics

    last: dict[str, float] = {}
    first: dict[str, float] = {}
    for row in read_metrics(sweep_dir).select(["trial_id", "epoch", "wall_time"]).to_pylist():
        tid = row["trial_id"]
        last[tid] = max(last.get(tid, 0.0), row["wall_time"])
        if row["epoch"] == 1:
            first[tid] = max(first.get(tid, 0.0), row["wall_time"])
    return sum(last.values()), sum(first.values())


def run_one(
    config, out: Path, artifact: Path, pack_size: int, targets: int
) -> tuple[float, int, bool, float, float]:
    from raysweep.sweep import run_sweep

    name = f"pack{pack_size}-n{targets}"
    config = apply_overrides(
        config,
        [
            f"sweep.pack_size={pack_size}",
            f"sweep.name={name}",
            f"sweep.eigen_indices={','.join(str(j) for j in range(targets))}",
        ],
    )
    sweep_dir = out / name
    shutil.rmtree(sweep_dir, ignore_errors=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # Tune's banner; progress=False otherwise
        summary = run_sweep(config, sweep_dir, artifacts=[artifact], progress=False)
    seconds = time.perf_counter() - start
    return (seconds, summary.num_trials, summary.ok, *trial_seconds(sweep_dir))


def main(argv=None) -> int:
    args = parse_args(argv)
    from raysweep.distributed import ensure_ray
    from raysweep.eigenfunctions import compute_eigenfunctions

    out = Path(args.out).resolve()
    packs = [int(p) for p in args.pack_sizes.split(",") if p]
    base = apply_overrides(
        get_preset("smoke"),
        [
            f"train.epochs={args.epochs}",
            "sweep.eigen_indices=0",
            "sweep.optimizers=sgd",
            "sweep.linearized=false",
            f"sweep.cpus_per_trial={args.cpus_per_trial}",
            "sweep.max_retries=0",
        ],
    )
    ensure_ray(num_cpus=args.num_cpus, include_dashboard=False)
    artifact = compute_eigenfunctions(base, out, progress=False).path
    print(
        f"{args.targets} targets (MLP on digits, SGD, network), {args.epochs} epochs, "
        f"{args.cpus_per_trial:g} CPU per trial; artifact {artifact}"
    )
    import ray

    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // args.cpus_per_trial))
    n = args.targets
    rows = []
    for pack_size in [1, *packs]:
        seconds, trials, ok, in_trials, first = run_one(base, out, artifact, pack_size, n)
        rows.append((pack_size, trials, seconds, in_trials, first))
        print(
            f"  pack_size {pack_size:>3}: {trials:>3} trials in {seconds:7.1f} s"
            + ("" if ok else "  (INCOMPLETE)"),
            flush=True,
        )

    single = rows[0][2]
    print(f"\n{n} targets, {args.epochs} epochs, {slots} trials at a time:")
    print(
        f"{'pack_size':>9} {'trials':>6} {'seconds':>8} {'trials/h':>9} {'targets/h':>10}"
        f" {'vs pack 1':>9} {'trial s':>8} {'1st epoch s':>11} {'driver s':>8}"
    )
    for pack_size, trials, seconds, in_trials, first in rows:
        driver = max(seconds - in_trials / min(slots, trials), 0.0)
        print(
            f"{pack_size:>9} {trials:>6} {seconds:>8.1f} {trials * 3600 / seconds:>9.0f}"
            f" {n * 3600 / seconds:>10.0f} {single / seconds:>8.1f}x {in_trials:>8.1f}"
            f" {first:>11.1f} {driver:>8.1f}"
        )
    best = max(single / s for _, _, s, _, _ in rows[1:]) if len(rows) > 1 else 1.0
    print(f"packed vs one trial per target: {best:.1f}x targets/hour (goal >= 20x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
