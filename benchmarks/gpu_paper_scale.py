"""Paper scale on one accelerator: ResNet18 and LeNet5 Grams, the eigensolver, packed training.

    python benchmarks/gpu_paper_scale.py                  # on the device, ~8 minutes
    python benchmarks/gpu_paper_scale.py --smoke-test     # toy sizes, any CPU (CI runs it)
    python benchmarks/gpu_paper_scale.py --only resnet18_gram lenet_gram

No Ray, Tune or neural-tangents: the engine (``ntk_gram``), the block eigensolver and the
packed trainer (``train_pack``) are called directly, so the script runs in an image that has
JAX, Flax, Optax and SciPy only. The 60,000 CIFAR-format images are written on the spot by
``raysweep.data.synthetic.write_cifar_like`` (22 s on 2 CPU cores) and read back through the
CIFAR-10 loader, so nothing has to be carried to the device.

Sections, in priority order (each one is skipped when less than its minimum time is left
before ``--deadline-seconds``; every finished section is written to ``--out`` at once, so a
timeout keeps what was measured):

``resnet18_gram``
    ResNet18 (11.2 M parameters) through ``auto`` (the structured path) at 2,000 and 4,000
    inputs, then the whole 60,000 CIFAR-10 Gram extrapolated: ``t(n) = a·n + b·n²`` through
    the two points (per-example features cost n, tile products n²), beside plain
    ``t(4000)·15²``. Also the n²·P float32 bound at the measured GEMM rate.
``lenet_gram``
    LeNet5 at N = 60,000, the whole Gram (14.4 GB), then
``lenet_eigen``
    the block eigensolver's top 1,000 pairs of that Gram with K resident on the device
    (products on the device, the rest on the host), with the largest residual.
``packed_sweep``
    targets per hour of packed training (``train_pack``, one compiled program for a pack of
    64 targets) beside one target per program, for the MLP and LeNet5 on the CIFAR-size
    training set (50,000 images, batch 128); from the steady-state time of one epoch, so
    targets per hour are quoted per 100-epoch target (the paper's schedule).
``packed_resnet18``
    packed ResNet18 training on CIFAR-size data (``--resnet-train`` images): packs of 1, 4
    and 8, seconds per epoch, targets per hour, the device's peak memory after each pack
    (packs run in increasing size, so it is that pack's peak) and whether it fits a 0.25
    share of the device.

Results: ``<out>/gpu_paper_scale.json`` (all sections) and the printed summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # peaks mean something

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_eigen import DeviceGram  # noqa: E402

from raysweep.config import TrainConfig  # noqa: E402
from raysweep.eigen import top_eigenpairs  # noqa: E402
from raysweep.models import get_model, init_variables, make_apply_fn  # noqa: E402
from raysweep.ntk import NTKEngine, ntk_gram  # noqa: E402
from raysweep.training import train_pack  # noqa: E402

CIFAR_N = 60_000
PAPER_EPOCHS = 100

# name: full size, smoke size
SIZES = {
    "resnet18_n": ((2000, 4000), (16, 32)),
    "resnet18_width": (64, 4),
    "image": ((32, 32, 3), (8, 8, 3)),
    "lenet_n": (CIFAR_N, 300),
    "eigen_k": (1000, 20),
    "train_n": (50_000, 256),
    "pack": (64, 4),
    "resnet_packs": ((1, 4, 8), (1, 2)),
    "budget_mb": (40_000, 512),
}
MIN_SECONDS = 60  # left before the deadline for a section to start (full size)


def size(name: str, smoke: bool):
    return SIZES[name][1 if smoke else 0]


def device_memory() -> dict:
    """Peak and limit of the first device's allocator (``None`` where it gives none)."""
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "peak_bytes": stats.get("peak_bytes_in_use"),
        "limit_bytes": stats.get("bytes_limit"),
    }


def gemm_tflops(smoke: bool) -> float:
    n, d = (256, 512) if smoke else (8192, 16384)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, d), jnp.float32)
    mm = jax.jit(lambda u: jnp.matmul(u, u.T, precision="highest"))
    mm(a).block_until_ready()
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n * n * d / best / 1e12


def timed(fn, repeats: int = 1):
    """(result, first call seconds, best later call seconds)."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, first, best


def cifar_images(folder: Path, smoke: bool) -> np.ndarray:
    """The 60,000 synthetic CIFAR-format images (train then test), NHWC float32 in [0, 1]."""
    from raysweep.data.cifar10 import read_cifar10
    from raysweep.data.synthetic import write_cifar_like

    n = CIFAR_N if not smoke else 600
    batches = folder / "cifar-10-batches-py"
    if not batches.exists():
        write_cifar_like(folder, n)
    raw = read_cifar10(batches)
    x = np.concatenate([raw.x_train, raw.x_test]).astype(np.float32) / raw.max_value
    if smoke:  # the toy models take 8x8 inputs
        x = x[:, ::4, ::4, :]
    return x


# ----------------------------------------------------------------------------- sections


def resnet18_gram(ctx: dict) -> dict:
    smoke = ctx["smoke"]
    module = get_model("resnet18", width=size("resnet18_width", smoke))
    variables = init_variables(module, size("image", smoke), seed=0)
    apply_fn, params = make_apply_fn(module, variables), variables["params"]
    budget = size("budget_mb", smoke)
    engine = NTKEngine(apply_fn, params, ctx["x"][:1], memory_budget_mb=budget)
    rows = []
    for n in size("resnet18_n", smoke):
        x = ctx["x"][:n]
        _, first, best = timed(lambda x=x: ntk_gram(apply_fn, params, x, memory_budget_mb=budget))
        rows.append({"n": n, "seconds": best, "first_call_seconds": first})
        print(f"  ResNet18 n={n}: {best:.2f} s (first call {first:.1f} s)", flush=True)
    (n1, t1), (n2, t2) = [(r["n"], r["seconds"]) for r in rows]
    b = (t2 / n2 - t1 / n1) / (n2 - n1)  # t/n = a + b n
    a = t1 / n1 - b * n1
    # a negative coefficient means timing noise swamped one of the terms (toy sizes)
    fit = a * CIFAR_N + b * CIFAR_N**2 if a >= 0 and b >= 0 else None
    quadratic = t2 * (CIFAR_N / n2) ** 2
    bound = CIFAR_N**2 * engine.num_params / (ctx["gemm_tflops"] * 1e12)
    fit_text = "no fit" if fit is None else f"{fit / 60:.1f} min"
    print(
        f"  whole CIFAR-10 Gram: {fit_text} (a·n + b·n² fit), "
        f"{quadratic / 60:.1f} min (n² from {n2}); N²·P bound {bound / 60:.1f} min",
        flush=True,
    )
    return {
        "method": engine.method,
        "params": engine.num_params,
        "feature_width": engine.feature_width,
        "rows": rows,
        "cifar_minutes_fit": None if fit is None else fit / 60,
        "cifar_minutes_quadratic": quadratic / 60,
        "n2p_bound_minutes": bound / 60,
        **device_memory(),
    }


def lenet_gram(ctx: dict) -> dict:
    smoke = ctx["smoke"]
    module = get_model("lenet5")
    variables = init_variables(module, size("image", smoke), seed=0)
    apply_fn, params = make_apply_fn(module, variables), variables["params"]
    n = size("lenet_n", smoke)
    x = ctx["x"][:n]
    start = time.perf_counter()
    gram = ntk_gram(apply_fn, params, x, memory_budget_mb=size("budget_mb", smoke))
    seconds = time.perf_counter() - start
    ctx["lenet_gram"] = gram
    print(f"  LeNet5 N={n}: whole Gram in {seconds:.1f} s (compilation included)", flush=True)
    return {
        "n": n,
        "seconds": seconds,
        "finite": bool(np.isfinite(gram).all()),
        "symmetric": bool(np.array_equal(gram, gram.T)) if smoke else None,
        **device_memory(),
    }


def lenet_eigen(ctx: dict) -> dict:
    gram = ctx.get("lenet_gram")
    if gram is None:
        return {"skipped": "no LeNet5 Gram (lenet_gram did not run)"}
    k = size("eigen_k", ctx["smoke"])
    handle = DeviceGram(jnp.asarray(gram))
    start = time.perf_counter()
    pairs = top_eigenpairs(handle, k, method="block")
    seconds = time.perf_counter() - start
    vals, vecs = pairs.eigvals, pairs.eigvecs
    kv = handle.matmat(vecs[:64].T)
    residual = float(np.abs(kv - vecs[:64].T * vals[:64]).max() / vals[0])
    print(
        f"  eigensolver: top {k} of N={gram.shape[0]} in {seconds:.1f} s, max residual of the "
        f"top 64 {residual:.1e}·λ₀",
        flush=True,
    )
    return {
        "n": gram.shape[0],
        "k": k,
        "seconds": seconds,
        "stage_seconds": dict(pairs.seconds or {}),
        "max_residual_top64": residual,
        "lambda0": float(vals[0]),
        **device_memory(),
    }


def _labels(t: int, n: int, seed: int) -> np.ndarray:
    return np.where(np.random.default_rng(seed).standard_normal((t, n)) >= 0, 1.0, -1.0)


def _epoch_seconds(model, variables, x, t: int, epochs: int = 2) -> float:
    """Steady-state seconds of one epoch of a pack of ``t`` targets (the first epoch compiles)."""
    y = _labels(t, len(x), 0).astype(np.float32)
    y_test = y[:, :64]
    times = []
    last = [time.perf_counter()]

    def on_epoch(_rows):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train = TrainConfig(epochs=epochs, batch_size=min(128, len(x)))
    train_pack(
        model, variables, x, y, x[:64], y_test, train=train, linearized=False, on_epoch=on_epoch
    )
    return min(times[1:] or times)


def packed_sweep(ctx: dict) -> dict:
    smoke = ctx["smoke"]
    x = ctx["x"][: size("train_n", smoke)]
    pack = size("pack", smoke)
    out = {}
    for name in ("mlp", "lenet5"):
        module = get_model(name)
        variables = init_variables(module, size("image", smoke), seed=0)
        one = _epoch_seconds(module, variables, x, 1)
        packed = _epoch_seconds(module, variables, x, pack)
        per_hour = {
            "one": 3600 / (PAPER_EPOCHS * one),
            "packed": pack * 3600 / (PAPER_EPOCHS * packed),
        }
        out[name] = {
            "train_n": len(x),
            "pack": pack,
            "epoch_seconds_one": one,
            "epoch_seconds_packed": packed,
            "targets_per_hour_one": per_hour["one"],
            "targets_per_hour_packed": per_hour["packed"],
            "speedup": per_hour["packed"] / per_hour["one"],
        }
        print(
            f"  {name}: one target {one:.2f} s/epoch ({per_hour['one']:.1f} targets/h), pack of "
            f"{pack} {packed:.2f} s/epoch ({per_hour['packed']:.1f} targets/h), "
            f"{per_hour['packed'] / per_hour['one']:.1f}x",
            flush=True,
        )
    return out


def packed_resnet18(ctx: dict) -> dict:
    smoke = ctx["smoke"]
    x = ctx["x"][: ctx["resnet_train"]]
    module = get_model("resnet18", width=size("resnet18_width", smoke))
    variables = init_variables(module, size("image", smoke), seed=0)
    rows = []
    for pack in size("resnet_packs", smoke):
        seconds = _epoch_seconds(module, variables, x, pack)
        mem = device_memory()
        limit = mem["limit_bytes"]
        fits = None if not (mem["peak_bytes"] and limit) else mem["peak_bytes"] <= 0.25 * limit
        rows.append(
            {
                "pack": pack,
                "train_n": len(x),
                "epoch_seconds": seconds,
                "targets_per_hour": pack * 3600 / (PAPER_EPOCHS * seconds),
                **mem,
                "fits_quarter_share": fits,
            }
        )
        peak = f"{mem['peak_bytes'] / 1e9:.1f} GB" if mem["peak_bytes"] else "n/a"
        print(
            f"  ResNet18 pack {pack}: {seconds:.2f} s/epoch on {len(x)} images, "
            f"{rows[-1]['targets_per_hour']:.2f} targets/h (100 epochs), peak {peak}, "
            f"fits a 0.25 share: {fits}",
            flush=True,
        )
    return {"rows": rows}


RUNNERS = {
    "resnet18_gram": resnet18_gram,
    "lenet_gram": lenet_gram,
    "lenet_eigen": lenet_eigen,
    "packed_sweep": packed_sweep,
    "packed_resnet18": packed_resnet18,
}
SECTIONS = tuple(RUNNERS)  # in priority order


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke-test", action="store_true", help="toy sizes (any CPU, ~1 minute)")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="run these sections only")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_results")))
    ap.add_argument("--data-dir", type=Path, help="synthetic CIFAR folder (default: a temp dir)")
    ap.add_argument(
        "--deadline-seconds",
        type=float,
        default=480,
        help="skip a section that cannot start this long after launch minus its minimum",
    )
    ap.add_argument("--resnet-train", type=int, help="ResNet18 training images (default 10,000)")
    args = ap.parse_args(argv)
    smoke = args.smoke_test
    sections = args.only or list(SECTIONS)
    if "lenet_eigen" in sections and "lenet_gram" not in sections:
        raise SystemExit("lenet_eigen needs the Gram of lenet_gram: add lenet_gram to --only.")
    args.out.mkdir(parents=True, exist_ok=True)
    launch = time.monotonic()
    results: dict = {
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "smoke_test": smoke,
    }
    path = args.out / "gpu_paper_scale.json"

    def save():
        path.write_text(json.dumps(results, indent=1, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        x = cifar_images(args.data_dir or Path(tmp), smoke)
        results["data_seconds"] = time.perf_counter() - start
        print(f"{len(x)} CIFAR-format images ready in {results['data_seconds']:.1f} s", flush=True)
        results["gemm_tflops"] = gemm_tflops(smoke)
        print(f"float32 GEMM: {results['gemm_tflops']:.2f} TFLOP/s", flush=True)
        ctx = {
            "smoke": smoke,
            "x": x,
            "gemm_tflops": results["gemm_tflops"],
            "resnet_train": args.resnet_train or (64 if smoke else 10_000),
        }
        save()
        for name in sections:
            left = args.deadline_seconds - (time.monotonic() - launch)
            if not smoke and left < MIN_SECONDS:
                results[name] = {"skipped": f"{left:.0f} s left before the deadline"}
                print(f"[{name}] skipped: {left:.0f} s left", flush=True)
                save()
                continue
            print(f"[{name}]", flush=True)
            start = time.perf_counter()
            try:
                results[name] = RUNNERS[name](ctx)
            except Exception as err:  # noqa: BLE001 - one failed section keeps the others
                results[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
                print(f"  failed: {results[name]['error']}", flush=True)
            results[name]["section_seconds"] = time.perf_counter() - start
            save()
    results["ray_imported"] = "ray" in sys.modules  # the device image may not have Ray
    save()
    print(f"results: {path}", flush=True)
    failed = [n for n in sections if "error" in results.get(n, {})]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
