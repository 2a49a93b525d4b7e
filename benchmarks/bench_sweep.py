"""Benchmark the sweep: packed Tune trials vs one Tune trial per eigenfunction target.

Usage::

    python benchmarks/bench_sweep.py                       # 64 MLP targets on digits, 3 epochs
    python benchmarks/bench_sweep.py --targets 32 --epochs 2 --pack-sizes 32,8
    python benchmarks/bench_sweep.py --targets 64,192 --no-naive   # marginal cost per target
    python benchmarks/bench_sweep.py --only-grid           # planning + the 2,000-target sweep

Setup: the paper's MLP on scikit-learn digits (1,347 train + 450 test images), the eigenfunction
artifact of the default main job (computed on first use under ``--out``, then reused), the
first ``--targets`` eigen-indices, SGD, network only, ``--epochs`` epochs. The same targets
are swept with ``run_sweep`` once per pack size, each into a fresh sweep directory of the same
local Ray cluster: pack size 1 (one Tune trial per target) and each of ``--pack-sizes`` (the
targets of a pack trained together in one compiled, vmapped program). One trial per target runs
twice: *naive*, as Tune does by default (a fresh worker process per trial, no shared
compilation cache: every trial imports JAX and compiles its program), and *reused*, as
``run_sweep`` does (``reuse_actors=True`` and JAX's persistent compilation cache, so a worker
compiles once and then only pays Tune's per-trial scheduling and reporting).

With two sizes (``--targets 64,192``) every mode runs at both, and the marginal throughput
``(n2 − n1) / (t2 − t1)`` targets per second, free of the one-off costs (Tune start-up, the
first compilation), is what a sweep of thousands of targets approaches.

Reported per run: wall seconds of ``run_sweep`` (Tune start-up, actor start, payload fetch,
JIT compilation, training, per-epoch Parquet writes and ``tune.report`` included; the
eigen step and the Ray start are not), trials and targets per hour, and targets/hour relative
to pack size 1. Goal: packed ≥ 20x.

Breakdown per run, from the metrics store (``wall_time`` of each row counts from its trial's
start): ``trial s`` is the sum over trials of their duration, ``1st epoch s`` the sum of their
first epochs (payload fetch, labels, XLA compilation, one epoch), and ``driver s`` =
``seconds − trial s / concurrent trials``, roughly Tune's start-up and per-trial scheduling.

Grid figures (printed first, every run):

- *planning*: :func:`~raysweep.sweep.grid.expand_grid`, :func:`~raysweep.sweep.plan_sweep` and
  Tune's ``param_space`` of a grid of ``--plan-points`` targets (default 10,000: 2 models × 2
  optimizers × 2 kinds × 5 seeds × 250 eigen-indices), in packs of 64 and one trial per
  target, against the goal of 1 s;
- ``--grid-sweep``: a sweep of 2 optimizers × 2 kinds × ``--grid-indices`` eigen-indices
  (default 500: 2,000 targets), 1 epoch, in packs of ``--grid-pack`` (default 125), end to
  end, beside one Tune trial per target on its first ``--grid-alone`` indices (default 16:
  64 targets, reused actors and compilation cache), both in targets per hour.

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
    ap.add_argument(
        "--targets",
        default="64",
        help="eigen-indices 0..n-1; two comma-separated sizes also give the marginal rate",
    )
    ap.add_argument(
        "--no-naive", action="store_true", help="skip the fresh-process-per-trial baseline"
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pack-sizes", default="64,16", help="packed runs, comma-separated")
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    ap.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs (default all)")
    ap.add_argument("--out", default="results/bench_sweep", help="working folder")
    ap.add_argument("--plan-points", type=int, default=10_000, help="targets of the planned grid")
    ap.add_argument(
        "--grid-sweep", action="store_true", help="run the 2,000-target grid sweep (minutes)"
    )
    ap.add_argument("--grid-indices", type=int, default=500)
    ap.add_argument("--grid-pack", type=int, default=125)
    ap.add_argument("--grid-alone", type=int, default=16)
    ap.add_argument("--only-grid", action="store_true", help="skip the pack-size comparison above")
    return ap.parse_args(argv)


class _PlannedArtifact:
    """What plan_sweep reads of a loaded artifact, without one on disk."""

    def __init__(self, config, path: Path):
        self.config, self.path, self.num_eigen = config, path, config.ntk.num_eigen
        self.manifest = {"num_train": 1347, "num_test": 450}


def plan_benchmark(points: int, pack_size: int) -> None:
    """Seconds to expand, plan and hand to Tune a grid of ``points`` targets (goal: < 1 s)."""
    from ray import tune  # noqa: F401  (imported before the clock starts)

    from raysweep.sweep import param_space, plan_sweep
    from raysweep.sweep.grid import artifact_dir, expand_grid

    indices = max(1, points // 40)
    config = apply_overrides(
        get_preset("smoke"),
        [
            f"ntk.num_eigen={indices + 1}",
            f"sweep.eigen_indices={','.join(map(str, range(indices)))}",
            "grid.model.name=mlp,lenet5",
            "grid.train.seed=0,1,2,3,4",
            f"sweep.pack_size={pack_size}",
        ],
    )
    start = time.perf_counter()
    grid = expand_grid(config)
    arts = [_PlannedArtifact(a.config, artifact_dir("/results", a)) for a in grid.artifacts]
    plan = plan_sweep(config, arts, out_dir="/results", grid=grid)
    space = param_space(plan)
    seconds = time.perf_counter() - start
    print(
        f"planning: {plan.num_targets} targets in packs of {pack_size} -> "
        f"{len(plan.trials)} trials ({len(space['point']['grid_search'])} Tune grid points) "
        f"in {seconds:.3f} s "
        f"(goal < 1 s: {'met' if seconds < 1 else 'NOT met'})",
        flush=True,
    )


def grid_benchmark(args, out: Path) -> None:
    """The 2,000-target grid sweep end to end, beside one Tune trial per target."""
    from raysweep.eigenfunctions import compute_eigenfunctions

    n = args.grid_indices
    base = apply_overrides(
        get_preset("smoke"),
        [
            "train.epochs=1",
            f"ntk.num_eigen={max(128, n)}",
            "sweep.eigen_indices=0",
            f"sweep.cpus_per_trial={args.cpus_per_trial}",
            "sweep.max_retries=0",
        ],
    )
    artifact = compute_eigenfunctions(base, out / f"eigen_k{max(128, n)}", progress=False).path
    rows = []
    for label, indices, pack, naive in (
        ("one trial per target", args.grid_alone, 1, False),
        (f"packs of {args.grid_pack}", n, args.grid_pack, False),
    ):
        seconds, trials, ok, _, _ = run_one(
            apply_overrides(base, ["sweep.optimizers=sgd,adam", "sweep.linearized=false,true"]),
            out,
            artifact,
            pack,
            indices,
            naive=naive,
        )
        targets = 4 * indices
        rows.append((label, targets, trials, seconds, ok))
        print(f"  grid {label}: {targets} targets, {trials} trials in {seconds:.1f} s", flush=True)
    print("\ngrid sweep (MLP on digits, sgd/adam x network/linearized, 1 epoch):")
    print(
        f"{'mode':>22} {'targets':>8} {'trials':>7} {'seconds':>8} {'targets/h':>10} "
        f"{'vs 1/trial':>10}"
    )
    ref = rows[0][1] * 3600 / rows[0][3]
    for label, targets, trials, seconds, ok in rows:
        rate = targets * 3600 / seconds
        print(
            f"{label:>22} {targets:>8} {trials:>7} {seconds:>8.1f} {rate:>10.0f} "
            f"{rate / ref:>9.1f}x" + ("" if ok else "  (INCOMPLETE)")
        )


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
    config, out: Path, artifact: Path, pack_size: int, targets: int, naive: bool = False
) -> tuple[float, int, bool, float, float]:
    from raysweep.sweep import run_sweep

    name = f"pack{pack_size}-n{targets}" + ("-naive" if naive else "")
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
        summary = run_sweep(
            config,
            sweep_dir,
            artifacts=[artifact],
            progress=False,
            reuse_actors=not naive,
            compile_cache=not naive,
        )
    seconds = time.perf_counter() - start
    return (seconds, summary.num_trials, summary.ok, *trial_seconds(sweep_dir))


def main(argv=None) -> int:
    args = parse_args(argv)
    from raysweep.distributed import ensure_ray
    from raysweep.eigenfunctions import compute_eigenfunctions

    out = Path(args.out).resolve()
    for pack_size in (64, 1):
        plan_benchmark(args.plan_points, pack_size)
    if args.grid_sweep or args.only_grid:
        ensure_ray(num_cpus=args.num_cpus, include_dashboard=False)
        grid_benchmark(args, out)
        if args.only_grid:
            return 0
    packs = [int(p) for p in args.pack_sizes.split(",") if p]
    sizes = [int(n) for n in args.targets.split(",") if n]
    if not 1 <= len(sizes) <= 2 or sorted(sizes) != sizes or sizes[0] < 1:
        raise SystemExit(f"--targets: one size or two increasing sizes, got {args.targets!r}")
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
    k = max(128, sizes[-1])  # the default main job's 128, more for larger grids
    base = apply_overrides(base, [f"ntk.num_eigen={k}"])
    artifact = compute_eigenfunctions(base, out / f"eigen_k{k}", progress=False).path
    print(
        f"{args.targets} targets (MLP on digits, SGD, network), {args.epochs} epochs, "
        f"{args.cpus_per_trial:g} CPU per trial; artifact {artifact}"
    )
    import ray

    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // args.cpus_per_trial))
    modes = ([("1 naive", 1, True)] if not args.no_naive else []) + [("1 reused", 1, False)]
    modes += [(str(p), p, False) for p in packs]
    results: dict[tuple[str, int], float] = {}
    for n in sizes:
        rows = []
        for label, pack_size, naive in modes:
            seconds, trials, ok, in_trials, first = run_one(
                base, out, artifact, pack_size, n, naive=naive
            )
            results[(label, n)] = seconds
            rows.append((label, trials, seconds, in_trials, first))
            print(
                f"  n={n} pack {label:>9}: {trials:>3} trials in {seconds:7.1f} s"
                + ("" if ok else "  (INCOMPLETE)"),
                flush=True,
            )
        ref = {label: s for label, _, s, _, _ in rows if label.startswith("1 ")}
        print(f"\n{n} targets, {args.epochs} epochs, {slots} trials at a time:")
        print(
            f"{'pack':>9} {'trials':>6} {'seconds':>8} {'targets/h':>10}"
            + "".join(f" {'vs ' + k:>11}" for k in ref)
            + f" {'trial s':>8} {'1st epoch s':>11} {'driver s':>8}"
        )
        for label, trials, seconds, in_trials, first in rows:
            driver = max(seconds - in_trials / min(slots, trials), 0.0)
            print(
                f"{label:>9} {trials:>6} {seconds:>8.1f} {n * 3600 / seconds:>10.0f}"
                + "".join(f" {r / seconds:>10.1f}x" for r in ref.values())
                + f" {in_trials:>8.1f} {first:>11.1f} {driver:>8.1f}"
            )
        for k, r in ref.items():
            best = max(r / s for label, _, s, _, _ in rows if not label.startswith("1 "))
            print(f"packed vs one trial per target ({k}): {best:.1f}x targets/hour (goal >= 20x)")
    if len(sizes) == 2:
        n1, n2 = sizes
        print(f"\nmarginal throughput from {n1} to {n2} targets (one-off costs cancel):")
        marginal = {}
        for label, _, _ in modes:
            extra = results[(label, n2)] - results[(label, n1)]
            marginal[label] = (n2 - n1) / extra if extra > 0 else None
            if marginal[label] is None:
                print(f"  pack {label:>9}: n/a ({n2} targets took no longer than {n1}: noise)")
        for label, rate in marginal.items():
            if rate is None:
                continue
            line = f"  pack {label:>9}: {rate * 3600:>9.0f} targets/h"
            line += "".join(
                f", {rate / marginal[k]:.1f}x vs {k}"
                for k in marginal
                if k.startswith("1 ") and marginal[k]
            )
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
