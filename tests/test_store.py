"""raysweep.store: the fixed schema, atomic replace-on-write part files, whole-sweep reads."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysweep.config import get_preset
from raysweep.store import (
    COLUMNS,
    IDENTITY_COLUMNS,
    KEY_COLUMNS,
    METRIC_COLUMNS,
    METRICS_SCHEMA,
    METRICS_SCHEMA_V1,
    axes_json,
    count_target_statuses,
    format_accuracy,
    format_trial_states,
    latest_rows,
    list_parts,
    load_sweep_config,
    make_target_id,
    metrics_dir,
    part_path,
    read_metrics,
    read_part,
    read_trial_rows,
    rows_to_table,
    save_sweep_config,
    scan_metrics,
    trial_states,
    variant_of,
    write_trial_rows,
    write_trial_table,
)


def make_row(trial_id="sgd-nn-pack000-mlp-digits", j=0, epoch=1, seed=0, lr=None, **changes):
    optimizer = trial_id.split("-")[0]
    rate = lr if lr is not None else (0.05 if optimizer == "sgd" else 0.001)
    axes = {"model.name": "mlp", "train.eigen_index": j, "train.seed": seed}
    if lr is not None:
        axes["train.learning_rate"] = lr
    row = {
        "sweep_id": "s",
        "trial_id": trial_id,
        "target_id": make_target_id(j, seed, lr),
        "model": "mlp",
        "dataset": "digits",
        "optimizer": optimizer,
        "linearized": "-lin-" in trial_id,
        "eigen_index": j,
        "seed": seed,
        "learning_rate": rate,
        "axes": axes_json(axes),
        "epoch": epoch,
        "step": 10 * epoch,
        "train_loss": 1.0 / epoch,
        "train_accuracy": 1.0 - 0.5 / epoch,
        "test_loss": 1.5 / epoch,
        "test_accuracy": 1.0 - 0.3 / (j + epoch),
        "steps_to_threshold": None,
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


V1_COLUMNS = [
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
"""The schema of parts written before metrics/v2, spelled out (not imported)."""


def test_schema_is_fixed():
    expected = [
        ("sweep_id", pa.string()),
        ("trial_id", pa.string()),
        ("target_id", pa.string()),
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("optimizer", pa.string()),
        ("linearized", pa.bool_()),
        ("eigen_index", pa.int32()),
        ("seed", pa.int64()),
        ("learning_rate", pa.float64()),
        ("axes", pa.string()),
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
    assert [f.name for f in METRICS_SCHEMA if f.nullable] == ["learning_rate", "steps_to_threshold"]
    assert METRICS_SCHEMA.metadata == {b"raysweep.store": b"metrics/v2"}
    assert tuple(METRICS_SCHEMA.names) == COLUMNS
    assert COLUMNS == (*IDENTITY_COLUMNS, *METRIC_COLUMNS, "wall_time")
    assert IDENTITY_COLUMNS[2] == "target_id" and IDENTITY_COLUMNS[-2:] == ("learning_rate", "axes")
    assert KEY_COLUMNS == ("trial_id", "target_id", "epoch")
    assert [(f.name, f.type) for f in METRICS_SCHEMA_V1] == V1_COLUMNS
    assert not any(f.nullable for f in METRICS_SCHEMA_V1)


def test_target_ids_and_variants():
    assert make_target_id(5, 0) == "j5-seed0"
    assert make_target_id(5, 1, 0.02) == "j5-seed1-lr0.02"
    assert make_target_id(np.int64(3), np.int32(2), np.float32(0.5)) == "j3-seed2-lr0.5"
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        make_target_id(1, -1)
    axes = '{"train.seed": 1, "model.name": "mlp", "train.learning_rate": 0.02, "data.seed": 3}'
    assert variant_of(axes) == "data.seed=3, train.learning_rate=0.02"
    assert variant_of(axes, exclude=("train.seed", "data.seed")) == (
        "model.name=mlp, train.learning_rate=0.02"
    )
    assert variant_of("{}") == "" and variant_of('{"train.seed": 4}') == ""
    assert axes_json({"b": 1, "a": np.float64(0.5)}) == '{"a": 0.5, "b": 1}'
    assert axes_json(None) == "{}"


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
            *(table.column(c).to_pylist() for c in ("trial_id", "eigen_index", "seed", "epoch")),
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
        (
            lambda r: r.update(steps_to_threshold=-1),
            ValueError,
            r"'steps_to_threshold': -1 is negative.*no longer used in the store: use None",
        ),
        (lambda r: r.update(axes="{train.seed: 1}"), ValueError, r"'axes': .* is not valid JSON"),
        (lambda r: r.update(axes="[1, 2]"), ValueError, r"'axes': expected a JSON object"),
        (lambda r: r.update(axes={"train.seed": 0}), TypeError, r"'axes': expected a string"),
        (lambda r: r.update(target_id=None), ValueError, r"'target_id' is None"),
        (lambda r: r.update(learning_rate=0.0), ValueError, r"base learning rate, a finite"),
        (lambda r: r.update(seed=1), ValueError, r"has other values of \['seed'\]"),
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
    with pytest.raises(ValueError, match=r"repeats \(trial_id, target_id, epoch\)"):
        write_trial_rows(tmp_path, tid, [make_row(tid), make_row(tid)])
    # Two seeds of one eigen-index under one target id: the same key, refused.
    with pytest.raises(ValueError, match=r"repeats \(trial_id, target_id, epoch\)"):
        write_trial_rows(
            tmp_path, tid, [make_row(tid), make_row(tid, seed=1, target_id="j0-seed0")]
        )
    # A table that bypassed the row checks is checked again at write time.
    doubled = pa.concat_tables([rows_to_table([make_row(tid)])] * 2)
    with pytest.raises(ValueError, match=r"repeat 1 \(target_id, epoch\) keys"):
        write_trial_table(tmp_path, tid, doubled)
    with pytest.raises(ValueError, match="cannot name a part file"):
        write_trial_rows(tmp_path, "../escape", [])
    with pytest.raises(TypeError, match="sequence of dicts"):
        write_trial_rows(tmp_path, tid, make_row(tid))
    assert not metrics_dir(tmp_path).exists()


def test_seeds_and_learning_rates_of_one_index_share_a_trial(tmp_path):
    tid = "sgd-nn-pack000-mlp-digits"
    rows = [
        make_row(tid, j, e, seed=seed, lr=lr, steps_to_threshold=7 if e == 2 else None)
        for j in (3, 1)
        for seed in (1, 0)
        for lr in (0.1, 0.02)
        for e in (2, 1)
    ]
    write_trial_rows(tmp_path, tid, rows)
    table = read_metrics(tmp_path)
    assert table.num_rows == 16
    assert len(set(zip(*(table.column(c).to_pylist() for c in KEY_COLUMNS), strict=True))) == 16
    order = list(
        zip(
            *(table.column(c).to_pylist() for c in ("eigen_index", "seed", "learning_rate")),
            table.column("epoch").to_pylist(),
            strict=True,
        )
    )
    assert order == sorted(order)  # sorted by index, seed, rate, then epoch
    assert table.column("target_id").to_pylist()[:2] == ["j1-seed0-lr0.02"] * 2
    assert table.column("steps_to_threshold").to_pylist()[:2] == [None, 7]
    assert json.loads(table.column("axes")[0].as_py()) == {
        "model.name": "mlp",
        "train.eigen_index": 1,
        "train.learning_rate": 0.02,
        "train.seed": 0,
    }
    last = latest_rows(table)
    assert last.num_rows == 8 and set(last.column("epoch").to_pylist()) == {2}
    (state,) = trial_states(table)
    assert state.eigen_indices == (1, 3) and len(state.target_ids) == 8
    assert state.target_ids[0] == "j1-seed0-lr0.02"
    assert count_target_statuses(table) == {"running": 8}
    assert "      8" in format_trial_states([state])  # 8 targets


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


# ------------------------------------------------------------------ parts of the v1 schema


def write_v1_part(sweep_dir, trial_id, indices=(0, 1), epochs=2, seed=0):
    """A part as raysweep wrote it before metrics/v2 (its schema spelled out, -1 not reached)."""
    schema = pa.schema(
        [pa.field(n, t, nullable=False) for n, t in V1_COLUMNS],
        metadata={"raysweep.store": "metrics/v1"},
    )
    rows = []
    for j in indices:
        for e in range(1, epochs + 1):
            row = make_row(
                trial_id, j, e, seed=seed, status="finished" if e == epochs else "running"
            )
            row["steps_to_threshold"] = 12 * j + e if e == epochs and j else -1
            rows.append({n: row[n] for n, _ in V1_COLUMNS})
    table = pa.Table.from_pylist(rows, schema=schema)
    path = metrics_dir(sweep_dir) / f"{trial_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_v1_part_is_read_back_upgraded(tmp_path):
    tid = "sgd-nn-pack000-mlp-digits"
    path = write_v1_part(tmp_path, tid, seed=3)
    assert pq.read_schema(path).names == [n for n, _ in V1_COLUMNS]
    table = read_part(path)
    assert table.schema.equals(METRICS_SCHEMA)
    rows = table.to_pylist()
    assert [r["target_id"] for r in rows] == ["j0-seed3", "j0-seed3", "j1-seed3", "j1-seed3"]
    assert all(r["learning_rate"] is None and r["axes"] == "{}" for r in rows)
    assert [r["steps_to_threshold"] for r in rows] == [None, None, None, 14]  # -1 -> null
    assert [r["test_accuracy"] for r in rows] == [
        make_row(tid, j, e)["test_accuracy"] for j in (0, 1) for e in (1, 2)
    ]
    whole = read_metrics(tmp_path)
    assert whole.equals(table) and read_trial_rows(tmp_path, tid).equals(table)
    # The readers above it see the upgraded rows.
    (state,) = trial_states(whole)
    assert state.target_ids == ("j0-seed3", "j1-seed3") and state.status == "finished"
    assert "sgd nn" in format_accuracy(whole)
    # A trial that resumes rewrites its part in the current schema.
    write_trial_rows(tmp_path, tid, read_part(path).to_pylist())
    assert pq.read_schema(path).names == list(COLUMNS)
    assert read_metrics(tmp_path).equals(table)


def test_v1_and_v2_parts_mix_in_one_folder(tmp_path):
    old, new = "sgd-nn-pack000-mlp-digits", "sgd-lin-pack000-mlp-digits"
    write_v1_part(tmp_path, old, indices=(0, 4))
    write_trial_rows(
        tmp_path,
        new,
        [make_row(new, 4, e, seed=s, steps_to_threshold=9) for s in (0, 1) for e in (1, 2)],
    )
    table = read_metrics(tmp_path, damaged="raise")
    assert table.schema.equals(METRICS_SCHEMA) and table.num_rows == 8
    by_trial = {}
    for row in table.to_pylist():
        by_trial.setdefault(row["trial_id"], []).append(row)
    assert {r["learning_rate"] for r in by_trial[old]} == {None}
    assert {r["learning_rate"] for r in by_trial[new]} == {0.05}
    assert {r["target_id"] for r in by_trial[new]} == {"j4-seed0", "j4-seed1"}
    assert {r["axes"] for r in by_trial[old]} == {"{}"}
    assert latest_rows(table).num_rows == 2 + 2


def test_other_schemas_stay_damaged(tmp_path):
    tid = "sgd-nn-pack000-mlp-digits"
    path = write_v1_part(tmp_path, tid)
    table = pq.read_table(path)
    # v1 with one column of another type is neither v1 nor v2.
    bad = table.set_column(7, "seed", table.column("seed").cast(pa.int32()))
    pq.write_table(bad, path)
    with pytest.raises(ValueError, match=rf"{path} has columns .*metrics/v2"):
        read_part(path)
    # v2 columns with a -1 left in (written by hand): refused, naming the file.
    rows = rows_to_table(trial_rows(tid)).to_pylist()
    rows[0]["steps_to_threshold"] = -1
    pq.write_table(pa.Table.from_pylist(rows, schema=METRICS_SCHEMA), path)
    with pytest.raises(ValueError, match=rf"{path} has steps_to_threshold -1.*use None"):
        read_part(path)


# ------------------------------------------------------------------ which folder to read


def test_read_metrics_accepts_the_metrics_folder(tmp_path):
    sweep = tmp_path / "eigen_sweep"
    write_trial_rows(sweep, "sgd-nn-pack000-mlp-digits", trial_rows("sgd-nn-pack000-mlp-digits"))
    write_v1_part(sweep, "adam-nn-pack000-mlp-digits")
    whole = read_metrics(sweep)
    assert whole.num_rows == 10
    assert read_metrics(sweep / "metrics").equals(whole)
    assert read_metrics(str(sweep / "metrics"), damaged="raise").equals(whole)
    assert scan_metrics(sweep / "metrics")[0].equals(whole)
    # A sweep that has not written yet is still an empty table, not an error.
    (tmp_path / "fresh").mkdir()
    assert read_metrics(tmp_path / "fresh").num_rows == 0
    (tmp_path / "fresh" / "metrics").mkdir()
    assert read_metrics(tmp_path / "fresh").num_rows == 0
    assert read_metrics(tmp_path / "fresh" / "metrics").num_rows == 0


def test_a_folder_above_sweeps_names_them(tmp_path):
    for name in ("sweep_a", "sweep_b"):
        write_trial_rows(
            tmp_path / name, "sgd-nn-pack000-mlp-digits", trial_rows("sgd-nn-pack000-mlp-digits")
        )
    with pytest.raises(ValueError) as err:
        read_metrics(tmp_path)
    message = str(err.value)
    assert f"{tmp_path} is not a sweep directory" in message
    assert f"{tmp_path / 'sweep_a'}, {tmp_path / 'sweep_b'}." in message
    with pytest.raises(ValueError, match="sweep_a"):
        scan_metrics(tmp_path)
    # Deeper, and Parquet files that are not in a metrics/ folder are named as such.
    nested = tmp_path / "results"
    write_trial_rows(nested / "x" / "y", "sgd-nn-pack000-mlp-digits", [])
    (nested / "exports").mkdir()
    pq.write_table(pa.table({"a": [1]}), nested / "exports" / "t.parquet")
    with pytest.raises(ValueError) as err:
        read_metrics(nested)
    message = str(err.value)
    assert (
        f"Pass one sweep folder (the folder that holds metrics/): {nested / 'x' / 'y'}." in message
    )
    assert (
        f"outside a metrics/ folder are not parts of the metrics store ({nested / 'exports'})"
        in message
    )


# ------------------------------------------------------------------ the accuracy table


def test_accuracy_over_seeds_and_one_table_per_variant(tmp_path):
    nn = "sgd-nn-pack000-mlp-digits"
    rows = []
    for lr in (0.02, 0.1):
        for seed in (0, 1, 2):
            for e in (1, 2):
                status = "finished" if e == 2 else "running"
                acc = 0.8 + 0.1 * (lr == 0.1) + 0.01 * seed
                rows.append(make_row(nn, 3, e, seed=seed, lr=lr, status=status, test_accuracy=acc))
    write_trial_rows(tmp_path, nn, rows)
    text = format_accuracy(read_metrics(tmp_path))
    blocks = text.split("\n\n")
    assert len(blocks) == 2
    assert blocks[0].startswith("final test accuracy, mlp on digits, train.learning_rate=0.02 (")
    assert blocks[1].startswith("final test accuracy, mlp on digits, train.learning_rate=0.1 (")
    # mean ± std over the three seeds, never over the two learning rates
    assert "0.810±0.010" in blocks[0] and "0.910±0.010" in blocks[1]
    assert "(± std over train.seed (batch order), n=3)" in blocks[0]
    mean_line = next(line for line in blocks[1].splitlines() if line.split()[0] == "mean")
    assert mean_line.split()[1] == "0.910"
    # one seed: plain values and no spread line
    one = format_accuracy(rows_to_table([r for r in rows if r["seed"] == 0]))
    assert "±" not in one and "0.800" in one and "train.seed" not in one
