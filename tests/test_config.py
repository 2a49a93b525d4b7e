"""Config dataclasses: validation messages, presets, overrides and the JSON round-trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from raysweep.config import (
    PRESETS,
    Config,
    DataConfig,
    ModelConfig,
    NTKConfig,
    SweepConfig,
    TrainConfig,
    apply_overrides,
    get_preset,
    load_config,
    save_config,
)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: DataConfig(name="imagenet"), r"data.name='imagenet'.*digits, digits2"),
        (lambda: DataConfig(num_train=0), r"data.num_train must be a positive integer"),
        (lambda: DataConfig(num_test=9), r"data.num_test=9 is too small: .* at least 10 rows"),
        (lambda: ModelConfig(name="vgg"), r"model.name='vgg'.*mlp, lenet5, resnet18"),
        (lambda: ModelConfig(activation="elu"), r"model.activation='elu'.*relu, gelu"),
        (lambda: TrainConfig(optimizer="rmsprop"), r"train.optimizer='rmsprop'.*sgd, adam"),
        (lambda: TrainConfig(learning_rate=-1.0), r"learning_rate must be a positive"),
        (lambda: TrainConfig(momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
        (lambda: TrainConfig(epochs=0), r"train.epochs must be a positive integer, got 0"),
        (lambda: NTKConfig(method="fast"), r"ntk.method='fast'.*contraction, structured, ntvp"),
        (lambda: NTKConfig(num_eigen=-3), r"ntk.num_eigen must be a positive integer, got -3"),
        (lambda: SweepConfig(eigen_indices=()), r"eigen_indices is empty"),
        (lambda: SweepConfig(eigen_indices=(1, 1)), r"duplicates"),
        (lambda: SweepConfig(optimizers=("lbfgs",)), r"'lbfgs' is not supported"),
        (lambda: SweepConfig(linearized=()), r"non-empty tuple of booleans"),
        (
            lambda: Config(ntk=NTKConfig(num_eigen=10), sweep=SweepConfig(eigen_indices=(3, 10))),
            r"\[10\] are >= ntk.num_eigen=10",
        ),
    ],
)
def test_validation_messages_name_the_bad_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_configs_are_frozen():
    cfg = get_preset("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_consistent(name):
    cfg = get_preset(name)
    assert cfg.preset == name
    bound = cfg.nad.k if cfg.is_nad else cfg.ntk.num_eigen  # NAD indices index the NADs
    assert max(cfg.sweep.eigen_indices) < bound
    if name == "smoke":
        assert cfg.data.name == "digits" and cfg.model.name == "mlp"
        assert cfg.train.epochs <= 10 and len(cfg.sweep.eigen_indices) <= 10
    elif name == "digits":  # the default run: the paper's findings in minutes (issue sizes)
        assert cfg.data.name == "digits" and cfg.ntk.num_eigen >= 1024
        assert dict(cfg.grid)["model.name"] == ("mlp", "lenet5")
        assert len(dict(cfg.grid)["train.seed"]) == 3 and cfg.train.epochs == 100
        indices = cfg.sweep.eigen_indices
        assert len(indices) >= 16 and indices[0] == 0 and 900 <= max(indices) < 1024
        assert set(cfg.sweep.optimizers) == {"sgd", "adam"}
    else:
        assert cfg.ntk.num_eigen == 1000
    if name == "cifar2":
        assert cfg.train.epochs == 200
    with pytest.raises(ValueError, match="Unknown preset 'paper'"):
        get_preset("paper")


def test_overrides_parse_types_tuples_and_none():
    cfg = apply_overrides(
        get_preset("smoke"),
        [
            "train.epochs=3",
            "train.learning_rate=0.1",
            "sweep.eigen_indices=0,5,9",
            "sweep.linearized=[true]",
            "data.num_train=none",
            "data.root=/data/sets",
            "model.activation=gelu",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.train.learning_rate == 0.1
    assert cfg.sweep.eigen_indices == (0, 5, 9)
    assert cfg.sweep.linearized == (True,)
    assert cfg.data.num_train is None and cfg.data.root == "/data/sets"
    assert cfg.model.activation == "gelu"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("epochs=3", r"must be section.field"),
        ("training.epochs=3", r"Unknown config section 'training'"),
        ("train.epoch=3", r"Unknown field 'epoch' in section 'train'.*epochs"),
        ("train.epochs=three", r"expected a value of type int"),
        ("train.epochs", r"must look like section.field=value"),
        ("model.name=vgg", r"model.name='vgg'"),
    ],
)
def test_bad_overrides(override, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(get_preset("smoke"), [override])


def test_json_round_trip(tmp_path):
    cfg = apply_overrides(get_preset("cifar2"), ["sweep.eigen_indices=1,2", "data.num_train=50"])
    path = save_config(cfg, tmp_path / "sub" / "config.json")
    assert json.loads(path.read_text())["sweep"]["eigen_indices"] == [1, 2]
    assert load_config(path) == cfg
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_an_override_of_a_grid_axis_fixes_it_and_its_exclusions():
    """``model.name=lenet5`` on the default preset runs LeNet5 alone, with the exclusions the
    default gives LeNet5 (one seed, SGD); ``model.name=mlp`` drops them all."""
    from raysweep.sweep.grid import expand_grid

    lenet = apply_overrides(get_preset("digits"), ["model.name=lenet5"])
    assert "model.name" not in dict(lenet.grid) and lenet.model.name == "lenet5"
    grid = expand_grid(lenet)
    assert {(t.optimizer, t.artifact) for t in grid.trials} == {("sgd", "lenet5-digits")}
    assert {x.seed for t in grid.trials for x in t.targets} == {0}
    mlp = apply_overrides(get_preset("digits"), ["model.name=mlp"])
    assert mlp.sweep.exclude == () and len(dict(mlp.grid)["train.seed"]) == 3
