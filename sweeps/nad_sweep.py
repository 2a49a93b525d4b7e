"""Neural anisotropy directions of LeNet and ResNet18 (GeLU), then training on D(u_j).

    python sweeps/nad_sweep.py                   # small default: LeNet, minutes on a CPU
    python sweeps/nad_sweep.py --paper           # the paper's sizes (LeNet + ResNet18; a GPU)
    python sweeps/nad_sweep.py --smoke-test      # what CI runs (< 1 min)
    python sweeps/nad_sweep.py --models lenet5,resnet18 --resnet-width 8 --indices 0,1,5
    raysweep status results/nad_sweep            # while it runs, from a 2nd shell
    python sweeps/nad_sweep.py --paper --address auto --gpus-per-trial 0.25 --out /mnt/efs/nad

Ray (Tune backend only): joins a running cluster — ``--address``, else ``$RAY_ADDRESS``, else a
``ray start`` cluster on this machine — or starts a local one, and prints which; the trials' JAX
memory settings follow ``--gpus-per-trial``. On a multi-node cluster ``--out`` must be on
storage every node mounts at the same path (checked before any work; ``s3://`` is refused).

Steps (Appendix C of the paper):
1. For each model: initialize it with GeLU activations for a 32x32x1 input and compute its top-k
   NADs, the right singular vectors of ∇²_{x,θ} f(0) (:func:`raysweep.nads.nads`, matrix-free).
   Saved to ``nads/<model>.npz``; figure ``figures/nads_<model>.png`` (the first 10 NADs in
   space and as Fourier magnitude, :func:`raysweep.analysis.plot_nads`).
2. For each NAD index j: the linearly separable dataset D(u_j), x = ε·y·u_j + w with
   w ~ N(0, σ(I − u_j u_jᵀ)), ε = σ = 1 (:func:`raysweep.nads.nad_dataset`); train the network
   and its linearization on it — one Ray Tune trial per (model, j, optimizer, mode) through
   :func:`raysweep.nads.sweep.run_nad_sweep` (the eigen sweep's store, trial ids, progress
   lines and compile cache; ``--backend local`` runs the same trials without Ray).
3. Print final test accuracy by NAD index (network vs linearized) and save
   ``figures/accuracy_vs_nad_index.png`` (:func:`raysweep.analysis.plot_accuracy_vs_index`).

Presets (``--paper`` sizes are our reading of the paper: 10,000 train and test samples, the
paper's training scheme — SGD, momentum 0.9, lr 0.05 decayed linearly, batch 128, 100 epochs —
both models at full width; the NAD indices are our choice):

    default     LeNet5; k=10; indices 0,1,2,4,9; 1000/1000 samples; 3 epochs (~3-5 min, 2 cores)
    --paper     LeNet5 + ResNet18 (width 64); k=32; 9 indices up to 31; 10000/10000; 100 epochs
    --smoke     LeNet5 on 16x16x1; k=3; indices 0,2; 256/256 samples; 1 epoch; local backend

Output under ``--out`` (default ``results/nad_sweep``): ``nads/``, ``metrics/`` (one Parquet
part per trial, :func:`raysweep.store.read_metrics`), ``tune/``, ``figures/``,
``analysis/nads.npz`` (the first model's NADs, for ``raysweep report``). Running again with the
same ``--out`` skips every trial whose part file is complete (same trial id and epochs); use a
new ``--out`` after changing the data sizes or the seed.

Timings on a busy 2-core CPU: LeNet5 NADs (k=10, 32x32x1) ~9 s by ``svds`` (175 products);
ResNet18 at width 8 ~90 s; each default trial 30-50 s; the whole default ~5 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

# On one machine the driver shares a GPU with the trials: no preallocation in it (before JAX).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

from raysweep.atomic import atomic_write  # noqa: E402
from raysweep.config import TrainConfig  # noqa: E402

PRESETS = {
    "default": {
        "models": ("lenet5",),
        "k": 10,
        "indices": (0, 1, 2, 4, 9),
        "size": 32,
        "num_train": 1000,
        "num_test": 1000,
        "epochs": 3,
        "backend": "tune",
    },
    "paper": {
        "models": ("lenet5", "resnet18"),
        "k": 32,
        "indices": (0, 1, 2, 3, 5, 8, 13, 21, 31),
        "size": 32,
        "num_train": 10000,
        "num_test": 10000,
        "epochs": 100,
        "backend": "tune",
    },
    "smoke": {
        "models": ("lenet5",),
        "k": 3,
        "indices": (0, 2),
        "size": 16,
        "num_train": 256,
        "num_test": 256,
        "epochs": 1,
        "backend": "local",
    },
}


def _silent(*args, **kwargs) -> None:
    """The progress log of ``--quiet``: drops every line."""


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="NADs of GeLU LeNet/ResNet18 and network-vs-linearization training on the "
        "linearly separable data D(u_j) of each NAD (Ray Tune).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--paper", action="store_true", help="the paper's sizes (needs a GPU)")
    group.add_argument("--smoke-test", action="store_true", help="tiny run for CI (< 1 min)")
    group.add_argument(
        "--preset", choices=sorted(PRESETS), help="sizes: default, paper (= --paper), smoke"
    )
    ap.add_argument(
        "--data-dir",
        help="accepted like every script's; this experiment reads no files (it generates D(u))",
    )
    ap.add_argument("--quiet", action="store_true", help="no per-trial progress lines")
    ap.add_argument("--out", help="results folder (default results/nad_sweep or .../smoke_test)")
    ap.add_argument("--models", help="comma-separated: lenet5, resnet18")
    ap.add_argument("--k", type=int, help="NADs to compute per model")
    ap.add_argument("--indices", type=_ints, help="NAD indices to train on, e.g. 0,1,5")
    ap.add_argument("--size", type=int, help="input height = width (channels: 1)")
    ap.add_argument("--num-train", type=int)
    ap.add_argument("--num-test", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--optimizers", default="sgd", help="comma-separated: sgd, adam")
    ap.add_argument("--resnet-width", type=int, default=64, help="ResNet18 base width")
    ap.add_argument("--seed", type=int, default=0, help="model init, data and order seed")
    ap.add_argument("--backend", choices=("tune", "local"), help="trials on Ray Tune or here")
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    ap.add_argument("--gpus-per-trial", type=float, default=0.0)
    ap.add_argument(
        "--address",
        help="Ray cluster to join (Tune backend): host:port, ray://host:10001, 'auto' or "
        "'local'. Default: $RAY_ADDRESS, else a ray start cluster on this machine, else local",
    )
    return ap.parse_args(argv)


def resolve(args) -> dict:
    name = args.preset or ("paper" if args.paper else "smoke" if args.smoke_test else "default")
    opts = dict(PRESETS[name], preset=name)
    for key in ("k", "indices", "size", "num_train", "num_test", "epochs", "backend"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    if args.models:
        opts["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if max(opts["indices"]) >= opts["k"]:
        raise ValueError(
            f"NAD indices {opts['indices']} need k > {max(opts['indices'])}, "
            f"got k={opts['k']}; raise --k or lower --indices."
        )
    from raysweep.distributed.cluster import check_results_dir

    default_out = "results/smoke_test_nad" if name == "smoke" else "results/nad_sweep"
    opts["out"] = check_results_dir(args.out or default_out)
    opts["optimizers"] = tuple(o.strip() for o in args.optimizers.split(",") if o.strip())
    return opts


def compute_nads(model: str, opts: dict, args, out: Path):
    """Initialize ``model`` (GeLU) and compute its NADs at the origin; save npz and figure."""
    from raysweep.analysis import plot_nads
    from raysweep.models import count_params, create_model
    from raysweep.nads import nads
    from raysweep.nads.sweep import nad_payload

    shape = (opts["size"], opts["size"], 1)
    kwargs = {"width": args.resnet_width} if model == "resnet18" else {}
    t0 = time.perf_counter()
    module, variables, apply_fn = create_model(
        model, shape, seed=args.seed, activation="gelu", **kwargs
    )
    t1 = time.perf_counter()
    result = nads(apply_fn, variables["params"], shape, opts["k"], activation="gelu")
    t2 = time.perf_counter()
    (out / "nads").mkdir(parents=True, exist_ok=True)
    np.savez(
        out / "nads" / f"{model}.npz",
        eigvals=result.eigvals,
        directions=result.directions,
        input_shape=np.asarray(shape),
        residuals=result.residuals,
        method=result.method,
        seconds=t2 - t1,
    )
    fig = plot_nads(result.eigvals, result.directions, shape, num=min(10, opts["k"]))
    (out / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write(
        out / "figures" / f"nads_{model}.png", lambda fh: fig.savefig(fh, format="png", dpi=120)
    )
    rel = float(np.max(result.residuals) / result.eigvals[0])
    print(
        f"  {model}: P={count_params(variables['params']):,}, d={int(np.prod(shape))}, "
        f"k={opts['k']} NADs by {result.method} in {t2 - t1:.1f} s ({result.products} "
        f"products; init {t1 - t0:.1f} s); σ²: {np.array2string(result.eigvals[:5], precision=4)}"
        f"{' ...' if opts['k'] > 5 else ''}; max residual/σ₁² {rel:.1e}"
    )
    return result, nad_payload(
        model, variables, result.directions, shape, activation="gelu", model_kwargs=kwargs
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        opts = resolve(args)
        train = TrainConfig(epochs=opts["epochs"], seed=args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from raysweep.lease import ResultsDirBusy, hold_results_dir

    try:  # one driver per results folder
        with hold_results_dir(opts["out"], purpose="python sweeps/nad_sweep.py"):
            return run(args, opts, train)
    except ResultsDirBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args, opts: dict, train: TrainConfig) -> int:
    """The NAD experiment in ``opts["out"]``, whose lease this process holds."""
    out = opts["out"]
    start = time.perf_counter()
    print(f"raysweep nad_sweep: preset {opts['preset']}, results in {out}")
    if opts["backend"] == "tune":
        from raysweep.distributed.cluster import (
            check_shared_dir,
            connect_or_start,
            gpu_memory_env,
        )

        try:  # before JAX starts its threads in this process: Ray forks its processes
            connect_or_start(args.address, env_vars=gpu_memory_env(args.gpus_per_trial))
            check_shared_dir(out)
        except (ValueError, ConnectionError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(f"1. NADs at the origin ({opts['size']}x{opts['size']}x1, GeLU):")
    payloads, results = {}, {}
    for model in opts["models"]:
        results[model], payloads[model] = compute_nads(model, opts, args, out)

    from raysweep.analysis import plot_accuracy_vs_index, save_nads
    from raysweep.nads.sweep import run_nad_sweep
    from raysweep.store import format_accuracy

    first = results[opts["models"][0]]
    save_nads(out, first.eigvals, first.directions, first.input_shape)
    data = {
        "num_train": opts["num_train"],
        "num_test": opts["num_test"],
        "epsilon": 1.0,
        "sigma": 1.0,
        "seed": args.seed,
    }
    print(
        f"2. training on D(u_j) for j in {list(opts['indices'])}: {opts['num_train']} train / "
        f"{opts['num_test']} test samples, {dataclasses.asdict(train)['epochs']} epochs"
    )
    try:
        table = run_nad_sweep(
            payloads,
            out,
            indices=opts["indices"],
            train=train,
            data=data,
            optimizers=opts["optimizers"],
            backend=opts["backend"],
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            sweep_id=f"nad_{opts['preset']}",
            **({"log": _silent} if args.quiet else {}),
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_accuracy(table))
    for optimizer in opts["optimizers"]:
        fig = plot_accuracy_vs_index(table, optimizer=optimizer)
        fig.suptitle("Final test accuracy on D(u_j), the linearly separable data of NAD j")
        for ax in fig.axes:
            ax.set_xlabel("NAD index j")
        suffix = "" if len(opts["optimizers"]) == 1 else f"_{optimizer}"
        path = out / "figures" / f"accuracy_vs_nad_index{suffix}.png"
        atomic_write(path, lambda fh, fig=fig: fig.savefig(fh, format="png", dpi=120))
    print(
        f"3. figures in {out / 'figures'}; metrics in {out / 'metrics'}. "
        f"Done in {time.perf_counter() - start:.1f} s."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
