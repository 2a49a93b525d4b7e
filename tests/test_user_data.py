"""Tests for your own data in raysweep.data: npz files, import-path loaders, registered loaders."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from raysweep.data import (
    DATASET_NAMES,
    STD_FLOOR,
    arrays_fingerprint,
    available_datasets,
    load_dataset,
    register_dataset,
    registered_datasets,
    resolve_data_name,
    resolve_root,
    stratified_allocation,
)
from raysweep.data import registry as data_registry

N_TRAIN, N_TEST = 40, 20


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch):
    """Every test starts and ends with no registered datasets."""
    monkeypatch.setattr(data_registry, "_REGISTERED", {})


def _arrays(seed: int = 0, classes: int = 4) -> dict[str, np.ndarray]:
    """Small float64 NHWC images, balanced integer labels 0..classes-1."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.normal(3.0, 2.0, size=(N_TRAIN, 6, 6, 2)),
        "y_train": rng.permutation(np.arange(N_TRAIN) % classes).astype(np.int64),
        "x_test": rng.normal(3.0, 2.0, size=(N_TEST, 6, 6, 2)),
        "y_test": rng.permutation(np.arange(N_TEST) % classes).astype(np.int64),
    }


def _save(path: Path, arrays: dict, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays, **extra)
    return path


def _standardized(x_train: np.ndarray, x_test: np.ndarray):
    """The documented standardization, computed independently: float32 cast, per-channel train
    mean and population std (float64, std floored), applied to both splits."""
    tr = np.asarray(x_train).astype(np.float32)
    te = np.asarray(x_test).astype(np.float32)
    flat = tr.astype(np.float64).reshape(-1, tr.shape[-1])
    mean = flat.mean(axis=0)
    std = np.maximum(flat.std(axis=0), STD_FLOOR)
    return (tr - mean) / std, (te - mean) / std, mean, std


def _fingerprint(ds) -> str:
    token = ds.source.rsplit(" ", 1)[-1]
    assert token.startswith("sha256:") and len(token) == len("sha256:") + 64
    return token


def _same_data(a, b) -> None:
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.train_indices, b.train_indices)
    np.testing.assert_array_equal(a.test_indices, b.test_indices)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    assert a.num_classes == b.num_classes and a.class_names == b.class_names
    assert a.positive_classes == b.positive_classes
    assert _fingerprint(a) == _fingerprint(b)


# ------------------------------------------------------------------------------ npz files
def test_npz_round_trip(tmp_path):
    arrays = _arrays()
    path = _save(tmp_path / "toy.npz", arrays, notes=np.arange(3))  # extra arrays are ignored
    name = f"npz:{path}"
    ds = load_dataset(name)
    x_tr, x_te, mean, std = _standardized(arrays["x_train"], arrays["x_test"])
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape == (N_TRAIN, 6, 6, 2)
    assert ds.x_test.dtype == np.float32 and ds.x_test.shape == (N_TEST, 6, 6, 2)
    np.testing.assert_allclose(ds.x_train, x_tr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, x_te, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ds.std, std, rtol=1e-6)
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"])
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
    np.testing.assert_array_equal(ds.train_indices, np.arange(N_TRAIN))
    assert ds.num_classes == 4 and ds.class_names == ("0", "1", "2", "3")
    assert ds.positive_classes is None and ds.input_shape == (6, 6, 2)
    manifest = ds.manifest()
    assert manifest["name"] == name
    assert manifest["source"] == f"{path} {arrays_fingerprint(arrays)}"
    assert manifest["num_train_available"] == N_TRAIN and manifest["num_test_available"] == N_TEST

    # the same arrays give the same fingerprint; one changed value gives another
    assert _fingerprint(load_dataset(name)) == _fingerprint(ds)
    arrays["x_test"][3, 1, 1, 0] += 1.0
    _save(path, arrays)
    changed = load_dataset(name)
    assert changed.name == ds.name and _fingerprint(changed) != _fingerprint(ds)


def test_npz_shape_and_dtype_conventions(tmp_path):
    rng = np.random.default_rng(3)
    # (n, H, W) uint8 images get a channel axis; bool labels are 0/1
    gray = {
        "x_train": rng.integers(0, 256, size=(N_TRAIN, 5, 4), dtype=np.uint8),
        "y_train": np.arange(N_TRAIN) % 2 == 1,
        "x_test": rng.integers(0, 256, size=(N_TEST, 5, 4), dtype=np.uint8),
        "y_test": np.arange(N_TEST) % 2 == 0,
    }
    ds = load_dataset(f"npz:{_save(tmp_path / 'gray.npz', gray)}")
    assert ds.input_shape == (5, 4, 1)
    x_tr, x_te, _, _ = _standardized(gray["x_train"][..., None], gray["x_test"][..., None])
    np.testing.assert_allclose(ds.x_train, x_tr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, x_te, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y_train, gray["y_train"].astype(np.int32))

    # (n, d) vectors become (n, d, 1, 1): one channel; whole-number float labels {-1, 1} -> {0, 1}
    vec = {
        "x_train": rng.normal(size=(N_TRAIN, 7)).astype(np.float32),
        "y_train": np.where(np.arange(N_TRAIN) % 2 == 0, -1.0, 1.0),
        "x_test": rng.normal(size=(N_TEST, 7)).astype(np.float32),
        "y_test": np.where(np.arange(N_TEST) % 3 == 0, -1.0, 1.0),
    }
    name = f"npz:{_save(tmp_path / 'vec.npz', vec)}"
    ds = load_dataset(name)
    assert ds.input_shape == (7, 1, 1) and ds.mean.shape == (1,)
    x_tr, _, _, _ = _standardized(vec["x_train"][:, :, None, None], vec["x_test"][:, :, None, None])
    np.testing.assert_allclose(ds.x_train, x_tr, rtol=1e-5, atol=1e-5)
    assert ds.class_names == ("-1", "1") and ds.num_classes == 2
    np.testing.assert_array_equal(ds.y_test, (vec["y_test"] > 0).astype(np.int32))
    assert ds.positive_classes is None
    # two classes already are the binary task: the larger label is 1
    binary = load_dataset(name, binary=True)
    np.testing.assert_array_equal(binary.y_test, ds.y_test)
    assert binary.positive_classes == (1,) and binary.num_classes == 2


def test_relative_npz_path(tmp_path, monkeypatch):
    arrays = _arrays()
    _save(tmp_path / "sub" / "d.npz", arrays)
    monkeypatch.chdir(tmp_path)
    absolute = f"npz:{tmp_path / 'sub' / 'd.npz'}"
    assert resolve_data_name("npz:sub/d.npz") == absolute
    assert resolve_data_name("npz:./sub/../sub/d.npz") == absolute
    assert resolve_data_name("npz:~/d.npz") == f"npz:{Path.home() / 'd.npz'}"
    for other in ("digits", "cifar2", "my_pkg.data:load", "toy", absolute, "npz:"):
        assert resolve_data_name(other) == other
    ds = load_dataset("npz:sub/d.npz")
    assert ds.name == "npz:sub/d.npz"
    assert ds.source.startswith(f"{tmp_path / 'sub' / 'd.npz'} sha256:")
    # from another folder the relative name no longer resolves; the resolved one still does
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(FileNotFoundError, match=f"resolved against the current folder {elsewhere}"):
        load_dataset("npz:sub/d.npz")
    _same_data(load_dataset(absolute), ds)


def test_subsampling_is_stratified_and_deterministic(tmp_path):
    rng = np.random.default_rng(5)
    y_train = rng.permutation(np.repeat([0, 1, 2], [20, 12, 8]))  # unbalanced classes
    y_test = rng.permutation(np.repeat([0, 1, 2], [10, 6, 4]))
    arrays = {
        "x_train": rng.normal(size=(40, 4, 4, 3)),
        "y_train": y_train,
        "x_test": rng.normal(size=(20, 4, 4, 3)),
        "y_test": y_test,
    }
    name = f"npz:{_save(tmp_path / 'u.npz', arrays)}"
    ds = load_dataset(name, num_train=13, num_test=7, seed=4)
    assert ds.num_train == 13 and ds.num_test == 7 and ds.seed == 4
    for y, sub, num in ((y_train, ds.y_train, 13), (y_test, ds.y_test, 7)):
        classes, counts = np.unique(sub, return_counts=True)
        assert dict(zip(classes.tolist(), counts.tolist(), strict=True)) == (
            stratified_allocation(y, num)
        )
    np.testing.assert_array_equal(ds.y_train, y_train[ds.train_indices])
    np.testing.assert_array_equal(ds.y_test, y_test[ds.test_indices])
    # statistics come from the selected training rows
    x_tr, x_te, _, _ = _standardized(
        arrays["x_train"][ds.train_indices], arrays["x_test"][ds.test_indices]
    )
    np.testing.assert_allclose(ds.x_train, x_tr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, x_te, rtol=1e-5, atol=1e-5)
    again = load_dataset(name, num_train=13, num_test=7, seed=4)
    _same_data(again, ds)
    other = load_dataset(name, num_train=13, num_test=7, seed=5)
    assert not np.array_equal(other.train_indices, ds.train_indices)
    with pytest.raises(ValueError, match="num_train=41 is larger than the 40 rows"):
        load_dataset(name, num_train=41)


# ------------------------------------------------------------ loaders: import path, registry
@pytest.fixture
def loader_module(tmp_path, monkeypatch):
    """A module ``user_data_loaders`` in tmp_path (the working directory) reading ``toy.npz``."""
    name = "user_data_loaders"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            KEYS = ("x_train", "y_train", "x_test", "y_test")
            NOT_A_FUNCTION = 3

            def as_dict():
                with np.load("toy.npz") as f:
                    return {k: f[k] for k in KEYS}

            def as_tuple():
                with np.load("toy.npz") as f:
                    return tuple(f[k] for k in KEYS)

            class Loaders:
                @staticmethod
                def nested():
                    return as_dict()
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


def test_import_path_and_registered_loaders_match_npz(tmp_path, loader_module):
    arrays = _arrays(seed=7)
    _save(tmp_path / "toy.npz", arrays)
    path_before = list(sys.path)
    reference = load_dataset("npz:toy.npz", num_train=20, num_test=10, seed=2)
    kw = {"num_train": 20, "num_test": 10, "seed": 2}
    for attr in ("as_dict", "as_tuple", "Loaders.nested"):
        name = f"{loader_module}:{attr}"
        ds = load_dataset(name, **kw)
        _same_data(ds, reference)
        assert ds.name == name and ds.source.startswith(f"{name} sha256:")
    assert sys.path == path_before  # the working directory was on sys.path only while loading

    module = sys.modules[loader_module]
    register_dataset("toy", module.as_dict)
    assert registered_datasets() == ("toy",)
    assert available_datasets() == (*DATASET_NAMES, "toy")
    ds = load_dataset("toy", **kw)
    _same_data(ds, reference)
    assert ds.name == "toy"
    assert ds.source.startswith(f"registered toy ({loader_module}:as_dict) sha256:")

    # a registered name is a valid data.name
    from raysweep.config import DataConfig

    assert DataConfig(name="toy").name == "toy"


def test_register_dataset_rules(tmp_path):
    arrays = _arrays()
    register_dataset("toy", lambda: arrays)
    with pytest.raises(ValueError, match="'toy' is already registered.*overwrite=True"):
        register_dataset("toy", lambda: arrays)
    other = _arrays(seed=9)
    register_dataset("toy", lambda: other, overwrite=True)
    np.testing.assert_array_equal(load_dataset("toy").y_train, other["y_train"])
    for builtin in ("digits", "cifar2", "MNIST"):
        with pytest.raises(ValueError, match="name of a built-in dataset"):
            register_dataset(builtin, lambda: arrays)
    for bad in ("", "npz:x", "my data", "pkg.mod:load"):
        with pytest.raises(ValueError, match="must be non-empty, without ':'"):
            register_dataset(bad, lambda: arrays)
    with pytest.raises(TypeError, match="must be callable, got dict"):
        register_dataset("toy2", arrays)
    assert registered_datasets() == ("toy",)
    # names are looked up exactly; unknown ones list the built-in and registered names
    with pytest.raises(ValueError, match="unknown dataset 'Toy'.*cifar2, toy; or npz:PATH"):
        load_dataset("Toy")


def test_loader_receives_root_and_errors_carry_a_note(tmp_path):
    seen = []

    def with_root(root):
        seen.append(root)
        return _arrays()

    register_dataset("rooted", with_root)
    load_dataset("rooted", tmp_path)
    assert seen == [resolve_root(tmp_path)] and isinstance(seen[0], Path)

    def broken():
        raise RuntimeError("disk on fire")

    register_dataset("broken", broken)
    with pytest.raises(RuntimeError, match="disk on fire") as info:
        load_dataset("broken")
    assert any("loader of dataset 'broken'" in note for note in info.value.__notes__)


# ------------------------------------------------------------------------------ binary rule
def test_binary_rule_for_many_classes(tmp_path):
    arrays = _arrays(classes=7)
    register_dataset("seven", lambda: arrays)
    with pytest.raises(
        ValueError,
        match=r"dataset 'seven' has 7 classes .* give positive_classes=\[\.\.\.\] in the "
        r"loader's dict or use data with two classes",
    ):
        load_dataset("seven", binary=True)
    multi = load_dataset("seven")  # without binary=True the classes are kept
    assert multi.num_classes == 7 and multi.positive_classes is None

    register_dataset("seven", lambda: {**arrays, "positive_classes": [4, 5, 6]}, overwrite=True)
    ds = load_dataset("seven", binary=True, num_train=21, seed=1)
    assert ds.num_classes == 2 and ds.positive_classes == (4, 5, 6)
    original = arrays["y_train"][ds.train_indices]
    np.testing.assert_array_equal(ds.y_train, (original >= 4).astype(np.int32))
    # stratified on the seven original classes: 3 rows of each
    assert np.bincount(original, minlength=7).tolist() == [3] * 7

    register_dataset("seven", lambda: {**arrays, "binary_rule": lambda c: c >= 4}, overwrite=True)
    by_rule = load_dataset("seven", binary=True, num_train=21, seed=1)
    _same_data(by_rule, ds)

    path = _save(tmp_path / "seven.npz", arrays)
    with pytest.raises(ValueError, match="give a positive_classes array in the .npz"):
        load_dataset(f"npz:{path}", binary=True)
    _save(path, arrays, positive_classes=np.array([4, 5, 6]))
    from_npz = load_dataset(f"npz:{path}", binary=True)
    np.testing.assert_array_equal(from_npz.y_test, (arrays["y_test"] >= 4).astype(np.int32))


# ------------------------------------------------------------------------------ bad inputs
def _with(**changes):
    arrays = _arrays()
    arrays.update(changes)
    return arrays


def _nan_x_test():
    x = _arrays()["x_test"].copy()
    x[0, 0, 0, 0] = x[1, 2, 3, 1] = x[5, 0, 0, 1] = np.nan
    x[2, 2, 2, 0] = np.inf
    return x


BAD_PAYLOADS = {
    "mismatched lengths": (
        _with(y_train=np.zeros(N_TRAIN - 1, np.int64)),
        ValueError,
        "y_train has 39 labels but x_train has 40 examples; give one label per example",
    ),
    "per-example shapes differ": (
        _with(x_test=np.zeros((N_TEST, 6, 5, 2))),
        ValueError,
        r"x_test examples have shape \(6, 5, 2\) but x_train examples have \(6, 6, 2\)",
    ),
    "nan in x": (
        _with(x_test=_nan_x_test()),
        ValueError,
        "x_test has 4 non-finite values \\(NaN or inf\\)",
    ),
    "float labels": (
        _with(y_train=np.where(np.arange(N_TRAIN) == 6, 0.5, 1.0)),
        ValueError,
        r"y_train has 1 non-integer labels \(e\.g\. 0\.5 at row 6\)",
    ),
    "one class": (
        _with(y_train=np.full(N_TRAIN, 3), y_test=np.full(N_TEST, 3)),
        ValueError,
        r"hold a single class \(label 3\); the data needs at least 2 classes",
    ),
    "one training class": (
        _with(y_train=np.full(N_TRAIN, 3)),
        ValueError,
        r"y_train holds a single class \(label 3\)",
    ),
    "empty split": (
        _with(x_test=np.zeros((0, 6, 6, 2)), y_test=np.zeros(0, np.int64)),
        ValueError,
        r"x_test is empty \(0 examples\)",
    ),
    "labels not 1-D": (
        _with(y_test=_arrays()["y_test"][:, None]),
        ValueError,
        r"y_test has shape \(20, 1\); labels must be a 1-D vector.*y\.ravel\(\)",
    ),
    "x of 5 axes": (
        _with(x_train=np.zeros((N_TRAIN, 2, 2, 2, 2))),
        ValueError,
        r"x_train has shape \(40, 2, 2, 2, 2\); give \(n, H, W, C\) images",
    ),
    "string inputs": (
        _with(x_train=np.full((N_TRAIN, 2), "a")),
        TypeError,
        "x_train has dtype <U1; give numbers",
    ),
    "beyond float32": (
        _with(x_train=np.full((N_TRAIN, 6, 6, 2), 1e300)),
        ValueError,
        "x_train has values beyond the float32 range",
    ),
    "missing dict key": (
        {k: v for k, v in _arrays().items() if k != "y_test"},
        ValueError,
        "the loader's dict has no 'y_test'.*keys present: x_train, y_train, x_test",
    ),
    "unknown dict key": (
        {**_arrays(), "positive_class": [1]},
        ValueError,
        "the loader's dict has unknown 'positive_class'; accepted keys",
    ),
    "wrong return type": (
        (1, 2, 3),
        TypeError,
        "the loader returned a tuple of 3 items; return \\(x_train, y_train, x_test, y_test\\)",
    ),
    "positive classes not labels": (
        {**_arrays(), "positive_classes": [1, 11]},
        ValueError,
        r"positive_classes \[11\] are not labels of the data \(labels: \[0, 1, 2, 3\]\)",
    ),
    "positive classes all labels": (
        {**_arrays(), "positive_classes": [0, 1, 2, 3]},
        ValueError,
        "positive_classes selects 4 of the 4 classes",
    ),
    "both rules": (
        {**_arrays(), "positive_classes": [1], "binary_rule": bool},
        ValueError,
        "give positive_classes or binary_rule, not both",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
def test_bad_loader_output_is_reported(case):
    payload, error, message = BAD_PAYLOADS[case]
    register_dataset("bad", lambda: payload)
    with pytest.raises(error, match=f"^dataset 'bad': .*{message}") as info:
        load_dataset("bad")
    assert "\n" not in str(info.value)


def test_bad_npz_files(tmp_path):
    arrays = _arrays()
    path = _save(tmp_path / "partial.npz", {k: arrays[k] for k in ("x_train", "y_train")})
    with pytest.raises(ValueError, match="has no 'x_test', 'y_test'.*present: x_train, y_train"):
        load_dataset(f"npz:{path}")
    with pytest.raises(FileNotFoundError, match=f"no file {tmp_path / 'missing.npz'}; check"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    text = tmp_path / "notes.npz"
    text.write_text("not numpy\n")
    with pytest.raises(ValueError, match="cannot read .*notes.npz as .npz"):
        load_dataset(f"npz:{text}")
    single = tmp_path / "single.npy"
    np.save(single, arrays["x_train"])
    with pytest.raises(ValueError, match="holds one array"):
        load_dataset(f"npz:{single}")
    with pytest.raises(ValueError, match="is a folder"):
        load_dataset(f"npz:{tmp_path}")
    with pytest.raises(ValueError, match="'npz:' names no file"):
        load_dataset("npz:")
    objects = tmp_path / "objects.npz"
    np.savez(objects, **{**arrays, "y_test": np.array([[1], "a"], dtype=object)})
    with pytest.raises(ValueError, match="cannot read array 'y_test'"):
        load_dataset(f"npz:{objects}")


def test_bad_import_paths(tmp_path, loader_module):
    missing_dep = tmp_path / "needs_missing_dep.py"
    missing_dep.write_text("import no_such_dependency_xyz\n")
    cases = [
        ("no_such_module_xyz:load", ImportError, "no module named 'no_such_module_xyz'"),
        ("no_such_pkg_xyz.sub:load", ImportError, "no module named 'no_such_pkg_xyz'"),
        (f"{loader_module}:nope", ImportError, "has no attribute 'nope'"),
        (f"{loader_module}:Loaders.nope", ImportError, "has no attribute 'Loaders.nope'"),
        (f"{loader_module}:NOT_A_FUNCTION", TypeError, "is a int, not a callable"),
        ("needs_missing_dep:load", ImportError, "importing 'needs_missing_dep' failed"),
    ]
    for name, error, message in cases:
        with pytest.raises(error, match=f"dataset '{name}': .*{message}") as info:
            load_dataset(name)
        assert "\n" not in str(info.value)
    sys.modules.pop("needs_missing_dep", None)
    assert os.getcwd() == str(tmp_path)


def test_argument_checks_run_before_the_loader():
    calls = []

    def loader():
        calls.append(1)
        return _arrays()

    register_dataset("counted", loader)
    with pytest.raises(TypeError, match="binary must be True, False or None"):
        load_dataset("counted", binary="yes")
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        load_dataset("counted", seed=-1)
    with pytest.raises(ValueError, match="num_test must be positive"):
        load_dataset("counted", num_test=0)
    assert calls == []
