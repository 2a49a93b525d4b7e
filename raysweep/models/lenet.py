"""LeNet-5 with average pooling (the paper's "LeNet").

Architecture (as in the paper's reference code: convolutions with bias, ``SAME`` padding,
2x2 average pooling with stride 2 and ``VALID`` padding)::

    x (n, H, W, C)
      -> Conv(6, 5x5, SAME)  -> act -> avg_pool(2x2, stride 2)   # (n, H//2, W//2, 6)
      -> Conv(16, 5x5, SAME) -> act -> avg_pool(2x2, stride 2)   # (n, H//4', W//4', 16)
      -> flatten -> Dense(120) -> act -> Dense(84) -> act -> Dense(1)   => logits (n, 1)

where ``H//4'`` means ``(H // 2) // 2`` (odd sizes are floored at each pooling). Spatial sizes:
32 -> 16 -> 8 (CIFAR-10), 28 -> 14 -> 7 (MNIST), 8 -> 4 -> 2 (sklearn digits). Inputs smaller than
4x4 would be pooled to size 0; that raises a ``ValueError`` at init/apply time.

Parameter count for input ``(H, W, C)`` with ``h = (H//2)//2``, ``w = (W//2)//2``::

    (5*5*C*6 + 6) + (5*5*6*16 + 16) + (h*w*16*120 + 120) + (120*84 + 84) + (84 + 1)

e.g. 32x32x3 -> 456 + 2,416 + 123,000 + 10,164 + 85 = 136,121. Flax default initialisers
(LeCun-normal kernels, zero biases); no batch norm, hence no ``batch_stats``.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from raysweep.models.activations import DEFAULT_ACTIVATION, get_activation, normalize_activation
from raysweep.models.inputs import validate_batch

__all__ = ["LeNet5", "lenet5_param_count"]

_CONV_FEATURES = (6, 16)
_DENSE_FEATURES = (120, 84)
_KERNEL = (5, 5)
_POOL = (2, 2)


def _pooled_size(size: int) -> int:
    """Spatial size after one 2x2/stride-2 VALID average pooling."""
    return size // 2


def lenet5_param_count(input_shape: tuple[int, int, int]) -> int:
    """Closed-form number of parameters of :class:`LeNet5` for ``input_shape = (H, W, C)``.

    Raises:
      ValueError: if the input is too small for two poolings (``H < 4`` or ``W < 4``).
    """
    height, width, channels = input_shape
    h = _pooled_size(_pooled_size(height))
    w = _pooled_size(_pooled_size(width))
    if h == 0 or w == 0:
        raise ValueError(
            f"LeNet5 needs H >= 4 and W >= 4 (two 2x2 poolings), got input_shape={input_shape!r}."
        )
    kh, kw = _KERNEL
    c1, c2 = _CONV_FEATURES
    d1, d2 = _DENSE_FEATURES
    return (
        (kh * kw * channels * c1 + c1)
        + (kh * kw * c1 * c2 + c2)
        + (h * w * c2 * d1 + d1)
        + (d1 * d2 + d2)
        + (d2 * 1 + 1)
    )


class LeNet5(nn.Module):
    """LeNet-5 (two 5x5 SAME convs with 2x2 average pooling, three Dense layers), one logit.

    Attributes:
      activation: activation name, one of
        :data:`raysweep.models.activations.ACTIVATION_NAMES` (default ``"relu"``).

    Call:
      ``module.apply(variables, x, train=False)`` with ``x`` of shape ``(n, H, W, C)``, floating,
      ``H >= 4`` and ``W >= 4``; returns logits of shape ``(n, 1)``. ``train`` is accepted for
      interface uniformity and ignored.

    Parameter names: ``Conv_0``, ``Conv_1`` (kernel ``(5, 5, C_in, C_out)``, bias ``(C_out,)``),
    ``Dense_0``, ``Dense_1``, ``Dense_2``.
    """

    activation: str = DEFAULT_ACTIVATION

    def __post_init__(self) -> None:
        normalize_activation(self.activation)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Forward pass: ``(n, H, W, C)`` -> ``(n, 1)`` logits."""
        del train  # no train/eval-dependent layers
        validate_batch(x, where="LeNet5")
        height, width = int(x.shape[1]), int(x.shape[2])
        if _pooled_size(_pooled_size(height)) == 0 or _pooled_size(_pooled_size(width)) == 0:
            raise ValueError(
                f"LeNet5: input spatial size {height}x{width} is too small: two 2x2 average "
                f"poolings would shrink it to {_pooled_size(_pooled_size(height))}x"
                f"{_pooled_size(_pooled_size(width))}. Use inputs with H >= 4 and W >= 4 "
                "(e.g. 8x8 digits, 28x28 MNIST, 32x32 CIFAR), or use the MLP for smaller inputs."
            )
        act = get_activation(self.activation)
        for i, features in enumerate(_CONV_FEATURES):
            x = nn.Conv(features, _KERNEL, padding="SAME", name=f"Conv_{i}")(x)
            x = act(x)
            x = nn.avg_pool(x, window_shape=_POOL, strides=_POOL, padding="VALID")
        x = x.reshape((x.shape[0], -1))
        for i, features in enumerate(_DENSE_FEATURES):
            x = act(nn.Dense(features, name=f"Dense_{i}")(x))
        return nn.Dense(1, name=f"Dense_{len(_DENSE_FEATURES)}")(x)
