"""Network vs linearization at initialization vs linearization around the trained network.

    python sweeps/pretrained_ntk.py                                 # digits, MLP: minutes on a CPU
    python sweeps/pretrained_ntk.py --preset cifar10 --data-dir /data --indices 0,10,100
    python sweeps/pretrained_ntk.py --smoke-test                    # what CI runs

On the labels sign(φ_j) of the eigen sweep's eigenfunctions (its artifact is reused, or
computed), trains (a) the network, (b) its linearization at θ₀ and (c) its linearization
around the network's final parameters θ_T (batch-norm statistics reset to initialization);
both linearizations centered (f_lin − f(θ_base)), so they start from zero output. Prints final
test accuracy and steps to the loss threshold of each; the records (with every epoch) go to
<results>/analysis/pretrained_ntk.json.
"""

from __future__ import annotations

import sys

from raysweep.script import indices_or_default, parse_indices, run_script, script_parser

DEFAULT_INDICES = {"smoke": (0, 8, 32)}
PAPER_INDICES = (0, 10, 100, 500)


def main(argv=None) -> int:
    ap = script_parser(
        "python sweeps/pretrained_ntk.py",
        "Network vs linearization at init vs linearization around the trained network, on "
        "NTK eigenfunction targets.",
        examples="Example: python sweeps/pretrained_ntk.py --indices 0,8,32 train.optimizer=adam",
    )
    ap.add_argument(
        "--indices",
        type=parse_indices,
        help="eigen-indices j, comma-separated (default: 0,8,32 offline; 0,10,100,500 on the "
        "paper presets)",
    )
    args = ap.parse_args(argv)

    def study(config, out):
        from raysweep.analysis import format_table, pretrained_rows
        from raysweep.evolution import pretrained_study

        default = (0, 3) if args.smoke_test else DEFAULT_INDICES.get(config.preset, PAPER_INDICES)
        records = pretrained_study(
            config,
            out,
            eigen_indices=indices_or_default(args.indices, default),
            progress=not args.quiet,
        )
        header, rows = pretrained_rows({"records": records})
        print("\nfinal test accuracy and steps to the loss threshold:")
        print(format_table(header, rows, fmt="text"))

    return run_script(args, "pretrained_ntk", study)


if __name__ == "__main__":
    sys.exit(main())
