"""Bad inputs, one table: each is refused with one line, before any work, changing nothing.

Every case runs what a user runs — the main job (``sweeps/eigen_sweep.py``'s ``main``, loaded
in-process as tests/test_sweep.py does), the ``raysweep`` command, or for what no command line
can express (a model with two outputs, NaN in the inputs) the public Python API — and checks:

- exactly one line on stderr (``error: ...``, nothing on stdout) matching what is wrong and what
  to do, or for the API one ``ValueError`` whose message is one line;
- exit status 2;
- no work started: Ray is never started or joined, no results-folder lease is taken (both are
  replaced by functions that fail the test), and the case takes seconds (timed);
- nothing already written changed: every file under the case's folder (an earlier run's
  results, the data files) keeps its bytes and mtime, and no file or folder appears.

Data files are built tiny in their real formats: the CIFAR-10 python archive
(``cifar-10-python.tar.gz``: pickled batch dicts in a gzipped tar) and its extracted folder,
and MNIST idx files (big-endian header, uint8 payload), plain or gzipped.

Read-only folders: root ignores permission bits, and the tests run as root here. A folder is
made read-only with ``chmod a-w`` and, when that does not bind (root), with the immutable
attribute (``chattr +i``), which binds root too; each is verified by trying to create a file.
Where neither works (root on a file system without ``chattr``), those cases are skipped and
say why.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import re
import shutil
import struct
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray

from raysweep.cli import main as cli_main
from raysweep.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
MAX_SECONDS = 10.0  # per case, on a loaded 2-core machine; most take well under a second

# ----------------------------------------------------------------------------- data files

CIFAR_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def cifar_batch(seed: int, rows: int = 20) -> dict[bytes, object]:
    """One batch in the official format: b'data' uint8 (n, 3072), b'labels' a list of ints."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"batch",
        b"labels": [int(v) for v in rng.permutation(np.arange(rows) % 10)],
        b"data": rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8),
    }


def cifar_blobs(**replace: bytes) -> dict[str, bytes]:
    blobs = {name: pickle.dumps(cifar_batch(i), protocol=2) for i, name in enumerate(CIFAR_BATCHES)}
    blobs.update(replace)
    return blobs


def write_cifar_archive(folder: Path, blobs: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / CIFAR_ARCHIVE, "w:gz") as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return folder


def write_cifar_folder(folder: Path, blobs: dict[str, bytes]) -> Path:
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    for name, blob in blobs.items():
        (batches / name).write_bytes(blob)
    return folder


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_blobs(**replace: bytes) -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    blobs = {}
    for split, n in (("train", 30), ("test", 20)):
        blobs[f"{split}_images"] = idx_bytes(rng.integers(0, 256, (n, 28, 28)), 0x803)
        blobs[f"{split}_labels"] = idx_bytes(np.arange(n) % 10, 0x801)
    blobs.update(replace)
    return blobs


def write_mnist(folder: Path, blobs: dict[str, bytes], *, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, blob in blobs.items():
        name = MNIST_NAMES[key]
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return folder


def test_the_data_builders_make_valid_files(tmp_path):
    """The control: without their defect, the files the cases damage load fine."""
    ds = load_dataset("cifar10", write_cifar_archive(tmp_path / "a", cifar_blobs()))
    assert (ds.num_train, ds.num_test, ds.input_shape) == (100, 20, (32, 32, 3))
    assert load_dataset("cifar10", write_cifar_folder(tmp_path / "f", cifar_blobs())).num_test == 20
    ds = load_dataset("mnist", write_mnist(tmp_path / "m", mnist_blobs(), gz=True))
    assert (ds.num_train, ds.num_test, ds.input_shape) == (30, 20, (28, 28, 1))
    assert load_dataset("mnist", write_mnist(tmp_path / "p", mnist_blobs())).num_train == 30


# ----------------------------------------------------------------------------- read-only


def _can_create_file(folder: Path) -> bool:
    probe = folder / ".can-i-write"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


def make_read_only(folder: Path, finalize: Callable[[Callable[[], None]], None]) -> None:
    """Make ``folder`` and its subfolders read-only for this process, even as root; or skip."""
    dirs = [folder, *(p for p in folder.rglob("*") if p.is_dir())]

    def restore():
        if shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
        for d in dirs:
            d.chmod(0o755)

    finalize(restore)
    for d in dirs:
        d.chmod(0o555)
    if not _can_create_file(folder):
        return
    # Root ignores the mode bits; the immutable attribute binds root (ext4, xfs, btrfs).
    if shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
        if not _can_create_file(folder):
            return
    pytest.skip(
        f"cannot make a folder read-only for uid {os.getuid()}: mode bits do not bind root and "
        "chattr +i is unavailable on this file system"
    )


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Ctx:
    """What a case's ``make`` gets: the case's folder and a way to undo what it set up."""

    root: Path
    finalize: Callable[[Callable[[], None]], None]

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def data(self) -> Path:
        return self.root / "data"


@dataclass(frozen=True)
class Case:
    """``kind``: "job" (main job argv), "cli" (raysweep argv) or "api" (a call that raises).

    ``make(ctx)`` builds the inputs and returns the argv, or the call for "api". For "job",
    ``--out <results>`` is appended unless the argv has ``--out`` or ``out=False``.
    """

    id: str
    kind: str
    make: Callable[[Ctx], object]
    match: str
    out: bool = True


def job(*argv: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: list(argv)


def with_data(preset: str, build: Callable[[Path], object], *extra: str):
    """Main job on ``preset`` with ``--data-dir`` a folder that ``build(folder)`` fills."""

    def make(ctx: Ctx) -> list[str]:
        ctx.data.mkdir()
        build(ctx.data)
        return ["--preset", preset, "--data-dir", str(ctx.data), *extra]

    return make


def truncated(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


def api_call(
    name: str, *, outputs: int | tuple[int, ...], nan: bool
) -> Callable[[Ctx], Callable[[], object]]:
    """``name`` (compute_gram, ntk_gram or alignment) on a linear model with ``outputs``
    logits (a tuple: outputs of that shape per example), with one NaN pixel if asked."""
    shape = (outputs,) if isinstance(outputs, int) else tuple(outputs)

    def linear_fn(params, x):
        return (x.reshape(x.shape[0], -1) @ params["w"]).reshape(x.shape[0], *shape)

    def make(ctx: Ctx):
        x = np.random.default_rng(0).normal(size=(12, 4, 4, 1)).astype(np.float32)
        if nan:
            x[5, 1, 2, 0] = np.nan
        params = {"w": np.ones((16, int(np.prod(shape))), np.float32)}
        if name == "compute_gram":  # the eigen step's Gram: (n, C) logits, traced
            from raysweep.distributed import compute_gram

            store = ctx.results / "gram_api"
            return lambda: compute_gram(linear_fn, params, x, store_dir=store, progress=False)
        if name == "alignment":  # defined for one logit per example
            from raysweep.ntk import alignment

            return lambda: alignment(linear_fn, params, x, np.ones(len(x), np.float32))
        from raysweep.ntk import ntk_gram

        return lambda: ntk_gram(linear_fn, params, x)

    return make


def read_only_results(*argv: str) -> Callable[[Ctx], list[str]]:
    """``argv`` with ``{results}`` filled in, run on a read-only results folder."""

    def make(ctx: Ctx) -> list[str]:
        make_read_only(ctx.results, ctx.finalize)
        return [arg.format(results=ctx.results) for arg in argv]

    return make


HELP = r"python sweeps/eigen_sweep.py --help for the options\.$"
DATA_HINT = "Nothing is downloaded automatically; get the official files from"
CIFAR_CORRUPT = r"CIFAR-10 (archive|batches folder) .* is truncated or corrupt \(.*: delete "
MNIST_CORRUPT = r"MNIST file .*{name} is truncated or corrupt \(.*\): delete it and re-download"

CASES = [
    # --- the command line
    Case("cli-unknown-preset", "job", job("--preset", "imagenet"),
         r"invalid choice: 'imagenet' \(choose from 'cifar10'.*see " + HELP),
    Case("cli-bad-int", "job", job("--num-workers", "two"),
         r"argument --num-workers: invalid int value: 'two'; see " + HELP),
    Case("cli-unknown-flag", "job", job("--epochs", "3"),
         r"unrecognized arguments: --epochs; see " + HELP),
    Case("cli-zero-workers", "job", job("--num-workers", "0"),
         r"ntk.num_workers must be a positive integer or None, got 0"),
    Case("cli-zero-cpus", "job", job("--cpus-per-trial", "0"),
         r"sweep.cpus_per_trial must be > 0, got 0.0"),
    Case("cli-empty-data-dir-flag", "job", job("--data-dir", ""),
         r"--data-dir is empty; give the folder holding the dataset files"),
    Case("cli-out-uri", "job", job("--out", "s3://bucket/run"),
         r"is a s3:// URI.*use storage every node mounts"),
    Case("cli-out-empty", "job", job("--out", ""),
         r"results folder is empty; give a folder"),
    # --- the config
    Case("cfg-no-equals", "job", job("train.epochs"),
         r"Override 'train.epochs' must look like section.field=value"),
    Case("cfg-unknown-section", "job", job("optim.lr=0.1"),
         r"Unknown config section 'optim'.*choose one of data, model"),
    Case("cfg-unknown-field", "job", job("train.epoch=3"),
         r"Unknown field 'epoch' in section 'train'; fields are .*epochs"),
    Case("cfg-wrong-type", "job", job("train.epochs=three"),
         r"Override train.epochs='three': expected a value of type int"),
    Case("cfg-unknown-optimizer", "job", job("sweep.optimizers=sgd,rmsprop"),
         r"'rmsprop' is not supported; choose one of sgd, adam"),
    Case("cfg-index-beyond-k", "job", job("sweep.eigen_indices=0,200"),
         r"eigen_indices \[200\] are >= ntk.num_eigen=128.*raise ntk.num_eigen or drop"),
    Case("cfg-duplicate-index", "job", job("sweep.eigen_indices=1,1"),
         r"duplicates: \(1, 1\); list each index once"),
    Case("cfg-negative-lr", "job", job("train.learning_rate=-0.1"),
         r"train.learning_rate must be a positive number, got -0.1"),
    Case("cfg-momentum-one", "job", job("train.momentum=1"),
         r"train.momentum must be in \[0, 1\), got 1"),
    Case("cfg-num-train-one", "job", job("data.num_train=1"),
         r"data.num_train=1 is too small: a split needs at least 10 rows, one per original "
         r"class.*give data.num_train=10 or more"),
    Case("cfg-num-test-zero", "job", job("data.num_test=0"),
         r"data.num_test must be a positive integer or None, got 0"),
    Case("cfg-unknown-dataset", "job", job("data.name=imagenet"),
         r"data.name='imagenet' is not supported; choose one of digits"),
    Case("cfg-unknown-model", "job", job("model.name=vgg16"),
         r"model.name='vgg16' is not supported; choose one of mlp, lenet5, resnet18"),
    Case("cfg-ten-logit-model", "job", job('model.options={"outputs": 10}'),
         r"model 'mlp' gave \(2, 10\) outputs.*expected one finite logit per example.*"
         r"'outputs' gives several logits for the NTK library.*the sweep trains one logit"),
    Case("cfg-storage-uri", "job", job("sweep.storage_path=s3://bucket"),
         r"s3:// URI", out=False),
    Case("cfg-num-train-above-split", "job", job("data.num_train=5000"),
         r"num_train=5000 is larger than the 1347 rows available.*pass at most 1347"),
    Case("cfg-k-not-below-n", "job",
         job("data.num_train=20", "data.num_test=10", "ntk.num_eigen=40", "sweep.eigen_indices=0"),
         r"ntk.num_eigen=40 must be smaller than the number of samples N=30 \(20 train \+ 10 "
         r"test\); lower ntk.num_eigen below 30"),
    # --- the results folder
    Case("out-read-only", "job", read_only_results(),
         r"results folder .*results cannot be written: cannot create files in .*results "
         r"\(.*\)\. Choose a folder you can write to"),
    Case("out-is-a-file", "job", lambda ctx: ["--out", str(ctx.results / "config.json")],
         r"results folder .*config.json cannot be written: .*config.json is a file, not a folder"),
    Case("out-below-a-file", "job", lambda ctx: ["--out", str(ctx.results / "config.json/run")],
         r"cannot be written: .*config.json is a file, not a folder"),
    # --- the data folder
    Case("data-dir-missing-digits", "job", lambda ctx: ["--data-dir", str(ctx.root / "nope")],
         r"data folder .*nope does not exist \(or is not a folder\); digits is bundled .*drop "
         r"--data-dir"),
    Case("data-root-missing-digits", "job", lambda ctx: [f"data.root={ctx.root / 'nope'}"],
         r"data folder .*nope does not exist"),
    Case("data-dir-missing-mnist", "job",
         lambda ctx: ["--preset", "mnist", "--data-dir", str(ctx.root / "nope")],
         r"MNIST files not found\. .*nope \(missing\).*Set the data folder with --data-dir PATH.*"
         + DATA_HINT),
    Case("data-dir-empty-cifar10", "job", with_data("cifar10", lambda d: None),
         r"CIFAR-10 files not found\. Expected: cifar-10-python.tar.gz.*" + DATA_HINT),
    # --- CIFAR-10 files
    Case("cifar-archive-empty", "job",
         with_data("cifar10", lambda d: (d / CIFAR_ARCHIVE).write_bytes(b"")),
         r"cifar-10-python.tar.gz is truncated or corrupt \(not a gzipped tar archive: "
         r"ReadError\('empty file'\)\): delete it and re-download"),
    Case("cifar-archive-truncated", "job",
         with_data("cifar10", lambda d: (d / CIFAR_ARCHIVE).write_bytes(
             truncated((write_cifar_archive(d / "x", cifar_blobs()) / CIFAR_ARCHIVE).read_bytes())
         )),
         CIFAR_CORRUPT + r"it and re-download cifar-10-python.tar.gz from https://"),
    Case("cifar-archive-not-a-tar", "job",
         with_data("cifar2", lambda d: (d / CIFAR_ARCHIVE).write_bytes(gzip.compress(b"hello"))),
         r"\(not a gzipped tar archive: ReadError\('truncated header'\)\): delete it"),
    Case("cifar-archive-is-text", "job",
         with_data("cifar10", lambda d: (d / CIFAR_ARCHIVE).write_text("<html>404</html>\n")),
         r"\(not a gzipped tar archive: ReadError\('not a gzip file'\)\): delete it"),
    Case("cifar-archive-missing-member", "job",
         with_data("cifar10", lambda d: write_cifar_archive(
             d, {k: v for k, v in cifar_blobs().items() if k != "test_batch"})),
         r"members \['test_batch'\] not found in the archive\): delete it and re-download"),
    Case("cifar-batch-empty", "job",
         with_data("cifar10", lambda d: write_cifar_folder(d, cifar_blobs(data_batch_2=b""))),
         r"data_batch_2: pickle failed: EOFError.*re-extract cifar-10-python.tar.gz"),
    Case("cifar-batch-truncated", "job",
         with_data("cifar10", lambda d: write_cifar_folder(
             d, cifar_blobs(test_batch=truncated(pickle.dumps(cifar_batch(9), protocol=2))))),
         r"test_batch: pickle failed.*re-extract"),
    Case("cifar-batch-wrong-format", "job",
         with_data("cifar10", lambda d: write_cifar_folder(d, cifar_blobs(
             data_batch_3=pickle.dumps({b"data": np.zeros((20, 1024)), b"labels": [0] * 20})))),
         r"data_batch_3: b'data' must be uint8 \(n, 3072\), got float64 \(20, 1024\)"),
    Case("cifar-batch-not-a-dict", "job",
         with_data("cifar10", lambda d: write_cifar_folder(
             d, cifar_blobs(data_batch_1=pickle.dumps([1, 2, 3])))),
         r"data_batch_1: expected a dict with b'data' and b'labels', got list"),
    Case("cifar-batches-incomplete", "job",
         with_data("cifar10", lambda d: (write_cifar_folder(d, cifar_blobs()),
                                         (d / "cifar-10-batches-py" / "test_batch").unlink())),
         r"Incomplete batches folder .*missing \['test_batch'\]\..*" + DATA_HINT),
    # --- MNIST idx files
    Case("mnist-empty-file", "job",
         with_data("mnist", lambda d: write_mnist(d, mnist_blobs(train_images=b""))),
         MNIST_CORRUPT.format(name="train-images-idx3-ubyte")),
    Case("mnist-truncated", "job",
         with_data("mnist", lambda d: write_mnist(
             d, mnist_blobs(test_images=truncated(mnist_blobs()["test_images"])))),
         r"t10k-images-idx3-ubyte is truncated or corrupt \(header dims \(20, 28, 28\) need "
         r"15696 bytes, file has 7848\)"),
    Case("mnist-wrong-magic", "job",
         with_data("mnist", lambda d: write_mnist(
             d, mnist_blobs(train_labels=idx_bytes(np.zeros((30, 28, 28)), 0x803)))),
         r"bad idx magic 0x00000803, expected 0x00000801\): delete it and re-download"),
    Case("mnist-gzip-truncated", "job",
         with_data("mnist", lambda d: (write_mnist(d, mnist_blobs(), gz=True), (
             d / "train-labels-idx1-ubyte.gz").write_bytes(
             truncated((d / "train-labels-idx1-ubyte.gz").read_bytes()))), "data.name=mnist2"),
         MNIST_CORRUPT.format(name="train-labels-idx1-ubyte.gz")),
    Case("mnist-wrong-image-size", "job",
         with_data("mnist", lambda d: write_mnist(
             d, mnist_blobs(train_images=idx_bytes(np.zeros((30, 32, 32)), 0x803)))),
         r"images are 32x32, expected 28x28\): delete it and re-download"),
    Case("mnist-count-mismatch", "job",
         with_data("mnist", lambda d: write_mnist(
             d, mnist_blobs(test_labels=idx_bytes(np.arange(19) % 10, 0x801)))),
         r"19 labels but t10k-images-idx3-ubyte holds 20 images"),
    # --- the Python API: what no command line expresses
    Case("api-grid-outputs-compute-gram", "api",
         api_call("compute_gram", outputs=(2, 2), nan=False),
         r"apply_fn must return logits of shape \(n, C\): C = 1 for the NTK Gram, C > 1 for "
         r"the traced kernel .*returned \(1, 2, 2\)\. For other output shapes or kernel "
         r"layouts use raysweep\.ntk\.empirical_ntk_fn"),
    Case("api-two-outputs-alignment", "api", api_call("alignment", outputs=2, nan=False),
         r"apply_fn must return one logit per example.*returned \(1, 2\)"),
    Case("api-nan-ntk-gram", "api", api_call("ntk_gram", outputs=1, nan=True),
         r"x1 contains NaN or inf in 1 of 12 examples \(first: example 5\).*drop or repair"),
    Case("api-nan-compute-gram", "api", api_call("compute_gram", outputs=1, nan=True),
         r"x1 contains NaN or inf in 1 of 12 examples"),
    # --- the raysweep command
    Case("cli-report-read-only", "cli", read_only_results("report", "{results}"),
         r"the report cannot be written to .*results/report: cannot create files in .*results "
         r"\(.*\)\. Write it elsewhere: raysweep report .* --out DIR"),
    Case("cli-report-out-is-a-file", "cli",
         lambda ctx: ["report", str(ctx.results), "--out", str(ctx.results / "config.json")],
         r"the report cannot be written to .*config.json: .*is a file, not a folder"),
    Case("cli-report-missing", "cli", lambda ctx: ["report", str(ctx.root / "nope")],
         r"results directory .*nope does not exist.*pass the folder printed by the main job"),
    Case("cli-status-missing", "cli", lambda ctx: ["status", str(ctx.root / "nope")],
         r"nope is not a directory; pass the sweep folder"),
    Case("cli-unknown-command", "cli", lambda ctx: ["summarize", str(ctx.results)],
         r"invalid choice: 'summarize' \(choose from 'status', 'report', .*\); see raysweep"),
]  # fmt: skip


def test_the_table_is_large_and_covers_every_kind():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == {"job", "cli", "api"}


# ----------------------------------------------------------------------------- the checks


@pytest.fixture(scope="module")
def eigen_sweep():
    """The main job's module, and everything it imports, loaded before any case is timed."""
    import sklearn.datasets  # noqa: F401 - digits: sklearn's first import takes seconds

    import raysweep.distributed.cluster  # noqa: F401
    import raysweep.report  # noqa: F401

    spec = importlib.util.spec_from_file_location("eigen_sweep", REPO / "sweeps/eigen_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_work(monkeypatch):
    """Starting or joining Ray, or taking the results folder's lease, fails the test."""
    import raysweep.distributed
    import raysweep.distributed.cluster
    import raysweep.distributed.compute
    import raysweep.lease

    def forbidden(name):
        def call(*args, **kwargs):
            raise AssertionError(f"work started on bad input: {name} was called")

        return call

    for module, name in (
        (raysweep.distributed.cluster, "connect_or_start"),
        (raysweep.distributed.cluster, "ensure_ray"),
        (raysweep.distributed, "ensure_ray"),
        (raysweep.distributed.compute, "ensure_ray"),
        (raysweep.lease, "hold_results_dir"),
    ):
        monkeypatch.setattr(module, name, forbidden(f"{module.__name__}.{name}"))


def earlier_run(results: Path) -> None:
    """Files an earlier run left in the results folder: they must not change."""
    (results / "metrics").mkdir(parents=True)
    (results / "gram").mkdir()
    (results / "config.json").write_text('{"preset": "smoke"}\n')
    (results / "sweep_plan.json").write_text('{"trials": []}\n')
    (results / "metrics" / "part-0.parquet").write_bytes(os.urandom(256))
    (results / "gram" / "manifest.json").write_text('{"n": 30}\n')


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: folders by name, files by size, mtime and SHA-256."""
    entries = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            entries[rel] = ("dir",)
        else:
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries[rel] = ("file", stat.st_size, stat.st_mtime_ns, digest)
    return entries


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, eigen_sweep, no_work, tmp_path, monkeypatch, capsys, request):
    monkeypatch.chdir(tmp_path)  # a default results folder would land here
    ctx = Ctx(tmp_path, request.addfinalizer)
    earlier_run(ctx.results)
    # make() builds the inputs (data files, read-only flags); the snapshot and the clock
    # start once they are in place
    made = case.make(ctx)
    before = snapshot(tmp_path)
    start = time.perf_counter()
    if case.kind == "api":
        with pytest.raises(ValueError) as info:
            made()
        code, err, out = 2, f"error: {info.value}\n", ""
    else:
        argv = list(made)
        if case.kind == "job" and case.out and "--out" not in argv:
            argv += ["--out", str(ctx.results)]
        if case.kind == "job" and "--preset" not in argv:
            argv = ["--preset", "smoke", *argv]  # the one-model preset the cases are written for
        fn = eigen_sweep.main if case.kind == "job" else cli_main
        try:
            code = fn(argv)
        except SystemExit as exc:  # argparse exits
            code = exc.code
        captured = capsys.readouterr()
        err, out = captured.err, captured.out
    elapsed = time.perf_counter() - start

    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(case.match, lines[0]), f"{case.match!r} not in:\n{lines[0]}"
    assert out == ""
    assert code == 2
    assert not ray.is_initialized()
    assert elapsed < MAX_SECONDS, f"{elapsed:.1f} s: the check runs too late"
    assert snapshot(tmp_path) == before, "a bad input changed what was already written"
