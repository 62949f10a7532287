"""``zocket upgrade`` and SIGUSR2: the installed zocket takes over in the same process.

The same pid, the same held socket, the same generation serving, nothing failed under
load; an install that cannot start is refused and the running zocket serves on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import zocket
from support import (
    LoadClient,
    assert_no_failures,
    children_of,
    http_get,
    kill_groups,
    read_cmdline,
    socket_inodes,
    wait_for,
    write_responder,
)
from zocket import libc, upgrade


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A copy of the installed zocket package (with its compiled module) that a test may break."""
    site = tmp_path / "site"
    shutil.copytree(Path(zocket.__file__).parent, site / "zocket",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="zk-up-") as name:
        yield Path(name)


class Running:
    """``python -m zocket`` from the copy in ``site``, its stderr in a file."""

    def __init__(self, site: Path, workdir: Path, args: list[str]) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            self.env.pop(name, None)
        self.log = workdir / "zocket.log"
        self.workdir = workdir
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zocket", *args], cwd=workdir, env=self.env,
                stdin=subprocess.DEVNULL, stderr=err,
            )

    def text(self) -> str:
        return self.log.read_text()

    def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = re.search(pattern, self.text())
            if match:
                found.append(match)
            return bool(match)

        wait_for(seen, timeout, message=f"{pattern!r} in zocket's log:\n{self.text()}")
        return found[0]

    def ctl(self, *args: object, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zocket", *map(str, args)], cwd=self.workdir, env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def kill_all(self) -> None:
        pids = [int(m) for m in re.findall(r"started \(pid (\d+)\)", self.text())]
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        kill_groups(pids)


def start(site: Path, workdir: Path, control: Path, *extra: str) -> Running:
    responder = write_responder(workdir)
    running = Running(site, workdir, ["--port", "0", "--control", str(control),
                                      "--status-file", str(workdir / "status.json"), *extra,
                                      "--", sys.executable, str(responder)])
    running.wait_line(r"generation 1 ready in")
    return running


def status(running: Running) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((running.workdir / "status.json").read_text())
    return record


def port_of(running: Running) -> int:
    return int(running.wait_line(r"holding http://127\.0\.0\.1:(\d+)")[1])


def test_upgrade_under_load_keeps_the_pid_the_socket_and_the_generation(
    installed: Path, tmp_path: Path, short_dir: Path
) -> None:
    control = short_dir / "ctl.sock"
    running = start(installed, tmp_path, control)
    try:
        port = port_of(running)
        held = set(socket_inodes(running.proc.pid).values())
        serving = http_get(port)[2]
        with LoadClient(port, rate=100, duration=60) as load:
            result = running.ctl("upgrade", "--control", control)
            assert result.returncode == 0, (result.stderr, running.text())
            assert re.fullmatch(
                rf"upgraded in place from zocket \S+ to \S+ \(pid {running.proc.pid}\); "
                r"generation 1 serving\n", result.stdout
            ), result.stdout
            # The new image took the old one's place: same process, same sockets.
            assert running.proc.poll() is None
            assert held <= set(socket_inodes(running.proc.pid).values())
            assert http_get(port)[2] == serving  # the same generation's process answers
            # And it works as zocket: a reload through it, and SIGUSR2 as a second upgrade.
            reload = running.ctl("reload", "--control", control)
            assert reload.returncode == 0, (reload.stderr, running.text())
            running.proc.send_signal(signal.SIGUSR2)
            wait_for(lambda: running.text().count("upgraded in place") == 2, 20,
                     message=f"a second upgrade:\n{running.text()}")
            assert running.ctl("reload", "--control", control).returncode == 0
            load.wait_for(lambda o: o.ok, 10)
        assert_no_failures(load, minimum_ok=50)
        # The reload answers once generation 3 is ready; generation 2 exits after it.
        wait_for(lambda: [g["number"] for g in status(running)["generations"]] == [3], 20,
                 message=f"only generation 3 left: {status(running)['generations']}")
        assert running.stop() == 128 + signal.SIGTERM
        assert "Traceback" not in running.text(), running.text()
        assert not control.exists()
    finally:
        running.kill_all()


def test_an_install_that_cannot_start_is_refused_and_zocket_serves_on(
    installed: Path, tmp_path: Path, short_dir: Path
) -> None:
    control = short_dir / "ctl.sock"
    running = start(installed, tmp_path, control)
    try:
        port = port_of(running)
        (installed / "zocket" / "holder.py").write_text("def broken(:\n")
        result = running.ctl("upgrade", "--control", control)
        assert result.returncode == 1, (result.stderr, running.text())
        assert result.stderr.startswith(
            "zocket: error: upgrade failed: the installed zocket does not start: SyntaxError"
        ), result.stderr
        assert result.stderr.rstrip().endswith("this zocket keeps running"), result.stderr
        assert running.proc.poll() is None
        assert http_get(port)[0] == 200
        running.proc.send_signal(signal.SIGHUP)  # still the whole zocket
        running.wait_line(r"generation 2 ready in")
        assert running.stop() == 128 + signal.SIGTERM
    finally:
        running.kill_all()


def test_signals_that_arrive_during_the_exec_wait_for_the_new_image(
    installed: Path, tmp_path: Path, short_dir: Path
) -> None:
    control = short_dir / "ctl.sock"
    running = start(installed, tmp_path, control)
    try:
        running.proc.send_signal(signal.SIGUSR2)
        running.wait_line(r"upgrading: exec ")
        # Its handlers are not installed yet in the new image: a SIGHUP then must wait,
        # not kill zocket with the default action.
        running.proc.send_signal(signal.SIGHUP)
        running.wait_line(r"upgraded in place")
        running.wait_line(r"SIGHUP: restarting")
        running.wait_line(r"generation 2 ready in")
        assert running.proc.poll() is None
        assert running.stop() == 128 + signal.SIGTERM
    finally:
        running.kill_all()


#: Binds the port itself once the gate file exists (only kernel adoption can answer it).
LATE_BINDER = r"""
import http.server, os, sys, time
gate, port = sys.argv[1], int(sys.argv[2])
while not os.path.exists(gate):
    time.sleep(0.01)
http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def test_a_bind_made_after_an_upgrade_is_adopted_by_the_new_image(
    installed: Path, tmp_path: Path, short_dir: Path
) -> None:
    import socket as socket_module

    probe = socket_module.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    gate = tmp_path / "gate"
    script = tmp_path / "late.py"
    script.write_text(LATE_BINDER)
    control = short_dir / "ctl.sock"
    running = Running(installed, tmp_path, [
        "--port", str(port), "--control", str(control), "--no-hook", "--",
        sys.executable, str(script), str(gate), str(port),
    ])
    try:
        running.wait_line(r"generation 1 started")
        result = running.ctl("upgrade", "--control", control)
        assert result.returncode == 0, (result.stderr, running.text())
        gate.touch()  # generation 1 binds now, with the new image answering
        running.wait_line(r"bind\(.*\) adopted the held socket")
        running.wait_line(r"generation 1 ready in")
        assert http_get(port)[0] == 200
        assert running.stop() in (0, 128 + signal.SIGTERM)
    finally:
        running.kill_all()


#: Put into the copy's holder.py: the check before an upgrade (only it) waits while the
#: gate file (GATE, replaced by its path) exists, 60 s at most.
SLOW_CHECK = """
def _slow_check():
    import os, time
    with open("/proc/self/cmdline", "rb") as f:
        if b"upgrade.FORMAT" in f.read():
            deadline = time.monotonic() + 60
            while os.path.exists(GATE) and time.monotonic() < deadline:
                time.sleep(0.05)
_slow_check()
"""


def test_zocket_goes_on_while_it_checks_the_new_install(
    installed: Path, tmp_path: Path, short_dir: Path
) -> None:
    """The check is a child interpreter importing the new install (seconds on a slow disk):
    a restart asked for meanwhile happens at once, not after the check. The check here
    waits for the test to open a gate."""
    control = short_dir / "ctl.sock"
    running = start(installed, tmp_path, control)

    def checking() -> bool:
        return any(
            "upgrade.FORMAT" in " ".join(read_cmdline(pid))
            for pid in children_of(running.proc.pid)
        )

    try:
        gate = tmp_path / "gate"
        gate.touch()
        holder = installed / "zocket" / "holder.py"
        holder.write_text(holder.read_text() + SLOW_CHECK.replace("GATE", repr(str(gate))))
        running.proc.send_signal(signal.SIGUSR2)
        wait_for(checking, 10, message="the check never started")
        running.proc.send_signal(signal.SIGHUP)
        running.wait_line(r"generation 2 ready in")
        # A second upgrade while the first is checked is refused, in words.
        running.proc.send_signal(signal.SIGUSR2)
        running.wait_line(
            r"upgrade failed: an upgrade is already under way; this zocket keeps running"
        )
        assert "upgrading: exec" not in running.text()  # the check is still running
        gate.unlink()
        running.wait_line(r"upgraded in place", timeout=40)
        text = running.text()
        assert text.index("generation 2 ready in") < text.index("upgrading: exec"), text
        assert running.stop() == 128 + signal.SIGTERM
        assert "Traceback" not in running.text(), running.text()
    finally:
        running.kill_all()


def test_a_check_that_does_not_answer_is_killed_and_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upgrade, "_CHECK", "import time; time.sleep(60)")
    check = upgrade.Preflight()
    with pytest.raises(upgrade.UpgradeError, match="does not start: no answer in 30 s"):
        check.finish()
    assert check.process.returncode == -signal.SIGKILL
    assert check.pidfd is None


def test_a_check_reaped_by_zockets_orphan_reaper_keeps_its_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a subreaper zocket collects any child with waitpid(-1): the check's exit status
    must come through it, not be read as success (subprocess's answer to ECHILD)."""
    monkeypatch.setattr(upgrade, "_CHECK", "import sys; sys.exit('a broken install')")
    check = upgrade.Preflight()
    _, status = libc.waitpid(check.pid)  # as the holder's reaper would
    check.exited(libc.WaitStatus(status))
    with pytest.raises(upgrade.UpgradeError, match="does not start: a broken install$"):
        check.finish()
