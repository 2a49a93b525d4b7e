"""Neural anisotropy directions (NADs) as images, in space and in frequency (paper Fig 1).

NADs are the eigenvectors of the network's NTK seen as a function of the input direction:
``directions`` holds one flattened input-shaped vector per NAD, in descending order of
``eigvals``. :func:`plot_nads` shows the first ``num`` of them: the top row in the spatial
domain, the bottom row as the magnitude of their 2-D Fourier transform,
``np.fft.fftshift(np.abs(np.fft.fft2(d)))`` (zero frequency at the centre; averaged over
channels for colour inputs).

Format (saved by :func:`raysweep.analysis.save_nads` as ``<results>/analysis/nads.npz``)::

    eigvals      (k,)           descending
    directions   (k, H*W*C)     one flattened NAD per row (C may be 1)
    input_shape  (H, W) or (H, W, C)

Nothing in the sweep computes NADs yet; ``None`` inputs raise a ``ValueError`` saying so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from raysweep.analysis.figure_checks import as_vector, require_present
from raysweep.analysis.style import new_figure
from raysweep.argcheck import check_int

NADS_HOW = (
    "run `python sweeps/nad_sweep.py` (it writes analysis/nads.npz into its own results "
    "folder, default results/nad_sweep: `raysweep report results/nad_sweep`), or save NADs "
    "with raysweep.analysis.save_nads(results_dir, eigvals, directions, input_shape)."
)


def check_nads(eigvals, directions, input_shape) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Validated ``(eigvals (k,), directions (k, H, W, C), (H, W, C))``."""
    given = {"eigvals": eigvals, "directions": directions, "input_shape": input_shape}
    absent = [name for name, value in given.items() if value is None]
    if absent:
        what = "NADs" if len(absent) == 3 else f"NADs ({', '.join(absent)})"
        require_present(None, what, NADS_HOW)
    vals = as_vector(eigvals, "eigvals")
    if isinstance(input_shape, str) or not isinstance(input_shape, Sequence | np.ndarray):
        raise TypeError(f"input_shape: expected (H, W) or (H, W, C), got {input_shape!r}.")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(
            f"input_shape: expected (H, W) or (H, W, C) of positive sizes, "
            f"got {tuple(input_shape)}."
        )
    if len(shape) == 2:
        shape = (*shape, 1)
    dirs = np.asarray(directions, dtype=np.float64)
    size = int(np.prod(shape))
    if dirs.ndim != 2 or dirs.shape != (vals.size, size):
        raise ValueError(
            f"directions: expected shape (k, H*W*C) = ({vals.size}, {size}) for {vals.size} "
            f"eigenvalues and input_shape {shape}, got {dirs.shape}."
        )
    if not np.all(np.isfinite(dirs)):
        raise ValueError("directions: expected finite values, got NaN or inf.")
    return vals, dirs.reshape(vals.size, *shape), shape


def spatial_image(nad: np.ndarray) -> tuple[np.ndarray, dict]:
    """``(image, imshow kwargs)``: grey-scale on a symmetric diverging map, colour rescaled."""
    if nad.shape[-1] == 1:
        lim = float(np.max(np.abs(nad))) or 1.0
        return nad[..., 0], {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
    rgb = nad[..., :3]
    span = float(rgb.max() - rgb.min()) or 1.0
    return (rgb - rgb.min()) / span, {}


def fourier_magnitude(nad: np.ndarray) -> np.ndarray:
    """``fftshift(|fft2|)`` of each channel of an ``(H, W, C)`` NAD, averaged over channels."""
    mags = [np.fft.fftshift(np.abs(np.fft.fft2(nad[..., c]))) for c in range(nad.shape[-1])]
    return np.mean(mags, axis=0)


def plot_nads(eigvals, directions, input_shape, num: int = 10) -> Figure:
    """The first ``num`` NADs: spatial domain (top row) and Fourier magnitude (bottom row).

    Args:
      eigvals: ``(k,)`` eigenvalues, descending (shown in the titles).
      directions: ``(k, H*W*C)`` flattened NADs.
      input_shape: ``(H, W)`` or ``(H, W, C)``.
      num: how many to show, at most k (fewer are shown when k < num).

    Returns:
      A Figure with ``2 x min(num, k)`` axes (ticks hidden), one image each.
    """
    vals, dirs, _ = check_nads(eigvals, directions, input_shape)
    num = check_int(num, "num", minimum=1)
    n = min(num, vals.size)
    fig, axes = new_figure(2, n, panel_size=(1.45, 1.55))
    for i in range(n):
        image, kwargs = spatial_image(dirs[i])
        axes[0, i].imshow(image, interpolation="nearest", **kwargs)
        axes[0, i].set_title(f"NAD {i}\nλ={vals[i]:.2g}", fontsize=7)
        axes[1, i].imshow(fourier_magnitude(dirs[i]), cmap="magma", interpolation="nearest")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("space", fontsize=8)
    axes[1, 0].set_ylabel("|FFT|", fontsize=8)
    fig.suptitle(
        "Neural anisotropy directions: spatial (top), Fourier magnitude (bottom)", fontsize=9
    )
    return fig
