"""While a restart runs, the serving generation has half of zocket's CPUs to itself.

Read back with sched_getaffinity(2) from each thread of each process, as the kernel
holds it: the serving generation on one half, the booting one and zocket itself on
the other; the new generation on every CPU once it serves, the old one stopping on its
half; every CPU back once one generation is left. Needs two CPUs; on one there is nothing to split.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support import (
    group_members, http_get, per_thread, start_zocket, started, wait_for, write_responder,
)
from zocket.placement import CpuSplit, halves

CPUS = frozenset(os.sched_getaffinity(0))
needs_two = pytest.mark.skipif(len(CPUS) < 2, reason="one CPU: nothing to split")

#: Boots until ``gate``N exists (generation 1 at once), with a thread, a forked worker and
#: a thread that places itself on the last CPU, as a server may; then waits on the held
#: socket. Told to stop, it writes ``stopping``N and lingers until ``release``N exists.
SERVER = r"""
import os, signal, socket, sys, threading, time
gate, stopping, release = sys.argv[1:4]
generation = os.environ["ZOCKET_GENERATION"]
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()

def placed():
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    open(stopping + "placed-" + generation, "w").close()
    time.sleep(3600)

if generation == "1":
    threading.Thread(target=placed, daemon=True).start()
while generation != "1" and not os.path.exists(gate + generation):
    time.sleep(0.01)
if os.fork() == 0:
    while True:  # a worker: SIGTERM's default ends it
        time.sleep(0.05)

def linger(signum, frame):
    open(stopping + generation, "w").close()
    while not os.path.exists(release + generation):
        time.sleep(0.01)
    os._exit(0)

signal.signal(signal.SIGTERM, linger)
listener = socket.socket(fileno=3)
while True:
    listener.accept()[0].close()
"""


def gated_server(tmp_path: Path) -> tuple[list[object], str, str, str]:
    """SERVER's command line, and its gate, release and stopping prefixes (+ generation)."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    gate, release, stopping = (f"{tmp_path}/{name}-" for name in ("gate", "release", "stopping"))
    return [sys.executable, script, gate, stopping, release], gate, release, stopping


def masks(leader: int) -> dict[int, frozenset[int]]:
    """The CPUs of every thread of every process in ``leader``'s group, by tid."""
    return per_thread(leader, lambda tid: frozenset(os.sched_getaffinity(tid)))


def on(leader: int, cpus: frozenset[int], threads: int, *, except_placed: bool = False) -> bool:
    """Whether ``leader``'s group has at least ``threads`` threads, each on ``cpus``
    (but for the one thread that placed itself on the last CPU, if ``except_placed``)."""
    seen = list(masks(leader).values())
    if except_placed:
        alone = frozenset({max(CPUS)})
        if alone not in seen:
            return False
        seen.remove(alone)
    return len(seen) >= threads and set(seen) == {cpus}


def holder_cpus(pid: int) -> frozenset[int]:
    return frozenset(os.sched_getaffinity(pid))


@given(st.sets(st.integers(0, 4095), max_size=64))
def test_halves_cover_the_cpus_each_once_the_larger_first(cpus: set[int]) -> None:
    split = halves(cpus)
    if len(cpus) < 2:
        assert split is None
        return
    assert split is not None
    front, back = split
    assert front | back == cpus and not front & back
    assert len(front) - len(back) in (0, 1)
    assert max(front) < min(back)  # neighbouring numbers together


#: A process with a thread and a forked worker; with an argument, one more thread that
#: places itself on that CPU alone. It says "up" once all are there.
WORKERS = r"""
import os, sys, threading, time
if len(sys.argv) > 1:
    def placed():
        os.sched_setaffinity(0, {int(sys.argv[1])})
        time.sleep(3600)
    threading.Thread(target=placed, daemon=True).start()
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
if os.fork() == 0:
    time.sleep(3600)
    os._exit(0)
time.sleep(0.2)
print("up", flush=True)
time.sleep(3600)
"""


@contextmanager
def generations(*extra: list[str]) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes standing for generations, each the leader of its own group; stopped
    (the whole group) at the end, and the calling thread given its CPUs back."""
    started: list[subprocess.Popen[str]] = []
    try:
        for args in extra:
            child = subprocess.Popen([sys.executable, "-c", WORKERS, *args], text=True,
                                     stdout=subprocess.PIPE, start_new_session=True)
            started.append(child)
            assert child.stdout is not None and child.stdout.readline() == "up\n"
        yield started
    finally:
        os.sched_setaffinity(0, CPUS)
        for child in started:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()
            if child.stdout is not None:
                child.stdout.close()


@needs_two
def test_a_third_generation_joins_the_back_half_at_a_swap() -> None:
    """A still stopping while B serves and C boots; C serves: A must leave C's half."""
    split = CpuSplit(CPUS)
    with generations([], [], []) as (a, b, c):
        split.apart(a.pid, [b.pid], True)
        first_front, first_back = split.front, split.back
        assert holder_cpus(0) == first_back  # with the booting one
        split.apart(b.pid, [a.pid], False)  # B serves on every CPU; A stops where it served
        assert split.front == first_back and holder_cpus(0) == CPUS
        assert on(a.pid, first_front, 3) and on(b.pid, CPUS, 3)
        split.apart(b.pid, [a.pid, c.pid], True)  # C boots beside A, which is still stopping
        assert on(c.pid, first_front, 3) and holder_cpus(0) == first_front
        assert on(b.pid, first_back, 3), masks(b.pid)  # B back on its half meanwhile
        split.apart(c.pid, [a.pid, b.pid], False)  # C serves: A and B on the other half
        assert on(c.pid, CPUS, 3), masks(c.pid)
        assert on(a.pid, first_back, 3), masks(a.pid)
        assert on(b.pid, first_back, 3), masks(b.pid)
        assert holder_cpus(0) == CPUS  # never alone with stopping generations
        split.together([c.pid])  # A and B's leaders are left out, as once they exited
        for leader in (a.pid, b.pid, c.pid):
            assert on(leader, CPUS, 3), masks(leader)
        assert holder_cpus(0) == CPUS


@needs_two
def test_a_thread_the_server_placed_on_a_half_is_never_widened() -> None:
    front, back = halves(CPUS) or (CPUS, CPUS)
    alone = frozenset({min(front)})
    split = CpuSplit(CPUS)
    with generations([str(min(front))], []) as (serving, booting):
        wait_for(lambda: alone in masks(serving.pid).values(), 10, message="a thread placed")
        split.apart(serving.pid, [booting.pid], True)
        split.apart(booting.pid, [serving.pid], False)
        split.together([serving.pid, booting.pid])
        assert sorted(masks(serving.pid).values(), key=len) == [alone, CPUS, CPUS, CPUS]


@needs_two
def test_workers_left_behind_by_their_leader_get_every_cpu_back() -> None:
    split = CpuSplit(CPUS)
    with generations([], []) as (serving, booting):
        worker = [pid for pid in group_members(booting.pid) if pid != booting.pid]
        assert len(worker) == 1
        split.apart(serving.pid, [booting.pid], True)
        assert on(booting.pid, split.back, 3)
        os.kill(booting.pid, signal.SIGKILL)
        booting.wait()
        split.together([serving.pid])  # the leader is gone: only its worker is left
        assert frozenset(os.sched_getaffinity(worker[0])) == CPUS


def test_one_cpu_is_never_split() -> None:
    split = CpuSplit({3})
    assert not split.possible
    split.apart(os.getpid(), [], True)
    assert os.sched_getaffinity(0) == CPUS


@needs_two
def test_a_restart_keeps_the_serving_generation_on_cpus_of_its_own(tmp_path: Path) -> None:
    front, back = halves(CPUS) or (CPUS, CPUS)
    command, gate, release, stopping = gated_server(tmp_path)
    options = ["--port", "0", "--no-hook", "--stop-timeout", "60"]
    with start_zocket([*options, "--", *command]) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        first = zocket.child_pid
        wait_for(lambda: os.path.exists(stopping + "placed-1"), 10, message="a thread placed")
        # Main thread, sleeping thread, forked worker on every CPU; nothing split yet.
        wait_for(lambda: on(first, CPUS, 3, except_placed=True), 10, message="every CPU")
        assert holder_cpus(zocket.pid) == CPUS

        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 2 started", 10)
        second = dict(started(zocket))[2]
        # Booting: generation 2 and zocket (which forked it there) on the back half,
        # generation 1 on the front; the thread that placed itself stays where it is.
        wait_for(lambda: on(second, back, 2), 10, message="generation 2 on the back half")
        assert on(first, front, 3, except_placed=True), masks(first)
        assert holder_cpus(zocket.pid) == back

        Path(gate + "2").touch()  # generation 2 forks its worker (it inherits the half), waits
        zocket.wait_for_stderr(r"generation 2 ready in", 30)
        try:
            wait_for(lambda: os.path.exists(stopping + "1"), 10, message="generation 1 stopping")
            # The halves swap roles: the new generation on every CPU, the old one where
            # it served; zocket, with nothing booting, on every CPU (after the turn of
            # its loop that sent the stop).
            wait_for(lambda: on(second, CPUS, 3), 10, message="generation 2 on every CPU")
            # (its forked worker died of the stop signal)
            assert on(first, front, 2, except_placed=True), masks(first)
            wait_for(lambda: holder_cpus(zocket.pid) == CPUS, 10, message="zocket on every CPU")
        finally:
            Path(release + "1").touch()
        zocket.wait_for_stderr(r"generation 1 stopped", 10)
        # One generation left: every CPU back, to it and to zocket.
        wait_for(lambda: on(second, CPUS, 3), 10, message="generation 2 on every CPU")
        assert holder_cpus(zocket.pid) == CPUS

        # The next restart splits as the first did: the larger half serves, whoever serves.
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 3 started", 10)
        third = dict(started(zocket))[3]
        wait_for(lambda: on(third, back, 2), 10, message="generation 3 on the back half")
        assert on(second, front, 3), masks(second)
        assert holder_cpus(zocket.pid) == back
        Path(gate + "3").touch()
        Path(release + "2").touch()
        zocket.wait_for_stderr(r"generation 3 ready in", 30)
        zocket.wait_for_stderr(r"generation 2 stopped", 10)
        wait_for(lambda: on(third, CPUS, 3), 10, message="generation 3 on every CPU")
        Path(release + "3").touch()
        assert zocket.stop() == 0


@needs_two
def test_a_failed_start_gives_the_serving_generation_every_cpu_back(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    # Generation 1 serves; every later one exits before it is ready.
    script.write_text(
        "import os, signal, socket, sys\n"
        "if os.environ['ZOCKET_GENERATION'] != '1':\n"
        "    sys.exit(3)\n"
        "listener = socket.socket(fileno=3)\n"
        "while True:\n"
        "    listener.accept()[0].close()\n"
    )
    with start_zocket(["--port", "0", "--no-hook", "--", sys.executable, script]) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        first = zocket.child_pid
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 2 failed before ready", 30)
        wait_for(lambda: on(first, CPUS, 1), 10, message="generation 1 on every CPU")
        wait_for(lambda: holder_cpus(zocket.pid) == CPUS, 10, message="zocket on every CPU")
        assert zocket.stop() == 128 + signal.SIGTERM


@needs_two
def test_share_cpus_moves_nothing(tmp_path: Path) -> None:
    command, gate, release, stopping = gated_server(tmp_path)
    options = ["--port", "0", "--no-hook", "--share-cpus"]
    with start_zocket([*options, "--", *command]) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        first = zocket.child_pid
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 2 started", 10)
        second = dict(started(zocket))[2]
        wait_for(lambda: on(second, CPUS, 2), 10, message="generation 2 on every CPU")
        assert on(first, CPUS, 3, except_placed=True), masks(first)
        assert holder_cpus(zocket.pid) == CPUS
        Path(release + "1").touch()
        Path(release + "2").touch()
        Path(gate + "2").touch()
        zocket.wait_for_stderr(r"generation 2 ready in", 30)
        assert zocket.stop() == 0


@needs_two
def test_restarts_under_a_narrower_affinity_split_only_what_zocket_was_given(
    tmp_path: Path,
) -> None:
    """zocket started on two CPUs (taskset): the halves are those, and what zocket gives
    back is those two, not every CPU of the machine."""
    given = frozenset(sorted(CPUS)[:2])
    command = [sys.executable, write_responder(tmp_path)]
    prefix = [sys.executable, "-c",
              f"import os, sys; os.sched_setaffinity(0, {set(given)!r}); "
              "os.execv(sys.argv[1], sys.argv[1:])"]
    with start_zocket(["--port", "0", "--", *command], prefix=prefix) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        assert holder_cpus(zocket.pid) == given
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 2 ready in", 30)
        zocket.wait_for_stderr(r"generation 1 stopped", 10)
        second = dict(started(zocket))[2]
        wait_for(lambda: on(second, given, 1), 10, message="generation 2 on zocket's CPUs")
        assert holder_cpus(zocket.pid) == given
        assert http_get(zocket.port)[1]["X-Zocket-Generation"] == "2"
        assert zocket.stop() == 128 + signal.SIGTERM
