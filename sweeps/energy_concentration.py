"""Energy concentration of a binary task's labels on the NTK before and after training (Table 1).

    python sweeps/energy_concentration.py                         # digits2, MLP: a minute on a CPU
    python sweeps/energy_concentration.py --preset cifar2 --data-dir /data model.name=lenet5
    python sweeps/energy_concentration.py --smoke-test            # what CI runs

Trains the network on the binary task of the preset's dataset (CIFAR2 for cifar10/cifar2,
200 epochs as in the paper unless train.epochs is given; the binary digits task offline),
computes the NTK Gram over its training samples at initialization and at the end of training
on Ray workers (resumable tile stores), and prints ‖Φ_K y‖²/‖y‖² for the top K eigenvectors of
each. The record goes to <results>/analysis/energy_concentration.json, where
`raysweep report <results>` turns the records of all models into Table 1. Run it once per
model (model.name=mlp|lenet5|resnet18) to fill the table.
"""

from __future__ import annotations

import dataclasses
import sys

from raysweep.script import run_script, script_parser

PAPER_GRAM_SAMPLES = 12_000
PAPER_EPOCHS = 200


def main(argv=None) -> int:
    ap = script_parser(
        "python sweeps/energy_concentration.py",
        "Energy of the binary task's labels on the top-K NTK eigenvectors, at initialization "
        "and after training (paper Table 1).",
        examples="Example: python sweeps/energy_concentration.py --preset cifar2 model.name=lenet5",
    )
    ap.add_argument("--k", type=int, default=50, help="top eigenvectors K (paper: 50)")
    ap.add_argument(
        "--gram-samples",
        type=int,
        help=f"training samples in the Grams (default: {PAPER_GRAM_SAMPLES:,} on CIFAR as in "
        "the paper, all on the other datasets)",
    )
    args = ap.parse_args(argv)
    epochs_given = any(o.startswith("train.epochs=") for o in args.overrides)

    def study(config, out):
        from raysweep.evolution import energy_study

        cifar = config.data.name in ("cifar10", "cifar2")
        if cifar and not epochs_given and not args.smoke_test:
            config = dataclasses.replace(
                config, train=dataclasses.replace(config.train, epochs=PAPER_EPOCHS)
            )
        samples = args.gram_samples or (PAPER_GRAM_SAMPLES if cifar else None)
        record = energy_study(config, out, k=args.k, gram_samples=samples, progress=not args.quiet)
        print(
            f"\n{record['model']} on {record['dataset']}: energy on the top {record['k']} "
            f"eigenvectors {record['energy_init']:.1%} at init -> {record['energy_final']:.1%} "
            f"after training; test accuracy {record['test_accuracy']:.1%}"
        )

    return run_script(args, "energy_concentration", study)


if __name__ == "__main__":
    sys.exit(main())
