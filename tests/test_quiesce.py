"""zocket.quiesce: a stop signal reaches a server only when it holds no accepted connection.

Each test starts a real Python process (no hook, its own process group) that
serves on a listening socket the test holds too, as zocket holds it.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from support import proc_stat
from zocket import quiesce
from zocket.loop import Loop

#: Accepts one connection at a time on the fd its argument names and holds it until the client closes it;
#: says "took" and "closed" on stdout. SIGTERM is at its default: it dies of it at once.
SERVER = r"""
import socket, sys
listener = socket.socket(fileno=int(sys.argv[1]))
print("up", flush=True)
while True:
    conn, _ = listener.accept()
    print("took", flush=True)
    while conn.recv(100):
        pass
    conn.close()
    print("closed", flush=True)
"""


def start(listener: socket.socket) -> subprocess.Popen[str]:
    """The server above, on ``listener`` (the fd of the same number)."""
    return subprocess.Popen(
        [sys.executable, "-c", SERVER, str(listener.fileno())],
        pass_fds=[listener.fileno()],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=tempfile.gettempdir(),
    )


@contextmanager
def running() -> Iterator[tuple[subprocess.Popen[str], socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    child = start(listener)
    try:
        assert child.stdout is not None
        assert line(child) == "up\n"
        yield child, listener
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
        listener.close()


def line(child: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """The child's next line on stdout, or an AssertionError after ``timeout``."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    assert ready, f"no line from {child.pid} in {timeout} s"
    return child.stdout.readline()


def look(pgid: int, inodes: frozenset[int], names: frozenset[tuple[int, object]]) -> int:
    """stop_if_idle, again while a task was slow to stop (a busy machine)."""
    for _ in range(50):
        held = quiesce.stop_if_idle(pgid, signal.SIGTERM, inodes, names)
        if held != quiesce.UNFROZEN:
            return held
    raise AssertionError(f"group {pgid} never froze")


def held(listener: socket.socket) -> tuple[frozenset[int], frozenset[tuple[int, object]]]:
    return frozenset({os.fstat(listener.fileno()).st_ino}), quiesce.held_names([listener.fileno()])


def taken(child: subprocess.Popen[str], listener: socket.socket) -> socket.socket:
    """A client connection, once the server says it took it."""
    client = socket.create_connection(listener.getsockname())
    assert line(child) == "took\n"
    return client


def quiet_stops(
    listener: socket.socket,
    inodes: frozenset[int],
    log: Callable[[str], None] = print,
    stop_timeout: float = 10.0,
) -> tuple[Loop, quiesce.QuietStops]:
    loop = Loop()
    return loop, quiesce.QuietStops(loop, log, [listener.fileno()], inodes, stop_timeout)


def drive(loop: Loop, stops: quiesce.QuietStops) -> None:
    """Run the loop (a look every few ms, on its timer) until no stop is waiting."""
    began = time.monotonic()
    while stops._pending and time.monotonic() - began < 10:
        loop.step()


def running_not_stopped(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("T", "t", "Z")


def test_a_server_holding_a_connection_is_not_signalled_and_runs_on() -> None:
    with running() as (child, listener):
        inodes, names = held(listener)
        client = taken(child, listener)
        assert look(child.pid, inodes, names) == 1
        assert child.poll() is None and running_not_stopped(child.pid)
        client.close()  # the server finishes with it, and is then signalled
        assert line(child) == "closed\n"
        assert look(child.pid, inodes, names) == 0
        assert child.wait(timeout=10) == -signal.SIGTERM


def test_a_connection_that_did_not_come_from_a_held_socket_does_not_count() -> None:
    other = socket.create_server(("127.0.0.1", 0))
    with running() as (child, listener), other:
        # Its connection to ``other`` comes from the held socket of neither.
        client = taken(child, listener)
        _, names = held(other)
        inodes = frozenset({os.fstat(listener.fileno()).st_ino})
        assert look(child.pid, inodes, names) == 0
        assert child.wait(timeout=10) == -signal.SIGTERM
        client.close()


def test_a_connection_still_held_at_the_bound_is_signalled_anyway_and_said() -> None:
    with running() as (child, listener):
        inodes, _ = held(listener)
        client = taken(child, listener)
        lines: list[str] = []
        loop, stops = quiet_stops(listener, inodes, lines.append, 0.2)
        began = time.monotonic()
        stops.signal(7, child.pid, signal.SIGTERM)
        assert child.poll() is None  # an idle keep-alive connection, say: it waits
        drive(loop, stops)
        assert child.wait(timeout=10) == -signal.SIGTERM
        assert time.monotonic() - began >= 0.1  # half the stop timeout of 0.2 s
        assert lines == ["generation 7 still held 1 connection(s) after 0.1 s: signalling it anyway"]
        client.close()


def test_sigkill_is_sent_at_once_and_ends_the_wait() -> None:
    with running() as (child, listener):
        inodes, _ = held(listener)
        client = taken(child, listener)
        _loop, stops = quiet_stops(listener, inodes)
        stops.signal(3, child.pid, signal.SIGTERM)
        stops.signal(3, child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert not stops._pending  # no look is left waiting
        client.close()


def test_zocket_s_own_stop_signal_replaces_the_one_waiting() -> None:
    with running() as (child, listener):
        inodes, _ = held(listener)
        client = taken(child, listener)
        loop, stops = quiet_stops(listener, inodes)
        stops.signal(4, child.pid, signal.SIGTERM)
        stops.signal(4, child.pid, signal.SIGUSR1)  # zocket told to stop meanwhile, say
        client.close()
        drive(loop, stops)
        assert child.wait(timeout=10) == -signal.SIGUSR1


def test_a_signal_still_waiting_when_the_leader_exits_reaches_the_group() -> None:
    with running() as (child, listener):
        inodes, _ = held(listener)
        client = taken(child, listener)
        _loop, stops = quiet_stops(listener, inodes)
        stops.signal(5, child.pid, signal.SIGTERM)
        assert stops._pending
        stops.exited(5)  # as the holder says when the leader's pidfd is readable
        assert not stops._pending
        assert child.wait(timeout=10) == -signal.SIGTERM
        client.close()


def test_python_processes_with_the_hook_are_signalled_at_once() -> None:
    """The hook's drain finishes what they took: no look, no wait."""
    with running() as (child, listener):
        inodes, _ = held(listener)
        client = taken(child, listener)
        _loop, stops = quiet_stops(listener, inodes)
        stops._hooked = True
        stops.signal(6, child.pid, signal.SIGTERM)
        assert not stops._pending
        assert child.wait(timeout=10) == -signal.SIGTERM  # with its connection open
        client.close()


def test_a_main_thread_that_blocks_the_signal_gets_it_as_a_process() -> None:
    """Sent to a main thread that blocks it, the signal would wait there for ever."""
    script = (
        "import signal, threading\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
        "t = threading.Thread(target=lambda: print('got', signal.sigwait({signal.SIGTERM}),"
        " flush=True))\n"
        "t.start()\n"
        "print('up', flush=True)\n"
        "t.join()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
        cwd=tempfile.gettempdir(),
    )
    try:
        assert line(child) == "up\n"
        quiesce._signal_main_thread(child.pid, signal.SIGTERM)
        assert line(child) == f"got {int(signal.SIGTERM)}\n"
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
