"""The one shape of every script in ``sweeps/``: a shared parser, the config, the study.

Every experiment is a config (a preset, ``--smoke-test`` and ``section.field=value`` /
``grid.section.field=v1,v2`` overrides; saved with its results), a study function in the
library that takes ``(config, out)``, and a thin script that joins the two::

    from raysweep.script import run_script, script_parser

    def main(argv=None) -> int:
        ap = script_parser("python sweeps/my_study.py", "What it computes.", default_preset="smoke")
        args = ap.parse_args(argv)
        return run_script(args, "my_study", lambda config, out: my_study(config, out))

Shared flags (:func:`script_parser`): ``--preset``, ``--data-dir``, ``--out``, ``--address``,
``--smoke-test``, ``--quiet``, ``--dry-run`` (the plan and cost estimate only:
:mod:`raysweep.sweep.cost`) and the overrides. :func:`run_script` resolves the config (one
smoke shrink for every script: :func:`raysweep.config.smoke_config`), refuses bad input
before any work (one ``error: ...`` line, exit status 2), holds the results folder (one
driver per folder, :mod:`raysweep.lease`), joins or starts Ray and runs the study; Ctrl-C
keeps what was written and says how to finish it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from raysweep.cli import ArgumentParser
from raysweep.config import (
    PRESETS,
    Config,
    apply_overrides,
    get_preset,
    resolve_paths,
    smoke_config,
)
from raysweep.data.paths import data_dir_overrides

__all__ = [
    "SHARED_FLAGS",
    "build_config",
    "indices_or_default",
    "parse_indices",
    "results_dir",
    "run_script",
    "script_parser",
]

SHARED_FLAGS = (
    "--preset",
    "--data-dir",
    "--out",
    "--address",
    "--smoke-test",
    "--quiet",
    "--dry-run",
)
"""The flags every script takes (tested through each script's ``--help``)."""

ADDRESS_HELP = (
    "Ray cluster to join: host:port, ray://host:10001, 'auto' (a running ray start cluster) or "
    "'local' (always a new local one). Default: $RAY_ADDRESS, else a cluster started with ray "
    "start on this machine, else a new local cluster"
)


def script_parser(
    prog: str, description: str, *, examples: str = "", default_preset: str = "smoke"
) -> argparse.ArgumentParser:
    """The parser with the shared flags; add a script's own flags to it."""
    epilog = (
        "Overrides: section.field=value (e.g. train.epochs=3 sweep.eigen_indices=0,4,9); "
        "grid.section.field=v1,v2 makes any field a sweep axis (e.g. grid.train.seed=0,1,2). "
        "Progress while it runs: raysweep status <results folder>."
    )
    if examples:
        epilog = f"{examples.rstrip()}\n\n{epilog}"
    ap = ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog,
    )
    ap.add_argument(
        "overrides", nargs="*", help="config overrides: section.field=value, grid.section.field=a,b"
    )
    ap.add_argument(
        "--preset",
        default=default_preset,
        choices=sorted(PRESETS),
        help=f"the starting config (default: {default_preset})",
    )
    ap.add_argument("--data-dir", help="folder with the dataset archives (else $RAYSWEEP_DATA)")
    ap.add_argument("--out", help="results folder (default: <sweep.storage_path>/<sweep.name>)")
    ap.add_argument("--address", help=ADDRESS_HELP)
    ap.add_argument(
        "--smoke-test",
        action="store_true",
        help="tiny run of the same code paths, for CI (raysweep.config.smoke_config)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bars or per-trial lines")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and cost estimate, then exit; nothing is written and Ray is not "
        "started (raysweep plan prints the same)",
    )
    return ap


def add_tune_flags(ap: argparse.ArgumentParser) -> None:
    """``--resume``, ``--cpus-per-trial`` and ``--gpus-per-trial``: the flags of a script whose
    study runs a Tune sweep (:func:`raysweep.sweep.run_sweep`)."""
    ap.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted sweep in the same folder (same config)",
    )
    ap.add_argument(
        "--cpus-per-trial", type=float, help="CPUs per Tune trial (sweep.cpus_per_trial)"
    )
    ap.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per Tune trial, fractions allowed (sweep.gpus_per_trial)",
    )


def tune_overrides(args: argparse.Namespace) -> list[str]:
    """:func:`add_tune_flags`' resources as config overrides (none when not given)."""
    out = []
    if args.cpus_per_trial is not None:
        out.append(f"sweep.cpus_per_trial={args.cpus_per_trial}")
    if args.gpus_per_trial is not None:
        out.append(f"sweep.gpus_per_trial={args.gpus_per_trial}")
    return out


def trial_env(config: Config) -> dict[str, str]:
    """The JAX memory settings of the trials' GPU share, for Ray's worker processes."""
    from raysweep.distributed.cluster import gpu_memory_env

    return gpu_memory_env(config.sweep.gpus_per_trial)


def build_config(args: argparse.Namespace, extra_overrides: Sequence[str] = ()) -> Config:
    """The preset, shrunk by ``--smoke-test``, with ``--data-dir``, ``extra_overrides`` (a
    script's own flags as overrides) and the command line's overrides, in that order."""
    config = get_preset(args.preset)
    if args.smoke_test:
        config = smoke_config(config)
    overrides = [*data_dir_overrides(args.data_dir), *extra_overrides, *args.overrides]
    return resolve_paths(apply_overrides(config, overrides))


def results_dir(args: argparse.Namespace, config: Config) -> Path:
    """``--out``, else ``<sweep.storage_path>/<sweep.name>`` (checked: a local path)."""
    from raysweep.distributed.cluster import check_results_dir

    if args.out is not None:
        return check_results_dir(args.out)
    return check_results_dir(config.sweep.storage_path) / config.sweep.name


def resume_command(
    prog: str, argv: Sequence[str] | None, out: Path, *, resume_flag: bool = True
) -> str:
    """The command line that finishes this run: its own options with ``--resume --out OUT``
    (``resume_flag=False``, a script without ``--resume`` that continues on its own when run
    again: ``--out OUT`` only)."""
    kept, args = [], iter(sys.argv[1:] if argv is None else argv)
    for arg in args:
        if arg == "--out":
            next(args, None)
        elif arg != "--resume" and not arg.startswith("--out="):
            kept.append(arg)
    flags = ["--resume", "--out", str(out)] if resume_flag else ["--out", str(out)]
    return shlex.join([*shlex.split(prog), *flags, *kept])


_INPUT_ERRORS = (ValueError, TypeError, OSError, ImportError)


def run_script(
    args: argparse.Namespace,
    name: str,
    study: Callable[[Config, Path], Any],
    *,
    extra_overrides: Sequence[str] = (),
    check: Callable[[Config], Any] | None = None,
    needs_ray: bool = True,
    env_vars: Callable[[Config], dict[str, str]] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Resolve the config and folder, check the input, hold the folder, join Ray, run the study.

    Args:
      args: parsed by a :func:`script_parser` parser.
      name: the script's name (``sweeps/<name>.py``), for messages and the folder's lease.
      study: ``study(config, out)``; its return value is the exit status when it is an int
        (else 0). A ``ValueError`` it raises is printed as one line (exit status 2).
      extra_overrides: the script's own flags, as ``section.field=value``.
      check: ``check(config)``, run before the folder is touched or Ray starts (e.g. load the
        datasets): bad input stops here and nothing is written.
      needs_ray: join or start Ray (:func:`raysweep.distributed.cluster.connect_or_start`)
        before the study (before JAX starts its threads in this process).
      env_vars: ``env_vars(config)``: environment for Ray's worker processes (e.g. the JAX
        memory settings of the trials' GPU share).
      argv: the command line, for the resume hint after Ctrl-C (default ``sys.argv[1:]``).
    """
    # The driver shares a device with the Gram workers and trials on one machine: JAX in this
    # process must not preallocate most of it (set before JAX starts).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        config = build_config(args, extra_overrides)
        if getattr(args, "dry_run", False):  # before the folder, the check, the lease and Ray
            print(_dry_run_plan(args, name, config, argv))
            return 0
        out = results_dir(args, config)
        ray_env = env_vars(config) if env_vars is not None else None
        if check is not None:
            check(config)
    except _INPUT_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from raysweep.lease import ResultsDirBusy, hold_results_dir

    prog = f"python sweeps/{name}.py"
    try:  # one driver per results folder, from the first step to the last
        with hold_results_dir(out, purpose=prog):
            return _run(args, name, study, config, out, needs_ray=needs_ray, env=ray_env)
    except ResultsDirBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what was written is kept
        print(
            f"\ninterrupted: the results so far are kept in {out}; finish them with: "
            f"{resume_command(prog, argv, out, resume_flag=hasattr(args, 'resume'))}",
            file=sys.stderr,
        )
        return 130


def _dry_run_plan(
    args: argparse.Namespace, name: str, config: Config, argv: Sequence[str] | None
) -> str:
    """What ``--dry-run`` prints: :func:`raysweep.sweep.cost.describe_plan` of the config,
    with this machine's CPUs when the run would start a local Ray cluster and the command
    line without ``--dry-run``."""
    from raysweep.sweep.cost import describe_plan, local_resources

    cpus, resources = local_resources(args.address)
    given = list(sys.argv[1:] if argv is None else argv)
    launch = shlex.join(["python", f"sweeps/{name}.py", *(a for a in given if a != "--dry-run")])
    out = Path(args.out) if args.out else Path(config.sweep.storage_path) / config.sweep.name
    text = describe_plan(
        config,
        cpus=cpus,
        resources=resources,
        results=out,
        launch=launch,
        title=f"python sweeps/{name}.py --dry-run: preset {config.preset}, sweep "
        f"{config.sweep.name} (nothing written, Ray not started)",
    )
    if name not in ("eigen_sweep", "nad_sweep"):
        text += (
            f"\nnote: {name} runs its own study on this config; the trials and targets above "
            "are the config's sweep grid."
        )
    return text


def _run(args, name: str, study, config: Config, out: Path, *, needs_ray: bool, env) -> int:
    print(f"raysweep {name}: preset {config.preset}, results in {out}")
    if needs_ray:
        from raysweep.distributed.cluster import check_shared_dir, connect_or_start

        try:
            connect_or_start(args.address, env_vars=env)
            check_shared_dir(out)
        except (ValueError, ConnectionError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        status = study(config, out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def parse_indices(text: str) -> list[int]:
    """``"0,4,9"`` → ``[0, 4, 9]`` (an argparse ``type``)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated eigen-indices such as 0,4,9, got {text!r}"
        ) from err
    if not values:
        raise argparse.ArgumentTypeError("expected at least one eigen-index, e.g. 0,4,9")
    return values


def indices_or_default(values: Sequence[int] | None, default: Sequence[int]) -> list[int]:
    return list(values) if values else list(default)
