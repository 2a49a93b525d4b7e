"""raysweep.store: the fixed schema, atomic replace-on-write part files, whole-sweep reads."""

from __future__ import annotations

import math
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysweep.config import get_preset
from raysweep.store import (
    COLUMNS,
    METRIC_COLUMNS,
    METRICS_SCHEMA,
    count_target_statuses,
    format_accuracy,
    format_trial_states,
    latest_rows,
    list_parts,
    load_sweep_config,
    metrics_dir,
    part_path,
    read_metrics,
    read_trial_rows,
    save_sweep_config,
    trial_states,
    write_trial_rows,
)


def make_row(trial_id="sgd-nn-pack000-mlp-digits", j=0, epoch=1, **changes):
    row = {
        "sweep_id": "s",
        "trial_id": trial_id,
        "model": "mlp",
        "dataset": "digits",
        "optimizer": trial_id.split("-")[0],
        "linearized": "-lin-" in trial_id,
        "eigen_index": j,
        "seed": 0,
        "epoch": epoch,
        "step": 10 * epoch,
        "train_loss": 1.0 / epoch,
        "train_accuracy": 1.0 - 0.5 / epoch,
        "test_loss": 1.5 / epoch,
        "test_accuracy": 1.0 - 0.3 / (j + epoch),
        "steps_to_threshold": -1,
        "l2_distance": 0.1 * epoch,
        "cosine_distance": 0.01 * epoch,
        "weight_norm": 3.0,
        "grad_norm": 0.5,
        "status": "running",
        "wall_time": 0.25 * epoch,
    }
    row.update(changes)
    return row


def trial_rows(trial_id, indices=(0, 1), epochs=3, final="finished"):
    return [
        make_row(trial_id, j, e, status=final if e == epochs else "running")
        for j in indices
        for e in range(1, epochs + 1)
    ]


def test_schema_is_fixed():
    expected = [
        ("sweep_id", pa.string()),
        ("trial_id", pa.string()),
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("optimizer", pa.string()),
        ("linearized", pa.bool_()),
        ("eigen_index", pa.int32()),
        ("seed", pa.int64()),
        ("epoch", pa.int32()),
        ("step", pa.int64()),
        ("train_loss", pa.float64()),
        ("train_accuracy", pa.float64()),
        ("test_loss", pa.float64()),
        ("test_accuracy", pa.float64()),
        ("steps_to_threshold", pa.int64()),
        ("l2_distance", pa.float64()),
        ("cosine_distance", pa.float64()),
        ("weight_norm", pa.float64()),
        ("grad_norm", pa.float64()),
        ("status", pa.string()),
        ("wall_time", pa.float64()),
    ]
    assert [(f.name, f.type) for f in METRICS_SCHEMA] == expected
    assert not any(f.nullable for f in METRICS_SCHEMA)
    assert tuple(METRICS_SCHEMA.names) == COLUMNS
    assert set(METRIC_COLUMNS) < set(COLUMNS)


def test_write_then_read_whole_sweep(tmp_path):
    write_trial_rows(tmp_path, "sgd-nn-pack000-mlp-digits", trial_rows("sgd-nn-pack000-mlp-digits"))
    write_trial_rows(
        tmp_path,
        "adam-lin-pack000-mlp-digits",
        trial_rows("adam-lin-pack000-mlp-digits", indices=(4,), epochs=2),
    )
    table = read_metrics(tmp_path)
    assert table.schema.equals(METRICS_SCHEMA)
    assert table.num_rows == 2 * 3 + 1 * 2
    keys = list(
        zip(
            *(table.column(c).to_pylist() for c in ("trial_id", "eigen_index", "epoch")),
            strict=True,
        )
    )
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert table.column("linearized").to_pylist().count(True) == 2
    assert [p.name for p in list_parts(tmp_path)] == [
        "adam-lin-pack000-mlp-digits.parquet",
        "sgd-nn-pack000-mlp-digits.parquet",
    ]
    one = read_trial_rows(tmp_path, "adam-lin-pack000-mlp-digits")
    assert one.num_rows == 2 and set(one.column("eigen_index").to_pylist()) == {4}
    # Every part is a plain Parquet file with the schema (readable by any Parquet reader).
    assert pq.read_schema(part_path(tmp_path, "sgd-nn-pack000-mlp-digits")).names == list(COLUMNS)


def test_to_pandas_when_installed(tmp_path):
    pd = pytest.importorskip("pandas")
    write_trial_rows(tmp_path, "sgd-nn-pack000-mlp-digits", trial_rows("sgd-nn-pack000-mlp-digits"))
    df = read_metrics(tmp_path).to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == 6
    assert df["eigen_index"].dtype == np.int32


def test_rewrite_replaces_rows_and_leaves_no_temp_files(tmp_path):
    tid = "sgd-nn-pack000-mlp-digits"
    write_trial_rows(tmp_path, tid, trial_rows(tid, epochs=3))
    # A retried trial restarts from epoch 1 and rewrites its part: the old rows are gone.
    write_trial_rows(tmp_path, tid, trial_rows(tid, epochs=1, final="running"))
    table = read_metrics(tmp_path)
    assert table.num_rows == 2 and set(table.column("epoch").to_pylist()) == {1}
    assert sorted(p.name for p in metrics_dir(tmp_path).iterdir()) == [f"{tid}.parquet"]


def test_failed_write_keeps_previous_part(tmp_path, monkeypatch):
    tid = "sgd-nn-pack000-mlp-digits"
    write_trial_rows(tmp_path, tid, trial_rows(tid, epochs=2))
    before = part_path(tmp_path, tid).read_bytes()

    def crash(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        write_trial_rows(tmp_path, tid, trial_rows(tid, epochs=3))
    assert part_path(tmp_path, tid).read_bytes() == before
    assert [p.name for p in metrics_dir(tmp_path).iterdir()] == [f"{tid}.parquet"]
    assert read_metrics(tmp_path).num_rows == 4


def test_reader_never_sees_a_torn_part(tmp_path):
    tid = "sgd-nn-pack000-mlp-digits"
    write_trial_rows(tmp_path, tid, trial_rows(tid, epochs=1))
    done = threading.Event()

    def writer():
        try:
            for epochs in range(1, 30):
                write_trial_rows(tmp_path, tid, trial_rows(tid, epochs=epochs))
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    while not done.is_set():
        seen.add(read_metrics(tmp_path).num_rows)
    thread.join()
    assert seen <= {2 * e for e in range(1, 30)}
    assert read_metrics(tmp_path).num_rows == 58


def test_temp_files_are_ignored(tmp_path):
    tid = "sgd-nn-pack000-mlp-digits"
    write_trial_rows(tmp_path, tid, trial_rows(tid))
    (metrics_dir(tmp_path) / f".{tid}.parquet.123.abcd.tmp").write_bytes(b"partial")
    (metrics_dir(tmp_path) / "notes.txt").write_text("x")
    assert read_metrics(tmp_path).num_rows == 6


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda r: r.pop("test_accuracy"), ValueError, r"missing \['test_accuracy'\]"),
        (lambda r: r.update(lr=0.1), ValueError, r"unexpected \['lr'\]"),
        (lambda r: r.update(epoch=1.5), TypeError, r"'epoch': expected an integer, got float"),
        (lambda r: r.update(linearized="no"), TypeError, r"'linearized': expected a bool"),
        (lambda r: r.update(status="done"), ValueError, r"status 'done' is not one of running"),
        (lambda r: r.update(test_accuracy=1.5), ValueError, r"accuracy must lie in \[0, 1\]"),
        (lambda r: r.update(train_loss=None), ValueError, r"'train_loss' is None"),
        (lambda r: r.update(model=3), TypeError, r"'model': expected a string, got int"),
        (lambda r: r.update(eigen_index=-2), ValueError, r"expected an integer >= 0, got -2"),
        (lambda r: r.update(trial_id="other"), ValueError, r"carry other trial ids \['other'\]"),
    ],
)
def test_bad_rows_are_rejected_and_nothing_is_written(tmp_path, change, error, match):
    tid = "sgd-nn-pack000-mlp-digits"
    write_trial_rows(tmp_path, tid, trial_rows(tid, epochs=1))
    rows = trial_rows(tid, epochs=2)
    change(rows[-1])
    with pytest.raises(error, match=match):
        write_trial_rows(tmp_path, tid, rows)
    assert read_metrics(tmp_path).num_rows == 2  # the previous part is intact
    assert len(list(metrics_dir(tmp_path).iterdir())) == 1


def test_duplicate_rows_and_bad_ids_are_rejected(tmp_path):
    tid = "sgd-nn-pack000-mlp-digits"
    with pytest.raises(ValueError, match=r"repeats \(trial_id, eigen_index, epoch\)"):
        write_trial_rows(tmp_path, tid, [make_row(tid), make_row(tid)])
    with pytest.raises(ValueError, match="cannot name a part file"):
        write_trial_rows(tmp_path, "../escape", [])
    with pytest.raises(TypeError, match="sequence of dicts"):
        write_trial_rows(tmp_path, tid, make_row(tid))
    assert not metrics_dir(tmp_path).exists()


def test_numpy_scalars_and_non_finite_losses_are_accepted(tmp_path):
    tid = "adam-lin-pack001-mlp-digits"
    row = make_row(
        tid,
        j=np.int64(7),
        epoch=np.int32(2),
        train_loss=np.float32(np.nan),
        test_loss=math.inf,
        linearized=np.bool_(True),
        status="diverged",
    )
    write_trial_rows(tmp_path, tid, [row])
    out = read_metrics(tmp_path).to_pylist()[0]
    assert out["eigen_index"] == 7 and math.isnan(out["train_loss"]) and out["linearized"]


def test_empty_sweep(tmp_path):
    table = read_metrics(tmp_path)
    assert table.num_rows == 0 and table.schema.equals(METRICS_SCHEMA)
    write_trial_rows(tmp_path, "sgd-nn-pack000-mlp-digits", [])  # a trial before its 1st epoch
    assert read_metrics(tmp_path).num_rows == 0
    with pytest.raises(FileNotFoundError, match="is not a sweep directory"):
        read_metrics(tmp_path / "nowhere")
    assert trial_states(table) == [] and "no rows yet" in format_accuracy(table)


def test_duplicated_part_is_reported(tmp_path):
    tid = "sgd-nn-pack000-mlp-digits"
    write_trial_rows(tmp_path, tid, trial_rows(tid))
    data = part_path(tmp_path, tid).read_bytes()
    (metrics_dir(tmp_path) / "copy.parquet").write_bytes(data)
    with pytest.raises(ValueError, match="6 duplicated"):
        read_metrics(tmp_path)


def test_latest_rows_states_and_text(tmp_path):
    write_trial_rows(
        tmp_path, "sgd-nn-pack000-mlp-digits", trial_rows("sgd-nn-pack000-mlp-digits", epochs=3)
    )
    rows = trial_rows("sgd-lin-pack000-mlp-digits", epochs=2, final="running")
    rows[-1]["status"] = "diverged"
    write_trial_rows(tmp_path, "sgd-lin-pack000-mlp-digits", rows)
    table = read_metrics(tmp_path)
    last = latest_rows(table)
    assert last.num_rows == 4 and last.schema.equals(METRICS_SCHEMA)
    states = {s.trial_id: s for s in trial_states(table)}
    assert states["sgd-nn-pack000-mlp-digits"].status == "finished"
    assert states["sgd-nn-pack000-mlp-digits"].epoch == 3
    lin = states["sgd-lin-pack000-mlp-digits"]
    assert lin.status == "running" and lin.target_statuses == {"running": 1, "diverged": 1}
    assert count_target_statuses(table) == {"running": 1, "finished": 2, "diverged": 1}
    text = format_trial_states(list(states.values()), expected=4)
    assert "2/4 trials with rows (1 running, 1 finished); 2 not started" in text
    assert "sgd-lin-pack000-mlp-digits  running" in text
    acc = format_accuracy(table)
    assert "sgd nn" in acc and "sgd lin" in acc and "div" in acc and "0.900" in acc


def test_config_saved_with_the_sweep(tmp_path):
    config = get_preset("smoke")
    save_sweep_config(config, tmp_path)
    assert load_sweep_config(tmp_path) == config
    with pytest.raises(FileNotFoundError, match="has not started"):
        load_sweep_config(tmp_path / "other")


def test_damaged_part_is_named_skipped_or_quarantined(tmp_path):
    from raysweep.store import DamagedPartWarning, scan_metrics

    good, bad = "sgd-nn-pack000-mlp-digits", "adam-lin-pack000-mlp-digits"
    write_trial_rows(tmp_path, good, trial_rows(good))
    path = write_trial_rows(tmp_path, bad, trial_rows(bad))
    path.write_bytes(path.read_bytes()[:50])  # truncated

    with pytest.warns(DamagedPartWarning, match=rf"{path} \(not a readable Parquet file"):
        table = read_metrics(tmp_path)
    assert set(table.column("trial_id").to_pylist()) == {good} and table.num_rows == 6
    with pytest.raises(ValueError, match=rf"1 damaged part file\(s\) .*{path}.*--resume"):
        read_metrics(tmp_path, damaged="raise")
    with pytest.raises(ValueError, match=rf"{path}: not a readable Parquet file"):
        read_trial_rows(tmp_path, bad)
    assert path.exists()  # nothing moved by readers

    table, damaged = scan_metrics(tmp_path, quarantine=True)
    assert table.num_rows == 6 and [d.trial_id for d in damaged] == [bad]
    moved = damaged[0].moved_to
    assert not path.exists() and moved.parent == tmp_path / "metrics" / "quarantine"
    assert moved.read_bytes() and moved.name.startswith(f"{bad}.parquet.")
    assert [p.name for p in list_parts(tmp_path)] == [f"{good}.parquet"]
    assert read_trial_rows(tmp_path, bad).num_rows == 0  # the trial runs again

    # A part written under another schema is damaged too; quarantine from the trial's side.
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1]}), part_path(tmp_path, bad))
    with pytest.warns(DamagedPartWarning, match=bad):
        assert read_trial_rows(tmp_path, bad, quarantine=True).num_rows == 0
    assert len(list((tmp_path / "metrics" / "quarantine").iterdir())) == 2


def test_accuracy_mean_counts_diverged_and_unfinished_targets(tmp_path):
    nn, lin = "sgd-nn-pack000-mlp-digits", "sgd-lin-pack000-mlp-digits"
    # Network: 7 of 8 targets diverged at epoch 1 (NaN loss, accuracy 0.5), one finished.
    rows = [make_row(nn, j, 1, status="diverged", test_accuracy=0.5) for j in range(7)]
    rows += [make_row(nn, 7, e, status="finished" if e == 2 else "running") for e in (1, 2)]
    write_trial_rows(tmp_path, nn, rows)
    # Linearized: 6 finished, 2 still running after epoch 1 of 2.
    rows = [
        make_row(lin, j, e, status="finished" if e == 2 else "running")
        for j in range(6)
        for e in (1, 2)
    ]
    rows += [make_row(lin, j, 1) for j in (6, 7)]
    write_trial_rows(tmp_path, lin, rows)
    text = format_accuracy(read_metrics(tmp_path))
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    finished_lin = [1.0 - 0.3 / (j + 2) for j in range(6)]
    assert lines["mean"] == [f"{1.0 - 0.3 / 9:.3f}", f"{sum(finished_lin) / 6:.3f}"]
    assert lines["diverged"] == ["7/8", "0/8"]
    assert lines["unfinished"] == ["0/8", "2/8"]
    assert "mean over finished targets only" in text
