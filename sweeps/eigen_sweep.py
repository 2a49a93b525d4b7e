"""The main job: NTK eigenfunctions of a network at initialization, then the sweep.

    python sweeps/eigen_sweep.py                               # offline default, minutes on a CPU
    python sweeps/eigen_sweep.py --preset cifar10 --data-dir /data
    python sweeps/eigen_sweep.py train.epochs=3 sweep.eigen_indices=0,4,9
    python sweeps/eigen_sweep.py grid.model.name=mlp,lenet5 grid.train.seed=0,1,2 \
        grid.train.learning_rate=0.02,0.05                    # any config field as an axis
    python sweeps/eigen_sweep.py --smoke-test                  # what CI runs

    python sweeps/eigen_sweep.py --resume                      # finish an interrupted sweep
    raysweep status results/eigen_sweep                        # while it runs, from a 2nd shell
    python sweeps/eigen_sweep.py --address auto --preset cifar10 --out /mnt/efs/results/cifar10

Ray: the job joins a running cluster when there is one — ``--address`` (``host:port``,
``ray://host:10001``, ``auto``), else ``$RAY_ADDRESS`` (set by ``ray job submit``), else the
cluster a ``ray start`` on this machine recorded — and otherwise starts a local one
(``--address local`` forces that); it prints which. On a multi-node cluster the results
folder must be on storage every node mounts at the same path (EFS/NFS); this is checked before
any work, and URIs such as ``s3://`` are refused (README, "Running on a cluster").

Steps:
1. Expand the grid (``raysweep.sweep.grid``) and load every dataset it needs (train + test
   concatenated); a bad axis or data file stops here, before anything is written.
2. For every artifact-level point (data, model, NTK values): initialize the model, compute
   the empirical NTK Gram Θ₀ on Ray workers (resumable tile store) and its top-k eigenpairs;
   save the eigenfunction artifact (reused when already there).
3. Print the spectrum, the residuals and the binarization diagnostic of each.
4. Ray Tune sweep: one trial per artifact × program point (optimizer, network/linearized,
   other program-level axes) × pack of ``sweep.pack_size`` targets (eigen-index × train.seed
   × learning rate); per-epoch metrics go to the Parquet store; print final test accuracy by
   eigen-index.

Output goes to ``<storage_path>/<sweep name>/`` (default ``results/eigen_sweep``): the
resolved ``config.json``, ``gram/`` (tile store), ``eigenfunctions/`` (artifact; with several
artifact points, ``artifacts/<key>/{gram,eigenfunctions}`` each),
``sweep_plan.json``, ``metrics/`` (one Parquet part per trial), ``tune/<name>/`` (Tune's
experiment, TensorBoard event files) and ``report/`` (figures and report.html).

Runtime of the default (digits, MLP, 8 indices, 4 packed trials of 5 epochs): about 2 minutes
on a 2-core CPU. ``--smoke-test`` (what CI runs): about a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

# The driver shares a GPU with a Gram worker or trials when everything runs on one machine: it
# must not preallocate 75 % of the device for the little it computes itself (set before JAX).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

from raysweep.config import (  # noqa: E402
    PRESETS,
    NTKConfig,
    apply_overrides,
    get_preset,
    resolve_paths,
    save_config,
)
from raysweep.data.paths import data_dir_overrides  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    from raysweep.cli import ArgumentParser  # one-line errors

    ap = ArgumentParser(
        prog="python sweeps/eigen_sweep.py",
        description="NTK eigenfunctions at initialization, then the network-vs-linearization "
        "sweep on their signs (Ray Tune).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: section.field=value, e.g. train.epochs=3 sweep.eigen_indices=0,4,9. "
        "Progress while it runs: raysweep status <results folder>.",
    )
    ap.add_argument("overrides", nargs="*", help="config overrides, section.field=value")
    ap.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    ap.add_argument("--data-dir", help="folder with the dataset archives (else $RAYSWEEP_DATA)")
    ap.add_argument("--out", help="results folder (default: <storage_path>/<sweep name>)")
    ap.add_argument("--num-workers", type=int, help="Gram workers (default: one per GPU/CPU)")
    ap.add_argument(
        "--address",
        help="Ray cluster to join: host:port, ray://host:10001, 'auto' (a running ray start "
        "cluster) or 'local' (always a new local one). Default: $RAY_ADDRESS, else a cluster "
        "started with ray start on this machine, else a new local cluster",
    )
    ap.add_argument(
        "--smoke-test",
        action="store_true",
        help="tiny run for CI: 300 digits, 16 eigenpairs, 3 indices, 2 epochs",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted sweep in the same folder (same config)",
    )
    ap.add_argument("--eigen-only", action="store_true", help="stop after the eigen step")
    ap.add_argument(
        "--cpus-per-trial", type=float, help="CPUs per Tune trial (sweep.cpus_per_trial)"
    )
    ap.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per Tune trial, fractions allowed (sweep.gpus_per_trial)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bars or per-trial lines")
    return ap.parse_args(argv)


def build_config(args):
    config = get_preset(args.preset)
    overrides = list(args.overrides)
    overrides += data_dir_overrides(args.data_dir)
    if args.num_workers is not None:
        overrides.append(f"ntk.num_workers={args.num_workers}")
    if args.cpus_per_trial is not None:
        overrides.append(f"sweep.cpus_per_trial={args.cpus_per_trial}")
    if args.gpus_per_trial is not None:
        overrides.append(f"sweep.gpus_per_trial={args.gpus_per_trial}")
    if args.smoke_test:
        config = dataclasses.replace(
            config,
            data=dataclasses.replace(config.data, num_train=200, num_test=100),
            train=dataclasses.replace(config.train, epochs=2),
            ntk=NTKConfig(num_eigen=16, tile_size=128),
            sweep=dataclasses.replace(
                config.sweep, eigen_indices=(0, 3, 15), pack_size=8, name="smoke_test"
            ),
        )
    return resolve_paths(apply_overrides(config, overrides))


def summarize(artifact) -> str:
    vals, res, binz = artifact.eigvals, artifact.residuals, artifact.binarization
    k = len(vals)
    show = sorted({0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, k - 1} & set(range(k)))
    lines = [f"  {'index':>6}{'eigenvalue':>14}{'residual/λ0':>14}{'⟨sign φ/√N, φ⟩':>17}"]
    for j in show:
        lines.append(f"  {j:>6}{vals[j]:>14.5g}{res[j] / vals[0]:>14.2e}{binz[j]:>17.3f}")
    lines.append(
        f"  binarization diagnostic: mean {np.mean(binz):.3f} over {k} eigenvectors "
        "(the paper reports ≈ 0.78 on CIFAR-10)"
    )
    return "\n".join(lines)


def describe_grid(config) -> str:
    """One line: the axes (values per axis, with their class) and the resources per trial."""
    from raysweep.config import field_class
    from raysweep.sweep.grid import expand_grid

    grid = expand_grid(config)
    axes = ", ".join(
        f"{key} ({len(values)}, {field_class(key)})" for key, values in grid.axes.items()
    )
    return (
        f"{len(grid.artifacts)} artifact(s) x {len(grid.programs)} program(s) -> "
        f"{len(grid.trials)} trials, {grid.num_targets} targets (packs of "
        f"{config.sweep.pack_size}); axes: {axes}; {config.sweep.cpus_per_trial:g} CPU + "
        f"{config.sweep.gpus_per_trial:g} GPU per trial"
    )


def print_locations(out: Path, config, artifacts) -> None:
    tune_dir = out / "tune" / config.sweep.name
    print(f"  config:          {out / 'config.json'}")
    for artifact in artifacts:
        print(f"  eigenfunctions:  {artifact.path}  (Gram tiles: {artifact.path.parent / 'gram'})")
    print(f"  metrics:         {out / 'metrics'}  (raysweep.store.read_metrics)")
    print(f"  tune experiment: {tune_dir}  (tensorboard --logdir {tune_dir})")
    print(f"  figures:         {out / 'report'}  (PNG/PDF + report.html: raysweep report {out})")
    print(f"  status:          raysweep status {out}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from raysweep.distributed.cluster import check_results_dir, gpu_memory_env

    try:
        if args.out is not None:
            out = check_results_dir(args.out)
        else:
            out = check_results_dir(config.sweep.storage_path) / config.sweep.name
        trial_env = gpu_memory_env(config.sweep.gpus_per_trial)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from raysweep.eigenfunctions import load_checked_datasets

    try:  # the grid, data files and models, before Ray or any write: one line, nothing changed
        dataset = load_checked_datasets(config)
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from raysweep.lease import ResultsDirBusy, hold_results_dir

    try:  # one driver per results folder, from the first step to the report
        with hold_results_dir(out, purpose="python sweeps/eigen_sweep.py"):
            return run(args, config, out, trial_env, dataset)
    except ResultsDirBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what was written is kept; --resume finishes the run
        print(
            f"\ninterrupted: the results so far are kept in {out}; finish them with: "
            f"{resume_command(argv, out)}",
            file=sys.stderr,
        )
        return 130


def resume_command(argv, out: Path) -> str:
    """The command line that finishes this run: its own options, with ``--resume --out``."""
    kept, args = [], iter(sys.argv[1:] if argv is None else argv)
    for arg in args:
        if arg == "--out":
            next(args, None)
        elif arg != "--resume" and not arg.startswith("--out="):
            kept.append(arg)
    return shlex.join(["python", "sweeps/eigen_sweep.py", "--resume", "--out", str(out), *kept])


def run(args, config, out: Path, trial_env: dict, dataset=None) -> int:
    """The main job in ``out``, whose lease this process holds (``dataset``: already read)."""
    from raysweep.distributed.capacity import check_trial_resources
    from raysweep.distributed.cluster import check_shared_dir, connect_or_start

    print(f"raysweep eigen_sweep: preset {config.preset}, results in {out}")
    try:
        connect_or_start(args.address, env_vars=trial_env)
        check_shared_dir(out)
        if not args.eigen_only:  # before the Gram: a trial that can never run is refused now
            check_trial_resources(config.sweep.cpus_per_trial, config.sweep.gpus_per_trial)
    except (ValueError, ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from raysweep.eigenfunctions import compute_artifacts

    start = time.perf_counter()
    try:
        artifacts = compute_artifacts(config, out, progress=not args.quiet, datasets=dataset)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for point, artifact in artifacts:
        if len(artifacts) > 1:
            print(f"artifact {point.key}:")
        print(summarize(artifact))
    print(f"eigen step done in {time.perf_counter() - start:.1f} s.")
    if args.eigen_only:
        if not (out / "config.json").exists():  # never overwrite the record of a sweep
            save_config(config, out / "config.json")
        print_locations(out, config, [a for _, a in artifacts])
        return 0

    from raysweep.sweep import run_sweep

    print(f"\nSweep: {describe_grid(config)}")
    try:
        summary = run_sweep(config, out, resume=args.resume, progress=not args.quiet)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.quiet:
        print(summary)
    print(f"\nDone in {time.perf_counter() - start:.1f} s.")
    print_locations(out, config, [a for _, a in artifacts])
    from raysweep.report import build_report

    try:  # the report is a view of the results: never fail the run because of it
        print(f"  report:          {build_report(out)}  (raysweep report {out})")
    except Exception as err:
        print(
            f"warning: the report could not be built ({err}); retry with raysweep report {out}",
            file=sys.stderr,
        )
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
