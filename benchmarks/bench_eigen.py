"""Benchmark raysweep.eigen against ARPACK and LAPACK on NTK-like float32 Gram matrices.

Usage::

    python benchmarks/bench_eigen.py                  # N=3000, k=300 synthetic + digits NTK
    python benchmarks/bench_eigen.py --large          # N=12000, k=1000 (tens of minutes)
    python benchmarks/bench_eigen.py --n 2000 --k 100 --solvers block,lapack

Cases:

``synthetic``
    ``K = Q diag(λ) Qᵀ`` in float32 with an NTK-like spectrum (one dominant eigenvalue, then a
    power law ``λ_i ∝ i^-1.2`` like the digits NTK); ``Q = P C D C`` with ``C`` the orthonormal
    DCT-II matrix, ``D`` random signs and ``P`` a random permutation, so ``K`` costs
    ``O(N² log N)`` to build and its eigenvectors are dense and unstructured.
``ntk``
    ``ntk_gram`` of the paper's MLP (``raysweep.models`` "mlp", seed 0) on scikit-learn digits
    (train + test concatenated, N = 1797), with k scaled to the synthetic case's k/N (180 for
    the default; ``--ntk-k`` overrides); with ``--large``, N = 12000 inputs cycling through the
    digits images plus Gaussian jitter (std 0.1), since digits has only 1797 images.

Solvers: raysweep ``dense`` / ``block`` / ``nystrom`` (reference: an approximation, its residual
is reported, not held to the target), ARPACK (``scipy.sparse.linalg.eigsh(K, k, which="LA")``
through a LinearOperator: ``arpack`` multiplies the float32 matrix (``ssaupd``; reaches the
target at N = 3000, 1.2e-6 at N = 12000), ``arpack64`` a float64 copy made before timing
(``dsaupd``, float64 matvecs; twice the memory traffic); not in the default list), LAPACK
(``scipy.linalg.eigh(K32, subset_by_index=[N-k, N-1])`` = ``ssyevr``), with the default BLAS
threads and again on one thread (on a shared machine one thread is often faster for LAPACK).
Every residual ``max_i ‖K v_i − λ_i v_i‖ / λ_max`` is computed afterwards in float64 (not timed).
Times are ``time.perf_counter`` wall seconds, best of ``--repeats`` when a run takes < 30 s;
"cpu s" is ``time.process_time`` of that run (on one thread: the run's time on an idle core).
``--threads 1`` runs every solver on one BLAS thread (fair on a machine shared with other
jobs, where two threads on busy cores can be several times slower than one).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.sparse.linalg

from raysweep.eigen import top_eigenpairs
from raysweep.eigen.operator import KernelOperator
from raysweep.eigen.threads import one_blas_thread

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # installed with scikit-learn
    threadpool_limits = None

TARGET = 1e-6
SOLVERS = ("dense", "block", "nystrom", "arpack", "arpack64", "lapack", "lapack1")
LABELS = {
    "dense": "raysweep dense",
    "block": "raysweep block",
    "nystrom": "raysweep nystrom (m=4k)",
    "arpack": "ARPACK eigsh f32",
    "arpack64": "ARPACK eigsh f64 matvec",
    "lapack": "LAPACK ssyevr subset",
    "lapack1": "LAPACK ssyevr subset, 1 thread",
}


def ntk_like_spectrum(n: int) -> np.ndarray:
    """Descending float64 ``(n,)``: 1, then ``0.1 · (i − 1)^-1.2`` (digits NTK-like)."""
    i = np.arange(2, n + 1, dtype=np.float64)
    return np.concatenate([[1.0], 0.1 * (i - 1) ** -1.2])


def synthetic_gram(n: int, seed: int = 0) -> np.ndarray:
    """float32 ``(n, n)`` PSD matrix ``Q diag(λ) Qᵀ``, ``Q = P C D C`` (module docstring)."""
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=n)
    perm = rng.permutation(n)
    m = np.diag(ntk_like_spectrum(n))
    for transform in (lambda a: a, lambda a: signs[:, None] * a * signs[None, :]):
        m = transform(m)
        m = scipy.fft.dct(m, axis=0, norm="ortho", overwrite_x=True)
        m = scipy.fft.dct(m, axis=1, norm="ortho", overwrite_x=True)
    m = m[perm][:, perm]
    return (0.5 * (m + m.T)).astype(np.float32)


def ntk_gram_digits(n: int | None) -> np.ndarray:
    """float32 NTK Gram of the paper's MLP on digits (``n`` jittered inputs if given)."""
    from raysweep.data import load_dataset
    from raysweep.models import get_model, init_variables, make_apply_fn
    from raysweep.ntk import ntk_gram

    x_all, _ = load_dataset("digits").concatenated()
    if n is not None and n != x_all.shape[0]:
        rng = np.random.default_rng(0)
        x_all = x_all[np.arange(n) % x_all.shape[0]]
        x_all = x_all + 0.1 * rng.standard_normal(x_all.shape).astype(np.float32)
    module = get_model("mlp")
    variables = init_variables(module, x_all.shape[1:], seed=0)
    apply_fn = make_apply_fn(module, variables)
    return np.asarray(ntk_gram(apply_fn, variables["params"], x_all), dtype=np.float32)


def run_solver(name: str, K: np.ndarray, k: int, k64: np.ndarray | None = None):
    """One solve; returns ``(eigvals (k,), eigvecs (N, k) columns, matvecs or None)``.

    ``k64``: the float64 copy of ``K`` that ``arpack64`` multiplies with (made untimed).
    """
    n = K.shape[0]
    if name in ("dense", "block", "nystrom"):
        res = top_eigenpairs(K, k, method=name)
        return res.eigvals, res.eigvecs.T, res.matvecs
    if name in ("arpack", "arpack64"):
        counter = {"mv": 0}
        matrix = K if name == "arpack" else k64

        def matvec(x):
            counter["mv"] += 1 if x.ndim == 1 else x.shape[1]
            return matrix @ x

        op = scipy.sparse.linalg.LinearOperator(K.shape, matvec=matvec, dtype=matrix.dtype)
        vals, vecs = scipy.sparse.linalg.eigsh(op, k, which="LA")
        return vals, vecs, counter["mv"]
    if name in ("lapack", "lapack1"):
        with one_blas_thread() if name == "lapack1" else contextlib.nullcontext():
            vals, vecs = scipy.linalg.eigh(K, subset_by_index=[n - k, n - 1])
        return vals, vecs, None
    raise ValueError(f"unknown solver {name!r}; choose from {SOLVERS}")


def max_relative_residual(K: np.ndarray, vals: np.ndarray, vecs: np.ndarray) -> float:
    """``max_i ‖K v_i − λ_i v_i‖ / max λ`` in float64 (vectors normalized first)."""
    v = np.asarray(vecs, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=0)
    kv = KernelOperator(K).product64(v)
    res = np.linalg.norm(kv - v * np.asarray(vals, dtype=np.float64), axis=0)
    return float(res.max() / np.max(vals))


def bench_case(title: str, K: np.ndarray, k: int, solvers, repeats: int) -> list[dict]:
    rows = []
    n = K.shape[0]
    print(f"\n== {title}: N={n}, k={k}, float32 ==", flush=True)
    k64 = K.astype(np.float64) if "arpack64" in solvers else None
    for name in solvers:
        best, cpu, out = np.inf, np.inf, None
        for rep in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            out = run_solver(name, K, k, k64)
            elapsed = time.perf_counter() - start
            best, cpu = min(best, elapsed), min(cpu, time.process_time() - start_cpu)
            if elapsed > 30 or rep + 1 == repeats:
                break
        vals, vecs, matvecs = out
        rel = max_relative_residual(K, vals, vecs)
        rows.append(dict(solver=name, time=best, cpu=cpu, residual=rel, matvecs=matvecs))
        print(
            f"  {LABELS[name]:<32s} {best:9.2f} s  (cpu {cpu:7.2f} s)   max res/λmax {rel:.1e}",
            flush=True,
        )
    return rows


def print_table(title: str, rows: list[dict], n: int) -> None:
    times = {r["solver"]: r["time"] for r in rows}
    print(f"\n{title}")
    header = f"| {'solver':<32s} | {'time s':>8s} | {'cpu s':>7s} | {'ARPACK/t':>8s} | "
    header += f"{'LAPACK/t':>8s} | "
    header += f"{'LAPACK1/t':>9s} | {'res/λmax':>8s} | {'matvecs/N':>9s} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        t = r["time"]

        def ratio(ref, t=t):
            return f"{times[ref] / t:8.2f}" if ref in times else f"{'-':>8s}"

        mv = f"{r['matvecs'] / n:9.2f}" if r["matvecs"] is not None else f"{'-':>9s}"
        print(
            f"| {LABELS[r['solver']]:<32s} | {t:8.2f} | {r['cpu']:7.2f} | {ratio('arpack')} | "
            f"{ratio('lapack')} | "
            f"{ratio('lapack1'):>9s} | {r['residual']:8.1e} | {mv} |"
        )


def check_goals(rows: list[dict], large: bool) -> None:
    times = {r["solver"]: r["time"] for r in rows}
    res = {r["solver"]: r["residual"] for r in rows}
    if "block" not in times:
        return
    goals = []
    if not large and "arpack" in times:
        goals.append(("block >= 5x faster than ARPACK", times["arpack"] / times["block"], 5.0))
    if "lapack" in times:
        need = 2.0 if large else 1.0
        goals.append((f"block >= {need:g}x LAPACK speed", times["lapack"] / times["block"], need))
    if "lapack1" in times:
        need = 2.0 if large else 1.0
        goals.append(
            (f"block >= {need:g}x LAPACK (1 thread) speed", times["lapack1"] / times["block"], need)
        )
    for name, value, need in goals:
        print(f"  goal {name}: {value:.2f}x -> {'met' if value >= need else 'MISSED'}")
    for name, rel in res.items():
        if name != "nystrom":
            verdict = "met" if rel <= TARGET else "MISSED"
            print(f"  {LABELS[name]}: max residual/λmax {rel:.1e} <= {TARGET:g}: {verdict}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="synthetic N (default 3000)")
    parser.add_argument("--k", type=int, default=300, help="eigenpairs (default 300)")
    parser.add_argument(
        "--ntk-k", type=int, default=None, help="eigenpairs for the ntk case (default: same k/N)"
    )
    parser.add_argument("--large", action="store_true", help="N=12000, k=1000")
    parser.add_argument("--cases", default="synthetic,ntk", help="synthetic,ntk")
    parser.add_argument(
        "--solvers",
        default="dense,block,nystrom,arpack,lapack,lapack1",
        help=",".join(SOLVERS),
    )
    parser.add_argument("--repeats", type=int, default=2, help="best of (runs under 30 s)")
    parser.add_argument(
        "--threads", type=int, default=None, help="BLAS threads for every solver (default: all)"
    )
    args = parser.parse_args(argv)
    n, k = (12000, 1000) if args.large else (args.n, args.k)
    solvers = [s for s in args.solvers.split(",") if s]
    for s in solvers:
        if s not in SOLVERS:
            parser.error(f"unknown solver {s!r}; choose from {','.join(SOLVERS)}")
    results = []
    for case in args.cases.split(","):
        if case == "synthetic":
            K = synthetic_gram(n)
            title = "synthetic NTK-like spectrum"
        elif case == "ntk":
            K = ntk_gram_digits(n if args.large else None)
            title = "MLP NTK Gram on digits" + (" (jittered)" if args.large else "")
        else:
            parser.error(f"unknown case {case!r}; choose synthetic,ntk")
        case_k = k
        if case == "ntk":
            case_k = args.ntk_k if args.ntk_k is not None else round(k * K.shape[0] / n)
        limit = contextlib.nullcontext()
        if args.threads is not None:
            if threadpool_limits is None:
                parser.error("--threads needs threadpoolctl (pip install threadpoolctl)")
            limit = threadpool_limits(limits=args.threads, user_api="blas")
        with limit:
            rows = bench_case(title, K, case_k, solvers, args.repeats)
        results.append((f"{title}: N={K.shape[0]}, k={case_k}", rows, K.shape[0]))
        del K
    for title, rows, n_case in results:
        print_table(title, rows, n_case)
        check_goals(rows, args.large)


if __name__ == "__main__":
    main()
