"""raysweep.eigen against float64 numpy.linalg.eigh on matrices with known spectra."""

from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
import pytest
import scipy.sparse.linalg

from raysweep.eigen import (
    ConvergenceWarning,
    EigenPairs,
    KernelOperator,
    binarization_diagnostic,
    eigen_labels,
    fix_signs,
    resolve_method,
    top_eigenpairs,
)

TOL = 1e-6


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """Correctness does not depend on threads; on a shared machine two BLAS threads on busy
    cores make these small problems several times slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # installed with scikit-learn; without it, run on every thread
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def known_psd(n: int, spectrum: np.ndarray, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """``Q diag(spectrum) Qᵀ`` with a Haar-random orthogonal Q, exactly symmetric."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    k = (q * spectrum) @ q.T
    return (0.5 * (k + k.T)).astype(dtype)


def power_law(n: int, alpha: float = 1.5) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.float64) ** -alpha


def reference(K: np.ndarray, k: int):
    """Top-k of float64 eigh: values descending, rows sign-normalized like raysweep's."""
    w, v = np.linalg.eigh(np.asarray(K, dtype=np.float64))
    vecs = np.ascontiguousarray(v[:, ::-1][:, :k].T)
    return w[::-1][:k], fix_signs(vecs)


def recomputed_residuals(K, vals, vecs) -> np.ndarray:
    v = vecs.astype(np.float64)
    return np.linalg.norm(v @ np.asarray(K, np.float64) - vals[:, None] * v, axis=1)


class MatmatOnly:
    """A handle with only shape, dtype and matmat; records the width of every call."""

    def __init__(self, K):
        self._K = K
        self.shape = K.shape
        self.dtype = K.dtype
        self.widths: list[int] = []

    def matmat(self, V):
        assert V.ndim == 2 and V.shape[0] == self.shape[0]
        self.widths.append(V.shape[1])
        return self._K @ V


class WithToNumpy(MatmatOnly):
    def to_numpy(self):
        return self._K


@pytest.fixture(scope="module")
def k64():
    return known_psd(400, power_law(400), seed=1)


@pytest.fixture(scope="module")
def k32():
    spectrum = np.concatenate([[10.0], 0.5 * power_law(499, 1.2)])
    return known_psd(500, spectrum, seed=2, dtype=np.float32)


def check_pairs(result, K, k, *, val_rtol, vec_atol, res_tol=TOL, min_vecs=5):
    ref_vals, ref_vecs = reference(K, k)
    vals, vecs = result  # unpacks like a tuple
    lam = ref_vals[0]
    assert vals.shape == (k,) and vecs.shape == (k, K.shape[0])
    assert vals.dtype == np.float64
    assert np.all(np.diff(vals) <= 0), "eigenvalues must be descending"
    np.testing.assert_allclose(np.linalg.norm(vecs.astype(np.float64), axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(vals, ref_vals, rtol=0, atol=val_rtol * lam)
    # compare vectors where Davis-Kahan (sin θ <= residual / gap) guarantees vec_atol
    spectrum = np.linalg.eigvalsh(np.asarray(K, np.float64))[::-1]
    gaps = np.abs(np.diff(spectrum[: k + 1]))
    gap = np.minimum(np.r_[np.inf, gaps[: k - 1]], gaps[:k])
    ok = np.sqrt(2) * np.maximum(result.residuals, 1e-14 * lam) / gap <= vec_atol
    assert ok.sum() >= min_vecs and ok[0]
    np.testing.assert_allclose(vecs[ok], ref_vecs[ok], rtol=0, atol=vec_atol)
    # the sign convention: largest-magnitude entry positive
    lead = vecs[np.arange(k), np.argmax(np.abs(vecs), axis=1)]
    assert np.all(lead > 0)
    # residuals: as reported == independent float64 recomputation
    np.testing.assert_allclose(
        result.residuals, recomputed_residuals(K, vals, vecs), rtol=1e-6, atol=1e-12 * lam
    )
    if res_tol is not None:
        assert result.residuals.max() <= res_tol * lam
        assert result.converged.all()


@pytest.mark.parametrize("method", ["dense", "block"])
def test_float64_matches_eigh(k64, method):
    result = top_eigenpairs(k64, 25, method=method, tol=1e-10)
    assert isinstance(result, EigenPairs) and result.method == method
    assert result.eigvecs.dtype == np.float64
    check_pairs(result, k64, 25, val_rtol=1e-10, vec_atol=1e-6, res_tol=1e-10, min_vecs=20)


@pytest.mark.parametrize("method", ["dense", "block"])
def test_float32_matches_eigh(k32, method):
    result = top_eigenpairs(k32, 40, method=method)
    assert result.eigvecs.dtype == np.float32
    check_pairs(result, k32, 40, val_rtol=1e-6, vec_atol=1e-2, min_vecs=10)


def test_block_through_matmat_only_handle_counts_and_locking(k32):
    handle = MatmatOnly(k32)
    result = top_eigenpairs(handle, 30, method="block", block_size=24, max_basis=90)
    check_pairs(result, k32, 30, val_rtol=1e-6, vec_atol=1e-2, min_vecs=10)
    widths = handle.widths
    assert result.matvecs == sum(widths) and len(widths) >= 3
    assert widths[-1] == 30  # the final float64 residual product of the returned vectors
    assert max(widths[:-1]) <= 24
    assert result.iterations >= 2  # the small basis forced restarts ...
    # ... after which locked pairs are not multiplied again: once fewer than block_size wanted
    # pairs are unconverged, the Krylov blocks narrow to them
    assert widths[:3] == [24, 24, 24]
    assert max(widths[-4:-1]) < 24 and sum(widths[:-1]) < 24 * (len(widths) - 1)


class SlowMatmat(MatmatOnly):
    """A handle whose products take at least ``delay`` seconds each (a Gram far away)."""

    delay = 0.02

    def matmat(self, V):
        time.sleep(self.delay)
        return super().matmat(V)


def test_block_splits_its_time_by_stage(k32):
    from raysweep.eigen.block import STAGES

    handle = SlowMatmat(k32)
    start = time.perf_counter()
    result = top_eigenpairs(handle, 30, method="block", block_size=24, max_basis=90)
    wall = time.perf_counter() - start
    assert set(result.seconds) == {*STAGES, "residual"}
    assert all(v >= 0 for v in result.seconds.values())
    solver_calls = len(handle.widths) - 1  # the last one is the residual product
    assert result.seconds["products"] >= SlowMatmat.delay * solver_calls
    assert result.seconds["residual"] >= SlowMatmat.delay
    assert result.seconds["restart"] > 0 and result.iterations >= 2  # restarts happened
    assert sum(result.seconds.values()) <= wall
    dense = top_eigenpairs(k32, 5, method="dense")
    assert set(dense.seconds) == {"lapack", "residual"} and dense.seconds["lapack"] > 0
    assert pickle.loads(pickle.dumps(dense)).seconds == dense.seconds


def test_block_progress_reports_monotone_converged_counts(k32, tmp_path):
    """Restarts forced by a small basis: the converged count never falls, rises over the
    cycles, and the final report matches the result; the reporter throttles the console and
    writes the file ``raysweep status`` reads."""
    from raysweep.eigen import progress_reporter, read_progress
    from raysweep.eigen.progress import progress_lines

    handle = MatmatOnly(k32)
    events = []
    result = top_eigenpairs(
        handle, 30, method="block", block_size=24, max_basis=90, progress=events.append
    )
    assert result.iterations >= 2 and events[-1].done
    counts = [e.converged for e in events]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 30
    assert any(0 < c < 30 for c in counts)  # seen part-way, not only at the end
    running = events[:-1]
    assert len(running) == len(handle.widths) - 1 + result.iterations - 1  # products + cycles
    assert [e.matvecs for e in running] == sorted(e.matvecs for e in running)
    assert events[-1].matvecs == result.matvecs and events[-1].cycle == result.iterations
    assert all(e.eta_s is None or e.eta_s >= 0 for e in events)
    assert all(e.basis <= e.capacity for e in running)
    # the reporter: console at most every 15 s of the (fake) clock, file every report
    ticks = iter(np.arange(len(events) + 1) * 5.0)
    lines = []
    gram = tmp_path / "artifacts" / "mlp-digits" / "gram"
    gram.mkdir(parents=True)
    report = progress_reporter(
        lines.append, gram / "eigen_progress.json", write_every_s=0.0, clock=lambda: next(ticks)
    )
    for e in events[:7]:
        report(e)
    assert len(lines) == 2 and all("pairs converged" in line for line in lines)
    assert read_progress(gram / "eigen_progress.json")["matvecs"] == events[6].matvecs
    status = progress_lines(tmp_path)
    assert len(status) == 1 and status[0].startswith("eigensolver (mlp-digits): block: cycle")
    report(events[-1])
    assert progress_lines(tmp_path)[0].startswith(
        f"eigensolver (mlp-digits): block: 30/30 pairs converged after {result.iterations} cycle"
    )


def test_block_is_deterministic_given_seed(k32):
    a = top_eigenpairs(k32, 20, method="block", seed=7)
    b = top_eigenpairs(MatmatOnly(k32), 20, method="block", seed=7)
    np.testing.assert_array_equal(a.eigvecs, b.eigvecs)
    np.testing.assert_array_equal(a.eigvals, b.eigvals)
    c = top_eigenpairs(k32, 20, method="block", seed=8)
    np.testing.assert_allclose(c.eigvals, a.eigvals, rtol=0, atol=1e-6 * a.eigvals[0])


def test_block_through_scipy_linear_operator(k64):
    op = scipy.sparse.linalg.aslinearoperator(k64)
    result = top_eigenpairs(op, 10, method="auto")
    assert result.method == "block"  # no to_numpy
    check_pairs(result, k64, 10, val_rtol=1e-7, vec_atol=1e-2, min_vecs=3)


def test_block_max_iter_warns_and_names_pairs(k32):
    with pytest.warns(ConvergenceWarning, match=r"max_iter=1 reached.*#\d+: "):
        result = top_eigenpairs(k32, 40, method="block", max_iter=1, max_basis=60)
    assert result.eigvals.shape == (40,) and not result.converged.all()


def test_block_stops_when_tol_is_below_float32_floor(k32):
    with pytest.warns(ConvergenceWarning, match=r"stalled for 3 cycles .* float32 rounding floor"):
        result = top_eigenpairs(k32, 10, method="block", tol=1e-10)
    assert result.iterations < 20
    assert result.residuals.max() <= 1e-6 * result.eigvals[0]  # still as good as float32 gets


def test_block_rank_deficient_matrix():
    f = np.random.default_rng(3).standard_normal((200, 6))
    K = f @ f.T
    result = top_eigenpairs(K, 10, method="block")
    ref_vals, _ = reference(K, 10)
    np.testing.assert_allclose(result.eigvals, ref_vals, atol=1e-8 * ref_vals[0])
    assert result.residuals.max() <= TOL * ref_vals[0]
    gram = result.eigvecs @ result.eigvecs.T
    np.testing.assert_allclose(gram, np.eye(10), atol=1e-6)


def test_nystrom_with_all_landmarks_is_exact(k64):
    result = top_eigenpairs(k64, 25, method="nystrom", num_landmarks=400)
    check_pairs(result, k64, 25, val_rtol=1e-12, vec_atol=1e-8, res_tol=1e-12, min_vecs=25)


def test_nystrom_residuals_are_against_true_k(k64):
    result = top_eigenpairs(k64, 10, method="nystrom", num_landmarks=40, seed=3)
    vals, vecs = result
    np.testing.assert_allclose(result.residuals, recomputed_residuals(k64, vals, vecs), rtol=1e-6)
    assert result.residuals.max() > 1e-6 * vals[0]  # an approximation, and it shows
    via_handle = top_eigenpairs(MatmatOnly(k64), 10, method="nystrom", num_landmarks=40, seed=3)
    np.testing.assert_allclose(via_handle.eigvals, vals, rtol=1e-12)
    assert via_handle.matvecs == 40 + 10  # indicator columns, then the residual product


def test_auto_resolution(k64):
    assert top_eigenpairs(k64, 5).method == "dense"  # small array
    assert top_eigenpairs(MatmatOnly(k64), 5).method == "block"  # no to_numpy
    assert top_eigenpairs(WithToNumpy(k64), 5).method == "dense"  # small, fits
    big = MatmatOnly(np.zeros((1, 1)))
    big.shape, big.dtype = (20000, 20000), np.dtype(np.float32)
    big.to_numpy = lambda: None
    op = KernelOperator(big)
    assert resolve_method(op, 100, "auto", max_dense_bytes=2**40) == "block"  # large N, small k
    assert resolve_method(op, 7000, "auto", max_dense_bytes=2**40) == "dense"  # k > 0.3 N
    assert resolve_method(op, 7000, "auto", max_dense_bytes=2**20) == "block"  # does not fit
    assert resolve_method(KernelOperator(np.eye(2000)), 100, "auto", 0) == "block"  # 5% of N
    assert resolve_method(KernelOperator(np.eye(2000)), 400, "auto", 0) == "dense"  # 20% of N


def test_dense_via_to_numpy_and_integer_input():
    K = np.array([[4, 1, 0], [1, 3, 1], [0, 1, 2]])
    result = top_eigenpairs(WithToNumpy(K.astype(np.float64)), 2, method="dense")
    ref_vals, ref_vecs = reference(K, 2)
    np.testing.assert_allclose(result.eigvals, ref_vals, rtol=1e-12)
    ints = top_eigenpairs(K, 2)
    assert ints.eigvecs.dtype == np.float64
    np.testing.assert_allclose(ints.eigvecs, ref_vecs, atol=1e-12)


def test_eigenpairs_tuple_and_pickle(k64):
    result = top_eigenpairs(k64, 3)
    assert len(result) == 2 and result[0] is result.eigvals and result[1] is result.eigvecs
    back = pickle.loads(pickle.dumps(result))
    assert isinstance(back, EigenPairs) and back.method == result.method
    np.testing.assert_array_equal(back.residuals, result.residuals)
    assert "EigenPairs(k=3" in repr(result)


def test_fix_signs_ties_go_to_first_index():
    rows = np.array([[-1.0, 1.0, 0.5], [0.2, -0.9, 0.9], [0.0, 0.0, 0.0]])
    fix_signs(rows)
    np.testing.assert_array_equal(rows[0], [1.0, -1.0, -0.5])
    np.testing.assert_array_equal(rows[1], [-0.2, 0.9, -0.9])
    np.testing.assert_array_equal(rows[2], 0.0)


def test_binarization_diagnostic_gaussian_and_binary():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((8, 5000))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    diag = binarization_diagnostic(g)
    assert diag.shape == (8,)
    np.testing.assert_allclose(diag, np.sqrt(2 / np.pi), atol=0.02)
    binary = np.where(rng.random(100) > 0.5, 1.0, -1.0) / 10.0
    np.testing.assert_allclose(binarization_diagnostic(binary), 1.0)


def test_eigen_labels_sign_convention():
    vecs = np.array([[0.5, -0.5, 0.0, -0.0, 0.7]], dtype=np.float32)
    labels = eigen_labels(vecs, 0)
    np.testing.assert_array_equal(labels, [1, -1, 1, 1, 1])
    assert labels.dtype == np.float32
    assert eigen_labels(vecs, 0, dtype=np.int8).dtype == np.int8
    with pytest.raises(ValueError, match=r"j=1 is out of range for 1 eigenvector rows"):
        eigen_labels(vecs, 1)
    with pytest.raises(TypeError, match=r"eigen_labels: j must be a non-negative integer"):
        eigen_labels(vecs, 0.0)


def test_real_ntk_gram_block_vs_eigh():
    import jax
    import jax.numpy as jnp

    from raysweep.ntk import ntk_gram

    keys = jax.random.split(jax.random.key(0), 3)
    params = {
        "w1": jax.random.normal(keys[0], (5, 32)) / jnp.sqrt(5.0),
        "b1": jnp.zeros(32),
        "w2": jax.random.normal(keys[1], (32, 1)) / jnp.sqrt(32.0),
    }

    def apply_fn(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]

    x = np.asarray(jax.random.normal(keys[2], (300, 5)))
    K = ntk_gram(apply_fn, params, x)
    assert K.dtype == np.float32
    result = top_eigenpairs(MatmatOnly(K), 20, method="block")
    ref_vals, _ = reference(K, 20)
    np.testing.assert_allclose(result.eigvals, ref_vals, rtol=0, atol=1e-5 * ref_vals[0])
    assert result.residuals.max() <= TOL * ref_vals[0]
    dense = top_eigenpairs(K, 20, method="dense")
    overlap = np.abs(np.sum(result.eigvecs.astype(np.float64) * dense.eigvecs, axis=1))
    assert np.median(overlap) > 0.999


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("k", "error", "match"),
    [
        (0, ValueError, r"k must be a positive integer \(the number of eigenpairs\), got 0\."),
        (-3, ValueError, r"k must be a positive integer .*, got -3\."),
        (30, ValueError, r"k=30 must be smaller than N=30; for all N eigenpairs use numpy"),
        (31, ValueError, r"k=31 must be smaller than N=30"),
        (2.5, TypeError, r"k must be a positive integer .*, got 2\.5 \(float\)"),
        (True, TypeError, r"k must be a positive integer .*, got True \(bool\)"),
    ],
)
def test_bad_k(k, error, match):
    with pytest.raises(error, match=match):
        top_eigenpairs(np.eye(30), k)


@pytest.mark.parametrize(
    ("K", "error", "match"),
    [
        (np.ones(5), ValueError, r"K must be 2-D \(N, N\), got shape \(5,\)"),
        (np.ones((2, 2, 2)), ValueError, r"K must be 2-D"),
        (np.ones((4, 5)), ValueError, r"K must be square \(N, N\), got shape \(4, 5\)"),
        (np.ones((1, 1)), ValueError, r"at least 2 x 2"),
        (np.eye(4, dtype=complex), TypeError, r"dtype complex128; expected a real"),
        (np.triu(np.ones((6, 6))), ValueError, r"K is not symmetric: max\|K − Kᵀ\| = 1.000e\+00"),
    ],
)
def test_bad_matrix(K, error, match):
    with pytest.raises(error, match=match):
        top_eigenpairs(K, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_matrix(bad):
    K = np.eye(6)
    K[2, 4] = K[4, 2] = bad
    with pytest.raises(ValueError, match=r"K contains NaN or inf \(first at row 2, column 4"):
        top_eigenpairs(K, 2)


def test_non_symmetric_large_matrix_checked_on_sample():
    K = np.eye(1500, dtype=np.float32)
    K[:, 7] += 1.0  # column 7 differs from row 7
    with pytest.raises(ValueError, match=r"not symmetric.*checked on 256 random rows"):
        top_eigenpairs(K, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(method="lanczos"), ValueError, r"method='lanczos' is not supported; choose one of"),
        (
            dict(method="nystrom", num_landmarks=3),
            ValueError,
            r"num_landmarks must be an integer in \[5, 40\]",
        ),
        (
            dict(method="nystrom", num_landmarks=41),
            ValueError,
            r"num_landmarks must be an integer in \[5, 40\]",
        ),
        (dict(method="block", num_landmarks=10), ValueError, r"only applies to method='nystrom'"),
        (dict(tol=0.0), ValueError, r"tol is relative .* in \(0, 1\), got 0.0"),
        (dict(tol="1e-6"), TypeError, r"tol must be a float"),
        (dict(max_iter=0), ValueError, r"max_iter must be a positive integer, got 0"),
        (dict(block_size=0), ValueError, r"block_size must be an? "),
        (dict(seed=1.5), TypeError, r"seed must be an int or None"),
        (dict(driver="evd"), ValueError, r"driver='evd' is not supported"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        top_eigenpairs(np.eye(40), 5, **kwargs)


def test_bad_handles():
    class ShapeOnly:
        shape, dtype = (10, 10), np.float64

    with pytest.raises(TypeError, match=r"lacks matmat; pass a numpy array or an operator"):
        top_eigenpairs(ShapeOnly(), 2)
    with pytest.raises(TypeError, match=r"has no to_numpy\(\); method='dense' needs"):
        top_eigenpairs(MatmatOnly(np.eye(10)), 2, method="dense")
    with pytest.raises(ValueError, match=r"K must be square"):
        top_eigenpairs(MatmatOnly(np.ones((10, 12))), 2)
    lower = np.tril(np.random.default_rng(0).random((50, 50)))
    with pytest.raises(ValueError, match=r"K does not act symmetrically"):
        top_eigenpairs(MatmatOnly(lower), 2, method="block")


def test_no_warning_when_converged(k64):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top_eigenpairs(k64, 10, method="block")


def test_dense_solves_small_float32_matrices_in_float64(k32, monkeypatch):
    """float32 LAPACK misses the 1e-6 target on NTK Grams of a few thousand rows: up to
    FLOAT64_MAX_N rows the solve runs in float64, and the result stays float32."""
    import raysweep.eigen.dense as dense

    seen = []
    real_eigh = dense.scipy.linalg.eigh

    def eigh(matrix, **kwargs):
        seen.append(matrix.dtype)
        return real_eigh(matrix, **kwargs)

    monkeypatch.setattr(dense.scipy.linalg, "eigh", eigh)
    small = top_eigenpairs(k32, 10, method="dense")
    assert seen == [np.float64] and small.eigvecs.dtype == np.float32
    assert small.residuals.max() <= 1e-6 * small.eigvals[0]
    monkeypatch.setattr(dense, "FLOAT64_MAX_N", k32.shape[0] - 1)
    top_eigenpairs(k32, 10, method="dense")
    assert seen == [np.float64, np.float32]
