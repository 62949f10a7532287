"""A generation that boots has the longest CPU slice: it gives way to the one that serves.

Read back with sched_getattr(2) from each thread of each process of a generation, as
the kernel holds it. Needs Linux 6.12 or later (custom slices); skipped before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import (
    LoadClient,
    assert_no_failures,
    http_get,
    need,
    per_thread,
    start_zocket,
    started,
    wait_for,
    write_responder,
)
from zocket import libc
from zocket.slices import GIVE_WAY, set_generation_slice

#: Boots until ``gate`` exists (generation 1 at once), with a thread and a forked
#: worker, as a server has; then waits on the held socket. Told to stop, it writes
#: ``stopping`` and lingers until ``release`` exists, so that its slices can be read.
SERVER = r"""
import os, signal, socket, sys, threading, time
gate, stopping, release = sys.argv[1:4]
generation = os.environ["ZOCKET_GENERATION"]
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
while generation != "1" and not os.path.exists(gate):
    time.sleep(0.01)
if os.fork() == 0:
    while True:  # a worker: SIGTERM's default ends it
        time.sleep(0.05)

def linger(signum, frame):
    open(stopping + generation, "w").close()
    while not os.path.exists(release):
        time.sleep(0.01)
    os._exit(0)

signal.signal(signal.SIGTERM, linger)
listener = socket.socket(fileno=3)
while True:
    listener.accept()[0].close()
"""

def _custom_slices() -> bool:
    try:
        return libc.sched_slice(0) != 0
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _custom_slices(), reason="this kernel has no custom slices (Linux 6.12+)"
)
#: x86_64's sched_setattr and sched_getattr, for a filter that refuses them.
SCHED_SETATTR, SCHED_GETATTR = 314, 315
DENY = Path(__file__).resolve().parent / "seccomp_deny.py"


def slices(leader: int) -> dict[int, int]:
    """The slice of every thread of every process in ``leader``'s group, by tid."""
    return per_thread(leader, libc.sched_slice)


def has_all(leader: int, value: int, threads: int) -> bool:
    """Whether at least ``threads`` threads are in the group, each with slice ``value``."""
    seen = slices(leader)
    return len(seen) >= threads and set(seen.values()) == {value}


CPUS = frozenset(os.sched_getaffinity(0))
needs_two = pytest.mark.skipif(len(CPUS) < 2, reason="one CPU: slices are never asked for")


def gated(tmp_path: Path) -> tuple[list[str | Path], Path, str, Path]:
    """SERVER's command line, its gate, its stopping prefix and its release file."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    gate, release = tmp_path / "gate", tmp_path / "release"
    stopping = f"{tmp_path}/stopping-"
    return [sys.executable, script, gate, stopping, release], gate, stopping, release


@needs_two
def test_a_generation_gives_way_while_it_boots_not_while_it_stops(tmp_path: Path) -> None:
    """Where generations share the CPUs (--share-cpus), the booting one gives way; the
    stopping one keeps the default (its exit must not wait behind the serving one)."""
    default = libc.sched_slice(0)
    assert default != GIVE_WAY
    command, gate, stopping, release = gated(tmp_path)
    options = ["--port", "0", "--no-hook", "--stop-timeout", "60", "--share-cpus"]
    with start_zocket([*options, "--", *command]) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        first = zocket.child_pid
        # Main thread, sleeping thread, forked worker: nothing to give way to yet.
        wait_for(lambda: has_all(first, default, 3), 10, message="generation 1 at the default")

        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 2 started", 10)
        second = dict(started(zocket))[2]
        # Booting: the process and its thread, from before the gate, have the longest slice.
        wait_for(lambda: has_all(second, GIVE_WAY, 2), 10, message="generation 2 giving way")
        assert has_all(first, default, 3)

        gate.touch()  # generation 2 forks its worker (which inherits the slice), then waits
        zocket.wait_for_stderr(r"generation 2 ready in", 30)
        try:
            wait_for(lambda: os.path.exists(stopping + "1"), 10, message="generation 1 stopping")
            # The new one serves at the default, worker included, and so does the old one.
            assert has_all(second, default, 3), slices(second)
            assert set(slices(first).values()) == {default}, slices(first)
        finally:
            release.touch()
        zocket.wait_for_stderr(r"generation 1 stopped", 10)
        assert zocket.stop() == 0  # generation 2 lingers too, and exits 0 once released


@pytest.mark.parametrize(
    "how", ["split", "one CPU"] if len(CPUS) >= 2 else ["one CPU"]
)
def test_no_slice_where_generations_do_not_share_two_cpus(tmp_path: Path, how: str) -> None:
    """Split apart (the default on two CPUs or more) generations do not compete; on one
    CPU a long slice can starve a generation's exit (zocket.slices): so every thread of
    a booting and of a stopping generation keeps the default."""
    default = libc.sched_slice(0)
    command, gate, stopping, release = gated(tmp_path)
    options = ["--port", "0", "--no-hook", "--stop-timeout", "60"]
    prefix: list[str] = []
    if how == "one CPU":
        options.append("--share-cpus")  # would ask for slices on two CPUs
        prefix = ["taskset", "-c", str(min(CPUS))]
    with start_zocket([*options, "--", *command], prefix=prefix) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        first = zocket.child_pid
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 2 started", 10)
        second = dict(started(zocket))[2]
        wait_for(lambda: len(slices(second)) >= 2, 10, message="generation 2's threads")
        assert set(slices(second).values()) == {default}, slices(second)
        gate.touch()
        zocket.wait_for_stderr(r"generation 2 ready in", 30)
        try:
            wait_for(lambda: os.path.exists(stopping + "1"), 10, message="generation 1 stopping")
            assert set(slices(first).values()) == {default}, slices(first)
        finally:
            release.touch()
        zocket.wait_for_stderr(r"generation 1 stopped", 10)
        assert zocket.stop() == 0


#: x86_64's sched_setaffinity, for a filter that refuses it.
SCHED_SETAFFINITY = 203


@needs_two
def test_where_the_placement_is_refused_the_booting_generation_gives_way(tmp_path: Path) -> None:
    """sched_setaffinity refused (EACCES): zocket says so once, and the generations then
    share the CPUs, so the booting one gets the longest slice after all."""
    command, gate, stopping, release = gated(tmp_path)
    options = ["--port", "0", "--no-hook", "--stop-timeout", "60"]
    prefix = [sys.executable, str(DENY), f"EACCES:{SCHED_SETAFFINITY}"]
    with start_zocket([*options, "--", *command], prefix=prefix) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 2 started", 10)
        second = dict(started(zocket))[2]
        wait_for(lambda: has_all(second, GIVE_WAY, 2), 10, message="generation 2 giving way")
        gate.touch()
        zocket.wait_for_stderr(r"generation 2 ready in", 30)
        release.touch()
        zocket.wait_for_stderr(r"generation 1 stopped", 10)
        assert zocket.stop() == 0
        text = zocket.stderr_text()
    expected = (
        "zocket: CPU placement refused (Permission denied): generations now share every "
        "CPU during a restart"
    )
    assert text.splitlines().count(expected) == 1, text


#: A node server that finishes what it took when told to stop (its threads exit with it).
NODE_GRACEFUL = """\
const http = require("http");
const server = http.createServer((req, res) => res.end("hello\\n"));
server.listen(Number(process.argv[2]));
process.on("SIGTERM", () => server.close());
"""


def test_on_one_busy_cpu_every_stop_is_reported_when_it_happens(tmp_path: Path) -> None:
    """The hazard zocket.slices names, end to end: zocket and node on one CPU, under load.
    With the long slice, the old generation's exit was reported only once the load
    stopped (30 s later) in most runs; every stop must be seen within seconds."""
    (tmp_path / "server.js").write_text(NODE_GRACEFUL)
    prefix = ["taskset", "-c", str(min(CPUS))]
    args = ["--port", "0", "--share-cpus", "--", need("node"), "server.js", "{port}"]
    with start_zocket(args, prefix=prefix, cwd=tmp_path) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        with LoadClient(zocket.port, rate=80, threads=4, duration=60) as load:
            load.wait_for(lambda outcome: outcome.ok, timeout=10)
            for number in (2, 3, 4):
                zocket.send_signal(signal.SIGHUP)
                zocket.wait_for_stderr(rf"generation {number} ready in", 20)
                zocket.wait_for_stderr(rf"generation {number - 1} stopped", 5)
        assert zocket.stop() == 0  # node's own stop: exit 0
    assert_no_failures(load)


def test_only_threads_under_a_fair_policy_are_given_a_slice() -> None:
    """SCHED_BATCH keeps its policy and takes the slice; SCHED_IDLE has none: left alone.

    Batch first, idle second: leaving SCHED_IDLE would need a privilege, entering it not.
    """
    batch = "import os, signal; os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0)); signal.pause()"
    with subprocess.Popen([sys.executable, "-c", batch], start_new_session=True) as child:
        try:
            wait_for(lambda: os.sched_getscheduler(child.pid) == os.SCHED_BATCH, 10, message="batch")
            assert set_generation_slice(child.pid, GIVE_WAY) == 1
            assert libc.sched_slice(child.pid) == GIVE_WAY
            assert os.sched_getscheduler(child.pid) == os.SCHED_BATCH  # the policy is kept
            os.sched_setscheduler(child.pid, os.SCHED_IDLE, os.sched_param(0))
            assert set_generation_slice(child.pid, GIVE_WAY) == 0
            assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE
        finally:
            child.kill()


def test_the_nice_value_is_kept() -> None:
    niced = "import os, signal; os.nice(5); signal.pause()"
    with subprocess.Popen([sys.executable, "-c", niced]) as child:
        try:
            wait_for(lambda: os.getpriority(os.PRIO_PROCESS, child.pid) == 5, 10, message="niced")
            assert libc.set_sched_slice(child.pid, GIVE_WAY)
            assert libc.sched_slice(child.pid) == GIVE_WAY
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == 5
            assert libc.set_sched_slice(child.pid, 0)
            assert libc.sched_slice(child.pid) == libc.sched_slice(0)
        finally:
            child.kill()


def test_a_slice_out_of_range_is_an_argument_error() -> None:
    with pytest.raises(libc.ArgumentError, match="slice_ns"):
        libc.set_sched_slice(0, -1)
    with pytest.raises(ProcessLookupError) as caught:
        libc.set_sched_slice(2**22 + 12345, GIVE_WAY)  # above pid_max: no such thread
    assert caught.value.call == "sched_setattr"  # type: ignore[attr-defined]


@needs_two
def test_a_kernel_that_refuses_slices_is_named_once_and_restarts_go_on(tmp_path: Path) -> None:
    """sched_getattr and sched_setattr refused (EACCES, as a security module would): one
    line, then zocket stops asking, and every restart still goes through."""
    command = [sys.executable, str(write_responder(tmp_path))]
    refused = f"EACCES:{SCHED_SETATTR},{SCHED_GETATTR}"
    options = ["--port", "0", "--share-cpus"]  # where slices are asked for
    with start_zocket([*options, "--", *command], prefix=[sys.executable, str(DENY), refused]) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        for number in ("2", "3"):
            zocket.send_signal(signal.SIGHUP)
            zocket.wait_for_stderr(rf"generation {number} ready in", 30)
            wait_for(
                lambda: http_get(zocket.port)[1]["X-Zocket-Generation"] == number,
                10,
                message=f"generation {number} answering",
            )
        assert zocket.stop() == 128 + signal.SIGTERM
        text = zocket.stderr_text()
    expected = (
        "zocket: CPU slices refused (sched_setattr: Permission denied): a booting generation no longer "
        "gives way to the serving one"
    )
    assert text.splitlines().count(expected) == 1, text
    assert "Traceback" not in text
