"""Dynamic assignment of row panels to Gram workers, with per-tile progress and recovery.

Work unit: row panel ``i`` (tiles ``(i, j)``, ``j >= i``), so each panel's row features are
computed once. Panel ``i`` has ``num_blocks - i`` tiles, so static round-robin would leave the
worker holding panel 0 with the most work. Instead the driver keeps one queue sorted by
*remaining* work (missing tiles, largest first) and hands the next panel to whichever worker
becomes idle: longest-processing-time-first list scheduling, within one panel of optimal and
insensitive to uneven worker speed. Panels already complete on disk are queued last and only
loaded (they cost a file read per tile).

Each worker runs one panel at a time as a streaming generator (``compute_panel``); the driver
``ray.wait``s on all generators, counts one event per tile (tqdm bar: tiles done / total, rate,
ETA) and records which slot ends up *owning* each panel (holding it resident for matmat).

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
from raysweep.distributed.store import TileStore

_WAIT_S = 1.0


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
) -> dict[int, int]:
    """Compute (or load) every panel on the pool; returns ``{panel: owning slot}``.

    ``done`` (tiles present at the start) is updated in place with every tile reported
    ``"computed"`` or ``"stored"``.
    """
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
                    i, j, _status = ray.get(next(gen))
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
                if (i, j) not in done:
                    done.add((i, j))
                    bar.update(1)
    finally:
        bar.close()
    return owners
