"""Chaos: kill things, restart a thousand times, crash in a loop; zocket must hold up.

* The serving generation SIGKILLed (its whole process group) over and over
  under steady load: no connection is ever refused (the socket is zocket's),
  and the only failures are the requests the killed process had accepted.
* zocket itself SIGKILLed: nothing it started may go on serving the port.
* A thousand restarts: the holder's fds, threads and memory stay flat, and no
  zombie is left.
* A crash loop: the holder sleeps through its backoff (little CPU, few spawns).

Every test runs the real ``zocket`` command on a free loopback port and stops
everything it started; every wait is bounded. Timings are asserted loosely:
other suites share the two cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from support import (
    LoadClient,
    ZocketProcess,
    children_of,
    connect_refused,
    group_members,
    http_get,
    kill_groups,
    proc_stat,
    proc_status,
    start_zocket,
    started,
    wait_for,
    write_responder,
    zombie_children,
)

pytestmark = pytest.mark.slow


WSGI_APP = """\
import os


def app(environ, start_response):
    body = f"pid={os.getpid()} generation={os.environ.get('ZOCKET_GENERATION')}\\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
def responder(tmp_path: Path) -> list[str]:
    return [sys.executable, str(write_responder(tmp_path))]


def gunicorn_command(directory: Path, workers: int = 2) -> list[str]:
    pytest.importorskip("gunicorn")
    (directory / "app.py").write_text(WSGI_APP)
    script = Path(sys.executable).parent / "gunicorn"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "gunicorn"]
    return [*command, "-w", str(workers), "--no-control-socket", "--chdir", str(directory),
            "app:app"]




@contextmanager
def running(args: Sequence[object], **kw: object) -> Iterator[ZocketProcess]:
    """start_zocket, and on the way out kill what is left of every generation it logged."""
    zocket = start_zocket(args, **kw)  # type: ignore[arg-type]
    try:
        with zocket:
            yield zocket
    finally:
        kill_groups([pid for _, pid in started(zocket)])


class Cursor:
    """Waits for stderr lines in order, without rescanning what was already seen."""

    def __init__(self, zocket: ZocketProcess) -> None:
        self.zocket = zocket
        self.index = 0

    def wait(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        found = self.zocket._stderr.wait_for_line(re.compile(pattern), timeout, self.index)
        if found is None:
            lines = self.zocket.stderr_lines()
            raise AssertionError(
                f"no stderr line matching {pattern!r} within {timeout:g} s; last lines:\n"
                + "\n".join(lines[-30:])
            )
        self.index = found[0] + 1
        return found[1]



def resources(pid: int) -> tuple[int, int, int]:
    """(open fds, threads, VmRSS in KiB) of process ``pid``."""
    status = proc_status(pid)
    return len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"]), int(
        status["VmRSS"].split()[0]
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` itself (not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")




def no_group(pgid: int) -> bool:
    return not group_members(pgid)


def restarts_counted(status_path: Path, restarts: int) -> bool:
    return bool(json.loads(status_path.read_text())["restarts"] == restarts)


# --- the serving generation killed ---------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "kills", "accepting"),
    [("responder", 50, 1), ("gunicorn", 6, 2)],
)
def test_serving_generation_sigkilled_under_load(
    server: str, kills: int, accepting: int, tmp_path: Path, responder: list[str]
) -> None:
    """Each kill: SIGKILL to the group, respawn at once (it had served 1 s), queue meanwhile.

    ``accepting`` is how many processes of the server accept (each has at most one
    request in flight when killed: FD_RESPONDER and gunicorn's sync workers serve
    one connection at a time).
    """
    command = responder if server == "responder" else gunicorn_command(tmp_path)
    with running(["--port", "0", "--", *command], cwd=tmp_path) as zocket:
        cursor = Cursor(zocket)
        cursor.wait(r"generation 1 ready in")
        with LoadClient(zocket.port, threads=4, rate=60, duration=300, timeout=20) as load:
            for number in range(1, kills + 1):
                # Served at least stable_after (1 s): not a crash loop, so no backoff at all.
                time.sleep(1.1)
                pid = dict(started(zocket))[number]
                os.killpg(pid, signal.SIGKILL)
                cursor.wait(rf"generation {number} exited unexpectedly \(SIGKILL\)", 20)
                cursor.wait(
                    rf"no generation is serving; generation {number} had served [\d.]+ s, "
                    r"so it is replaced at once", 5,
                )
                cursor.wait(rf"generation {number + 1} started \(pid \d+\)", 10)
                cursor.wait(rf"generation {number + 1} ready in", 30)
                wait_for(partial(no_group, pid), 10, message=f"generation {number}'s group gone")
            # The last generation answers too.
            since = time.monotonic()
            load.wait_for(lambda o: o.ok, 20, since=since)
        counts = load.counts()
        summary = load.summary()
        assert zocket.stop() in (0, 128 + signal.SIGTERM), zocket.stderr_text()
    print(f"{server}: {kills} kills, {dict(counts)}")
    assert counts["refused"] == 0, summary
    assert counts["reset"] <= kills * accepting, summary
    assert counts["timeout"] == counts["error"] == counts["http_error"] == 0, summary
    assert counts["ok"] >= kills * 20, summary


# --- zocket itself killed ------------------------------------------------------------------


@pytest.mark.parametrize("server", ["responder", "gunicorn"])
def test_zocket_sigkilled_leaves_nothing_serving(
    server: str, tmp_path: Path, responder: list[str]
) -> None:
    command = responder if server == "responder" else gunicorn_command(tmp_path)
    with running(["--port", "0", "--", *command], cwd=tmp_path) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        assert http_get(zocket.port)[0] == 200
        group = zocket.child_pid
        expected = 1 if server == "responder" else 3  # gunicorn's arbiter and 2 workers
        members = wait_for(
            lambda: m if len(m := group_members(group)) == expected else None,
            30,
            message=f"{expected} processes in group {group}",
        )
        began = time.monotonic()
        zocket.proc.kill()
        zocket.proc.wait(10)
        wait_for(lambda: connect_refused(zocket.port), 30,
                 message=f"port {zocket.port} to refuse connections")
        wait_for(lambda: not group_members(group), 30,
                 message=f"group {group} to be gone: {group_members(group)}")
        took = time.monotonic() - began
        print(f"{server}: nothing left {took:.2f} s after zocket was killed")
        assert not any((proc_stat(pid) or ("Z",))[0] != "Z" for pid in members)


# --- orphans and generations exiting together ----------------------------------------------

#: A server that keeps making orphans: each ``sh -c "sleep &"`` exits at once, and its
#: ``sleep`` is reparented to zocket (the subreaper), which reaps it 2 ms later.
ORPHAN_FACTORY = 'while :; do sh -c "sleep 0.002 &"; done'


def test_orphans_reaped_while_generations_exit_hide_no_exit(tmp_path: Path) -> None:
    """Reaping orphans (waitpid(-1)) must never swallow the exit of a generation.

    Orphans exit all the time here, so zocket is often between reaping its
    generations by pid and reaping "any child"; a generation that exits right
    then must still be seen to stop (else zocket waits for it forever).
    """
    restarts = 150
    args = ["--port", "0", "--ready", "none", "--stop-timeout", "2",
            "--", "sh", "-c", ORPHAN_FACTORY]
    with running(args, stop_timeout=5) as zocket:
        cursor = Cursor(zocket)
        cursor.wait(r"generation 1 ready in")
        for number in range(1, restarts + 1):
            time.sleep(0.03)
            zocket.send_signal(signal.SIGHUP)
            cursor.wait(rf"generation {number + 1} ready in", 20)

        def unseen() -> list[int]:
            text = zocket.stderr_text(timeout=0)
            stopped = {int(n) for n in re.findall(r"generation (\d+) stopped \(", text)}
            return sorted(set(range(1, restarts + 1)) - stopped)

        try:
            wait_for(lambda: not unseen(), 10)
        except AssertionError:
            pass
        lost = unseen()
        killed = re.findall(r"generation \d+ did not stop within 2 s", zocket.stderr_text(0))
        assert not lost, (
            f"zocket never saw generations {lost} exit ({len(killed)} 'did not stop' lines); "
            f"holder CPU {cpu_seconds(zocket.pid):.1f} s"
        )
        assert zocket.stop(timeout=10) == 128 + signal.SIGTERM, zocket.stderr_text()


# --- a thousand restarts -------------------------------------------------------------------


def test_thousand_restarts_leak_nothing(tmp_path: Path) -> None:
    status_path = tmp_path / "status.json"
    args = ["--port", "0", "--ready", "none", "--stop-timeout", "2",
            "--status-file", status_path, "--", "sleep", "1000"]
    samples: dict[int, tuple[int, int, int]] = {}
    with running(args) as zocket:
        cursor = Cursor(zocket)
        cursor.wait(r"generation 1 ready in")
        (sentry,) = [p for p in children_of(zocket.pid) if p != zocket.child_pid]
        began = time.monotonic()
        for restart in range(1, 1001):
            zocket.send_signal(signal.SIGHUP)
            cursor.wait(rf"generation {restart + 1} ready in", 20)
            if restart in (100, 1000):
                # Settled: the previous generation gone, so one pidfd and one notify fd.
                zocket.wait_for_stderr(rf"generation {restart} stopped", 20)
                wait_for(lambda: not zombie_children(zocket.pid), 5, message="no zombie")
                wait_for(partial(restarts_counted, status_path, restart), 5)
                samples[restart] = resources(zocket.pid)
        took = time.monotonic() - began
        alive = [p for p in children_of(zocket.pid) if (proc_stat(p) or ("Z",))[0] != "Z"]
        last = dict(started(zocket))[1001]
        # The one other child is the sentry (zocket.sentry), there from the start.
        assert [p for p in alive if p != sentry] == [last], (alive, last, sentry)
        assert zombie_children(zocket.pid) == []
        # Idle once the last stop timers (--stop-timeout 2) have gone off: a holder that
        # lost track of a generation's exit spins on its pidfd.
        time.sleep(2.5)
        idle_from = cpu_seconds(zocket.pid)
        time.sleep(1.0)
        idle_cpu = cpu_seconds(zocket.pid) - idle_from
        log = zocket.stderr_text(timeout=0)
        stopped = {int(n) for n in re.findall(r"generation (\d+) stopped \(SIGTERM\)", log)}
        lost = sorted(set(range(1, 1001)) - stopped)
        assert not lost, f"exits of generations {lost} never seen (idle CPU {idle_cpu:.2f} s/s)"
        assert "did not stop within" not in log
        assert idle_cpu < 0.1, f"the idle holder used {idle_cpu:.2f} s of CPU in 1 s"
        assert zocket.stop() == 128 + signal.SIGTERM
    (fds100, threads100, rss100), (fds1000, threads1000, rss1000) = samples[100], samples[1000]
    print(f"1000 restarts in {took:.1f} s; fds {fds100}->{fds1000}, threads "
          f"{threads100}->{threads1000}, VmRSS {rss100}->{rss1000} KiB")
    assert fds1000 == fds100
    assert threads1000 == threads100 == 1
    assert rss1000 - rss100 <= 2048, f"VmRSS grew from {rss100} to {rss1000} KiB"
    assert len(started(zocket)) == 1001


# --- a crash loop --------------------------------------------------------------------------


def test_crash_loop_costs_the_holder_almost_nothing(tmp_path: Path) -> None:
    status_path = tmp_path / "status.json"
    args = ["--port", "0", "--status-file", status_path, "--", "false"]
    with running(args) as zocket:
        first = cpu_seconds(zocket.pid)
        began = time.monotonic()
        time.sleep(20)
        spent = cpu_seconds(zocket.pid) - first
        elapsed = time.monotonic() - began
        spawns = started(zocket)
        status = json.loads(status_path.read_text())
        assert not connect_refused(zocket.port)  # the socket is held all along
        code = zocket.stop(timeout=10)
    print(f"crash loop: {len(spawns)} spawns, holder CPU {spent:.3f} s in {elapsed:.1f} s")
    delays = [float(m[1]) for m in re.finditer(r"starting again in ([\d.]+) s",
                                                zocket.stderr_text())]
    # 0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 12.7 s (+ start-up): 8 spawns, 9 at a stretch.
    assert 6 <= len(spawns) <= 9, zocket.stderr_text()
    assert delays[:7] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4][: len(delays)], delays
    assert max(delays) <= 10.0
    assert spent < 0.01 * elapsed, f"holder used {spent:.3f} s of CPU in {elapsed:.1f} s"
    assert code in (1, 128 + signal.SIGTERM), zocket.stderr_text()
    (last,) = status["generations"]
    assert last["state"] == "exited" and last["exit_status"] == 1, status
    assert abs(status["generations_started"] - len(spawns)) <= 1, status
