"""The hook's Twisted adapter (zocket/_hook/_zocket_twisted.py), against a real reactor.

Twisted's stop handler stops the reactor, and a stopping reactor disconnects
every connection it holds: one it accepted just before the signal, whose
request it had not read, was closed unanswered (the `twist` recipe lost two
requests in a CI run so). A twisted.web WSGI site (the recipe's server, on the
default reactor) serves the test's own listening socket under the hook, as
zocket hands it over; the test makes it take connections, signals it, and
looks at what each client got and what stayed in the queue.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from support import answer, assert_taken_answered_late_queued, hooked_process, wait_for

PY = sys.executable

SITE = r"""
import os, signal, socket, sys, time

from twisted.internet import reactor
from twisted.web import server, wsgi


def fork_helper():  # in the reactor's thread: a child with its own stop handler, idle
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, lambda *args: os._exit(0))
        while True:
            time.sleep(0.05)
    print(f"helper {pid}", flush=True)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":  # an answer that takes a while to compute
        print("computing", flush=True)
        time.sleep(0.5)
    if environ["PATH_INFO"] == "/fork":
        reactor.callFromThread(fork_helper)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


resource = wsgi.WSGIResource(reactor, reactor.getThreadPool(), app)
fd = int(sys.argv[1])
os.set_blocking(fd, False)  # as twisted's systemd endpoint does
reactor.adoptStreamPort(fd, socket.AF_INET, server.Site(resource))
print("serving", flush=True)
reactor.run()
"""

#: How long after the signal the clients send their requests: well inside the hook's
#: grace (0.1 s), well after a reactor that stops at once has closed what it held.
AFTER_SIGNAL = 0.02


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_connections_taken_before_the_stop_are_answered_later_ones_wait(
    signum: signal.Signals,
) -> None:
    with hooked_process([PY, "-c", SITE, "{fd}"]) as running:
        assert running.line() == "serving", running.stderr()
        warm = running.connect()  # the reactor accepts from the held socket once
        warm.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        assert answer(warm).startswith(b"HTTP/1.1 200 OK")
        taken = [running.connect() for _ in range(5)]
        wait_for(lambda: running.backlog() == 0, 20, message="twisted to accept")
        os.kill(running.process.pid, signum)
        time.sleep(AFTER_SIGNAL)
        late = [running.connect() for _ in range(3)]
        assert_taken_answered_late_queued(running, taken, late)
        assert running.process.returncode == 0, running.stderr()


def test_an_answer_being_computed_at_the_stop_is_sent_before_the_reactor_stops() -> None:
    """A WSGI answer that takes longer than the grace: Twisted's stop would disconnect it
    (and then wait for the thread that computes it, which waits for the reactor)."""
    with hooked_process([PY, "-c", SITE, "{fd}"]) as running:
        assert running.line() == "serving", running.stderr()
        client = running.connect()
        client.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        assert running.line() == "computing", running.stderr()
        os.kill(running.process.pid, signal.SIGTERM)
        got = answer(client)
        assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"ok\n"), got
        assert running.process.wait(20) == 0, running.stderr()


def test_a_child_forked_by_the_reactor_runs_its_own_stop_handler_at_once() -> None:
    """The child inherits the record of a serving reactor that never runs there: its
    handler must not be put off into that reactor (it would never run)."""
    with hooked_process([PY, "-c", SITE, "{fd}"]) as running:
        assert running.line() == "serving", running.stderr()
        client = running.connect()
        client.sendall(b"GET /fork HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        assert answer(client).startswith(b"HTTP/1.1 200 OK")
        line = running.line()
        assert line.startswith("helper "), line
        helper = int(line.split()[1])
        try:
            os.kill(helper, signal.SIGTERM)
            wait_for(lambda: zombie(helper), 10, message="the helper to end by its own handler")
        finally:
            if not zombie(helper):
                os.kill(helper, signal.SIGKILL)


def zombie(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or waiting for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
