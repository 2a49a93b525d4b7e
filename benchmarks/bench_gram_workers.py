"""Distributed Gram scaling: 1 vs 2 (or more) Gram workers against single-process ntk_gram.

Computes the empirical NTK Gram of the paper's MLP (``raysweep.models`` ``"mlp"``, 100-100-1,
ReLU, 317,501 parameters) on N random CIFAR-shaped inputs ``(N, 32, 32, 3)`` float32::

    python benchmarks/bench_gram_workers.py [--n 2000] [--tile-size 500] [--workers 1 2]

For each worker count, in the same run and on the same local Ray cluster, it times one
:func:`raysweep.distributed.compute_gram` into a fresh tile store (wall clock of the whole
call: actor start, one JIT compile per actor, tiles, atomic writes) and reads the per-worker
``compute_seconds`` (computing + writing tiles, JIT included) from
``DistributedGram.worker_info``; "tile phase" is the largest of them. The baseline is
:func:`raysweep.ntk.ntk_gram` in this process with ``batch_size = tile size`` (``cold``
includes its JIT compile, ``warm`` is a second call). It prints a table and one JSON line, and
checks that every distributed result equals the single-process one (max abs difference).

On a machine with C cores, W CPU workers can at best be about min(W, C) times faster in the
tile phase; actor start-up and compilation are per-worker fixed costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np

from raysweep.distributed import compute_gram, ensure_ray
from raysweep.models import get_model, init_variables, make_apply_fn
from raysweep.ntk import ntk_gram


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="number of inputs N")
    ap.add_argument("--tile-size", type=int, default=500, help="examples per tile side")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs (default: all)")
    args = ap.parse_args(argv)

    start = time.perf_counter()  # before any JAX work: Ray forks helper processes
    ensure_ray(num_cpus=args.num_cpus, include_dashboard=False)
    ray_start = time.perf_counter() - start

    module = get_model("mlp")
    variables = init_variables(module, (32, 32, 3), seed=args.seed)
    apply_fn, params = make_apply_fn(module, variables), variables["params"]
    x = np.random.default_rng(args.seed).standard_normal((args.n, 32, 32, 3)).astype(np.float32)
    nb = -(-args.n // args.tile_size)
    tiles = nb * (nb + 1) // 2

    start = time.perf_counter()
    reference = ntk_gram(apply_fn, params, x, batch_size=args.tile_size)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    ntk_gram(apply_fn, params, x, batch_size=args.tile_size)
    warm = time.perf_counter() - start

    runs = []
    for workers in args.workers:
        store = tempfile.mkdtemp(prefix=f"bench_gram_w{workers}_")
        try:
            start = time.perf_counter()
            gram = compute_gram(
                apply_fn,
                params,
                x,
                store_dir=os.path.join(store, "gram"),
                tile_size=args.tile_size,
                num_workers=workers,
                model_id="mlp",
                progress=False,
            )
            seconds = time.perf_counter() - start
            with gram:
                compute = [info["compute_seconds"] for info in gram.worker_info()]
                diff = float(np.max(np.abs(gram.to_numpy() - reference)))
                method = gram.method
        finally:
            shutil.rmtree(store, ignore_errors=True)
        runs.append(
            {
                "workers": workers,
                "seconds": seconds,
                "tiles_per_s": tiles / seconds,
                "max_worker_compute_s": max(compute),
                "sum_worker_compute_s": sum(compute),
                "max_abs_diff_vs_ntk_gram": diff,
            }
        )

    base = runs[0]
    print(f"MLP Gram, N={args.n}, tile {args.tile_size} ({tiles} tiles), method {method}")
    print(f"single-process ntk_gram: cold {cold:.2f} s, warm {warm:.2f} s")
    print(f"ray start: {ray_start:.1f} s (not included below)")
    print(f"{'workers':>7} {'seconds':>8} {'tiles/s':>8} {'speedup':>8} {'tile-phase':>10} "
          f"{'speedup':>8} {'max|diff|':>10}")  # fmt: skip
    for run in runs:
        print(
            f"{run['workers']:>7} {run['seconds']:>8.2f} {run['tiles_per_s']:>8.2f} "
            f"{base['seconds'] / run['seconds']:>8.2f} {run['max_worker_compute_s']:>10.2f} "
            f"{base['max_worker_compute_s'] / run['max_worker_compute_s']:>8.2f} "
            f"{run['max_abs_diff_vs_ntk_gram']:>10.2e}"
        )
    summary = {
        "model": "mlp",
        "n": args.n,
        "tile_size": args.tile_size,
        "tiles": tiles,
        "method": method,
        "ntk_gram_cold_s": cold,
        "ntk_gram_warm_s": warm,
        "cpu_count": os.cpu_count(),
        "runs": runs,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
