"""Operations: zocket under systemd, in a container, with files for tooling, and when things break.

What is looked at, end to end with the real ``zocket`` command:

* socket activation: zocket handed sockets the systemd way (LISTEN_FDS,
  LISTEN_PID, LISTEN_FDNAMES) holds those instead of binding; emulated by a
  tiny launcher (`LAUNCHER`) that binds, places the sockets on fd 3.., sets
  the variables with its own pid and execs zocket (exec keeps the pid);
* sd_notify towards zocket's own NOTIFY_SOCKET: READY=1, RELOADING=1, STOPPING=1;
* orphans: zocket is a child subreaper, and PID 1 of a pid namespace, and reaps them;
* ``--status-file`` (never a partial file, even under restarts; a full disk is
  logged once and changes nothing else) and ``--pid-file``;
* Unix sockets: ``--socket-mode``, ``--socket-owner``, stale and live socket
  files, a regular file in the way;
* bad input: one line, no traceback, exit 2;
* faults: a server that closes or clobbers fd 3, one that ignores SIGTERM,
  zocket with stdout or stderr closed.

The server is `support.FD_RESPONDER` (it answers with its pid and LISTEN_*
variables), sometimes wrapped by a small script. Every process is stopped by
the test that started it; every wait is bounded. Tests that need root (mount
and pid namespaces, chown) are skipped without it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support import (
    STOP_TIMEOUT,
    LoadClient,
    ZocketProcess,
    children_of,
    connect_refused,
    group_members,
    http_get,
    kill_groups,
    proc_stat,
    read_environ,
    run_zocket,
    socket_inode,
    start_zocket,
    started,
    tcp_listeners,
    wait_for,
    wait_ready,
    write_responder,
    zocket_argv,
    zocket_env,
    zombie_children,
)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (namespaces, mount, chown)")

#: ``generation N started (pid P)``, the start line included.

#: Emulates a systemd .socket unit: binds an inet socket and a unix socket at argv[1],
#: places them on fd 3 and 4, describes them with LISTEN_* (LISTEN_PID is its own
#: pid, which exec keeps) and execs argv[2:], zocket.
LAUNCHER = r"""
import fcntl, os, socket, sys

unix_path, argv = sys.argv[1], sys.argv[2:]
inet = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
inet.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
inet.bind(("127.0.0.1", 0))
inet.listen(64)
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix.bind(unix_path)
unix.listen(64)
# Out of the way first: either socket may itself sit on fd 3 or 4.
high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 20) for s in (inet, unix)]
for target, fd in enumerate(high, start=3):
    os.dup2(fd, target)
    os.set_inheritable(target, True)
    os.close(fd)
os.environ["LISTEN_FDS"] = "2"
os.environ["LISTEN_FDNAMES"] = "web:admin"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execvp(argv[0], argv)
"""

#: Starts an orphan (``sleep``, through a shell that exits at once), writes the
#: orphan's pid to argv[1], then serves like FD_RESPONDER (its path in argv[2]).
ORPHANING_SERVER = r"""
import subprocess, sys

pid_file, responder, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run(
    ["sh", "-c", 'sleep "$1" & echo $! > "$0.tmp" && mv "$0.tmp" "$0"', pid_file, seconds],
    check=True,
)
sys.argv = [responder]
exec(compile(open(responder).read(), responder, "exec"))
"""

#: Generation 1 breaks its fd 3 (closes it, or puts /dev/null there), says so in
#: argv[2], lingers a second and exits 1; later generations serve (FD_RESPONDER).
FD_BREAKER = r"""
import os, sys, time

how, mark, responder = sys.argv[1], sys.argv[2], sys.argv[3]
if os.environ.get("ZOCKET_GENERATION") == "1":
    if how == "close":
        os.close(3)
    else:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 3)
        os.close(null)
    with open(mark, "w") as f:
        f.write(how)
    time.sleep(1.0)
    sys.exit(1)
sys.argv = [responder]
exec(compile(open(responder).read(), responder, "exec"))
"""

#: FD_RESPONDER that ignores SIGTERM (only SIGKILL stops it).
DEAF_SERVER = r"""
import signal, sys

signal.signal(signal.SIGTERM, signal.SIG_IGN)
responder = sys.argv[1]
sys.argv = [responder]
exec(compile(open(responder).read(), responder, "exec"))
"""


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
def responder(tmp_path: Path) -> list[str]:
    """The command that runs FD_RESPONDER on fd 3."""
    return [sys.executable, str(write_responder(tmp_path))]


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def short_dir() -> Path:
    """A fresh directory with a short path, for Unix socket files (108 bytes at most)."""
    return Path(tempfile.mkdtemp(prefix="zo-", dir="/tmp"))


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    directory = short_dir()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class ContainerZocket(ZocketProcess):
    """zocket as PID 1 of a pid namespace: the pids it logs are the namespace's, not ours.

    On the way out only the host pids put in ``host_groups`` are ever signalled
    (a namespace pid taken for a host process group could hit anything).
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.host_groups: list[int] = []

    def generation_pids(self) -> list[int]:
        return list(self.host_groups)


def launch(
    prefix: Sequence[str],
    args: Sequence[object],
    *,
    env: dict[str, str] | None = None,
    cls: type[ZocketProcess] = ZocketProcess,
    **popen_kw: object,
) -> ZocketProcess:
    """``PREFIX... zocket ARGS`` (a launcher that execs zocket), waited for like start_zocket."""
    words = [str(a) for a in args]
    popen_kw.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(  # type: ignore[call-overload]
        [*prefix, *zocket_argv(words)],
        env=zocket_env(env),
        stderr=subprocess.PIPE,
        bufsize=0,
        **popen_kw,
    )
    zocket = cls(words, proc, STOP_TIMEOUT)
    try:
        zocket._await_start(20.0)
    except BaseException:
        zocket.close()
        raise
    return zocket




@contextmanager
def cleanup(zocket: ZocketProcess) -> Iterator[ZocketProcess]:
    """Close zocket, then kill what is left of every generation it logged."""
    try:
        with zocket:
            yield zocket
    finally:
        kill_groups([pid for _, pid in started(zocket)])


def wait_switched(zocket: ZocketProcess, number: int, timeout: float = 30.0) -> None:
    """Generation ``number`` ready and the one before it gone.

    Until the old generation has exited it still accepts too, and FD_RESPONDER
    dies at once on SIGTERM, taking a request it had just accepted with it.
    """
    wait_ready(zocket, number, timeout)
    zocket.wait_for_stderr(rf"zocket: generation {number - 1} stopped", timeout)


def get_json(port: int) -> dict[str, Any]:
    status, _, body = http_get(port, "/ops")
    assert status == 200
    return json.loads(body)  # type: ignore[no-any-return]


def unix_get(path: str | Path, timeout: float = 10.0) -> dict[str, Any]:
    """GET / over a Unix stream socket; FD_RESPONDER's JSON."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(b"GET /unix HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), data[:200]
    return json.loads(body)  # type: ignore[no-any-return]




def gone_or_reaped(pid: int) -> bool:
    """The process no longer exists, not even as a zombie."""
    return proc_stat(pid) is None


def read_pid_file(path: Path, timeout: float = 20.0) -> int:
    def content() -> str | None:
        return path.read_text().strip() if path.exists() else None

    return int(wait_for(content, timeout, message=f"{path} to be written"))


def read_status(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def generations_by_state(status: dict[str, Any], state: str) -> list[dict[str, Any]]:
    return [g for g in status["generations"] if g["state"] == state]


def status_when(
    path: Path,
    predicate: Callable[[dict[str, Any]], object],
    timeout: float = 20.0,
    message: str = "",
) -> dict[str, Any]:
    """The status file's JSON once ``predicate`` holds for it."""

    def check() -> dict[str, Any] | None:
        try:
            status = read_status(path)
        except FileNotFoundError:
            return None
        return status if predicate(status) else None

    return wait_for(check, timeout, message=message or f"status file {path}")


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zocket: error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


# --- socket activation ----------------------------------------------------------------------


def test_socket_activation_holds_the_handed_sockets(
    tmp_path: Path, sock_dir: Path, responder: list[str]
) -> None:
    launcher = script(tmp_path, "launcher.py", LAUNCHER)
    admin = sock_dir / "admin.sock"
    status_path = tmp_path / "status.json"
    zocket = launch(
        [sys.executable, launcher, str(admin)],
        ["--status-file", status_path, "--", *responder],
    )
    with cleanup(zocket):
        assert [(h.name, h.fd) for h in zocket.held] == [("web", 3), ("admin", 4)], zocket.urls
        assert zocket.held[1].url == f"unix:{admin}"
        sockets = status_when(status_path, lambda s: True)["sockets"]
        assert [(s["name"], s["fd"], s["url"]) for s in sockets] == [
            ("web", 3, f"http://127.0.0.1:{zocket.port}"),
            ("admin", 4, f"unix:{admin}"),
        ], sockets
        # Its own sockets, not new ones: one listener on the port, the one zocket holds.
        on_port = [inode for inode, (_, port) in tcp_listeners().items() if port == zocket.port]
        assert on_port == [socket_inode(zocket.pid, 3)], (on_port, zocket.stderr_text(0))
        wait_ready(zocket, 1)
        body = get_json(zocket.port)
        child = zocket.child_pid
        assert body["pid"] == child
        assert body["sockname"] == ["127.0.0.1", zocket.port]
        assert body["listen_fds"] == "2"
        assert body["listen_fdnames"] == "web:admin"
        # The child's own pid, not the launcher's (= zocket's) LISTEN_PID.
        assert body["listen_pid"] == str(child) != str(zocket.pid)
        assert read_environ(child)["LISTEN_PID"] == str(child)
        assert socket_inode(child, 3) == socket_inode(zocket.pid, 3)
        assert socket_inode(child, 4) == socket_inode(zocket.pid, 4) is not None
        # The unix socket is listening (queued: FD_RESPONDER only serves fd 3).
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            probe.connect(str(admin))
        zocket.send_signal(signal.SIGHUP)
        wait_switched(zocket, 2)
        second = get_json(zocket.port)
        assert second["pid"] != child and second["listen_pid"] == str(second["pid"])
        assert second["listen_fdnames"] == "web:admin"
        assert zocket.stop() == 128 + signal.SIGTERM
    # systemd's socket file, not zocket's: left where it is.
    assert stat.S_ISSOCK(os.lstat(admin).st_mode)


@pytest.mark.parametrize(
    "extra",
    [["--port", "1234"], ["1234"], ["--listen", "127.0.0.1:0"], ["--host", "127.0.0.1"]],
    ids=["--port", "positional-port", "--listen", "--host"],
)
def test_socket_activation_with_an_address_is_a_usage_error(
    extra: list[str], tmp_path: Path, sock_dir: Path
) -> None:
    launcher = script(tmp_path, "launcher.py", LAUNCHER)
    args = [*extra, "--", "true"]
    result = subprocess.run(
        [sys.executable, launcher, str(sock_dir / "a.sock"), *zocket_argv(args)],
        env=zocket_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "LISTEN_FDS" in line, line


# --- sd_notify ------------------------------------------------------------------------------


def test_sd_notify_to_zocket_own_notify_socket(responder: list[str]) -> None:
    name = f"zocket-test-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(20)

        def receive() -> dict[str, str]:
            data = sock.recv(4096).decode()
            return dict(line.partition("=")[::2] for line in data.splitlines())

        env = {**os.environ, "NOTIFY_SOCKET": "@" + name}
        with cleanup(start_zocket(["--port", "0", "--", *responder], env=env)) as zocket:
            first = receive()
            assert first == {"READY": "1", "STATUS": "generation 1 serving"}, first
            # READY=1 comes once generation 1 is ready, not at start.
            assert zocket.wait_for_stderr(r"generation 1 ready in", 5)
            child_socket = read_environ(zocket.child_pid)["NOTIFY_SOCKET"]
            assert child_socket != "@" + name and child_socket.startswith("@zocket/")

            before = time.monotonic_ns() // 1000
            zocket.send_signal(signal.SIGHUP)
            reloading = receive()
            after = time.monotonic_ns() // 1000
            assert set(reloading) == {"RELOADING", "MONOTONIC_USEC"}, reloading
            assert reloading["RELOADING"] == "1"
            assert before <= int(reloading["MONOTONIC_USEC"]) <= after
            again = receive()
            assert again == {"READY": "1", "STATUS": "generation 2 serving"}, again
            wait_switched(zocket, 2)
            assert get_json(zocket.port)["pid"] != zocket.child_pid

            zocket.send_signal(signal.SIGTERM)
            assert receive() == {"STOPPING": "1"}
            assert zocket.wait(STOP_TIMEOUT) == 128 + signal.SIGTERM
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(4096)  # nothing after STOPPING=1


#: Generation 1 serves (FD_RESPONDER, its path in argv[1]); every later one fails at once.
ONLY_FIRST_SERVES = r"""
import os, sys

if os.environ.get("ZOCKET_GENERATION") != "1":
    sys.exit(1)
responder = sys.argv[1]
sys.argv = [responder]
exec(compile(open(responder).read(), responder, "exec"))
"""


def test_sd_notify_failed_restart_still_completes_the_reload(
    tmp_path: Path, responder: list[str]
) -> None:
    """sd_notify(3): after RELOADING=1 the service must send READY=1 once the reload is over.

    A restart whose new generation fails leaves the old one serving: the reload is
    over (it failed), so systemd (Type=notify-reload) must be told READY=1 again,
    or ``systemctl reload`` waits until its timeout.
    """
    server = script(tmp_path, "only_first.py", ONLY_FIRST_SERVES)
    name = f"zocket-test-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(20)
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name}
        args = ["--port", "0", "--", sys.executable, server, responder[1]]
        with cleanup(start_zocket(args, env=env)) as zocket:
            assert sock.recv(4096).startswith(b"READY=1")
            zocket.send_signal(signal.SIGHUP)
            assert sock.recv(4096).startswith(b"RELOADING=1\n")
            zocket.wait_for_stderr(r"generation 2 failed before ready: exit 1", 20)
            assert get_json(zocket.port)["pid"] == zocket.child_pid  # generation 1 serves on
            sock.settimeout(5)
            try:
                after = sock.recv(4096)
            except TimeoutError:
                pytest.fail("no READY=1 after the failed restart: the reload never completes")
            assert after.startswith(b"READY=1"), after
            assert zocket.stop() == 128 + signal.SIGTERM


# --- orphans ------------------------------------------------------------------------------


def test_orphans_are_reparented_to_zocket_and_reaped(
    tmp_path: Path, responder: list[str]
) -> None:
    server = script(tmp_path, "orphaning.py", ORPHANING_SERVER)
    pid_file = tmp_path / "orphan.pid"
    args = ["--port", "0", "--", sys.executable, server, pid_file, responder[1], "3"]
    with cleanup(start_zocket(args)) as zocket:
        orphan = read_pid_file(pid_file)
        # The shell that started it has exited: the orphan is zocket's now.
        wait_for(
            lambda: (st := proc_stat(orphan)) is not None and st[1] == zocket.pid,
            5,
            message=f"orphan {orphan} reparented to zocket {zocket.pid}: {proc_stat(orphan)}",
        )
        assert proc_stat(orphan)[0] != "Z"  # type: ignore[index]
        # sleep 3 ends; zocket reaps it (no zombie left behind).
        wait_for(lambda: gone_or_reaped(orphan), 20,
                 message=f"orphan {orphan} reaped: {proc_stat(orphan)}")
        assert zombie_children(zocket.pid) == []
        assert get_json(zocket.port)["pid"] == zocket.child_pid  # generation 1 serves on
        assert zocket.stop() == 128 + signal.SIGTERM


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def in_namespace(ns: str) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and pid_namespace(int(e)) == ns]


def ns_pid(pid: int) -> int | None:
    """The innermost pid of host process ``pid`` (NSpid's last field)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except OSError:
        return None
    return None


@needs_root
def test_zocket_as_pid_1_of_a_container(tmp_path: Path, responder: list[str]) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    server = script(tmp_path, "orphaning.py", ORPHANING_SERVER)
    pid_file = tmp_path / "orphan.pid"
    args = ["--port", "0", "--", sys.executable, server, pid_file, responder[1], "3"]
    # --kill-child: should this test fail, killing unshare kills the whole namespace.
    zocket = launch(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"], args, cls=ContainerZocket
    )
    assert isinstance(zocket, ContainerZocket)
    inner_child = zocket.child_pid
    zocket.child_pid = -1  # a pid in the namespace: meaningless out here
    host_zocket = -1
    try:
        host_zocket = wait_for(lambda: children_of(zocket.pid)[:1], 10)[0]
        assert ns_pid(host_zocket) == 1
        ns = pid_namespace(host_zocket)
        assert ns is not None and ns != pid_namespace(os.getpid())
        host_child = wait_for(
            lambda: [c for c in children_of(host_zocket) if ns_pid(c) == inner_child][:1], 10
        )[0]
        zocket.host_groups.append(host_child)  # for close(), should anything be left
        wait_ready(zocket, 1)
        assert get_json(zocket.port)["pid"] == inner_child

        # The orphan (its pid in the file is the namespace's) belongs to PID 1 now.
        inner_orphan = read_pid_file(pid_file)
        orphan = wait_for(
            lambda: [p for p in in_namespace(ns) if ns_pid(p) == inner_orphan][:1], 10
        )[0]
        wait_for(lambda: (st := proc_stat(orphan)) is not None and st[1] == host_zocket, 5,
                 message=f"orphan {orphan} reparented to PID 1 ({host_zocket})")
        wait_for(lambda: gone_or_reaped(orphan), 20, message=f"orphan {orphan} reaped")
        assert zombie_children(host_zocket) == []

        # SIGTERM to PID 1 from outside: forwarded, then the whole namespace ends.
        os.kill(host_zocket, signal.SIGTERM)
        assert zocket.wait(STOP_TIMEOUT) == 128 + signal.SIGTERM, zocket.stderr_text()
        wait_for(lambda: not in_namespace(ns), 10, message=f"namespace {ns} to be empty")
        assert connect_refused(zocket.port)
        assert zocket.wait_for_stderr(r"generation 1 stopped \(SIGTERM\)", 5)
    finally:
        if zocket.proc.poll() is None:
            zocket.proc.kill()  # --kill-child takes the namespace with it
            zocket.proc.wait(10)
        zocket.close()


# --- status and pid files -----------------------------------------------------------------


def test_status_file_and_pid_file(tmp_path: Path, responder: list[str]) -> None:
    status_path = tmp_path / "run" / "status.json"
    status_path.parent.mkdir()
    pid_path = tmp_path / "run" / "zocket.pid"
    args = ["--port", "0", "--status-file", status_path, "--pid-file", pid_path, "--", *responder]
    with cleanup(start_zocket(args)) as zocket:
        assert pid_path.read_text() == f"{zocket.pid}\n"
        wait_ready(zocket, 1)
        first = status_when(status_path, lambda s: generations_by_state(s, "serving"))
        assert first["pid"] == zocket.pid
        assert first["sockets"] == [
            {"name": "http", "fd": 3, "address": f"127.0.0.1:{zocket.port}",
             "url": f"http://127.0.0.1:{zocket.port}"}
        ], first["sockets"]
        (gen1,) = first["generations"]
        assert gen1["number"] == 1 and gen1["state"] == "serving"
        assert gen1["pid"] == zocket.child_pid == get_json(zocket.port)["pid"]
        assert gen1["started"] <= gen1["ready"] <= time.time()
        assert gen1["exit_status"] is None
        assert (first["restarts"], first["generations_started"], first["stopping"]) == (0, 1, False)

        zocket.send_signal(signal.SIGHUP)
        wait_ready(zocket, 2)
        second = status_when(
            status_path,
            lambda s: [g["number"] for g in generations_by_state(s, "serving")] == [2]
            and len(s["generations"]) == 1,
            message="generation 2 alone, serving",
        )
        (gen2,) = second["generations"]
        assert second["restarts"] == 1 and second["generations_started"] == 2
        assert gen2["pid"] == get_json(zocket.port)["pid"] != zocket.child_pid
        assert gen2["ready"] >= gen2["started"] >= gen1["ready"]

        # Read it over and over while restarts happen: always a whole JSON document.
        states: set[str] = set()
        for i in range(200):
            if i % 10 == 0:
                zocket.send_signal(signal.SIGHUP)
            text = status_path.read_text()
            try:
                snapshot = json.loads(text)
            except ValueError:
                pytest.fail(f"read {i}: not JSON ({len(text)} bytes):\n{text}")
            states.update(g["state"] for g in snapshot["generations"])
            time.sleep(0.005)
        assert "starting" in states or "stopping" in states, states
        settled = status_when(
            status_path,
            lambda s: [g["state"] for g in s["generations"]] == ["serving"],
            timeout=30,
            message="one generation, serving",
        )
        wait_for(
            lambda: len([ln for ln in zocket.stderr_lines() if ln.endswith(": restarting")])
            == settled["restarts"]
            and len(started(zocket)) == settled["generations_started"],
            5,
            message=f"{settled} to count the restarts logged:\n{zocket.stderr_text(0)}",
        )
        assert settled["generations"][0]["pid"] == get_json(zocket.port)["pid"]
        # zocket's own leftovers: no temporary files next to the status file.
        assert sorted(p.name for p in status_path.parent.iterdir()) == [
            "status.json", "zocket.pid"
        ]
        assert zocket.stop() == 128 + signal.SIGTERM
    assert not status_path.exists()
    assert not pid_path.exists()
    assert list(status_path.parent.iterdir()) == []


FILL_AND_EXEC = r"""
dir=$1; shift
mount -t tmpfs -o size=4k zocket-test "$dir" || exit 99
head -c 65536 /dev/zero > "$dir/fill" 2>/dev/null
exec "$@"
"""


@pytest.mark.parametrize("how", ["ENOSPC", "EFBIG"])
def test_status_file_that_cannot_be_written(
    how: str, tmp_path: Path, responder: list[str]
) -> None:
    """A full disk (a 4 KiB tmpfs, filled) or a file size limit: logged once, nothing else."""
    full = tmp_path / "full"
    full.mkdir()
    status_path = full / "status.json"
    if how == "ENOSPC":
        if not IS_ROOT or shutil.which("unshare") is None:
            pytest.skip("needs root and unshare for a private tmpfs")
        probe = subprocess.run(
            ["unshare", "--mount", "sh", "-c", FILL_AND_EXEC, "sh", str(full), "true"],
            capture_output=True, timeout=20, check=False,
        )
        if probe.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs in a mount namespace: {probe.stderr!r}")
        prefix = ["unshare", "--mount", "sh", "-c", FILL_AND_EXEC, "sh", str(full)]
        reason = os.strerror(errno.ENOSPC)
    else:
        if shutil.which("prlimit") is None:
            pytest.skip("prlimit (util-linux) is not installed")
        # 100 bytes: the status file does not fit (Python ignores SIGXFSZ: EFBIG it is).
        prefix = ["prlimit", "--fsize=100:100"]
        reason = os.strerror(errno.EFBIG)
    args = ["--port", "0", "--status-file", status_path, "--", *responder]
    with cleanup(launch(prefix, args)) as zocket:
        wait_ready(zocket, 1)
        assert get_json(zocket.port)["pid"] == zocket.child_pid
        for number in (2, 3):
            zocket.send_signal(signal.SIGHUP)
            wait_ready(zocket, number)
            zocket.wait_for_stderr(rf"generation {number - 1} stopped", 20)
            assert get_json(zocket.port)["pid"] == started(zocket)[-1][1]
        if how == "ENOSPC":
            # In zocket's mount namespace: the fill is there, no status file, no temp file.
            inside = Path(f"/proc/{zocket.pid}/root") / str(full).lstrip("/")
            wait_for(lambda: sorted(p.name for p in inside.iterdir()) == ["fill"], 5,
                     message=f"only the fill in {inside}: {list(inside.iterdir())}")
        assert zocket.stop() == 128 + signal.SIGTERM
    errors = [line for line in zocket.stderr_lines() if "cannot write status file" in line]
    assert errors == [f"zocket: cannot write status file {status_path}: {reason}"], (
        zocket.stderr_text()
    )
    assert "Traceback" not in zocket.stderr_text()
    assert not any(p.name.endswith(".tmp") for p in full.iterdir())


def test_unwritable_pid_file_is_one_line_error(tmp_path: Path) -> None:
    pid_path = tmp_path / "no-such-dir" / "zocket.pid"
    result = run_zocket(["--port", "0", "--pid-file", pid_path, "--no-respawn", "--", "true"])
    assert result.returncode not in (0, None), result.stderr
    line = one_error_line(result)
    assert str(pid_path) in line, line


# --- unix sockets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "owner", "ids"),
    [("600", "65534:65534", (65534, 65534)), ("660", "65534", (65534, 0)), ("660", None, None)],
)
def test_socket_mode_and_owner(
    mode: str, owner: str | None, ids: tuple[int, int] | None, sock_dir: Path,
    responder: list[str],
) -> None:
    if owner is not None and not IS_ROOT:
        pytest.skip("chown needs root")
    path = sock_dir / "s.sock"
    chown = ["--socket-owner", owner] if owner else []
    args = ["--listen", f"unix:{path}", "--socket-mode", mode, *chown, "--", *responder]
    with cleanup(start_zocket(args)) as zocket:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == int(mode, 8), oct(st.st_mode)
        if ids is not None:
            assert (st.st_uid, st.st_gid) == ids  # no group given: the group stays root's
        wait_ready(zocket, 1)
        assert unix_get(path)["sockname"] == str(path)
        assert zocket.stop() == 128 + signal.SIGTERM
    assert not path.exists()  # zocket's own socket file: removed on the way out


def test_stale_socket_file_is_replaced(sock_dir: Path, responder: list[str]) -> None:
    path = sock_dir / "s.sock"
    args = ["--listen", f"unix:{path}", "--", *responder]
    with cleanup(start_zocket(args)) as first:
        wait_ready(first, 1)
        assert unix_get(path)["pid"] == first.child_pid
        first.proc.kill()
        first.proc.wait(10)
        # PR_SET_PDEATHSIG: the server follows; then nobody listens on the file.
        wait_for(lambda: not group_members(first.child_pid), 10, message="server gone")
    old = os.lstat(path)
    assert stat.S_ISSOCK(old.st_mode)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, pytest.raises(
        ConnectionRefusedError
    ):
        probe.connect(str(path))
    with cleanup(start_zocket(args)) as second:
        wait_ready(second, 1)
        assert unix_get(path)["pid"] == second.child_pid
        # (Not compared by inode: the file system may give the new file the old number.)
        assert second.stop() == 128 + signal.SIGTERM
    assert not path.exists()


def test_regular_file_in_the_way_is_never_touched(sock_dir: Path) -> None:
    path = sock_dir / "s.sock"
    path.write_text("precious\n")
    before = os.lstat(path)
    result = run_zocket(["--listen", f"unix:{path}", "--no-respawn", "--", "true"], timeout=30)
    assert result.returncode == 3, result.stderr
    line = one_error_line(result)
    assert str(path) in line and "not a socket" in line, line
    after = os.lstat(path)
    assert path.read_text() == "precious\n"
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (
        before.st_ino, before.st_mtime_ns, before.st_mode
    )


def test_live_socket_file_is_address_in_use(sock_dir: Path, responder: list[str]) -> None:
    path = sock_dir / "s.sock"
    args = ["--listen", f"unix:{path}", "--", *responder]
    with cleanup(start_zocket(args)) as first:
        wait_ready(first, 1)
        inode = os.lstat(path).st_ino
        result = run_zocket(["--listen", f"unix:{path}", "--no-respawn", "--", "true"])
        assert result.returncode == 3, result.stderr
        line = one_error_line(result)
        assert "address already in use" in line and str(path) in line, line
        assert first.returncode is None
        assert os.lstat(path).st_ino == inode
        assert unix_get(path)["pid"] == first.child_pid
        assert first.stop() == 128 + signal.SIGTERM


def test_live_socket_with_a_full_backlog_is_address_in_use_not_a_hang(sock_dir: Path) -> None:
    """A live listener that accepts nothing (a wedged server) and whose backlog is full.

    Telling it from a stale file must not block: a blocking connect() to a Unix
    socket with a full backlog waits until a slot frees, here forever.
    """
    path = sock_dir / "s.sock"
    args = ["--listen", f"unix:{path}", "--backlog", "1", "--ready", "none", "--", "sleep", "1000"]
    with cleanup(start_zocket(args)) as first:
        first.wait_for_stderr(r"generation 1 ready in", 20)
        queued = []
        try:
            for _ in range(64):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.setblocking(False)
                queued.append(client)
                try:
                    client.connect(str(path))
                except BlockingIOError:
                    break  # the backlog is full
            else:
                pytest.fail("the backlog of 1 never filled up")
            try:
                result = run_zocket(
                    ["--listen", f"unix:{path}", "--no-respawn", "--", "true"], timeout=15
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"a second zocket on the live {path} hung instead of exiting 3")
        finally:
            for client in queued:
                client.close()
        assert result.returncode == 3, result.stderr
        assert "address already in use" in one_error_line(result)
        assert first.returncode is None
        assert first.stop() == 128 + signal.SIGTERM


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--port", "0", "--port", "0"], "given twice"),
        (["-p", "0", "--port", "1"], "given twice"),
        (["--stop-timeout", "1", "--stop-timeout", "2", "--port", "0"], "given twice"),
        (["--status-file", "/tmp/a", "--status-file", "/tmp/b", "--port", "0"], "given twice"),
        (["--ready", "none", "--ready", "auto", "--port", "0"], "given twice"),
        (["--host", "127.0.0.1", "--host", "::1", "--port", "0"], "given twice"),
        (["--backlog", "8", "--backlog", "9", "--port", "0"], "given twice"),
        (["--debounce", "1", "--debounce", "2", "--port", "0"], "given twice"),
        (["--ready-timeout", "1", "--ready-timeout", "2", "--port", "0"], "given twice"),
        (["--stop-signal", "INT", "--stop-signal", "TERM", "--port", "0"], "given twice"),
        (["--pid-file", "/tmp/a", "--pid-file", "/tmp/b", "--port", "0"], "given twice"),
        (["--socket-mode", "600", "--socket-mode", "660", "--port", "0"], "given twice"),
        (["--socket-owner", "0", "--socket-owner", "0", "--port", "0"], "given twice"),
        (["--stop-signal", "BOGUS", "--port", "0"], "BOGUS"),
        (["--ready", "bogus", "--port", "0"], "bogus"),
        (["--ready-timeout", "-1", "--port", "0"], "-1"),
        (["--socket-mode", "999", "--port", "0"], "999"),
        (["--socket-owner", "nosuchuser", "--port", "0"], "nosuchuser"),
        (["--socket-owner", "0:nosuchgroup", "--port", "0"], "nosuchgroup"),
        (["--watch", "/nonexistent/zocket-test", "--port", "0"], "/nonexistent/zocket-test"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_input_is_one_line_and_exit_2(options: list[str], expected: str) -> None:
    # --no-respawn: were the option wrongly accepted, `true` would end zocket at once.
    result = run_zocket([*options, "--no-respawn", "--", "true"], timeout=30)
    assert result.returncode == 2, (result.returncode, result.stderr)
    line = one_error_line(result)
    assert expected in line, line


def test_port_given_twice_positional_and_option() -> None:
    result = run_zocket(["--no-respawn", "--port", "0", "0", "true"], timeout=30)
    assert result.returncode == 2, result.stderr
    assert "given twice" in one_error_line(result)


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "devnull"])
def test_server_that_breaks_its_fd_3_does_not_close_the_socket(
    how: str, tmp_path: Path, responder: list[str]
) -> None:
    breaker = script(tmp_path, "breaker.py", FD_BREAKER)
    mark = tmp_path / "broken"
    args = ["--port", "0", "--", sys.executable, breaker, how, mark, responder[1]]
    with cleanup(start_zocket(args)) as zocket:
        wait_for(mark.exists, 20, message="generation 1 to break its fd 3")
        # Generation 1 is alive without the socket, or gone: the port still listens.
        assert zocket.port in {port for _, port in tcp_listeners().values()}
        waiting = socket.create_connection(("127.0.0.1", zocket.port), timeout=5)
        with waiting, LoadClient(zocket.port, rate=20, threads=2, duration=30, timeout=20) as load:
            waiting.sendall(b"GET /queued HTTP/1.0\r\n\r\n")
            waiting.settimeout(30)
            # Answered by generation 2, from the backlog zocket kept open.
            data = b""
            while chunk := waiting.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.0 200"), data[:200]
            body = json.loads(data.partition(b"\r\n\r\n")[2])
            gen2 = dict(started(zocket)).get(2)
            assert body["pid"] == gen2 and body["path"] == "/queued", (body, started(zocket))
            load.wait_for(lambda o: o.ok, 20)
        assert zocket.wait_for_stderr(r"generation 1 failed before ready: exit 1", 1)
        counts = load.counts()
        assert counts["refused"] == 0, load.summary()
        assert sum(counts.values()) == counts["ok"], load.summary()
        assert zocket.stop() == 128 + signal.SIGTERM


def test_server_that_ignores_sigterm_is_killed_after_stop_timeout(
    tmp_path: Path, responder: list[str]
) -> None:
    deaf = script(tmp_path, "deaf.py", DEAF_SERVER)
    args = ["--port", "0", "--stop-timeout", "1", "--", sys.executable, deaf, responder[1]]
    with cleanup(start_zocket(args)) as zocket:
        wait_ready(zocket, 1)
        zocket.send_signal(signal.SIGHUP)
        wait_ready(zocket, 2)
        zocket.wait_for_stderr(r"generation 1 did not stop within 1 s: sending SIGKILL", 15)
        line = zocket.wait_for_stderr(r"generation 1 stopped \(SIGKILL\) after \d+ ms", 15)
        took = int(re.search(r"after (\d+) ms", line)[1])  # type: ignore[index]
        assert 950 <= took < 10_000, line
        assert not group_members(zocket.child_pid)
        gen2 = started(zocket)[-1][1]
        assert get_json(zocket.port)["pid"] == gen2
        # SIGTERM to zocket: forwarded, ignored, SIGKILL after 1 s; zocket exits with it.
        begun = time.monotonic()
        assert zocket.stop(timeout=15) == 128 + signal.SIGKILL, zocket.stderr_text()
        assert time.monotonic() - begun >= 0.9
        assert zocket.wait_for_stderr(r"generation 2 did not stop within 1 s", 5)
        wait_for(lambda: not group_members(gen2), 5, message="generation 2 gone")


@pytest.mark.parametrize("stdout", ["closed", "pipe"])
def test_stdout_closed_or_never_written(stdout: str, responder: list[str]) -> None:
    args = ["--port", "0", "--", *responder]
    if stdout == "closed":
        zocket = launch(["sh", "-c", 'exec "$@" >&-', "sh"], args)
    else:
        zocket = start_zocket(args, stdout=subprocess.PIPE)
    with cleanup(zocket):
        wait_ready(zocket, 1)
        assert get_json(zocket.port)["pid"] == zocket.child_pid
        zocket.send_signal(signal.SIGHUP)
        wait_switched(zocket, 2)
        assert get_json(zocket.port)["pid"] == started(zocket)[-1][1]
        assert zocket.stop() == 128 + signal.SIGTERM
        if stdout == "pipe":
            assert zocket.proc.stdout is not None
            assert zocket.proc.stdout.read() == b""


def test_stdout_and_stderr_closed(tmp_path: Path, responder: list[str]) -> None:
    """No stderr to log to: zocket serves and restarts all the same (seen via --status-file)."""
    status_path = tmp_path / "status.json"
    args = ["--port", "0", "--status-file", status_path, "--", *responder]
    proc = subprocess.Popen(
        ["sh", "-c", 'exec "$@" >&- 2>&-', "sh", *zocket_argv(args)],
        env=zocket_env(),
        stdin=subprocess.DEVNULL,
    )
    pids: set[int] = set()

    def serving(status: dict[str, Any]) -> list[dict[str, Any]]:
        found = generations_by_state(status, "serving")
        pids.update(g["pid"] for g in status["generations"])
        return found

    def status_or_exit(
        predicate: Callable[[dict[str, Any]], object], message: str
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise AssertionError(f"zocket exited with {proc.returncode} ({message})")
            try:
                status = read_status(status_path)
            except (FileNotFoundError, ValueError):
                return None
            return status if predicate(status) else None

        return wait_for(check, 30, message=message)

    try:
        first = status_or_exit(serving, "generation 1 serving")
        port = int(first["sockets"][0]["url"].rsplit(":", 1)[1])
        assert get_json(port)["pid"] == serving(first)[0]["pid"]
        proc.send_signal(signal.SIGHUP)
        second = status_or_exit(
            lambda s: [g["number"] for g in serving(s)] == [2] and len(s["generations"]) == 1,
            "generation 2 serving alone",
        )
        assert get_json(port)["pid"] == serving(second)[0]["pid"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT) == 128 + signal.SIGTERM
        assert not status_path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        kill_groups(sorted(pids))
