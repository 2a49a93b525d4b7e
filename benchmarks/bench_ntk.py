"""NTK Gram speed: raysweep's methods vs neural-tangents 0.6.5, side by side in one run.

    python benchmarks/bench_ntk.py                      # all CPU cases (tens of minutes)
    python benchmarks/bench_ntk.py --cases mlp:1000 lenet:1000
    python benchmarks/bench_ntk.py --gpu                # LeNet 10,000 and ResNet18 2,000
    python benchmarks/bench_ntk.py --ten                # 10-logit MLP and LeNet5, traced and full

Both sides compute the full (n, n) Gram of the *same* pure-JAX functions (``paper_mlp``,
``paper_lenet``, ``paper_resnet18`` from tools/nt_models.py) on the same inputs
(``default_rng(0).standard_normal((n, 32, 32, 3))``). The 10-logit cases ``mlp10:n`` and
``lenet10:n`` (``paper_mlp10``, ``paper_lenet10``) compute the traced kernel
(``trace_axes=(-1,)``, ``(n, n)``); ``mlp10:n:full`` and ``lenet10:n:full`` the full one
(``trace_axes=()``, ``(n, n, 10, 10)``): raysweep through ``empirical_ntk_fn(...,
vmap_axes=0, implementation=method)``, neural-tangents through its own with the same axes.

Memory guard: each measurement's resident memory is polled; one that passes ``--max-rss-gb``
(default: 85 % of this machine's memory) is killed and recorded as out of memory, as is one
killed by the system or failing with XLA's ``RESOURCE_EXHAUSTED``. Every measurement runs in its own
subprocess, so peak memory (ru_maxrss) is per run and a crash or timeout costs one row.
neural-tangents runs in the pinned environment (``$RAYSWEEP_NT_PYTHON``, default
``/work/nt-venv/bin/python``; see tools/README.md) and is skipped with a message if absent.

Timing policy, the same on both sides: compile and run once untimed (raysweep: the first
``ntk_gram`` call, which compiles; neural-tangents: ``lower().compile()`` then one warm-up
run), then the best of ``--repeats`` timed runs (fewer when one run exceeds
``--max-repeat-seconds``). raysweep's time is the public ``ntk_gram`` call, NumPy inputs in
and NumPy Gram out; neural-tangents' is the jitted kernel on inputs already on the device.
``--rounds R`` repeats the whole list of measurements of a case R times, interleaved, and
keeps each method's best round, so a burst of load from other jobs hits both sides alike.

Slow measurements are estimated, not run (``auto`` is always measured): when one call of a
method at this n, scaled by n² from a smaller n of the same model measured earlier in the run
(or from a one-call probe at ``max(32, n // 8)`` when there is none), is predicted to exceed
``--max-seconds``, the row shows that estimate prefixed by ``~`` and says so (n² is the
Gram's scaling; per-example work grows only with n, so estimates are upper bounds); a method
that failed (out of memory, timeout) at a smaller n is not retried at a larger one.

Columns: steady-state seconds, compilation seconds (first call minus steady state), the ratio
to neural-tangents implementation 1 and to its fastest implementation, GFLOP/s, and peak RSS.
GFLOP/s counts the work of the contraction method, n²·P (one triangle of 2·n²·P; times C for
the traced and C² for the full kernel of C logits), for every row, so rows are comparable;
"gemm%" is that rate over this machine's float32 GEMM rate
measured just before the case. For rows that resolve to the contraction, a line below the table
gives the rate of its tile product alone (one block's Jacobian times itself, 2·b²·P flops)
against a plain float32 GEMM timed alternately with it in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = os.environ.get("RAYSWEEP_NT_PYTHON", "/work/nt-venv/bin/python")
MODEL_NAMES = {
    "mlp": "paper_mlp",
    "lenet": "paper_lenet",
    "resnet18": "paper_resnet18",
    "mlp10": "paper_mlp10",
    "lenet10": "paper_lenet10",
}
LAYOUTS = {"traced": (-1,), "full": ()}  # trace_axes of the 10-logit cases
METHODS = ("auto", "contraction", "structured", "ntvp")
CPU_CASES = ("mlp:1000", "lenet:1000", "mlp:4000", "lenet:4000", "resnet18:256")
TEN_CASES = ("mlp10:1000", "lenet10:1000", "mlp10:1000:full", "lenet10:1000:full")
GPU_CASES = ("lenet:10000", "resnet18:2000")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def traced_trace(k, n: int) -> float:
    """trace of the traced kernel: Σ_i Θ̄(x_i, x_i) from ``(n, n)`` or ``(n, n, C, C)``."""
    import numpy as np

    k = np.asarray(k, np.float64)
    if k.ndim == 4:
        return float(np.einsum("iicc->", k) / k.shape[-1])
    return float(np.trace(k.reshape(n, n)))


def run_raysweep(
    model: str,
    n: int,
    method: str,
    repeats: int,
    budget_mb: float,
    max_repeat: float,
    layout: str = "traced",
) -> dict:
    """One measurement in this process (called through ``--worker``)."""
    import jax
    import numpy as np

    sys.path.insert(0, str(ROOT / "tools"))
    from nt_models import get_model

    from raysweep.ntk import NTKEngine, empirical_ntk_fn, ntk_gram

    params, _state, apply_fn = get_model(MODEL_NAMES[model], seed=0, input_shape=(32, 32, 3))
    x = np.random.default_rng(0).standard_normal((n, 32, 32, 3)).astype(np.float32)
    trace_axes = LAYOUTS[layout]
    if model.endswith("10"):  # the neural-tangents API: any layout
        ntk_fn = empirical_ntk_fn(apply_fn, trace_axes, (), 0, method, memory_budget_mb=budget_mb)

        def call():
            return ntk_fn(x, None, params)

    else:

        def call():
            return ntk_gram(apply_fn, params, x, method=method, memory_budget_mb=budget_mb)

    start = time.perf_counter()
    gram = call()  # compiles
    first = time.perf_counter() - start
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        gram = call()
        times.append(time.perf_counter() - start)
        if times[-1] > max_repeat:
            break
    best = min(times)
    # What the call resolved (an engine of the same options; builds, compiles nothing).
    engine = NTKEngine(
        apply_fn, params, x[:1], method=method, memory_budget_mb=budget_mb, trace_axes=trace_axes
    )
    engine.fit_block_size(n)
    whole = engine.can_do_whole(n)
    if not whole:
        engine.fit_block_size(n, min_blocks=4)
    one_output = engine.outputs.size == 1
    tile = tile_gemm_rate(engine, x) if engine.method == "contraction" and one_output else {}
    return {
        **tile,
        "side": "raysweep",
        "method": method,
        "resolved": engine.method,
        "block_size": engine.block_size,
        "whole": whole,
        "seconds": best,
        "all_seconds": times,
        "compile_seconds": max(first - best, 0.0),
        "peak_rss_mb": _peak_rss_mb(),
        "params": engine.num_params,
        "outputs": engine.outputs.size,
        "kernel_shape": list(np.shape(gram)),
        "gram_trace": traced_trace(gram, n),
        "device": str(jax.devices()[0].platform),
    }


def tile_gemm_rate(engine, x) -> dict:
    """GFLOP/s of the contraction's tile product alone, J_b J_bᵀ on one block of features.

    Counts the flops the product executes, 2·b²·P (the Gram rows count only n²·P). A plain
    float32 GEMM is timed alternately in the same process, so the ratio sees the same load.
    """
    import jax
    import jax.numpy as jnp

    b = min(len(x), engine.block_size)
    feats, _ = engine.features(x[:b])
    a1 = jax.random.normal(jax.random.PRNGKey(0), (2048, 8192), jnp.float32)
    a2 = jax.random.normal(jax.random.PRNGKey(1), (2048, 8192), jnp.float32)
    mm = jax.jit(lambda a, c: jnp.matmul(a, c.T, precision="highest"))
    runs = {
        "tile": lambda: engine.tile((feats, b), (feats, b)),
        "gemm": lambda: mm(a1, a2),
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(3):
        for name, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run())
            best[name] = min(best[name], time.perf_counter() - start)
    rate = 2.0 * b * b * engine.num_params / best["tile"] / 1e9
    ref = 2.0 * 2048 * 2048 * 8192 / best["gemm"] / 1e9
    return {"tile_rows": b, "tile_seconds": best["tile"], "tile_gflops": rate, "gemm_ref": ref}


def gemm_rate(size: int = 2048, depth: int = 16384) -> float:
    """float32 GEMM GFLOP/s of this machine through XLA: (size x depth) @ (depth x size)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, depth), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, depth), jnp.float32)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision="highest"))
    mm(a, b).block_until_ready()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        mm(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size * size * depth / best / 1e9


def _rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def default_max_rss_gb() -> float:
    """85 % of this machine's memory."""
    return 0.85 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


MAX_RSS_GB = default_max_rss_gb()


def _subprocess_json(cmd: list[str], timeout: float, max_rss_gb: float | None = None) -> dict:
    """Run ``cmd``; its last JSON line, or an error row (timeout, out of memory).

    The child's resident memory is polled every 0.1 s and the child is killed when it passes
    ``max_rss_gb`` (default ``MAX_RSS_GB``), before the system runs out of memory.
    """
    limit = (MAX_RSS_GB if max_rss_gb is None else max_rss_gb) * 1e9
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
        start, peak, why = time.monotonic(), 0, None
        while proc.poll() is None:
            peak = max(peak, _rss_bytes(proc.pid))
            if peak > limit:
                why = f"out of memory: passed {limit / 1e9:.1f} GB resident (--max-rss-gb)"
            elif time.monotonic() - start > timeout:
                why = f"timeout after {timeout:.0f} s"
            if why:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if why:
        return {"error": why, "oom": why.startswith("out of memory"), "timeout": "timeout" in why}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {
            "error": f"no result (exit {proc.returncode}; likely out of memory): {tail[0]}",
            "oom": True,
        }
    return json.loads(lines[-1])


def _command(model: str, n: int, method: str, args, repeats: int) -> list[str]:
    if method.startswith("nt impl"):
        name, _, layout = model.partition(":")
        cmd = [NT_PYTHON, str(ROOT / "benchmarks" / "nt_baseline.py"), "--model", name]
        cmd += ["--n", str(n), "--implementation", method[-1], "--repeats", str(repeats)]
        cmd += ["--layout", layout or ("traced" if name.endswith("10") else "full")]
        return cmd + ["--max-repeat-seconds", str(args.max_repeat_seconds)]
    cmd = [sys.executable, __file__, "--worker", model, str(n), method]
    cmd += ["--repeats", str(repeats), "--budget-mb", str(args.budget_mb)]
    return cmd + ["--max-repeat-seconds", str(args.max_repeat_seconds)]


def _measure_one(
    model: str, n: int, method: str, args, repeats: int | None = None, timeout: float = 0
) -> dict:
    side = "nt" if method.startswith("nt impl") else "raysweep"
    cmd = _command(model, n, method, args, args.repeats if repeats is None else repeats)
    row = _subprocess_json(cmd, timeout or args.timeout, args.max_rss_gb)
    if "error" in row and "oom" not in row:
        row["oom"] = "RESOURCE_EXHAUSTED" in row["error"] or "Out of memory" in row["error"]
    return {**row, "side": side, "method": method, "n": n}


def _estimate(history: dict, model: str, n: int, method: str, args) -> dict | None:
    """A skip row when this measurement would take too long or failed at a smaller n."""
    smaller = [r for (m, k, meth), r in history.items() if m == model and meth == method and k < n]
    failed = [r for r in smaller if "error" in r]
    if failed:
        r = min(failed, key=lambda r: r["n"])
        why = "out of memory" if r.get("oom") else r["error"]
        return {
            "skipped": f"not run: {why} already at n={r['n']}",
            "error": why,
            "oom": r.get("oom"),
        }
    if method == "auto":  # what the goals are about: always measured
        return None
    done = [r for r in smaller if "seconds" in r or "estimate" in r]
    if not done:
        if n < 2 * args.probe_min or args.max_seconds <= 0 or args.no_probe:
            return None
        probe_n = max(args.probe_min, n // 8)
        # a probe slower than --max-seconds already decides: the full size would be slower
        probe = _measure_one(model, probe_n, method, args, repeats=1, timeout=args.max_seconds)
        history[(model, probe_n, method)] = probe
        if "seconds" not in probe:
            why = "out of memory" if probe.get("oom") else probe.get("error", "failed")
            skip = f"not run: {why} already at the probe n={probe_n}"
            return {"skipped": skip, "error": why, "oom": probe.get("oom")}
        print(f"  {method}: probe n={probe_n}: {probe['seconds']:.3g} s", flush=True)
        done = [probe]
    ref = max(done, key=lambda r: r["n"])
    base = ref.get("seconds", ref.get("estimate"))
    estimate = base * (n / ref["n"]) ** 2
    if args.max_seconds > 0 and estimate > args.max_seconds:
        how = "" if "seconds" in ref else " (itself an estimate)"
        return {
            "estimate": estimate,
            "skipped": (
                f"estimated {estimate:.0f} s = {base:.3g} s at n={ref['n']}{how} x "
                f"({n}/{ref['n']})² > --max-seconds {args.max_seconds:.0f}: not run"
            ),
            "params": ref.get("params"),
            "peak_rss_mb": None,
        }
    return None


def measure(model: str, n: int, args, history: dict) -> list[dict]:
    methods = list(args.methods)
    if not args.skip_nt:
        if Path(NT_PYTHON).exists():
            methods += [f"nt impl {i}" for i in args.nt_impls]
        else:
            print(f"  neural-tangents skipped: {NT_PYTHON} not found (tools/README.md)", flush=True)
    rows: dict[str, dict] = {}
    for method in methods:
        skip = _estimate(history, model, n, method, args)
        if skip is not None:
            rows[method] = {"side": "nt" if "nt" in method else "raysweep", "method": method}
            rows[method].update(n=n, **skip)
            print(f"  {method}: {skip['skipped']}", flush=True)
    to_run = [m for m in methods if m not in rows]
    for r in range(max(args.rounds, 1)):
        for method in to_run:
            if r and rows[method].get("seconds", 0) > args.max_repeat_seconds / 2:
                continue  # slow rows: one round is enough, load noise is small beside them
            row = _measure_one(model, n, method, args)
            row["round"] = r
            old = rows.get(method)
            if old is None or ("seconds" in row and row["seconds"] < old.get("seconds", 1e300)):
                rows[method] = row
            if "seconds" in row:
                row["rounds_seconds"] = (
                    [*old.get("rounds_seconds", []), row["seconds"]]
                    if (old is not None and "seconds" in old)
                    else [row["seconds"]]
                )
                rows[method]["rounds_seconds"] = row["rounds_seconds"]
    for method in methods:
        history[(model, n, method)] = rows[method]
    return [rows[m] for m in methods]


def print_table(model: str, n: int, rows: list[dict], gemm: float) -> None:
    def sec(r):
        return r.get("seconds", r.get("estimate"))

    params = next((r["params"] for r in rows if r.get("params")), None)
    outputs = 10 if model.split(":")[0].endswith("10") else 1
    work = outputs**2 if model.endswith(":full") else outputs  # contraction flops per n²·P
    nt1_row = next((r for r in rows if r["method"] == "nt impl 1"), {})
    nt1 = sec(nt1_row)
    nt_rows = [r for r in rows if r["side"] == "nt" and sec(r) is not None]
    nt_best_row = min(nt_rows, key=sec, default={})
    nt_best = sec(nt_best_row)
    print(f"\n{model} n={n} P={params}", flush=True)
    print(
        f"  {'method':<26}{'seconds':>10}{'compile':>9}{'vs nt1':>10}{'vs nt best':>12}"
        f"{'GFLOP/s':>10}{'gemm%':>7}{'peak MB':>9}"
    )
    for r in rows:
        name = r["method"]
        if r.get("resolved") and r["method"] == "auto":
            name += f" ({r['resolved']}{', whole' if r.get('whole') else ''})"
        s = sec(r)
        if s is None:
            print(f"  {name:<26}  {r.get('skipped') or r.get('error', 'failed')}")
            continue
        est = "~" if "seconds" not in r else ""
        flops = n * n * params * work / s / 1e9 if params else float("nan")
        vs1 = f"{'~' if est or 'seconds' not in nt1_row else ''}{nt1 / s:.1f}x" if nt1 else "-"
        vsb = "-"
        if nt_best:
            mark = "~" if est or "seconds" not in nt_best_row else ""
            vsb = f"{mark}{nt_best / s:.2f}x"
        peak = r.get("peak_rss_mb")
        print(
            f"  {name:<26}{est + format(s, '.3f'):>10}{r.get('compile_seconds', 0) or 0:9.1f}"
            f"{vs1:>10}{vsb:>12}{flops:10.1f}{100 * flops / gemm:6.0f}%"
            f"{format(peak, '.0f') if peak else '-':>9}"
        )
        if r.get("rounds_seconds") and len(r["rounds_seconds"]) > 1:
            print(f"  {'':<26}rounds: {', '.join(f'{t:.3f}' for t in r['rounds_seconds'])}")
    for r in rows:
        if r.get("tile_gflops"):
            b, rate, ref = r["tile_rows"], r["tile_gflops"], r.get("gemm_ref", gemm)
            print(
                f"  {r['method']}: tile GEMM J_b J_bᵀ ({b} x {params:,} x {b}) "
                f"{r['tile_seconds']:.3f} s = {rate:.1f} GFLOP/s = {100 * rate / ref:.0f}% of "
                f"a plain GEMM timed alongside ({ref:.1f} GFLOP/s)"
            )
    traces = {r["method"]: r["gram_trace"] for r in rows if "gram_trace" in r}
    if len(traces) > 1:
        vals = list(traces.values())
        spread = (max(vals) - min(vals)) / max(abs(v) for v in vals)
        print(f"  trace(Θ) agrees across all measured rows to {spread:.1e} (relative)")
    if nt_best:
        est = " (estimate)" if "seconds" not in nt_best_row else ""
        print(f"  nt fastest: {nt_best_row['method']}{est}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", nargs="*", help="model:n pairs, e.g. mlp:1000 lenet:4000")
    ap.add_argument("--gpu", action="store_true", help="the GPU cases (LeNet 10k, ResNet18 2k)")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs after the untimed one")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds per case")
    ap.add_argument("--budget-mb", type=float, default=4096)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=300,
        help="estimate instead of running a call predicted to take longer (0: run everything)",
    )
    ap.add_argument("--max-repeat-seconds", type=float, default=60, help="stop repeating after")
    ap.add_argument("--probe-min", type=int, default=32, help="smallest probe n")
    ap.add_argument("--no-probe", action="store_true", help="estimate only from earlier cases")
    ap.add_argument("--skip-nt", action="store_true", help="raysweep only")
    ap.add_argument(
        "--nt-impls",
        nargs="*",
        default=["1", "2", "3"],
        choices=["1", "2", "3"],
        help="neural-tangents implementations to run (default all three)",
    )
    ap.add_argument("--ten", action="store_true", help="the 10-logit cases (traced and full)")
    ap.add_argument(
        "--max-rss-gb",
        type=float,
        default=MAX_RSS_GB,
        help="kill a measurement past this resident memory: out of memory (default 85%% of RAM)",
    )
    ap.add_argument("--json", type=Path, help="also write all rows to this file")
    ap.add_argument("--gemm-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "N", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.gemm_worker:
        print(json.dumps({"gflops": gemm_rate()}), flush=True)
        return 0
    if args.worker:
        model, n, method = args.worker
        name, _, layout = model.partition(":")
        try:
            row = run_raysweep(
                name,
                int(n),
                method,
                args.repeats,
                args.budget_mb,
                args.max_repeat_seconds,
                layout or "traced",
            )
        except Exception as err:  # noqa: BLE001 - reported as a row
            row = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        print(json.dumps(row), flush=True)
        return 0

    cases = args.cases or list(GPU_CASES if args.gpu else TEN_CASES if args.ten else CPU_CASES)
    parsed = []
    for case in cases:
        parts = case.split(":")
        if parts[0] not in MODEL_NAMES or len(parts) not in (2, 3) or not parts[1].isdigit():
            raise SystemExit(
                f"bad case {case!r}: write model:n or model:n:layout, model one of "
                f"{sorted(MODEL_NAMES)}"
            )
        if len(parts) == 3 and (parts[2] not in LAYOUTS or not parts[0].endswith("10")):
            raise SystemExit(
                f"bad case {case!r}: a layout ({' or '.join(LAYOUTS)}) goes with a 10-logit "
                "model (mlp10, lenet10)"
            )
        model = parts[0] if len(parts) == 2 else f"{parts[0]}:{parts[2]}"
        parsed.append((model, parts[1]))
    everything, history = [], {}
    for case, (model, n) in zip(cases, parsed, strict=True):
        print(f"\n== {case}", flush=True)
        # Measured again for every case (other jobs' load changes); in a subprocess: JAX in
        # this process would hold device memory the measurements need.
        cmd = [sys.executable, __file__, "--gemm-worker"]
        gemm = _subprocess_json(cmd, args.timeout)["gflops"]
        print(f"  float32 GEMM rate on this machine now: {gemm:.1f} GFLOP/s", flush=True)
        rows = measure(model, int(n), args, history)
        print_table(model, int(n), rows, gemm)
        everything.append({"model": model, "n": int(n), "gemm_gflops": gemm, "rows": rows})
        if args.json:
            args.json.write_text(json.dumps(everything, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
