"""The scripts of ``sweeps/`` and what they share: parser, smoke config, NAD config and grid.

- every script: ``--help`` shows the shared flags; ``--smoke-test`` is
  :func:`raysweep.config.smoke_config` of its default preset (one shrink for all);
- the NAD config (``Config.nad``, presets, round trip, index bound nad.k) and grid (NAD axes
  act only on the NAD experiment, NAD packs hold one index), and ``pack_data`` of a NAD payload;
- Ray lives only in ``raysweep.distributed`` and ``raysweep.sweep`` (source and imports);
- :mod:`raysweep.argcheck`;
- the NAD study from Python equals ``sweeps/nad_sweep.py`` (one tiny sweep each, on the
  module's Ray cluster), and a resumed study reuses the NADs and trains nothing.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib.util
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import F32_EPS, assert_close_f32

from raysweep.argcheck import ArgumentTypeError, check_int, check_positive_int
from raysweep.config import (
    NAD_DATA,
    Config,
    NADConfig,
    apply_overrides,
    config_from_dict,
    get_preset,
    load_config,
    resolve_paths,
    save_config,
    smoke_config,
)
from raysweep.script import SHARED_FLAGS, tune_overrides
from raysweep.store.schema import IDENTITY_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (REPO / "sweeps").glob("*.py"))
DEFAULT_PRESET = {"nad_sweep": "nad", "eigen_sweep": "digits"}  # the others start from "smoke"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- --help


def test_there_are_scripts():
    assert {"eigen_sweep", "nad_sweep", "nnx_example"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_the_shared_flags(name):
    proc = subprocess.run(
        [sys.executable, f"sweeps/{name}.py", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    missing = [
        flag
        for flag in SHARED_FLAGS
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", proc.stdout)
    ]
    assert not missing, f"sweeps/{name}.py --help lacks {missing}:\n{proc.stdout}"


# ----------------------------------------------------------------------------- --smoke-test


def captured_config(name: str, argv: list[str], monkeypatch, tmp_path) -> Config:
    """The config ``sweeps/<name>.py argv`` would run with: its ``run_script`` replaced by one
    that resolves the config (``raysweep.script.build_config``) and runs nothing."""
    from raysweep.script import build_config

    seen = []

    def fake_run_script(args, script, study, *, extra_overrides=(), **kwargs):
        seen.append(build_config(args, extra_overrides))
        return 0

    if name == "nnx_example":  # it runs the main job, imported as `eigen_sweep`
        job = load_script("eigen_sweep")
        monkeypatch.setattr(job, "run_script", fake_run_script)
        monkeypatch.setitem(sys.modules, "eigen_sweep", job)
        monkeypatch.setattr(sys, "path", list(sys.path))  # it prepends sweeps/
        module = load_script(name)
        argv = [*argv, "--out", str(tmp_path / "nnx")]
    else:
        module = load_script(name)
        monkeypatch.setattr(module, "run_script", fake_run_script)
    assert module.main(argv) == 0
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("name", SCRIPTS)
def test_smoke_test_is_smoke_config_of_the_default_preset(name, monkeypatch, tmp_path):
    config = captured_config(name, ["--smoke-test"], monkeypatch, tmp_path)
    expected = smoke_config(get_preset(DEFAULT_PRESET.get(name, "smoke")))
    if name == "nnx_example":  # its own model and data on top of the main job's smoke config
        data = (tmp_path / "nnx").resolve() / "data" / "digits.npz"
        expected = apply_overrides(
            expected,
            [
                "model.name=nnx_example:SmallCNN",
                f"data.name=npz:{data}",
                "sweep.name=nnx_example",
                'model.options={"features": 8}',
            ],
        )
    assert config == resolve_paths(expected)


def test_smoke_test_then_flags_then_overrides(monkeypatch, tmp_path):
    """The shrink first, then the script's flags, then the command line's overrides."""
    argv = ["--smoke-test", "--gpus-per-trial", "0.5", "train.epochs=3", "sweep.pack_size=2"]
    config = captured_config("eigen_sweep", argv, monkeypatch, tmp_path)
    expected = apply_overrides(
        smoke_config(get_preset("digits")),
        ["sweep.gpus_per_trial=0.5", "train.epochs=3", "sweep.pack_size=2"],
    )
    assert config == expected
    assert config.train.epochs == 3 and config.sweep.pack_size == 2


def test_eigen_sweep_build_config_is_smoke_config():
    job = load_script("eigen_sweep")
    assert job.build_config(job.parse_args(["--smoke-test"])) == smoke_config(get_preset("digits"))
    assert job.build_config(job.parse_args([])) == get_preset("digits")
    smoke = job.build_config(job.parse_args(["--preset", "smoke", "--smoke-test"]))
    assert smoke == smoke_config(get_preset("smoke"))


def test_nad_sweep_smoke_test_and_paper_through_the_shared_build_config():
    from raysweep.script import build_config

    job = load_script("nad_sweep")

    def config_of(argv):
        args = job.parse_args(argv)
        return build_config(args, tune_overrides(args))

    smoke = config_of(["--smoke-test"])
    assert smoke == smoke_config(get_preset("nad"))
    assert smoke.is_nad and smoke != get_preset("nad")
    assert (smoke.nad.k, smoke.nad.input_size, smoke.sweep.eigen_indices) == (3, 16, (0, 2))
    assert config_of([]) == get_preset("nad")
    assert config_of(["--paper"]) == get_preset("nad_paper")
    assert config_of(["--paper", "--smoke-test"]) == smoke_config(get_preset("nad_paper"))
    assert config_of(["--smoke-test", "--cpus-per-trial", "2"]) == apply_overrides(
        smoke_config(get_preset("nad")), ["sweep.cpus_per_trial=2"]
    )


# ----------------------------------------------------------------------------- config


def test_nad_presets():
    nad, paper = get_preset("nad"), get_preset("nad_paper")
    for config in (nad, paper):
        assert config.is_nad and config.data.name == NAD_DATA
        assert max(config.sweep.eigen_indices) < config.nad.k
    assert not get_preset("smoke").is_nad
    assert dict(paper.grid)["model.name"] == ("lenet5", "resnet18")
    from raysweep.sweep.grid import expand_grid

    assert [a.config.model.name for a in expand_grid(paper).artifacts] == ["lenet5", "resnet18"]


def test_nad_section_round_trips(tmp_path):
    config = apply_overrides(
        get_preset("nad"),
        [
            "nad.k=7",
            "nad.input_size=8",
            "nad.channels=3",
            "nad.epsilon=0.5",
            "nad.sigma=2",
            "nad.method=svds",
            "sweep.eigen_indices=0,6",
            "grid.nad.sigma=0.5,2",
        ],
    )
    assert config.nad == NADConfig(
        k=7, input_size=8, channels=3, epsilon=0.5, sigma=2.0, method="svds"
    )
    back = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config and back.nad == config.nad and back.grid == config.grid
    assert load_config(save_config(config, tmp_path / "config.json")) == config


def test_nad_index_bound_is_nad_k():
    with pytest.raises(ValueError, match=r"nad\.k=4") as err:
        apply_overrides(get_preset("nad"), ["nad.k=4"])  # indices 0, 4, 32, 128, 511
    assert "[4, 32, 128, 511]" in str(err.value)
    with pytest.raises(ValueError, match=r"nad\.k=5"):  # the smallest k of the grid
        apply_overrides(get_preset("nad"), ["grid.nad.k=5,10"])
    with pytest.raises(ValueError, match=r"nad\.k=3"):
        apply_overrides(
            get_preset("nad"), ["nad.k=3", "sweep.eigen_indices=0", "grid.train.eigen_index=0,3"]
        )
    # ntk.num_eigen bounds eigenfunction sweeps only
    assert apply_overrides(get_preset("nad"), ["ntk.num_eigen=2"]).sweep.eigen_indices[-1] == 511
    with pytest.raises(ValueError, match=r"ntk\.num_eigen=128"):
        apply_overrides(get_preset("smoke"), ["sweep.eigen_indices=0,200", "nad.k=1000"])


def test_axes_without_effect_are_refused():
    from raysweep.sweep.grid import expand_grid

    eigen = apply_overrides(get_preset("smoke"), ["grid.nad.k=3,4"])
    with pytest.raises(ValueError, match=r"grid\.nad\.k has no effect"):
        expand_grid(eigen)
    nad = apply_overrides(get_preset("nad"), ["grid.ntk.num_eigen=16,32"])
    with pytest.raises(ValueError, match=r"grid\.ntk\.num_eigen has no effect"):
        expand_grid(nad)
    # and where they act, they are artifact-level axes
    grid = expand_grid(apply_overrides(get_preset("nad"), ["grid.nad.k=512,600"]))
    assert [dict(a.values)["nad.k"] for a in grid.artifacts] == [512, 600]
    assert [a.config.nad.k for a in grid.artifacts] == [512, 600]


# ----------------------------------------------------------------------------- grid


def test_nad_packs_hold_one_index():
    from raysweep.sweep.grid import expand_grid

    nad = apply_overrides(get_preset("nad"), ["grid.train.seed=0,1,2", "sweep.pack_size=8"])
    grid = expand_grid(nad)
    indices = nad.sweep.eigen_indices
    assert len(grid.trials) == len(indices) * 2  # one pack per index, network and linearized
    for trial in grid.trials:
        assert len(set(trial.eigen_indices)) == 1, trial.trial_id
        assert sorted(t.seed for t in trial.targets) == [0, 1, 2]
    assert grid.num_targets == len(indices) * 3 * 2

    eigen = apply_overrides(get_preset("smoke"), ["grid.train.seed=0,1,2", "sweep.pack_size=8"])
    mixed = [t for t in expand_grid(eigen).trials if len(set(t.eigen_indices)) > 1]
    assert mixed and all(len(t.targets) == 8 for t in mixed)


# ----------------------------------------------------------------------------- pack_data


def test_pack_data_builds_d_of_u_j(tmp_path):
    from raysweep.nads import nad_dataset
    from raysweep.studies import NADArtifact
    from raysweep.sweep.trainable import pack_data

    shape = (4, 4, 1)
    config = apply_overrides(
        get_preset("nad"),
        [
            "nad.k=3",
            "nad.input_size=4",
            "nad.epsilon=0.5",
            "nad.sigma=2",
            "sweep.eigen_indices=0,2",
            "data.num_train=20",
            "data.num_test=12",
            "data.seed=5",
        ],
    )
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((16, 3)))
    directions = q.T.astype(np.float32)  # (k, d) unit rows
    artifact = NADArtifact(
        path=tmp_path,
        config=config,
        eigvals=np.array([3.0, 2.0, 1.0]),
        directions=directions,
        residuals=np.zeros(3),
        variables={},
        method="dense",
        products=0,
        seconds=0.0,
    )
    payload = artifact.trial_payload([2, 0])
    assert payload["kind"] == "nad" and list(payload["eigen_indices"]) == [0, 2]
    assert tuple(payload["input_shape"]) == shape
    assert payload["data"] == {
        "num_train": 20,
        "num_test": 12,
        "epsilon": 0.5,
        "sigma": 2.0,
        "seed": 5,
    }
    spec = dict(num_train=20, num_test=12, epsilon=0.5, sigma=2.0, seed=5)
    for j in (0, 2):
        x_tr, y_tr, x_te, y_te = pack_data(payload, [j, j, j])
        want = nad_dataset(directions[j], shape, **spec)
        assert x_tr.shape == (20, *shape) and x_te.shape == (12, *shape)
        assert_close_f32(x_tr, want[0])
        assert_close_f32(x_te, want[2])
        assert y_tr.shape == (3, 20) and y_te.shape == (3, 12)
        np.testing.assert_array_equal(y_tr, np.repeat(want[1][None], 3, 0))
        np.testing.assert_array_equal(y_te, np.repeat(want[3][None], 3, 0))
        # uᵀx = ε·y: the inputs are D(u_j) of the pack's own NAD (up to float32 rounding of x)
        flat = x_tr.reshape(20, -1).astype(np.float64)
        proj = flat @ directions[j].astype(np.float64)
        scale = float(np.linalg.norm(flat, axis=1).max())
        np.testing.assert_allclose(proj, 0.5 * y_tr[0], rtol=0, atol=64 * F32_EPS * scale)
    x0, x2 = pack_data(payload, [0])[0], pack_data(payload, [2])[0]
    assert not np.allclose(x0, x2)

    with pytest.raises(ValueError, match="one NAD index"):
        pack_data(payload, [0, 2])
    with pytest.raises(ValueError, match="not in this sweep's payload"):
        pack_data(payload, [1])


# ----------------------------------------------------------------------------- Ray's place

RAY_PACKAGES = ("distributed", "sweep")
NO_RAY_MODULES = (
    "raysweep.nads",
    "raysweep.studies",
    "raysweep.config",
    "raysweep.script",
    "raysweep.training",
    "raysweep.models",
    "raysweep.analysis",
    "raysweep.report",
    "raysweep.eigen",
    "raysweep.ntk",
    "raysweep.evolution",
)


def _ray_imports(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n == "ray" or n.startswith("ray.") for n in names):
            lines.append(node.lineno)
    return lines


def test_ray_is_imported_only_in_distributed_and_sweep():
    root = REPO / "raysweep"
    found, seen = [], 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        tree = ast.parse(path.read_text(), filename=str(path))
        lines = _ray_imports(tree)
        if rel.parts[0] in RAY_PACKAGES:
            seen += bool(lines)
            continue
        found += [f"raysweep/{rel}:{n}" for n in lines]
    assert not found, f"Ray imported outside raysweep.distributed/raysweep.sweep: {found}"
    assert seen  # the check sees the imports where they belong


RAY_BLOCKER = r"""
import importlib, json, sys, traceback

importers = {}

class BlockRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            ours = [f for f in traceback.extract_stack() if "/raysweep/" in f.filename]
            frames = [  # the last library frame outside the Ray packages: the importer
                f
                for f in ours
                if not any(f"/raysweep/{p}/" in f.filename for p in ("distributed", "sweep"))
            ] or ours
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            importers.setdefault(CURRENT, where)
            raise ImportError(f"import of {name} blocked by the test")
        return None

sys.meta_path.insert(0, BlockRay())
result = {}
for CURRENT in sys.argv[1:]:
    try:
        importlib.import_module(CURRENT)
    except ImportError as err:
        result[CURRENT] = importers.get(CURRENT, repr(err))
result["ray in sys.modules"] = "ray" in sys.modules
print(json.dumps(result))
"""


def test_library_imports_without_ray():
    """Importing the non-Ray packages imports no Ray (an import of it would fail here)."""
    proc = subprocess.run(
        [sys.executable, "-c", RAY_BLOCKER, *NO_RAY_MODULES],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result.pop("ray in sys.modules") is False
    assert not result, f"these modules import Ray (module: where): {result}"


# ----------------------------------------------------------------------------- argcheck


def test_argcheck():
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)
    for bad in (True, 2.0, "3", None):
        with pytest.raises(TypeError):
            check_positive_int(bad, "x")
        with pytest.raises(ValueError):
            check_positive_int(bad, "x")
    with pytest.raises(ArgumentTypeError, match="x must be a positive integer"):
        check_positive_int(False, "x")
    with pytest.raises(ValueError, match="x must be a positive integer") as err:
        check_positive_int(0, "x")
    assert not isinstance(err.value, TypeError)  # a bad value, not a bad type
    value = check_positive_int(np.int64(3), "x")
    assert value == 3 and type(value) is int
    assert check_int(0, "y", minimum=0) == 0
    with pytest.raises(ValueError, match=r"y must be an integer in \[0, 2\]"):
        check_int(3, "y", minimum=0, maximum=2)


# ----------------------------------------------------------------------------- NAD study

NAD_OVERRIDES = (
    "data.num_train=64",
    "data.num_test=64",
    "nad.k=3",
    "sweep.eigen_indices=0,2",
    # 2 trials at a time on the 4 logical CPUs of ray_cluster: the other two reuse their actors
    "sweep.cpus_per_trial=2",
)
NAD_KEY = "lenet5-nad"
ID_COLUMNS = (*IDENTITY_COLUMNS, "epoch", "step", "steps_to_threshold", "status")
METRIC_GROUPS = (  # compared together: rounding scales with the group's largest magnitude
    ("train_loss", "test_loss"),
    ("train_accuracy", "test_accuracy"),
    ("weight_norm", "l2_distance"),  # norms of parameter vectors: rounding of ‖θ‖
    ("grad_norm",),
)


@dataclasses.dataclass
class NADRuns:
    config: Config
    out_a: Path
    out_b: Path
    study: object
    log: list
    script_rc: int
    script_out: str


@pytest.fixture(scope="module")
def nad_runs(ray_cluster, tmp_path_factory):
    """The same tiny NAD sweep twice on the module's cluster: by ``nad_study`` and by the
    script (in this process, so both join the cluster this process is connected to)."""
    from raysweep.studies import nad_study

    root = tmp_path_factory.mktemp("nad")
    config = apply_overrides(smoke_config(get_preset("nad")), list(NAD_OVERRIDES))
    out_a, out_b = root / "python", root / "script"
    log = []
    study = nad_study(config, out_a, progress=False, log=log.append)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = load_script("nad_sweep").main(
            ["--smoke-test", *NAD_OVERRIDES, "--out", str(out_b), "--quiet"]
        )
    return NADRuns(config, out_a, out_b, study, log, rc, buf.getvalue())


def _sorted(table):
    return table.sort_by(
        [("trial_id", "ascending"), ("target_id", "ascending"), ("epoch", "ascending")]
    )


def test_nad_study_equals_the_script(nad_runs):
    from raysweep.store import read_metrics

    r = nad_runs
    assert r.script_rc == 0, r.script_out[-3000:]
    assert load_config(r.out_a / "config.json") == r.config
    assert load_config(r.out_b / "config.json") == r.config
    assert json.loads((r.out_b / "config.json").read_text())["data"]["name"] == "nad"

    a, b = _sorted(read_metrics(r.out_a)), _sorted(read_metrics(r.out_b))
    assert a.num_rows == b.num_rows == 4  # 2 NAD indices x network/linearized, 1 epoch
    assert _sorted(r.study.table).to_pylist() == a.to_pylist()
    for name in ID_COLUMNS:
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    assert set(a.column("dataset").to_pylist()) == {"nad"}
    assert sorted(set(a.column("eigen_index").to_pylist())) == [0, 2]
    assert set(a.column("status").to_pylist()) == {"finished"}
    for group in METRIC_GROUPS:
        got = np.stack([b.column(c).to_numpy() for c in group])
        want = np.stack([a.column(c).to_numpy() for c in group])
        assert np.all(np.isfinite(want)), group
        assert_close_f32(got, want)
    # cosine distance 1 - cos: its rounding is that of cos (magnitude 1), not of 1 - cos
    assert_close_f32(
        1 - b.column("cosine_distance").to_numpy(), 1 - a.column("cosine_distance").to_numpy()
    )

    # the script prints the accuracy table of the same numbers: index, network, linearized
    lines = r.script_out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("final test accuracy"))
    assert lines[head + 1].split() == ["index", "sgd", "nn", "sgd", "lin"]
    for offset, j in enumerate((0, 2), start=2):
        acc = {
            row["linearized"]: row["test_accuracy"]
            for row in a.to_pylist()
            if row["eigen_index"] == j
        }
        assert lines[head + offset].split() == [str(j), f"{acc[False]:.3f}", f"{acc[True]:.3f}"]


def test_nad_study_and_script_save_the_same_nads_and_figures(nad_runs):
    r = nad_runs
    with np.load(r.out_a / "nads" / NAD_KEY / "nads.npz") as fa:
        with np.load(r.out_b / "nads" / NAD_KEY / "nads.npz") as fb:
            assert fa["directions"].shape == (3, 16 * 16)
            assert_close_f32(fb["directions"], fa["directions"])
            assert_close_f32(fb["eigvals"], fa["eigvals"])
    (artifact,) = r.study.artifacts
    assert artifact.num_eigen == 3 and artifact.input_shape == (16, 16, 1)
    for out in (r.out_a, r.out_b):
        for name in (f"nads_{NAD_KEY}.png", "accuracy_vs_nad_index.png"):
            path = out / "figures" / name
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert r.study.figures == (r.out_a / "figures" / "accuracy_vs_nad_index.png",)


def test_resumed_nad_study_reuses_nads_and_trains_nothing(nad_runs):
    from raysweep.studies import nad_study

    r = nad_runs
    parts = sorted((r.out_a / "metrics").glob("*.parquet"))
    assert len(parts) == 4
    before = {p.name: p.stat().st_mtime_ns for p in parts}
    nads_before = (r.out_a / "nads" / NAD_KEY / "nads.npz").stat().st_mtime_ns
    log = []
    again = nad_study(r.config, r.out_a, resume=True, progress=False, log=log.append)
    assert any("reusing" in line for line in log), log
    assert not any("reusing" in line for line in r.log)  # the first run computed them
    after = {p.name: p.stat().st_mtime_ns for p in (r.out_a / "metrics").glob("*.parquet")}
    assert after == before
    assert (r.out_a / "nads" / NAD_KEY / "nads.npz").stat().st_mtime_ns == nads_before
    assert _sorted(again.table).to_pylist() == _sorted(r.study.table).to_pylist()


def test_resume_hint_names_resume_only_for_scripts_that_take_it():
    from raysweep.script import resume_command

    out = Path("/results/run 1")
    argv = ["--quiet", "--out", "old", "train.epochs=3", "--resume"]
    assert resume_command("python sweeps/eigen_sweep.py", argv, out) == (
        "python sweeps/eigen_sweep.py --resume --out '/results/run 1' --quiet train.epochs=3"
    )
    assert resume_command("python sweeps/kernel_alignment.py", argv, out, resume_flag=False) == (
        "python sweeps/kernel_alignment.py --out '/results/run 1' --quiet train.epochs=3"
    )
