"""A generation's notify socket believes only the generation's own processes.

Its abstract name is visible to every local user in /proc/net/unix; a
``READY=1`` or ``ZOCKET_WAITING=3`` from anyone else must not promote a
generation that is still booting (the old one would be stopped while the new
one cannot answer yet).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import proc_status, read_environ, start_zocket, wait_for

#: Never ready by itself: sends READY=1 on SIGUSR1, from its own pid.
SERVER = r"""
import os, signal, socket, time

def ready(*_):
    address = os.environ["NOTIFY_SOCKET"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1", "\0" + address[1:])
    s.close()

signal.signal(signal.SIGUSR1, ready)
while True:
    time.sleep(1)
"""

SEND = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(sys.argv[2].encode(), "\0" + sys.argv[1][1:])
"""


def catches(pid: int, signum: int) -> bool:
    return bool(int(proc_status(pid)["SigCgt"], 16) & (1 << (signum - 1)))


def send_as(prefix: list[str], address: str, message: str) -> None:
    subprocess.run(
        [*prefix, "/usr/bin/python3", "-c", SEND, address, message], check=True, timeout=20
    )


@pytest.mark.parametrize(
    ("who", "prefix"),
    [
        ("another user", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]),
        ("a process of the same user outside the generation", []),
    ],
)
@pytest.mark.parametrize("message", ["READY=1", "ZOCKET_WAITING=3"])
def test_a_notify_message_from_outside_the_generation_is_ignored(
    who: str, prefix: list[str], message: str, tmp_path: Path
) -> None:
    server = tmp_path / "server.py"
    server.write_text(SERVER)
    args = ["--port", "0", "--ready", "notify", "--no-hook", "--", sys.executable, server]
    with start_zocket(args) as zocket:
        child = zocket.child_pid
        address = read_environ(child)["NOTIFY_SOCKET"]
        send_as(prefix, address, message)
        zocket.wait_for_stderr(
            r"ignored a notify message to generation 1 from pid \d+ \(uid \d+\): "
            r"not one of its processes", 10,
        )
        wait_for(lambda: catches(child, signal.SIGUSR1), 10, message="the server's handler")
        os.kill(child, signal.SIGUSR1)  # now the generation says it itself
        zocket.wait_for_stderr(r"generation 1 ready in \d+ ms \(notify: READY=1\)", 10)
        lines = zocket.stderr_lines()
        assert sum("ready in" in line for line in lines) == 1, "\n".join(lines)
        wait_for(lambda: zocket.returncode is None, 1)
        assert zocket.stop() == 128 + signal.SIGTERM
