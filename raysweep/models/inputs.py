"""Input conventions shared by all models, and their validation.

Conventions (every model in :mod:`raysweep.models`):

* Images are **NHWC**: a batch ``x`` has shape ``(n, H, W, C)`` — ``n`` examples, height,
  width, channels — and a floating dtype. Models compute in **float32**; the functional
  ``apply_fn`` casts floating inputs to float32 first. Integer images (e.g. ``uint8``) are
  rejected: normalise them to floats before calling a model.
* A single example's ``input_shape`` is ``(H, W, C)``, *without* the batch axis — e.g.
  ``(32, 32, 3)`` for CIFAR-10, ``(28, 28, 1)`` for MNIST, ``(8, 8, 1)`` for sklearn digits.
* Every model returns one logit per example: shape ``(n, 1)``, float32 (the built-ins'
  ``outputs=C`` option gives ``(n, C)`` for the NTK library; training uses one logit).

All checks here look only at static shape/dtype information, so they are safe to call on tracers
inside ``jax.jit``/``jax.vmap``/``jax.grad``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from raysweep.argcheck import check_int

__all__ = ["check_outputs", "validate_batch", "validate_input_shape"]


def validate_input_shape(input_shape: Any) -> tuple[int, int, int]:
    """Validate a per-example image shape ``(H, W, C)`` and return it as a tuple of ints.

    Args:
      input_shape: a length-3 sequence of positive integers ``(height, width, channels)``,
        without the batch axis. NumPy integers are accepted; bools and floats are not.

    Returns:
      ``(H, W, C)`` as a tuple of Python ints.

    Raises:
      TypeError: if ``input_shape`` is not a sequence (e.g. a bare int) or an entry is not an
        integer.
      ValueError: if it does not have exactly 3 entries or an entry is not positive.
    """
    if isinstance(input_shape, str | bytes) or not hasattr(input_shape, "__len__"):
        raise TypeError(
            f"input_shape must be a sequence (H, W, C) of 3 positive ints, got {input_shape!r}; "
            "e.g. (32, 32, 3) for CIFAR-10, (28, 28, 1) for MNIST, (8, 8, 1) for digits."
        )
    dims = tuple(input_shape)
    if len(dims) != 3:
        raise ValueError(
            f"input_shape must have exactly 3 entries (H, W, C) without the batch axis, got "
            f"{dims!r} ({len(dims)} entries); e.g. use (32, 32, 3), not (1, 32, 32, 3) or (3072,)."
        )
    out = []
    hint = f" (input_shape={dims!r}; pass sizes such as (32, 32, 3))"
    for axis, d in zip(("H", "W", "C"), dims, strict=True):
        out.append(check_int(d, f"input_shape {axis}", minimum=1, hint=hint))
    return (out[0], out[1], out[2])


def validate_batch(x: Any, *, where: str) -> None:
    """Check that ``x`` is a floating NHWC batch of shape ``(n, H, W, C)``.

    Only static information (``ndim``, ``dtype``) is inspected, so this works on tracers.

    Args:
      x: the array to check (``jax.Array``, ``np.ndarray`` or tracer).
      where: name of the caller, used in error messages (e.g. ``"MLP"`` or ``"apply_fn"``).

    Raises:
      TypeError: if ``x`` has no shape/dtype, or its dtype is not floating (e.g. ``uint8``).
      ValueError: if ``x.ndim != 4``.
    """
    if not (hasattr(x, "ndim") and hasattr(x, "dtype")):
        raise TypeError(
            f"{where}: x must be an array of shape (n, H, W, C), got {type(x).__name__}; "
            "convert it with jnp.asarray(x, jnp.float32)."
        )
    if x.ndim != 4:
        raise ValueError(
            f"{where}: x must be a 4-D NHWC batch (n, H, W, C), got shape {tuple(x.shape)} "
            f"(ndim={x.ndim}); add a batch axis for a single example (x[None]) or reshape "
            "flat vectors to images, e.g. x.reshape(n, 8, 8, 1)."
        )
    if not jnp.issubdtype(np.dtype(x.dtype), jnp.floating):
        raise TypeError(
            f"{where}: x must have a floating dtype (float32 expected), got {x.dtype}; "
            "normalise integer images to floats first, e.g. x.astype(jnp.float32) / 255."
        )


def check_outputs(module: Any, name: str) -> None:
    """``module.outputs`` (logits per example) is a positive int; stored as a Python int."""
    outputs = check_int(
        module.outputs,
        f"{name}.outputs",
        minimum=1,
        hint=" (1 for the paper's binary setup, 10 for a 10-class head)",
    )
    object.__setattr__(module, "outputs", outputs)
