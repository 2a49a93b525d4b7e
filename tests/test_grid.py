"""The sweep grid without Ray: axes from the config, field classes, expansion into artifacts,
programs, packs and targets, refused and collapsed axes, ids."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from raysweep.config import (
    ARTIFACT,
    FIELD_CLASSES,
    IN_PACK,
    PROGRAM,
    RUN,
    Config,
    apply_overrides,
    config_from_dict,
    field_class,
    get_preset,
)
from raysweep.store.schema import check_trial_id
from raysweep.sweep.grid import artifact_dir, expand_grid, gram_dir


def cfg(*overrides: str) -> Config:
    return apply_overrides(get_preset("smoke"), list(overrides))


# ----------------------------------------------------------------------------- config


def test_grid_overrides_parse_typed_values_and_round_trip_through_json():
    config = cfg(
        "grid.model.name=mlp,lenet5",
        "grid.train.seed=0,1,2",
        "grid.train.learning_rate=0.02,0.05",
        "grid.train.linearized=false",
    )
    assert config.grid == (
        ("model.name", ("mlp", "lenet5")),
        ("train.seed", (0, 1, 2)),
        ("train.learning_rate", (0.02, 0.05)),
        ("train.linearized", (False,)),
    )
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    # the three default axes come from the sweep section unless the grid names them
    axes = config.axes()
    assert axes["train.eigen_index"] == config.sweep.eigen_indices
    assert axes["train.optimizer"] == ("sgd", "adam")
    assert axes["train.linearized"] == (False,)


def test_grid_in_python_equals_the_command_line():
    by_text = cfg("grid.model.seed=0,1", "grid.train.momentum=0.5,0.9")
    by_python = dataclasses.replace(
        get_preset("smoke"), grid={"model.seed": [0, 1], "train.momentum": (0.5, 0.9)}
    )
    assert by_python.grid == by_text.grid


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("grid.ntk.tile_size=128,256", "grid.ntk.tile_size cannot be a sweep axis: it changes how"),
        ("grid.data.root=/a,/b", "grid.data.root cannot be a sweep axis: it says where"),
        ("grid.sweep.pack_size=1,2", "grid.sweep.pack_size cannot be a sweep axis"),
        ("grid.model.width=1,2", "grid.model.width names no config field; axes are"),
        ("grid.model=mlp", "must be grid.section.field=v1,v2"),
        ("grid.model.name=mlp,mlp", "grid.model.name repeats 'mlp'; list each value once"),
        ("grid.model.name=mlp,vgg", "grid.model.name='vgg': model.name='vgg' is not supported"),
        ("grid.train.momentum=0.5,1.5", "train.momentum must be in [0, 1)"),
        ("grid.train.seed=0,x", "expected a value of type int"),
        ("grid.train.eigen_index=0,500", r"grid.train.eigen_index [500] are >= ntk.num_eigen=128"),
    ],
)
def test_bad_axes_are_refused_with_their_message(override, message):
    with pytest.raises(ValueError) as err:
        cfg(override)
    assert message in str(err.value)


def test_every_field_has_a_class_and_the_documented_ones_are_right():
    config = Config()
    for section in ("data", "model", "train", "ntk", "sweep", "nad"):
        for f in dataclasses.fields(getattr(config, section)):
            assert field_class(f"{section}.{f.name}") in (ARTIFACT, PROGRAM, IN_PACK, RUN)
    expected = {
        "data.name": ARTIFACT,
        "model.seed": ARTIFACT,
        "ntk.num_eigen": ARTIFACT,
        "train.momentum": PROGRAM,
        "train.epochs": PROGRAM,
        "train.batch_size": PROGRAM,
        "train.optimizer": PROGRAM,
        "train.linearized": PROGRAM,
        "train.eigen_index": IN_PACK,
        "train.seed": IN_PACK,
        "train.learning_rate": IN_PACK,
        "train.adam_learning_rate": IN_PACK,
        "ntk.num_workers": RUN,
        "sweep.pack_size": RUN,
    }
    assert {k: field_class(k) for k in expected} == expected
    assert set(FIELD_CLASSES) | {f"sweep.{f.name}" for f in dataclasses.fields(config.sweep)} == {
        f"{s}.{f.name}"
        for s in ("data", "model", "train", "ntk", "sweep", "nad")
        for f in dataclasses.fields(getattr(config, s))
    }


# ----------------------------------------------------------------------------- expansion


def test_default_grid_is_indices_by_optimizer_by_mode_in_packs():
    config = cfg("sweep.eigen_indices=0,1,2,5,7", "sweep.pack_size=2")
    grid = expand_grid(config)
    assert [a.key for a in grid.artifacts] == ["mlp-digits"]
    assert grid.artifacts[0].subdir == ""
    assert len(grid.trials) == 2 * 2 * 3 and grid.num_targets == 5 * 2 * 2
    assert [t.trial_id for t in grid.trials[:4]] == [
        "sgd-nn-pack000-mlp-digits",
        "sgd-nn-pack001-mlp-digits",
        "sgd-nn-pack002-mlp-digits",
        "sgd-lin-pack000-mlp-digits",
    ]
    assert [t.eigen_indices for t in grid.trials[:3]] == [(0, 1), (2, 5), (7,)]
    assert grid.trials[0].targets[0].target_id == "j0-seed0"
    assert grid.notes == ()


def test_expansion_is_the_cartesian_product_packed_as_documented():
    config = cfg(
        "sweep.eigen_indices=0,3",
        "sweep.pack_size=5",
        "grid.model.name=mlp,lenet5",
        "grid.model.seed=0,1",
        "grid.train.epochs=1,2",
        "grid.train.seed=0,1,2",
        "grid.train.adam_learning_rate=0.001,0.003",
        "sweep.optimizers=adam",
    )
    grid = expand_grid(config)
    # every (artifact, program, in-pack) combination exactly once
    expected = set(
        itertools.product(
            ("mlp", "lenet5"), (0, 1), (False, True), (1, 2), (0, 3), (0, 1, 2), (0.001, 0.003)
        )
    )
    seen = []
    for trial in grid.trials:
        art = next(a for a in grid.artifacts if a.key == trial.artifact)
        for t in trial.targets:
            seen.append(
                (
                    art.config.model.name,
                    art.config.model.seed,
                    trial.linearized,
                    trial.epochs,
                    t.eigen_index,
                    t.seed,
                    t.learning_rate,
                )
            )
    assert len(seen) == len(set(seen)) and set(seen) == expected
    # artifacts: the product of the artifact-level axes, each in its own folder
    assert [a.key for a in grid.artifacts] == [
        "mlp-digits-model.seed=0",
        "mlp-digits-model.seed=1",
        "lenet5-digits-model.seed=0",
        "lenet5-digits-model.seed=1",
    ]
    assert artifact_dir("/r", grid.artifacts[1]).as_posix() == (
        "/r/artifacts/mlp-digits-model.seed=1/eigenfunctions"
    )
    assert (
        gram_dir("/r", grid.artifacts[1]).as_posix() == "/r/artifacts/mlp-digits-model.seed=1/gram"
    )
    assert grid.artifacts[3].config.model == dataclasses.replace(
        config.model, name="lenet5", seed=1
    )
    assert grid.artifacts[3].config.grid == ()
    # packs: consecutive runs of 5 of the 12 in-pack targets of one program point
    first = [t for t in grid.trials if t.artifact == grid.artifacts[0].key][:3]
    assert [len(t.targets) for t in first] == [5, 5, 2]
    assert len({(t.artifact, t.program) for t in first}) == 1
    assert [x.target_id for x in first[0].targets] == [
        "j0-seed0-lr0.001",
        "j0-seed0-lr0.003",
        "j0-seed1-lr0.001",
        "j0-seed1-lr0.003",
        "j0-seed2-lr0.001",
    ]
    assert len(grid.trials) == 4 * 2 * 2 * 3
    # ids: readable, valid part-file names, unique
    ids = [t.trial_id for t in grid.trials]
    assert len(set(ids)) == len(ids)
    assert "adam-lin-pack002-lenet5-digits-model.seed=1-train.epochs=2" in ids
    for tid in ids:
        check_trial_id(tid)
    trial = grid.trials[-1]
    assert grid.point_axes(trial, trial.targets[-1]) == {
        "model.name": "lenet5",
        "model.seed": 1,
        "train.optimizer": "adam",
        "train.linearized": True,
        "train.epochs": 2,
        "train.eigen_index": 3,
        "train.seed": 2,
        "train.adam_learning_rate": 0.003,
    }


def test_axis_without_effect_at_some_points_is_collapsed_there():
    config = cfg(
        "sweep.eigen_indices=0,1",
        "grid.train.learning_rate=0.02,0.05",
        "grid.train.momentum=0.5,0.9",
    )
    grid = expand_grid(config)
    sgd = [t for t in grid.trials if t.optimizer == "sgd"]
    adam = [t for t in grid.trials if t.optimizer == "adam"]
    assert sum(len(t.targets) for t in sgd) == 2 * 2 * 2 * 2  # modes x momentum x idx x rates
    assert sum(len(t.targets) for t in adam) == 2 * 2  # modes x indices: run once
    assert all("train.momentum" not in dict(t.program) for t in adam)
    assert {x.learning_rate for t in adam for x in t.targets} == {config.train.adam_learning_rate}
    assert sorted(grid.notes) == [
        "grid.train.learning_rate acts only where train.optimizer=sgd; the other points run "
        "once (collapsed), not 2 times.",
        "grid.train.momentum acts only where train.optimizer=sgd; the other points run once "
        "(collapsed), not 2 times.",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("sweep.optimizers=adam", "grid.train.learning_rate=0.02,0.05"),
            "grid.train.learning_rate has no effect on this sweep: it acts on SGD only and the "
            "optimizers are adam (Adam's rate is train.adam_learning_rate: sweep "
            "grid.train.adam_learning_rate)",
        ),
        (
            ("sweep.optimizers=sgd", "grid.train.adam_learning_rate=0.001,0.01"),
            "grid.train.adam_learning_rate has no effect on this sweep: it acts on Adam only",
        ),
        (
            ("sweep.optimizers=adam", "grid.train.momentum=0.5,0.9"),
            "grid.train.momentum has no effect on this sweep",
        ),
        (
            ("grid.data.seed=0,1",),
            "grid.data.seed has no effect on this sweep: the subsampling seed matters only with "
            "data.num_train or data.num_test set",
        ),
    ],
)
def test_axis_without_effect_anywhere_is_refused(overrides, message):
    with pytest.raises(ValueError) as err:
        expand_grid(cfg(*overrides))
    assert message in str(err.value)


def test_data_seed_acts_when_the_data_is_subsampled():
    grid = expand_grid(cfg("data.num_train=100", "grid.data.seed=0,1"))
    assert [a.config.data.seed for a in grid.artifacts] == [0, 1]
    assert [a.key for a in grid.artifacts] == ["mlp-digits-data.seed=0", "mlp-digits-data.seed=1"]


def test_unsafe_values_are_sanitized_and_long_ids_hashed():
    config = cfg("grid.train.loss_threshold=0.01,0.001", "sweep.eigen_indices=0")
    ids = [t.trial_id for t in expand_grid(config).trials]
    assert "sgd-nn-pack000-mlp-digits-train.loss_threshold=0.001" in ids
    many = cfg(
        "sweep.eigen_indices=0",
        "grid.model.activation=relu,tanh",
        "grid.ntk.method=auto,contraction",
        "grid.ntk.eigen_method=auto,dense",
        "grid.data.num_train=100,200",
        "grid.data.num_test=100,200",
        "grid.data.seed=0,1",
        "grid.train.loss_threshold=0.011234567891,0.02",
        "grid.train.momentum=0.1123456789,0.2",
        "grid.train.batch_size=100000001,100000002",
        "grid.train.epochs=100000001,100000002",
    )
    ids = [t.trial_id for t in expand_grid(many).trials]
    assert len(set(ids)) == len(ids) == 2**10 * 3
    assert any(len(tid) > 150 and "-h" in tid[-10:] for tid in ids)  # cut, with its hash
    for tid in ids:
        check_trial_id(tid)


class _Artifact:
    """What plan_sweep reads of a loaded artifact."""

    def __init__(self, config, path):
        from pathlib import Path

        self.config, self.path, self.num_eigen = config, Path(path), config.ntk.num_eigen
        self.manifest = {"num_train": 60, "num_test": 30}


def test_a_plan_written_before_grids_resumes_when_its_trials_are_the_same():
    from raysweep.sweep import plan_sweep

    config = cfg("sweep.eigen_indices=0,1,2", "sweep.pack_size=2")
    plan = plan_sweep(config, [_Artifact(config, "/r/eigenfunctions")], out_dir="/r")
    train = {
        k: v
        for k, v in dataclasses.asdict(config.train).items()
        if k not in ("linearized", "eigen_index")
    }
    old = {  # sweep_plan.json as written before grids
        "sweep_id": plan.sweep_id,
        "artifacts": [],
        "packs": [[0, 1], [2]],
        "optimizers": ["sgd", "adam"],
        "linearized": [False, True],
        "train": train,
        "seed": 0,
        "trials": sorted(plan.trial_ids()),
    }
    assert plan.same_grid({**old, "trials": plan.trial_ids()}) == []
    assert plan.same_grid({**old, "train": {**train, "epochs": 9}}) == ["train"]
    assert plan.same_grid(plan.to_dict()) == []
    other = plan_sweep(
        cfg("sweep.eigen_indices=0,1,2", "sweep.pack_size=2", "grid.train.seed=0,1"),
        [_Artifact(config, "/r/eigenfunctions")],
        out_dir="/r",
    )
    assert "axes" in other.same_grid(plan.to_dict())
