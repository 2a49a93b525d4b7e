"""Part files on disk: one Parquet file per trial, written atomically, read as one table.

Layout of a sweep directory (``sweep_dir``)::

    config.json                    the resolved Config of the sweep (save_sweep_config)
    metrics/<trial_id>.parquet     all rows of one trial so far (METRICS_SCHEMA, or v1)
    metrics/.<trial_id>.*.tmp      a part being written (at most one per writer; ignored)

Writing (:func:`write_trial_rows`) always rewrites the *whole* part of a trial: the rows go to
a temporary file in the same folder, which is flushed to disk and then renamed over the part
with ``os.replace`` (atomic on POSIX). A reader therefore sees either the previous complete
part or the new one, never a torn file; a crash while writing leaves the previous part intact;
and a retried or resumed trial, which has the same deterministic trial id, replaces its part
instead of adding rows to the sweep.

Reading (:func:`read_metrics`) concatenates every ``*.parquet`` part (temporary files are
skipped) into one ``pyarrow.Table`` sorted by (trial_id, eigen_index, seed, learning_rate,
target_id, epoch), nulls last; with nothing written yet it is an empty table with the schema.
``table.to_pandas()`` works when pandas is installed; nothing here needs it. The readers take
the sweep directory or its ``metrics/`` folder (:func:`resolve_sweep_dir`); a folder above
several sweeps is refused with a message naming the sweep folders below it.

Versions: parts are always written with the current schema (``metrics/v2``). Parts written
before it (``metrics/v1``: no ``target_id``, ``learning_rate``, ``axes``; -1 for a threshold
not reached) are read back upgraded (:func:`~raysweep.store.schema.upgrade_v1`), so a folder
may mix both.

Damaged parts: a part that cannot be read as Parquet with the schema (truncated, overwritten,
another file under a part's name) never hides the others. :func:`scan_metrics` returns the
table of the intact parts together with a :class:`DamagedPart` for each damaged one (path and
reason); with ``quarantine=True`` (what a resuming sweep does) the damaged file is moved to
``metrics/quarantine/<name>.<UTC time>`` (kept, never deleted) so that its trial runs again.
:func:`read_metrics` warns by default, naming each damaged file, or raises with
``damaged="raise"``.
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.atomic import atomic_write
from raysweep.config import Config, load_config, save_config
from raysweep.store.schema import (
    KEY_COLUMNS,
    METRICS_SCHEMA,
    SORT_COLUMNS,
    check_schema,
    check_trial_id,
    empty_table,
    is_v1,
    rows_to_table,
    upgrade_v1,
)

METRICS_DIR = "metrics"
QUARANTINE_DIR = "quarantine"
PART_SUFFIX = ".parquet"
CONFIG_FILE = "config.json"
DAMAGED_POLICIES = ("warn", "raise", "quarantine")


class DamagedPartWarning(UserWarning):
    """A part file of the metrics store could not be read; the others were."""


@dataclass(frozen=True)
class DamagedPart:
    """A part file that could not be read: where it was, why, and where it went (if moved)."""

    path: Path
    reason: str
    moved_to: Path | None = None

    @property
    def trial_id(self) -> str:
        return self.path.name.removesuffix(PART_SUFFIX)

    def __str__(self) -> str:
        where = f"; moved to {self.moved_to}" if self.moved_to else ""
        return f"{self.path} ({self.reason}){where}"


def metrics_dir(sweep_dir: str | os.PathLike) -> Path:
    """``<sweep_dir>/metrics``, where the part files live."""
    return Path(sweep_dir) / METRICS_DIR


def part_path(sweep_dir: str | os.PathLike, trial_id: str) -> Path:
    """The part file of ``trial_id``: ``<sweep_dir>/metrics/<trial_id>.parquet``."""
    return metrics_dir(sweep_dir) / f"{check_trial_id(trial_id)}{PART_SUFFIX}"


def _is_part_name(name: str) -> bool:
    return name.endswith(PART_SUFFIX) and not name.startswith((".", "_"))


def list_parts(sweep_dir: str | os.PathLike) -> list[Path]:
    """The complete part files of a sweep, sorted by name (temporary files excluded)."""
    folder = metrics_dir(sweep_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_part_name(p.name) and p.is_file())


def write_trial_rows(
    sweep_dir: str | os.PathLike,
    trial_id: str,
    rows: Sequence[Mapping[str, Any]],
) -> Path:
    """Replace the part file of ``trial_id`` with ``rows``, atomically.

    Args:
      sweep_dir: the sweep directory (``metrics/`` is created if needed).
      trial_id: the deterministic id of the trial; every row must carry it.
      rows: all rows of the trial so far, as dicts with exactly the columns of
        :data:`~raysweep.store.METRICS_SCHEMA` (validated before anything is written).

    Returns:
      The path of the part file.

    Raises:
      ValueError / TypeError: a bad row (nothing is written, the previous part is kept).
    """
    return write_trial_table(sweep_dir, trial_id, rows_to_table(rows))


def write_trial_table(sweep_dir: str | os.PathLike, trial_id: str, table: pa.Table) -> Path:
    """:func:`write_trial_rows` for rows already in a table of the schema.

    A trial that appends one epoch at a time validates only the new rows
    (:func:`~raysweep.store.rows_to_table`) and rewrites the concatenation through this.
    The schema, the trial id and the uniqueness of (target_id, epoch) are checked again.
    """
    path = part_path(sweep_dir, trial_id)
    if not isinstance(table, pa.Table):
        raise TypeError(f"table must be a pyarrow.Table, got {type(table).__name__}.")
    table = check_schema(table, f"the rows of trial {trial_id!r}")
    others = sorted({t for t in table.column("trial_id").to_pylist() if t != trial_id})
    if others:
        raise ValueError(
            f"rows for part {trial_id!r} carry other trial ids {others}; each trial writes only "
            "its own rows."
        )
    keys = table.group_by(list(KEY_COLUMNS)).aggregate([([], "count_all")])
    if keys.num_rows != table.num_rows:
        raise ValueError(
            f"the rows of trial {trial_id!r} repeat {table.num_rows - keys.num_rows} "
            "(target_id, epoch) keys; rewrite each target's epoch once."
        )
    return atomic_write(path, lambda fh: pq.write_table(table, fh, compression="zstd"))


def read_part(path: str | os.PathLike) -> pa.Table:
    """One part file, checked against the schema (read through one open file handle).

    A part of the previous schema (:data:`~raysweep.store.schema.METRICS_SCHEMA_V1`) is
    returned upgraded to the current one (:func:`~raysweep.store.schema.upgrade_v1`).

    Raises:
      ValueError: the file is not a readable Parquet part of either schema (the message names
        the file and the reason).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:  # one handle: a concurrent os.replace cannot tear the read
            table = pq.read_table(fh)
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, FileNotFoundError | PermissionError):
            raise
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from err
    table = table.replace_schema_metadata(None)
    if is_v1(table):
        table = upgrade_v1(table)
    return check_schema(table, str(path))


def quarantine_part(path: str | os.PathLike) -> Path | None:
    """Move a damaged part to ``metrics/quarantine/<name>.<UTC time>``; None if it cannot be
    moved (e.g. a read-only folder: the file then stays where it is)."""
    path = Path(path)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.parent / QUARANTINE_DIR / f"{path.name}.{stamp}"
    try:
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
    except OSError:
        return None
    return target


def _damaged(path: Path, err: Exception, quarantine: bool) -> DamagedPart:
    reason = str(err).removeprefix(f"{path} ").removeprefix(f"{path}: ")
    return DamagedPart(path, reason, quarantine_part(path) if quarantine else None)


def read_trial_rows(
    sweep_dir: str | os.PathLike, trial_id: str, *, quarantine: bool = False
) -> pa.Table:
    """The rows of one trial (empty table if it has written nothing yet).

    A damaged part raises ``ValueError`` naming it; with ``quarantine=True`` it is moved to
    ``metrics/quarantine/`` (see :func:`quarantine_part`) with a warning, and the trial has no
    rows.
    """
    path = part_path(sweep_dir, trial_id)
    if not path.exists():
        return empty_table()
    try:
        return read_part(path)
    except ValueError as err:
        if not quarantine:
            raise
        bad = _damaged(path, err, True)
        warnings.warn(f"damaged part of the metrics store: {bad}", DamagedPartWarning, stacklevel=2)
        return empty_table()


_SHOWN = 10  # folders named in the message of resolve_sweep_dir


def _has_parts(folder: Path) -> bool:
    return any(_is_part_name(p.name) and p.is_file() for p in folder.iterdir())


def resolve_sweep_dir(path: str | os.PathLike) -> Path:
    """The sweep directory meant by ``path``: the sweep directory itself or its ``metrics/``.

    - a folder with a ``metrics/`` sub-folder is a sweep directory;
    - a folder named ``metrics`` that holds part files (and has no ``metrics/`` of its own) is
      the store of its parent, the sweep directory;
    - any other folder is a sweep directory that has not written yet, unless Parquet files lie
      below it (e.g. the results folder above several sweeps): that is refused.

    Raises:
      FileNotFoundError: ``path`` does not exist (or is not a folder).
      ValueError: ``path`` is neither a sweep directory nor its ``metrics/``, but holds Parquet
        files below it; the message names the sweep folder(s) to pass instead.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is not a sweep directory (expected a folder with metrics/ inside); "
            "pass the folder given to run_sweep / printed by the main job."
        )
    if (path / METRICS_DIR).is_dir():
        return path
    if path.name == METRICS_DIR and _has_parts(path):
        return path.parent
    sweeps, stray = _parquet_folders(path)
    if not sweeps and not stray:
        return path  # a sweep that has not written yet
    message = (
        f"{path} is not a sweep directory: it has no {METRICS_DIR}/ folder, but Parquet files "
        "lie below it."
    )
    if sweeps:
        message += (
            " Pass one sweep folder (the folder that holds metrics/): " + _listing(sweeps) + "."
        )
    if stray:
        message += (
            f" Parquet files outside a {METRICS_DIR}/ folder are not parts of the metrics store "
            f"({_listing(stray)}); a sweep keeps its parts in <sweep>/{METRICS_DIR}/."
        )
    raise ValueError(message)


def _listing(folders: list[Path]) -> str:
    shown = ", ".join(str(f) for f in folders[:_SHOWN])
    more = len(folders) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _parquet_folders(root: Path) -> tuple[list[Path], list[Path]]:
    """(sweep folders, other folders) holding ``*.parquet`` files below ``root``.

    A folder ``<x>/metrics`` holding parts makes ``<x>`` a sweep folder; any other folder
    holding Parquet files is listed as the second kind.
    """
    sweeps, stray = set(), set()
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        if any(_is_part_name(f) for f in filenames):
            if folder.name == METRICS_DIR and folder != root:
                sweeps.add(folder.parent)
                dirnames.clear()  # quarantine/ and the like: nothing more to learn
            else:
                stray.add(folder)
        dirnames.sort()
    return sorted(sweeps), sorted(stray)


def scan_metrics(
    sweep_dir: str | os.PathLike, *, quarantine: bool = False
) -> tuple[pa.Table, list[DamagedPart]]:
    """The rows of every intact part (as :func:`read_metrics`) and the damaged parts.

    Args:
      sweep_dir: the sweep directory, or its ``metrics/`` folder (:func:`resolve_sweep_dir`).
      quarantine: move each damaged part to ``metrics/quarantine/`` (what a resuming sweep
        does, so the trial runs again); False leaves the files where they are.

    Returns:
      ``(table, damaged)``: the sorted table of the readable parts, and one
      :class:`DamagedPart` per part that could not be read.

    Raises:
      FileNotFoundError: ``sweep_dir`` does not exist.
      ValueError: a (trial_id, target_id, epoch) key appears in two parts, or ``sweep_dir``
        is a folder above sweeps (see :func:`resolve_sweep_dir`).
    """
    sweep_dir = resolve_sweep_dir(sweep_dir)
    parts, damaged = [], []
    for path in list_parts(sweep_dir):
        try:
            parts.append(read_part(path))
        except FileNotFoundError:  # replaced or quarantined between listing and reading
            continue
        except ValueError as err:
            damaged.append(_damaged(path, err, quarantine))
    return _concat_parts(sweep_dir, parts), damaged


def read_metrics(sweep_dir: str | os.PathLike, *, damaged: str = "warn") -> pa.Table:
    """All rows of a sweep as one ``pyarrow.Table`` with :data:`METRICS_SCHEMA`.

    Rows are sorted by (trial_id, eigen_index, seed, learning_rate, target_id, epoch), nulls
    last. Parts of the previous schema are upgraded (see the module doc). A sweep with no part
    yet gives an empty table with the schema. Safe to call while trials are writing.

    Args:
      sweep_dir: the sweep directory, or its ``metrics/`` folder (:func:`resolve_sweep_dir`).
      damaged: what to do with a part that cannot be read: ``"warn"`` (default: skip it with a
        :class:`DamagedPartWarning` naming the file), ``"raise"`` (``ValueError`` naming every
        damaged file) or ``"quarantine"`` (move it to ``metrics/quarantine/`` and warn).

    Raises:
      FileNotFoundError: ``sweep_dir`` does not exist.
      ValueError: a (trial_id, target_id, epoch) key appears in two parts (two files
        written under different names for one trial), ``damaged="raise"`` and a part is
        damaged, or ``sweep_dir`` is a folder above sweeps (the message names them).
    """
    if damaged not in DAMAGED_POLICIES:
        raise ValueError(f"damaged must be one of {DAMAGED_POLICIES}, got {damaged!r}.")
    sweep_dir = resolve_sweep_dir(sweep_dir)
    table, bad = scan_metrics(sweep_dir, quarantine=damaged == "quarantine")
    if bad and damaged == "raise":
        raise ValueError(
            f"{len(bad)} damaged part file(s) in {metrics_dir(sweep_dir)}: "
            + "; ".join(map(str, bad))
            + ". Resume the sweep (--resume) to quarantine them and run their trials again."
        )
    for part in bad:
        warnings.warn(
            f"damaged part of the metrics store skipped: {part}", DamagedPartWarning, stacklevel=2
        )
    return table


def _concat_parts(sweep_dir: Path, parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return empty_table()
    table = pa.concat_tables(parts).cast(METRICS_SCHEMA)
    table = table.sort_by([(c, "ascending") for c in SORT_COLUMNS])  # nulls last
    keys = table.group_by(list(KEY_COLUMNS)).aggregate([([], "count_all")])
    if keys.num_rows != table.num_rows:
        raise ValueError(
            f"{metrics_dir(sweep_dir)} holds {table.num_rows - keys.num_rows} duplicated "
            "(trial_id, target_id, epoch) rows across part files; a part was copied or "
            "renamed by hand. Remove the stray file."
        )
    return table


def save_sweep_config(config: Config, sweep_dir: str | os.PathLike) -> Path:
    """Write the resolved :class:`~raysweep.config.Config` to ``<sweep_dir>/config.json``."""
    return save_config(config, Path(sweep_dir) / CONFIG_FILE)


def load_sweep_config(sweep_dir: str | os.PathLike) -> Config:
    """The :class:`~raysweep.config.Config` saved with the sweep."""
    path = Path(sweep_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; the sweep has not started there.")
    return load_config(path)
