"""neural-tangents 0.6.5 baseline timing of a full empirical-NTK Gram on the paper models.

Runs ONLY in the pinned oracle environment (jax 0.4.23 + neural-tangents 0.6.5, see
tools/README.md); the project benchmark calls it as a subprocess::

    /work/nt-venv/bin/python benchmarks/nt_baseline.py --model {mlp,lenet,resnet18,mlp10,lenet10} \
        --n N --implementation {1,2,3} [--layout {full,traced}] [--repeats 3] [--batch-size B]

Models are the pure-JAX ``paper_mlp`` / ``paper_lenet`` / ``paper_resnet18`` from
tools/nt_models.py (the project can run the very same functions), params from
``init_fn(jax.random.PRNGKey(seed), (32, 32, 3))`` (identical arrays in both JAX versions),
inputs ``numpy.random.default_rng(seed).standard_normal((n, 32, 32, 3))`` float32.

Computes the (n, n) Gram Θ = J Jᵀ with
``nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=k)(x, None, params)``
(``--layout traced``: ``trace_axes=(-1,)``; for the 10-logit ``paper_mlp10`` /
``paper_lenet10`` that is the traced ``(n, n)`` kernel, ``full`` gives ``(n, n, 10, 10)``)

* without ``--batch-size`` (default): under ``jax.jit``; ``compile_seconds`` is the
  ``lower(...).compile()`` time, then ``--warmup`` untimed runs (default 1, as the project
  benchmark's first call), ``seconds`` the best steady-state run of ``--repeats``
  (``block_until_ready``);
* with ``--batch-size B`` (n must be divisible by B): through ``nt.batch(kernel_fn, B)``
  (the paper's path; nt jits each block internally), ``first_call_seconds`` is the first
  call, ``seconds`` the best of ``--repeats`` later calls, ``compile_seconds`` their
  difference (an estimate).

Always prints exactly ONE JSON line on stdout::

    {"model", "n", "implementation", "seconds", "compile_seconds", "peak_rss_mb", "params",
     "jax", "nt", ...}

``peak_rss_mb`` is the process peak (ru_maxrss) and includes ~0.5 GB from importing
neural_tangents (it imports tensorflow through tf2jax); ``import_rss_mb`` is the peak right
after imports. On failure (e.g. XLA RESOURCE_EXHAUSTED) the line has an ``"error"`` key and
the exit status is 1. An OS OOM kill (SIGKILL) cannot be reported; callers should treat a
missing JSON line / negative return code as OOM.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# the case names and layouts of bench_ntk.py (its module imports only the standard library)
from bench_ntk import LAYOUTS, MODEL_NAMES  # noqa: E402

INPUT_SHAPE = (32, 32, 3)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="neural-tangents empirical NTK Gram baseline")
    ap.add_argument("--model", required=True, choices=sorted(MODEL_NAMES))
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--implementation", type=int, default=1, choices=(1, 2, 3))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=0, help="0: no nt.batch (default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        default="full",
        help="trace_axes=(-1,) (traced) or () (full; for one logit the (n, n, 1, 1) Gram)",
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs after compiling")
    ap.add_argument(
        "--max-repeat-seconds",
        type=float,
        default=60.0,
        help="stop repeating once one timed run took longer than this",
    )
    args = ap.parse_args(argv)

    rec = {
        "model": args.model,
        "n": args.n,
        "implementation": args.implementation,
        "batch_size": args.batch_size or None,
        "repeats": args.repeats,
    }
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
        import jax
        import neural_tangents as nt
        import nt_models
        import numpy as np

        rec.update(
            jax=jax.__version__,
            nt=nt.__version__,
            backend=jax.default_backend(),
            device=str(jax.devices()[0]),
        )
        rec["import_rss_mb"] = round(rss_mb(), 1)

        m = nt_models.MODELS[MODEL_NAMES[args.model]]
        params = m.init_fn(jax.random.PRNGKey(args.seed), INPUT_SHAPE)
        state = m.init_state(jax.random.PRNGKey(args.seed + 1000), INPUT_SHAPE)
        apply_fn = m.make_apply_fn(state)
        rec["params"] = nt_models.count_params(params)
        x = np.random.default_rng(args.seed).standard_normal((args.n,) + INPUT_SHAPE)
        x = jax.device_put(x.astype(np.float32))

        kfn = nt.empirical_ntk_fn(
            apply_fn,
            trace_axes=LAYOUTS[args.layout],
            vmap_axes=0,
            implementation=args.implementation,
        )
        times = []
        if args.batch_size:
            if args.n % args.batch_size:
                raise ValueError(f"--n {args.n} not divisible by --batch-size {args.batch_size}")
            bfn = nt.batch(kfn, batch_size=args.batch_size, device_count=0, store_on_device=True)
            t = time.perf_counter()
            k = bfn(x, None, params)
            k = jax.block_until_ready(k)
            first = time.perf_counter() - t
            for _ in range(args.repeats):
                t = time.perf_counter()
                k = jax.block_until_ready(bfn(x, None, params))
                times.append(time.perf_counter() - t)
                if times[-1] > args.max_repeat_seconds:
                    break
            rec["first_call_seconds"] = first
            rec["compile_seconds"] = max(first - min(times), 0.0) if times else None
        else:
            fn = jax.jit(lambda x_, p_: kfn(x_, None, p_))
            t = time.perf_counter()
            compiled = fn.lower(x, params).compile()
            rec["compile_seconds"] = time.perf_counter() - t
            warm = []
            for _ in range(args.warmup):
                t = time.perf_counter()
                k = jax.block_until_ready(compiled(x, params))
                warm.append(time.perf_counter() - t)
            rec["warmup_seconds"] = warm
            for _ in range(max(args.repeats, 1)):
                t = time.perf_counter()
                k = jax.block_until_ready(compiled(x, params))
                times.append(time.perf_counter() - t)
                if times[-1] > args.max_repeat_seconds:
                    break
        rec["seconds"] = min(times) if times else None
        rec["all_seconds"] = times
        k = np.asarray(k, np.float64)
        rec["gram_shape"] = list(k.shape)
        if k.ndim == 4:  # (n, n, C, C): the trace of the traced kernel
            rec["gram_trace"] = float(np.einsum("iicc->", k) / k.shape[-1])
        else:
            rec["gram_trace"] = float(np.trace(k.reshape(args.n, args.n)))
        rec["peak_rss_mb"] = round(rss_mb(), 1)
        print(json.dumps(rec), flush=True)
        return 0
    except BaseException as e:  # noqa: BLE001 -- report anything (incl. MemoryError) as JSON
        if isinstance(e, KeyboardInterrupt):
            rec["error"] = "KeyboardInterrupt"
        else:
            msg = f"{type(e).__name__}: {e}"
            rec["error"] = msg[:2000]
            rec["oom"] = (
                "RESOURCE_EXHAUSTED" in msg or isinstance(e, MemoryError) or "Out of memory" in msg
            )
        rec["peak_rss_mb"] = round(rss_mb(), 1)
        traceback.print_exc(file=sys.stderr)
        print(json.dumps(rec), flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
