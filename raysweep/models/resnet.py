"""CIFAR-style ResNet-18 (ResNet v1, BasicBlocks) with one output logit.

Architecture (follows the paper's reference code, a Flax ResNet v1 with a CIFAR stem)::

    x (n, H, W, C)
      -> Conv(w, 3x3, stride 1, SAME, no bias) -> BN -> act          # stem, no max-pool
      -> stage 1: 2 x BasicBlock(w,   stride 1)                       # (n, H,   W,   w)
      -> stage 2: 2 x BasicBlock(2w,  first stride 2)                 # (n, H/2, W/2, 2w)
      -> stage 3: 2 x BasicBlock(4w,  first stride 2)                 # (n, H/4, W/4, 4w)
      -> stage 4: 2 x BasicBlock(8w,  first stride 2)                 # (n, H/8, W/8, 8w)
      -> global average pool over H, W -> Dense(1)                    => logits (n, 1)

with ``w = width`` (default 64: channels 64, 128, 256, 512). Spatial sizes are ``ceil(size/2)``
per stride-2 stage (``SAME`` padding; Flax pads ``(0, 1)`` on even sizes, unlike PyTorch's
``(1, 1)``), so any input size >= 1 works: 32 -> 32, 16, 8, 4 and 8 -> 8, 4, 2, 1.

BasicBlock(out, stride)::

    y = act(BN(Conv3x3(out, stride)(x)))
    y = BN_2(Conv3x3(out, 1)(y))            # BN_2 scale initialised to 0 if zero_init_residual
    s = BN(Conv1x1(out, stride)(x))  if x.shape != y.shape  else x   # projection shortcut
    return act(s + y)

Convolutions have no bias (each is followed by batch norm). Batch norm: ``momentum=0.9``
(running = 0.9 * running + 0.1 * batch, i.e. PyTorch's ``momentum=0.1``; Flax's own default is
0.99), ``epsilon=1e-5``, learnable ``scale``/``bias`` in ``params`` and running ``mean``/``var``
in the ``batch_stats`` collection (initialised to 0 and 1). In ``train=True`` mode batch norm
normalises with the batch statistics and updates the running averages (call ``apply`` with
``mutable=["batch_stats"]``); in ``train=False`` mode it uses the running averages.

``zero_init_residual=True`` (default, as in the reference Flax ResNet) initialises the scale of
the second BN of every block to zero, so each block starts as (activation of) its shortcut.
Kernels use the Flax default LeCun-normal initialiser.

Parameter count (C input channels, 1 output)::

    stem  9*C*w + 2*w
    block(i, o, proj) = 9*i*o + 2*o + 9*o*o + 2*o + proj * (i*o + 2*o)
    stages: 2 x block(w, w, 0); for c in (2w, 4w, 8w): block(c/2, c, 1) + block(c, c, 0)
    head  8*w + 1

which for ``w = 64`` on 32x32x3 gives 11,169,345 (the familiar 11,173,962 of the 10-class CIFAR
ResNet-18 minus 9 output units). The count does not depend on H and W.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from raysweep.argcheck import check_int
from raysweep.models.activations import DEFAULT_ACTIVATION, get_activation, normalize_activation
from raysweep.models.inputs import check_outputs, validate_batch

__all__ = ["BasicBlock", "ResNet18", "resnet18_param_count"]

STAGE_SIZES: tuple[int, ...] = (2, 2, 2, 2)
"""Number of BasicBlocks per stage for ResNet-18."""

BN_MOMENTUM: float = 0.9
BN_EPSILON: float = 1e-5


def resnet18_param_count(in_channels: int, width: int = 64) -> int:
    """Closed-form number of parameters of :class:`ResNet18` (``params`` only, no batch stats)."""

    def block(i: int, o: int, proj: bool) -> int:
        return 9 * i * o + 2 * o + 9 * o * o + 2 * o + (i * o + 2 * o if proj else 0)

    total = 9 * in_channels * width + 2 * width
    in_ch = width
    for stage, n_blocks in enumerate(STAGE_SIZES):
        out_ch = width * 2**stage
        for j in range(n_blocks):
            strides = 2 if stage > 0 and j == 0 else 1
            total += block(in_ch, out_ch, proj=(strides != 1 or in_ch != out_ch))
            in_ch = out_ch
    return total + in_ch * 1 + 1


class BasicBlock(nn.Module):
    """ResNet v1 basic block: two 3x3 conv+BN layers and an identity/projection shortcut.

    Attributes:
      features: output channels.
      strides: spatial stride of the first conv and of the projection (1 or 2).
      activation: activation name (see :mod:`raysweep.models.activations`).
      zero_init_residual: initialise the second BN's scale to zero.
      bn_momentum, bn_epsilon: batch-norm hyper-parameters (Flax convention for momentum).

    Call: ``(x (n, H, W, C_in), train: bool) -> (n, ceil(H/s), ceil(W/s), features)``.
    """

    features: int
    strides: int = 1
    activation: str = DEFAULT_ACTIVATION
    zero_init_residual: bool = True
    bn_momentum: float = BN_MOMENTUM
    bn_epsilon: float = BN_EPSILON

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = get_activation(self.activation)
        stride = (self.strides, self.strides)

        def norm(name: str, zero_scale: bool = False) -> nn.BatchNorm:
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
                name=name,
            )

        y = nn.Conv(self.features, (3, 3), stride, padding="SAME", use_bias=False, name="conv1")(x)
        y = act(norm("bn1")(y))
        y = nn.Conv(self.features, (3, 3), (1, 1), padding="SAME", use_bias=False, name="conv2")(y)
        y = norm("bn2", zero_scale=self.zero_init_residual)(y)

        shortcut = x
        if x.shape != y.shape:
            shortcut = nn.Conv(
                self.features, (1, 1), stride, padding="VALID", use_bias=False, name="conv_proj"
            )(x)
            shortcut = norm("bn_proj")(shortcut)
        return act(shortcut + y)


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 with a single output logit (see the module docstring).

    Attributes:
      activation: activation name, one of
        :data:`raysweep.models.activations.ACTIVATION_NAMES` (default ``"relu"``).
      width: base number of channels ``w`` (stages use w, 2w, 4w, 8w). Default 64 (the paper's,
        ~11.17M parameters); small values such as 4 or 8 give tiny networks for tests.
      zero_init_residual: zero-initialise the last BN scale of each block (default True, as in
        the paper's reference Flax ResNet).
      bn_momentum: running-average momentum in the Flax convention (default 0.9).
      bn_epsilon: batch-norm epsilon (default 1e-5).
      outputs: logits per example (default 1, the paper's binary setup). ``outputs=10`` gives
        a 10-class head, whose traced, diagonal or full NTK the engine computes
        (``raysweep.ntk``); training and the sweep use one logit.

    Call:
      ``module.apply(variables, x, train=False)`` with ``x`` of shape ``(n, H, W, C)``, floating,
      returns logits ``(n, 1)``. With ``train=True`` pass ``mutable=["batch_stats"]`` and get
      ``(logits, {"batch_stats": new_stats})`` back. Prefer the functional wrappers
      :func:`raysweep.models.make_apply_fn` / :func:`raysweep.models.make_train_apply_fn`.

    Variables: ``params`` (conv kernels ``(kh, kw, C_in, C_out)``, BN ``scale``/``bias``, Dense
    ``kernel``/``bias``) and ``batch_stats`` (BN ``mean``/``var``, shape ``(channels,)``), all
    float32. Module names: ``conv_init``, ``bn_init``, ``stage{1..4}_block{1,2}``, ``head``.
    """

    activation: str = DEFAULT_ACTIVATION
    width: int = 64
    zero_init_residual: bool = True
    bn_momentum: float = BN_MOMENTUM
    bn_epsilon: float = BN_EPSILON
    outputs: int = 1

    def __post_init__(self) -> None:
        normalize_activation(self.activation)
        check_outputs(self, "ResNet18")
        width = check_int(
            self.width,
            "ResNet18.width",
            minimum=1,
            hint=" (64 for the paper's ResNet-18, a small value such as 4 or 8 for quick tests)",
        )
        object.__setattr__(self, "width", width)  # a Python int (NumPy integers accepted)
        if not 0.0 <= float(self.bn_momentum) < 1.0:
            raise ValueError(
                f"ResNet18.bn_momentum must be in [0, 1) (Flax convention: fraction of the old "
                f"running average kept), got {self.bn_momentum!r}; the default is 0.9."
            )
        if not float(self.bn_epsilon) > 0.0:
            raise ValueError(
                f"ResNet18.bn_epsilon must be > 0, got {self.bn_epsilon!r}; the default is 1e-5."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Forward pass: ``(n, H, W, C)`` -> ``(n, 1)`` logits; see the class docstring."""
        validate_batch(x, where="ResNet18")
        act = get_activation(self.activation)
        x = nn.Conv(self.width, (3, 3), (1, 1), padding="SAME", use_bias=False, name="conv_init")(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            name="bn_init",
        )(x)
        x = act(x)
        for stage, n_blocks in enumerate(STAGE_SIZES):
            for j in range(n_blocks):
                x = BasicBlock(
                    features=self.width * 2**stage,
                    strides=2 if stage > 0 and j == 0 else 1,
                    activation=self.activation,
                    zero_init_residual=self.zero_init_residual,
                    bn_momentum=self.bn_momentum,
                    bn_epsilon=self.bn_epsilon,
                    name=f"stage{stage + 1}_block{j + 1}",
                )(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.outputs, name="head")(x)
