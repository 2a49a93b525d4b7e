"""TensorBoard runs of a sweep, one per target, written from the metrics store.

Tune's ``TBXLoggerCallback`` writes one run per *trial* (a pack of up to hundreds of targets)
and its HParams entry only at the trial's end, for scalar params. :func:`write_tensorboard`
writes instead, from :func:`raysweep.store.read_metrics`::

    <out_dir>/tensorboard/
        events.out.tfevents.*                         the HParams experiment (columns, metrics)
        <trial_id>/<target_id>/events.out.tfevents.*  one run per target

Each target's run holds its per-epoch scalars (step = epoch: ``test_accuracy``,
``train_loss``, ``train_accuracy``, ``test_loss``, ``steps_to_threshold`` where reached,
``step`` (optimizer steps), ``l2_distance``, ``cosine_distance``, ``weight_norm``,
``grad_norm``) and its HParams session: ``model``, ``dataset``, ``optimizer``,
``linearized``, ``eigen_index``, ``seed``, ``learning_rate`` (omitted when unknown), every key
of the grid point's ``axes`` and the final ``status``. The HParams tab shows one row per target;
its metric columns are the scalars' last values, i.e. the final epoch (``steps_to_threshold``:
the step where the loss threshold was reached, empty if never). Runs are grouped one folder per
trial, so that TensorBoard's run list stays usable with thousands of targets::

    tensorboard --logdir results/eigen_sweep/tensorboard

Rewriting replaces every run (written to a sibling temporary folder, then swapped in), so a
rerun never duplicates events. Event times: the trial's start (estimated from its part file's
modification time minus its last ``wall_time``) plus the row's ``wall_time``, so TensorBoard's
"relative" time axis is the time since the trial started.

Encoding and speed: events are TensorBoard's protobufs (``tensorboard.compat.proto``, the
HParams plugin's ``api_pb2``/``plugin_data_pb2``), framed as TFRecords by tensorboardX's
``RecordWriter``, whose CRC-32C is native with the ``crc32c`` package (a dependency; without it
tensorboardX computes it in pure Python, about 5x slower here). One event per target and epoch
holds all its scalars in one summary; one message per layout (``steps_to_threshold`` present or
not) is reused, only its time, step and values set per row. 2,000 targets × 100 epochs take
3–6 s on a loaded 2-core machine, instead of minutes through ``SummaryWriter.add_scalar``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysweep.store.schema import IDENTITY_COLUMNS, METRIC_COLUMNS

TENSORBOARD_DIR = "tensorboard"
"""The folder of the runs inside a sweep directory (default of :func:`write_tensorboard`)."""

SCALAR_TAGS = tuple(c for c in METRIC_COLUMNS if c not in ("epoch", "status"))
"""Per-epoch scalars of a target's run (store columns); also the HParams metric columns."""

HPARAM_COLUMNS = tuple(
    c for c in IDENTITY_COLUMNS if c not in ("sweep_id", "trial_id", "target_id", "axes")
)
"""Store columns that become HParams values, before the keys of ``axes`` and ``status``."""

_NULLABLE_TAG = "steps_to_threshold"
_FILE_VERSION = "brain.Event:2"


def tensorboard_dir(out_dir: str | os.PathLike) -> Path:
    """``<out_dir>/tensorboard``: where :func:`write_tensorboard` writes by default."""
    return Path(out_dir) / TENSORBOARD_DIR


def write_tensorboard(out_dir: str | os.PathLike, *, log_dir: str | os.PathLike | None = None):
    """(Re)write the TensorBoard runs of a sweep: one run per target (see the module doc).

    Args:
      out_dir: the sweep directory (or its ``metrics/``; :func:`raysweep.store.read_metrics`).
      log_dir: where to write (default ``<out_dir>/tensorboard``); its previous content is
        replaced as a whole.

    Returns:
      The log directory (pass it to ``tensorboard --logdir``).

    Raises:
      FileNotFoundError: ``out_dir`` does not exist.
      ValueError: the store holds no rows yet (the message says what to run), or
        ``out_dir`` is not a sweep directory.
    """
    from raysweep.store import read_metrics, resolve_sweep_dir

    sweep_dir = resolve_sweep_dir(out_dir)
    table = read_metrics(sweep_dir)
    if table.num_rows == 0:
        raise ValueError(
            f"{sweep_dir} has no metrics yet (no rows in {sweep_dir / 'metrics'}); run the "
            f"sweep first (python sweeps/eigen_sweep.py --out {sweep_dir}, or --resume to "
            "finish it), then raysweep tensorboard again."
        )
    log_dir = Path(log_dir) if log_dir is not None else tensorboard_dir(sweep_dir)
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = log_dir.parent / f".{log_dir.name}.tmp-{os.getpid()}"
    old = log_dir.parent / f".{log_dir.name}.old-{os.getpid()}"
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        _write_runs(table, sweep_dir, tmp)
        _swap_in(tmp, log_dir, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return log_dir


def _swap_in(new: Path, log_dir: Path, old: Path, attempts: int = 5) -> None:
    """Make ``new`` the folder ``log_dir``, the previous one moved to ``old`` (to delete).

    Retried when another writer swapped its own folder in between (e.g. ``raysweep
    tensorboard`` while the sweep writes its runs at its end): the last one wins.
    """
    for attempt in range(attempts):
        try:
            if log_dir.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(log_dir, old)
            os.replace(new, log_dir)
            return
        except OSError:  # log_dir appeared or vanished meanwhile
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


# --- the runs -----------------------------------------------------------------------------


def _write_runs(table: pa.Table, sweep_dir: Path, root: Path) -> None:
    table = table.sort_by([("trial_id", "ascending"), ("target_id", "ascending"),
                           ("epoch", "ascending")])  # fmt: skip
    n = table.num_rows
    trial = np.asarray(table.column("trial_id").to_numpy(zero_copy_only=False), dtype=object)
    target = np.asarray(table.column("target_id").to_numpy(zero_copy_only=False), dtype=object)
    new = np.ones(n, dtype=bool)
    new[1:] = (trial[1:] != trial[:-1]) | (target[1:] != target[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)

    wall = table.column("wall_time").to_numpy().astype(np.float64)
    wall = np.where(np.isfinite(wall), wall, 0.0)
    trial_starts = np.flatnonzero(np.append(True, trial[1:] != trial[:-1]))
    anchors = _trial_anchors(
        sweep_dir, trial[trial_starts], np.maximum.reduceat(wall, trial_starts)
    )
    event_wall = (
        np.repeat([anchors[t] for t in trial[trial_starts]], np.diff(np.append(trial_starts, n)))
        + wall
    )
    values = {}
    for tag in SCALAR_TAGS:
        col = table.column(tag)
        if tag == _NULLABLE_TAG:
            col = pc.fill_null(col, 0)
        values[tag] = col.to_numpy().astype(np.float64).tolist()
    has_stt = table.column(_NULLABLE_TAG).is_valid().to_numpy(zero_copy_only=False).tolist()
    epochs = table.column("epoch").to_numpy().tolist()
    scalar_events = _scalar_events(event_wall.tolist(), epochs, values, has_stt)

    firsts = table.take(pa.array(starts)).to_pylist()
    lasts = table.take(pa.array(ends - 1)).to_pylist()
    hparams = [_target_hparams(first, last) for first, last in zip(firsts, lasts, strict=True)]
    infos = _hparam_infos(hparams)
    for h in hparams:  # a key that is a string for some targets is a string for all
        for name, info in infos.items():
            if name in h and info["type"] == "string" and not isinstance(h[name], str):
                h[name] = _as_text(h[name])

    from tensorboardX.record_writer import RecordWriter

    suffix = f"{socket.gethostname()}.raysweep"
    root.mkdir(parents=True)
    used: set[tuple[str, str]] = set()
    for i, (first, last) in enumerate(zip(firsts, lasts, strict=True)):
        run = root / first["trial_id"] / _run_name(first["trial_id"], first["target_id"], used)
        run.mkdir(parents=True, exist_ok=True)
        start = anchors[first["trial_id"]]
        end = start + float(wall[ends[i] - 1])
        writer = RecordWriter(str(run / f"events.out.tfevents.{int(start)}.{suffix}"))
        try:
            writer.write(_event(start, file_version=_FILE_VERSION))
            writer.write(_event(start, summary=_session_start(hparams[i], start)))
            for record in islice(scalar_events, int(ends[i] - starts[i])):
                writer.write(record)
            writer.write(_event(end, step=int(last["epoch"]), summary=_session_end(last, end)))
        finally:
            writer.close()
    now = time.time()
    writer = RecordWriter(str(root / f"events.out.tfevents.{int(now)}.{suffix}"))
    try:
        writer.write(_event(now, file_version=_FILE_VERSION))
        writer.write(_event(now, summary=_experiment(infos)))
    finally:
        writer.close()


def _trial_anchors(sweep_dir: Path, trials, last_wall: np.ndarray) -> dict[str, float]:
    """Estimated start time of each trial: its part's mtime minus its last wall_time."""
    from raysweep.store import part_path

    anchors = {}
    for tid, wall in zip(trials, last_wall, strict=True):
        try:
            mtime = part_path(sweep_dir, tid).stat().st_mtime
        except (OSError, ValueError):
            mtime = time.time()
        anchors[tid] = mtime - float(wall)
    return anchors


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def _run_name(trial_id: str, target_id: str, used: set[tuple[str, str]]) -> str:
    """A folder name for ``target_id`` (unsafe characters as ``_``; unique in its trial)."""
    name = _UNSAFE.sub("_", target_id).lstrip(".") or "target"
    candidate, k = name, 1
    while (trial_id, candidate) in used:
        k += 1
        candidate = f"{name}~{k}"
    used.add((trial_id, candidate))
    return candidate


def _target_hparams(first: dict, last: dict) -> dict[str, Any]:
    """The HParams values of a target: identity columns, axes, final status (no Nones)."""
    from raysweep.store import parse_axes

    out: dict[str, Any] = {}
    for name in HPARAM_COLUMNS:
        if first[name] is not None:
            out[name] = first[name]
    try:
        axes = parse_axes(first["axes"])
    except (TypeError, ValueError):
        axes = {}
    for key, value in sorted(axes.items()):
        if value is not None and key not in out:
            out[key] = value
    out["status"] = last["status"]
    return out


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _hparam_infos(hparams: list[dict[str, Any]]) -> dict[str, dict]:
    """Per HParams key (in first-seen order): its type and its values."""
    infos: dict[str, dict] = {}
    for h in hparams:
        for name, value in h.items():
            info = infos.setdefault(name, {"type": _kind(value), "values": []})
            if info["type"] != _kind(value):
                info["type"] = "string"
            info["values"].append(value)
    for info in infos.values():
        if info["type"] == "string":
            info["values"] = [_as_text(v) for v in info["values"]]
    return infos


# --- protobufs of the hparams plugin and of events -----------------------------------------


def _plugin_summary(tag: str, **data):
    """A Summary holding the HParams plugin's data (``experiment``, ``session_*_info``)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    meta = metadata.create_summary_metadata(HParamsPluginData(**data))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def _session_start(hparams: dict[str, Any], start: float):
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionStartInfo

    info = SessionStartInfo(start_time_secs=start)
    for name, value in hparams.items():
        if isinstance(value, bool):
            info.hparams[name].bool_value = value
        elif isinstance(value, int | float):
            info.hparams[name].number_value = float(value)
        else:
            info.hparams[name].string_value = _as_text(value)
    return _plugin_summary(metadata.SESSION_START_INFO_TAG, session_start_info=info)


_SESSION_STATUS = {"finished": 1, "diverged": 2, "error": 2, "running": 3}  # api_pb2.Status


def _session_end(last: dict, end: float):
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionEndInfo

    status = _SESSION_STATUS.get(last["status"], 0)
    info = SessionEndInfo(status=status, end_time_secs=end if status != 3 else 0.0)
    return _plugin_summary(metadata.SESSION_END_INFO_TAG, session_end_info=info)


def _experiment(infos: dict[str, dict]):
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata

    hparam_infos = []
    for name, info in infos.items():
        distinct = sorted(set(info["values"]))
        kind = info["type"]
        h = api_pb2.HParamInfo(name=name, differs=len(distinct) > 1)
        if kind == "number":
            h.type = api_pb2.DATA_TYPE_FLOAT64
            finite = [float(v) for v in distinct if math.isfinite(v)]
            if finite:
                h.domain_interval.min_value = min(finite)
                h.domain_interval.max_value = max(finite)
        else:
            h.type = api_pb2.DATA_TYPE_BOOL if kind == "bool" else api_pb2.DATA_TYPE_STRING
            domain = struct_pb2.ListValue()
            domain.extend(distinct)
            h.domain_discrete.CopyFrom(domain)
        hparam_infos.append(h)
    metrics = [
        api_pb2.MetricInfo(
            name=api_pb2.MetricName(tag=tag),
            display_name=f"final {tag}" if tag != _NULLABLE_TAG else tag,
            dataset_type=api_pb2.DATASET_VALIDATION
            if tag.startswith("test_")
            else api_pb2.DATASET_TRAINING,
        )
        for tag in SCALAR_TAGS
    ]
    experiment = api_pb2.Experiment(hparam_infos=hparam_infos, metric_infos=metrics)
    return _plugin_summary(metadata.EXPERIMENT_TAG, experiment=experiment)


def _event(wall_time: float, *, step: int = 0, summary=None, **fields) -> bytes:
    """A serialized ``Event`` (``summary``: a ``Summary`` message, or none)."""
    from tensorboard.compat.proto.event_pb2 import Event

    return Event(wall_time=wall_time, step=step, summary=summary, **fields).SerializeToString()


def _scalar_events(
    wall: list[float], epochs: list[int], values: dict[str, list[float]], has_stt: list[bool]
) -> Iterator[bytes]:
    """The serialized per-epoch events of all rows, in order: ``Event{wall_time, step=epoch,
    summary{value{tag, simple_value} per scalar}}``, ``steps_to_threshold`` only where reached.

    One message per layout is reused (only its wall time, step and values set per row): building
    200,000 events of ten scalars anew would take several times longer.
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    layouts = {}
    for stt in (True, False):
        tags = [t for t in SCALAR_TAGS if stt or t != _NULLABLE_TAG]
        event = Event(summary=Summary(value=[Summary.Value(tag=t) for t in tags]))
        layouts[stt] = event, [(v, values[v.tag]) for v in event.summary.value]
    for row, (wall_time, step, stt) in enumerate(zip(wall, epochs, has_stt, strict=True)):
        event, slots = layouts[stt]
        event.wall_time = wall_time
        event.step = step
        for value, column in slots:
            value.simple_value = column[row]
        yield event.SerializeToString()
