"""granian through the hook: a server that binds in Rust serves the held socket unchanged.

granian never calls Python's bind(); the hook wraps the method in which every
granian server class makes its listener (``_zocket_granian``). These tests run
real granian (its CLI and its Python API, worker processes started by fork and
by spawn, the embedded asyncio server) through zocket on a port it holds, under
a steady load on loopback, and check that nothing else listens, that restarts
lose nothing, and that the held socket keeps zocket's backlog.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from support import (
    REQUEST,
    LoadClient,
    ZocketProcess,
    answers_ok,
    assert_no_failures,
    assert_taken_answered_late_queued,
    children_of,
    group_members,
    held_fds,
    held_inode,
    hooked_process,
    http_get,
    server_command,
    socket_inodes,
    tcp_listeners,
    wait_for,
)
from test_hook import READY_LINE, body_is, child_env, run_on_free_port, start_on_free_port

pytest.importorskip("granian")

PY = sys.executable

APP = """\
import asyncio, os, socket, struct

GENERATION = os.environ.get("ZOCKET_GENERATION", "?")


def backlogs():
    \"\"\"listen()'s backlog of each listening socket this worker has (TCP_INFO's sacked).\"\"\"
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with s:
            try:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
                    found.add(struct.unpack_from("I", info, 28)[0])
            except OSError:
                pass
    return found


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.5)
    if scope["path"] == "/backlog":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(sorted(backlogs())).encode()})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"granian {GENERATION}\\n".encode()})
"""

#: granian's Python API: Granian(...).serve(), with multiprocessing's start method chosen.
API_SERVER = """\
import multiprocessing, sys
from granian import Granian

if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[3])
    Granian(
        "app:app",
        address=sys.argv[1],
        port=int(sys.argv[2]),
        interface="asgi",
        workers=2,
        loop="asyncio",  # as without uvloop installed: what its auto choice is here
    ).serve()
"""

#: The embedded server: granian inside the app's own asyncio loop, which sets no signal
#: handler (SIGTERM stays at its default); GET /reload makes it reload its worker.
EMBED_SERVER = """\
import asyncio, sys
from granian.server.embed import Server
from app import app

server = None


async def routed(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/reload":
        server.reload()
    await app(scope, receive, send)


async def main():
    global server
    server = Server(routed, address="127.0.0.1", port=int(sys.argv[1]), interface="asgi")
    server.respawn_interval = 0.2  # a reload stops the old worker this long after the new
    await server.serve()

asyncio.run(main())
"""


def body(generation: int) -> bytes:
    return f"granian {generation}\n".encode()


def write_app(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "api.py").write_text(API_SERVER)
    (tmp_path / "embed.py").write_text(EMBED_SERVER)


def only_the_held_socket_listens(zocket: ZocketProcess) -> None:
    """granian's main process and both workers hold the held socket; nothing else listens."""
    listeners = tcp_listeners()
    held = held_inode(zocket)
    found = {
        pid: {i for i in socket_inodes(pid).values() if i in listeners}
        for pid in group_members(zocket.child_pid)
    }
    assert all(inodes <= {held} for inodes in found.values()), (found, held)
    assert sum(1 for inodes in found.values() if inodes) >= 3, (found, held)


def restart_under_load(zocket: ZocketProcess, restarts: int) -> LoadClient:
    port = zocket.port
    with LoadClient(port, threads=4, rate=100, duration=120, timeout=10) as load:
        load.wait_for(body_is(body(1)), timeout=30)
        for n in range(2, 2 + restarts):
            since = time.monotonic()
            zocket.send_signal(signal.SIGHUP)
            zocket.wait_for_stderr(READY_LINE.format(n=n), timeout=30)
            load.wait_for(body_is(body(n)), timeout=20, since=since)
            zocket.wait_for_stderr(rf"generation {n - 1} stopped", timeout=30)
        time.sleep(0.3)
    return load


def restart_losing_nothing(zocket: ZocketProcess, restarts: int) -> None:
    load = restart_under_load(zocket, restarts)
    assert zocket.returncode is None, zocket.stderr_text(0)
    assert_no_failures(load, minimum_ok=15 * restarts)


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_granian_api_adopts_the_held_socket_and_restarts_under_load(
    tmp_path: Path, start_method: str
) -> None:
    write_app(tmp_path)
    with start_on_free_port(
        lambda port: ["--backlog", "77", port, "--", PY, "api.py", "127.0.0.1", port, start_method],
        cwd=tmp_path,
    ) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=30)
        assert http_get(zocket.port)[::2] == (200, body(1))
        only_the_held_socket_listens(zocket)
        # granian's workers listen() again: with the held socket's backlog, not theirs (1024).
        assert http_get(zocket.port, "/backlog")[::2] == (200, b"[77]")
        load = restart_under_load(zocket, restarts=5)
        summary = load.summary()
        assert http_get(zocket.port, "/backlog")[::2] == (200, b"[77]")
        lines = zocket.stderr_lines()
        assert zocket.returncode is None, zocket.stderr_text(0)
    assert_no_failures(load, minimum_ok=100)
    assert {body(n) for n in range(1, 7)} <= set(load.bodies()), summary
    assert not any("zocket hook" in line for line in lines), "\n".join(lines)


@pytest.mark.slow
def test_granian_cli_on_every_address_adopts_the_held_socket(tmp_path: Path) -> None:
    """``granian --host 0.0.0.0``: a wildcard is served by the held 127.0.0.1 socket."""
    write_app(tmp_path)
    with start_on_free_port(
        lambda port: [
            port,
            "--",
            PY,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "0.0.0.0",
            "--port",
            port,
            "--workers",
            "2",
            "app:app",
        ],
        cwd=tmp_path,
    ) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=30)
        only_the_held_socket_listens(zocket)
        restart_losing_nothing(zocket, restarts=3)


@pytest.mark.slow
def test_granian_embedded_server_adopts_the_held_socket(tmp_path: Path) -> None:
    write_app(tmp_path)
    with start_on_free_port(
        lambda port: [port, "--", PY, "embed.py", port], cwd=tmp_path
    ) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=30)
        assert http_get(zocket.port)[::2] == (200, body(1))
        listeners = tcp_listeners()
        mine = {i for i in socket_inodes(zocket.child_pid).values() if i in listeners}
        assert mine == {held_inode(zocket)}, mine
        restart_losing_nothing(zocket, restarts=3)


@pytest.mark.slow
def test_granian_embedded_server_reloads_its_worker_under_load(tmp_path: Path) -> None:
    """A reload starts the new worker before it stops the old one: each needs a copy of
    the fd of its own (the old one's listener closes its copy when it stops)."""
    write_app(tmp_path)
    with start_on_free_port(
        lambda port: [port, "--", PY, "embed.py", port], cwd=tmp_path
    ) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=30)
        with LoadClient(zocket.port, threads=2, rate=50, duration=60, timeout=5) as load:
            load.wait_for(body_is(body(1)), timeout=20)
            for _ in range(3):
                assert http_get(zocket.port, "/reload", timeout=5)[::2] == (200, body(1))
                time.sleep(1.0)  # the old worker has stopped (closing its listener)
            since = time.monotonic()
            load.wait_for(body_is(body(1)), timeout=10, since=since)
        assert zocket.returncode is None, zocket.stderr_text(0)
    assert_no_failures(load, minimum_ok=50)


@pytest.mark.slow
@pytest.mark.parametrize("server", ["api", "embed"])
def test_granian_finishes_a_slow_request_across_a_restart(tmp_path: Path, server: str) -> None:
    """Workers (api) stop gracefully on zocket's SIGTERM; the embedded server leaves SIGTERM
    at its default, which the hook turns into: stop accepting, let the request finish."""
    write_app(tmp_path)
    args = {"api": ["api.py", "127.0.0.1", "{port}", "fork"], "embed": ["embed.py", "{port}"]}
    with start_on_free_port(
        lambda port: [port, "--", PY, *(str(port) if a == "{port}" else a for a in args[server])],
        cwd=tmp_path,
    ) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=30)
        answer: list[object] = []
        slow = threading.Thread(
            target=lambda: answer.append(http_get(zocket.port, "/slow", timeout=10)[::2])
        )
        slow.start()
        time.sleep(0.5)  # the request is in the first generation's hands
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(READY_LINE.format(n=2), timeout=30)
        slow.join(15)
        stopped = zocket.wait_for_stderr(r"generation 1 stopped", timeout=30)
        assert zocket.returncode is None, zocket.stderr_text(0)
    assert answer == [(200, body(1))]
    if server == "embed":
        # Its default SIGTERM, or the app's own end once the hook stopped granian for it.
        assert re.search(r"stopped \((SIGTERM|exit 0)\)", stopped), stopped


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_granian_workers_stop_accepting_at_once_and_answer_what_they_took(
    tmp_path: Path, start_method: str
) -> None:
    """Connections a worker took just before its stop signal are answered (granian's
    shutdown closes them as idle otherwise); those after it wait for the next generation."""
    write_app(tmp_path)
    command = [PY, "api.py", "127.0.0.1", "{port}", start_method]
    with hooked_process(command, cwd=tmp_path) as running:
        wait_for(lambda: answers_ok(running.port), 30, message="granian to answer")
        taken = [running.connect() for _ in range(5)]
        wait_for(lambda: running.backlog() == 0, 20, message="granian to accept")
        inode = os.fstat(running.fd).st_ino
        children = children_of(running.process.pid)  # with spawn, a resource tracker too
        before = {pid: held_fds(pid, inode) for pid in children}
        before = {pid: fds for pid, fds in before.items() if fds}
        assert len(before) == 2, before  # the two workers
        # As zocket stops a generation: its whole process group, workers and all.
        for pid in [*children, running.process.pid]:
            os.kill(pid, signal.SIGTERM)

        def stopped_accepting() -> bool:
            # The fd granian accepts on no longer names the held socket in any worker.
            return all(len(held_fds(pid, inode)) < len(fds) for pid, fds in before.items())

        wait_for(stopped_accepting, 20, interval=0.002, message="the workers to stop accepting")
        late = [running.connect() for _ in range(5)]
        assert_taken_answered_late_queued(running, taken, late)


def test_a_generation_stopped_while_its_worker_loads_the_app_stops_and_takes_nothing(
    tmp_path: Path,
) -> None:
    """Until a forked worker installs its own handlers it runs its parent's, which means
    nothing to it: the stop would be lost, and the worker would serve once loaded (or,
    its fd swapped before its listener was built, granian would panic). The hook sends
    the signal again once the worker has its own handler."""
    write_app(tmp_path)
    (tmp_path / "slowapp.py").write_text(
        "import time\ntime.sleep(2)  # a worker loading a big app\nfrom app import app\n"
    )
    command = [*server_command("granian"), "--interface", "asgi", "--port", "{port}"]
    command += ["--workers", "1", "--loop", "asyncio", "slowapp:app"]
    with hooked_process(command, cwd=tmp_path) as running:
        workers = wait_for(lambda: children_of(running.process.pid), 20, message="a worker")
        late: list[socket.socket] = []
        try:
            time.sleep(0.5)  # forked, still importing the app
            for pid in [*workers, running.process.pid]:  # as zocket stops a generation
                os.kill(pid, signal.SIGTERM)
            late += [running.connect() for _ in range(5)]
            for client in late:
                client.sendall(REQUEST)
            running.process.wait(20)
            assert running.left_in_queue() == [REQUEST] * 5, running.stderr()
            assert "panicked" not in running.stderr()
        finally:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for client in late:
                client.close()


def test_an_embedded_granian_with_default_sigterm_closes_idle_keep_alive_at_once(
    tmp_path: Path,
) -> None:
    """An idle keep-alive connection must not hold a stopping embedded server until the
    stop timeout: the hook asks granian to stop gracefully, which closes it."""
    write_app(tmp_path)
    command = [PY, "embed.py", "{port}"]
    with hooked_process(command, cwd=tmp_path, extra_env={"ZOCKET_STOP_TIMEOUT": "30"}) as running:
        wait_for(lambda: answers_ok(running.port), 30, message="granian to answer")
        with running.connect() as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")  # keep-alive
            assert client.recv(4096).startswith(b"HTTP/1.1 200 OK")
            started = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            running.process.wait(20)
            took = time.monotonic() - started
            assert client.recv(4096) == b""  # closed by granian's graceful stop
    assert took < 10, took  # not the 30 s stop timeout


def test_granian_on_another_port_binds_it_itself(tmp_path: Path) -> None:
    """Only the held address is adopted: granian on another port gets its own socket."""
    write_app(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        other = s.getsockname()[1]
    with start_on_free_port(
        lambda port: [port, "--ready", "none", "--", PY, "api.py", "127.0.0.1", other, "fork"],
        cwd=tmp_path,
    ) as zocket:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status, _, got = http_get(other, timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(zocket.stderr_text(0))
        assert (status, got) == (200, body(1))
        held = held_inode(zocket)
        pids = group_members(zocket.child_pid)
        served_by = {i for pid in pids for i in socket_inodes(pid).values()}
        own = set(tcp_listeners()) & served_by - {held}
        assert own, "granian made no socket of its own for the other port"
        assert zocket.returncode is None, zocket.stderr_text(0)


FAKE_GRANIAN = {
    "granian/__init__.py": "",
    "granian/server/__init__.py": "",
    "granian/server/common.py": "class Server:\n    pass\n",
}


def test_granian_with_unknown_internals_gets_one_warning(tmp_path: Path) -> None:
    """A granian whose internals the hook does not know: one line, and granian as it is."""
    for name, text in FAKE_GRANIAN.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    code = textwrap.dedent(
        """
        import granian.server.common as c
        print("imported", c.Server.__name__)
        """
    )
    _port, result = run_on_free_port(
        lambda port: ["--no-respawn", port, "--", PY, "-c", code],
        cwd=tmp_path,
        env=child_env(),
    )
    assert "imported Server" in result.stdout, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "zocket hook" in line]
    why = "granian's server module has no AbstractServer._init_shared_socket"
    assert warnings == [f"zocket hook: granian keeps its own sockets: {why}"], result.stderr
