"""One view of K for every solver: a dense array or an operator handle behind ``matmat``.

A *handle* is any object with ``.shape == (N, N)``, ``.dtype`` and ``matmat(V) -> K @ V`` for
``V`` of shape ``(N, b)``; optionally ``to_numpy()`` returning the dense ``(N, N)`` matrix (a
``scipy.sparse.linalg.LinearOperator`` qualifies). For the distributed Gram every ``matmat`` is
a round trip to the workers, so the solvers call it with wide blocks.

:class:`KernelOperator` counts products (``matvecs`` = summed block widths) and records each
call's width, so locking is observable.
"""

from __future__ import annotations

import numpy as np

from raysweep.eigen.eigen_checks import check_array, check_handle

__all__ = ["KernelOperator", "is_handle"]

# float64 rows of K materialized at once by the residual product of a float32 array
_PRODUCT64_CHUNK_BYTES = 64 * 2**20


def is_handle(obj) -> bool:
    """True for operator handles (have ``matmat``), False for arrays and array-likes."""
    return not isinstance(obj, np.ndarray) and hasattr(obj, "matmat")


def _work_dtype(dtype) -> np.dtype:
    """float32 stays float32 (and float16 widens to it); everything else computes in float64."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype in (np.float16, np.float32) else np.dtype(np.float64)


class KernelOperator:
    """K as a dense array or a handle, with product counting.

    Args:
      source: a numpy array (or array-like) ``(N, N)`` or a handle (module docstring). Arrays
        are validated in full (:func:`raysweep.eigen.eigen_checks.check_array`); handles by their
        attributes only (the block solver checks the first products).

    Attributes:
      n: N. dtype: the working dtype (float32 or float64). array: the dense matrix or None.
      handle: the handle or None. matvecs: products so far. widths: width of every call.
    """

    def __init__(self, source):
        self.matvecs = 0
        self.widths: list[int] = []
        if is_handle(source):
            self.n = check_handle(source)
            self.handle = source
            self.array = None
            dtype = source.dtype if source.dtype is not None else np.float64
            self.dtype = _work_dtype(dtype)
        else:
            array = np.asarray(source)
            if array.dtype == object:  # neither numeric nor a handle: say what a handle needs
                check_handle(source)
            check_array(array)
            self.n = array.shape[0]
            self.dtype = _work_dtype(array.dtype)
            self.array = array if array.dtype == self.dtype else array.astype(self.dtype)
            self.handle = None

    # ------------------------------------------------------------------ dense access

    @property
    def has_dense(self) -> bool:
        return self.array is not None or callable(getattr(self.handle, "to_numpy", None))

    def dense_bytes(self) -> int:
        return self.n * self.n * self.dtype.itemsize

    def to_dense(self) -> np.ndarray:
        """The dense ``(N, N)`` matrix in the working dtype (``handle.to_numpy()`` for handles).

        A handle with ``release_resident()`` (a :class:`~raysweep.distributed.DistributedGram`)
        is asked to drop its workers' in-memory tiles first, so that no stage holds the Gram
        twice; its ``matmat`` keeps working from the tile store.
        """
        if self.array is not None:
            return self.array
        if not callable(getattr(self.handle, "to_numpy", None)):
            raise TypeError(
                f"K of type {type(self.handle).__name__} has no to_numpy(); method='dense' "
                "needs the matrix itself. Use method='block' (matmat only) or 'nystrom'."
            )
        release = getattr(self.handle, "release_resident", None)
        if callable(release):  # e.g. DistributedGram: its workers' copy goes, the driver's comes
            release()
        array = np.asarray(self.handle.to_numpy())
        if array.shape != (self.n, self.n):
            raise ValueError(
                f"K.to_numpy() returned shape {array.shape}, expected {(self.n, self.n)}."
            )
        check_array(array)
        self.array = array.astype(self.dtype, copy=False)
        return self.array

    # ------------------------------------------------------------------ products

    def _count(self, width: int) -> None:
        self.matvecs += width
        self.widths.append(width)

    def matmat(self, v: np.ndarray) -> np.ndarray:
        """``K @ v`` in the working dtype; ``v`` is ``(N, b)``. Counts ``b`` products."""
        self._count(v.shape[1])
        if self.array is not None:
            return self.array @ v
        out = np.asarray(self.handle.matmat(np.ascontiguousarray(v, dtype=self.dtype)))
        if out.shape != v.shape:
            raise ValueError(
                f"K.matmat(V) returned shape {out.shape} for V of shape {v.shape}; a handle "
                "must return K @ V with the shape of V."
            )
        # the solvers update products in place: a read-only result (e.g. from JAX) is copied
        return out.astype(self.dtype, copy=not out.flags.writeable)

    def product64(self, v: np.ndarray) -> np.ndarray:
        """``K @ v`` accumulated in float64 (the residual product); ``v`` is ``(N, b)``.

        Arrays are promoted to float64 a block of rows at a time (``_PRODUCT64_CHUNK_BYTES``);
        handles receive a float64 ``v`` and their result is promoted (its accuracy is whatever
        the handle's ``matmat`` gives for float64 input).
        """
        v = np.asarray(v, dtype=np.float64)
        self._count(v.shape[1])
        if self.array is None:
            return np.asarray(self.handle.matmat(v), dtype=np.float64)
        if self.array.dtype == np.float64:
            return self.array @ v
        out = np.empty((self.n, v.shape[1]))
        rows = max(1, _PRODUCT64_CHUNK_BYTES // (8 * self.n))
        for start in range(0, self.n, rows):
            stop = min(start + rows, self.n)
            np.matmul(self.array[start:stop].astype(np.float64), v, out=out[start:stop])
        return out

    def columns(self, index: np.ndarray) -> np.ndarray:
        """``K[:, index]`` as ``(N, m)`` in the working dtype (indicator columns for handles)."""
        if self.array is not None:
            return self.array[:, index]
        indicator = np.zeros((self.n, index.size), dtype=self.dtype)
        indicator[index, np.arange(index.size)] = 1
        return self.matmat(indicator)
