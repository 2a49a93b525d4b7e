"""A fixed set of Gram actor slots, with replacement of dead actors.

Slot ``s`` holds the current :class:`~raysweep.distributed.worker.GramWorker` handle or
``None`` once the slot is retired. The model and the inputs are put in the object store once,
by the driver, and every actor (first ones and replacements) gets the same two references: a
replacement costs an actor start and one JIT compile, never a new upload.

Recovery policy (shared by the Gram computation and :class:`DistributedGram.matmat`): when a
call on slot ``s`` fails with ``ray.exceptions.RayActorError`` (the actor process died: killed,
OOM, node lost), :meth:`WorkerPool.replace` kills what is left of it and starts a fresh actor in
the same slot, up to ``max_restarts`` replacements per pool; past that budget the slot is
retired and the surviving actors take over its work. A replacement is started only where the
live nodes still have room for it (:func:`~raysweep.distributed.cluster.slot_capacity`: after a
lost node they may not) and must answer within ``start_timeout_s``; otherwise the slot is
retired too, so that a lost node never leaves work waiting for an actor that cannot be placed.
An actor whose *constructor* raised is not retried (the error is deterministic):
:meth:`WorkerPool.raise_if_init_failed` turns it into a ``RuntimeError`` carrying the original
message.
"""

from __future__ import annotations

import logging
import time

import ray
from ray.exceptions import RayActorError

from raysweep.distributed.cluster import WorkerLayout, slot_capacity
from raysweep.distributed.worker import GramWorker

logger = logging.getLogger(__name__)

_START_WARNING_S = 60.0
_START_POLL_S = 1.0


class WorkerPool:
    """``layout.num_workers`` Gram actors sharing one model and one dataset reference.

    Args:
      layout: from :func:`raysweep.distributed.cluster.worker_layout`.
      model_ref: ``ray.put((apply_fn, params))``.
      x_ref: ``ray.put(x)``.
      store_dir: tile store directory (manifest already written).
      worker_kwargs: keyword arguments of :class:`GramWorker` (method, memory_budget_mb,
        precision, keep_resident).
      max_restarts: total actor replacements allowed over the pool's lifetime.
      start_timeout_s: how long a replacement actor may take to start (a slot held by other
        jobs) before its slot is retired.
    """

    def __init__(
        self,
        layout: WorkerLayout,
        model_ref,
        x_ref,
        store_dir: str,
        worker_kwargs: dict,
        max_restarts: int,
        start_timeout_s: float = 120.0,
    ):
        self.layout = layout
        self.start_timeout_s = float(start_timeout_s)
        self._refs = (model_ref, x_ref)
        self._store_dir = store_dir
        self._worker_kwargs = dict(worker_kwargs)
        self.max_restarts = int(max_restarts)
        self.restarts = 0
        self.actors: list = [self._new_actor() for _ in range(layout.num_workers)]

    def _new_actor(self):
        model_ref, x_ref = self._refs
        return GramWorker.options(**self.layout.options).remote(
            model_ref, x_ref, self._store_dir, **self._worker_kwargs
        )

    # ----------------------------------------------------------------- state

    def live_slots(self) -> list[int]:
        return [s for s, actor in enumerate(self.actors) if actor is not None]

    @property
    def closed(self) -> bool:
        return not self.live_slots()

    def wait_started(self) -> list[dict]:
        """Block until every actor answers :meth:`GramWorker.info`; returns their infos.

        Logs a warning every minute while some actors are still pending (busy cluster).
        Dead actors are replaced like any other failure.
        """
        infos: dict[int, dict] = {}
        while True:
            pending = {self.actors[s].info.remote(): s for s in self.live_slots() if s not in infos}
            if not pending:
                return [infos[s] for s in sorted(infos)]
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=_START_WARNING_S)
            if len(ready) < len(pending):
                logger.warning(
                    "%d of %d Gram workers not started after %.0f s; are the cluster's %s "
                    "slots taken by other jobs?",
                    len(pending) - len(ready),
                    len(pending),
                    _START_WARNING_S,
                    self.layout.device.upper(),
                )
            for ref in ready:
                slot = pending[ref]
                try:
                    infos[slot] = ray.get(ref)
                except RayActorError as err:
                    self.raise_if_init_failed(err)
                    self.replace(slot)
            if not self.live_slots():
                raise RuntimeError("every Gram worker died while starting; see the Ray logs.")

    # ----------------------------------------------------------------- failures

    @staticmethod
    def raise_if_init_failed(err: RayActorError) -> None:
        if getattr(err, "actor_init_failed", False):
            raise RuntimeError(
                f"a Gram worker failed in its constructor (not retried): {err.error_msg}"
            ) from err

    def replace(self, slot: int) -> bool:
        """Replace the dead actor in ``slot``; False (slot retired) once the budget is spent."""
        old = self.actors[slot]
        if old is not None:
            try:
                ray.kill(old)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass
        if self.restarts >= self.max_restarts:
            logger.warning(
                "Gram worker in slot %d died and the restart budget (%d) is spent; its work "
                "moves to the surviving workers.",
                slot,
                self.max_restarts,
            )
            self.actors[slot] = None
            return False
        if not self._room_for(slot):
            logger.warning(
                "Gram worker in slot %d died and the live nodes have no %s slot left for a "
                "replacement (a node was lost?); its work moves to the surviving workers.",
                slot,
                self.layout.device.upper(),
            )
            self.actors[slot] = None
            return False
        self.restarts += 1
        logger.warning(
            "Gram worker in slot %d died; starting a replacement (%d of %d).",
            slot,
            self.restarts,
            self.max_restarts,
        )
        actor = self._new_actor()
        self.actors[slot] = actor
        return self._await_start(slot, actor)

    def _room_for(self, slot: int) -> bool:
        """Whether the live nodes can host one more actor next to the other live ones."""
        others = sum(1 for s in self.live_slots() if s != slot)
        return slot_capacity(self.layout.options) > others

    def _await_start(self, slot: int, actor) -> bool:
        """Wait until the replacement in ``slot`` answers; retire the slot if it cannot start.

        Gives up (kills it, retires the slot, returns False) once the live nodes have no room
        for it any more or after ``start_timeout_s``; a replacement that dies while starting is
        replaced in turn (within the restart budget).
        """
        probe = actor.info.remote()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            ready, _ = ray.wait([probe], timeout=_START_POLL_S)
            if ready:
                try:
                    ray.get(probe)
                    return True
                except RayActorError as err:
                    self.raise_if_init_failed(err)
                    return self.replace(slot)
            room = self._room_for(slot)
            if room and time.monotonic() < deadline:
                continue
            logger.warning(
                "replacement Gram worker in slot %d %s; its work moves to the surviving workers.",
                slot,
                "has no room on the live nodes"
                if not room
                else f"did not start within {self.start_timeout_s:.0f} s",
            )
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass
            self.actors[slot] = None
            return False

    def close(self, wait_s: float = 10.0) -> None:
        """Kill every actor and wait (up to ``wait_s``) until Ray reports them dead, so their
        CPU/GPU slots are free for the next job when this returns. Idempotent."""
        probes = []
        for slot, actor in enumerate(self.actors):
            if actor is None:
                continue
            self.actors[slot] = None
            try:
                ray.kill(actor)
                probes.append(actor.info.remote())
            except Exception:  # noqa: BLE001 - Ray already shut down or actor gone
                pass
        if probes:
            try:
                ray.wait(probes, num_returns=len(probes), timeout=wait_s)
            except Exception:  # noqa: BLE001 - best effort
                pass
