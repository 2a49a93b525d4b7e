"""Command-line plumbing shared by the kernel-evolution scripts in ``sweeps/``.

Every script takes the eigen sweep's options (``--preset``, ``--data-dir``, ``--out``,
``section.field=value`` overrides, ``--smoke-test``, ``--quiet``) so that, run with the same
ones, it writes into the same results folder as ``sweeps/eigen_sweep.py`` (default
``results/eigen_sweep``) and the report picks its output up.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from raysweep.config import PRESETS, Config, NTKConfig, apply_overrides, get_preset
from raysweep.data.paths import data_dir_overrides

SMOKE_TRAIN = 200
SMOKE_TEST = 100


def base_parser(description: str, example: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Overrides: section.field=value, e.g. train.epochs=3. Example: {example}",
    )
    ap.add_argument("overrides", nargs="*", help="config overrides, section.field=value")
    ap.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    ap.add_argument("--data-dir", help="folder with the dataset archives (else $RAYSWEEP_DATA)")
    ap.add_argument("--out", help="results folder (default: <storage_path>/<sweep name>)")
    ap.add_argument(
        "--address",
        help="Ray cluster to join: host:port, ray://host:10001, 'auto' or 'local' (always a new "
        "local one). Default: $RAY_ADDRESS, else a cluster started with ray start on this "
        "machine, else a new local cluster",
    )
    ap.add_argument("--smoke-test", action="store_true", help="tiny run for CI")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def build_config(args: argparse.Namespace, smoke: Callable[[Config], Config] | None = None):
    """The preset with ``--smoke-test`` shrinking (``smoke(config)``) and the overrides."""
    config = get_preset(args.preset)
    overrides = list(args.overrides)
    overrides += data_dir_overrides(args.data_dir)
    if args.smoke_test:
        # The same sizes as `eigen_sweep.py --smoke-test`, so both share one artifact.
        config = dataclasses.replace(
            config,
            data=dataclasses.replace(config.data, num_train=SMOKE_TRAIN, num_test=SMOKE_TEST),
            train=dataclasses.replace(config.train, epochs=2),
            ntk=NTKConfig(num_eigen=16, tile_size=128),
            sweep=dataclasses.replace(
                config.sweep, eigen_indices=(0, 3, 15), pack_size=8, name="smoke_test"
            ),
        )
        if smoke is not None:
            config = smoke(config)
    return apply_overrides(config, overrides)


def run_script(
    args: argparse.Namespace,
    name: str,
    study: Callable[[Config, Path], object],
    *,
    smoke: Callable[[Config], Config] | None = None,
    needs_ray: bool = True,
) -> int:
    """Resolve config and folder, connect to Ray if needed, run ``study(config, out)``.

    Bad configuration and bad input (``ValueError``) print ``error: …`` and return 2.
    """
    try:
        config = build_config(args, smoke)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from raysweep.distributed.cluster import check_results_dir

    try:
        if args.out:
            out = check_results_dir(args.out)
        else:
            out = check_results_dir(config.sweep.storage_path) / config.sweep.name
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from raysweep.lease import ResultsDirBusy, hold_results_dir

    try:  # one driver per results folder
        with hold_results_dir(out, purpose=f"python sweeps/{name}.py"):
            return _run_study(name, study, config, out, args, needs_ray=needs_ray)
    except ResultsDirBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run_study(name: str, study, config, out, args, *, needs_ray: bool) -> int:
    from raysweep.distributed.cluster import check_shared_dir, connect_or_start

    print(f"raysweep {name}: preset {config.preset}, results in {out}")
    # Training runs in this process next to the Gram workers: grow GPU memory on demand.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if needs_ray:
        try:
            connect_or_start(args.address)  # before JAX starts its threads
            check_shared_dir(out)
        except (ValueError, ConnectionError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        study(config, out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Figures and tables: raysweep report {out}")
    return 0


def parse_indices(text: str) -> list[int]:
    """``"0,4,9"`` → ``[0, 4, 9]`` (argparse type)."""
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
