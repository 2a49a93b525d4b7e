"""The main job: NTK eigenfunctions of a network at initialization, then the sweep.

    python sweeps/eigen_sweep.py                               # the paper's findings on digits
    python sweeps/eigen_sweep.py --preset smoke                # one model, a minute
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
experiment), ``tensorboard/`` (one TensorBoard run per target: ``tensorboard --logdir``,
HParams tab), ``analysis/`` and ``baseline/``, ``energy/``, ``alignment/`` (the companion
studies), ``findings.json`` and ``report/`` (figures and report.html).

The script is thin: the shared parser and runner (:mod:`raysweep.script`) and the library's
study (:func:`raysweep.studies.eigen_study`), which a notebook can call the same way.

5. The companion studies of ``sweep.studies`` (binary baseline, energy concentration with its
   curve over epochs, alignment after training), then the findings: each claim of the paper
   with its statistic, uncertainty and verdict (printed, ``findings.json``, the report).

The default (preset ``digits``): MLP and LeNet5 on sklearn's digits, 16 eigen-indices from 0
to 987, network and linearized, 100 epochs, the MLP with SGD and Adam and 3 seeds, LeNet5 with
SGD and one seed: about 6 minutes on a 2-core CPU (README, "The default run and its
findings"). ``--preset smoke``: one model, 8 indices, 5 epochs, about a minute.
``--smoke-test`` (what CI runs): the default's code path at a tiny size.
"""

from __future__ import annotations

import sys
from pathlib import Path

from raysweep.script import (
    add_tune_flags,
    resume_command,
    run_script,
    script_parser,
    trial_env,
    tune_overrides,
)

PROG = "python sweeps/eigen_sweep.py"


def parse_args(argv=None, *, prog: str = PROG, description: str | None = None):
    ap = script_parser(
        prog,
        description
        or "NTK eigenfunctions at initialization, then the network-vs-linearization sweep on "
        "their signs (Ray Tune), the companion studies and the paper's findings with verdicts.",
        default_preset="digits",
    )
    add_tune_flags(ap)
    ap.add_argument("--num-workers", type=int, help="Gram workers (default: one per GPU/CPU)")
    ap.add_argument("--eigen-only", action="store_true", help="stop after the eigen step")
    return ap.parse_args(argv)


def flag_overrides(args) -> list[str]:
    """The script's own flags as config overrides."""
    workers = [] if args.num_workers is None else [f"ntk.num_workers={args.num_workers}"]
    return workers + tune_overrides(args)


def build_config(args):
    from raysweep.script import build_config as shared

    return shared(args, flag_overrides(args))


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
    print(f"  tune experiment: {tune_dir}")
    print(
        f"  tensorboard:     tensorboard --logdir {out / 'tensorboard'}  "
        f"(HParams: one row per target; rewrite: raysweep tensorboard {out})"
    )
    print(f"  figures:         {out / 'report'}  (PNG/PDF + report.html: raysweep report {out})")
    print(f"  status:          raysweep status {out}")


def main(argv=None) -> int:
    args = parse_args(argv)
    checked = {}

    def check(config):
        """The grid, data files and models, before Ray or any write (one line, nothing changed)."""
        from raysweep.eigenfunctions import load_checked_datasets

        checked["datasets"] = load_checked_datasets(config)

    def study(config, out):
        from raysweep.studies import eigen_study

        if not args.eigen_only:
            print(f"Sweep: {describe_grid(config)}")
        result = eigen_study(
            config,
            out,
            resume=args.resume,
            eigen_only=args.eigen_only,
            progress=not args.quiet,
            datasets=checked.get("datasets"),
        )
        if result.summary is not None and args.quiet:
            print(result.summary)
        if result.findings is not None:
            from raysweep.analysis.findings import format_findings

            print(f"\nFindings (the paper's claims; rules and every test in {out}/findings.json):")
            print(format_findings(result.findings))
        elif result.findings_error is not None:
            print(
                f"warning: the findings could not be computed ({result.findings_error}); retry "
                f"with raysweep findings {out}",
                file=sys.stderr,
            )
        for study_name, error in result.companion_errors.items():
            print(f"warning: companion study {study_name} failed: {error}", file=sys.stderr)
        if not args.eigen_only:
            print(f"\nDone in {result.seconds:.1f} s.")
        print_locations(out, config, [a for _, a in result.artifacts])
        if result.report is not None:
            print(f"  report:          {result.report}  (raysweep report {out})")
        elif result.report_error is not None:
            print(
                f"warning: the report could not be built ({result.report_error}); retry with "
                f"raysweep report {out}",
                file=sys.stderr,
            )
        return 0 if result.ok else 1

    return run_script(
        args,
        "eigen_sweep",
        study,
        extra_overrides=flag_overrides(args),
        check=check,
        env_vars=trial_env,
        argv=argv,
    )


__all__ = ["build_config", "describe_grid", "main", "parse_args", "resume_command"]

if __name__ == "__main__":
    raise SystemExit(main())
