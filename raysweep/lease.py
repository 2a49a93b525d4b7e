"""One driver per results folder: a lease with a heartbeat, safe on NFS/EFS without locks.

Typical use (a driver, and any library function it calls, may both take it)::

    with hold_results_dir(out, purpose="python sweeps/eigen_sweep.py") as lease:
        ...
        lease.check()          # raises LeaseLost if another run took the folder over
        write_results(out)

A second run on the same folder gets :class:`ResultsDirBusy` at once, with one line naming
the folder, the holder (host, pid, purpose, since when, last heartbeat) and what to do.

The scheme: generations created with ``link``
---------------------------------------------
The lease is a file ``<folder>/.raysweep-lease.<gen>``; only the highest generation counts.
Its JSON names the holder: host, boot id, pid namespace, pid, the process start time
(``psutil``), purpose, ``acquired_at``, ``heartbeat`` (``time.time()`` of the holder), ttl and
a random token. To acquire, a process lists the lease files and reads the highest ``g``:

- none: it creates generation 1;
- live: it raises :class:`ResultsDirBusy`;
- stale: it creates generation ``g + 1``, then removes the lower ones.

Creating writes the content to a unique temporary file and ``os.link`` s it to the lease
name. ``link`` fails with ``EEXIST`` if the name exists, atomically on the server, so of any
number of contenders for ``g + 1`` exactly one wins; the others re-read and see a live lease.
Unlike ``O_CREAT | O_EXCL`` followed by a write, a lease file is never seen empty or partial.
As open(2) recommends for NFS, a failed ``link`` is checked with the temporary file's link
count (a lost reply to a retried LINK reports ``EEXIST`` although the link was made). Where
``link`` is unsupported, ``O_EXCL`` is the fallback; a file that cannot be parsed is then
taken as "being written" (busy) until it is ``ttl_s`` old. No ``fcntl``/``flock``: their
NFS support depends on the mount and on lock daemons. Why generations: a stale lease file
cannot be removed and recreated safely (a slow contender could remove the file a faster one
just created); with a new name per takeover, the only contended step is creating one name.

The holder rewrites its own generation every ``heartbeat_s`` (unique temp name, fsync,
``os.replace``: see :mod:`raysweep.atomic`). A generation file is only ever written by its
holder; a takeover creates a new name. Before each beat, and in :meth:`ResultsDirLease.check`,
the holder verifies that its file still carries its token and that generation ``g + 1`` does
not exist (a takeover of ``g`` always creates ``g + 1``, and a takeover of a later generation
removes ``g``): two lookups, no listing, so ``check()`` is cheap. The heartbeat also lists the
folder for any higher generation. If a check fails the lease is ``lost``: a warning is
logged, the heartbeat stops and ``check()`` raises :class:`LeaseLost`. The token also
catches a generation number reused after every lease file was released.

When is a lease stale?
----------------------
- Its heartbeat is older than ``max(ttl_s, holder's ttl_s)``. The heartbeat is the holder's
  clock and the age is the reader's: clock skew between hosts shortens or lengthens the ttl
  by the skew, so keep the ttl well above it (NTP keeps it to milliseconds).
- Or the holder is on this machine (same host name, boot id and pid namespace) and its pid
  is not running, is a zombie, or runs a process started at another time (the pid was
  reused). A ``kill -9``'ed driver is therefore taken over at once on the same machine; on
  other hosts after the ttl. Different boot ids or pid namespaces (containers) fall back to
  the heartbeat, since their pids mean nothing here.

Limits: a lease is not a fence. A holder paused for longer than the ttl (SIGSTOP, a swap
storm, a C call holding the GIL so the heartbeat thread cannot run) is taken over and
notices only at its next beat or ``check()``; call ``check()`` right before writing. The
NFS client must revalidate lookups on open (the Linux default, close-to-open consistency).

Within a process the lease is re-entrant: holding the same resolved folder again only counts
up, and the outermost release removes the file (if the token is still ours) and stops the
heartbeat. Leases still held at interpreter exit are released by ``atexit``; a child made
by ``fork`` does not inherit them.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import re
import shlex
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from raysweep.atomic import atomic_write_json, fsync_dir, temp_name

__all__ = [
    "LEASE_PREFIX",
    "LeaseLost",
    "ResultsDirBusy",
    "ResultsDirLease",
    "active_holder",
    "hold_results_dir",
]

logger = logging.getLogger(__name__)

LEASE_PREFIX = ".raysweep-lease."
_LEASE_RE = re.compile(re.escape(LEASE_PREFIX) + r"(\d+)")
_START_TIME_TOLERANCE_S = 1.0  # psutil derives create_time from boot time, which can drift
_MAX_ATTEMPTS = 20


class ResultsDirBusy(RuntimeError):
    """Another run holds the lease of this results folder."""


class LeaseLost(ResultsDirBusy):
    """This process held the lease but another run has taken it over."""


# --- this machine -------------------------------------------------------------------------


def _read_first_line(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.readline().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


_HOST = socket.gethostname()
_BOOT_ID = _read_first_line("/proc/sys/kernel/random/boot_id")
_PID_NS = _pid_namespace()


def _process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _default_purpose() -> str:
    argv = [a for a in sys.argv if a] or ["<interactive>"]
    text = "python " + shlex.join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


# --- lease files --------------------------------------------------------------------------


def _lease_path(folder: Path, gen: int) -> Path:
    return folder / f"{LEASE_PREFIX}{gen}"


def _list_generations(folder: Path) -> list[int]:
    """Generations of the lease files in ``folder``, ascending."""
    gens = []
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _LEASE_RE.fullmatch(entry.name)
            if match:
                gens.append(int(match.group(1)))
    return sorted(gens)


def _read_record(path: Path) -> dict[str, Any] | None:
    """The lease record; None if the file is gone; ``{}`` if it cannot be parsed."""
    for attempt in range(2):
        try:
            text = path.read_text(encoding="utf-8")
            break
        except FileNotFoundError:
            return None
        except OSError as exc:  # NFS: the file was replaced under a cached handle
            if exc.errno != errno.ESTALE or attempt:
                raise
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) and "token" in record else {}


def _create_exclusive(path: Path, record: dict[str, Any]) -> bool:
    """Create ``path`` holding ``record`` unless it exists; True if this call created it."""
    data = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8")
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except OSError as exc:
            if os.stat(tmp).st_nlink == 2:  # NFS: the link was made, its reply was lost
                return True
            if exc.errno == errno.EEXIST:
                return False
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            return _create_exclusive_without_link(path, data)
        return True
    finally:
        tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)


def _create_exclusive_without_link(path: Path, data: bytes) -> bool:
    """``O_CREAT | O_EXCL`` then write; readers treat the empty file as busy for a ttl."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _number(record: dict[str, Any], key: str) -> float:
    try:
        return float(record.get(key, 0.0))
    except (TypeError, ValueError):
        return 0.0


def _holder_alive_here(record: dict[str, Any]) -> bool | None:
    """Whether the holder process runs; None if it is not on this machine and pid namespace."""
    same_machine = (record.get("host"), record.get("boot_id"), record.get("pid_ns")) == (
        _HOST,
        _BOOT_ID,
        _PID_NS,
    )
    if not same_machine or not _BOOT_ID or not _PID_NS:
        return None
    try:
        proc = psutil.Process(int(record["pid"]))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None
    recorded = record.get("start_time")
    if isinstance(recorded, int | float) and abs(started - recorded) > _START_TIME_TOLERANCE_S:
        return False  # the pid now belongs to another process
    return True


def _stale_reason(path: Path, record: dict[str, Any], ttl_s: float) -> str | None:
    """Why the lease in ``path`` is stale, or None if it is live."""
    now = time.time()
    if not record:
        with contextlib.suppress(FileNotFoundError):
            age = now - path.stat().st_mtime
            if age > ttl_s:
                return f"its lease file is unreadable and {age:.0f} s old"
        return None
    if _holder_alive_here(record) is False:
        return f"process {record.get('pid')} on {_HOST} has exited (or its pid was reused)"
    ttl = max(ttl_s, _number(record, "ttl_s"))
    age = now - _number(record, "heartbeat")
    if age > ttl:
        return f"its last heartbeat is {age:.0f} s old (ttl {ttl:g} s)"
    return None


def active_holder(folder: str | os.PathLike, *, ttl_s: float = 60.0) -> dict[str, Any] | None:
    """The record of a live lease of ``folder`` held by *another* process, or None.

    Read-only (nothing is taken or removed): what a viewer such as the report uses to tell a
    sweep that is running from one that stopped (crashed, interrupted) before it finished.
    """
    folder = Path(folder)
    try:
        gens = _list_generations(folder)
    except OSError:
        return None
    if not gens:
        return None
    path = _lease_path(folder, gens[-1])
    record = _read_record(path)
    if not record or _stale_reason(path, record, ttl_s) is not None:
        return None
    if record.get("host") == _HOST and record.get("pid") == os.getpid():
        return None  # this process: its own report is built after its work
    return record


def _format_time(t: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t)))
    except (TypeError, ValueError, OverflowError):
        return "?"


def _describe_holder(path: Path, record: dict[str, Any]) -> str:
    if not record:
        with contextlib.suppress(OSError):
            age = time.time() - path.stat().st_mtime
            return f"{path.name} is being written or unreadable (modified {age:.0f} s ago)"
        return f"{path.name} is unreadable"
    age = time.time() - _number(record, "heartbeat")
    return (
        f"host {record.get('host')} pid {record.get('pid')} ({record.get('purpose')!r}), "
        f"holding it since {_format_time(record.get('acquired_at'))}, "
        f"last heartbeat {age:.0f} s ago"
    )


def _busy_message(folder: Path, path: Path, record: dict[str, Any], ttl_s: float) -> str:
    ttl = max(ttl_s, _number(record, "ttl_s"))
    if record:
        left = max(0.0, ttl - (time.time() - _number(record, "heartbeat")))
        when = f"{ttl:g} s after its last heartbeat (in {left:.0f} s if it stops now)"
    else:
        when = f"{ttl:g} s after it was last modified"
    return (
        f"Results folder {folder} is in use by another run: {_describe_holder(path, record)}. "
        f"Wait for it to finish, stop it, or pass another --out; if you are sure it is dead, "
        f"its lease ({path.name}) becomes stale {when} and is then taken over automatically "
        f"(on its own host, as soon as its process is gone)."
    )


# --- a held lease (one per process and folder) --------------------------------------------


class _Holding:
    """The lease this process holds on one folder: its file, heartbeat thread and refcount."""

    def __init__(self, folder: Path, gen: int, record: dict[str, Any], heartbeat_s: float):
        self.folder, self.gen, self.record = folder, gen, record
        self.path = _lease_path(folder, gen)
        self.heartbeat_s = heartbeat_s
        self.refcount = 0
        self.pid = os.getpid()  # a forked child must not beat, check or release for its parent
        self.lost_message: str | None = None
        self._lock = threading.RLock()  # orders beats, checks and close
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"raysweep-lease:{folder.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except Exception as exc:  # a file-system hiccup; the ttl covers a few missed beats
                logger.warning("lease heartbeat of %s failed: %s", self.path, exc)
            if self.lost_message:
                return

    def verify(self, *, listing: bool = False) -> str | None:
        """Set and return the "lost" message if another run took the lease over."""
        with self._lock:
            if self.lost_message is None and not self._closed and os.getpid() == self.pid:
                self._verify(listing)
        return self.lost_message

    def _verify(self, listing: bool) -> None:
        # A takeover of our generation g creates g + 1; one of a later generation removes g;
        # a reused g (everything released, then a fresh generation 1) carries another token.
        # The heartbeat also lists the folder, in case a generation was skipped.
        newer = _lease_path(self.folder, self.gen + 1)
        if listing and not newer.exists():
            newer = _lease_path(self.folder, max(_list_generations(self.folder) + [self.gen]))
        mine = _read_record(self.path)
        other = _read_record(newer) if newer != self.path and newer.exists() else None
        if other is None and mine and mine.get("token") != self.record["token"]:
            newer, other = self.path, mine
        if other is None and mine is not None:
            return
        holder = (
            _describe_holder(newer, other)
            if other is not None
            else "another run (its lease file is gone)"
        )
        self.lost_message = (
            f"Lost the lease on results folder {self.folder}: it was taken over by {holder}, "
            f"most likely because this process sent no heartbeat for longer than the ttl "
            f"({self.record['ttl_s']:g} s; suspended, or a call holding the GIL). "
            f"Stop writing there; rerun when the other run has finished."
        )
        logger.warning("%s", self.lost_message)

    def beat(self) -> None:
        with self._lock:
            if self._closed or self.verify(listing=True):
                return
            self.record["heartbeat"] = time.time()
            atomic_write_json(self.path, self.record)

    def close(self) -> None:
        """Stop the heartbeat and remove the lease file if it is still ours."""
        if os.getpid() != self.pid:
            return
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                current = _read_record(self.path)
                if current and current.get("token") == self.record["token"]:
                    self.path.unlink(missing_ok=True)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)


def _take(folder: Path, purpose: str, ttl_s: float, heartbeat_s: float) -> _Holding:
    """Acquire the lease of ``folder`` or raise :class:`ResultsDirBusy` (no waiting)."""
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(_MAX_ATTEMPTS):
        gens = _list_generations(folder)
        top = gens[-1] if gens else 0
        if top:
            path = _lease_path(folder, top)
            record = _read_record(path)
            if record is None:  # released or removed between listing and reading
                continue
            reason = _stale_reason(path, record, ttl_s)
            if reason is None:
                raise ResultsDirBusy(_busy_message(folder, path, record, ttl_s))
        now = time.time()
        mine = {
            "host": _HOST,
            "boot_id": _BOOT_ID,
            "pid_ns": _PID_NS,
            "pid": os.getpid(),
            "start_time": _process_start_time(os.getpid()),
            "purpose": purpose,
            "folder": str(folder),
            "acquired_at": now,
            "heartbeat": now,
            "ttl_s": ttl_s,
            "heartbeat_s": heartbeat_s,
            "token": uuid.uuid4().hex,
        }
        if not _create_exclusive(_lease_path(folder, top + 1), mine):
            continue  # another contender won this generation; re-read it
        if top:
            logger.warning("took over the lease of %s: %s", folder, reason)
        for gen in gens:
            _lease_path(folder, gen).unlink(missing_ok=True)
        return _Holding(folder, top + 1, mine, heartbeat_s)
    raise ResultsDirBusy(
        f"Results folder {folder}: gave up acquiring its lease after {_MAX_ATTEMPTS} attempts "
        f"because other runs keep changing it. Pass another --out or retry when they finish."
    )


_REGISTRY: dict[Path, _Holding] = {}
_REGISTRY_LOCK = threading.Lock()


def _release_all() -> None:
    with _REGISTRY_LOCK:
        holdings = list(_REGISTRY.values())
        _REGISTRY.clear()
    for holding in holdings:
        holding.close()


def _forget_after_fork() -> None:
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    _REGISTRY.clear()  # the parent holds these leases, not the child


atexit.register(_release_all)
os.register_at_fork(after_in_child=_forget_after_fork)


# --- public API ---------------------------------------------------------------------------


class ResultsDirLease:
    """The lease of one results folder: ``acquire()`` / ``release()`` or a ``with`` block.

    See :func:`hold_results_dir` for the arguments and the module docstring for the scheme.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        purpose: str = "",
        ttl_s: float = 60.0,
        heartbeat_s: float = 10.0,
    ):
        if not (ttl_s > 0 and 0 < heartbeat_s < ttl_s):
            raise ValueError(
                f"the lease needs 0 < heartbeat_s < ttl_s, got heartbeat_s={heartbeat_s!r} "
                f"and ttl_s={ttl_s!r}; a ttl of 3 or more heartbeats tolerates missed beats"
            )
        self.folder = Path(folder)
        self.purpose = purpose or _default_purpose()
        self.ttl_s, self.heartbeat_s = float(ttl_s), float(heartbeat_s)
        self._holding: _Holding | None = None
        self._count = 0

    def acquire(self) -> ResultsDirLease:
        """Take the lease (or count up if this process holds it); raise ResultsDirBusy if not."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self.folder.resolve()
        with _REGISTRY_LOCK:
            holding = _REGISTRY.get(key)
            if holding is None:
                holding = _take(key, self.purpose, self.ttl_s, self.heartbeat_s)
                _REGISTRY[key] = holding
                holding.start()
            elif holding.verify():
                raise LeaseLost(holding.lost_message)
            holding.refcount += 1
        self._holding = holding
        self._count += 1
        return self

    def release(self) -> None:
        """Count down; the outermost release stops the heartbeat and removes the lease file."""
        if self._count == 0 or self._holding is None:
            return
        self._count -= 1
        holding = self._holding
        with _REGISTRY_LOCK:
            holding.refcount -= 1
            last = holding.refcount <= 0
            if last and _REGISTRY.get(holding.folder) is holding:
                del _REGISTRY[holding.folder]
        if last:
            holding.close()
        if self._count == 0:
            self._holding = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lease (acquired, not released, not lost)."""
        return self._holding is not None and not self._holding.lost_message

    @property
    def lost(self) -> bool:
        """Whether another run took the lease over (seen by the heartbeat or :meth:`check`)."""
        return self._holding is not None and self._holding.lost_message is not None

    @property
    def path(self) -> Path | None:
        """The lease file this process holds, or None."""
        return self._holding.path if self._holding is not None else None

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease was taken over; two lookups, no listing.

        Call it right before writing results. Raises RuntimeError if the lease is not held.
        """
        if self._holding is None:
            raise RuntimeError(
                f"the lease of {self.folder} is not held by this object: call acquire() or use "
                f"`with hold_results_dir(...)` before check()"
            )
        if self._holding.verify():
            raise LeaseLost(self._holding.lost_message)

    def __enter__(self) -> ResultsDirLease:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "lost" if self.lost else "held" if self.held else "not held"
        return f"ResultsDirLease({str(self.folder)!r}, {state})"


def hold_results_dir(
    folder: str | os.PathLike,
    *,
    purpose: str = "",
    ttl_s: float = 60.0,
    heartbeat_s: float = 10.0,
) -> ResultsDirLease:
    """The lease of results folder ``folder`` (created if needed), for a ``with`` block.

    Args:
      folder: the results folder, e.g. ``results/eigen_sweep``.
      purpose: what holds it, shown to a refused run; default ``python <sys.argv>``.
      ttl_s: seconds without heartbeat after which a lease is stale (the larger of this and
        the holder's own ttl is used). Keep it above clock skew and long GIL-holding calls.
      heartbeat_s: seconds between heartbeats; must be below ``ttl_s``.

    Returns:
      A :class:`ResultsDirLease`; ``with`` acquires it and releases it at exit. Entering
      raises :class:`ResultsDirBusy` at once if another run holds a live lease; nesting in one
      process on the same resolved folder only counts up.

    Example::

        with hold_results_dir(args.out, purpose="python sweeps/eigen_sweep.py") as lease:
            lease.check()
            save(args.out)
    """
    return ResultsDirLease(folder, purpose=purpose, ttl_s=ttl_s, heartbeat_s=heartbeat_s)
