"""Fault injection for sweep tests: a Ray ``worker_process_setup_hook`` run in trial processes.

The test cluster of ``tests/test_sweep_safety.py`` starts with
``runtime_env={"worker_process_setup_hook": "fault_hook.install", "env_vars": {...}}``;
:func:`install` wraps ``raysweep.training.train_pack`` so that every epoch a trial
reports is logged, and a trial named in the fault plan fails after a given epoch.

``$RAYSWEEP_TEST_FAULTS`` is a folder holding ``plan.json``::

    {"<trial_id>": {"after_epoch": 3, "how": "raise" | "kill", "times": 1}}

``how="raise"`` raises inside the trial, ``"kill"`` sends SIGKILL to the trial's own process
(the actor dies, as on a lost node). ``times`` failures happen, counted across attempts with
one marker file per failure; ``times: -1`` fails every attempt. Every epoch each attempt
reports is appended to ``epochs.log`` as ``<trial_id> <pid> <attempt token> <epoch>``.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path


def _folder() -> Path | None:
    value = os.environ.get("RAYSWEEP_TEST_FAULTS")
    return Path(value) if value else None


def install() -> None:
    import raysweep.training as training

    original = training.train_pack
    if getattr(original, "_fault_hook", False):
        return

    def train_pack(*args, on_epoch=None, **kwargs):
        folder = _folder()
        attempt = uuid.uuid4().hex[:8]

        def wrapped(latest):
            if on_epoch is not None:
                on_epoch(latest)
            if folder is None:
                return
            tid = _current_trial_id()
            epoch = max(int(r["epoch"]) for r in latest)
            with open(folder / "epochs.log", "a") as fh:
                fh.write(f"{tid} {os.getpid()} {attempt} {epoch}\n")
            plan_file = folder / "plan.json"
            plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}
            fault = plan.get(tid)
            if not fault or epoch != int(fault["after_epoch"]):
                return
            done = len(list(folder.glob(f"{tid}.failed.*")))
            if fault.get("times", 1) >= 0 and done >= fault.get("times", 1):
                return
            (folder / f"{tid}.failed.{attempt}").write_text("")
            if fault["how"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected fault in {tid} after epoch {epoch}")

        return original(*args, on_epoch=wrapped, **kwargs)

    train_pack._fault_hook = True
    training.train_pack = train_pack


def _current_trial_id() -> str:
    from ray import tune

    return tune.get_context().get_trial_name()  # the sweep names trials by their trial id
