"""Your own data: ``npz:PATH`` files, loader functions by import path, registered loaders.

Three ways to name a dataset of your own in ``data.name`` (or :func:`raysweep.data.load_dataset`):

``npz:PATH``
    A NumPy ``.npz`` archive (``numpy.savez(PATH, x_train=..., y_train=..., x_test=...,
    y_test=...)``). Other arrays in the file are ignored, except an optional
    ``positive_classes`` array (the binary rule, see below). A relative ``PATH`` is resolved
    against the current working directory, ``~`` is expanded; a driver calls
    :func:`resolve_data_name` before anything changes directory, so that every worker reads the
    same absolute path. ``data.root`` plays no part.
``package.module:attr``
    An import path to a loader function (``attr`` may be dotted: ``module:Class.method``). The
    module is imported with the current working directory and the running script's directory
    added in front of ``sys.path`` (for the import and the loader call only), so a
    ``my_data.py`` next to the script or in the folder the job started from is found.
a registered name
    A loader added in this process with :func:`raysweep.data.register_dataset`. The registry
    lives in memory: a process that did not register the name (e.g. a fresh Ray worker that
    does not import the registering module) does not know it.

A loader is called with no arguments, or as ``loader(root=PATH)`` when it declares a parameter
named ``root`` (``PATH`` is the resolved data folder, :func:`raysweep.data.resolve_root`). It
returns either

- a tuple (or list) ``(x_train, y_train, x_test, y_test)``, or
- a dict with the keys ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally one of
  ``positive_classes`` (the label values mapped to 1 in the binary task) or ``binary_rule``
  (a function ``label -> bool`` called once per distinct label value; ``True`` means 1). Other
  keys are an error (a misspelled key would otherwise be silently dropped).

Arrays may be anything ``numpy.asarray`` accepts. Every check runs on the full arrays before
any subsampling or standardization, and each failure is a one-line error that names the
dataset, the array and what to do:

Inputs ``x``
    ``(n, H, W, C)`` images (NHWC) as they are; ``(n, H, W)`` gets a channel axis
    ``(n, H, W, 1)``; vectors ``(n, d)`` become ``(n, d, 1, 1)``: one channel, standardized
    with one mean and std over all features, like a grayscale image. Vectors suit the MLP
    (which flattens); the convolutional models need real images, so reshape to
    ``(n, H, W, C)`` yourself (``H, W >= 4`` for LeNet5). Standardize features of very
    different scales beforehand. Floating, integer or bool dtypes; cast to ``float32``.
    NaN / inf, values beyond the ``float32`` range and empty splits are errors; ``x_train``
    and ``x_test`` must have the same per-example shape.
Labels ``y``
    1-D, one per example of the matching ``x``; integer or bool, or floats that are whole
    numbers (``1.0``). The sorted distinct label values of both splits become the class ids
    ``0 .. K-1`` (labels ``0 .. K-1`` stay as they are; ``{-1, 1}`` becomes ``{0, 1}``) and
    ``class_names`` are the original values as strings. At least two classes, and at least two
    in ``y_train``.

Preprocessing is the built-ins' pipeline (:func:`raysweep.data.preprocess.build_dataset`) with
``max_value = 1``: stratified subsampling on the classes, ``float32`` cast, per-channel
standardization with the training statistics (``mean`` / ``std`` are in the units of your
arrays; ``STD_FLOOR`` applies to them as given).

Binary task (``binary=True``): with exactly two classes the labels already are the task (the
larger label value is 1) unless a rule says otherwise; with more classes a rule is required:
``positive_classes`` / ``binary_rule`` from the loader's dict, or a ``positive_classes`` array
in the ``.npz``. Without ``binary=True`` all classes are kept (the eigenfunction study does not
use labels). The :class:`~raysweep.data.dataset.Dataset`'s ``positive_classes`` are class ids,
equal to the label values when the labels are ``0 .. K-1``.

Provenance: the Dataset's ``name`` is the ``data.name`` string as given; its ``source`` is
``"<absolute npz path | import path | registered NAME (module:function)> sha256:<hex>"``, the
last space-separated token being :func:`arrays_fingerprint` of the arrays as loaded (and of the
binary rule's positive labels, when there is a rule), so a changed file or loader output gives
another manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import os
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from raysweep.config import is_import_path
from raysweep.data.preprocess import RawSplit

NPZ_PREFIX = "npz:"
"""Prefix of ``data.name`` values naming a ``.npz`` file."""

ARRAY_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
"""The arrays a ``.npz`` file or a loader's dict must hold."""

RULE_KEYS: tuple[str, ...] = ("positive_classes", "binary_rule")
"""Optional keys of a loader's dict giving the binary rule (at most one of them)."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_CHUNK_BYTES = 64 * 2**20


def is_npz_name(name: Any) -> bool:
    """Whether ``name`` is an ``npz:PATH`` dataset name."""
    return isinstance(name, str) and name.startswith(NPZ_PREFIX)


def is_loader_path(name: Any) -> bool:
    """Whether ``name`` is an import path ``package.module:attr`` to a loader."""
    return is_import_path(name)


def resolve_data_name(name: str) -> str:
    """Make an ``npz:`` name independent of the working directory; return others unchanged.

    ``npz:rel/path.npz`` becomes ``npz:/abs/rel/path.npz`` (resolved against the current
    working directory, ``~`` expanded, ``..`` collapsed; the file need not exist). Call it in
    the driver before anything (Ray, Tune) changes directory. ``npz:`` with no path is left
    as it is (loading it reports the mistake).
    """
    if not is_npz_name(name) or len(name) == len(NPZ_PREFIX):
        return name
    path = name[len(NPZ_PREFIX) :]
    return NPZ_PREFIX + os.path.abspath(os.path.expanduser(path))


# ----------------------------------------------------------------------------------- sources
def read_npz(name: str) -> tuple[dict[str, Any], str]:
    """Read the arrays of an ``npz:PATH`` name.

    Returns:
        ``(payload, path)``: the four :data:`ARRAY_KEYS` arrays (plus ``positive_classes`` when
        the file has one) and the absolute path read.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty path, a folder, not a readable ``.npz``, a missing array (the message
            lists the arrays present) or an array stored as Python objects.
    """
    prefix = _prefix(name)
    text = name[len(NPZ_PREFIX) :]
    if not text:
        raise ValueError(f"dataset {name!r} names no file; write npz:PATH.npz.")
    path = Path(os.path.abspath(os.path.expanduser(text)))
    if not path.exists():
        where = ""
        if not Path(text).expanduser().is_absolute():
            where = f" (a relative npz: path is resolved against the current folder {os.getcwd()})"
        raise FileNotFoundError(f"{prefix}no file {path}{where}; check the path.")
    if path.is_dir():
        raise ValueError(f"{prefix}{path} is a folder; give the .npz file inside it.")
    hint = "write it with numpy.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{prefix}cannot read {path} as .npz ({_one_line(err)}); {hint}."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{prefix}{path} holds one array (.npy), not named arrays; {hint}.")
    with archive:
        present = list(archive.files)
        missing = [k for k in ARRAY_KEYS if k not in present]
        if missing:
            raise ValueError(
                f"{prefix}{path} has no {_quoted(missing)}; a .npz dataset needs "
                f"{', '.join(ARRAY_KEYS)} (arrays present: {', '.join(present) or 'none'})."
            )
        wanted = [*ARRAY_KEYS, *(["positive_classes"] if "positive_classes" in present else [])]
        payload = {}
        for key in wanted:
            try:
                payload[key] = archive[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                raise ValueError(
                    f"{prefix}cannot read array {key!r} of {path} ({_one_line(err)}); store "
                    "numeric arrays (no Python objects)."
                ) from None
    return payload, str(path)


def import_loader(name: str) -> Callable[..., Any]:
    """Import the loader an import path ``package.module:attr`` names.

    The current working directory and the running script's directory are put in front of
    ``sys.path`` for the import (see :func:`loader_search_path`).

    Raises:
        ImportError: the module is not found, importing it fails on a missing dependency, or it
            has no such attribute.
        TypeError: the attribute is not callable.
    """
    prefix = _prefix(name)
    module_name, attr = name.split(":")
    with loader_search_path() as added:
        importlib.invalidate_caches()
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            missing = err.name or ""
            if missing == module_name or module_name.startswith(missing + "."):
                searched = ", ".join(added) if added else "sys.path"
                raise ImportError(
                    f"{prefix}no module named {missing!r} (looked in {searched} and sys.path); "
                    "put the module in the folder the job starts from or next to the script, "
                    "or install it."
                ) from None
            raise ImportError(
                f"{prefix}importing {module_name!r} failed: {_one_line(err)}; install the "
                "missing package."
            ) from err
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ImportError(
                f"{prefix}module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                f"attribute {attr!r}; check the name after the ':'."
            )
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(
            f"{prefix}{attr!r} in {module_name!r} is a {type(target).__name__}, not a callable; "
            "name a function returning (x_train, y_train, x_test, y_test) or a dict of them."
        )
    return target


@contextlib.contextmanager
def loader_search_path() -> Iterator[list[str]]:
    """Put the working directory and the script's directory in front of ``sys.path``.

    Yields the folders added (those already on ``sys.path`` are not added twice) and removes
    them again on exit.
    """
    candidates = [os.getcwd()]
    script = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if script and os.path.isfile(script):
        candidates.append(os.path.dirname(os.path.abspath(script)))
    present = {os.path.abspath(p or os.curdir) for p in sys.path}
    added = []
    for folder in candidates:
        if folder not in present and folder not in added:
            added.append(folder)
    sys.path[:0] = added
    try:
        yield added
    finally:
        for folder in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def call_loader(name: str, loader: Callable[..., Any], root: Path) -> dict[str, Any]:
    """Call ``loader`` (with ``root=`` when it declares it) and check the form of its result.

    Returns:
        The payload dict: the four :data:`ARRAY_KEYS` and any :data:`RULE_KEYS` given.

    Raises:
        TypeError: the result is neither a dict nor a 4-tuple / list.
        ValueError: a dict misses an array (the message lists its keys) or has unknown keys.
    """
    prefix = _prefix(name)
    kwargs = {"root": root} if _takes_root(loader) else {}
    with loader_search_path():
        try:
            result = loader(**kwargs)
        except Exception as err:
            err.add_note(f"raised by the loader of dataset {name!r} ({describe_loader(loader)})")
            raise
    if isinstance(result, Mapping):
        keys = [str(k) for k in result]
        unknown = [k for k in keys if k not in (*ARRAY_KEYS, *RULE_KEYS)]
        if unknown:
            raise ValueError(
                f"{prefix}the loader's dict has unknown {_quoted(unknown)}; accepted keys: "
                f"{', '.join((*ARRAY_KEYS, *RULE_KEYS))}."
            )
        missing = [k for k in ARRAY_KEYS if k not in result]
        if missing:
            raise ValueError(
                f"{prefix}the loader's dict has no {_quoted(missing)}; it must hold "
                f"{', '.join(ARRAY_KEYS)} (keys present: {', '.join(keys) or 'none'})."
            )
        return dict(result)
    if isinstance(result, tuple | list) and len(result) == len(ARRAY_KEYS):
        return dict(zip(ARRAY_KEYS, result, strict=True))
    what = f"a {type(result).__name__}"
    if isinstance(result, tuple | list):
        what = f"a {type(result).__name__} of {len(result)} items"
    raise TypeError(
        f"{prefix}the loader returned {what}; return (x_train, y_train, x_test, y_test) or a dict "
        f"with the keys {', '.join(ARRAY_KEYS)}."
    )


def describe_loader(loader: Callable[..., Any]) -> str:
    """``module:qualname`` of a loader function, else its type name."""
    module = getattr(loader, "__module__", None)
    qualname = getattr(loader, "__qualname__", None)
    if module and qualname:
        return f"{module}:{qualname}"
    return type(loader).__name__


# ------------------------------------------------------------------------------- validation
def user_split(
    name: str, payload: Mapping[str, Any], source: str
) -> tuple[RawSplit, tuple[int, ...] | None]:
    """Check a payload and turn it into a :class:`RawSplit` (before any work on the arrays).

    Args:
        name: the dataset name (used in messages).
        payload: the four :data:`ARRAY_KEYS` and optionally one of :data:`RULE_KEYS`.
        source: where the arrays come from; the fingerprint is appended to it.

    Returns:
        ``(raw, positive)``: the split (class ids ``0 .. K-1``, ``max_value=1``, NHWC images in
        their own dtype) and the class ids of the binary rule, or ``None`` without a rule.

    Raises:
        TypeError / ValueError: any failed check of the module docstring, one line each.
    """
    prefix = _prefix(name)
    given = {k: _as_array(prefix, k, payload[k]) for k in ARRAY_KEYS}
    x_train = _images(prefix, "x_train", given["x_train"])
    x_test = _images(prefix, "x_test", given["x_test"])
    y_train = _labels(prefix, "y_train", given["y_train"], "x_train", len(x_train))
    y_test = _labels(prefix, "y_test", given["y_test"], "x_test", len(x_test))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{prefix}x_test examples have shape {given['x_test'].shape[1:]} but x_train "
            f"examples have {given['x_train'].shape[1:]}; both splits need the same "
            "per-example shape."
        )
    for field, x in (("x_train", x_train), ("x_test", x_test)):
        _check_finite(prefix, field, x)
    values = np.unique(np.concatenate([y_train, y_test]))
    if len(values) < 2:
        raise ValueError(
            f"{prefix}y_train and y_test hold a single class (label {values[0]}); the data "
            "needs at least 2 classes."
        )
    train_values = np.unique(y_train)
    if len(train_values) < 2:
        raise ValueError(
            f"{prefix}y_train holds a single class (label {train_values[0]}); the training "
            "split needs at least 2 classes."
        )
    positive_values = _rule(prefix, payload, values)
    raw = RawSplit(
        x_train=x_train,
        y_train=np.searchsorted(values, y_train).astype(np.int64),
        x_test=x_test,
        y_test=np.searchsorted(values, y_test).astype(np.int64),
        num_classes=len(values),
        max_value=1.0,
        class_names=tuple(str(int(v)) for v in values),
        source=f"{source} {arrays_fingerprint(given, positive_values)}",
    )
    if positive_values is None:
        return raw, None
    return raw, tuple(int(i) for i in np.searchsorted(values, positive_values))


def binary_classes(
    name: str, raw: RawSplit, positive: tuple[int, ...] | None, *, from_npz: bool
) -> tuple[int, ...]:
    """The class ids mapped to 1 in the binary task of a user dataset.

    The rule when there is one; else, with two classes, the larger one; else an error.
    """
    if positive is not None:
        return positive
    if raw.num_classes == 2:
        return (1,)
    where = "positive_classes=[...] in the loader's dict"
    if from_npz:
        where = "a positive_classes array in the .npz"
    raise ValueError(
        f"dataset {name!r} has {raw.num_classes} classes ({', '.join(raw.class_names)}) but the "
        f"binary task needs a rule; give {where} or use data with two classes."
    )


def arrays_fingerprint(
    arrays: Mapping[str, np.ndarray], positive: tuple[int, ...] | None = None
) -> str:
    """``"sha256:<hex>"`` over the :data:`ARRAY_KEYS` arrays (shape, dtype, C-order bytes, in
    that order) and the binary rule's positive label values when there is one."""
    digest = hashlib.sha256(b"raysweep-user-data-v1;")
    for key in ARRAY_KEYS:
        arr = np.ascontiguousarray(arrays[key])
        digest.update(f"{key};shape={tuple(arr.shape)};dtype={arr.dtype.str};".encode())
        flat = arr.reshape(-1).view(np.uint8) if arr.size else np.empty(0, np.uint8)
        for start in range(0, flat.size, _CHUNK_BYTES):
            digest.update(memoryview(flat[start : start + _CHUNK_BYTES]))
    if positive is not None:
        digest.update(f"positive={[int(v) for v in positive]};".encode())
    return "sha256:" + digest.hexdigest()


def _as_array(prefix: str, field: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists and the like
        raise ValueError(
            f"{prefix}{field} is not an array ({_one_line(err)}); give a numeric array."
        ) from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{prefix}{field} has dtype {arr.dtype}; give numbers (float, integer or bool)."
        )
    return arr


def _images(prefix: str, field: str, x: np.ndarray) -> np.ndarray:
    """``x`` as NHWC (a view): ``(n, H, W) -> (n, H, W, 1)``, ``(n, d) -> (n, d, 1, 1)``."""
    if x.dtype.kind == "b":
        x = x.astype(np.uint8)
    if x.ndim == 2:
        x = x[:, :, None, None]
    elif x.ndim == 3:
        x = x[..., None]
    elif x.ndim != 4:
        raise ValueError(
            f"{prefix}{field} has shape {x.shape}; give (n, H, W, C) images, (n, H, W) or "
            "(n, d) vectors."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{prefix}{field} is empty (0 examples); give at least one example.")
    if 0 in x.shape[1:]:
        raise ValueError(f"{prefix}{field} has empty examples (shape {x.shape}); check its axes.")
    return x


def _labels(prefix: str, field: str, y: np.ndarray, x_field: str, n: int) -> np.ndarray:
    """``y`` as ``int64`` labels after the shape and dtype checks."""
    if y.ndim != 1:
        hint = "; flatten it with y.ravel()" if y.size == y.shape[0] and y.ndim == 2 else ""
        raise ValueError(
            f"{prefix}{field} has shape {y.shape}; labels must be a 1-D vector, one per "
            f"example{hint}."
        )
    if len(y) != n:
        raise ValueError(
            f"{prefix}{field} has {len(y)} labels but {x_field} has {n} examples; give one "
            "label per example."
        )
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            bad = np.flatnonzero(~whole)
            example = y[bad[0]].item()
            raise ValueError(
                f"{prefix}{field} has {bad.size} non-integer labels (e.g. {example!r} at row "
                f"{bad[0]}); labels are class ids: map them to integers first."
            )
        if np.abs(y).max() >= 2.0**62:
            raise ValueError(f"{prefix}{field} has labels beyond the int64 range; renumber them.")
    elif y.dtype.kind == "u" and y.dtype.itemsize == 8 and y.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{prefix}{field} has labels beyond the int64 range; renumber them.")
    return y.astype(np.int64)


def _check_finite(prefix: str, field: str, x: np.ndarray) -> None:
    if x.dtype.kind != "f":
        return  # integers are finite and fit float32's range
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ValueError(
            f"{prefix}{field} has {bad} non-finite values (NaN or inf) among {x.size}; remove "
            "or impute them before loading."
        )
    if x.dtype.itemsize > 4 and float(np.abs(x).max()) > _FLOAT32_MAX:
        raise ValueError(
            f"{prefix}{field} has values beyond the float32 range (|x| > {_FLOAT32_MAX:.3g}); "
            "rescale it."
        )


def _rule(prefix: str, payload: Mapping[str, Any], values: np.ndarray) -> tuple[int, ...] | None:
    """The label values mapped to 1 by the payload's binary rule, or ``None`` without one."""
    given = [k for k in RULE_KEYS if payload.get(k) is not None]
    if len(given) > 1:
        raise ValueError(f"{prefix}give positive_classes or binary_rule, not both.")
    if not given:
        return None
    present = [int(v) for v in values]
    if given[0] == "binary_rule":
        rule = payload["binary_rule"]
        if not callable(rule):
            raise TypeError(
                f"{prefix}binary_rule is a {type(rule).__name__}; give a function label -> bool."
            )
        positive = [v for v in present if bool(rule(v))]
        what = "binary_rule"
    else:
        raw = np.asarray(payload["positive_classes"])
        whole = raw.dtype.kind in "biu" or (
            raw.dtype.kind == "f" and bool(np.all(raw == np.round(raw)))
        )
        if raw.ndim > 1 or not whole:
            raise ValueError(
                f"{prefix}positive_classes must be a list of label values, got "
                f"{payload['positive_classes']!r}."
            )
        positive = sorted({int(v) for v in raw.reshape(-1)})
        unknown = [v for v in positive if v not in present]
        if unknown:
            raise ValueError(
                f"{prefix}positive_classes {unknown} are not labels of the data (labels: "
                f"{present}); list label values that occur."
            )
        what = "positive_classes"
    if not positive or len(positive) == len(present):
        raise ValueError(
            f"{prefix}{what} selects {len(positive)} of the {len(present)} classes {present}; "
            "the binary task needs some but not all classes as 1."
        )
    return tuple(positive)


def _takes_root(loader: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):
        return False
    param = params.get("root")
    return param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _prefix(name: str) -> str:
    return f"dataset {name!r}: "


def _quoted(keys: list[str]) -> str:
    return ", ".join(repr(k) for k in keys)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
