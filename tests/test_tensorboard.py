"""TensorBoard runs per target (raysweep.sweep.tensorboard), ``raysweep tensorboard``, and the
switch that silences Tune's banner pointing at a temporary TensorBoard folder.

The event files are read back two ways: record by record (TensorBoard's own TFRecord reader,
which checks the CRC-32C of every record with its own implementation, independent of
tensorboardX's writer and of the ``crc32c`` package; events parsed with TensorBoard's protobufs)
and through TensorBoard's ``EventAccumulator``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_config

from raysweep.store import axes_json, make_target_id, read_metrics, write_trial_rows
from raysweep.sweep.tensorboard import SCALAR_TAGS, write_tensorboard

TRIALS = ("sgd-nn-pack000-mlp-digits", "sgd-lin-pack000-mlp-digits")
EPOCHS = {TRIALS[0]: (1, 2, 3, 4), TRIALS[1]: (1, 2, 130, 20000)}  # 1-, 2- and 3-byte steps
TARGETS = ((0, 0, 0.02), (0, 1, 0.02), (3, 0, 0.05))  # (eigen_index, seed, learning_rate)


def metric_rows(trial: str, targets, epochs, *, linearized: bool = False) -> list[dict]:
    """Rows of one trial; target k reaches the loss threshold from its 2nd epoch if k != 1."""
    rows = []
    last = epochs[-1]
    for k, (j, seed, lr) in enumerate(targets):
        axes = {"model.name": "mlp", "train.seed": seed, "train.learning_rate": lr}
        for n, epoch in enumerate(epochs, start=1):
            rows.append(
                {
                    "sweep_id": "demo",
                    "trial_id": trial,
                    "target_id": make_target_id(j, seed, lr),
                    "model": "mlp",
                    "dataset": "digits",
                    "optimizer": "sgd",
                    "linearized": linearized,
                    "eigen_index": j,
                    "seed": seed,
                    "learning_rate": lr,
                    "axes": axes_json(axes),
                    "epoch": epoch,
                    "step": 40 * epoch,
                    "train_loss": 0.3 / n + 1e-3 * k,
                    "train_accuracy": 0.7 + 0.05 * n,
                    "test_loss": 123456.789 * n if k == 2 else 0.4 / n,  # large and small
                    "test_accuracy": 0.61 + 0.07 * n - 0.01 * j + 0.003 * seed,
                    "steps_to_threshold": 40 * epochs[1] if (n >= 2 and k != 1) else None,
                    "l2_distance": 0.1 * n,
                    "cosine_distance": 1e-4 * n,
                    "weight_norm": 3.0 + 0.01 * n,
                    "grad_norm": 0.5 / n,
                    "status": "running"
                    if epoch != last
                    else ("diverged" if k == 2 else "finished"),
                    "wall_time": 1.5 * n,
                }
            )
    return rows


@pytest.fixture
def results(tmp_path) -> Path:
    out = tmp_path / "sweep"
    for i, trial in enumerate(TRIALS):
        write_trial_rows(out, trial, metric_rows(trial, TARGETS, EPOCHS[trial], linearized=i == 1))
    return out


# ----------------------------------------------------------------------------- reading events


def read_events(path: Path) -> list:
    """The events of one file, checking every record's framing and both CRCs (a bad CRC or a
    truncated record raises ``DataLossError``)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    reader, events = PyRecordReader_New(str(path)), []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return events
        events.append(Event.FromString(reader.record()))


def test_read_events_detects_a_bad_crc(results):
    from tensorboard.compat.tensorflow_stub import errors

    log_dir = write_tensorboard(results)
    path = next((log_dir / TRIALS[0]).rglob("events.out.tfevents.*"))
    data = bytearray(path.read_bytes())
    assert len(read_events(path)) > 3
    data[-5] ^= 0x01  # a byte of the last event, not of its CRC
    path.write_bytes(bytes(data))
    with pytest.raises(errors.DataLossError, match="crc32"):
        read_events(path)


def runs_of(log_dir: Path) -> dict[str, list]:
    """Run name (relative folder, '.' for the root) -> its events."""
    runs = {}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        run = path.parent.relative_to(log_dir).as_posix()
        assert run not in runs, f"two event files in run {run}"
        runs[run] = read_events(path)
    return runs


def plugin_data(event, tag):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    for value in event.summary.value:
        if value.tag == tag:
            assert value.metadata.plugin_data.plugin_name == "hparams"
            return HParamsPluginData.FromString(value.metadata.plugin_data.content)
    return None


def session_starts(runs) -> dict[str, dict]:
    """Run -> its hparams (python values), for every session_start_info found."""
    from google.protobuf.json_format import MessageToDict

    found = {}
    for run, events in runs.items():
        for event in events:
            data = plugin_data(event, "_hparams_/session_start_info")
            if data is not None:
                assert run not in found, f"two session starts in {run}"
                hparams = data.session_start_info.hparams
                found[run] = {k: MessageToDict(v) for k, v in hparams.items()}
    return found


# ----------------------------------------------------------------------------- the runs


def test_one_run_and_one_hparams_row_per_target(results):
    log_dir = write_tensorboard(results)
    assert log_dir == results / "tensorboard"
    runs = runs_of(log_dir)
    table = read_metrics(results).to_pylist()
    targets = {(r["trial_id"], r["target_id"]) for r in table}
    assert len(targets) == len(TRIALS) * len(TARGETS)
    assert set(runs) == {"."} | {f"{t}/{g}" for t, g in targets}  # one folder per trial

    starts = session_starts(runs)
    assert set(starts) == {f"{t}/{g}" for t, g in targets}  # exactly one row per target
    for trial, target in targets:
        rows = [r for r in table if (r["trial_id"], r["target_id"]) == (trial, target)]
        first, last = rows[0], rows[-1]
        axes = json.loads(first["axes"])
        hp = starts[f"{trial}/{target}"]
        assert hp["model"] == "mlp" and hp["dataset"] == "digits" and hp["optimizer"] == "sgd"
        assert hp["linearized"] is first["linearized"]
        assert hp["eigen_index"] == first["eigen_index"] and hp["seed"] == first["seed"]
        assert hp["learning_rate"] == first["learning_rate"]
        assert {k: hp[k] for k in axes} == axes  # every axis of the grid point
        assert hp["status"] == last["status"]

        events = runs[f"{trial}/{target}"]
        assert events[0].file_version == "brain.Event:2"
        scalars = {}
        for event in events:
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
        reported = {tag for tag in SCALAR_TAGS if any(r[tag] is not None for r in rows)}
        assert set(scalars) == reported  # steps_to_threshold only once reached
        assert ("steps_to_threshold" in reported) == (target != make_target_id(0, 1, 0.02))
        for tag in reported:
            expect = [(r["epoch"], r[tag]) for r in rows if r[tag] is not None]
            assert [s for s, _ in scalars[tag]] == [e for e, _ in expect], tag
            np.testing.assert_allclose(
                [v for _, v in scalars[tag]], [v for _, v in expect], rtol=2**-22, err_msg=tag
            )
        # The HParams metric "final test_accuracy" is the last value: the last epoch's.
        assert scalars["test_accuracy"][-1][0] == last["epoch"]
        assert math.isclose(scalars["test_accuracy"][-1][1], last["test_accuracy"], rel_tol=2**-22)
        end = [plugin_data(e, "_hparams_/session_end_info") for e in events]
        end = [d for d in end if d is not None]
        expected_status = {"finished": 1, "diverged": 2}[last["status"]]  # SUCCESS, FAILURE
        assert len(end) == 1 and end[0].session_end_info.status == expected_status
        # Relative times: the row's wall_time since the trial's start.
        times = [e.wall_time - events[0].wall_time for e in events if e.step == last["epoch"]]
        assert math.isclose(times[0], last["wall_time"], abs_tol=1e-6)

    experiments = [plugin_data(e, "_hparams_/experiment") for e in runs["."]]
    experiments = [d.experiment for d in experiments if d is not None]
    assert len(experiments) == 1
    names = {h.name for h in experiments[0].hparam_infos}
    assert {"model", "eigen_index", "seed", "learning_rate", "train.seed", "status"} <= names
    assert [m.name.tag for m in experiments[0].metric_infos] == list(SCALAR_TAGS)


def test_tensorboard_reads_the_runs(results):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = write_tensorboard(results)
    table = read_metrics(results).to_pylist()
    trial, target = TRIALS[1], make_target_id(3, 0, 0.05)
    acc = EventAccumulator(str(log_dir / trial / target), size_guidance={"scalars": 0})
    acc.Reload()
    rows = [r for r in table if (r["trial_id"], r["target_id"]) == (trial, target)]
    got = acc.Scalars("test_loss")
    assert [s.step for s in got] == list(EPOCHS[trial])
    np.testing.assert_allclose([s.value for s in got], [r["test_loss"] for r in rows], rtol=2**-22)
    assert "_hparams_/session_start_info" in acc.summary_metadata


def test_rewriting_replaces_the_runs(results):
    log_dir = write_tensorboard(results)
    first = runs_of(log_dir)
    (log_dir / "stray.txt").write_text("from an earlier run")
    assert write_tensorboard(results) == log_dir
    second = runs_of(log_dir)
    assert {r: len(e) for r, e in second.items()} == {r: len(e) for r, e in first.items()}
    assert len(list(log_dir.rglob("events.out.tfevents.*"))) == len(first)
    assert not (log_dir / "stray.txt").exists()
    assert not [p for p in log_dir.parent.iterdir() if p.name.startswith(".tensorboard")]

    # A sweep that grows: the new rows replace the old runs, nothing is duplicated.
    more = metric_rows("adam-nn-pack000-mlp-digits", TARGETS[:1], (1, 2))
    write_trial_rows(results, "adam-nn-pack000-mlp-digits", more)
    third = runs_of(write_tensorboard(results))
    assert len(session_starts(third)) == len(session_starts(first)) + 1


def test_custom_log_dir_and_odd_target_ids(results, tmp_path):
    rows = metric_rows("odd-trial", TARGETS[:1], (1,))
    for r in rows:
        r["target_id"] = "../a b/c"
    write_trial_rows(results, "odd-trial", rows)
    log_dir = write_tensorboard(results, log_dir=tmp_path / "tb")
    assert log_dir == tmp_path / "tb"
    runs = runs_of(log_dir)
    assert "odd-trial/_a_b_c" in runs
    assert all(not r.startswith("..") for r in runs)


def test_no_metrics_is_an_error_saying_what_to_run(tmp_path):
    with pytest.raises(ValueError, match="no metrics yet .* run the sweep first"):
        write_tensorboard(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_the_runs_and_prints_the_command(results, capsys):
    from raysweep.cli import main

    assert main(["tensorboard", str(results)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    log_dir = (results / "tensorboard").resolve()
    assert out == [f"tensorboard --logdir {log_dir}"]
    assert len(session_starts(runs_of(log_dir))) == len(TRIALS) * len(TARGETS)


def test_cli_without_metrics_exits_2_with_one_line(tmp_path, capsys):
    from raysweep.cli import main

    assert main(["tensorboard", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "run the sweep first (python sweeps/eigen_sweep.py --out" in lines[0]
    assert not (tmp_path / "tensorboard").exists()


# ----------------------------------------------------------------------------- in a sweep


def test_sweep_tensorboard_never_raises(tmp_path):
    from raysweep.sweep.tuner import write_sweep_tensorboard

    lines = []
    assert write_sweep_tensorboard(tmp_path, lines.append) is None
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("[sweep] warning: TensorBoard runs not written (ValueError:")


def test_tune_console_env_selects_the_silent_engine(monkeypatch):
    from ray.tune.experimental.output import get_air_verbosity

    from raysweep.sweep.tuner import TUNE_CONSOLE_ENV, tune_console_env

    assert TUNE_CONSOLE_ENV == {"RAY_AIR_NEW_OUTPUT": "0"}
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    assert get_air_verbosity(0) is not None  # the engine that prints the banner
    with tune_console_env():
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
        assert get_air_verbosity(0) is None  # legacy engine: nothing printed at verbose=0
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT")
    with tune_console_env():
        pass
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ


def _quick(config):
    return {"x": config["a"]}


def test_tuner_prints_no_banner_but_progress_lines(ray_cluster, tmp_path, capfd):
    from ray import tune

    from raysweep.sweep.progress import SweepProgress
    from raysweep.sweep.tuner import tune_console_env

    def trainable(config):
        tune.report(_quick(config))

    with tune_console_env():
        tuner = tune.Tuner(
            trainable,
            param_space={"a": tune.grid_search([1, 2])},
            run_config=tune.RunConfig(
                name="quick",
                storage_path=str(tmp_path),
                verbose=0,
                callbacks=[SweepProgress(2, 1)],
            ),
        )
        tuner.fit()
    out = capfd.readouterr().out
    assert "To visualize your results with TensorBoard" not in out
    assert "View detailed results here" not in out
    assert out.count("[sweep] ") == 2 and "2/2 done" in out


def test_run_sweep_builds_and_fits_the_tuner_silently_then_writes_runs(
    ray_cluster, artifact, tmp_path, monkeypatch
):
    import raysweep.sweep.tuner as tuner_module
    from raysweep.sweep import run_sweep

    seen = {}

    class FakeTuner:
        def __init__(self, plan, trials, out_dir):
            self.plan, self.trials, self.out_dir = plan, trials, out_dir

        def fit(self):  # a stand-in for the trials: complete rows of every target
            seen["fit"] = os.environ.get("RAY_AIR_NEW_OUTPUT")
            for spec in self.trials:
                rows = []
                for t in spec.targets:
                    for epoch in range(1, spec.epochs + 1):
                        (row,) = metric_rows(
                            spec.trial_id, [(t.eigen_index, t.seed, t.learning_rate)], (epoch,)
                        )
                        row.update(
                            sweep_id=self.plan.sweep_id,
                            target_id=t.target_id,
                            linearized=spec.linearized,
                            status="finished" if epoch == spec.epochs else "running",
                        )
                        rows.append(row)
                write_trial_rows(self.out_dir, spec.trial_id, rows)
            return []

    def fake_new_tuner(trainable, plan, trials, config, log, *, out_dir, reuse_actors=True):
        seen["build"] = os.environ.get("RAY_AIR_NEW_OUTPUT")
        return FakeTuner(plan, trials, out_dir)

    monkeypatch.setattr(tuner_module, "_new_tuner", fake_new_tuner)
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    config = make_config("sweep.eigen_indices=0,1", "sweep.optimizers=sgd")
    out = tmp_path / "sweep"
    lines = []
    summary = run_sweep(config, out, artifacts=[artifact], log=lines.append)
    assert seen == {"build": "0", "fit": "0"}
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ  # restored after the sweep
    assert summary.ok
    text = "\n".join(lines)
    assert f"tensorboard --logdir {out / 'tensorboard'} (HParams: one row per target)" in text
    assert f"[sweep] TensorBoard: tensorboard --logdir {out / 'tensorboard'}" in text
    assert "tensorboard --logdir " + str(out / "tune") not in text
    targets = read_metrics(out).group_by(["trial_id", "target_id"]).aggregate([]).num_rows
    assert len(session_starts(runs_of(out / "tensorboard"))) == targets

    # Already complete: the runs are written only when the folder is missing.
    stamp = (out / "tensorboard").stat().st_mtime_ns
    assert run_sweep(config, out, artifacts=[artifact], log=lines.append).ok
    assert (out / "tensorboard").stat().st_mtime_ns == stamp
    import shutil

    shutil.rmtree(out / "tensorboard")
    assert run_sweep(config, out, artifacts=[artifact], progress=False).ok
    assert len(session_starts(runs_of(out / "tensorboard"))) == targets
