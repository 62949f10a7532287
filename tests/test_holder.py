"""The holder in-process, as a tool built on zocket would use it: Config in, exit status out.

Everything the CLI does goes through :class:`zocket.holder.Holder`; here it runs in
the test's own main thread (signal handlers must be installed there), with a real
server, while a helper thread plays the operator.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support import http_get, write_responder
from zocket.addresses import parse_listen
from zocket.config import Config
from zocket.holder import Holder
from zocket.lifecycle import State


def wait_line(lines: list[str], text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {text!r}: {lines}")
        time.sleep(0.01)


def responder_holder(tmp_path: Path) -> tuple[Holder, list[str], int]:
    """A Holder of a free loopback port running support's responder; its log; the port."""
    lines: list[str] = []
    config = Config(
        listen=[parse_listen("127.0.0.1:0")],
        command=[sys.executable, str(write_responder(tmp_path))],
        control="",
        hook=False,
    )
    holder = Holder(config, log=lines.append)
    (listener,) = holder.open()
    assert listener.port
    return holder, lines, listener.port


def run_with(holder: Holder, operator: Callable[[], None]) -> int:
    """``holder.run()`` in this (the main) thread while ``operator`` runs in another; the
    operator's last act, whatever happens, is SIGTERM to this process."""

    def act() -> None:
        try:
            operator()
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=act)
    thread.start()
    try:
        return holder.run()
    finally:
        thread.join(10)


def test_a_holder_runs_restarts_and_stops_in_process(tmp_path: Path) -> None:
    holder, lines, port = responder_holder(tmp_path)
    (listener,) = holder.listeners
    seen: dict[str, object] = {}

    def operator() -> None:
        wait_line(lines, "generation 1 ready in")
        seen["first"] = http_get(port)[0]
        os.kill(os.getpid(), signal.SIGHUP)
        wait_line(lines, "generation 2 ready in")
        wait_line(lines, "generation 1 stopped")
        seen["states"] = {n: g.state for n, g in holder.lifecycle.generations.items()}
        seen["status"] = holder.status()
        for n in range(3, 7):  # the holder forgets old generations' start times too
            os.kill(os.getpid(), signal.SIGHUP)
            wait_line(lines, f"generation {n} ready in")
            wait_line(lines, f"generation {n - 1} stopped")
        seen["walls"] = set(holder._walls)
        seen["kept"] = set(holder.lifecycle.generations)

    status = run_with(holder, operator)
    assert status == 128 + signal.SIGTERM, lines
    assert seen["first"] == 200
    assert seen["states"] == {1: State.STOPPED, 2: State.SERVING}, seen
    record = seen["status"]
    assert isinstance(record, dict)
    assert [g["number"] for g in record["generations"] if g["state"] == "serving"] == [2]
    assert lines[0].startswith(f"holding http://127.0.0.1:{port} (http, fd 3); generation 1")
    assert "SIGHUP: restarting" in lines
    assert lines[-1] == "generation 6 stopped (SIGTERM)"
    # At most the kept generations and the one stopped since the last spawn, not all six.
    assert max(seen["walls"]) == 6 and len(seen["walls"]) <= len(seen["kept"]) + 1, seen
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert listener.fd == -1  # the holder closes the sockets it opened


def test_a_generation_that_cannot_be_forked_leaves_the_serving_one_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fork() failing (EAGAIN under RLIMIT_NPROC) is a failed start, not a dead holder."""
    import errno

    from zocket import holder as holder_module
    from zocket.spawn import spawn as real_spawn
    calls = []

    def spawn(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return real_spawn(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(holder_module, "spawn", spawn)
    holder, lines, port = responder_holder(tmp_path)
    answers: list[int] = []

    def operator() -> None:
        wait_line(lines, "generation 1 ready in")
        os.kill(os.getpid(), signal.SIGHUP)
        wait_line(lines, "cannot start generation 2")
        answers.append(http_get(port)[0])

    status = run_with(holder, operator)
    assert status == 128 + signal.SIGTERM, lines
    assert answers == [200]
    assert "cannot start generation 2: Resource temporarily unavailable" in lines, lines
    assert lines[-1] == "generation 1 stopped (SIGTERM)"
