"""``--ready auto``: is a child waiting for connections on a held socket? Asked of /proc.

Each test starts small real Python children with `zocket.spawn.spawn`, the
held socket on fd 3 as zocket gives it, each child waiting in exactly one way
(accept, select, poll, epoll, asyncio, a thread, a grandchild), and asks
`readiness.find_waiting` in a loop bounded by a deadline. The negative cases
(holding the socket but waiting elsewhere, or not for reading) are watched
for a while and must never be reported.

A child tells the test that it is about to wait by writing to a pipe handed to
it as its last fd. Every child is SIGKILLed by pid and reaped by the test; a
grandchild is killed by pid and reaped by its parent.
"""

from __future__ import annotations

import math
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zocket import libc, readiness, spawn
from zocket.readiness import ReadyMode, Waiting, parse_ready_mode

#: How long a child may take to start and reach its wait (a cold interpreter on a busy box).
START_TIMEOUT = 15.0
#: How long a negative case is watched.
QUIET_PERIOD = 0.5

ACCEPT = {"accept", "accept4"}
SELECT = {"select", "pselect6"}
POLL = {"poll", "ppoll"}
SYSCALL_NAMES = {name: number for number, name in libc.WAIT_SYSCALLS.items()}

#: Run by every child before its own code: ``ready()`` writes to the pipe that is its last fd.
PRELUDE = r"""
import os, select, socket, subprocess, sys, threading, time
READY_FD = int(os.environ["LISTEN_FDS"]) + 2
def ready():
    os.write(READY_FD, b"x")
"""


# --- helpers -------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def _reap(pid: int, timeout: float) -> int | None:
    """waitpid with a deadline: the wait status, or None if it did not exit in time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if reaped:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _syscalls(pid: int) -> set[str]:
    """The names of the wait syscalls the tasks of ``pid`` are in right now."""
    names: set[str] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return names
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                first = f.read().split()[:1]
        except OSError:
            continue
        if first and first[0].isdigit() and int(first[0]) in libc.WAIT_SYSCALLS:
            names.add(libc.WAIT_SYSCALLS[int(first[0])])
    return names


class Children:
    """Children spawned by one test; all of them SIGKILLed and reaped at the end."""

    def __init__(self) -> None:
        self._children: list[spawn.Child] = []
        self._reaped: dict[int, int] = {}

    def start(self, code: str, fds: Sequence[int]) -> spawn.Child:
        """Spawn ``code`` with ``fds`` on 3, 4, ... and a ready pipe after them; wait for ready()."""
        read_end, write_end = os.pipe()
        try:
            try:
                child = spawn.spawn(
                    [sys.executable, "-c", PRELUDE + code],
                    fds=[*fds, write_end],
                    names=[*(f"s{i}" for i in range(len(fds))), "ready"],
                )
            finally:
                os.close(write_end)
            self._children.append(child)
            ready, _, _ = select.select([read_end], [], [], START_TIMEOUT)
            assert ready, f"child {child.pid} did not call ready() within {START_TIMEOUT} s"
            assert os.read(read_end, 1) == b"x", f"child {child.pid} exited before ready()"
        finally:
            os.close(read_end)
        return child

    def adopt(self, child: spawn.Child) -> None:
        """Kill and reap ``child`` (spawned by the test itself) at the end as well."""
        self._children.append(child)

    def wait_exit(self, child: spawn.Child, timeout: float = 10.0) -> int:
        """The wait status of a child that exits by itself (bounded)."""
        status = _reap(child.pid, timeout)
        assert status is not None, f"child {child.pid} did not exit within {timeout} s"
        self._reaped[child.pid] = status
        return status

    def close(self) -> None:
        errors = []
        for child in reversed(self._children):
            try:
                if child.pid not in self._reaped:
                    _kill(child.pid)
                    status = _reap(child.pid, 10.0)
                    if status is None:
                        errors.append(child.pid)
                    else:
                        self._reaped[child.pid] = status
            finally:
                child.close()
        assert not errors, f"children not reaped: {errors}"


@pytest.fixture
def children() -> Iterator[Children]:
    started = Children()
    try:
        yield started
    finally:
        started.close()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return sock


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = _listening_socket()
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def other_listener() -> Iterator[socket.socket]:
    sock = _listening_socket()
    try:
        yield sock
    finally:
        sock.close()


def wait_detected(pid: int, inodes: frozenset[int], timeout: float = START_TIMEOUT) -> Waiting:
    deadline = time.monotonic() + timeout
    while True:
        found = readiness.find_waiting(pid, inodes)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"nothing of {pid} found waiting within {timeout} s; "
                f"tree {readiness.processes_of(pid)}, syscalls {_syscalls(pid)}"
            )
        time.sleep(0.01)


def assert_never_detected(
    pid: int, inodes: frozenset[int], in_syscall: set[str] | None = None
) -> None:
    """find_waiting stays None for QUIET_PERIOD (and the child was seen in ``in_syscall``)."""
    seen: set[str] = set()
    deadline = time.monotonic() + QUIET_PERIOD
    while time.monotonic() < deadline:
        assert _alive(pid), f"child {pid} died"
        found = readiness.find_waiting(pid, inodes)
        assert found is None, found
        seen |= _syscalls(pid)
        time.sleep(0.01)
    if in_syscall is not None:
        # Otherwise the negative case proves nothing: the child must really be waiting.
        assert seen & in_syscall, f"child {pid} never seen in {in_syscall}, only in {seen}"


# --- detection paths -----------------------------------------------------------------------------

POSITIVE = {
    "accept": (
        """
s = socket.socket(fileno=3)
ready()
s.accept()
""",
        ACCEPT,
    ),
    "select": (
        """
s = socket.socket(fileno=3)
ready()
select.select([s], [], [])
""",
        SELECT,
    ),
    "poll": (
        """
p = select.poll()
p.register(3, select.POLLIN)
ready()
p.poll()
""",
        POLL,
    ),
}


@pytest.mark.parametrize("kind", sorted(POSITIVE))
def test_blocking_wait_on_held_socket_is_detected(
    kind: str, children: Children, listener: socket.socket
) -> None:
    code, hows = POSITIVE[kind]
    child = children.start(code, [listener.fileno()])
    found = wait_detected(child.pid, readiness.socket_inodes([listener.fileno()]))
    assert found.how in hows
    assert (found.pid, found.tid, found.fd) == (child.pid, child.pid, 3)
    assert found.describe(child.pid) == f"process {child.pid} waiting on fd 3 ({found.how})"


def test_epoll_registration_is_enough_even_while_sleeping(
    children: Children, listener: socket.socket
) -> None:
    code = """
e = select.epoll()
e.register(3, select.EPOLLIN)
ready()
time.sleep(60)
"""
    child = children.start(code, [listener.fileno()])
    found = wait_detected(child.pid, readiness.socket_inodes([listener.fileno()]))
    assert found == Waiting(child.pid, child.pid, 3, "epoll")
    assert found.describe(child.pid) == f"process {child.pid} waiting on fd 3 (epoll)"


def test_epoll_wait_on_held_socket_is_detected(children: Children, listener: socket.socket) -> None:
    code = """
e = select.epoll()
e.register(3, select.EPOLLIN)
ready()
e.poll()
"""
    child = children.start(code, [listener.fileno()])
    found = wait_detected(child.pid, readiness.socket_inodes([listener.fileno()]))
    assert found == Waiting(child.pid, child.pid, 3, "epoll")


def test_asyncio_server_is_detected_through_its_epoll(
    children: Children, listener: socket.socket
) -> None:
    code = """
import asyncio

async def handle(reader, writer):
    writer.close()

async def main():
    server = await asyncio.start_server(handle, sock=socket.socket(fileno=3))
    ready()
    await asyncio.sleep(60)

asyncio.run(main())
"""
    child = children.start(code, [listener.fileno()])
    found = wait_detected(child.pid, readiness.socket_inodes([listener.fileno()]))
    assert (found.pid, found.fd, found.how) == (child.pid, 3, "epoll")


def test_thread_waiting_in_accept_is_detected(children: Children, listener: socket.socket) -> None:
    code = """
s = socket.socket(fileno=3)
threading.Thread(target=s.accept, daemon=True).start()
ready()
time.sleep(60)
"""
    child = children.start(code, [listener.fileno()])
    found = wait_detected(child.pid, readiness.socket_inodes([listener.fileno()]))
    assert found.how in ACCEPT
    assert (found.pid, found.fd) == (child.pid, 3)
    assert found.tid != child.pid, "the main thread sleeps; the waiting task is the other one"
    assert str(found.tid) in os.listdir(f"/proc/{child.pid}/task")


def test_grandchild_worker_is_detected(children: Children, listener: socket.socket) -> None:
    # The child (an "arbiter") holds fd 3 but only waits for its worker; the worker accepts.
    code = """
worker = subprocess.Popen(
    [sys.executable, "-c", "import socket; socket.socket(fileno=3).accept()"], pass_fds=[3]
)
ready()
worker.wait()
sys.exit(7)
"""
    child = children.start(code, [listener.fileno()])
    found = wait_detected(child.pid, readiness.socket_inodes([listener.fileno()]))
    try:
        assert found.pid != child.pid
        assert found.how in ACCEPT
        assert found.fd == 3
        with open(f"/proc/{found.pid}/stat", "rb") as f:
            stat = f.read()
        assert int(stat[stat.rfind(b")") + 2 :].split()[1]) == child.pid  # its parent
        assert found.pid in readiness.processes_of(child.pid)
        assert found.describe(child.pid) == f"worker {found.pid} waiting on fd 3 ({found.how})"
        assert found.describe(found.pid).startswith(f"process {found.pid} ")
    finally:
        _kill(found.pid)  # the child reaps it and exits by itself
    status = children.wait_exit(child)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7


def test_second_held_socket_is_detected(
    children: Children, listener: socket.socket, other_listener: socket.socket
) -> None:
    code = """
s = socket.socket(fileno=4)
ready()
s.accept()
"""
    fds = [listener.fileno(), other_listener.fileno()]
    child = children.start(code, fds)
    found = wait_detected(child.pid, readiness.socket_inodes(fds))
    assert (found.pid, found.fd) == (child.pid, 4)
    assert found.how in ACCEPT


def test_select_on_high_fd_among_others_is_detected(
    children: Children, listener: socket.socket
) -> None:
    # fd 200 is in the fourth long of the fd_set, after pipes in the first one.
    code = """
os.dup2(3, 200)
pipes = [os.pipe() for _ in range(3)]
ready()
select.select([r for r, w in pipes] + [200], [], [])
"""
    child = children.start(code, [listener.fileno()])
    found = wait_detected(child.pid, readiness.socket_inodes([listener.fileno()]))
    # fd 3 is held as well but not waited on: only 200 is.
    assert (found.pid, found.fd) == (child.pid, 200)
    assert found.how in SELECT


def test_poll_with_held_socket_last_among_many_is_detected(
    children: Children, listener: socket.socket
) -> None:
    code = """
p = select.poll()
pipes = [os.pipe() for _ in range(20)]
for r, w in pipes:
    p.register(r, select.POLLIN)
p.register(3, select.POLLIN | select.POLLPRI)
ready()
p.poll()
"""
    child = children.start(code, [listener.fileno()])
    found = wait_detected(child.pid, readiness.socket_inodes([listener.fileno()]))
    assert (found.pid, found.fd) == (child.pid, 3)
    assert found.how in POLL


# --- negative cases ------------------------------------------------------------------------------


def test_holding_and_sleeping_is_not_waiting(children: Children, listener: socket.socket) -> None:
    code = """
ready()
time.sleep(60)
"""
    child = children.start(code, [listener.fileno()])
    assert_never_detected(child.pid, readiness.socket_inodes([listener.fileno()]))


NEGATIVE = {
    "accept on its own socket": (
        """
own = socket.create_server(("127.0.0.1", 0))
ready()
own.accept()
""",
        ACCEPT,
    ),
    "select on a pipe": (
        """
r, w = os.pipe()
ready()
select.select([r], [], [])
""",
        SELECT,
    ),
    "poll on a pipe": (
        """
r, w = os.pipe()
p = select.poll()
p.register(r, select.POLLIN)
ready()
p.poll()
""",
        POLL,
    ),
    "select on its own socket": (
        """
own = socket.create_server(("127.0.0.1", 0))
ready()
select.select([own], [], [])
""",
        SELECT,
    ),
    "poll on its own socket": (
        """
own = socket.create_server(("127.0.0.1", 0))
p = select.poll()
p.register(own, select.POLLIN)
ready()
p.poll()
""",
        POLL,
    ),
    "poll for POLLOUT only": (
        """
p = select.poll()
p.register(3, select.POLLOUT)
ready()
p.poll()
""",
        POLL,
    ),
    "select in the write set only": (
        """
ready()
select.select([], [3], [])
""",
        SELECT,
    ),
    "epoll holding a pipe only, sleeping": (
        """
r, w = os.pipe()
e = select.epoll()
e.register(r, select.EPOLLIN)
ready()
time.sleep(60)
""",
        None,
    ),
    "epoll holding it for EPOLLOUT only": (
        """
e = select.epoll()
e.register(3, select.EPOLLOUT)
ready()
e.poll()
""",
        {"epoll_wait", "epoll_pwait", "epoll_pwait2"},
    ),
    "epoll holding a pipe only, in epoll_wait": (
        """
r, w = os.pipe()
e = select.epoll()
e.register(r, select.EPOLLIN)
ready()
e.poll()
""",
        {"epoll_wait", "epoll_pwait", "epoll_pwait2"},
    ),
}


@pytest.mark.parametrize("kind", sorted(NEGATIVE))
def test_waiting_on_something_else_is_not_waiting(
    kind: str, children: Children, listener: socket.socket
) -> None:
    code, in_syscall = NEGATIVE[kind]
    child = children.start(code, [listener.fileno()])
    assert_never_detected(child.pid, readiness.socket_inodes([listener.fileno()]), in_syscall)


def test_accept_on_a_handed_socket_that_is_not_held_is_not_waiting(
    children: Children, listener: socket.socket, other_listener: socket.socket
) -> None:
    # Both are passed; only the first counts as held: the inodes decide, not the fd numbers.
    code = """
s = socket.socket(fileno=4)
ready()
s.accept()
"""
    child = children.start(code, [listener.fileno(), other_listener.fileno()])
    assert_never_detected(child.pid, readiness.socket_inodes([listener.fileno()]), ACCEPT)


def test_waiting_without_holding_the_socket_is_not_waiting(
    children: Children, listener: socket.socket, other_listener: socket.socket
) -> None:
    # The child gets only the other socket and accepts on it (fd 3, same number as usual).
    code = """
s = socket.socket(fileno=3)
ready()
s.accept()
"""
    child = children.start(code, [other_listener.fileno()])
    assert_never_detected(child.pid, readiness.socket_inodes([listener.fileno()]), ACCEPT)


def test_find_waiting_of_a_missing_process_is_none(listener: socket.socket) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.DEVNULL)
    try:
        gone.wait(timeout=START_TIMEOUT)
    finally:
        if gone.returncode is None:
            gone.kill()
            gone.wait(timeout=10)
    assert readiness.find_waiting(gone.pid, readiness.socket_inodes([listener.fileno()])) is None


# --- socket_inodes and processes_of --------------------------------------------------------------


def test_socket_inodes_match_proc(listener: socket.socket, other_listener: socket.socket) -> None:
    fds = [listener.fileno(), other_listener.fileno()]
    expected = set()
    for fd in fds:
        target = os.readlink(f"/proc/self/fd/{fd}")
        assert target.startswith("socket:[")
        expected.add(int(target[len("socket:[") : -1]))
    assert readiness.socket_inodes(fds) == frozenset(expected)
    assert len(expected) == 2
    assert readiness.socket_inodes([]) == frozenset()


@pytest.fixture(params=["children files", "scan of /proc"])
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways processes_of finds a tree: /proc/PID/task/TID/children, or every stat."""
    if request.param == "children files":
        if not os.path.exists(f"/proc/self/task/{os.getpid()}/children"):
            pytest.skip("this kernel has no /proc/PID/task/TID/children")
        monkeypatch.setattr(readiness, "_HAS_CHILDREN_FILES", [True])
    else:
        monkeypatch.setattr(readiness, "_HAS_CHILDREN_FILES", [False])
    return str(request.param)


def test_processes_of_tree_and_group(
    children: Children, listener: socket.socket, walk: str
) -> None:
    code = """
sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
in_group = subprocess.Popen(sleep)
# In a process group of its own: found only as a descendant.
own_group = subprocess.Popen(sleep, process_group=0)
os.write(READY_FD, f"{in_group.pid} {own_group.pid}".encode())
in_group.wait()
own_group.wait()
sys.exit(5)
"""
    # The ready pipe carries the grandchildren's pids here: read it directly.
    read_end, write_end = os.pipe()
    try:
        try:
            child = spawn.spawn(
                [sys.executable, "-c", PRELUDE + code],
                fds=[listener.fileno(), write_end],
                names=["http", "ready"],
            )
        finally:
            os.close(write_end)
        children.adopt(child)
        ready, _, _ = select.select([read_end], [], [], START_TIMEOUT)
        assert ready, "child did not report its grandchildren"
        grandchildren = [int(pid) for pid in os.read(read_end, 64).split()]
        assert len(grandchildren) == 2
    finally:
        os.close(read_end)

    # A process of ours moved into the child's process group: a member, not a descendant.
    member = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        stdin=subprocess.DEVNULL,
        process_group=child.pid,
    )
    # A process of ours elsewhere: unrelated to the child.
    unrelated = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        stdin=subprocess.DEVNULL,
        process_group=0,
    )
    try:
        assert os.getpgid(member.pid) == child.pid
        found = readiness.processes_of(child.pid)
        assert found[0] == child.pid, "root first"
        assert os.getpgid(grandchildren[1]) == grandchildren[1] != child.pid
        assert set(grandchildren) <= set(found)
        assert member.pid in found
        assert unrelated.pid not in found
        assert os.getpid() not in found
        assert 1 not in found
        assert len(found) == len(set(found))
        assert set(found) == {child.pid, *grandchildren, member.pid}
    finally:
        for proc in (member, unrelated):
            proc.kill()
            proc.wait(timeout=10)
        for pid in grandchildren:
            _kill(pid)  # reaped by the child, which then exits
    status = children.wait_exit(child)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 5


def test_processes_of_a_missing_process_is_empty(walk: str) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.DEVNULL)
    try:
        gone.wait(timeout=START_TIMEOUT)
    finally:
        if gone.returncode is None:
            gone.kill()
            gone.wait(timeout=10)
    assert readiness.processes_of(gone.pid) == []


def test_processes_of_self_starts_with_self(walk: str) -> None:
    found = readiness.processes_of(os.getpid())
    assert found[0] == os.getpid()
    assert os.getppid() not in found


# --- --ready parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["auto", "notify", "none"])
def test_parse_ready_mode_keywords(text: str) -> None:
    mode = parse_ready_mode(text)
    assert mode == ReadyMode(text)
    assert str(mode) == text


@pytest.mark.parametrize(
    ("text", "delay"),
    [("delay:1.5", 1.5), ("delay:0", 0.0), ("delay:10", 10.0), ("delay:0.25", 0.25)],
)
def test_parse_ready_mode_delay(text: str, delay: float) -> None:
    mode = parse_ready_mode(text)
    assert mode == ReadyMode("delay", delay)
    assert mode.kind == "delay" and mode.delay == delay


@pytest.mark.parametrize(
    "text",
    [
        "delay:",
        "delay:-1",
        "delay:nan",
        "delay:inf",
        "delay:-inf",
        "delay:abc",
        "bogus",
        "",
        "AUTO",
        "delay",
        "auto ",
    ],
)
def test_parse_ready_mode_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_ready_mode(text)
    assert text in str(info.value)


def test_str_of_delay_mode() -> None:
    assert str(ReadyMode("delay", 1.5)) == "delay:1.5"
    assert str(ReadyMode("delay", 2.0)) == "delay:2"


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0, allow_nan=False, allow_infinity=False))
@example(0.1)
@example(1e-7)
@example(1234567.0)
@example(1.2345678)
def test_delay_mode_round_trips_through_str(delay: float) -> None:
    assert math.isfinite(delay) and delay >= 0
    mode = ReadyMode("delay", delay)
    assert parse_ready_mode(str(mode)) == mode


def test_probe_looks_less_often_as_a_boot_goes_on() -> None:
    """Every ``base`` at first, then a tenth of the time booted, never more than 5 × base."""
    probe = readiness.Probe(os.getpid(), frozenset())
    base = 0.005
    assert probe.interval(base) == base
    probe.started -= 0.1  # booted 0.1 s: a tenth is 10 ms
    assert probe.interval(base) == pytest.approx(0.01, abs=0.001)
    probe.started -= 10.0
    assert probe.interval(base) == 5 * base


# --- sibling workers ------------------------------------------------------------------------

#: An "arbiter" that holds fd 3 and starts two workers of the same executable: the first
#: accepts at once, the second only once the file named by argv[1] exists. A third child,
#: another executable (``sleep``), holds fd 3 too, as a ``tee`` in a pipeline would.
SIBLINGS = """
late = sys.argv[1]
first = subprocess.Popen(
    [sys.executable, "-c", "import socket; socket.socket(fileno=3).accept()"], pass_fds=[3]
)
second = subprocess.Popen([sys.executable, "-c", (
    "import os, socket, sys, time\\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\\n"
    "socket.socket(fileno=3).accept()\\n"
), late], pass_fds=[3])
other = subprocess.Popen(["sleep", "60"], pass_fds=[3])
ready()
first.wait()
"""


def _probe_until(probe: readiness.Probe, timeout: float) -> Waiting | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe.check()
        if found is not None:
            return found
        time.sleep(0.01)
    return None


def _workers(pid: int) -> list[int]:
    return [p for p in readiness.processes_of(pid) if p != pid]


@pytest.fixture
def siblings(children: Children, listener: socket.socket, tmp_path) -> Iterator[tuple[int, str]]:
    late = str(tmp_path / "late")
    child = children.start(SIBLINGS.replace("sys.argv[1]", repr(late), 1), [listener.fileno()])
    try:
        yield child.pid, late
    finally:
        for pid in _workers(child.pid):
            _kill(pid)  # the arbiter reaps its first worker; the rest are orphans of it


def test_auto_waits_for_the_sibling_workers(
    siblings: tuple[int, str], listener: socket.socket
) -> None:
    """One worker accepting is not ready while its sibling boots; both are, and the other
    executable holding the fd never counted."""
    pid, late = siblings
    inodes = readiness.socket_inodes([listener.fileno()])
    wait_detected(pid, inodes)  # the first worker waits: by the one-waiter rule, ready
    probe = readiness.Probe(pid, inodes, rescan=0.01, settle=60.0)
    assert _probe_until(probe, QUIET_PERIOD) is None  # its sibling does not wait yet
    open(late, "w").close()
    found = _probe_until(probe, START_TIMEOUT)
    assert found is not None and found.how.endswith("; 2 workers waiting"), found


def test_auto_waits_for_a_sibling_only_settle_seconds(
    siblings: tuple[int, str], listener: socket.socket
) -> None:
    pid, _late = siblings  # the second worker never waits
    inodes = readiness.socket_inodes([listener.fileno()])
    wait_detected(pid, inodes)
    probe = readiness.Probe(pid, inodes, rescan=0.01, settle=0.3)
    began = time.monotonic()
    found = _probe_until(probe, START_TIMEOUT)
    assert found is not None and time.monotonic() - began >= 0.3
    assert found.how.endswith("; 1 of its sibling workers not waiting after 0.3 s"), found


def test_auto_counts_the_hooks_word_for_its_process(
    children: Children, listener: socket.socket
) -> None:
    """A process that says it waits (the hook's message) is taken at its word, by pid."""
    child = children.start("ready()\ntime.sleep(60)\n", [listener.fileno()])
    watch = readiness.Watch(
        ReadyMode("auto"), child.pid, readiness.socket_inodes([listener.fileno()]), 0.01
    )
    assert watch.check() is None  # it sleeps: /proc shows no wait
    assert watch.message("ZOCKET_WAITING=3", child.pid) == "hook: waiting on fd 3"
