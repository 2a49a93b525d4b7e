"""NTK Gram speed: raysweep's methods vs neural-tangents 0.6.5, side by side in one run.

    python benchmarks/bench_ntk.py                      # all CPU cases (tens of minutes)
    python benchmarks/bench_ntk.py --cases mlp:1000 lenet:1000
    python benchmarks/bench_ntk.py --gpu                # LeNet 10,000 and ResNet18 2,000

Both sides compute the full (n, n) Gram of the *same* pure-JAX functions (``paper_mlp``,
``paper_lenet``, ``paper_resnet18`` from tools/nt_models.py) on the same inputs
(``default_rng(0).standard_normal((n, 32, 32, 3))``). Every measurement runs in its own
subprocess, so peak memory (ru_maxrss) is per run and a crash or timeout costs one row.
neural-tangents runs in the pinned environment (``$RAYSWEEP_NT_PYTHON``, default
``/work/nt-venv/bin/python``; see tools/README.md) and is skipped with a message if absent.

Columns: steady-state seconds (best of ``--repeats``, compilation excluded and shown
separately), the ratio to neural-tangents implementation 1 and to its fastest
implementation, GFLOP/s, and peak RSS. GFLOP/s counts the work of the contraction method,
n²·P (one triangle of 2·n²·P), for every row, so rows are comparable; "gemm%" is that rate
over this machine's float32 GEMM rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = os.environ.get("RAYSWEEP_NT_PYTHON", "/work/nt-venv/bin/python")
MODEL_NAMES = {"mlp": "paper_mlp", "lenet": "paper_lenet", "resnet18": "paper_resnet18"}
METHODS = ("auto", "contraction", "structured", "ntvp")
CPU_CASES = ("mlp:1000", "lenet:1000", "mlp:4000", "lenet:4000", "resnet18:256")
GPU_CASES = ("lenet:10000", "resnet18:2000")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_raysweep(model: str, n: int, method: str, repeats: int, budget_mb: float) -> dict:
    """One measurement in this process (called through ``--worker``)."""
    import jax
    import numpy as np

    sys.path.insert(0, str(ROOT / "tools"))
    from nt_models import get_model

    from raysweep.ntk import NTKEngine, gram_with_engine

    params, _state, apply_fn = get_model(MODEL_NAMES[model], seed=0, input_shape=(32, 32, 3))
    x = np.random.default_rng(0).standard_normal((n, 32, 32, 3)).astype(np.float32)
    start = time.perf_counter()
    engine = NTKEngine(apply_fn, params, x[:1], method=method, memory_budget_mb=budget_mb)
    engine.fit_block_size(n)
    gram = gram_with_engine(engine, x)  # first call: compiles
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        gram = gram_with_engine(engine, x)
        best = min(best, time.perf_counter() - start)
    return {
        "side": "raysweep",
        "method": method,
        "resolved": engine.method,
        "block_size": engine.block_size,
        "seconds": best,
        "compile_seconds": max(first - best, 0.0),
        "peak_rss_mb": _peak_rss_mb(),
        "params": engine.num_params,
        "gram_trace": float(np.trace(gram.astype(np.float64))),
        "device": str(jax.devices()[0].platform),
    }


def gemm_rate(size: int = 2048, depth: int = 16384) -> float:
    """float32 GEMM GFLOP/s of this machine through XLA: (size x depth) @ (depth x size)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, depth), jnp.float32)
    mm = jax.jit(lambda a: jnp.matmul(a, a.T, precision="highest"))
    mm(a).block_until_ready()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size * size * depth / best / 1e9


def _subprocess_json(cmd: list[str], timeout: float) -> dict:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"error": f"no result (exit {proc.returncode}; likely out of memory): {tail[0]}"}
    return json.loads(lines[-1])


def measure(model: str, n: int, args) -> list[dict]:
    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--worker", model, str(n), method]
        cmd += ["--repeats", str(args.repeats), "--budget-mb", str(args.budget_mb)]
        rows.append({"side": "raysweep", "method": method, **_subprocess_json(cmd, args.timeout)})
    if args.skip_nt:
        return rows
    if not Path(NT_PYTHON).exists():
        print(f"  neural-tangents skipped: {NT_PYTHON} not found (tools/README.md)", flush=True)
        return rows
    for impl in (1, 2, 3):
        cmd = [NT_PYTHON, str(ROOT / "benchmarks" / "nt_baseline.py"), "--model", model]
        cmd += ["--n", str(n), "--implementation", str(impl), "--repeats", str(args.repeats)]
        rows.append(
            {"side": "nt", "method": f"nt impl {impl}", **_subprocess_json(cmd, args.timeout)}
        )
    return rows


def print_table(model: str, n: int, rows: list[dict], gemm: float) -> None:
    ok = [r for r in rows if "seconds" in r]
    params = next((r["params"] for r in ok), None)
    nt1 = next((r["seconds"] for r in ok if r["method"] == "nt impl 1"), None)
    nt_best = min((r["seconds"] for r in ok if r["side"] == "nt"), default=None)
    print(f"\n{model} n={n} P={params}", flush=True)
    print(
        f"  {'method':<22}{'seconds':>10}{'compile':>9}{'vs nt1':>9}{'vs nt best':>11}"
        f"{'GFLOP/s':>10}{'gemm%':>7}{'peak MB':>9}"
    )
    for r in rows:
        name = r["method"] + (
            f" ({r['resolved']})" if "resolved" in r and r["method"] == "auto" else ""
        )
        if "seconds" not in r:
            print(f"  {name:<22}  {r.get('error', 'failed')}")
            continue
        sec = r["seconds"]
        flops = n * n * params / sec / 1e9 if params else float("nan")
        vs1 = f"{nt1 / sec:8.1f}x" if nt1 else "       -"
        vsb = f"{nt_best / sec:10.2f}x" if nt_best else "          -"
        print(
            f"  {name:<22}{sec:10.3f}{r.get('compile_seconds', 0):9.1f}{vs1:>9}{vsb:>11}"
            f"{flops:10.1f}{100 * flops / gemm:6.0f}%{r.get('peak_rss_mb', 0):9.0f}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", nargs="*", help="model:n pairs, e.g. mlp:1000 lenet:4000")
    ap.add_argument("--gpu", action="store_true", help="the GPU cases (LeNet 10k, ResNet18 2k)")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget-mb", type=float, default=4096)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    ap.add_argument("--skip-nt", action="store_true", help="raysweep only")
    ap.add_argument("--json", type=Path, help="also write all rows to this file")
    ap.add_argument("--gemm-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "N", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.gemm_worker:
        print(json.dumps({"gflops": gemm_rate()}), flush=True)
        return 0
    if args.worker:
        model, n, method = args.worker
        try:
            row = run_raysweep(model, int(n), method, args.repeats, args.budget_mb)
        except Exception as err:  # noqa: BLE001 - reported as a row
            row = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        print(json.dumps(row), flush=True)
        return 0

    cases = args.cases or list(GPU_CASES if args.gpu else CPU_CASES)
    # In a subprocess: JAX in this process would hold device memory the measurements need.
    gemm = _subprocess_json([sys.executable, __file__, "--gemm-worker"], args.timeout)["gflops"]
    print(f"float32 GEMM rate on this machine: {gemm:.1f} GFLOP/s", flush=True)
    everything = []
    for case in cases:
        model, n = case.split(":")
        if model not in MODEL_NAMES:
            raise SystemExit(f"unknown model {model!r} in {case!r}; choose {sorted(MODEL_NAMES)}")
        rows = measure(model, int(n), args)
        print_table(model, int(n), rows, gemm)
        everything.append({"model": model, "n": int(n), "gemm_gflops": gemm, "rows": rows})
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
