"""raysweep.lease: one run per results folder, across processes and hosts, without locks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from raysweep import lease as lease_mod
from raysweep.lease import LeaseLost, ResultsDirBusy, hold_results_dir

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys
from raysweep.lease import hold_results_dir
with hold_results_dir(sys.argv[1], purpose="test holder", ttl_s=60, heartbeat_s=10):
    print("held", flush=True)
    sys.stdin.read()
"""

CONTENDER = """
import sys, time
from raysweep.lease import ResultsDirBusy, hold_results_dir
lease = hold_results_dir(sys.argv[1], purpose="contender")
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
try:
    lease.acquire()
except ResultsDirBusy:
    print("busy", flush=True)
else:
    print("won", flush=True)
    sys.stdin.read()
    lease.release()
"""


def spawn(script: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


def generations(folder: Path) -> list[int]:
    return lease_mod._list_generations(folder)


def read(folder: Path, gen: int) -> dict:
    return json.loads((folder / f"{lease_mod.LEASE_PREFIX}{gen}").read_text())


def this_machine() -> dict:
    return {"host": lease_mod._HOST, "boot_id": lease_mod._BOOT_ID, "pid_ns": lease_mod._PID_NS}


def write_record(folder: Path, gen: int, **changes) -> dict:
    """A lease file written by hand; by default from a live run on another host."""
    now = time.time()
    record = {
        "host": "other-host",
        "boot_id": "another-boot",
        "pid_ns": "pid:[1]",
        "pid": 4242,
        "start_time": now - 100.0,
        "purpose": "python sweeps/eigen_sweep.py",
        "acquired_at": now - 50.0,
        "heartbeat": now,
        "ttl_s": 60.0,
        "heartbeat_s": 10.0,
        "token": uuid.uuid4().hex,
        **changes,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{lease_mod.LEASE_PREFIX}{gen}").write_text(json.dumps(record))
    return record


def wait_until(predicate, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture(autouse=True)
def no_leaked_leases():
    yield
    leaked = [str(folder) for folder in lease_mod._REGISTRY]
    lease_mod._release_all()
    assert not leaked, f"a test left these leases held: {leaked}"


def test_acquire_writes_the_holder_and_release_removes_it(tmp_path):
    out = tmp_path / "results" / "eigen_sweep"
    with hold_results_dir(out, purpose="python sweeps/eigen_sweep.py") as lease:
        assert out.is_dir()
        assert generations(out) == [1]
        assert lease.held and not lease.lost
        record = read(out, 1)
        assert record["host"] == lease_mod._HOST
        assert record["pid"] == os.getpid()
        assert record["purpose"] == "python sweeps/eigen_sweep.py"
        assert record["start_time"] == pytest.approx(psutil.Process().create_time())
        lease.check()
    assert generations(out) == []
    assert not lease.held


def test_acquire_and_release_as_methods(tmp_path):
    lease = hold_results_dir(tmp_path, purpose="methods")
    assert lease.acquire() is lease
    assert lease.path == tmp_path.resolve() / f"{lease_mod.LEASE_PREFIX}1"
    assert lease.path.exists()
    lease.release()
    assert generations(tmp_path) == []
    lease.release()  # a second release is a no-op
    with pytest.raises(RuntimeError, match="not held"):
        lease.check()


def test_nested_holds_in_one_process_count_up(tmp_path):
    out = tmp_path / "out"
    with hold_results_dir(out, heartbeat_s=0.1, ttl_s=5) as outer:
        token = read(out, 1)["token"]
        with hold_results_dir(tmp_path / "x" / ".." / "out") as inner:  # same folder, resolved
            assert inner.path == outer.path
            assert generations(out) == [1]
            assert read(out, 1)["token"] == token
        assert generations(out) == [1], "the inner release must not free the outer hold"
        assert outer.held
        beats = [t for t in threading.enumerate() if t.name.startswith("raysweep-lease")]
        assert len(beats) == 1
    assert generations(out) == []
    assert wait_until(lambda: not any(t.is_alive() for t in beats), 2.0), "heartbeat still runs"


def test_a_run_in_another_process_is_refused_at_once(tmp_path):
    out = tmp_path / "out"
    holder = spawn(HOLDER, str(out))
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(ResultsDirBusy) as info:
            hold_results_dir(out, purpose="second run").acquire()
        assert time.monotonic() - start < 2.0
        message = str(info.value)
        assert str(out.resolve()) in message
        assert f"pid {holder.pid}" in message
        assert "'test holder'" in message
        assert "another --out" in message
        assert "\n" not in message
        assert generations(out) == [1]
    finally:
        holder.communicate("", timeout=10)
    assert holder.returncode == 0
    assert generations(out) == [], "the holder's exit must release the lease"
    with hold_results_dir(out):
        assert generations(out) == [1]


@pytest.mark.parametrize("reaped", [True, False], ids=["dead", "zombie"])
def test_a_sigkilled_holder_on_this_host_is_taken_over_at_once(tmp_path, reaped):
    out = tmp_path / "out"
    holder = spawn(HOLDER, str(out))
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    if reaped:
        holder.wait(timeout=10)
    else:
        zombie = psutil.Process(holder.pid)
        assert wait_until(lambda: zombie.status() == psutil.STATUS_ZOMBIE)
    assert generations(out) == [1], "SIGKILL leaves the lease file"
    start = time.monotonic()
    with hold_results_dir(out, ttl_s=600) as lease:
        assert time.monotonic() - start < 2.0
        assert generations(out) == [2]
        assert read(out, 2)["pid"] == os.getpid()
        assert lease.path.name.endswith(".2")
    holder.wait(timeout=10)
    holder.stdout.close()
    holder.stdin.close()


def test_a_reused_pid_is_stale_and_the_same_process_is_live(tmp_path):
    me = psutil.Process()
    write_record(tmp_path, 1, **this_machine(), pid=me.pid, start_time=me.create_time())
    with pytest.raises(ResultsDirBusy, match=f"pid {me.pid}"):
        hold_results_dir(tmp_path).acquire()

    write_record(tmp_path, 1, **this_machine(), pid=me.pid, start_time=me.create_time() - 1000)
    with hold_results_dir(tmp_path):
        assert generations(tmp_path) == [2]


def test_another_host_is_judged_by_its_heartbeat(tmp_path):
    write_record(tmp_path, 1, heartbeat=time.time() - 5)
    with pytest.raises(
        ResultsDirBusy, match=r"host other-host pid 4242 .*last heartbeat [56] s ago"
    ):
        hold_results_dir(tmp_path, ttl_s=60).acquire()

    # stale by our ttl but not by the holder's own, longer one: still busy
    write_record(tmp_path, 1, heartbeat=time.time() - 120, ttl_s=600.0)
    with pytest.raises(ResultsDirBusy, match="stale 600 s after"):
        hold_results_dir(tmp_path, ttl_s=60).acquire()

    old = write_record(tmp_path, 1, heartbeat=time.time() - 120)
    with hold_results_dir(tmp_path, ttl_s=60):
        assert generations(tmp_path) == [2]
        assert read(tmp_path, 2)["token"] != old["token"]
    assert generations(tmp_path) == []


def test_an_unreadable_lease_file_is_busy_until_it_is_a_ttl_old(tmp_path):
    path = tmp_path / f"{lease_mod.LEASE_PREFIX}1"
    path.write_text("")  # as left by O_EXCL before its content is written
    with pytest.raises(ResultsDirBusy, match="being written"):
        hold_results_dir(tmp_path, ttl_s=60).acquire()
    os.utime(path, (time.time() - 120, time.time() - 120))
    with hold_results_dir(tmp_path, ttl_s=60):
        assert generations(tmp_path) == [2]


def test_processes_racing_for_a_stale_lease_exactly_one_wins(tmp_path):
    write_record(tmp_path, 3, heartbeat=time.time() - 1000)
    start = time.time() + 2.5  # after all eight interpreters have started
    racers = [spawn(CONTENDER, str(tmp_path), repr(start)) for _ in range(8)]
    try:
        results = sorted(p.stdout.readline().strip() for p in racers)
        assert results == ["busy"] * 7 + ["won"]
        assert generations(tmp_path) == [4]
    finally:
        for p in racers:
            p.communicate("", timeout=10)
    assert generations(tmp_path) == []


def test_threads_racing_on_one_generation_exactly_one_creates_it(tmp_path):
    write_record(tmp_path, 1, heartbeat=time.time() - 1000)
    barrier = threading.Barrier(8)
    won, busy = [], []

    def race():
        barrier.wait()
        try:
            won.append(lease_mod._take(tmp_path, "racer", 60.0, 10.0))
        except ResultsDirBusy:
            busy.append(1)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert (len(won), len(busy)) == (1, 7)
    assert generations(tmp_path) == [2]
    won[0].close()
    assert generations(tmp_path) == []


def test_the_heartbeat_rewrites_the_file(tmp_path):
    with hold_results_dir(tmp_path, heartbeat_s=0.1, ttl_s=2) as lease:
        first = read(tmp_path, 1)
        assert wait_until(lambda: read(tmp_path, 1)["heartbeat"] > first["heartbeat"] + 0.15)
        now = read(tmp_path, 1)
        assert (now["token"], now["acquired_at"]) == (first["token"], first["acquired_at"])
        assert not lease.lost


def test_a_takeover_is_noticed_by_the_heartbeat(tmp_path):
    with hold_results_dir(tmp_path, heartbeat_s=0.1, ttl_s=2) as lease:
        taker = write_record(tmp_path, 2)
        assert wait_until(lambda: lease.lost, 2.0)
        assert not lease.held
        with pytest.raises(LeaseLost, match="taken over by host other-host pid 4242"):
            lease.check()
        with pytest.raises(LeaseLost):  # nesting on a lost lease is refused too
            hold_results_dir(tmp_path).acquire()
        beat = read(tmp_path, 1)["heartbeat"]
        time.sleep(0.3)
        assert read(tmp_path, 1)["heartbeat"] == beat, "a lost lease must stop beating"
    assert read(tmp_path, 2) == taker, "releasing a lost lease must not touch the new holder"
    assert generations(tmp_path) == [2]


def test_the_heartbeat_notices_any_higher_generation(tmp_path):
    with hold_results_dir(tmp_path, heartbeat_s=0.1, ttl_s=2) as lease:
        write_record(tmp_path, 7)
        assert wait_until(lambda: lease.lost, 2.0)
    assert generations(tmp_path) == [7]


def test_check_sees_a_takeover_before_the_next_beat(tmp_path):
    with hold_results_dir(tmp_path, heartbeat_s=30, ttl_s=60) as lease:
        lease.check()
        write_record(tmp_path, 2)
        (tmp_path / f"{lease_mod.LEASE_PREFIX}1").unlink()  # what the taker does next
        with pytest.raises(ResultsDirBusy, match="Lost the lease"):
            lease.check()
        assert lease.lost


def test_a_reused_generation_number_is_not_ours(tmp_path):
    with hold_results_dir(tmp_path, heartbeat_s=30, ttl_s=60) as lease:
        # taken over, then released by the taker, then a fresh run started at generation 1
        write_record(tmp_path, 1)
        with pytest.raises(LeaseLost):
            lease.check()
    assert generations(tmp_path) == [1]


def test_a_forked_child_does_not_release_its_parents_lease(tmp_path):
    with hold_results_dir(tmp_path) as lease:
        pid = os.fork()
        if pid == 0:  # the child leaves the with block it inherited
            lease.release()
            os._exit(0 if lease.path is None else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert generations(tmp_path) == [1]
        lease.check()
    assert generations(tmp_path) == []


def test_bad_timing_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"heartbeat_s=10 and ttl_s=5"):
        hold_results_dir(tmp_path, ttl_s=5, heartbeat_s=10)
