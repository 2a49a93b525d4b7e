"""Alignment of the initial NTK eigenfunctions with the NTK after training (paper Figs 6-7).

    python sweeps/kernel_alignment.py                              # digits, MLP: minutes on a CPU
    python sweeps/kernel_alignment.py --preset cifar10 --data-dir /data --indices 0,10,100,500
    python sweeps/kernel_alignment.py --smoke-test                 # what CI runs

Uses the eigenfunction artifact of the eigen sweep with the same options (computing it when
absent), trains the network on sign(φ_j) for each index j (one packed run), then measures the
normalized alignment φ_iᵀ Θ_T φ_i / (n ‖φ_i‖²) of the first K initial eigenfunctions with the
final NTK Θ_T on the train, test and all samples, by vector-Jacobian products (no Gram). The
result goes to <results>/analysis/alignment.npz; `raysweep report <results>` draws it.
"""

from __future__ import annotations

import sys

import numpy as np

from raysweep.script import indices_or_default, parse_indices, run_script, script_parser

DEFAULT_INDICES = {"smoke": (0, 4, 16, 64)}
PAPER_INDICES = (0, 10, 50, 100, 500)


def main(argv=None) -> int:
    ap = script_parser(
        "python sweeps/kernel_alignment.py",
        "Alignment of the first K initial NTK eigenfunctions with the NTK after training on "
        "eigenfunction j (paper Figs 6-7).",
        examples="Example: " + "python sweeps/kernel_alignment.py --indices 0,8,32",
    )
    ap.add_argument(
        "--indices",
        type=parse_indices,
        help="trained eigen-indices j, comma-separated (default: 0,4,16,64 offline; "
        "0,10,50,100,500 on the paper presets)",
    )
    ap.add_argument(
        "--num-eigen",
        type=int,
        help="K initial eigenfunctions probed (default: all of the artifact's)",
    )
    args = ap.parse_args(argv)

    def study(config, out):
        from raysweep.evolution import alignment_study

        if args.smoke_test:
            default = (0, 3)
        else:
            default = DEFAULT_INDICES.get(config.preset, PAPER_INDICES)
        data = alignment_study(
            config,
            out,
            trained_indices=indices_or_default(args.indices, default),
            num_eigen=args.num_eigen,
            progress=not args.quiet,
        )
        split = next(iter(data.alpha))
        print(f"\nnormalized alignment on the {split} samples, trained index vs strongest index:")
        for t, j in enumerate(data.trained_indices):
            row = data.alpha[split][t]
            print(
                f"  trained j={j:<4d} ᾱ_T(φ_j) = {row[j]:.3g} (at init {data.init[split][j]:.3g});"
                f" growth x{row[j] / data.init[split][j]:.2f}, median growth "
                f"x{float(np.median(row / data.init[split])):.2f}"
            )

    return run_script(args, "kernel_alignment", study)


if __name__ == "__main__":
    sys.exit(main())
