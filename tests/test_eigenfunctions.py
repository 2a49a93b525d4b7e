"""raysweep.eigenfunctions: artifact checksums, damaged artifacts, and their recomputation.

One tiny eigenfunction step (Ray, 1 Gram worker, 60 + 30 digits, 2x2 tiles of 48, 6 eigenpairs)
is shared by the module; each test damages its own copy of the results folder.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest

from raysweep.config import Config, DataConfig, ModelConfig, NTKConfig, SweepConfig
from raysweep.eigenfunctions import (
    ARTIFACT_FILES,
    DamagedArtifactError,
    compute_eigenfunctions,
    load_artifact,
)

CONFIG = Config(
    data=DataConfig(name="digits", num_train=60, num_test=30),
    model=ModelConfig(name="mlp", seed=0),
    ntk=NTKConfig(num_eigen=6, tile_size=48, num_workers=1),
    sweep=SweepConfig(eigen_indices=(0, 2)),
)
ARRAYS = ("eigvals", "eigvecs", "residuals", "binarization")


@pytest.fixture(scope="module")
def results(tmp_path_factory, ray_cluster):
    """A results folder (``gram/`` tile store, ``eigenfunctions/`` artifact) and its artifact."""
    out = tmp_path_factory.mktemp("eigen") / "results"
    artifact = compute_eigenfunctions(CONFIG, out, progress=False, log=lambda *_: None)
    return out, artifact


@pytest.fixture
def copy(results, tmp_path):
    """A private copy of the results folder (file times kept) for one test to damage."""
    out = tmp_path / "results"
    shutil.copytree(results[0], out)
    return out


def test_artifact_records_a_checksum_for_every_file(results):
    out, artifact = results
    table = json.loads((out / "eigenfunctions" / "checksums.json").read_text())
    assert table["algorithm"] == "crc32" and sorted(table["files"]) == sorted(ARTIFACT_FILES)
    for name, entry in table["files"].items():
        assert entry["bytes"] == (out / "eigenfunctions" / name).stat().st_size
        assert re.fullmatch(r"[0-9a-f]{8}", entry["crc32"])
    assert artifact.eigvecs.shape == (6, 90) and artifact.eigvecs.dtype == np.float32


def test_truncated_or_changed_files_are_named(results, copy):
    path = copy / "eigenfunctions"
    eigvecs = path / "eigvecs.npy"
    size = eigvecs.stat().st_size
    eigvecs.write_bytes(eigvecs.read_bytes()[:-7])
    with pytest.raises(DamagedArtifactError, match=r"eigvecs\.npy is truncated") as info:
        load_artifact(path)
    err = info.value
    assert (err.path, err.file) == (path, "eigvecs.npy")
    assert f"({size - 7} bytes; {size} when written)" in str(err)
    assert str(path) in str(err) and "recomputes it from the Gram tiles" in str(err)
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))  # survives a trip through Ray
    assert type(again) is DamagedArtifactError and str(again) == str(err)

    shutil.copy(results[0] / "eigenfunctions" / "eigvecs.npy", eigvecs)  # repaired
    load_artifact(path)
    eigvals = path / "eigvals.npy"
    data = bytearray(eigvals.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    eigvals.write_bytes(bytes(data))
    with pytest.raises(DamagedArtifactError, match=r"eigvals\.npy does not match its checksum"):
        load_artifact(path)
    (path / "eigvals.npy").unlink()
    with pytest.raises(DamagedArtifactError, match=r"eigvals\.npy is missing \(listed in"):
        load_artifact(path)
    (path / "checksums.json").write_text('{"algorithm": "crc32", "files": {')
    with pytest.raises(DamagedArtifactError, match=r"checksums\.json is unreadable"):
        load_artifact(path)


def test_artifact_without_checksums_still_loads(results, copy):
    """Artifacts written before checksums were kept: accepted, unverified."""
    _, artifact = results
    path = copy / "eigenfunctions"
    (path / "checksums.json").unlink()
    old = load_artifact(path)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(old, name), getattr(artifact, name))
    assert old.config == artifact.config and old.manifest == artifact.manifest
    # Unverified, yet a file that no longer parses is still named.
    (path / "eigvecs.npy").write_bytes((path / "eigvecs.npy").read_bytes()[:-7])
    with pytest.raises(DamagedArtifactError, match=r"eigvecs\.npy cannot be parsed"):
        load_artifact(path)


def test_damaged_artifact_is_moved_aside_and_recomputed_from_the_tiles(results, copy):
    _, artifact = results
    target = copy / "eigenfunctions"
    eigvecs = target / "eigvecs.npy"
    damaged_bytes = eigvecs.read_bytes()[:-7]
    eigvecs.write_bytes(damaged_bytes)
    tiles = sorted((copy / "gram" / "tiles").iterdir())
    times = [os.stat(p).st_mtime_ns for p in tiles]
    lines = []

    again = compute_eigenfunctions(CONFIG, copy, progress=False, log=lines.append)

    damaged = [line for line in lines if "is damaged" in line]
    assert (
        len(damaged) == 1
        and f"the artifact {target} is damaged (eigvecs.npy is truncated" in (damaged[0])
    )
    aside = [p for p in copy.iterdir() if p.name.startswith("eigenfunctions.damaged-")]
    assert len(aside) == 1 and f"moved it to {aside[0]}" in damaged[0]
    assert (aside[0] / "eigvecs.npy").read_bytes() == damaged_bytes  # kept, not deleted
    for name in ARRAYS:  # recomputed from the same tiles: bit for bit
        np.testing.assert_array_equal(getattr(again, name), getattr(artifact, name))
        assert getattr(again, name).dtype == getattr(artifact, name).dtype
    assert load_artifact(target).eigvecs.tobytes() == artifact.eigvecs.tobytes()
    # The Gram was reused from its verified tiles: none was rewritten, none was named damaged.
    assert sorted((copy / "gram" / "tiles").iterdir()) == tiles
    assert [os.stat(p).st_mtime_ns for p in tiles] == times
    assert not any(line.startswith("[gram] tile") for line in lines)


def test_gram_memory_counts_the_stored_triangle():
    from raysweep.eigenfunctions import gram_memory

    for n, tile in ((90, 48), (70, 16), (64, 16), (5, 8)):
        sides = [min(tile, n - start) for start in range(0, n, tile)]
        entries = sum(a * b for i, a in enumerate(sides) for b in sides[i:])
        mem = gram_memory(n, 4, tile_size=tile)
        assert mem["tiles"] == mem["tiles_on_disk"] == 4 * entries
        assert gram_memory(n, 4, tile_size=tile, dtype="float64")["tiles"] == 8 * entries
        assert gram_memory(n, 4, tile_size=tile, keep_resident=False)["tiles"] == 0
    # the eigensolver: 2 · max_basis (4k) + k + 2 (k + guard) columns of N float32
    expected = (2 * 4000 + 1000 + 2 * 1250) * 60_000 * 4
    assert gram_memory(60_000, 1000, tile_size=2048)["eigensolver"] == expected


def test_an_eigen_step_that_cannot_fit_is_refused_before_any_work(monkeypatch, tmp_path):
    import dataclasses

    import raysweep.eigenfunctions as ef

    big = CONFIG
    ef.load_checked_dataset(big)  # fits
    monkeypatch.setattr(ef, "available_memory_bytes", lambda: 2**30)
    with pytest.raises(MemoryError, match=r"ntk\.keep_resident=false") as info:
        ef.load_checked_dataset(big)
    assert "N=90, k=6" in str(info.value) and "1.0 GiB is available" in str(info.value)
    streamed = dataclasses.replace(big, ntk=dataclasses.replace(big.ntk, keep_resident=False))
    with pytest.raises(MemoryError, match="run on a cluster") as info:
        ef.load_checked_dataset(streamed)
    assert "keep_resident=false" not in str(info.value)
    with pytest.raises(MemoryError):  # the eigen step itself checks before it starts Ray
        ef.compute_eigenfunctions(big, tmp_path / "out", progress=False, log=lambda *_: None)
    assert not (tmp_path / "out" / "gram").exists()
