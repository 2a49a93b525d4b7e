"""Checkpoints of packed training, so that a retried trial continues instead of restarting.

A checkpoint is one ``.npz`` file (NumPy's zip of ``.npy`` members, no pickle) written with
:func:`raysweep.atomic.atomic_write`, so a crash leaves the previous checkpoint or the new one.
It holds, after epoch ``epoch`` (1-based) of a pack of ``T`` targets:

- ``leaf_00000``, ``leaf_00001``, …: the leaves of the whole
  :class:`~raysweep.training.program.PackState` in ``jax.tree_util`` order — θ, the optimizer
  state (momentum or Adam moments and the update count that drives the learning-rate
  schedule) and the running batch-norm statistics of every target, the step counter, the
  ``steps_to_threshold`` tracking and the ``diverged`` flags — with their exact dtypes;
- ``meta``: UTF-8 JSON bytes with ``format``, ``version``, ``key``, ``epoch`` and ``rows``,
  the metric rows of epochs ``1 … epoch`` of every target (a diverged target's final
  ``"diverged"`` row is among them). Floats are written with ``repr``, so they round-trip
  exactly, NaN and inf included.

The *key* (:func:`checkpoint_key`) is a digest of what is trained: the values and shapes of
the inputs, the labels, θ₀ and the initial statistics, the training config, the data seed (an
int, or the list of per-target seeds) and every option that changes the numbers (mode, loss,
schedule, ``lr_scale``, evaluation block size). It does not cover the code of the model
functions; θ₀'s structure and values stand for the model. A checkpoint whose key differs
belongs to other work and is not loaded.

The data order of epoch ``e`` comes from ``fold_in(key(seed), e)`` (per target
``fold_in(key(seed[t]), e)``; :func:`~raysweep.training.program.pack_orders`), not from a key
threaded through the epochs, so a resumed run draws the same minibatches as an uninterrupted
one and, on the same device and software, gives bitwise identical results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from raysweep.atomic import atomic_write
from raysweep.config import TrainConfig

__all__ = [
    "Checkpoint",
    "checkpoint_epoch",
    "checkpoint_key",
    "load_checkpoint",
    "save_checkpoint",
]

_FORMAT = "raysweep.pack_checkpoint"
_VERSION = 1


class Checkpoint(NamedTuple):
    """A loaded checkpoint: ``state`` (a ``PackState`` of host NumPy leaves), ``epoch``
    (1-based, the last epoch it contains) and ``rows`` (``rows[t]``: the metric rows of
    epochs ``1 … epoch`` of target ``t``, fewer for a target that diverged)."""

    state: Any
    epoch: int
    rows: list[list[dict[str, Any]]]


def _digest_array(h: Any, name: str, arr: Any) -> None:
    arr = np.ascontiguousarray(np.asarray(arr))
    h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
    h.update(memoryview(arr).cast("B"))


def _digest_tree(h: Any, name: str, tree: Any) -> None:
    h.update(f"{name}:{jax.tree_util.tree_structure(tree)};".encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        _digest_array(h, f"{name}{jax.tree_util.keystr(path)}", leaf)


def checkpoint_key(
    *,
    arrays: dict[str, Any],
    params0: Any,
    stats0: Any,
    train: TrainConfig,
    options: dict[str, Any],
) -> str:
    """Hex digest (BLAKE2b, 128 bits) identifying one packed run.

    Args:
      arrays: named data arrays (``x_train``, ``y_train``, …); names, shapes, dtypes and
        bytes enter the digest.
      params0: θ₀ pytree (structure, shapes, dtypes, values).
      stats0: initial batch-norm statistics pytree (``{}``: none).
      train: the training config (every field).
      options: JSON-serializable values (``linearized``, ``seed`` — an int, or the list of
        per-target seeds —, ``loss``, …).
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{_FORMAT}/{_VERSION};".encode())
    config = json.dumps({"train": dataclasses.asdict(train), **options}, sort_keys=True)
    h.update(config.encode())
    for name in sorted(arrays):
        _digest_array(h, name, arrays[name])
    _digest_tree(h, "params0", params0)
    _digest_tree(h, "stats0", stats0)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    *,
    key: str,
    state: Any,
    epoch: int,
    rows: list[list[dict[str, Any]]],
) -> Path:
    """Write ``state`` (device or host arrays) after ``epoch`` (1-based) atomically to ``path``.

    ``rows[t]`` are the metric rows of epochs ``1 … epoch`` of target ``t``. Returns the path.
    """
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(jax.device_get(state))]
    meta = {"format": _FORMAT, "version": _VERSION, "key": key, "epoch": int(epoch), "rows": rows}
    members = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(leaves)}
    members["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    return atomic_write(path, lambda fh: np.savez(fh, **members))


def _read_meta(npz: Any) -> dict[str, Any]:
    meta = json.loads(npz["meta"].tobytes().decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError("not a raysweep pack checkpoint")
    if meta.get("version") != _VERSION:
        raise ValueError(f"checkpoint version {meta.get('version')!r}, expected {_VERSION}")
    return meta


def checkpoint_epoch(path: str | os.PathLike) -> int | None:
    """The last epoch (1-based) stored in the checkpoint at ``path``; ``None`` if there is no
    readable checkpoint there. Reads only the metadata and does not check the key, so the
    epoch may belong to other work; ``train_pack(..., checkpoint=path)`` checks it."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return int(_read_meta(npz)["epoch"])
    except Exception:  # noqa: BLE001 - any unreadable file means "no checkpoint"
        return None


def load_checkpoint(
    path: str | os.PathLike, *, key: str, template: Any, pack_size: int
) -> Checkpoint | None:
    """The checkpoint at ``path`` if it is readable and belongs to this run, else ``None``.

    Args:
      path: the checkpoint file. A missing file returns ``None`` silently.
      key: :func:`checkpoint_key` of the run that wants to resume.
      template: the run's initial state; the checkpoint's leaves must match its tree, shapes
        and dtypes.
      pack_size: ``T``; the checkpoint must hold one list of rows per target.

    A file that cannot be read (truncated, not a checkpoint, other version), whose key differs
    from ``key``, or whose arrays do not fit ``template`` gives a :class:`UserWarning` that
    names the file and ``None``: the run starts from epoch 1 and will overwrite the file.
    """
    path = Path(path)
    if not path.exists():
        return None
    leaves0, treedef = jax.tree_util.tree_flatten(template)
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = _read_meta(npz)
            if meta.get("key") != key:
                warnings.warn(
                    f"ignoring checkpoint {path}: it was written for other work (its key "
                    f"{meta.get('key')!r} differs from this run's {key!r}: other labels, data, "
                    "θ₀, seed or training options); training starts from epoch 1 and will "
                    "overwrite it.",
                    UserWarning,
                    stacklevel=3,
                )
                return None
            leaves = [npz[f"leaf_{i:05d}"] for i in range(len(leaves0))]
            if len(npz.files) != len(leaves0) + 1:
                raise ValueError(f"{len(npz.files) - 1} state arrays, expected {len(leaves0)}")
        for i, (got, want) in enumerate(zip(leaves, leaves0, strict=True)):
            if got.shape != want.shape or got.dtype != want.dtype:
                raise ValueError(
                    f"state array {i} is {got.dtype}{list(got.shape)}, expected "
                    f"{want.dtype}{list(want.shape)}"
                )
        epoch, rows = int(meta["epoch"]), meta["rows"]
        if epoch < 1 or not isinstance(rows, list) or len(rows) != pack_size:
            raise ValueError(f"inconsistent metadata (epoch {epoch}, {len(rows)} row lists)")
    except Exception as err:  # noqa: BLE001 - a damaged checkpoint must not end the trial
        warnings.warn(
            f"ignoring damaged checkpoint {path} ({type(err).__name__}: {err}); training "
            "starts from epoch 1 and will overwrite it.",
            UserWarning,
            stacklevel=3,
        )
        return None
    return Checkpoint(jax.tree_util.tree_unflatten(treedef, leaves), epoch, rows)
