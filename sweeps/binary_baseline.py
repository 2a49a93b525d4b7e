"""Network vs linearization on the dataset's own binary task: the accuracy figures' baseline.

    python sweeps/binary_baseline.py                                # digits2, MLP: seconds on a CPU
    python sweeps/binary_baseline.py --preset cifar10 --data-dir /data model.name=lenet5
    python sweeps/binary_baseline.py --smoke-test                   # what CI runs

Trains the network and its linearization at initialization on the binary task of the preset's
dataset (CIFAR2 = CIFAR-10 classes 0-4 vs 5-9 for cifar10/cifar2, with the paper's 200 epochs
unless train.epochs is given; digits 0-4 vs 5-9 offline), with each optimizer of
sweep.optimizers and each seed of grid.train.seed (else train.seed). The records go to
<results>/analysis/baseline.json: the network's accuracy is the baseline line of the
accuracy-vs-index figure of `raysweep report <results>`, and network vs linearization is
claim 2 of its findings. Run it once per model of the sweep (the main job's default run does).
"""

from __future__ import annotations

import dataclasses
import sys

from raysweep.script import run_script, script_parser

PAPER_EPOCHS = 200


def main(argv=None) -> int:
    ap = script_parser(
        "python sweeps/binary_baseline.py",
        "Network vs linearization on the dataset's binary task (CIFAR2 in the paper).",
        examples="Example: python sweeps/binary_baseline.py --preset cifar10 model.name=lenet5",
    )
    args = ap.parse_args(argv)
    epochs_given = any(o.startswith("train.epochs=") for o in args.overrides)

    def study(config, out):
        from raysweep.evolution import baseline_study

        if config.data.name in ("cifar10", "cifar2") and not epochs_given:
            config = dataclasses.replace(
                config, train=dataclasses.replace(config.train, epochs=PAPER_EPOCHS)
            )
        seeds = dict(config.grid).get("train.seed", (config.train.seed,))
        summary = baseline_study(config, out, optimizers=config.sweep.optimizers, seeds=seeds)
        print(f"\n{summary['model']} on {summary['dataset']}, test accuracy:")
        for optimizer in config.sweep.optimizers:
            line = []
            for mode in ("network", "linearized"):
                accs = [
                    r["test_accuracy"]
                    for r in summary["records"]
                    if r["optimizer"] == optimizer and r["mode"] == mode
                ]
                line.append(f"{mode} {sum(accs) / len(accs):.1%}")
            print(f"  {optimizer}: {', '.join(line)} (mean over {len(seeds)} seed(s))")

    return run_script(args, "binary_baseline", study, needs_ray=False)


if __name__ == "__main__":
    sys.exit(main())
