"""The hook's stop guard (zocket/_hook/_zocket_stop.py), one signal at a time.

A small socketserver probe runs under the hook (not under zocket: the test
holds the listening socket itself and hands it over the way zocket does, with
ZOCKET_HOOK_FDS), takes one request, says ``holding`` on stdout and answers a
moment later. The test signals it while it holds that request and checks what
the client got and how the process ended. Whatever the probe did not accept
is still in the test's own listening socket afterwards: nothing queued is
lost when a generation stops.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from support import HookedProcess, answer, hooked_process
from zocket import holder

PY = sys.executable

PROBE = r"""
import os, signal, socket, socketserver, sys, time

port, mode, hold = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
if mode == "own-handler":
    signal.signal(signal.SIGTERM, lambda *args: sys.exit(7))


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        print("holding", flush=True)
        time.sleep(hold)
        self.wfile.write(b"answered\n")


base = socketserver.ThreadingTCPServer if mode == "threaded" else socketserver.TCPServer
base.daemon_threads = True
with base(("127.0.0.1", port), Handler) as server:
    held_inode = int(os.environ["ZOCKET_HOOK_FDS"].split(":")[1])
    adopted = os.fstat(server.socket.fileno()).st_ino == held_inode
    print("serving" if adopted else "not adopted", flush=True)
    server.serve_forever()
"""


@contextmanager
def probe(mode: str = "plain", hold: float = 0.3) -> Iterator[HookedProcess]:
    """The probe, serving the test's listening socket through the hook."""
    with hooked_process([PY, "-c", PROBE, "{port}", mode, str(hold)]) as running:
        assert running.line() == "serving", running.stderr()
        yield running


def request(running: HookedProcess) -> socket.socket:
    """A client that has sent its request and waits for the answer."""
    client = running.connect()
    client.sendall(b"GET\n")
    return client


@pytest.mark.parametrize("mode", ["plain", "threaded"])
def test_sigterm_lets_the_held_request_finish(mode: str) -> None:
    """SIGTERM's default: the request is answered, then the process dies of SIGTERM."""
    with probe(mode) as running:
        client = request(running)
        assert running.line() == "holding"
        running.process.send_signal(signal.SIGTERM)
        assert answer(client) == b"answered\n"
        assert running.process.wait(20) == -signal.SIGTERM, running.stderr()


def test_sigint_waits_for_the_hand_off() -> None:
    """KeyboardInterrupt comes once the main thread has answered, not in the middle."""
    with probe() as running:
        client = request(running)
        assert running.line() == "holding"
        running.process.send_signal(signal.SIGINT)
        assert answer(client) == b"answered\n"
        # An uncaught KeyboardInterrupt ends Python by SIGINT, after its traceback.
        assert running.process.wait(20) == -signal.SIGINT
        assert "KeyboardInterrupt" in running.stderr()


def test_sigterm_while_idle_ends_the_process_and_leaves_the_queue() -> None:
    with probe() as running:
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(20) == -signal.SIGTERM
        # A connection made now waits in the kernel for whoever accepts next.
        with request(running):
            assert running.left_in_queue() == [b"GET\n"]


def test_what_arrives_during_the_drain_is_not_lost() -> None:
    """A connection made while the probe drains is answered by it or still queued."""
    with probe("threaded", hold=0.5) as running:
        first = request(running)
        assert running.line() == "holding"
        running.process.send_signal(signal.SIGTERM)
        second = request(running)
        assert answer(first) == b"answered\n"
        assert running.process.wait(20) == -signal.SIGTERM
        second.settimeout(0.0)
        try:
            got = second.recv(100)
        except BlockingIOError:
            got = b""  # no answer (yet): then it must still wait in the backlog
        with second:
            if got != b"answered\n":
                assert got == b"" and running.left_in_queue() == [b"GET\n"]


def test_a_request_held_too_long_does_not_delay_the_stop_forever() -> None:
    """The wait for the hand-off is bounded: the signal acts after a second anyway."""
    with probe(hold=30) as running:
        client = request(running)
        assert running.line() == "holding"
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(10) == -signal.SIGTERM
        assert answer(client) in (b"", b"<reset>")


def test_an_apps_own_handler_is_left_alone() -> None:
    """The probe installed its own SIGTERM handler (sys.exit(7)): it runs at once."""
    with probe("own-handler", hold=30) as running:
        client = request(running)
        assert running.line() == "holding"
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(10) == 7
        client.close()


TICKS_PROBE = r"""
import json, os, select, signal, socket, socketserver, sys, threading

port = int(sys.argv[1])


class Tick(Exception):
    pass


armed = [False]


def tick(*args):
    if armed[0]:
        raise Tick


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"hi\n")


answers = {"ticking": [], "after": []}
ticking_done = threading.Event()
disarmed = threading.Event()  # the loop has seen ticking_done: no Tick from now on


def clients():
    for phase, count in (("ticking", 300), ("after", 20)):
        if phase == "after":
            disarmed.wait(10)
        for _ in range(count):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as client:
                    answers[phase].append(client.recv(10))
            except OSError as exc:
                answers[phase].append(repr(exc).encode())
        ticking_done.set()


with socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler) as server:
    server.daemon_threads = True
    fd = server.socket.fileno()
    inode = os.fstat(fd).st_ino
    signal.signal(signal.SIGALRM, tick)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    loading = threading.Thread(target=clients)
    loading.start()
    server._handle_request_noblock()  # the first one unarmed: the hook's guard is set up
    ticks = 0
    while loading.is_alive():
        try:
            armed[0] = not ticking_done.is_set()
            if not armed[0]:
                disarmed.set()
            try:
                if select.select([server], [], [], 0.05)[0]:  # as serve_forever does
                    server._handle_request_noblock()
            finally:
                armed[0] = False
        except Tick:
            ticks += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        intact = os.fstat(fd).st_ino == inode
    except OSError:
        intact = False
    print(json.dumps({
        "intact": intact,
        "ticks": ticks,
        "answered": sum(a == b"hi\n" for a in answers["ticking"]),
        "after": [a.decode() for a in answers["after"]],
    }))
"""


def test_exceptions_from_signal_handlers_never_close_the_held_socket() -> None:
    """An app's handler raising at any point of accept-and-dispatch (here every ms) may
    lose the connection in hand (as with socket.accept() itself, the exception can
    come between accept4 and the socket object), but the held socket stays open and
    answers every connection once the ticks stop."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    with listener:
        fd = listener.fileno()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOCKET_", "LISTEN_"))}
        env.update(PYTHONPATH=holder.HOOK_DIR, ZOCKET_HOOK_FDS=f"{fd}:{os.fstat(fd).st_ino}")
        result = subprocess.run(
            [PY, "-c", TICKS_PROBE, str(listener.getsockname()[1])],
            env=env,
            pass_fds=[fd],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert b"zocket hook" not in result.stderr, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["ticks"] > 0 and report["answered"] > 0, report
    assert report["intact"], report
    assert report["after"] == ["hi\n"] * 20, report
