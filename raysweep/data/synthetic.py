"""Synthetic CIFAR-10: images in the real ``cifar-10-batches-py`` format, to rehearse a run.

When the real archive is absent (a new machine, a cluster being set up, CI), the paper-scale
pipeline can still be exercised end to end on the same loader, presets and sizes:
:func:`write_cifar_like` writes ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and
``batches.meta`` as pickles (protocol 2) of the real layout (``b"data"``: ``uint8 (n, 3072)``
channel-first rows, ``b"labels"``: ints in ``[0, 10)``), which
``load_dataset("cifar10", root)`` reads like the real files. ``raysweep make-cifar-like DIR``
is the command.

The images are smooth random fields, not white noise, so that the NTK's spectrum decays as
it does on natural images: each channel is Gaussian noise filtered in Fourier space to an
amplitude ∝ 1/√(f² + f₀²) (the 1/f² power law of natural images; f in cycles per image,
f₀ = 1), mostly shared between the three channels (a luminance field plus a weaker field per
channel), plus a fixed smooth template per class, so that the classes are learnable without
being separable by a single pixel. Each image is then scaled to a standard deviation of 50
grey levels around a brightness of its own (mean 120, spread 40 across images, as photographs
vary), clipped and rounded to ``uint8``. On the paper's MLP at 200 images, eigenvalues 1-10
of the NTK Gram hold about three times the share of the spectrum (below the top one) that
they hold for white noise (tests/test_data.py). Deterministic in ``seed``; written one batch
at a time (about 0.2 GB of memory for 10,000 images).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from raysweep.data.cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_FOLDER,
    IMAGE_SHAPE_CHW,
    TEST_BATCH,
    TRAIN_BATCHES,
)

__all__ = ["CLASS_WEIGHT", "smooth_fields", "write_cifar_like"]

CLASS_WEIGHT = 0.5
"""Weight of the class template against the per-image field (both of unit variance)."""
_SHARED = 0.85  # weight of the luminance field shared by the channels (the rest: per channel)


def smooth_fields(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    """``n`` random fields ``(n, size, size)`` of unit variance, amplitude ∝ 1/√(f² + 1)."""
    freqs = np.fft.fftfreq(size) * size  # cycles per image
    radius = np.sqrt(freqs[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2 * size**2)
    amplitude = 1.0 / np.sqrt(radius**2 + 1.0)
    amplitude[0, 0] = 0.0  # no per-field offset: the mean is set on the whole image
    noise = rng.standard_normal((n, size, size), dtype=np.float32)
    fields = np.fft.irfft2(np.fft.rfft2(noise) * amplitude, s=(size, size)).astype(np.float32)
    return fields / fields.std(axis=(1, 2), keepdims=True)


def _images(rng: np.random.Generator, labels: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """``uint8 (n, 3072)`` channel-first rows for ``labels``."""
    n = len(labels)
    channels, size = IMAGE_SHAPE_CHW[0], IMAGE_SHAPE_CHW[1]
    shared = smooth_fields(rng, n, size)[:, None]
    own = smooth_fields(rng, n * channels, size).reshape(n, channels, size, size)
    field = _SHARED * shared + np.sqrt(1 - _SHARED**2) * own
    field = np.sqrt(1 - CLASS_WEIGHT**2) * field + CLASS_WEIGHT * templates[labels]
    field /= field.std(axis=(1, 2, 3), keepdims=True)
    brightness = rng.normal(120.0, 40.0, size=(n, 1, 1, 1))
    pixels = np.clip(np.rint(brightness + 50.0 * field), 0, 255).astype(np.uint8)
    return pixels.reshape(n, -1)


def _write_pickle(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    os.replace(tmp, path)


def write_cifar_like(
    folder: str | os.PathLike,
    num_images: int = 60_000,
    *,
    seed: int = 0,
    force: bool = False,
    log: Callable[[str], object] | None = None,
) -> Path:
    """Write ``num_images`` synthetic images as ``<folder>/cifar-10-batches-py/``.

    The split is the real one scaled: 5/6 of the images (50,000 of 60,000) in five training
    batches of equal size, the rest in ``test_batch``; labels balanced over the 10 classes in
    a random order. Returns the batches folder.

    Raises:
      ValueError: ``num_images`` is below 12 (two images per batch) or not an integer.
      FileExistsError: the batches folder exists already and ``force`` is False.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 12:
        raise ValueError(
            f"num_images must be an integer >= 12 (two per batch file), got {num_images!r}."
        )
    out = Path(folder) / CIFAR10_FOLDER
    if out.exists() and not force:
        raise FileExistsError(
            f"{out} exists already; pass force=True (--force) to overwrite it, or choose "
            "another folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels, size = IMAGE_SHAPE_CHW[0], IMAGE_SHAPE_CHW[1]
    templates = smooth_fields(rng, 10 * channels, size).reshape(10, channels, size, size)
    num_train = (num_images * 5) // 6
    sizes = [num_train // 5 + (i < num_train % 5) for i in range(5)]
    sizes.append(num_images - num_train)
    labels = rng.permutation(np.arange(num_images) % 10)
    start = 0
    for name, count in zip((*TRAIN_BATCHES, TEST_BATCH), sizes, strict=True):
        part = labels[start : start + count]
        start += count
        batch = {
            b"batch_label": f"synthetic {name} (raysweep.data.synthetic, seed {seed})".encode(),
            b"labels": [int(c) for c in part],
            b"data": _images(rng, part, templates),
            b"filenames": [f"synthetic_{start - count + i:06d}.png".encode() for i in range(count)],
        }
        _write_pickle(out / name, batch)
        if log is not None:
            log(f"[cifar-like] {out / name}: {count:,} images")
    _write_pickle(
        out / "batches.meta",
        {
            b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_cases_per_batch": sizes[0],
            b"num_vis": int(np.prod(IMAGE_SHAPE_CHW)),
        },
    )
    return out
