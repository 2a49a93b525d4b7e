"""The on-disk tile store of a distributed Gram matrix.

Layout of ``store_dir``::

    store_dir/
      manifest.json                 what this store is the Gram matrix *of* (below)
      tiles/tile_{i:05d}_{j:05d}.npy  one upper-triangle tile, i <= j (block indices)

The N examples are cut into ``num_blocks = ceil(N / tile_size)`` consecutive blocks (the last
may be shorter, :func:`raysweep.ntk.block_slices`). Tile ``(i, j)`` with ``i <= j`` holds
``Θ[rows of block i, rows of block j]`` as a 2-D ``.npy`` array of the manifest's dtype (float32
by default), shape ``(len(block i), len(block j))``. Diagonal tiles are exactly symmetric. Only
``i <= j`` is stored; ``Θ[block j, block i]`` is the transpose.

Manifest fields (JSON object): ``format_version``, ``n``, ``tile_size``, ``num_blocks``,
``dtype`` (tile dtype, e.g. ``"float32"``), ``method`` (the resolved NTK method),
``precision``, ``example_shape``, ``dataset_fingerprint``, ``params_fingerprint``,
``model_id``, and the informational ``created_utc`` and ``raysweep_version``. All fields except
the informational ones must match for a store to be reused (:data:`IDENTITY_FIELDS`).

Writes are atomic: a tile (and the manifest) is written to a hidden temporary file in the same
folder and moved into place with ``os.replace``, so a killed process leaves either no tile or a
complete one (at worst a stray ``.tmp`` file, which is ignored). The manifest is written first,
when the store is created. Nothing here ever deletes a tile or a store.

Every worker opens the store by path, so on a multi-node cluster ``store_dir`` must be on a
filesystem all nodes see (NFS, a mounted bucket, ...); :meth:`TileStore.open` fails with a
clear message where it is not.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import numpy as np

from raysweep.atomic import atomic_write
from raysweep.ntk import block_slices

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TILES_DIR = "tiles"
IDENTITY_FIELDS = (
    "format_version",
    "n",
    "tile_size",
    "num_blocks",
    "dtype",
    "method",
    "precision",
    "example_shape",
    "dataset_fingerprint",
    "params_fingerprint",
    "model_id",
)


def tile_name(i: int, j: int) -> str:
    """File name of tile ``(i, j)``: ``tile_{i:05d}_{j:05d}.npy``."""
    return f"tile_{i:05d}_{j:05d}.npy"


def _describe(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + '..."'


class TileStore:
    """A tile store directory with a validated manifest.

    Use :meth:`open_or_create` on the driver (checks the manifest against the current inputs)
    and :meth:`open` in workers (trusts the manifest the driver wrote).

    Attributes:
      root: the store directory. manifest: the manifest dict. n: N. tile_size: examples per
      block. num_blocks: number of blocks. dtype: tile dtype (``numpy.dtype``).
      slices: the ``num_blocks`` row slices. tiles_total: ``num_blocks*(num_blocks+1)/2``.
    """

    def __init__(self, root, manifest: dict):
        self.root = Path(root)
        self.manifest = dict(manifest)
        self.n = int(manifest["n"])
        self.tile_size = int(manifest["tile_size"])
        self.num_blocks = int(manifest["num_blocks"])
        self.dtype = np.dtype(manifest["dtype"])
        self.slices = block_slices(self.n, self.tile_size)
        self.tiles_total = self.num_blocks * (self.num_blocks + 1) // 2
        self.tiles_dir = self.root / TILES_DIR

    # ----------------------------------------------------------------- opening

    @staticmethod
    def make_manifest(
        *,
        n: int,
        tile_size: int,
        dtype,
        method: str,
        precision: str,
        example_shape,
        dataset_fingerprint: str,
        params_fingerprint: str,
        model_id: str,
    ) -> dict:
        """The manifest dict for a store with these identity fields."""
        from raysweep import __version__

        return {
            "format_version": FORMAT_VERSION,
            "n": int(n),
            "tile_size": int(tile_size),
            "num_blocks": len(block_slices(int(n), int(tile_size))),
            "dtype": np.dtype(dtype).name,
            "method": str(method),
            "precision": str(precision),
            "example_shape": [int(s) for s in example_shape],
            "dataset_fingerprint": dataset_fingerprint,
            "params_fingerprint": params_fingerprint,
            "model_id": str(model_id),
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "raysweep_version": __version__,
        }

    @classmethod
    def open_or_create(cls, root, manifest: dict) -> TileStore:
        """Create the store with ``manifest``, or reopen it if its manifest matches.

        Raises:
          ValueError: the existing manifest differs in an identity field (the message names
            each field with both values), the directory exists, is not empty and has no
            manifest, or the manifest is unreadable. The store is never modified then.
        """
        root = Path(root)
        path = root / MANIFEST_NAME
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(
                    f"tile store {root}: cannot read {MANIFEST_NAME} ({err}); pick another "
                    "store_dir, or delete this one to recompute."
                ) from err
            diffs = [
                f"{key}: store has {_describe(stored.get(key))}, this call has "
                f"{_describe(manifest[key])}"
                for key in IDENTITY_FIELDS
                if stored.get(key) != manifest[key]
            ]
            if diffs:
                raise ValueError(
                    f"tile store {root} holds a different Gram matrix; mismatched fields: "
                    + "; ".join(diffs)
                    + ". Its tiles are not reused or mixed in. Pick another store_dir, or delete "
                    "this one to recompute."
                )
            store = cls(root, stored)
        else:
            if root.exists() and (not root.is_dir() or any(root.iterdir())):
                raise ValueError(
                    f"store_dir {root} exists and is not an empty directory, but has no "
                    f"{MANIFEST_NAME}; refusing to write tiles into it. Pick a new or empty "
                    "store_dir."
                )
            store = cls(root, manifest)
            root.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(manifest, indent=2).encode())
        store.tiles_dir.mkdir(parents=True, exist_ok=True)
        return store

    @classmethod
    def open(cls, root) -> TileStore:
        """Open an existing store (workers). Raises FileNotFoundError if it is not visible."""
        path = Path(root) / MANIFEST_NAME
        if not path.exists():
            import socket

            raise FileNotFoundError(
                f"tile store manifest {path} is not visible on host {socket.gethostname()}; "
                "on a multi-node cluster store_dir must be on a filesystem shared by all "
                "nodes (e.g. NFS)."
            )
        return cls(root, json.loads(path.read_text()))

    # ----------------------------------------------------------------- tiles

    def tile_path(self, i: int, j: int) -> Path:
        return self.tiles_dir / tile_name(i, j)

    def tile_shape(self, i: int, j: int) -> tuple[int, int]:
        rs, cs = self.slices[i], self.slices[j]
        return rs.stop - rs.start, cs.stop - cs.start

    def panel_tiles(self, i: int) -> list[tuple[int, int]]:
        """The tiles ``(i, j)``, ``j = i .. num_blocks-1``, of row panel ``i``."""
        return [(i, j) for j in range(i, self.num_blocks)]

    def has(self, i: int, j: int) -> bool:
        return self.tile_path(i, j).exists()

    def done_tiles(self) -> set[tuple[int, int]]:
        """Tiles present on disk (one directory listing)."""
        done = set()
        for name in os.listdir(self.tiles_dir):
            if name.startswith("tile_") and name.endswith(".npy"):
                i, j = (int(part) for part in name[5:-4].split("_"))
                if 0 <= i <= j < self.num_blocks:
                    done.add((i, j))
        return done

    def save(self, i: int, j: int, tile: np.ndarray) -> None:
        """Write tile ``(i, j)`` atomically; checks its shape and dtype first."""
        tile = np.ascontiguousarray(tile)
        if tile.shape != self.tile_shape(i, j) or tile.dtype != self.dtype:
            raise ValueError(
                f"tile ({i}, {j}) must be {self.tile_shape(i, j)} {self.dtype}; "
                f"got {tile.shape} {tile.dtype}."
            )
        atomic_write(self.tile_path(i, j), lambda fh: np.save(fh, tile, allow_pickle=False))

    def load(self, i: int, j: int) -> np.ndarray:
        """Read tile ``(i, j)``; raises ValueError if the file has the wrong shape or dtype."""
        path = self.tile_path(i, j)
        tile = np.load(path, allow_pickle=False)
        if tile.shape != self.tile_shape(i, j) or tile.dtype != self.dtype:
            raise ValueError(
                f"{path}: expected a {self.tile_shape(i, j)} {self.dtype} tile, found "
                f"{tile.shape} {tile.dtype}; the store is corrupt. Delete this file to have it "
                "recomputed."
            )
        return tile
