"""raysweep: empirical NTK eigenfunctions and network-vs-linearization sweeps on Ray.

Stages of the flow (one subpackage or module each):

- ``raysweep.data``: datasets (CIFAR-10, MNIST from local archives; scikit-learn digits offline).
- ``raysweep.models``: MLP, LeNet5, ResNet18 behind ``apply_fn(params, x) -> (n, 1)``.
- ``raysweep.config``: frozen, validated configs and presets.
- ``raysweep.ntk``: empirical NTK Gram tiles, linearization, alignment.
"""

__version__ = "0.1.0"
