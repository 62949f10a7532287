"""Stop signals in a process that holds a zocket socket (zocket/_hook/_zocket_signals.py).

A generation told to stop must take no new connection from the shared socket
(the next generation is accepting it), must not close a connection it took a
moment before as if it were idle (uvicorn and hypercorn do when their shutdown
begins before they read its request), and must not die of SIGTERM's default
with requests in flight (hypercorn's workers leave SIGTERM at its default).

Most tests here hold the listening socket themselves and hand it over the way
zocket does (ZOCKET_HOOK_FDS, the hook on PYTHONPATH), so that what a stopped
process left in the queue can be accepted by the test afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from support import (
    REQUEST,
    HookedProcess,
    ZocketProcess,
    answer,
    answers_ok,
    assert_taken_answered_late_queued,
    held_fds,
    hooked_process,
    server_command,
    start_in,
    wait_for,
)

PY = sys.executable

#: An asyncio server of the standard library, stopped the way uvicorn and hypercorn stop:
#: stop accepting, close every connection that has not sent a request yet, let the others
#: finish. ``mode`` says how it learns of SIGTERM: loop.add_signal_handler (hypercorn,
#: aiohttp), signal.signal (uvicorn), or not at all (SIGTERM's default).
ASYNCIO_PROBE = r"""
import asyncio, os, signal, socket, sys

fd, mode, hold = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
idle, busy = set(), set()


async def serve(reader, writer):
    idle.add(writer)
    print("accepted", flush=True)
    try:
        await reader.readline()
    except ConnectionError:
        return
    idle.discard(writer)
    busy.add(writer)
    print("holding", flush=True)
    await asyncio.sleep(hold)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nanswered\n")
    await writer.drain()
    writer.close()
    busy.discard(writer)


async def main():
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    if mode == "add_signal_handler":
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
    elif mode == "signal":
        signal.signal(signal.SIGTERM, lambda *args: loop.call_soon_threadsafe(stopping.set))
    listener = socket.socket(fileno=fd)
    server = await asyncio.start_server(serve, sock=listener)
    print("serving", type(listener).__name__, flush=True)
    await stopping.wait()
    server.close()
    for writer in list(idle):
        writer.transport.abort()
    while busy:
        await asyncio.sleep(0.01)
    print("stopped", flush=True)


asyncio.run(main())
"""


def accepted_idle(running: HookedProcess, count: int) -> list[socket.socket]:
    """``count`` connections the server has accepted and got no request from yet."""
    clients = [running.connect() for _ in range(count)]
    wait_for(lambda: running.backlog() == 0, 20, message="the server to accept")
    return clients


@pytest.mark.parametrize("mode", ["add_signal_handler", "signal"])
def test_a_connection_taken_just_before_the_stop_is_answered(mode: str) -> None:
    """Accepted, then SIGTERM, then its request: the server reads it before stopping."""
    with hooked_process([PY, "-c", ASYNCIO_PROBE, "{fd}", mode, "0"]) as running:
        assert running.line() == "serving Heldsocket", running.stderr()
        clients = accepted_idle(running, 3)
        assert [running.line() for _ in clients] == ["accepted"] * 3
        running.process.send_signal(signal.SIGTERM)
        for client in clients:
            client.sendall(REQUEST)
        assert [answer(c).rsplit(b"\n", 2)[-2] for c in clients] == [b"answered"] * 3
        assert running.process.wait(20) == 0, running.stderr()


@pytest.mark.parametrize("mode", ["add_signal_handler", "signal", "default"])
def test_a_stopping_server_takes_no_new_connection(mode: str) -> None:
    """What arrives after SIGTERM waits in the held socket for the next generation."""
    with hooked_process([PY, "-c", ASYNCIO_PROBE, "{fd}", mode, "0"]) as running:
        assert running.line() == "serving Heldsocket", running.stderr()
        running.process.send_signal(signal.SIGTERM)
        late = [running.connect() for _ in range(5)]
        for client in late:
            client.sendall(REQUEST)
        running.process.wait(20)
        assert running.left_in_queue() == [REQUEST] * 5
        for client in late:
            client.close()


def test_sigterm_at_its_default_finishes_the_requests_in_flight() -> None:
    """No handler at all: the request in flight is answered, then SIGTERM ends the process."""
    with hooked_process([PY, "-c", ASYNCIO_PROBE, "{fd}", "default", "0.5"]) as running:
        assert running.line() == "serving Heldsocket", running.stderr()
        client = running.connect()
        client.sendall(REQUEST)
        assert [running.line(), running.line()] == ["accepted", "holding"]
        running.process.send_signal(signal.SIGTERM)
        assert answer(client).endswith(b"answered\n")
        assert running.process.wait(20) == -signal.SIGTERM


def test_sigterm_at_its_default_waits_no_longer_than_the_stop_timeout() -> None:
    """A request that would take 30 s does not hold the process past ZOCKET_STOP_TIMEOUT."""
    argv = [PY, "-c", ASYNCIO_PROBE, "{fd}", "default", "30"]
    with hooked_process(argv, extra_env={"ZOCKET_STOP_TIMEOUT": "1"}) as running:
        assert running.line() == "serving Heldsocket", running.stderr()
        client = running.connect()
        client.sendall(REQUEST)
        assert [running.line(), running.line()] == ["accepted", "holding"]
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(10) == -signal.SIGTERM  # not after the 30 s answer
        assert answer(client) in (b"", b"<reset>")


SIGNALS_PROBE = r"""
import json, signal, socket, sys

def mine(signum, frame):
    pass

seen = {"before": str(signal.getsignal(signal.SIGTERM))}
listener = socket.socket(fileno=int(sys.argv[1]))
seen["held"] = type(listener).__name__
seen["after_hold"] = str(signal.getsignal(signal.SIGTERM))
seen["set_returns"] = str(signal.signal(signal.SIGTERM, mine))
seen["get_returns_mine"] = signal.getsignal(signal.SIGTERM) is mine
seen["reset_returns_mine"] = signal.signal(signal.SIGTERM, signal.SIG_DFL) is mine
seen["int_is_default"] = signal.getsignal(signal.SIGINT) is signal.default_int_handler
print(json.dumps(seen))
"""


def test_the_app_sees_its_own_handlers() -> None:
    with hooked_process([PY, "-c", SIGNALS_PROBE, "{fd}"]) as running:
        assert running.process.wait(20) == 0, running.stderr()
        assert running.process.stdout is not None
        seen = json.loads(running.process.stdout.read())
    assert seen == {
        "before": str(signal.SIG_DFL),
        "held": "Heldsocket",
        "after_hold": str(signal.SIG_DFL),
        "set_returns": str(signal.SIG_DFL),
        "get_returns_mine": True,
        "reset_returns_mine": True,
        "int_is_default": True,
    }


ASGI_APP = r"""
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    body = f"pid {os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_uvicorn_answers_what_it_took_just_before_sigterm(tmp_path: Path, loop: str) -> None:
    """uvicorn closes connections without a request when its shutdown begins. uvloop
    (uvicorn[standard]) accepts in libuv: the hook closes its server on the held socket."""
    pytest.importorskip(loop)
    (tmp_path / "asgi.py").write_text(ASGI_APP)
    command = [*server_command("uvicorn"), "--fd", "{fd}", "--loop", loop, "--no-access-log"]
    with hooked_process([*command, "asgi:app"], cwd=tmp_path) as running:
        wait_for(lambda: answers_ok(running.port), 20, message="uvicorn to answer")
        clients = accepted_idle(running, 5)
        inode = os.fstat(running.fd).st_ino
        before = len(held_fds(running.process.pid, inode))
        running.process.send_signal(signal.SIGTERM)
        if loop == "uvloop":  # its server is closed in its loop, a moment after the signal

            def closed() -> bool:
                return len(held_fds(running.process.pid, inode)) < before

            wait_for(closed, 20, interval=0.002, message="uvloop's server to close")
        late = [running.connect() for _ in range(5)]
        assert_taken_answered_late_queued(running, clients, late)


@pytest.mark.parametrize("worker_class", ["asyncio", "uvloop"])
def test_hypercorn_workers_finish_a_request_across_a_sighup(
    tmp_path: Path, worker_class: str
) -> None:
    """hypercorn's worker leaves SIGTERM at its default and zocket signals the whole
    group: without the hook the worker dies with the request, after it the request
    is answered by the old generation (with uvloop, whose connections the hook counts
    from the worker's own sockets)."""
    pytest.importorskip(worker_class)
    (tmp_path / "asgi.py").write_text(ASGI_APP)
    command = [*server_command("hypercorn"), "--bind", "fd://{fd}", "-k", worker_class]
    command.append("asgi:app")
    zocket: ZocketProcess
    with start_in(tmp_path, ["--", *command]) as zocket:
        wait_for(lambda: answers_ok(zocket.port), 20, message="hypercorn to answer")
        conn = socket.create_connection(("127.0.0.1", zocket.port), timeout=20)
        conn.sendall(REQUEST.replace(b"GET / ", b"GET /slow "))
        time.sleep(0.2)  # let it reach the app (if not, the old generation answers it anyway)
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 1 stopped \(exit 0\)", 20)
        got = answer(conn)
        assert got.startswith(b"HTTP/1.1 200"), got
        assert zocket.stop() in (0, 128 + signal.SIGTERM)


KEYWORDS_PROBE = r"""
import asyncio, json, socket, ssl, sys

port = int(sys.argv[1])
made = {}
made["keywords"] = type(socket.socket(family=socket.AF_INET, type=socket.SOCK_STREAM)).__name__
tls = ssl.create_default_context().wrap_socket(socket.socket(), server_hostname="localhost")
made["tls"] = type(tls).__name__


async def client():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()
    return "connected"

made["asyncio"] = asyncio.run(client())
print(json.dumps(made))
"""


def test_sockets_the_standard_library_makes_by_keyword_are_untouched() -> None:
    """ssl and asyncio call socket.socket(..., type=...): the hook keeps socket's names."""
    with hooked_process([PY, "-c", KEYWORDS_PROBE, "{port}"]) as running:
        assert running.process.wait(20) == 0, running.stderr()
        assert running.process.stdout is not None
        made = json.loads(running.line())
    assert made == {"keywords": "socket", "tls": "SSLSocket", "asyncio": "connected"}


FORK_PROBE = r"""
import json, multiprocessing, os, socket, sys, time

listener = socket.socket(fileno=int(sys.argv[1]))  # held: SIGTERM now drains first
client = socket.create_connection(listener.getsockname()[:2])
conn, _ = listener.accept()  # a request in flight in this process
began = time.monotonic()
exitcodes = []
for _ in range(20):  # signalled at once: also while the child is still leaving fork()
    helper = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    helper.start()
    helper.terminate()
    helper.join(40)
    exitcodes.append(helper.exitcode)
print(json.dumps({"exitcodes": exitcodes, "seconds": time.monotonic() - began}))
"""


def test_a_forked_helper_dies_of_sigterm_at_once() -> None:
    """The drain belongs to the process that took the connections, not to its fork children."""
    argv = [PY, "-c", FORK_PROBE, "{fd}"]
    with hooked_process(argv, extra_env={"ZOCKET_STOP_TIMEOUT": "30"}) as running:
        assert running.process.wait(120) == 0, running.stderr()
        report = json.loads(running.line())
    assert report["exitcodes"] == [-signal.SIGTERM] * 20, report
    assert report["seconds"] < 10, report  # not the 30 s a drain would wait (nor 60)


TRANSIENT_LOOP_PROBE = r"""
import asyncio, signal, socket, sys

listener = socket.socket(fileno=int(sys.argv[1]))  # held
stop = []
signal.signal(signal.SIGTERM, lambda *args: stop.append(True))
print("serving", flush=True)
while not stop:  # a sync server whose requests run asyncio.run() for a moment
    asyncio.run(asyncio.sleep(0.005))
print("stopped", flush=True)
"""


def test_a_stop_handler_is_not_deferred_into_a_loop_that_serves_nothing() -> None:
    """asyncio.run() for a moment in the main thread: the handler runs at once, not in a loop
    that may be gone 0.1 s later."""
    with hooked_process([PY, "-c", TRANSIENT_LOOP_PROBE, "{fd}"]) as running:
        assert running.line() == "serving", running.stderr()
        running.process.send_signal(signal.SIGTERM)
        assert running.line(timeout=10) == "stopped"
        assert running.process.wait(20) == 0


#: A server whose main thread accepts and hands each connection to a thread (cheroot's
#: shape), told to stop in the moment between the two.
HAND_OFF_PROBE = r"""
import os, signal, socket, sys, threading, time

listener = socket.socket(fileno=int(sys.argv[1]))  # held; SIGTERM stays at its default
print("serving", flush=True)


def serve(conn):
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nanswered\n")
    conn.close()


conn, _ = listener.accept()
os.kill(os.getpid(), signal.SIGTERM)  # zocket's stop, before the hand-off
threading.Thread(target=serve, args=(conn,)).start()
while True:
    time.sleep(0.05)  # the main thread's loop goes on (cheroot's selector)
"""


def test_sigterm_at_its_default_lets_the_main_thread_hand_on_what_it_took() -> None:
    """The wait for the connections taken runs beside the main thread, not in its signal
    handler: there it would keep the connection from the thread that answers it until the
    stop timeout, and the process would die with it unanswered."""
    argv = [PY, "-c", HAND_OFF_PROBE, "{fd}"]
    with hooked_process(argv, extra_env={"ZOCKET_STOP_TIMEOUT": "5"}) as running:
        assert running.line() == "serving", running.stderr()
        client = running.connect()
        client.sendall(REQUEST)
        assert answer(client).endswith(b"\r\n\r\nanswered\n"), running.stderr()
        assert running.process.wait(20) == -signal.SIGTERM, running.stderr()
