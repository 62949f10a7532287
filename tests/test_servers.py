"""Real servers serving HTTP on the socket zocket holds: gunicorn, uvicorn, hypercorn.

Each app is a few lines written into tmp_path, which is also the server's
working directory and HOME (gunicorn puts its control socket under HOME).
Servers run as the script next to this interpreter (else ``python -m SERVER``),
so that no activated virtualenv is needed.
"""

from __future__ import annotations

import signal
import subprocess
import time
from functools import cache
from pathlib import Path

import pytest

from support import (
    LoadClient,
    ZocketProcess,
    asgi_app,
    assert_no_failures,
    group_members,
    held_inode,
    http_get,
    server_command,
    socket_inodes,
    start_in,
    tcp_listeners,
    wait_for,
    write_atomically,
    wsgi_app,
)

#: Apps that answer every request with a fixed text; `write_version` edits the ASGI one.
WSGI_APP = wsgi_app(r'"hello from the wsgi app\n"')
ASGI_APP = asgi_app(r'f"hello from the asgi app, version {VERSION}\n"', prelude="VERSION = 0\n")


def asgi_body(version: int) -> bytes:
    return f"hello from the asgi app, version {version}\n".encode()


@cache
def gunicorn_has_control_socket() -> bool:
    """Whether this gunicorn has a control socket, and so the --no-control-socket option."""
    result = subprocess.run(
        [*server_command("gunicorn"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--no-control-socket" in result.stdout


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "wsgi_app.py").write_text(WSGI_APP)
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    return tmp_path


def run_server(app_dir: Path, command: list[str]) -> ZocketProcess:
    """zocket --no-respawn on a free port, running ``command`` in ``app_dir`` (also HOME)."""
    return start_in(app_dir, ["--no-respawn", "--", *command])


def assert_listens_only_on_the_held_socket(zocket: ZocketProcess) -> None:
    """Every listening TCP socket any server process has open is the one zocket holds."""
    held = held_inode(zocket)
    listeners = tcp_listeners()
    members = group_members(zocket.child_pid)
    assert zocket.child_pid in members
    seen = {}
    for pid in members:
        try:
            inodes = socket_inodes(pid)
        except FileNotFoundError:
            continue  # exited meanwhile
        for fd, inode in inodes.items():
            if inode in listeners:
                seen[(pid, fd)] = listeners[inode]
                assert inode == held, f"pid {pid} fd {fd} listens on {listeners[inode]}"
    assert seen, "no server process holds the socket"


def test_gunicorn_uses_the_held_socket(app_dir: Path) -> None:
    command = [*server_command("gunicorn"), "-w", "2", "wsgi_app:app"]
    if gunicorn_has_control_socket():
        command.insert(-1, "--no-control-socket")
    with run_server(app_dir, command) as zocket:
        zocket.wait_for_stderr(f"Listening at: http://127.0.0.1:{zocket.port} ", timeout=20)
        for _ in range(5):
            status, _, body = http_get(zocket.port)
            assert (status, body) == (200, b"hello from the wsgi app\n")
        # The arbiter and both workers.
        wait_for(lambda: len(group_members(zocket.child_pid)) >= 3, 20, message="2 workers")
        arbiter = socket_inodes(zocket.child_pid)
        assert held_inode(zocket) in arbiter.values()
        assert_listens_only_on_the_held_socket(zocket)
        assert not any(":8000" in line for line in zocket.stderr_lines())
        assert zocket.stop() == 0
    assert "Shutting down" in zocket.stderr_text()


@pytest.mark.parametrize(
    "name, options",
    [("uvicorn", ["--fd", "{fd}"]), ("hypercorn", ["--bind", "fd://{fd}"])],
)
def test_asgi_server_on_the_held_fd(name: str, options: list[str], app_dir: Path) -> None:
    with run_server(app_dir, [*server_command(name), *options, "asgi_app:app"]) as zocket:
        status, _, body = wait_for(lambda: _try_get(zocket.port), 20, message=f"{name} to answer")
        assert (status, body) == (200, asgi_body(0))
        assert_listens_only_on_the_held_socket(zocket)
        assert zocket.stop() in (0, 128 + signal.SIGTERM)


def _try_get(port: int) -> tuple[int, object, bytes] | None:
    """A response, or None while the server is not accepting yet (the backlog holds us)."""
    try:
        return http_get(port, timeout=20)
    except (ConnectionError, TimeoutError):
        return None


def write_version(path: Path, version: int) -> None:
    """Replace the app atomically, so the reloader never imports half a file."""
    write_atomically(path, ASGI_APP.replace("VERSION = 0", f"VERSION = {version}"))


@pytest.mark.slow
def test_uvicorn_reload_under_load_loses_nothing(app_dir: Path) -> None:
    """Five edits under load: every request is answered, each version is served."""
    app = app_dir / "asgi_app.py"
    command = [
        *server_command("uvicorn"), "--reload", "--reload-dir", str(app_dir), "--no-access-log",
        "--fd", "{fd}", "asgi_app:app",
    ]  # fmt: skip
    started = time.monotonic()
    with run_server(app_dir, command) as zocket:
        with LoadClient(zocket.port, threads=4, rate=100, duration=60, timeout=10) as load:
            load.wait_for(lambda o: o.ok, timeout=20)
            for version in range(1, 6):
                _edit_until_served(load, app, version)
                # uvicorn's StatReload takes its new baseline of mtimes 0.25 s after a
                # restart; an edit before that would become the baseline unseen.
                time.sleep(0.5)
        summary = load.summary()
        reloads = zocket.stderr_times("detected changes")
        assert zocket.stop() in (0, 128 + signal.SIGTERM)
    # Nothing refused (the socket never closes) and nothing lost: uvicorn's reloader stops
    # its old server process with SIGTERM, which the hook turns into a stop that answers
    # what that process had accepted (test_hook_signals.py).
    assert_no_failures(load, minimum_ok=200)
    # Every version was served, and nothing else.
    seen = set(load.bodies())
    assert {asgi_body(v) for v in range(6)} <= seen, summary
    assert seen <= {asgi_body(v) for v in range(6)}
    # uvicorn really restarted its server process for each edit (and maybe for a re-write).
    assert len(reloads) >= 5, zocket.stderr_text()
    assert time.monotonic() - started < 60


def _edit_until_served(load: LoadClient, app: Path, version: int) -> None:
    """Write ``version``, wait until a response shows it; write again if the reloader missed it."""
    deadline = time.monotonic() + 20
    while True:
        edited = time.monotonic()
        write_version(app, version)
        try:
            load.wait_for(lambda o: o.body == asgi_body(version), timeout=3, since=edited)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
