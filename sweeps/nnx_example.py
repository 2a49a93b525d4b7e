"""Your own model and data: a small Flax NNX CNN with batch norm, on data written to an .npz.

    python sweeps/nnx_example.py                  # minutes on a CPU
    python sweeps/nnx_example.py --smoke-test     # what CI runs
    python sweeps/nnx_example.py grid.model.options='[{"features": 8}, {"features": 16}]'

The model is defined below and reached by its import path ``nnx_example:SmallCNN`` (this file's
folder is on the import path of the driver and of every Ray worker it starts). The data are
scikit-learn's digits written to ``<out>/digits.npz`` with the four arrays the npz format asks
for (``x_train``, ``y_train``, ``x_test``, ``y_test``). Everything else is the main job
(``sweeps/eigen_sweep.py``) with ``model.name=nnx_example:SmallCNN`` and
``data.name=npz:<out>/digits.npz``: the Gram of the NTK uses the eval view of the network
(batch norm with its running statistics), training the train view, and the linearization keeps
the statistics at initialization. Other options of the main job pass through (``--out``,
``--address``, ``--quiet``, overrides and ``grid.*``).

To run your own model the same way: put its module next to your script or in your working
folder, and pass ``model.name=your_module:YourModel`` (NNX: built as
``YourModel(**options, rngs=nnx.Rngs(model.seed))``) and ``data.name=npz:/path/data.npz``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from flax import nnx

HERE = Path(__file__).resolve().parent


class SmallCNN(nnx.Module):
    """Conv → BatchNorm → ReLU → Conv → BatchNorm → ReLU → mean pool → one logit."""

    def __init__(self, features: int = 8, in_channels: int = 1, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(in_channels, features, kernel_size=(3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(features, rngs=rngs)
        self.conv2 = nnx.Conv(features, features, kernel_size=(3, 3), rngs=rngs)
        self.bn2 = nnx.BatchNorm(features, rngs=rngs)
        self.head = nnx.Linear(features, 1, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(axis=(1, 2)))


def write_digits_npz(path: Path) -> Path:
    """scikit-learn's digits as an npz: 8x8x1 images, 10 classes, the usual 3:1 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None] / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    cut = (3 * len(y)) // 4
    train, test = order[:cut], order[cut:]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])
    return path


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--preset" or a.startswith("--preset=") for a in argv):
        argv = ["--preset", "smoke", *argv]  # one model: not the default run's model grid
    sys.path.insert(0, str(HERE))
    import eigen_sweep

    args = eigen_sweep.parse_args(
        argv,
        prog="python sweeps/nnx_example.py",
        description="The main job on your own Flax NNX model and .npz data (a small CNN on "
        "digits): any model and dataset run the same way.",
    )
    config = eigen_sweep.build_config(args)
    out = Path(args.out) if args.out else Path(config.sweep.storage_path) / "nnx_example"
    data = out.resolve() / "data" / "digits.npz"
    if args.dry_run and not data.exists():  # a dry run writes nothing into the results folder
        data = Path(tempfile.gettempdir()) / "raysweep_nnx_example" / "digits.npz"
    write_digits_npz(data)
    defaults = [
        "model.name=nnx_example:SmallCNN",
        f"data.name=npz:{data}",
        "sweep.name=nnx_example",
    ]
    if not any(a.startswith("model.options=") or a.startswith("grid.model.options=") for a in argv):
        defaults.append('model.options={"features": 8}')
    return eigen_sweep.main([*defaults, *argv, "--out", str(out)])


if __name__ == "__main__":
    raise SystemExit(main())
