"""The ``raysweep`` command (``[project.scripts] raysweep = "raysweep.cli:main"``).

Subcommands (one function each; add more with :func:`add_command`)::

    raysweep status SWEEP_DIR        trials by state and their latest metrics, while a sweep runs
    raysweep report RESULTS_DIR      figures (PNG, PDF) and one self-contained HTML page
    raysweep tensorboard RESULTS_DIR (re)write one TensorBoard run per target, print the command
    raysweep plan [--preset P] [OVERRIDES]  trials, artifacts and a cost estimate, before launch
    raysweep findings RESULTS_DIR    the paper's claims with statistics and verdicts

``status`` reads the metrics store (latest row of every target; a trial's state is ``error``
if any target errored, else ``running`` if any still trains, else ``diverged`` if any
diverged, else ``finished``), the plan (how many trials to expect) and, when present, Tune's
experiment state (``PENDING``/``RUNNING``/``TERMINATED``/``ERROR`` and failure counts).
It only reads files, so it is safe to run at any time, from any machine that sees the folder.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line on stderr, then exit status 2.

    ``error: argument --preset: invalid choice: 'x' (choose from ...); see PROG --help``
    instead of the usage block followed by the error. Subparsers inherit the class.
    """

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help for the options.\n")


def add_command(subparsers, name: str, run: Callable[[argparse.Namespace], int], **kwargs):
    """Register subcommand ``name``; ``run(args) -> exit code``. Returns its parser."""
    parser = subparsers.add_parser(name, **kwargs)
    parser.set_defaults(command_fn=run)
    COMMANDS[name] = run
    return parser


def run_status(args: argparse.Namespace) -> int:
    from raysweep.store import format_trial_states, scan_metrics, trial_states
    from raysweep.sweep import read_plan, tune_trial_states

    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(
            f"error: {sweep_dir} is not a directory; pass the sweep folder (the one with "
            "metrics/ and sweep_plan.json, e.g. results/eigen_sweep).",
            file=sys.stderr,
        )
        return 2
    from raysweep.eigen.progress import progress_lines

    for line in progress_lines(sweep_dir):
        print(line)
    plan = read_plan(sweep_dir)
    try:
        table, damaged = scan_metrics(sweep_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    states = trial_states(table)
    if plan is not None:
        targets = plan.get("num_targets")
        if targets is None:  # a plan written before grids: packs x optimizers x modes x artifacts
            targets = (
                sum(len(p) for p in plan["packs"])
                * len(plan["optimizers"])
                * len(plan["linearized"])
                * len(plan["artifacts"])
            )
        epochs = plan.get("axes", {}).get("train.epochs") or [plan["train"]["epochs"]]
        print(
            f"sweep {plan['sweep_id']!r} in {sweep_dir.resolve()}: {len(plan['trials'])} "
            f"trials, {targets} targets, {'/'.join(map(str, epochs))} epochs each"
        )
    else:
        print(f"{sweep_dir.resolve()}: no sweep_plan.json (not started by run_sweep?)")
    expected = len(plan["trials"]) if plan is not None else None
    text = format_trial_states(states, expected=expected)
    tune = None if args.no_tune else tune_trial_states(sweep_dir)
    if tune:
        by_id = {t["trial_id"]: t for t in tune}
        lines = text.splitlines()
        if len(lines) > 1:
            lines[1] += f" {'tune':>11} {'fails':>5}"
            for i, state in enumerate(states, start=2):
                t = by_id.get(state.trial_id)
                lines[i] += f" {t['status']:>11} {t['num_failures']:>5}" if t else f" {'-':>11}"
        text = "\n".join(lines)
        counts = Counter(t["status"] for t in tune)
        text += "\ntune: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        waiting = sorted(
            t["trial_id"] for t in tune if t["trial_id"] not in {s.trial_id for s in states}
        )
        if waiting:
            text += f"\n  no rows yet: {', '.join(waiting[:8])}" + (
                " ..." if len(waiting) > 8 else ""
            )
    for part in damaged:
        text += (
            f"\ndamaged part (not counted; its trial runs again on --resume): {part.path} "
            f"({part.reason})"
        )
    print(text)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from raysweep.report import build_report, watch_report

    try:
        if args.watch is not None:
            page = watch_report(args.results_dir, args.watch, out_dir=args.out)
        else:
            page = build_report(args.results_dir, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(page)
    return 0


def run_tensorboard(args: argparse.Namespace) -> int:
    from raysweep.sweep.tensorboard import write_tensorboard

    try:
        log_dir = write_tensorboard(args.results_dir, log_dir=args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"tensorboard --logdir {log_dir.resolve()}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    """The plan and cost estimate of a config, as the scripts' ``--dry-run`` prints it."""
    import shlex

    from raysweep.script import build_config
    from raysweep.sweep.cost import describe_plan, local_resources

    try:
        config = build_config(args)
        script = "nad_sweep" if config.is_nad else "eigen_sweep"
        words = ["python", f"sweeps/{script}.py"]
        if args.preset != ("nad" if config.is_nad else "smoke"):
            words += ["--preset", args.preset]
        for flag, value in (("--data-dir", args.data_dir), ("--out", args.out)):
            words += [flag, value] if value else []
        words += ["--smoke-test"] if args.smoke_test else []
        if args.cpus is not None:
            cpus, resources = args.cpus, f"{args.cpus:g} CPUs (--cpus)"
        else:
            cpus, resources = local_resources(None)
        if args.gpus is not None:
            resources += f" and {args.gpus:g} GPUs (--gpus)"
        out = Path(args.out) if args.out else Path(config.sweep.storage_path) / config.sweep.name
        text = describe_plan(
            config,
            cpus=cpus,
            gpus=args.gpus,
            resources=resources,
            results=out,
            launch=shlex.join([*words, *args.overrides]),
            title=f"preset {config.preset}, sweep {config.sweep.name} (nothing written, Ray "
            "not started)",
        )
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _add_plan_command(sub) -> None:
    from raysweep.config import PRESETS

    plan = add_command(
        sub,
        "plan",
        run_plan,
        help="the trials, targets, artifacts and a cost estimate, before launch",
        description="Print what a sweep would run (trials with their pack sizes, targets, "
        "the artifacts to compute with their N) and an estimate of its CPU/GPU-hours and "
        "wall-clock time, scaled from the measurements in README.md (listed in the output). "
        "Nothing is written and Ray is not started; the scripts' --dry-run prints the same.",
        epilog="Overrides: section.field=value (e.g. train.epochs=3); grid.section.field=v1,v2 "
        "makes a field a sweep axis (e.g. grid.train.seed=0,1,2).",
    )
    plan.add_argument(
        "overrides", nargs="*", help="config overrides: section.field=value, grid.section.field=a,b"
    )
    plan.add_argument(
        "--preset",
        default="digits",
        choices=sorted(PRESETS),
        help="the starting config (default: digits, the main job's)",
    )
    plan.add_argument("--data-dir", help="folder with the dataset archives (else $RAYSWEEP_DATA)")
    plan.add_argument(
        "--out",
        help="results folder; when it holds finished trials their measured times calibrate "
        "the training estimate (default: <sweep.storage_path>/<sweep.name>)",
    )
    plan.add_argument("--smoke-test", action="store_true", help="the --smoke-test config")
    plan.add_argument(
        "--cpus", type=float, help="CPUs of the cluster, for the wall-clock (default: this machine)"
    )
    plan.add_argument("--gpus", type=float, help="GPUs of the cluster, for the wall-clock")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="raysweep",
        description="Network-vs-linearization sweeps on NTK eigenfunctions (see README).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    status = add_command(
        sub,
        "status",
        run_status,
        help="trials by state and their latest metrics",
        description="Trials by state (from the metrics store and Tune's "
        "experiment state) and the latest metrics of every trial.",
    )
    status.add_argument(
        "sweep_dir", metavar="SWEEP_DIR", help="the sweep folder, e.g. results/eigen_sweep"
    )
    status.add_argument(
        "--no-tune", action="store_true", help="skip reading Tune's experiment state"
    )
    report = add_command(
        sub,
        "report",
        run_report,
        help="figures and an HTML page of a sweep's results",
        description="Write the figures (PNG and PDF) and one self-contained "
        "HTML page (images embedded; opens from disk) of a results folder; "
        "missing pieces are named on the page. Prints the page's path.",
    )
    report.add_argument(
        "results_dir", metavar="RESULTS_DIR", help="the results folder, e.g. results/eigen_sweep"
    )
    report.add_argument("--out", help="output folder (default: RESULTS_DIR/report)")
    report.add_argument(
        "--watch",
        nargs="?",
        const=30.0,
        type=float,
        metavar="SECONDS",
        help="rebuild every SECONDS (default 30) while the sweep runs; stops when it is "
        "complete or no driver holds the folder",
    )
    tensorboard = add_command(
        sub,
        "tensorboard",
        run_tensorboard,
        help="one TensorBoard run and HParams row per target",
        description="(Re)write the TensorBoard runs of a sweep from its metrics store: one "
        "run per target (per-epoch scalars, HParams: the target's axis values and final "
        "metrics), grouped by trial; replaces earlier runs. Prints the tensorboard command "
        "to run.",
    )
    tensorboard.add_argument(
        "results_dir", metavar="RESULTS_DIR", help="the sweep folder, e.g. results/eigen_sweep"
    )
    tensorboard.add_argument("--out", help="log folder (default: RESULTS_DIR/tensorboard)")
    findings = add_command(
        sub,
        "findings",
        run_findings,
        help="the paper's claims with statistics and verdicts, from a results folder",
        description="Test each claim of the paper on a results folder (the sweep's metrics, "
        "the binary baseline, energy concentration, alignment, binarization and, when given, "
        "a NAD sweep), print the table and write RESULTS_DIR/findings.json. The rules are "
        "fixed in raysweep.analysis.findings.",
    )
    findings.add_argument(
        "results_dir", metavar="RESULTS_DIR", help="the results folder, e.g. results/eigen_sweep"
    )
    findings.add_argument(
        "--nad", metavar="NAD_DIR", help="a NAD sweep's folder (default: RESULTS_DIR/nad)"
    )
    cifar_like = add_command(
        sub,
        "make-cifar-like",
        run_make_cifar_like,
        help="write synthetic images in the CIFAR-10 format, to rehearse a run",
        description="Write synthetic 32x32x3 images (smooth class-dependent random fields, "
        "whose NTK spectrum decays like real images') as DIR/cifar-10-batches-py in the real "
        "CIFAR-10 python format: the loader, the cifar10/cifar2 presets and a cluster run can "
        "then be rehearsed without the real archive (--data-dir DIR).",
    )
    cifar_like.add_argument("folder", metavar="DIR", help="where cifar-10-batches-py/ goes")
    cifar_like.add_argument(
        "--num-images",
        type=int,
        default=60_000,
        help="images in all (5/6 of them training; default 60,000 as CIFAR-10)",
    )
    cifar_like.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    cifar_like.add_argument(
        "--force", action="store_true", help="overwrite an existing cifar-10-batches-py/"
    )
    _add_plan_command(sub)
    return parser


def run_make_cifar_like(args: argparse.Namespace) -> int:
    from raysweep.data.synthetic import write_cifar_like

    try:
        out = write_cifar_like(
            args.folder, args.num_images, seed=args.seed, force=args.force, log=print
        )
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.num_images:,} synthetic images to {out}; use them with --data-dir "
        f"{args.folder} (e.g. python sweeps/eigen_sweep.py --preset cifar10 --data-dir "
        f"{args.folder} grid.model.name=mlp)"
    )
    return 0


def run_findings(args: argparse.Namespace) -> int:
    from raysweep.analysis.findings import findings_for, format_findings, save_findings

    results = Path(args.results_dir)
    if not results.is_dir():
        print(
            f"error: {results} is not a directory; pass the results folder of the main job "
            "(e.g. results/eigen_sweep).",
            file=sys.stderr,
        )
        return 2
    if args.nad is not None and not (Path(args.nad) / "metrics").is_dir():
        print(f"error: --nad {args.nad} holds no metrics/ folder of a NAD sweep.", file=sys.stderr)
        return 2
    found = findings_for(results, args.nad)
    path = save_findings(results, found)
    print(format_findings(found))
    print(f"\nwritten: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command_fn", None) is None:
        parser.print_help()
        return 2
    return args.command_fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
