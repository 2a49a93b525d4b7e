"""Short console progress for a sweep: one line per finished or failed trial, a heartbeat.

Tune's own tables (``verbose`` ≥ 1) print every trial's config and many metric columns; for a
grid of hundreds of packed trials that is a wall of text. :class:`SweepProgress` is a Tune
callback that prints instead::

    [sweep] 3/16 done  sgd-lin-pack000-mlp-digits  finished  mean test acc 0.912 (8 targets)  14.2 s
    [sweep] running: 2 trials, e.g. adam-nn-pack001-mlp-digits epoch 3/5, mean test acc 0.874

The heartbeat line comes at most every ``heartbeat_s`` seconds, on a reported result. The
callback keeps no state that matters across a restore (Tune pickles it with the run config,
so ``log`` must be picklable: ``print`` or a module-level function).
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from raysweep.sweep.plan import trial_id_from_config


def console(line: str = "") -> None:
    """Print ``line`` with whatever ``print`` is at call time (the default progress log)."""
    print(line, flush=True)


def picklable_log(log):
    """``log`` if it can be pickled with the Tuner's callbacks, else :func:`console`.

    Tune pickles its callbacks when it saves the experiment. ``builtins.print`` itself does
    not survive that once Ray has replaced it in this process (Ray's progress bars install
    their own ``print`` when a worker shows one), so ``print`` and other unpicklable callables
    are written through :func:`console` instead.
    """
    import ray.cloudpickle

    try:
        ray.cloudpickle.dumps(log)
    except Exception:
        return console
    return log


def _our_id(trial) -> str:
    try:
        return trial_id_from_config(trial.config)
    except (KeyError, TypeError):
        return str(trial.trial_id)


def _epochs(trial, default: int) -> int:
    """The trial's own number of epochs (``train.epochs`` may be a grid axis)."""
    try:
        return int(trial.config["point"]["train"]["epochs"])
    except (KeyError, TypeError, ValueError):
        return default


class SweepProgress(Callback):
    """Prints one line per completed/errored trial and a rate-limited running line.

    Args:
      total: trials in the sweep (for ``k/total``).
      epochs: epochs per trial when a trial's config does not say (for ``epoch e/epochs``).
      heartbeat_s: least seconds between two "running" lines.
      log: where lines go (``print``).
    """

    def __init__(self, total: int, epochs: int, heartbeat_s: float = 30.0, log=console):
        self.total = int(total)
        self.epochs = int(epochs)
        self.heartbeat_s = float(heartbeat_s)
        self.log = picklable_log(log)
        self._last_beat = time.monotonic()
        self._latest: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _count_done(trials: list, trial) -> int:
        ended = ("TERMINATED", "ERROR")
        done = sum(t.status in ended for t in trials)
        return done + (trial.status not in ended)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info):
        self._latest[_our_id(trial)] = result
        now = time.monotonic()
        if now - self._last_beat < self.heartbeat_s:
            return
        self._last_beat = now
        running = [t for t in trials if t.status == "RUNNING"]
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        tid = _our_id(trial)
        self.log(
            f"[sweep] {done}/{self.total} done, {len(running)} running; e.g. {tid} "
            f"epoch {result.get('epoch', '?')}/{_epochs(trial, self.epochs)}, mean test acc "
            f"{result.get('mean_test_accuracy', float('nan')):.3f}"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial, **info):
        done = self._count_done(trials, trial)
        tid = _our_id(trial)
        result = self._latest.pop(tid, None) or trial.last_result or {}
        diverged = int(result.get("targets_diverged", 0) or 0)
        status = "finished" if not diverged else f"{diverged} diverged"
        if result.get("skipped"):
            status = "already in the store"
        targets = len(trial.config.get("point", {}).get("pack", {}).get("targets", []))
        self.log(
            f"[sweep] {done}/{self.total} done  {tid}  {status}  mean test acc "
            f"{result.get('mean_test_accuracy', float('nan')):.3f} ({targets} targets)  "
            f"{result.get('time_total_s', 0.0):.1f} s"
        )

    def on_trial_recover(self, iteration: int, trials: list, trial, **info):
        tid = _our_id(trial)
        self._latest.pop(tid, None)
        self.log(
            f"[sweep] {tid} raised (failure {trial.num_failures}); retrying it from its last "
            "checkpoint (its rows after it are replaced)."
        )

    def on_trial_error(self, iteration: int, trials: list, trial, **info):
        done = self._count_done(trials, trial)
        tid = _our_id(trial)
        self._latest.pop(tid, None)
        self.log(
            f"[sweep] {done}/{self.total} done  {tid}  ERROR after {trial.num_failures} "
            f"failure(s); rows so far are kept. Log: {trial.error_file or 'n/a'}"
        )
