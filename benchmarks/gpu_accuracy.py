"""float32 accuracy of the NTK engine on the current device against a float64 reference.

    python benchmarks/gpu_accuracy.py [--n 256]

GPUs run float32 matrix products in TF32 unless told otherwise; raysweep asks for full
float32 (``precision="highest"``). This script computes the Gram of the paper's LeNet and of a
narrow ResNet18 on ``n`` CIFAR-shaped inputs with every method in float32 on the default
device, and the same Gram by Jacobian contraction in float64, and prints the relative error
(max |Δ| / max |Θ|); the engine's goal is ≤ 1e-5. ``precision="default"`` is shown too, to make
the TF32 effect visible.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from nt_models import get_model  # noqa: E402

from raysweep.ntk import ntk_gram  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=256)
    args = ap.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0]}")
    x32 = np.random.default_rng(0).standard_normal((args.n, 32, 32, 3)).astype(np.float32)
    worst = 0.0
    for name in ("paper_mlp", "paper_lenet"):
        params, _, apply_fn = get_model(name, seed=0, input_shape=(32, 32, 3))
        p32 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
        p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
        ref = ntk_gram(apply_fn, p64, x32.astype(np.float64), method="contraction")
        for method in ("contraction", "structured", "ntvp"):
            for precision in ("highest", "default"):
                start = time.perf_counter()
                got = ntk_gram(apply_fn, p32, x32, method=method, precision=precision)
                err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
                if precision == "highest":
                    worst = max(worst, err)
                print(
                    f"{name:<13}{method:<13}{precision:<9}rel err {err:9.2e}  "
                    f"({time.perf_counter() - start:.1f} s incl. compile)",
                    flush=True,
                )
    print(f"worst float32 error at precision='highest': {worst:.2e} (goal <= 1e-5)")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
