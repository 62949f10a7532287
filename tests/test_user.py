"""``--user``: zocket binds as root (a port below 1024), then it and every generation run as USER."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import (
    http_get,
    proc_status,
    read_environ,
    start_zocket,
    started,
    write_responder,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="binding as root needs root")


def free_low_port() -> int:
    for port in range(900, 1024):
        probe = socket.socket()
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            probe.close()
    raise AssertionError("no free port below 1024")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory nobody can read: the server runs as nobody (tmp_path is root's, 0700)."""
    with tempfile.TemporaryDirectory(prefix="zk-user-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def ids(pid: int) -> tuple[list[int], list[int], list[int]]:
    status = proc_status(pid)
    return ([int(x) for x in status["Uid"].split()], [int(x) for x in status["Gid"].split()],
            [int(x) for x in status["Groups"].split()])


def test_user_binds_a_low_port_as_root_then_runs_everything_as_the_user(public_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    responder = write_responder(public_dir)
    responder.chmod(0o644)
    port = free_low_port()
    args = ["--port", port, "--user", "nobody", "--no-control", "--",
            "/usr/bin/python3", responder]
    with start_zocket(args, cwd=public_dir) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        assert http_get(port)[0] == 200
        everyone = [nobody.pw_uid] * 4
        groups = sorted(os.getgrouplist("nobody", nobody.pw_gid))
        for pid in (zocket.pid, zocket.child_pid):
            uids, gids, supplementary = ids(pid)
            assert uids == everyone, (pid, uids)
            assert gids == [nobody.pw_gid] * 4, (pid, gids)
            assert sorted(supplementary) == groups, (pid, supplementary)
        env = read_environ(zocket.child_pid)
        assert (env["USER"], env["LOGNAME"], env["HOME"]) == ("nobody", "nobody", nobody.pw_dir)

        zocket.send_signal(signal.SIGHUP)  # readiness and the switch work as the user too
        zocket.wait_for_stderr(r"generation 2 ready in", 30)
        assert http_get(port)[0] == 200
        assert ids(dict(started(zocket))[2])[0] == everyone
        assert zocket.stop() == 128 + signal.SIGTERM


def test_user_that_does_not_exist_is_a_usage_error() -> None:
    from support import run_zocket

    result = run_zocket(["--port", "0", "--user", "no-such-user-zk", "--", "true"])
    assert result.returncode == 2
    assert "unknown user 'no-such-user-zk'" in result.stderr and "Traceback" not in result.stderr
