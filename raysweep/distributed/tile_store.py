"""The on-disk tile store of a distributed Gram matrix.

Layout of ``store_dir``::

    store_dir/
      manifest.json                        what this store is the Gram matrix *of* (below)
      tiles/tile_{i:05d}_{j:05d}.npy       one upper-triangle tile, i <= j (block indices)
      tiles/tile_{i:05d}_{j:05d}.npy.crc32 its checksum: zlib CRC-32 of the .npy file's bytes,
                                           8 lowercase hex digits and a newline

The N examples are cut into ``num_blocks = ceil(N / tile_size)`` consecutive blocks (the last
may be shorter, :func:`raysweep.ntk.block_slices`). Tile ``(i, j)`` with ``i <= j`` holds
``Θ[rows of block i, rows of block j]`` as a 2-D ``.npy`` array of the manifest's dtype (float32
by default), shape ``(len(block i), len(block j))``. Diagonal tiles are exactly symmetric. Only
``i <= j`` is stored; ``Θ[block j, block i]`` is the transpose.

Manifest fields (JSON object): ``format_version``, ``n``, ``tile_size``, ``num_blocks``,
``dtype`` (tile dtype, e.g. ``"float32"``), ``method`` (the resolved NTK method),
``precision``, ``example_shape``, ``dataset_fingerprint``, ``params_fingerprint``,
``model_id``, ``outputs`` (C: the model's logits, 1 for the NTK Gram, C > 1 for the traced
kernel; absent in stores written before it existed, which read as 1), and the informational
``created_utc`` and ``raysweep_version``. All fields except
the informational ones must match for a store to be reused (:data:`IDENTITY_FIELDS`).

Writes are atomic (:func:`raysweep.atomic.atomic_write`): a file is written to a hidden
temporary file in the same folder and moved into place with ``os.replace``, so a killed
process leaves either no file or a complete one (at worst a stray ``.tmp`` file, which is
ignored). The manifest is written first, when the store is created. A tile's checksum file is
written *before* the tile is renamed into place, so a present tile always has its checksum;
each tile carries its own (no shared index that every writer rewrites), so workers on many
nodes write tiles without coordinating. Nothing here ever deletes a tile or a store.

Reads are verified: :meth:`TileStore.load` checks the file against its checksum, its shape and
its dtype, and raises :class:`DamagedTileError` (a ``ValueError`` naming the file and the
reason) for a damaged tile: unreadable or truncated, a checksum mismatch (e.g. overwritten),
the wrong shape or dtype, or no checksum file at all (a tile written before checksums were
kept, or a file put there by hand), which counts as unverified. Gram workers recompute such a
tile; where nothing can recompute it (the driver's reads) the error says to run
:func:`~raysweep.distributed.compute_gram` again.

Every worker opens the store by path, so on a multi-node cluster ``store_dir`` must be on a
filesystem all nodes see (NFS, a mounted bucket, ...); :meth:`TileStore.open` fails with a
clear message where it is not.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import zlib
from pathlib import Path

import numpy as np

from raysweep.atomic import atomic_write
from raysweep.ntk import block_slices

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TILES_DIR = "tiles"
CHECKSUM_SUFFIX = ".crc32"
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
    "outputs",
)
# identity fields added after format 1's first stores: the value an older manifest implies
IDENTITY_DEFAULTS = {"outputs": 1}


def tile_name(i: int, j: int) -> str:
    """File name of tile ``(i, j)``: ``tile_{i:05d}_{j:05d}.npy``."""
    return f"tile_{i:05d}_{j:05d}.npy"


class DamagedTileError(ValueError):
    """A stored tile that cannot be trusted: says which tile, which file and why.

    Attributes:
      i, j: block indices. path: the tile file. reason: what is wrong with it.
    """

    def __init__(self, i: int, j: int, path, reason: str):
        self.i, self.j, self.path, self.reason = int(i), int(j), str(path), str(reason)
        super().__init__(
            f"tile ({self.i}, {self.j}) at {self.path}: {self.reason}. Run compute_gram again "
            "with the same arguments (or the eigen step on the same results folder): it "
            "recomputes damaged tiles."
        )

    def __reduce__(self):  # pickled across Ray processes with its fields, not its message
        return (type(self), (self.i, self.j, self.path, self.reason))


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
        outputs: int = 1,
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
            "outputs": int(outputs),
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
                f"{key}: store has {_describe(stored.get(key, IDENTITY_DEFAULTS.get(key)))}, "
                f"this call has {_describe(manifest[key])}"
                for key in IDENTITY_FIELDS
                if stored.get(key, IDENTITY_DEFAULTS.get(key)) != manifest[key]
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

    def checksum_path(self, i: int, j: int) -> Path:
        """The checksum file of tile ``(i, j)``: its path plus ``.crc32``."""
        return self.tiles_dir / (tile_name(i, j) + CHECKSUM_SUFFIX)

    def tile_shape(self, i: int, j: int) -> tuple[int, int]:
        rs, cs = self.slices[i], self.slices[j]
        return rs.stop - rs.start, cs.stop - cs.start

    def panel_tiles(self, i: int) -> list[tuple[int, int]]:
        """The tiles ``(i, j)``, ``j = i .. num_blocks-1``, of row panel ``i``."""
        return [(i, j) for j in range(i, self.num_blocks)]

    def has(self, i: int, j: int) -> bool:
        """Whether tile ``(i, j)``'s file exists (not whether it is intact: see :meth:`load`)."""
        return self.tile_path(i, j).exists()

    def done_tiles(self) -> set[tuple[int, int]]:
        """Tiles whose file is present on disk (one directory listing; contents unchecked)."""
        done = set()
        for name in os.listdir(self.tiles_dir):
            if name.startswith("tile_") and name.endswith(".npy"):
                i, j = (int(part) for part in name[5:-4].split("_"))
                if 0 <= i <= j < self.num_blocks:
                    done.add((i, j))
        return done

    def save(self, i: int, j: int, tile: np.ndarray) -> None:
        """Write tile ``(i, j)`` and its checksum atomically; checks shape and dtype first.

        The checksum file goes first, so that a tile in place always has one (a crash between
        the two renames leaves a checksum without its tile, or with an older tile that then
        fails verification and is recomputed).
        """
        tile = np.ascontiguousarray(tile)
        if tile.shape != self.tile_shape(i, j) or tile.dtype != self.dtype:
            raise ValueError(
                f"tile ({i}, {j}) must be {self.tile_shape(i, j)} {self.dtype}; "
                f"got {tile.shape} {tile.dtype}."
            )
        buffer = io.BytesIO()
        np.save(buffer, tile, allow_pickle=False)
        data = buffer.getvalue()
        atomic_write(self.checksum_path(i, j), f"{zlib.crc32(data):08x}\n".encode())
        atomic_write(self.tile_path(i, j), data)

    def load(self, i: int, j: int) -> np.ndarray:
        """Read tile ``(i, j)`` and verify it (one read of the file; checksum, shape, dtype).

        Raises:
          DamagedTileError: the file is missing, unreadable or truncated, has the wrong shape
            or dtype, does not match its checksum, or has no checksum file (unverified).
        """
        path = self.tile_path(i, j)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DamagedTileError(i, j, path, "the file is missing") from None
        except OSError as err:
            raise DamagedTileError(i, j, path, f"unreadable ({err})") from None
        try:
            tile = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, EOFError, OSError) as err:
            raise DamagedTileError(
                i, j, path, f"truncated or unreadable ({len(data)} bytes; numpy: {err})"
            ) from None
        if tile.shape != self.tile_shape(i, j) or tile.dtype != self.dtype:
            raise DamagedTileError(
                i,
                j,
                path,
                f"wrong shape or dtype (expected {self.tile_shape(i, j)} {self.dtype}, found "
                f"{tile.shape} {tile.dtype})",
            )
        expected = self._stored_checksum(i, j)
        actual = zlib.crc32(data)
        if expected != actual:
            raise DamagedTileError(
                i,
                j,
                path,
                f"checksum mismatch (the file's crc32 is {actual:08x}, "
                f"{self.checksum_path(i, j).name} says {expected:08x})",
            )
        return tile

    def _stored_checksum(self, i: int, j: int) -> int:
        path = self.checksum_path(i, j)
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            raise DamagedTileError(
                i,
                j,
                self.tile_path(i, j),
                f"no checksum file {path.name} (written before checksums were kept, or not by "
                "raysweep), so it is unverified",
            ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise DamagedTileError(
                i, j, self.tile_path(i, j), f"its checksum file {path.name} is unreadable ({err})"
            ) from None
        try:
            return int(text, 16)
        except ValueError:
            raise DamagedTileError(
                i,
                j,
                self.tile_path(i, j),
                f"its checksum file {path.name} holds {text[:20]!r}, not a hex crc32",
            ) from None
