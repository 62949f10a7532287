"""``--copies N`` against a real zocket and gunicorn (``-w 1``, one process per copy) under load.

The claim under test is the one the README makes: a restart replaces the
copies one at a time, each new copy ready before the old one of its slot is
told to stop, so no request fails and at least N-1 copies are ready
throughout. Readiness is read the way an operator would, from the status
file, sampled in a thread while the restarts run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import (
    LoadClient,
    ZocketProcess,
    assert_no_failures,
    http_get,
    read_environ,
    run_zocket,
    server_command,
    start_zocket,
    wait_for,
)

APP = '''
import os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"copy {os.environ['ZOCKET_COPY']} generation {os.environ['ZOCKET_GENERATION']}\\n"
            .encode()]
'''

COPIES = 3
RESTARTS = 5
BODY = re.compile(rb"copy (\d+) generation (\d+)\n")


@pytest.fixture
def control_path() -> Iterator[Path]:
    """A control socket path short enough for sun_path (tmp_path may not be)."""
    with tempfile.TemporaryDirectory(prefix="zk-copies-") as name:
        yield Path(name) / "ctl.sock"


def gunicorn_copies(app_dir: Path, control: Path, status: Path, *extra: str) -> ZocketProcess:
    (app_dir / "app.py").write_text(APP)
    command = [*server_command("gunicorn"), "-w", "1", "--no-control-socket", "--chdir",
               str(app_dir), "app:app"]
    return start_zocket(
        ["--port", "0", "--copies", COPIES, "--control", control, "--status-file", status,
         *extra, "--", *command],
        env={**os.environ, "HOME": str(app_dir)}, cwd=app_dir,
    )


def read_status(path: Path) -> dict[str, object] | None:
    """The status file, or None while it is absent (it is replaced by rename: never torn)."""
    try:
        status: dict[str, object] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return status


def serving(status: dict[str, object]) -> list[dict[str, object]]:
    generations = status["generations"]
    assert isinstance(generations, list)
    return [g for g in generations if g["state"] == "serving"]


class StatusSampler(threading.Thread):
    """Reads the status file every few milliseconds; keeps how many copies were ready."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__(name="status-sampler", daemon=True)
        self.path = path
        self.deadline = time.monotonic() + timeout
        self.stopping = threading.Event()
        self.counts: list[int] = []

    def run(self) -> None:
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            status = read_status(self.path)
            if status is not None:
                self.counts.append(len(serving(status)))
            self.stopping.wait(0.005)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5.0)
        assert not self.is_alive()


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "no-overlap"])
def test_copies_roll_one_at_a_time_under_load_with_no_failure(
    tmp_path: Path, control_path: Path, overlap: bool
) -> None:
    status_path = tmp_path / "status.json"
    extra = [] if overlap else ["--no-overlap"]
    with gunicorn_copies(tmp_path, control_path, status_path, *extra) as zocket:
        for number in range(1, COPIES + 1):
            zocket.wait_for_stderr(rf"generation {number} \(copy {number}\) ready in", 60)
        first = wait_for(
            lambda: (s := read_status(status_path)) is not None and len(serving(s)) == COPIES
            and s, 10, message="every copy serving in the status file",
        )
        assert first["copies"] == COPIES
        # Each copy has its own ZOCKET_COPY, and the status says which slot each pid runs.
        for generation in serving(first):
            pid = generation["pid"]
            assert isinstance(pid, int)
            environ = read_environ(pid)
            assert environ["ZOCKET_COPY"] == str(generation["copy"])
            assert environ["ZOCKET_GENERATION"] == str(generation["number"])
        assert sorted(int(str(g["copy"])) for g in serving(first)) == list(range(1, COPIES + 1))

        sampler = StatusSampler(status_path, timeout=300)
        with LoadClient(zocket.port, rate=100, duration=300) as load:
            sampler.start()
            try:
                load.wait_for(lambda o: o.ok, 10)
                for restart in range(1, RESTARTS + 1):
                    result = run_zocket(["reload", "--control", control_path], timeout=120)
                    assert result.returncode == 0, (result.stdout, result.stderr)
                    new = [COPIES * restart + c for c in range(1, COPIES + 1)]
                    old = [n - COPIES for n in new]
                    assert result.stdout.startswith(f"{COPIES} copies replaced in "), result.stdout
                    assert f"generations {', '.join(map(str, new))} ready; " in result.stdout
                    assert f"generations {', '.join(map(str, old))} told to stop" in result.stdout
                    # The moment reload returns, every answer comes from the new copies.
                    answer = BODY.fullmatch(http_get(zocket.port)[2])
                    assert answer is not None and int(answer[2]) in new, answer
                time.sleep(0.5)  # let the last old copies finish stopping under load
            finally:
                sampler.stop()
        assert_no_failures(load, minimum_ok=100)
        bodies = [BODY.fullmatch(b) for b in load.bodies()]
        assert all(bodies), load.bodies()[:5]
        copies_seen = {int(m[1]) for m in bodies if m}
        assert copies_seen == set(range(1, COPIES + 1)), copies_seen
        # Readiness, as the status file showed it while the copies rolled.
        assert len(sampler.counts) > 100, len(sampler.counts)
        assert min(sampler.counts) >= COPIES - 1, sorted(set(sampler.counts))
        print(f"\n{len(load.outcomes)} requests, {len(load.failures())} failed, "
              f"ready copies sampled {len(sampler.counts)} times: min {min(sampler.counts)}, "
              f"max {max(sampler.counts)}")

        if not overlap:  # the slot being replaced has no ready copy for a while
            assert COPIES - 1 in sampler.counts, sorted(set(sampler.counts))

        # The log shows the order: in each slot the new copy was ready before the old one
        # was stopped (with no overlap: the old one stopped before the new one started),
        # and each slot waited for the one before it.
        log = zocket.stderr_lines()
        for restart in range(1, RESTARTS + 1):
            for copy in range(1, COPIES + 1):
                new, old = COPIES * restart + copy, COPIES * (restart - 1) + copy
                ready = _index(log, rf"generation {new} \(copy {copy}\) ready in")
                began = _index(log, rf"generation {new} \(copy {copy}\) started")
                stopped = _index(log, rf"generation {old} \(copy {copy}\) stopped")
                if overlap:
                    assert ready < stopped, (new, old)
                else:
                    assert stopped < began, (new, old)
                if copy > 1:
                    assert _index(log, rf"generation {new - 1} \(copy {copy - 1}\) ready in") < (
                        _index(log, rf"generation {new} \(copy {copy}\) started")
                    )
        last = read_status(status_path)
        assert last is not None and last["restarts"] == RESTARTS
        assert [g["number"] for g in serving(last)] == [
            COPIES * RESTARTS + c for c in range(1, COPIES + 1)
        ]
        # `zocket status` names each copy, and which are ready.
        shown = run_zocket(["status", "--control", control_path], timeout=30)
        assert shown.returncode == 0, shown.stderr
        for copy in range(1, COPIES + 1):
            number = COPIES * RESTARTS + copy
            assert re.search(rf"^  generation {number} \(copy {copy}\): serving, pid \d+",
                             shown.stdout, re.MULTILINE), shown.stdout
        assert f"copies: {COPIES}, restarts: {RESTARTS}," in shown.stdout, shown.stdout
        assert zocket.stop() in {0, 128 + signal.SIGTERM}


def test_a_broken_edit_ends_the_roll_at_its_first_copy_and_the_old_copies_serve_on(
    tmp_path: Path, control_path: Path
) -> None:
    status_path = tmp_path / "status.json"
    with gunicorn_copies(tmp_path, control_path, status_path) as zocket:
        for number in range(1, COPIES + 1):
            zocket.wait_for_stderr(rf"generation {number} \(copy {number}\) ready in", 60)
        sampler = StatusSampler(status_path, timeout=120)
        with LoadClient(zocket.port, rate=100, duration=120) as load:
            sampler.start()
            try:
                load.wait_for(lambda o: o.ok, 10)
                (tmp_path / "app.py").write_text("def app(:\n")
                bad = run_zocket(["reload", "--control", control_path], timeout=120)
                assert bad.returncode == 1, (bad.stdout, bad.stderr)
                assert re.fullmatch(
                    r"zocket: error: generation 4 \(copy 1\) failed before ready: exit \d+; "
                    r"generations 1 \(copy 1\), 2 \(copy 2\), 3 \(copy 3\) keep serving\n",
                    bad.stderr,
                ), bad.stderr
                zocket.wait_for_stderr(r"the restart stops at copy 1 of 3", 5)
                after = read_status(status_path)
                assert after is not None
                assert [g["number"] for g in serving(after)] == [1, 2, 3], after
                assert "generation 4 (copy 1) failed before ready" in str(after["last_failure"])

                (tmp_path / "app.py").write_text(APP)  # fixed: the next reload rolls from copy 1
                good = run_zocket(["reload", "--control", control_path], timeout=120)
                assert good.returncode == 0, (good.stdout, good.stderr)
                assert "generations 5, 6, 7 ready; generations 1, 2, 3 told to stop" in (
                    good.stdout
                ), good.stdout
                time.sleep(0.5)
            finally:
                sampler.stop()
        assert_no_failures(load, minimum_ok=50)
        assert min(sampler.counts) >= COPIES - 1, sorted(set(sampler.counts))
        assert zocket.stop() in {0, 128 + signal.SIGTERM}


def _index(lines: list[str], pattern: str) -> int:
    regex = re.compile(pattern)
    found = [i for i, line in enumerate(lines) if regex.search(line)]
    assert len(found) == 1, (pattern, found)
    return found[0]


def test_copies_is_refused_out_of_range() -> None:
    for bad in ("0", "65", "two"):
        result = run_zocket(["--copies", bad, "--port", "0", "--", "true"], timeout=30)
        assert result.returncode == 2, result
        assert result.stderr.count("\n") == 1 and "--copies" in result.stderr, result.stderr


def test_copies_in_the_help() -> None:
    result = run_zocket(["--help"], timeout=30)
    assert result.returncode == 0
    assert "--copies N" in result.stdout and "ZOCKET_COPY" in result.stdout
