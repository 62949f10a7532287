"""A SIGKILLed zocket leaves nothing serving, even where PR_SET_PDEATHSIG cannot reach.

PR_SET_PDEATHSIG reaches a generation's first process only: the server behind a
``--shell`` (the shell's child) and a server that ignores SIGTERM lived on
and kept serving the port before the sentry.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from support import (
    children_of,
    connect_refused,
    group_members,
    http_get,
    kill_groups,
    proc_stat,
    start_zocket,
    wait_for,
    write_responder,
)

IGNORES_SIGTERM = r"""
import runpy, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def sentry_of(zocket_pid: int) -> int:
    found = [pid for pid in children_of(zocket_pid) if comm(pid) == "zocket-sentry"]
    assert len(found) == 1, found
    return found[0]


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


@pytest.mark.parametrize("case", ["shell", "ignores SIGTERM"])
def test_a_sigkilled_zocket_leaves_nothing_serving(case: str, tmp_path: Path) -> None:
    responder = write_responder(tmp_path)
    if case == "shell":
        # Two commands, so that the shell cannot exec the server: it stays its parent.
        command = ["--shell", "--", f"{sys.executable} {responder}; true"]
    else:
        wrapper = tmp_path / "ignore.py"
        wrapper.write_text(IGNORES_SIGTERM)
        command = ["--", sys.executable, str(wrapper), str(responder)]
    zocket = start_zocket(["--port", "0", "--stop-timeout", "1", *command])
    group = zocket.child_pid
    try:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        assert http_get(zocket.port)[0] == 200
        sentry = sentry_of(zocket.pid)
        members = group_members(group)
        began = time.monotonic()
        zocket.proc.kill()
        zocket.proc.wait(10)
        wait_for(lambda: connect_refused(zocket.port), 20,
                 message=f"port {zocket.port} to refuse connections")
        wait_for(lambda: not any(alive(pid) for pid in members), 20,
                 message=f"{members} to be gone")
        wait_for(lambda: not alive(sentry), 10, message="the sentry to leave")
        print(f"{case}: nothing left {time.monotonic() - began:.2f} s after zocket was killed")
    finally:
        zocket.close()
        kill_groups([group])


def test_the_sentry_ignores_signals_meant_for_zocket_and_leaves_with_it(tmp_path: Path) -> None:
    """``pkill -HUP -f zocket`` reaches the sentry too: it must not die of it."""
    zocket = start_zocket(["--port", "0", "--", sys.executable, write_responder(tmp_path)])
    with zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        sentry = sentry_of(zocket.pid)
        assert os.getpgid(sentry) == sentry != os.getpgid(zocket.pid)
        assert set(os.listdir(f"/proc/{sentry}/fd")) == {
            fd for fd in os.listdir(f"/proc/{sentry}/fd")
            if os.readlink(f"/proc/{sentry}/fd/{fd}").startswith("pipe:")
        }, "the sentry holds nothing but its pipe"
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            os.kill(sentry, sig)
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 2 ready in", 30)
        assert alive(sentry)
        assert zocket.stop() == 128 + signal.SIGTERM
    assert not alive(sentry)
