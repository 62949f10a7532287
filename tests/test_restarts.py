"""Generations end to end: SIGHUP, --watch and crash restarts of real servers under load.

Every test runs the real ``zocket`` command (`support.start_zocket`) on a free
loopback port, with a server whose responses say which generation answered
(``ZOCKET_GENERATION``), and looks at two things: what clients saw (a
`support.LoadClient` records every request: none may fail) and what zocket
logged (one line per step of a generation's life).

Servers: gunicorn (2 sync workers), uvicorn ``--fd {fd}`` and hypercorn
``--bind fd://{fd}`` with apps that sleep at import (the boot time a restart
must hide), and support's `FD_RESPONDER`, a standard-library server whose behaviour per
generation (boot time, READY=1, what it does with a stop signal) is set by
environment variables, for the readiness and stopping rules.

Each app is written into ``tmp_path/app``, the server's working directory;
``tmp_path`` is HOME (gunicorn keeps its control socket there; it is turned off
anyway). PYTHONDONTWRITEBYTECODE is set: an edit of the same size within the
same second as the previous one would otherwise be served from a stale .pyc.
Every wait is bounded; every zocket is stopped by its context manager, which
also kills the server's process group if anything outlived zocket.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import (
    LoadClient,
    Outcome,
    ZocketProcess,
    asgi_app,
    assert_no_failures,
    group_members,
    http_get,
    kill_groups,
    proc_stat,
    server_command,
    start_in,
    started,
    wait_for,
    wait_ready,
    write_atomically,
    write_responder,
    wsgi_app,
)

#: Who answered: ``generation=N`` in the apps' bodies, ``"generation": "N"`` in the responder's.
GENERATION_IN_BODY = re.compile(rb'generation(?:=|": ")(\d+)')

# --- apps -----------------------------------------------------------------------------------------

#: The top of both apps: they take APP_BOOT seconds to import (VERSION is what edits change).
APP_PRELUDE = """\
import os
import time

VERSION = "v0"
BOOTED = time.monotonic()
time.sleep(float(os.environ.get("APP_BOOT", "0")))
GENERATION = os.environ.get("ZOCKET_GENERATION", "?")
"""
#: What both apps answer: who answered, in the body and in a header.
APP_BODY = r'f"generation={GENERATION} version={VERSION} booted={BOOTED:.6f} pid={os.getpid()}\n"'
APP_HEADERS = {"X-Zocket-Generation": "GENERATION"}

#: A WSGI app that takes APP_BOOT seconds to import and says who answered.
WSGI_APP = wsgi_app(APP_BODY, prelude=APP_PRELUDE, headers=APP_HEADERS)
#: The same as an ASGI app (with the lifespan protocol, which uvicorn and hypercorn speak).
ASGI_APP = asgi_app(APP_BODY, prelude=APP_PRELUDE, headers=APP_HEADERS)

def gunicorn(workers: int = 2) -> list[str]:
    return [*server_command("gunicorn"), "-w", str(workers), "--no-control-socket", "app:app"]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "app.py").write_text(WSGI_APP)
    (directory / "asgi.py").write_text(ASGI_APP)
    write_responder(directory)
    return directory


@contextmanager
def run(app_dir: Path, args: list[str], **env: str) -> Iterator[ZocketProcess]:
    """zocket ARGS on a free port, in ``app_dir``, with ``env`` on top of the defaults.

    On the way out zocket is stopped (`ZocketProcess.close`), then the process group of
    every generation it logged is SIGKILLed if anything is still left in it, now that
    all of zocket's stderr has been read.
    """
    env = {"PYTHONDONTWRITEBYTECODE": "1", "RESPONDER_ON_STOP": "*:graceful", **env}
    zocket = start_in(app_dir, args, home=app_dir.parent, **env)
    try:
        with zocket:
            yield zocket
    finally:
        kill_groups(pid for _, pid in started(zocket))


def responder() -> list[str]:
    """support's responder, as written into ``app_dir`` (graceful on a stop signal: `run`)."""
    return [sys.executable, "fd_responder.py"]


# --- reading outcomes and logs --------------------------------------------------------------------


def generation_of(outcome: Outcome) -> int | None:
    match = GENERATION_IN_BODY.search(outcome.body) if outcome.ok else None
    return int(match[1]) if match else None


def generations_seen(load: LoadClient) -> set[int]:
    return {g for g in map(generation_of, load.oks) if g is not None}


def line_index(zocket: ZocketProcess, pattern: str) -> int:
    """The index of the first stderr line matching ``pattern`` (which must be there)."""
    regex = re.compile(pattern)
    for index, line in enumerate(zocket.stderr_lines()):
        if regex.search(line):
            return index
    raise AssertionError(f"no line matching {pattern!r}:\n{zocket.stderr_text(timeout=0)}")


def lines_matching(zocket: ZocketProcess, pattern: str) -> list[re.Match[str]]:
    regex = re.compile(pattern)
    return [m for m in map(regex.search, zocket.stderr_lines()) if m is not None]


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def assert_all_gone(pids: list[int]) -> None:
    """No process (nor group member) of any generation outlived zocket."""
    wait_for(
        lambda: not any(alive(pid) or group_members(pid) for pid in pids),
        10,
        message=f"processes of generations {pids} to be gone",
    )


@pytest.fixture
def load_factory() -> Iterator[list[LoadClient]]:
    """LoadClients started by a test are stopped even when it fails."""
    loads: list[LoadClient] = []
    yield loads
    for load in loads:
        if load.running:
            load.stop()


def start_load(loads: list[LoadClient], port: int, rate: float = 60.0) -> LoadClient:
    load = LoadClient(port, threads=4, rate=rate, duration=120, timeout=10)
    loads.append(load)
    load.start()
    load.wait_for(lambda o: o.ok, timeout=30)
    return load


# --- SIGHUP under load with real servers ----------------------------------------------------------


@pytest.mark.slow
def test_gunicorn_ten_sighups_under_load(app_dir: Path, load_factory: list[LoadClient]) -> None:
    boot = 1.5
    with run(app_dir, ["--", *gunicorn(2)], APP_BOOT=str(boot)) as zocket:
        wait_ready(zocket, 1)
        load = start_load(load_factory, zocket.port)
        ready_ms = []
        for number in range(2, 12):
            zocket.send_signal(signal.SIGHUP)
            ready_ms.append(wait_ready(zocket, number))
        load.wait_for(lambda o: generation_of(o) == 11, timeout=15)
        zocket.wait_for_stderr(r"zocket: generation 10 stopped \(exit 0\) after \d+ ms", 30)
        time.sleep(0.5)
        load.stop()
        pids = [pid for _, pid in started(zocket)]
        assert zocket.stop() == 0
    log = zocket.stderr_text()
    assert_no_failures(load, minimum_ok=300)
    assert generations_seen(load) == set(range(1, 12)), load.summary()
    # Each generation took the boot time to be ready (auto saw the workers, not the arbiter)...
    assert min(ready_ms) >= boot * 1000, ready_ms
    for number in range(2, 12):
        assert re.search(rf"generation {number} ready in \d+ ms \(auto: worker \d+ waiting", log)
    # ... and no client waited for it: the old generation served until then.
    slowest = max(o.elapsed for o in load.outcomes)
    assert slowest < boot, f"a request took {slowest:.3f} s\n{load.summary()}"
    assert [n for n, _ in started(zocket)] == list(range(1, 12)), log
    assert log.count("SIGHUP: restarting") == 10, log
    assert "failed before ready" not in log and "no generation is serving" not in log, log
    assert_all_gone(pids)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, options",
    [("uvicorn", ["--no-access-log", "--fd", "{fd}"]), ("hypercorn", ["--bind", "fd://{fd}"])],
)
def test_asgi_server_sighups_under_load(
    name: str, options: list[str], app_dir: Path, load_factory: list[LoadClient]
) -> None:
    boot = 1.0
    command = [*server_command(name), *options, "asgi:app"]
    with run(app_dir, ["--", *command], APP_BOOT=str(boot)) as zocket:
        wait_ready(zocket, 1)
        load = start_load(load_factory, zocket.port)
        # The header says the same as the body.
        status, headers, body = http_get(zocket.port)
        assert status == 200 and headers["x-zocket-generation"] == "1", (headers, body)
        for number in range(2, 12):
            zocket.send_signal(signal.SIGHUP)
            assert wait_ready(zocket, number) >= boot * 1000
        load.wait_for(lambda o: generation_of(o) == 11, timeout=15)
        zocket.wait_for_stderr(r"zocket: generation 10 stopped \(.*\) after \d+ ms", 30)
        time.sleep(0.5)
        load.stop()
        pids = [pid for _, pid in started(zocket)]
        assert zocket.stop() in (0, 128 + signal.SIGTERM)
    log = zocket.stderr_text()
    # Both servers' own shutdown would close a connection the old generation accepted but
    # had not read yet, and hypercorn's worker would die of zocket's SIGTERM with its
    # requests: the hook's stop handling (test_hook_signals.py) leaves nothing to lose.
    assert_no_failures(load, minimum_ok=300)
    assert generations_seen(load) == set(range(1, 12)), load.summary()
    slowest = max(o.elapsed for o in load.outcomes)
    assert slowest < boot, f"a request took {slowest:.3f} s\n{load.summary()}"
    assert [n for n, _ in started(zocket)] == list(range(1, 12)), log
    assert "failed before ready" not in log, log
    assert_all_gone(pids)


# --- --watch --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_watch_ten_edits_go_live_under_load(
    app_dir: Path, tmp_path: Path, load_factory: list[LoadClient]
) -> None:
    app = app_dir / "app.py"
    with run(app_dir, ["--watch", str(app_dir), "--", *gunicorn(2)], APP_BOOT="0.3") as zocket:
        wait_ready(zocket, 1)
        load = start_load(load_factory, zocket.port)
        for version in range(1, 11):
            edited = time.monotonic()
            write_atomically(app, WSGI_APP.replace('"v0"', f'"edit-{version}"'), tmp_path)
            wait_ready(zocket, version + 1)
            # The new generation runs the new code.
            live = load.wait_for(
                lambda o: f"version=edit-{version} ".encode() in o.body, timeout=15, since=edited
            )
            assert generation_of(live) == version + 1, live
        zocket.wait_for_stderr(r"zocket: generation 10 stopped \(exit 0\)", 30)
        load.stop()
        assert zocket.stop() == 0
    log = zocket.stderr_text()
    assert_no_failures(load, minimum_ok=200)
    versions = {m[1] for m in (re.search(rb"version=(\S+)", b) for b in load.bodies()) if m}
    assert versions == {b"v0"} | {f"edit-{v}".encode() for v in range(1, 11)}, versions
    # Each generation served only its own code: generation N+1 is edit N.
    for outcome in load.oks:
        number = generation_of(outcome)
        expected = b"v0" if number == 1 else f"edit-{number - 1}".encode()  # type: ignore[operator]
        assert f"version={expected.decode()} ".encode() in outcome.body, outcome
    # One rename, one restart, naming the file.
    assert [n for n, _ in started(zocket)] == list(range(1, 12)), log
    assert len(lines_matching(zocket, r"zocket: app\.py changed: restarting")) == 10, log


BROKEN = 'raise RuntimeError("broken on purpose")\n'


@pytest.mark.slow
@pytest.mark.parametrize("trigger", ["sighup", "watch"])
def test_generation_that_fails_at_import_leaves_the_old_one_serving(
    trigger: str, app_dir: Path, tmp_path: Path, load_factory: list[LoadClient]
) -> None:
    app = app_dir / "app.py"
    watch = ["--watch", str(app_dir)] if trigger == "watch" else []

    def edit(text: str) -> None:
        write_atomically(app, text, tmp_path)
        if trigger == "sighup":
            zocket.send_signal(signal.SIGHUP)

    with run(app_dir, [*watch, "--", *gunicorn(2)], APP_BOOT="0.3") as zocket:
        wait_ready(zocket, 1)
        load = start_load(load_factory, zocket.port)
        edit(BROKEN + WSGI_APP)
        failed = zocket.wait_for_stderr(r"zocket: generation 2 failed before ready", 40)
        after_failure = time.monotonic()
        assert re.search(r"failed before ready: exit [1-9]\d*; generation 1 keeps serving$", failed)
        # The old generation serves on, and nothing new starts by itself.
        time.sleep(1.5)
        served = [o for o in load.outcomes if o.started >= after_failure]
        assert len(served) >= 30, load.summary()
        assert {generation_of(o) for o in served} == {1}, load.summary()
        assert [n for n, _ in started(zocket)] == [1, 2]
        # The next good edit goes live.
        edited = time.monotonic()
        edit(WSGI_APP.replace('"v0"', '"fixed"'))
        wait_ready(zocket, 3)
        live = load.wait_for(lambda o: b"version=fixed " in o.body, timeout=15, since=edited)
        assert generation_of(live) == 3
        zocket.wait_for_stderr(r"zocket: generation 1 stopped \(exit 0\) after \d+ ms", 30)
        load.stop()
        assert zocket.stop() == 0
    log = zocket.stderr_text()
    assert_no_failures(load, minimum_ok=100)
    assert generations_seen(load) == {1, 3}, load.summary()
    assert "broken on purpose" in log  # the server's own traceback reached stderr
    assert "no generation is serving" not in log, log
    assert line_index(zocket, "generation 2 failed before ready") < line_index(
        zocket, "generation 3 started"
    )


# --- crashes --------------------------------------------------------------------------------------


def test_crash_loop_backs_off_and_stops_promptly(app_dir: Path) -> None:
    command = [sys.executable, "-c", "raise SystemExit(1)"]
    with run(app_dir, ["--", *command]) as zocket:
        began = time.monotonic()
        time.sleep(3.0)
        in_three_seconds = started(zocket)
        stopping = time.monotonic()
        status = zocket.stop(timeout=5)
        took = time.monotonic() - stopping
    log = zocket.stderr_text()
    # Starts at about 0, 0.1, 0.3, 0.7, 1.5, 3.1 s (plus interpreter start-ups): not 30.
    assert 3 <= len(in_three_seconds) <= 7, log
    assert [n for n, _ in in_three_seconds] == list(range(1, len(in_three_seconds) + 1))
    delays = [float(m[1]) for m in lines_matching(zocket, r"starting again in ([\d.]+) s")]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6][: len(delays)], log
    assert len(delays) >= 3, log
    assert re.search(r"generation 1 failed before ready: exit 1; no generation is serving", log)
    assert took < 3.0, f"zocket took {took:.1f} s to stop"
    assert status in (1, 128 + signal.SIGTERM), log
    assert time.monotonic() - began < 10
    assert_all_gone([pid for _, pid in started(zocket)])


# --- coalescing -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_fifty_sighups_in_a_second_coalesce(app_dir: Path, load_factory: list[LoadClient]) -> None:
    boot = 0.3
    with run(app_dir, ["--", *responder()], RESPONDER_BOOT=f"*:{boot}") as zocket:
        wait_ready(zocket, 1)
        load = start_load(load_factory, zocket.port)
        began = time.monotonic()
        for index in range(50):
            last_sighup = time.monotonic()
            zocket.send_signal(signal.SIGHUP)
            time.sleep(max(0.0, began + (index + 1) * 0.02 - time.monotonic()))
        sent_for = time.monotonic() - began
        # Settle: the last generation started is ready and no other one follows it.
        deadline = time.monotonic() + 30
        while True:
            last = max(n for n, _ in started(zocket))
            wait_ready(zocket, last, timeout=max(1.0, deadline - time.monotonic()))
            time.sleep(1.0)
            if max(n for n, _ in started(zocket)) == last or time.monotonic() > deadline:
                break
        final = load.wait_for(lambda o: generation_of(o) == last, timeout=10)
        zocket.wait_for_stderr(rf"zocket: generation {last - 1} stopped", 15)
        old_gone = time.monotonic()
        time.sleep(0.5)
        after = [o for o in load.oks if o.started > old_gone]
        load.stop()
        assert zocket.stop() == 0
    log = zocket.stderr_text()
    assert_no_failures(load, minimum_ok=60)
    # Each generation boots in at least 0.3 s and only one boots at a time: at most
    # one start per boot time while the signals came, plus the one coalesced after.
    bound = 2 + int(sent_for / boot)
    restarts = last - 1
    assert 2 <= restarts <= bound, f"{restarts} restarts in {sent_for:.2f} s (max {bound}):\n{log}"
    assert last <= 6 or sent_for > 1.2, log
    assert max(generations_seen(load)) == last
    assert after and {generation_of(o) for o in after} == {last}, load.summary()
    # The last generation started after the last SIGHUP: the last trigger went live.
    booted = float(json.loads(final.body)["booted"])
    assert booted > last_sighup, (booted, last_sighup)
    assert log.count("during a start: restarting") >= 1, log
    assert log.count("SIGHUP: restarting") + log.count("during a start: restarting") == last - 1, log
    assert "failed before ready" not in log, log


# --- --no-overlap ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_overlap_gunicorn_refuses_nothing(
    app_dir: Path, load_factory: list[LoadClient]
) -> None:
    with run(app_dir, ["--no-overlap", "--", *gunicorn(2)], APP_BOOT="0.5") as zocket:
        wait_ready(zocket, 1)
        load = start_load(load_factory, zocket.port)
        for number in range(2, 5):
            zocket.send_signal(signal.SIGHUP)
            wait_ready(zocket, number)
            load.wait_for(lambda o: generation_of(o) == number, timeout=15)
            time.sleep(0.5)
        load.stop()
        assert zocket.stop() == 0
    log = zocket.stderr_text()
    counts = load.counts()
    assert counts["refused"] == 0 and counts["reset"] == 0, load.summary()
    assert_no_failures(load, minimum_ok=60)
    assert generations_seen(load) == {1, 2, 3, 4}
    # The old generation was gone before the new one started...
    for number in range(2, 5):
        assert line_index(zocket, rf"generation {number - 1} stopped \(exit 0\)") < line_index(
            zocket, rf"generation {number} started"
        ), log
    # ... so clients waited in the backlog for the boot (0.5 s of sleep alone).
    slowest = max(o.elapsed for o in load.outcomes)
    assert slowest > 0.3, load.summary()


# --- readiness ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ready_timeout_stops_the_new_generation_the_old_one_serves(
    app_dir: Path, load_factory: list[LoadClient]
) -> None:
    args = ["--ready", "notify", "--ready-timeout", "2", "--", *responder()]
    with run(app_dir, args, RESPONDER_NOTIFY="1:raw") as zocket:
        assert "(notify: READY=1)" in zocket.wait_for_stderr("generation 1 ready", 20)
        load = start_load(load_factory, zocket.port, rate=40)
        sighup = time.monotonic()
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"zocket: generation 2 started", 10)
        # Generation 2 accepts (it shares the socket) but never says READY=1.
        load.wait_for(lambda o: generation_of(o) == 2, timeout=10)
        line = zocket.wait_for_stderr(r"generation 2 not ready", 20)
        waited = time.monotonic() - sighup
        assert re.search(
            r"zocket: generation 2 not ready after 2 s; stopping it; generation 1 keeps serving$",
            line,
        ), line
        zocket.wait_for_stderr(r"zocket: generation 2 stopped \(exit 0\) after \d+ ms", 10)
        after = time.monotonic()
        time.sleep(1.0)
        served = [o for o in load.outcomes if o.started > after]
        load.stop()
        assert zocket.stop() == 0
    log = zocket.stderr_text()
    assert 1.9 <= waited < 10, waited
    assert_no_failures(load, minimum_ok=40)
    assert len(served) >= 20 and {generation_of(o) for o in served} == {1}, load.summary()
    assert "generation 2 ready" not in log and "generation 1 stopped (exit 0) after" not in log, log
    assert [n for n, _ in started(zocket)] == [1, 2], log


@pytest.mark.parametrize("how", ["raw", "zocket"])
def test_ready_notify(how: str, app_dir: Path) -> None:
    env = {"RESPONDER_NOTIFY": f"*:{how}", "RESPONDER_NOTIFY_DELAY": "*:1.0"}
    with run(app_dir, ["--ready", "notify", "--", *responder()], **env) as zocket:
        first = zocket.wait_for_stderr("zocket: generation 1 ready", 20)
        status, headers, _ = http_get(zocket.port)
        assert (status, headers["X-Zocket-Generation"]) == (200, "1")
        zocket.send_signal(signal.SIGHUP)
        second = zocket.wait_for_stderr("zocket: generation 2 ready", 20)
        zocket.wait_for_stderr(r"zocket: generation 1 stopped \(exit 0\)", 20)
        status, headers, _ = http_get(zocket.port)
        assert (status, headers["X-Zocket-Generation"]) == (200, "2")
        assert zocket.stop() == 0
    for line in (first, second):
        assert line.endswith("(notify: READY=1)"), line
        # Serving began at once; the ready line waited for READY=1, a second later.
        assert int(re.search(r"ready in (\d+) ms", line)[1]) >= 950, line  # type: ignore[index]


# --- stopping -------------------------------------------------------------------------------------


def test_stop_signal_reaches_the_old_generation(app_dir: Path, tmp_path: Path) -> None:
    env = {"RESPONDER_LOG_DIR": str(tmp_path)}
    with run(app_dir, ["--stop-signal", "INT", "--", *responder()], **env) as zocket:
        wait_ready(zocket, 1, timeout=20)
        zocket.send_signal(signal.SIGHUP)
        wait_ready(zocket, 2, timeout=20)
        zocket.wait_for_stderr(r"zocket: generation 1 stopped \(exit 0\) after \d+ ms", 20)
        assert (tmp_path / "gen1.signals").read_text() == "SIGINT\n"
        assert not (tmp_path / "gen2.signals").exists()
        _, headers, _ = http_get(zocket.port)
        assert headers["X-Zocket-Generation"] == "2"
        # zocket's own SIGTERM is forwarded as it is, not as --stop-signal.
        assert zocket.stop() == 0
    assert (tmp_path / "gen2.signals").read_text() == "SIGTERM\n"


def test_stop_timeout_kills_a_generation_that_ignores_the_stop_signal(
    app_dir: Path, tmp_path: Path
) -> None:
    env = {"RESPONDER_ON_STOP": "*:ignore", "RESPONDER_LOG_DIR": str(tmp_path)}
    with run(app_dir, ["--stop-timeout", "1", "--", *responder()], **env) as zocket:
        wait_ready(zocket, 1, timeout=20)
        zocket.send_signal(signal.SIGHUP)
        wait_ready(zocket, 2, timeout=20)
        kill = zocket.wait_for_stderr(r"generation 1 did not stop", 10)
        assert kill.endswith("zocket: generation 1 did not stop within 1 s: sending SIGKILL"), kill
        stopped = zocket.wait_for_stderr(r"zocket: generation 1 stopped \(SIGKILL\) after", 10)
        assert 900 <= int(re.search(r"after (\d+) ms", stopped)[1]) < 8000  # type: ignore[index]
        assert (tmp_path / "gen1.signals").read_text() == "SIGTERM\n"
        _, headers, _ = http_get(zocket.port)
        assert headers["X-Zocket-Generation"] == "2"
        # Stopping zocket: generation 2 ignores SIGTERM too, and is killed after 1 s.
        stopping = time.monotonic()
        status = zocket.stop(timeout=10)
        took = time.monotonic() - stopping
        pids = [pid for _, pid in started(zocket)]
    assert status == 128 + signal.SIGKILL, zocket.stderr_text()
    assert 0.9 <= took < 8, took
    assert "generation 2 did not stop within 1 s: sending SIGKILL" in zocket.stderr_text()
    assert_all_gone(pids)


def test_stopping_while_a_generation_starts_stops_both(app_dir: Path, tmp_path: Path) -> None:
    env = {
        "RESPONDER_BOOT": "2:60",  # generation 2 would take a minute to boot
        "RESPONDER_ON_STOP": "1:exit:7",
        "RESPONDER_LOG_DIR": str(tmp_path),
    }
    with run(app_dir, ["--", *responder()], **env) as zocket:
        wait_ready(zocket, 1, timeout=20)
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"zocket: generation 2 started", 10)
        time.sleep(0.5)
        pids = [pid for _, pid in started(zocket)]
        assert len(pids) == 2 and all(map(alive, pids))
        stopping = time.monotonic()
        status = zocket.stop(timeout=10)
        took = time.monotonic() - stopping
    log = zocket.stderr_text()
    assert status == 7, log  # the serving generation's status, not the starting one's
    assert took < 5, took
    assert re.search(r"zocket: generation 1 stopped \(exit 7\)", log), log
    assert re.search(r"zocket: generation 2 stopped \(SIGTERM\)", log), log
    assert (tmp_path / "gen1.signals").read_text() == "SIGTERM\n"
    assert "ready" not in log.split("generation 2 started", 1)[1], log
    assert_all_gone(pids)


# --- nothing serving ------------------------------------------------------------------------------
#
# When no generation serves, zocket must always have one on the way: connections
# otherwise wait in the backlog for ever. A generation that exits before it is ready
# is started again with backoff; one that is not ready in time must be too.


def test_first_generation_not_ready_in_time_is_started_again(app_dir: Path) -> None:
    """Generation 1 never sends READY=1: stopped after --ready-timeout, then tried again."""
    args = ["--ready", "notify", "--ready-timeout", "1", "--", *responder()]
    with run(app_dir, args) as zocket:
        zocket.wait_for_stderr(
            r"zocket: generation 1 not ready after 1 s; stopping it; no generation is serving", 10
        )
        zocket.wait_for_stderr(r"zocket: generation 1 stopped", 10)
        # Nothing else happens to it: no trigger comes. A respawn must.
        zocket.wait_for_stderr(r"zocket: generation 2 started", 5)
        assert zocket.stop() in (0, 1, 128 + signal.SIGTERM)


def test_serving_generation_crash_while_the_next_is_not_ready_is_started_again(
    app_dir: Path,
) -> None:
    """The serving generation dies while the next one boots; that one then times out."""
    args = ["--ready", "notify", "--ready-timeout", "2", "--", *responder()]
    with run(app_dir, args, RESPONDER_NOTIFY="1:raw") as zocket:
        wait_ready(zocket, 1, timeout=20)
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"zocket: generation 2 started", 10)
        os.kill(zocket.child_pid, signal.SIGKILL)
        zocket.wait_for_stderr(r"zocket: generation 1 exited unexpectedly \(SIGKILL\)", 10)
        zocket.wait_for_stderr(r"zocket: generation 2 not ready after 2 s", 10)
        zocket.wait_for_stderr(r"zocket: generation 2 stopped", 10)
        # Nothing serves now; zocket must start a generation by itself.
        zocket.wait_for_stderr(r"zocket: generation 3 started", 5)
        assert zocket.stop() in (0, 1, 128 + signal.SIGTERM)


@pytest.mark.slow
def test_backoff_resets_once_a_generation_has_served_a_second(app_dir: Path) -> None:
    """README: backoff "0.1 s doubling to 10 s, reset once a generation has served for 1 s".

    A generation that served longer than Config.stable_after (1 s) and was then replaced
    by a SIGHUP ends the crash series: the next crash is the first of a new one.
    """
    env = {"RESPONDER_EXIT": "1:1,2:1,3:1,4:1"}  # a bad start: four crashes, then it works
    with run(app_dir, ["--", *responder()], **env) as zocket:
        wait_ready(zocket, 5, timeout=20)
        delays = [float(m[1]) for m in lines_matching(zocket, r"starting again in ([\d.]+) s")]
        assert delays == [0.1, 0.2, 0.4, 0.8], zocket.stderr_text(timeout=0)
        time.sleep(1.5)  # generation 5 has now served longer than stable_after
        zocket.send_signal(signal.SIGHUP)
        wait_ready(zocket, 6, timeout=20)
        zocket.wait_for_stderr(r"zocket: generation 5 stopped \(exit 0\)", 10)
        sixth = started(zocket)[-1]
        assert sixth[0] == 6
        os.kill(sixth[1], signal.SIGKILL)
        zocket.wait_for_stderr(r"zocket: generation 6 exited unexpectedly \(SIGKILL\)", 10)
        again = r"starting again in ([\d.]+) s"
        wait_for(lambda: len(lines_matching(zocket, again)) == 5, 10, message="a 5th respawn")
        assert lines_matching(zocket, again)[-1][1] == "0.1", zocket.stderr_text(timeout=0)
        wait_ready(zocket, 7, timeout=20)
        assert zocket.stop() == 0


#: A master that forks one worker (same process group) and exits at once on SIGTERM,
#: leaving its worker to finish "gracefully": the worker ignores SIGTERM and serves on.
MASTER_AND_WORKER = r'''
import http.server, os, signal, socket, time

GENERATION = os.environ["ZOCKET_GENERATION"]

if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    listener = socket.socket(fileno=3)
    listener.setblocking(False)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"generation={GENERATION} pid={os.getpid()}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.serve_forever(poll_interval=0.05)
else:
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    while True:
        time.sleep(1)
'''


def test_stop_timeout_kills_what_is_left_of_an_old_generation(app_dir: Path) -> None:
    """--stop-signal and SIGKILL go to the generation's process group: all of it must go.

    The master exits at once; its worker stays in the group. After --stop-timeout the
    old generation must be gone as a whole, not keep serving old code on the shared socket.
    """
    (app_dir / "master.py").write_text(MASTER_AND_WORKER)
    with run(app_dir, ["--stop-timeout", "1", "--", sys.executable, "master.py"]) as zocket:
        first = zocket.wait_for_stderr(r"zocket: generation 1 ready", 20)
        old_worker = int(re.search(r"auto: worker (\d+) waiting", first)[1])  # type: ignore[index]
        zocket.send_signal(signal.SIGHUP)
        wait_ready(zocket, 2, timeout=20)
        zocket.wait_for_stderr(r"zocket: generation 1 stopped \(exit 0\)", 10)
        time.sleep(2.5)  # well past --stop-timeout
        answers = [http_get(zocket.port, timeout=5)[2] for _ in range(30)]
        worker_left = alive(old_worker)
    served_by_1 = [a for a in answers if a.startswith(b"generation=1 ")]
    assert not worker_left and not served_by_1, (
        f"generation 1's worker {old_worker} still alive ({worker_left}), answered "
        f"{len(served_by_1)}/30 requests after generation 1 was reported stopped\n"
        + zocket.stderr_text()
    )


def test_no_process_of_a_generation_outlives_zocket(app_dir: Path) -> None:
    """The same master and worker: once zocket has exited, nothing may serve on its port."""
    (app_dir / "master.py").write_text(MASTER_AND_WORKER)
    with run(app_dir, ["--stop-timeout", "1", "--", sys.executable, "master.py"]) as zocket:
        first = zocket.wait_for_stderr(r"zocket: generation 1 ready", 20)
        worker = int(re.search(r"auto: worker (\d+) waiting", first)[1])  # type: ignore[index]
        status = zocket.stop(timeout=10)
        time.sleep(1.5)  # past --stop-timeout, had zocket waited for it
        worker_left = alive(worker)
    assert status == 0
    assert not worker_left, (
        f"worker {worker} of generation 1 outlived zocket (still in process group "
        f"{zocket.child_pid}, holding the port)\n" + zocket.stderr_text()
    )
