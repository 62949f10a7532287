"""``zocket reload``, ``zocket status`` and ``zocket stop`` against a real zocket and gunicorn."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import (
    LoadClient,
    ZocketProcess,
    assert_no_failures,
    http_get,
    run_zocket,
    server_command,
    start_zocket,
    wait_for,
)
from zocket import control

APP = '''
import os, time
time.sleep(float(os.environ.get("BOOT", "0")))
VERSION = "{version}"

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{{VERSION}} {{os.environ['ZOCKET_GENERATION']}}\\n".encode()]
'''


def write_app(directory: Path, version: str) -> None:
    (directory / "app.py").write_text(APP.format(version=version))


@pytest.fixture
def control_dir() -> Iterator[Path]:
    """A directory others may enter (0755), short enough for a Unix socket path."""
    with tempfile.TemporaryDirectory(prefix="zk-ctl-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def gunicorn_zocket(
    app_dir: Path, control: Path | None, *extra: object, **env: str
) -> ZocketProcess:
    """zocket in front of gunicorn; ``control`` None: the default path (under XDG_RUNTIME_DIR)."""
    write_app(app_dir, "v1")
    # One worker: with two, an edit made while the second still imports the app would
    # be the generation's own crash (gunicorn exits when a worker fails to boot).
    command = [*server_command("gunicorn"), "-w", "1", "--no-control-socket", "--chdir",
               str(app_dir), "app:app"]
    where = ["--control", control] if control is not None else []
    return start_zocket(
        ["--port", "0", *where, *extra, "--", *command],
        env={**os.environ, "HOME": str(app_dir), **env}, cwd=app_dir,
    )


def ctl(
    *args: object, timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_zocket(args, timeout=timeout, env={**os.environ, **(env or {})})


def test_reload_finds_the_zocket_of_a_port_in_the_runtime_directory(
    tmp_path: Path, control_dir: Path
) -> None:
    runtime = {"XDG_RUNTIME_DIR": str(control_dir)}
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    with gunicorn_zocket(first, None, **runtime) as one, gunicorn_zocket(
        second, None, **runtime
    ) as other:
        one.wait_for_stderr(r"generation 1 ready in", 30)
        other.wait_for_stderr(r"generation 1 ready in", 30)
        assert sorted(os.listdir(control_dir / "zocket")) == sorted(
            [f"{one.pid}.sock", f"{other.pid}.sock"]
        )
        assert oct((control_dir / "zocket").stat().st_mode & 0o777) == "0o700"
        result = ctl("reload", "--port", other.port, env=runtime)
        assert result.returncode == 0, result.stderr
        other.wait_for_stderr(r"generation 2 ready in", 5)
        assert not any("restarting" in line for line in one.stderr_lines())
        both = ctl("reload", env=runtime)
        assert both.returncode == 2, both
        assert f"several zockets run (pids {min(one.pid, other.pid)}, " in both.stderr
        assert {one.stop(), other.stop()} <= {0, 128 + signal.SIGTERM}
    assert os.listdir(control_dir / "zocket") == []


def test_reload_waits_for_the_outcome_under_load(tmp_path: Path, control_dir: Path) -> None:
    path = control_dir / "ctl.sock"
    with gunicorn_zocket(tmp_path, path) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        with LoadClient(zocket.port, rate=100, duration=60) as load:
            write_app(tmp_path, "v2")
            good = ctl("reload", "--control", path)
            assert good.returncode == 0, good.stderr
            assert good.stdout.startswith("generation 2 ready in "), good.stdout
            assert "generation 1 was told to stop" in good.stdout
            # The moment reload returns, the new code answers.
            assert http_get(zocket.port)[2].decode().startswith("v2 2")

            (tmp_path / "app.py").write_text("def app(:\n")  # a broken edit
            bad = ctl("reload", "--control", path)
            assert bad.returncode == 1, (bad.stdout, bad.stderr, zocket.stderr_text(0))
            assert re.fullmatch(
                r"zocket: error: generation 3 failed before ready: exit \d+; "
                r"generation 2 keeps serving\n", bad.stderr
            ), bad.stderr
            assert http_get(zocket.port)[2].decode().startswith("v2 2")

            write_app(tmp_path, "v4")
            again = ctl("reload", "--control", path)
            assert again.returncode == 0, again.stderr
            assert http_get(zocket.port)[2].decode().startswith("v4 4")
            time.sleep(0.5)
        assert_no_failures(load, minimum_ok=50)
        assert zocket.stop() in (0, 128 + signal.SIGTERM)


def test_status_matches_the_status_file_and_stop_waits_for_the_exit(
    tmp_path: Path, control_dir: Path
) -> None:
    path = control_dir / "ctl.sock"
    status_file = tmp_path / "status.json"
    with gunicorn_zocket(tmp_path, path, "--status-file", status_file) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        wait_for(lambda: json.loads(status_file.read_text())["generations"][0]["state"]
                 == "serving", 10, message="the status file to say serving")
        shown = ctl("status", "--control", path, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == json.loads(status_file.read_text())
        assert json.loads(shown.stdout)["control"] == str(path)
        human = ctl("status", "--control", path)
        assert human.returncode == 0, human.stderr
        assert f"zocket {zocket.pid}: http://127.0.0.1:{zocket.port} (http, fd 3)" in human.stdout
        assert f"generation 1: serving, pid {zocket.child_pid}" in human.stdout

        stopped = ctl("stop", "--control", path)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == "zocket stopped"
        assert zocket.proc.poll() is not None, "zocket stop returned before zocket exited"
        assert zocket.proc.returncode in (0, 128 + signal.SIGTERM)
    assert not path.exists()


REFUSED_AS_NOBODY = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES")
    sys.exit(0)
s.sendall(b'{"command": "status"}\n')
print(s.makefile().readline().strip())
"""


def test_the_control_socket_answers_no_other_user(tmp_path: Path, control_dir: Path) -> None:
    path = control_dir / "ctl.sock"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "/usr/bin/python3", "-c", REFUSED_AS_NOBODY, str(path)]
    with gunicorn_zocket(tmp_path, path) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        first = subprocess.run(as_nobody, capture_output=True, text=True, timeout=20)
        assert first.stdout.strip() == "EACCES", first
        path.chmod(0o666)  # as if misconfigured: the peer's credentials still decide
        second = subprocess.run(as_nobody, capture_output=True, text=True, timeout=20)
        reply = json.loads(second.stdout)
        assert reply == {"ok": False, "message": "refused: uid 65534 is neither zocket's "
                         f"(uid {os.geteuid()}) nor root"}, second
        assert zocket.stop() in (0, 128 + signal.SIGTERM)


def test_no_zocket_stale_socket_and_timeout_each_get_one_line_and_a_status(
    tmp_path: Path, control_dir: Path
) -> None:
    missing = ctl("reload", "--control", control_dir / "none.sock")
    assert (missing.returncode, missing.stderr) == (
        3, f"zocket: error: no zocket at {control_dir / 'none.sock'}\n"
    )
    stale = control_dir / "stale.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(stale))
    left.close()  # the file stays, nobody listens: a killed zocket's
    result = ctl("status", "--control", stale)
    assert result.returncode == 3 and "a stale socket" in result.stderr, result
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    result = ctl("reload", "--port", port)
    assert result.returncode == 3, result
    assert f"no running zocket holding port {port} found" in result.stderr
    result = ctl("reload", "--control", stale, "--port", "1")
    assert result.returncode == 2 and "not allowed with" in result.stderr, result

    # A zocket started on the stale path takes it over; its slow boot outlasts --timeout.
    path = stale
    with gunicorn_zocket(tmp_path, path, BOOT="0") as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        write_app(tmp_path, "v2")
        (tmp_path / "app.py").write_text("import time; time.sleep(5)\n" + APP.format(version="v2"))
        slow = ctl("reload", "--control", path, "--timeout", "0.5")
        assert slow.returncode == 4, slow
        assert slow.stderr == f"zocket: error: no answer from {path} in time\n"
        assert zocket.stop() in (0, 128 + signal.SIGTERM)


def test_commands_as_server_words_still_run_after_a_double_dash(tmp_path: Path) -> None:
    """``zocket status`` is the control command; ``zocket -- status`` runs a program."""
    script = tmp_path / "status"
    script.write_text(f"#!{sys.executable}\nimport sys; sys.exit(7)\n")
    script.chmod(0o755)
    result = run_zocket(["--port", "0", "--no-respawn", "--no-control", "--", str(script)])
    assert result.returncode == 7, result.stderr


def test_a_client_that_half_closes_after_its_request_still_gets_the_outcome(
    tmp_path: Path, control_dir: Path
) -> None:
    """``printf '{"command": "reload"}\\n' | socat - UNIX:...`` closes its write side first."""
    path = control_dir / "ctl.sock"
    with gunicorn_zocket(tmp_path, path) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(60)
            client.connect(str(path))
            client.sendall(b'{"command": "reload"}\n')
            client.shutdown(socket.SHUT_WR)
            reply = json.loads(client.makefile().readline())
        assert reply["ok"] is True, reply
        assert reply["message"].startswith("generation 2 ready in"), reply
        assert zocket.stop() in (0, 128 + signal.SIGTERM)


def test_idle_control_connections_are_capped_and_the_socket_still_answers(
    tmp_path: Path, control_dir: Path
) -> None:
    """Connections that never ask cannot pile up: beyond MAX_IDLE the oldest is closed."""
    path = control_dir / "ctl.sock"
    with gunicorn_zocket(tmp_path, path) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        idle = []
        try:
            for _ in range(control.MAX_IDLE + 1):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                idle.append(sock)
                sock.connect(str(path))  # blocking: waits while the backlog of 16 is full
                sock.settimeout(20)
            reply = json.loads(idle[0].makefile().readline())  # the oldest: told, and closed
            assert reply == {"ok": False, "message": "too many idle control connections: closed"}
            assert idle[0].recv(1) == b""
            result = ctl("status", "--control", path)
            assert result.returncode == 0, result.stderr
            assert "generation 1" in result.stdout, result.stdout
            idle[-1].sendall(b'{"command": "status"}\n')  # the newest were left alone
            assert json.loads(idle[-1].makefile().readline())["ok"] is True
        finally:
            for sock in idle:
                sock.close()
        assert zocket.stop() in (0, 128 + signal.SIGTERM)
