"""Benchmark raysweep.eigen against ARPACK and LAPACK on NTK-like float32 Gram matrices.

Usage::

    python benchmarks/bench_eigen.py                  # N=3000, k=300 synthetic + digits NTK
    python benchmarks/bench_eigen.py --large          # N=12000, k=1000 (tens of minutes)
    python benchmarks/bench_eigen.py --n 2000 --k 100 --solvers block,lapack
    python benchmarks/bench_eigen.py --cases cifar --cifar-n 12000       # real-data spectrum
    python benchmarks/bench_eigen.py --cases cifar --cifar-n 60000 --solvers block,arpack,lapack

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
``cifar``
    The MLP Gram of the main job on CIFAR-format images (``--cifar-n`` of them, 5/6 training;
    the ``cifar10`` preset with ``model.name=mlp``: the distributed Gram on a local Ray cluster
    into a tile store under ``--work``, reused by later runs), with k = ``--k`` (1,000 with
    ``--large``). ``--data-dir`` names a CIFAR-10 folder; without it, synthetic CIFAR-format
    images are written first (``raysweep make-cifar-like``). Up to ``--dense-max-n`` (16,000)
    the matrix is assembled in this process and every solver multiplies it; above, it stays
    with the Gram workers (:class:`~raysweep.distributed.DistributedGram`), as in the main
    job: ``block`` and ARPACK multiply through the workers, and LAPACK, which needs the matrix
    in one process, is not run: its memory is computed from its allocations instead (see
    below) and its time extrapolated as N³ from the largest N it ran at, if given
    (``--lapack-seconds-at N:SECONDS``).

Solvers: raysweep ``dense`` / ``block`` / ``nystrom`` (reference: an approximation, its residual
is reported, not held to the target), ARPACK (``scipy.sparse.linalg.eigsh(K, k, which="LA")``
through a LinearOperator: ``arpack`` multiplies the float32 matrix (``ssaupd``), ``arpack64`` a
float64 copy made before timing (``dsaupd``, float64 matvecs; twice the memory traffic; not in
the default list)), LAPACK (``scipy.linalg.eigh(K32, subset_by_index=[N-k, N-1])`` =
``ssyevr``), with the default BLAS threads and again on one thread (on a shared machine one
thread is often faster for LAPACK).

ARPACK runs at raysweep's tolerance. Its test is per pair and relative to that pair's Ritz
value, ``‖Kv − θv‖ <= tol · |θ|``, where raysweep's is relative to λmax,
``‖Kv − θv‖ <= 1e-6 · λmax``; so ARPACK gets ``tol = 1e-6 · λmax / λ_k`` (from the block
solver's λ_k when it ran first, else from a 50-pair estimate), the loosest value that holds its
k-th pair to raysweep's target. (``tol=0``, the earlier setting, asks for machine precision:
far more than either needs.) It runs under ``--arpack-timeout`` seconds (default 600): a run
that passes it is stopped at its next product and reported as timed out, with its products.

LAPACK's memory, printed for every case: the float32 matrix, the copy ``eigh`` makes
(``overwrite_a=False``), the ``(N, k)`` eigenvectors and the workspace that
``scipy.linalg.lapack.ssyevr_lwork`` asks for; 14.4 GB for the matrix alone at N = 60,000.

Every residual ``max_i ‖K v_i − λ_i v_i‖ / λ_max`` is computed afterwards in float64 (not timed).
Times are ``time.perf_counter`` wall seconds, best of ``--repeats`` when a run takes < 30 s;
"cpu s" is ``time.process_time`` of that run (on one thread: the run's time on an idle core;
through the Gram workers, the driver's share only). ``--threads 1`` runs every solver on one
BLAS thread (fair on a machine shared with other jobs, where two threads on busy cores can be
several times slower than one). For ``block``, the seconds by stage (products with K,
orthogonalization, Rayleigh-Ritz, restarts, the final residual product) are printed below its
row: where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

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


def cifar_mlp_gram(n: int, data_dir: str | None, work: Path, dense_max_n: int):
    """The main job's MLP Gram of ``n`` CIFAR-format images (module docstring, ``cifar``).

    Returns ``(K, closer)``: the dense float32 matrix when ``n <= dense_max_n``, else the
    :class:`~raysweep.distributed.DistributedGram` (``closer`` kills its workers).
    """
    from raysweep.config import apply_overrides, get_preset
    from raysweep.eigenfunctions import _model_for, config_gram, load_checked_dataset
    from raysweep.models import make_apply_fn

    if data_dir is None:
        from raysweep.data.synthetic import write_cifar_like

        folder = work / "data"
        marker = folder / "num_images.txt"
        if not marker.exists() or int(marker.read_text()) < n:
            print(f"writing {n:,} synthetic CIFAR-format images to {folder} ...", flush=True)
            write_cifar_like(folder, n, force=True)
            marker.write_text(str(n))
        data_dir = str(folder)
    num_train = (n * 5) // 6
    config = apply_overrides(
        get_preset("cifar10"),
        [
            "model.name=mlp",
            f"data.root={data_dir}",
            f"data.num_train={num_train}",
            f"data.num_test={n - num_train}",
        ],
    )
    ds = load_checked_dataset(config)
    x_all, _ = ds.concatenated()
    module, variables = _model_for(config, ds.input_shape)
    start = time.perf_counter()
    gram = config_gram(
        config,
        make_apply_fn(module, variables),
        variables["params"],
        x_all,
        store_dir=work / f"gram-mlp-{n}",
        model_id=f"bench_eigen mlp {n}",
        progress=False,
    )
    print(f"MLP Gram of {n:,} CIFAR-format images: {time.perf_counter() - start:.1f} s", flush=True)
    if n <= dense_max_n:
        with gram:
            return gram.to_numpy(), lambda: None
    return gram, gram.close


class ArpackTimeout(Exception):
    """ARPACK passed ``--arpack-timeout``; raised from its matvec, which stops ``eigsh``."""


def lapack_memory(n: int, k: int) -> dict[str, int]:
    """Bytes ``scipy.linalg.eigh(K32, subset_by_index=[n-k, n-1])`` holds (module docstring)."""
    from scipy.linalg.lapack import ssyevr_lwork

    lwork, liwork, _ = ssyevr_lwork(n)
    return {
        "matrix": 4 * n * n,
        "copy": 4 * n * n,
        "eigenvectors": 4 * n * k,
        "workspace": 4 * int(lwork) + 4 * int(liwork) + 4 * n + 8 * k,
    }


def matrix_product(K):
    """``V -> K @ V`` for a dense array or a handle (float32 in, float32 products)."""
    if isinstance(K, np.ndarray):
        return lambda v: K @ v

    def product(v):
        v = np.asarray(v, dtype=np.float32)
        out = K.matmat(v.reshape(v.shape[0], -1))
        return out.reshape(v.shape)

    return product


def arpack_tol(K, k: int, lam_k_over_max: float | None) -> float:
    """ARPACK's ``tol`` equal to raysweep's target for the k-th pair (module docstring)."""
    if lam_k_over_max is None:  # a cheap estimate: λ_50/λmax bounds λ_k/λmax from above
        probe = top_eigenpairs(K, min(50, k), method="block", tol=1e-3)
        lam_k_over_max = float(probe.eigvals[-1] / probe.eigvals[0])
    return TARGET / lam_k_over_max


def run_solver(name: str, K, k: int, k64=None, *, arpack_tol_value=None, timeout=None):
    """One solve; returns ``(eigvals (k,), eigvecs (N, k) columns, matvecs or None, extra)``.

    ``K``: dense float32 array or a handle (``dense``/``lapack`` need the array).
    ``k64``: the float64 copy of ``K`` that ``arpack64`` multiplies with (made untimed).
    ``extra``: ``{"seconds": {...}}`` for raysweep's solvers, ``{"timed_out": True}`` for an
    ARPACK run stopped at ``timeout``, else ``{}``.
    """
    n = K.shape[0]
    if name in ("dense", "block", "nystrom"):
        res = top_eigenpairs(K, k, method=name)
        return res.eigvals, res.eigvecs.T, res.matvecs, {"seconds": res.seconds}
    if name in ("arpack", "arpack64"):
        counter = {"mv": 0}
        product = matrix_product(K) if name == "arpack" else (lambda v: k64 @ v)
        deadline = None if timeout is None else time.perf_counter() + timeout

        def matvec(x):
            if deadline is not None and time.perf_counter() > deadline:
                raise ArpackTimeout
            counter["mv"] += 1 if x.ndim == 1 else x.shape[1]
            return np.asarray(product(x), dtype=np.float32 if name == "arpack" else np.float64)

        dtype = np.float32 if name == "arpack" else np.float64
        op = scipy.sparse.linalg.LinearOperator(K.shape, matvec=matvec, dtype=dtype)
        try:
            vals, vecs = scipy.sparse.linalg.eigsh(op, k, which="LA", tol=arpack_tol_value or 0)
        except ArpackTimeout:
            return None, None, counter["mv"], {"timed_out": True}
        return vals, vecs, counter["mv"], {}
    if name in ("lapack", "lapack1"):
        with one_blas_thread() if name == "lapack1" else contextlib.nullcontext():
            vals, vecs = scipy.linalg.eigh(K, subset_by_index=[n - k, n - 1])
        return vals, vecs, None, {}
    raise ValueError(f"unknown solver {name!r}; choose from {SOLVERS}")


def max_relative_residual(K, vals: np.ndarray, vecs: np.ndarray) -> float:
    """``max_i ‖K v_i − λ_i v_i‖ / max λ`` in float64 (vectors normalized first)."""
    v = np.asarray(vecs, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=0)
    kv = KernelOperator(K).product64(v)
    res = np.linalg.norm(kv - v * np.asarray(vals, dtype=np.float64), axis=0)
    return float(res.max() / np.max(vals))


def bench_case(title: str, K, k: int, solvers, repeats: int, timeout: float) -> list[dict]:
    rows = []
    n = K.shape[0]
    dense = isinstance(K, np.ndarray)
    where = "in this process" if dense else "held by the Gram workers"
    print(f"\n== {title}: N={n}, k={k}, float32, {where} ==", flush=True)
    mem = lapack_memory(n, k)
    print(
        f"  LAPACK ssyevr subset would hold {sum(mem.values()) / 1e9:.1f} GB: "
        + ", ".join(f"{key} {v / 1e9:.2f} GB" for key, v in mem.items()),
        flush=True,
    )
    k64 = K.astype(np.float64) if "arpack64" in solvers and dense else None
    lam_ratio = None
    for name in solvers:
        if not dense and name in ("dense", "lapack", "lapack1", "arpack64", "nystrom"):
            print(f"  {LABELS[name]:<32s} not run: needs the matrix in one process", flush=True)
            continue
        tol_a = arpack_tol(K, k, lam_ratio) if name.startswith("arpack") else None
        best, cpu, out = np.inf, np.inf, None
        for rep in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            out = run_solver(name, K, k, k64, arpack_tol_value=tol_a, timeout=timeout)
            elapsed = time.perf_counter() - start
            best, cpu = min(best, elapsed), min(cpu, time.process_time() - start_cpu)
            if elapsed > 30 or rep + 1 == repeats:
                break
        vals, vecs, matvecs, extra = out
        if extra.get("timed_out"):
            rows.append(dict(solver=name, time=best, cpu=cpu, residual=np.nan, matvecs=matvecs))
            print(
                f"  {LABELS[name]:<32s} timed out after {best:.0f} s ({matvecs:,} products, "
                f"tol={tol_a:.1e})",
                flush=True,
            )
            continue
        rel = max_relative_residual(K, vals, vecs)
        if name == "block":
            lam_ratio = float(np.min(vals) / np.max(vals))
        rows.append(dict(solver=name, time=best, cpu=cpu, residual=rel, matvecs=matvecs))
        note = f"   (ARPACK tol={tol_a:.1e})" if tol_a is not None else ""
        print(
            f"  {LABELS[name]:<32s} {best:9.2f} s  (cpu {cpu:7.2f} s)   max res/λmax {rel:.1e}"
            + note,
            flush=True,
        )
        if extra.get("seconds"):
            parts = ", ".join(f"{key} {v:.1f} s" for key, v in extra["seconds"].items())
            print(f"  {'':<32s} by stage: {parts}", flush=True)
    return rows


def print_table(title: str, rows: list[dict], n: int) -> None:
    times = {r["solver"]: r["time"] for r in rows}
    timed_out = {r["solver"] for r in rows if np.isnan(r["residual"])}
    print(f"\n{title}")
    header = f"| {'solver':<32s} | {'time s':>8s} | {'cpu s':>7s} | {'ARPACK/t':>8s} | "
    header += f"{'LAPACK/t':>8s} | "
    header += f"{'LAPACK1/t':>9s} | {'res/λmax':>8s} | {'matvecs/N':>9s} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        t = r["time"]

        def ratio(ref, t=t):
            if ref not in times:
                return f"{'-':>8s}"
            bound = ">" if ref in timed_out else ""  # a timed-out run took at least that
            return f"{bound}{times[ref] / t:.2f}".rjust(8)

        mv = f"{r['matvecs'] / n:9.2f}" if r["matvecs"] is not None else f"{'-':>9s}"
        res = "timeout" if r["solver"] in timed_out else f"{r['residual']:.1e}"
        print(
            f"| {LABELS[r['solver']]:<32s} | {t:8.2f} | {r['cpu']:7.2f} | {ratio('arpack')} | "
            f"{ratio('lapack')} | "
            f"{ratio('lapack1'):>9s} | {res:>8s} | {mv} |"
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
        if np.isnan(rel):
            print(f"  {LABELS[name]}: timed out (no residual)")
        elif name != "nystrom":
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
    parser.add_argument("--cases", default="synthetic,ntk", help="synthetic,ntk,cifar")
    parser.add_argument(
        "--solvers",
        default="dense,block,nystrom,arpack,lapack,lapack1",
        help=",".join(SOLVERS),
    )
    parser.add_argument("--repeats", type=int, default=2, help="best of (runs under 30 s)")
    parser.add_argument(
        "--threads", type=int, default=None, help="BLAS threads for every solver (default: all)"
    )
    parser.add_argument("--cifar-n", type=int, default=12000, help="images of the cifar case")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: synthetic)")
    parser.add_argument(
        "--work", default="results/bench_eigen", help="tile stores and synthetic images"
    )
    parser.add_argument(
        "--dense-max-n",
        type=int,
        default=16000,
        help="largest cifar N assembled in this process (default 16000)",
    )
    parser.add_argument(
        "--arpack-timeout", type=float, default=600.0, help="seconds per ARPACK run (600)"
    )
    parser.add_argument(
        "--lapack-seconds-at",
        default=None,
        metavar="N:SECONDS",
        help="a measured LAPACK time, extrapolated as N³ to a cifar N it cannot run at",
    )
    args = parser.parse_args(argv)
    n, k = (12000, 1000) if args.large else (args.n, args.k)
    solvers = [s for s in args.solvers.split(",") if s]
    for s in solvers:
        if s not in SOLVERS:
            parser.error(f"unknown solver {s!r}; choose from {','.join(SOLVERS)}")
    cases = [c for c in args.cases.split(",") if c]
    for case in cases:
        if case not in ("synthetic", "ntk", "cifar"):
            parser.error(f"unknown case {case!r}; choose synthetic,ntk,cifar")
    lapack_at = None
    if args.lapack_seconds_at:
        try:
            at_n, at_s = args.lapack_seconds_at.split(":")
            lapack_at = (int(at_n), float(at_s))
        except ValueError:
            parser.error("--lapack-seconds-at takes N:SECONDS, e.g. 12000:95.3")
    results = []
    for case in cases:
        closer = None
        if case == "synthetic":
            K = synthetic_gram(n)
            title = "synthetic NTK-like spectrum"
        elif case == "ntk":
            K = ntk_gram_digits(n if args.large else None)
            title = "MLP NTK Gram on digits" + (" (jittered)" if args.large else "")
        else:
            K, closer = cifar_mlp_gram(
                args.cifar_n, args.data_dir, Path(args.work), args.dense_max_n
            )
            title = "MLP NTK Gram on CIFAR-format images" + (
                "" if args.data_dir else " (synthetic)"
            )
        case_k = k
        if case == "ntk":
            case_k = args.ntk_k if args.ntk_k is not None else round(k * K.shape[0] / n)
        limit = contextlib.nullcontext()
        if args.threads is not None:
            if threadpool_limits is None:
                parser.error("--threads needs threadpoolctl (pip install threadpoolctl)")
            limit = threadpool_limits(limits=args.threads, user_api="blas")
        try:
            with limit:
                rows = bench_case(title, K, case_k, solvers, args.repeats, args.arpack_timeout)
        finally:
            if closer is not None:
                closer()
        n_case = K.shape[0]
        if lapack_at is not None and case == "cifar" and not isinstance(K, np.ndarray):
            at_n, at_s = lapack_at
            print(
                f"  LAPACK extrapolated from {at_s:.1f} s at N={at_n:,}: "
                f"~{at_s * (n_case / at_n) ** 3:,.0f} s at N={n_case:,} (N³), if it fit"
            )
        results.append((f"{title}: N={n_case}, k={case_k}", rows, n_case))
        del K
    for title, rows, n_case in results:
        print_table(title, rows, n_case)
        check_goals(rows, args.large or n_case >= 12000)


if __name__ == "__main__":
    main()
