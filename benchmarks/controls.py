"""Control windows between restarts (``--controls``): what the latency metric reads when
nothing restarts, and when something boots that no restart could do without.

A restart window's p99 is compared with the p99 outside the windows. On a small
shared machine that ratio moves on its own: a burst of the host's own work that
lands in a window of a thousand requests lifts its 1% as surely as a restart
does. So the runner can open two kinds of window that are judged the same way
but where no restart happens:

- a *still* window, as long as a restart window, in which nothing is done: the
  spread of the ratio itself;
- a *bystander* window: gunicorn with the scenario's WSGI app boots beside the
  serving server, on a port of its own, at ``SCHED_IDLE`` (the lowest CPU
  priority Linux has, via ``chrt``), and is stopped as soon as it answers. One
  interpreter boot and one exit, never touching the served socket, the CPU only
  when no one else wants it: less than any restart of any tool does, since a
  restart must at least boot the new code and end the old. Its ratio is the
  floor this machine puts under a restart's. A bystander that never answered
  (it could not bind, chrt was refused) measured nothing: its window is kept
  out of the outside but not counted as a bystander's.

Both are `metrics.Control` values; `metrics.summarise` leaves them out of the
outside and reports each kind's ratio beside the restarts'.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .load import OpenLoopLoad
from .metrics import Control
from .scenarios import free_port, stop_group

__all__ = ["bystander", "chrt_path", "still"]

#: How often the runner asks whether the bystander answers.
POLL = 0.02


def chrt_path() -> str | None:
    """util-linux's chrt, which starts the bystander at SCHED_IDLE from its first instruction."""
    return shutil.which("chrt")


def _until(load: OpenLoopLoad, end: float) -> None:
    """Sleep until ``end`` on the load's clock."""
    while (left := end - load.now()) > 0:
        time.sleep(min(left, 0.1))


def still(load: OpenLoopLoad, length: float) -> Control:
    """A window of ``length`` seconds from now in which nothing is done (returns at its end)."""
    start = load.now()
    _until(load, start + length)
    return Control("still", start, start + length)


def _answers(port: int, group: int) -> bool:
    """Whether the bystander itself (a process of its group, by the pid the benchmark app
    puts in its body) answers on ``port``: not whoever took the port meanwhile."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        words = response.read().split()
        pid = int(words[words.index(b"pid") + 1]) if b"pid" in words[:-1] else 0
        return response.status == 200 and pid > 0 and os.getpgid(pid) == group
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        connection.close()


def bystander(
    command: Sequence[str],
    *,
    load: OpenLoopLoad,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    margin: float,
    timeout: float,
) -> Control:
    """Boot ``command`` (with ``{port}`` in it replaced by a free port) at SCHED_IDLE, wait
    for it to answer (``timeout`` s at most), stop it, and return its window: from its spawn
    to its first answer plus ``margin``, like a restart's, and at least to the end of its
    exit (SIGTERM to its process group at the first answer), so that no part of it is
    counted as outside. Returns once that window is over.
    """
    chrt = chrt_path()
    if chrt is None:
        raise RuntimeError("chrt (util-linux) not found: it starts the bystander at SCHED_IDLE")
    port = free_port()
    argv = [chrt, "--idle", "0", *(part.replace("{port}", str(port)) for part in command)]
    start = load.now()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    answered: float | None = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(port, proc.pid):
                answered = load.now()
                break
            time.sleep(POLL)
    finally:
        stop_group(proc)
    exited = load.now()
    end = max((answered if answered is not None else exited) + margin, exited)
    _until(load, end)
    return Control("bystander", start, end, answered)
