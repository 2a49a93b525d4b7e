"""Fully-connected network (the paper's "MLP").

Architecture (defaults = the paper's binary CIFAR-10 setup, ``features: [100, 100, 1]``)::

    x (n, H, W, C) -> flatten (n, H*W*C)
      -> Dense(100) -> act -> Dense(100) -> act -> Dense(1)   => logits (n, 1)

Parameters live under ``params["Dense_0"]``, ``params["Dense_1"]``, ``params["Dense_2"]``, each
``{"kernel": (fan_in, fan_out), "bias": (fan_out,)}`` float32, initialised with Flax defaults
(LeCun-normal kernels, zero biases). On 32x32x3 inputs the parameter count is
``3072*100+100 + 100*100+100 + 100*1+1 = 317,501``. There is no batch norm, so the model has no
``batch_stats`` collection.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from raysweep.models.activations import DEFAULT_ACTIVATION, get_activation, normalize_activation
from raysweep.models.inputs import check_outputs, validate_batch

__all__ = ["MLP"]


class MLP(nn.Module):
    """Flatten + fully-connected hidden layers + a single output logit.

    Attributes:
      activation: activation name, one of
        :data:`raysweep.models.activations.ACTIVATION_NAMES` (default ``"relu"``).
      hidden_sizes: widths of the hidden Dense layers, default ``(100, 100)`` (the paper's).
      outputs: logits per example (default 1, the paper's binary setup). ``outputs=10`` gives
        a 10-class head, whose traced, diagonal or full NTK the engine computes
        (``raysweep.ntk``); training and the sweep use one logit.

    Call:
      ``module.apply(variables, x, train=False)`` with ``x`` of shape ``(n, H, W, C)``, floating;
      returns logits of shape ``(n, 1)``. ``train`` is accepted for interface uniformity with
      :class:`~raysweep.models.resnet.ResNet18` and ignored.
    """

    activation: str = DEFAULT_ACTIVATION
    hidden_sizes: tuple[int, ...] = (100, 100)
    outputs: int = 1

    def __post_init__(self) -> None:
        normalize_activation(self.activation)
        check_outputs(self, "MLP")
        sizes = self.hidden_sizes
        if isinstance(sizes, int) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes
        ):
            raise ValueError(
                f"MLP.hidden_sizes must be a tuple of positive ints, got {sizes!r}; "
                "e.g. hidden_sizes=(100, 100) (the paper's) or (32,) for a small net."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Forward pass: ``(n, H, W, C)`` -> ``(n, 1)`` logits."""
        del train  # no train/eval-dependent layers
        validate_batch(x, where="MLP")
        act = get_activation(self.activation)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden_sizes):
            x = act(nn.Dense(int(width), name=f"Dense_{i}")(x))
        return nn.Dense(self.outputs, name=f"Dense_{len(self.hidden_sizes)}")(x)
