"""Dynamic assignment of row panels to Gram workers, with per-tile progress and recovery.

Work unit: row panel ``i`` (tiles ``(i, j)``, ``j >= i``), so each panel's row features are
computed once. Panel ``i`` has ``num_blocks - i`` tiles, so static round-robin would leave the
worker holding panel 0 with the most work. Instead the driver keeps one queue sorted by
*remaining* work (missing tiles, largest first) and hands the next panel to whichever worker
becomes idle: longest-processing-time-first list scheduling, within one panel of optimal and
insensitive to uneven worker speed. Panels already complete on disk are queued last and only
loaded (they cost a file read per tile).

Each worker runs one panel at a time as a streaming generator (``compute_panel``); the driver
``ray.wait``s on all generators, takes one ``(i, j, status, reason)`` event per tile (tqdm bar:
tiles done / total, rate, ETA) and records which slot ends up *owning* each panel (holding it
resident for matmat).

Counting (:class:`TileCounts`): what this call did to each tile is the status the workers
report, counted once per tile, by the first final event the driver receives for it:
``"computed"`` (it was missing), ``"recomputed"`` (it was damaged: the driver prints one line
naming the file and the reason) or ``"stored"`` (read and verified). A ``"stored"`` tile that
was not in the store when the call started was written during this call by a worker that died
before its report arrived; it counts as computed, not loaded. Later events for the same tile
(a panel redone or reloaded after a worker death) are not counted again.

Failure of a worker (``RayActorError`` on one of its events): its in-flight panel goes back to
the front of the queue, the panels it owned go to the back (to be reloaded from the store), and
its slot is refilled by :meth:`WorkerPool.replace` or retired. Tiles it already wrote are on
disk and are loaded, not recomputed, by whoever takes the panel next. If every worker is gone
the call fails with a ``RuntimeError`` saying how many tiles are safe in the store; calling
:func:`compute_gram` again resumes from them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError
from tqdm.auto import tqdm

from raysweep.distributed.pool import WorkerPool
from raysweep.distributed.tile_store import TileStore

_WAIT_S = 1.0
_MAX_TILE_LINES = 20  # damaged tiles named one per line; beyond that, one summary line


def log_damaged(log: Callable[[str], None], path, reason: str, i: int, j: int) -> None:
    """The line that names a damaged tile the workers recomputed."""
    log(f"[gram] tile ({i}, {j}) at {path}: {reason}; recomputed")


@dataclass(frozen=True)
class PanelEvent:
    """Passed to ``on_panel_done`` after a worker finishes a row panel (driver side).

    Attributes:
      panel: row-panel index i. slot: worker slot that finished it. actor: that worker's Ray
      actor handle (e.g. for fault-injection tests). tiles_done / tiles_total: progress so far.
    """

    panel: int
    slot: int
    actor: Any
    tiles_done: int
    tiles_total: int


@dataclass(frozen=True)
class TileCounts:
    """What one :func:`run_panels` call did, one count per tile (see the module docstring).

    Attributes:
      computed: tiles that were missing and were computed (and written) by this call.
      loaded: tiles that were in the store at the start, verified and reused.
      recomputed: tiles that were in the store but damaged (checksum mismatch, truncated,
        wrong shape, no checksum file) and were computed again.
    """

    computed: int
    loaded: int
    recomputed: int

    @classmethod
    def from_statuses(
        cls, first: dict[tuple[int, int], str], at_start: set[tuple[int, int]]
    ) -> TileCounts:
        """Counts from the first final status of each tile and the tiles present at start."""
        computed = loaded = recomputed = 0
        for tile, status in first.items():
            if status == "recomputed":
                recomputed += 1
            elif status == "stored" and tile in at_start:
                loaded += 1
            else:  # "computed", or "stored" by a successor of a worker that died unreported
                computed += 1
        return cls(computed, loaded, recomputed)


def panel_order(store: TileStore, done: set[tuple[int, int]]) -> list[int]:
    """Panels sorted by remaining work: most missing tiles first, complete panels last."""

    def key(i: int) -> tuple[int, int, int]:
        tiles = store.panel_tiles(i)
        missing = sum(t not in done for t in tiles)
        return (-missing, -len(tiles), i)

    return sorted(range(store.num_blocks), key=key)


def run_panels(
    pool: WorkerPool,
    store: TileStore,
    done: set[tuple[int, int]],
    *,
    progress: bool = True,
    on_panel_done: Callable[[PanelEvent], None] | None = None,
    log: Callable[[str], None] = tqdm.write,
) -> tuple[dict[int, int], TileCounts]:
    """Compute (or load) every panel on the pool; returns ``({panel: owning slot}, counts)``.

    ``done`` (tiles present at the start) is updated in place with every tile reported.
    ``log`` receives one line per damaged tile recomputed (the first ``_MAX_TILE_LINES``, then
    a summary); by default it is written above the progress bar.
    """
    at_start = set(done)
    first: dict[tuple[int, int], str] = {}  # the first final status of each tile
    damaged_lines = 0
    queue = deque(panel_order(store, done))
    owners: dict[int, int] = {}
    inflight: dict[int, tuple[int, Any]] = {}  # slot -> (panel, ObjectRefGenerator)
    bar = tqdm(
        total=store.tiles_total,
        initial=len(done),
        unit="tile",
        desc="NTK Gram",
        disable=not progress,
        dynamic_ncols=True,
    )

    def submit(slot: int) -> None:
        if queue and pool.actors[slot] is not None and slot not in inflight:
            panel = queue.popleft()
            inflight[slot] = (panel, pool.actors[slot].compute_panel.remote(panel))

    def fail(slot: int, err: RayActorError) -> None:
        pool.raise_if_init_failed(err)
        panel, _ = inflight.pop(slot)
        owned = sorted(p for p, s in owners.items() if s == slot)
        for p in owned:
            del owners[p]
        queue.appendleft(panel)
        queue.extend(owned)
        pool.replace(slot)

    try:
        while queue or inflight:
            for slot in pool.live_slots():
                submit(slot)
            if not inflight:
                raise RuntimeError(
                    f"every Gram worker died and the restart budget ({pool.max_restarts}) is "
                    f"spent; {len(done)} of {store.tiles_total} tiles are safe in "
                    f"{store.root}. Call compute_gram again with the same arguments to resume."
                )
            by_gen = {id(gen): slot for slot, (_, gen) in inflight.items()}
            gens = [gen for _, gen in inflight.values()]
            ready, _ = ray.wait(gens, num_returns=1, timeout=_WAIT_S)
            for gen in ready:
                slot = by_gen[id(gen)]
                try:
                    i, j, status, reason = ray.get(next(gen))
                except StopIteration:
                    panel, _ = inflight.pop(slot)
                    owners[panel] = slot
                    submit(slot)
                    if on_panel_done is not None:
                        on_panel_done(
                            PanelEvent(panel, slot, pool.actors[slot], len(done), store.tiles_total)
                        )
                    continue
                except RayActorError as err:
                    fail(slot, err)
                    continue
                first.setdefault((i, j), status)
                if status == "recomputed":
                    damaged_lines += 1
                    if damaged_lines <= _MAX_TILE_LINES:
                        log_damaged(log, store.tile_path(i, j).absolute(), reason, i, j)
                if (i, j) not in done:
                    done.add((i, j))
                    bar.update(1)
    finally:
        bar.close()
    if damaged_lines > _MAX_TILE_LINES:
        log(
            f"[gram] {damaged_lines} damaged tiles recomputed in {store.tiles_dir.absolute()} "
            f"(the first {_MAX_TILE_LINES} are named above)"
        )
    return owners, TileCounts.from_statuses(first, at_start)
