"""Tests for raysweep.data on tiny archives written in the real on-disk formats."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from raysweep.data import (
    DATA_ENV_VAR,
    DATASET_NAMES,
    STD_FLOOR,
    Dataset,
    binarize,
    channel_statistics,
    load_dataset,
    split_concatenated,
    split_rng,
    stratified_allocation,
    stratified_subsample,
)
from raysweep.data.cifar10 import BATCH_FILES, TRAIN_BATCHES

ROWS_PER_BATCH = 20  # 2 images per class in every batch
MNIST_TRAIN, MNIST_TEST = 60, 30


# ----------------------------------------------------------------------------- fixtures
def _cifar_batches(seed: int = 1) -> dict[str, dict[bytes, object]]:
    """Official-format batch dicts: b'data' uint8 (n, 3072) channel-first rows, b'labels' list."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in BATCH_FILES:
        labels = rng.permutation(np.repeat(np.arange(10), ROWS_PER_BATCH // 10))
        data = rng.integers(0, 256, size=(ROWS_PER_BATCH, 3072), dtype=np.uint8)
        batches[name] = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels],
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(ROWS_PER_BATCH)],
        }
    return batches


def _write_cifar_archive(path: Path, batches, *, protocol: int = 2, skip=()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        members = {"batches.meta": pickle.dumps({b"num_cases_per_batch": 10000}, protocol=2)}
        members.update({n: pickle.dumps(b, protocol=protocol) for n, b in batches.items()})
        for name, blob in members.items():
            if name in skip:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def _write_cifar_folder(folder: Path, batches) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def _raw_cifar(batches):
    """Reference arrays: channel-first rows (n, 3072) and labels, train then test."""
    train = np.concatenate([batches[n][b"data"] for n in TRAIN_BATCHES])
    y_train = np.concatenate([batches[n][b"labels"] for n in TRAIN_BATCHES])
    test = batches["test_batch"]
    return train, y_train, test[b"data"], np.array(test[b"labels"])


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mnist_arrays(seed: int = 2):
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", MNIST_TRAIN), ("t10k", MNIST_TEST)):
        out[f"{split}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        out[f"{split}-labels-idx1-ubyte"] = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    return out


def _write_mnist(folder: Path, arrays, *, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        blob = _idx_bytes(arr, 0x803 if arr.ndim == 3 else 0x801)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return folder


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    batches = _cifar_batches()
    _write_cifar_archive(root / "cifar-10-python.tar.gz", batches)
    return root, batches


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    arrays = _mnist_arrays()
    _write_mnist(root, arrays, gz=True)
    return root, arrays


# ------------------------------------------------------------------------------ CIFAR-10
def test_cifar10_archive_shapes_dtypes_labels(cifar):
    root, batches = cifar
    ds = load_dataset("cifar10", root)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.x_train.shape == (100, 32, 32, 3) and ds.x_test.shape == (20, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.train_indices.dtype == np.int64
    assert ds.input_shape == (32, 32, 3)
    _, y_train, _, y_test = _raw_cifar(batches)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    np.testing.assert_array_equal(ds.train_indices, np.arange(100))
    assert ds.source.endswith("cifar-10-python.tar.gz")
    assert ds.class_names[0] == "airplane"


def test_cifar10_nhwc_layout_and_train_statistics(cifar):
    root, batches = cifar
    ds = load_dataset("cifar10", root)
    train, _, test, _ = _raw_cifar(batches)
    # One known pixel: channel-first row entry c*1024 + h*32 + w -> x[i, h, w, c].
    i, c, h, w = 23, 1, 5, 7
    pixel = train[i, c * 1024 + h * 32 + w] / 255.0
    assert ds.x_train[i, h, w, c] == pytest.approx((pixel - ds.mean[c]) / ds.std[c], abs=1e-5)
    # Whole arrays: reconstruct from raw with the TRAIN statistics.
    train01 = train.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
    test01 = test.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
    np.testing.assert_allclose(ds.mean, train01.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(ds.std, train01.std(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(ds.x_train, (train01 - ds.mean) / ds.std, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (test01 - ds.mean) / ds.std, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2), dtype=np.float64), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 1, 2), dtype=np.float64), 1.0, atol=1e-5)
    # Test set is not re-standardized with its own statistics.
    assert not np.allclose(ds.x_test.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)


def test_cifar10_extracted_folder_variants_match_archive(cifar, tmp_path):
    root, batches = cifar
    reference = load_dataset("cifar10", root)
    _write_cifar_folder(tmp_path / "a" / "cifar-10-batches-py", batches)
    _write_cifar_folder(tmp_path / "b" / "cifar10" / "cifar-10-batches-py", batches)
    bare = _write_cifar_folder(tmp_path / "c" / "batches", batches)
    for where in (tmp_path / "a", tmp_path / "b", bare):
        ds = load_dataset("cifar10", where)
        assert Path(ds.source).is_dir()
        np.testing.assert_array_equal(ds.x_train, reference.x_train)
        np.testing.assert_array_equal(ds.y_test, reference.y_test)


def test_cifar10_archive_in_named_subfolder_and_protocol5(tmp_path):
    batches = _cifar_batches(seed=4)
    (tmp_path / "cifar10").mkdir()
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    _write_cifar_archive(archive, batches, protocol=5)
    ds = load_dataset("cifar10", tmp_path)
    np.testing.assert_array_equal(ds.y_train, _raw_cifar(batches)[1])
    assert load_dataset("cifar10", archive).source == str(archive)


def test_cifar10_legacy_numpy_pickle_names_load_without_warnings(tmp_path):
    batches = _cifar_batches(seed=5)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, batch in batches.items():
        blob = pickle.dumps(batch, protocol=2)
        blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(blob)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset("cifar10", tmp_path)
    assert ds.num_train == 100


def test_cifar2_binary_rule_and_stratification_on_original_classes(cifar):
    root, batches = cifar
    _, y_train, _, _ = _raw_cifar(batches)
    ds = load_dataset("cifar2", root, num_train=50, num_test=10, seed=3)
    assert ds.name == "cifar2" and ds.num_classes == 2
    assert ds.y_train.dtype == np.int32 and set(np.unique(ds.y_train)) == {0, 1}
    original = y_train[ds.train_indices]
    np.testing.assert_array_equal(ds.y_train, (original >= 5).astype(np.int32))
    # Stratified on the ten original classes: 10 each in the full split -> exactly 5 each.
    np.testing.assert_array_equal(np.bincount(original, minlength=10), np.full(10, 5))
    assert ds.positive_classes == (5, 6, 7, 8, 9)
    via_flag = load_dataset("cifar10", root, num_train=50, num_test=10, seed=3, binary=True)
    assert via_flag.name == "cifar2"
    np.testing.assert_array_equal(via_flag.train_indices, ds.train_indices)
    np.testing.assert_array_equal(via_flag.y_train, ds.y_train)
    with pytest.raises(ValueError, match="binary=False"):
        load_dataset("cifar2", root, binary=False)


def test_subsampling_deterministic_stratified_and_exact(cifar):
    root, batches = cifar
    train, y_train, _, _ = _raw_cifar(batches)
    a = load_dataset("cifar10", root, num_train=30, num_test=10, seed=7)
    b = load_dataset("cifar10", root, num_train=30, num_test=10, seed=7)
    c = load_dataset("cifar10", root, num_train=30, num_test=10, seed=8)
    assert a.num_train == 30 and a.num_test == 10
    np.testing.assert_array_equal(a.train_indices, b.train_indices)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.train_indices, c.train_indices)
    assert np.all(np.diff(a.train_indices) > 0) and np.all(np.diff(a.test_indices) > 0)
    np.testing.assert_array_equal(np.bincount(a.y_train, minlength=10), np.full(10, 3))
    np.testing.assert_array_equal(np.bincount(a.y_test, minlength=10), np.full(10, 1))
    np.testing.assert_array_equal(a.y_train, y_train[a.train_indices])
    # Rows are the selected raw images, standardized with the statistics of the subset.
    sub01 = train[a.train_indices].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
    np.testing.assert_allclose(a.mean, sub01.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(a.x_train, (sub01 - a.mean) / a.std, atol=1e-5)
    # Independent streams: changing num_test leaves the training selection alone.
    d = load_dataset("cifar10", root, num_train=30, num_test=20, seed=7)
    np.testing.assert_array_equal(d.train_indices, a.train_indices)


def test_stratified_allocation_largest_remainder():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    # exact quotas 2.5, 1.5, 1.0 -> floors 2, 1, 1; one leftover to the tie with smaller label
    assert stratified_allocation(labels, 5) == {0: 3, 1: 1, 2: 1}
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = rng.integers(0, 7, size=int(rng.integers(1, 200)))
        num = int(rng.integers(1, len(y) + 1))
        alloc = stratified_allocation(y, num)
        counts = dict(zip(*np.unique(y, return_counts=True), strict=True))
        assert sum(alloc.values()) == num
        for cls, q in alloc.items():
            assert abs(q - num * counts[cls] / len(y)) < 1 and q <= counts[cls]
        idx = stratified_subsample(y, num, split_rng(3, 0))
        assert len(np.unique(idx)) == num and idx.dtype == np.int64


def test_channel_statistics_std_floor():
    x = np.zeros((4, 2, 2, 2), dtype=np.float32)
    x[..., 1] = np.arange(16, dtype=np.float32).reshape(4, 2, 2)
    mean, std = channel_statistics(x)
    assert std[0] == np.float32(STD_FLOOR) and mean.dtype == np.float32
    assert std[1] == pytest.approx(np.arange(16).std(), rel=1e-6)


# ------------------------------------------------------------------ concatenation / manifest
def test_concatenated_view_split_and_manifest(cifar):
    root, _ = cifar
    ds = load_dataset("cifar10", root, num_train=40, num_test=10, seed=1)
    x_all, y_all = ds.concatenated()
    assert x_all.shape == (50, 32, 32, 3) and y_all.dtype == np.int32
    np.testing.assert_array_equal(x_all[3], ds.x_train[3])
    np.testing.assert_array_equal(x_all[40 + 2], ds.x_test[2])
    values = np.arange(50 * 2).reshape(50, 2)
    tr, te = split_concatenated(values, ds)
    np.testing.assert_array_equal(tr, values[:40])
    np.testing.assert_array_equal(te, values[40:])
    cols_tr, cols_te = ds.split_concatenated(np.zeros((3, 50)), axis=1)
    assert cols_tr.shape == (3, 40) and cols_te.shape == (3, 10)
    with pytest.raises(ValueError, match="40 train \\+ 10 test = 50"):
        split_concatenated(np.zeros(49), ds)
    manifest = json.loads(json.dumps(ds.manifest()))
    assert manifest["num_train"] == 40 and manifest["num_test"] == 10
    assert manifest["num_total"] == 50 and manifest["order"] == "train then test"
    assert manifest["input_shape"] == [32, 32, 3] and manifest["num_classes"] == 10
    assert manifest["train_indices"] == ds.train_indices.tolist()
    assert len(manifest["test_indices"]) == 10 and manifest["seed"] == 1
    assert manifest["num_train_available"] == 100 and len(manifest["mean"]) == 3
    assert manifest["source"] == ds.source


def test_dataset_validates_fields(cifar):
    root, _ = cifar
    ds = load_dataset("cifar10", root, num_train=10, num_test=10)
    with pytest.raises(ValueError, match="float32"):
        Dataset(**{**_fields(ds), "x_train": ds.x_train.astype(np.float64)})
    with pytest.raises(ValueError, match="num_classes"):
        Dataset(**{**_fields(ds), "num_classes": 3})
    with pytest.raises(ValueError, match="already binary"):
        binarize(binarize(ds))


def _fields(ds: Dataset) -> dict:
    return {f: getattr(ds, f) for f in ds.__dataclass_fields__}


# ----------------------------------------------------------------------------------- MNIST
def test_mnist_gz_shapes_layout_labels(mnist):
    root, arrays = mnist
    ds = load_dataset("mnist", root)
    assert ds.x_train.shape == (MNIST_TRAIN, 28, 28, 1)
    assert ds.x_test.shape == (MNIST_TEST, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    raw = arrays["train-images-idx3-ubyte"]
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    expected = (raw[..., None] / 255.0 - ds.mean) / ds.std
    np.testing.assert_allclose(ds.x_train, expected, atol=1e-5)
    assert ds.x_train[4, 3, 17, 0] == pytest.approx(
        (raw[4, 3, 17] / 255 - ds.mean[0]) / ds.std[0], abs=1e-5
    )
    test01 = arrays["t10k-images-idx3-ubyte"][..., None] / 255.0
    np.testing.assert_allclose(ds.x_test, (test01 - ds.mean) / ds.std, atol=1e-5)


def test_mnist_plain_and_torchvision_layout(mnist, tmp_path):
    root, arrays = mnist
    reference = load_dataset("mnist", root)
    _write_mnist(tmp_path / "plain", arrays, gz=False)
    _write_mnist(tmp_path / "tv" / "MNIST" / "raw", arrays, gz=False)
    for where in (tmp_path / "plain", tmp_path / "tv"):
        ds = load_dataset("mnist", where)
        np.testing.assert_array_equal(ds.x_train, reference.x_train)
        np.testing.assert_array_equal(ds.y_test, reference.y_test)


def test_mnist2_binary(mnist):
    root, arrays = mnist
    ds = load_dataset("mnist2", root, num_train=20, num_test=10, seed=0)
    original = arrays["train-labels-idx1-ubyte"][ds.train_indices]
    np.testing.assert_array_equal(ds.y_train, (original >= 5).astype(np.int32))
    np.testing.assert_array_equal(np.bincount(original, minlength=10), np.full(10, 2))


# ---------------------------------------------------------------------------------- digits
def test_digits_split_fixed_and_seed_only_subsamples():
    a = load_dataset("digits")
    b = load_dataset("digits", seed=123)
    assert a.x_train.shape == (1347, 8, 8, 1) and a.x_test.shape == (450, 8, 8, 1)
    assert a.source == "sklearn.datasets.load_digits" and a.num_classes == 10
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_allclose(a.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    assert 0.0 < a.mean[0] < 1.0  # statistics of pixels scaled by 1/16
    np.testing.assert_array_equal(np.bincount(a.y_test, minlength=10) >= 43, True)
    s1 = load_dataset("digits", num_train=100, num_test=50, seed=1)
    s1b = load_dataset("digits", num_train=100, num_test=50, seed=1)
    s2 = load_dataset("digits", num_train=100, num_test=50, seed=2)
    np.testing.assert_array_equal(s1.train_indices, s1b.train_indices)
    assert not np.array_equal(s1.train_indices, s2.train_indices)
    np.testing.assert_array_equal(s1.y_train, a.y_train[s1.train_indices])
    d2 = load_dataset("digits2")
    np.testing.assert_array_equal(d2.y_train, (a.y_train >= 5).astype(np.int32))


# ---------------------------------------------------------------------------------- errors
def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*cifar2"):
        load_dataset("imagenet")
    assert set(DATASET_NAMES) == {"digits", "digits2", "mnist", "mnist2", "cifar10", "cifar2"}


def test_missing_folder_names_files_and_how_to_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz") as info:
        load_dataset("cifar10", missing)
    message = str(info.value)
    assert str(missing) in message and DATA_ENV_VAR in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message


def test_missing_mnist_file_is_named(mnist, tmp_path):
    _, arrays = mnist
    _write_mnist(tmp_path, arrays, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing \\['t10k-labels-idx1-ubyte'\\]") as info:
        load_dataset("mnist", tmp_path)
    assert "yann.lecun.com" in str(info.value)


def test_incomplete_batches_folder_is_reported(cifar, tmp_path):
    _, batches = cifar
    folder = _write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="missing \\['test_batch'\\]"):
        load_dataset("cifar10", tmp_path)


def test_truncated_cifar_archive(cifar, tmp_path):
    root, _ = cifar
    blob = (root / "cifar-10-python.tar.gz").read_bytes()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt.*re-download") as info:
        load_dataset("cifar10", tmp_path)
    assert info.value.__cause__ is not None


def test_archive_missing_member_and_bad_pickle(cifar, tmp_path):
    _, batches = cifar
    (tmp_path / "a").mkdir()
    _write_cifar_archive(tmp_path / "a" / "cifar-10-python.tar.gz", batches, skip={"test_batch"})
    with pytest.raises(ValueError, match="members \\['test_batch'\\] not found"):
        load_dataset("cifar10", tmp_path / "a")
    folder = _write_cifar_folder(tmp_path / "b", batches)
    (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="data_batch_3: pickle failed"):
        load_dataset("cifar10", folder)
    # A pickle that would call os.system is refused, not executed.
    (folder / "data_batch_3").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(ValueError, match="not allowed"):
        load_dataset("cifar10", folder)
    _write_cifar_folder(folder, batches)
    bad = {**batches["data_batch_2"], b"data": np.zeros((20, 100), np.uint8)}
    (folder / "data_batch_2").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match="uint8 \\(n, 3072\\)"):
        load_dataset("cifar10", folder)


def test_corrupt_gzip_idx(mnist, tmp_path):
    _, arrays = mnist
    _write_mnist(tmp_path, arrays, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is truncated or corrupt"):
        load_dataset("mnist", tmp_path)
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_dataset("mnist", tmp_path)


def test_bad_idx_magic_size_and_count_mismatch(mnist, tmp_path):
    _, arrays = mnist
    _write_mnist(tmp_path, arrays, gz=False)
    labels_path = tmp_path / "train-labels-idx1-ubyte"
    labels_path.write_bytes(_idx_bytes(arrays["train-labels-idx1-ubyte"], 0x803))
    with pytest.raises(ValueError, match="bad idx magic 0x00000803, expected 0x00000801"):
        load_dataset("mnist", tmp_path)
    good = _idx_bytes(arrays["train-labels-idx1-ubyte"], 0x801)
    labels_path.write_bytes(good[:-3])
    with pytest.raises(ValueError, match="need .* bytes, file has"):
        load_dataset("mnist", tmp_path)
    labels_path.write_bytes(_idx_bytes(arrays["train-labels-idx1-ubyte"][:-1], 0x801))
    with pytest.raises(ValueError, match="59 labels but train-images-idx3-ubyte holds 60"):
        load_dataset("mnist", tmp_path)


def test_bad_subsample_requests(cifar):
    root, _ = cifar
    with pytest.raises(ValueError, match="num_train=500 is larger than the 100 rows"):
        load_dataset("cifar10", root, num_train=500)
    with pytest.raises(ValueError, match="num_test=21 is larger than the 20 rows"):
        load_dataset("cifar10", root, num_test=21)
    with pytest.raises(ValueError, match="num_train must be positive, got 0"):
        load_dataset("cifar10", root, num_train=0)
    with pytest.raises(TypeError, match="num_train must be a positive int"):
        load_dataset("cifar10", root, num_train=2.5)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        load_dataset("digits", seed=-1)


# ------------------------------------------------------------------------ root resolution
def test_env_var_root_is_honored(cifar, monkeypatch, tmp_path):
    root, _ = cifar
    monkeypatch.setenv(DATA_ENV_VAR, str(root))
    assert load_dataset("cifar10").num_train == 100
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="empty"):
        load_dataset("cifar10")
    # An explicit root wins over the environment variable.
    assert load_dataset("cifar10", root).num_train == 100


def test_default_root_used_without_env(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist")
    assert str(tmp_path / ".cache" / "raysweep" / "data") in str(info.value)
    with pytest.raises(TypeError, match="root must be a str"):
        load_dataset("mnist", root=3)


# ----------------------------------------------------------------------------- synthetic CIFAR


def test_cifar_like_folder_loads_as_cifar10_with_the_documented_split_and_statistics(tmp_path):
    from raysweep.data.cifar10 import read_cifar10
    from raysweep.data.synthetic import write_cifar_like

    out = write_cifar_like(tmp_path / "a", 120, seed=0)
    assert out == tmp_path / "a" / "cifar-10-batches-py"
    assert sorted(p.name for p in out.iterdir()) == sorted([*BATCH_FILES, "batches.meta"])
    ds = load_dataset("cifar10", tmp_path / "a")
    assert (ds.num_train, ds.num_test) == (100, 20)  # 5/6 train, as 50,000 of 60,000
    assert ds.x_train.shape == (100, 32, 32, 3) and ds.x_train.dtype == np.float32
    raw = read_cifar10(out)
    pixels = np.concatenate([raw.x_train, raw.x_test]).astype(np.float64)
    assert raw.x_train.dtype == np.uint8
    assert 100 <= pixels.mean() <= 140 and 40 <= pixels.std() <= 80
    labels = np.concatenate([raw.y_train, raw.y_test])
    assert np.bincount(labels, minlength=10).tolist() == [12] * 10  # balanced
    # smooth: neighbouring pixels correlate (white noise would give ~0)
    field = pixels - pixels.mean(axis=(1, 2, 3), keepdims=True)
    corr = np.mean(field[:, 1:] * field[:, :-1]) / np.mean(field**2)
    assert corr > 0.5
    # deterministic in the seed
    again = write_cifar_like(tmp_path / "b", 120, seed=0)
    other = write_cifar_like(tmp_path / "c", 120, seed=1)
    assert (again / "test_batch").read_bytes() == (out / "test_batch").read_bytes()
    assert (other / "test_batch").read_bytes() != (out / "test_batch").read_bytes()


def test_cifar_like_refuses_to_overwrite_and_bad_sizes(tmp_path, capsys):
    from raysweep.cli import main
    from raysweep.data.synthetic import write_cifar_like

    assert main(["make-cifar-like", str(tmp_path), "--num-images", "60"]) == 0
    assert "wrote 60 synthetic images" in capsys.readouterr().out
    assert main(["make-cifar-like", str(tmp_path), "--num-images", "60"]) == 2
    assert "exists already; pass force=True (--force)" in capsys.readouterr().err
    assert main(["make-cifar-like", str(tmp_path), "--num-images", "72", "--force"]) == 0
    assert load_dataset("cifar10", tmp_path).num_train == 60
    with pytest.raises(ValueError, match="num_images must be an integer >= 12"):
        write_cifar_like(tmp_path / "x", 11)


def test_cifar_like_ntk_spectrum_decays_unlike_white_noise(tmp_path):
    """The paper's MLP on 200 synthetic images: eigenvalues 1-10 of its NTK Gram hold at
    least twice the share of the spectrum below the top one that they hold on white noise of
    the same shape (measured: about 0.25 against 0.08 for seeds 0-3)."""
    from raysweep.data.synthetic import write_cifar_like
    from raysweep.models import get_model, init_variables, make_apply_fn
    from raysweep.ntk import ntk_gram

    write_cifar_like(tmp_path, 240, seed=0)
    x = load_dataset("cifar10", tmp_path).x_train[:200]
    noise = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    module = get_model("mlp")
    variables = init_variables(module, (32, 32, 3), seed=0)
    apply_fn = make_apply_fn(module, variables)

    def share(images):
        gram = np.asarray(ntk_gram(apply_fn, variables["params"], images, batch_size=100))
        vals = np.linalg.eigvalsh(gram.astype(np.float64))[::-1]
        return vals[1:11].sum() / vals[1:].sum()

    assert share(x) >= 2 * share(noise)
