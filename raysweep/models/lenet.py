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

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from raysweep.models.activations import DEFAULT_ACTIVATION, get_activation, normalize_activation
from raysweep.models.inputs import check_outputs, validate_batch

__all__ = ["LeNet5", "lenet5_param_count"]

_CONV_FEATURES = (6, 16)
_DENSE_FEATURES = (120, 84)
_KERNEL = (5, 5)
_POOL = (2, 2)


def _pooled_size(size: int) -> int:
    """Spatial size after one 2x2/stride-2 VALID average pooling."""
    return size // 2


# NHWC input/output and HWIO kernel, as ``lax.conv_dimension_numbers`` canonicalises them.
_NHWC_SPEC = (0, 3, 1, 2)
_HWIO_SPEC = (3, 2, 0, 1)


def _all_ones(values: Sequence[int] | None) -> bool:
    return values is None or all(int(v) == 1 for v in values)


def _patch_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int] | None = None,
    padding: str | Sequence[tuple[int, int]] = "SAME",
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` as im2col: shifted slices, then one matmul.

    Supports exactly what :class:`LeNet5` needs: 2-D NHWC input, HWIO kernel, NHWC output,
    stride 1, no dilation, one group, ``"SAME"`` or explicit non-negative ``(lo, hi)`` padding
    pairs. The ``kh * kw`` shifted windows of the padded input are concatenated on the channel
    axis in ``(i, j, c)`` order, matching ``rhs.reshape(kh * kw * cin, cout)``. Same function as
    the convolution (up to float rounding); much faster on XLA CPU for LeNet's few channels,
    also when vmapped over per-target kernels (no grouped convolution).

    Raises:
      NotImplementedError: for anything else (other layouts, strides, dilations, groups or
        padding modes).
    """

    def unsupported(what: str) -> NotImplementedError:
        return NotImplementedError(
            f"LeNet5 patch convolution (patch_convs=True) supports only 2-D NHWC/HWIO "
            f"convolutions with stride 1, no dilation, one group and SAME or explicit padding; "
            f"got {what}. Use LeNet5(patch_convs=False) (lax.conv_general_dilated) instead."
        )

    if lhs.ndim != 4 or rhs.ndim != 4:
        raise unsupported(f"lhs.ndim={lhs.ndim}, rhs.ndim={rhs.ndim} (need 4-D, two spatial dims)")
    if dimension_numbers is None:
        raise unsupported("dimension_numbers=None (lax's default is NCHW/OIHW)")
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if (
        tuple(dn.lhs_spec) != _NHWC_SPEC
        or tuple(dn.rhs_spec) != _HWIO_SPEC
        or tuple(dn.out_spec) != _NHWC_SPEC
    ):
        raise unsupported(f"dimension_numbers={dimension_numbers!r} (need NHWC, HWIO, NHWC)")
    if not _all_ones(window_strides):
        raise unsupported(f"window_strides={tuple(window_strides)!r}")
    if not _all_ones(lhs_dilation) or not _all_ones(rhs_dilation):
        raise unsupported(f"lhs_dilation={lhs_dilation!r}, rhs_dilation={rhs_dilation!r}")
    if feature_group_count != 1 or batch_group_count != 1:
        raise unsupported(
            f"feature_group_count={feature_group_count!r}, batch_group_count={batch_group_count!r}"
        )
    kh, kw, cin, cout = (int(d) for d in rhs.shape)
    if int(lhs.shape[3]) != cin:
        raise ValueError(
            f"LeNet5 patch convolution: input has {lhs.shape[3]} channels, kernel expects {cin}."
        )
    if isinstance(padding, str):
        if padding.upper() != "SAME":
            raise unsupported(f"padding={padding!r}")
        # lax's SAME for stride 1, no dilation: total k - 1, the smaller half first.
        pads = [((k - 1) // 2, (k - 1) - (k - 1) // 2) for k in (kh, kw)]
    else:
        pads = [tuple(int(v) for v in pair) for pair in padding]
        if len(pads) != 2 or any(len(p) != 2 or min(p) < 0 for p in pads):
            raise unsupported(f"padding={padding!r}")
    padded = lax.pad(
        lhs, jnp.zeros((), lhs.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0))
    )
    out_h = int(padded.shape[1]) - kh + 1
    out_w = int(padded.shape[2]) - kw + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"LeNet5 patch convolution: padded input {padded.shape[1]}x{padded.shape[2]} is "
            f"smaller than the {kh}x{kw} kernel."
        )
    patches = jnp.concatenate(
        [padded[:, i : i + out_h, j : j + out_w, :] for i in range(kh) for j in range(kw)],
        axis=-1,
    )
    return lax.dot_general(
        patches,
        rhs.reshape(kh * kw * cin, cout),
        dimension_numbers=(((3,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _patch_avg_pool(x: jax.Array) -> jax.Array:
    """2x2/stride-2 VALID average pooling of ``(..., H, W, C)`` as crop + reshape + mean
    (odd sizes floored, as ``nn.avg_pool``)."""
    (ph, pw) = _POOL
    h, w, c = (int(d) for d in x.shape[-3:])
    ho, wo = h // ph, w // pw
    x = x[..., : ho * ph, : wo * pw, :]
    x = x.reshape((*x.shape[:-3], ho, ph, wo, pw, c))
    return jnp.mean(x, axis=(-4, -2))


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
      patch_convs: compute the two convolutions as im2col (25 shifted slices of the padded
        input concatenated on the channel axis, then one matmul with the reshaped kernel) and
        the poolings as crop + reshape + mean, instead of ``lax.conv_general_dilated`` and
        ``nn.avg_pool``. The same function (equal up to float32 rounding) with the same
        parameters (names, shapes, initialisation: variables work with either setting), but
        2.5-4x faster *training* on XLA CPU, where tiny-channel (and, under ``vmap``, grouped)
        convolutions are slow; see :func:`raysweep.models.training_variant`. Default ``False``:
        the NTK engine uses the default, whose jaxpr has the ``conv_general_dilated`` sites its
        structured method recognises and whose jaxpr hash keys the artifacts.
      outputs: logits per example (default 1, the paper's binary setup). ``outputs=10`` gives
        a 10-class head, whose traced, diagonal or full NTK the engine computes
        (``raysweep.ntk``); training and the sweep use one logit.

    Call:
      ``module.apply(variables, x, train=False)`` with ``x`` of shape ``(n, H, W, C)``, floating,
      ``H >= 4`` and ``W >= 4``; returns logits of shape ``(n, 1)``. ``train`` is accepted for
      interface uniformity and ignored.

    Parameter names: ``Conv_0``, ``Conv_1`` (kernel ``(5, 5, C_in, C_out)``, bias ``(C_out,)``),
    ``Dense_0``, ``Dense_1``, ``Dense_2``.
    """

    activation: str = DEFAULT_ACTIVATION
    patch_convs: bool = False
    outputs: int = 1

    def __post_init__(self) -> None:
        normalize_activation(self.activation)
        check_outputs(self, "LeNet5")
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
            if self.patch_convs:
                conv = nn.Conv(
                    features,
                    _KERNEL,
                    padding="SAME",
                    conv_general_dilated=_patch_conv,
                    name=f"Conv_{i}",
                )
                x = _patch_avg_pool(act(conv(x)))
            else:
                x = nn.Conv(features, _KERNEL, padding="SAME", name=f"Conv_{i}")(x)
                x = act(x)
                x = nn.avg_pool(x, window_shape=_POOL, strides=_POOL, padding="VALID")
        x = x.reshape((x.shape[0], -1))
        for i, features in enumerate(_DENSE_FEATURES):
            x = act(nn.Dense(features, name=f"Dense_{i}")(x))
        return nn.Dense(self.outputs, name=f"Dense_{len(_DENSE_FEATURES)}")(x)
