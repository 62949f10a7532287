"""The ``zocket`` command line, end to end: real processes, real sockets, real signals.

Each test runs ``python -m zocket`` (see support.py) with a small Python child
written into tmp_path. Children report what they see by writing a JSON file
atomically (write, then rename), so a test waits for that file instead of
sleeping. Sockets are on loopback, ports picked by the kernel (port 0).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import (
    ZocketStartError,
    group_members,
    http_get,
    open_fds,
    proc_stat,
    read_cmdline,
    run_zocket,
    socket_inode,
    socket_inodes,
    start_zocket,
    tcp_listeners,
    wait_for,
    write_responder,
    zocket_argv,
    zocket_env,
)
from zocket.addresses import InetAddress
from zocket.cli import UsageError, parse_args

PY = sys.executable

#: A child that reports what it sees into argv[1] (JSON, written atomically), then
#: behaves as argv[2] says:
#:   wait         sleep until signalled (default dispositions)
#:   codes        exit 10 / 11 / 12 on SIGINT / SIGTERM / SIGQUIT
#:   ignore-term  ignore SIGTERM
#:   grandchild   start a grandchild (mode "grand") first, exit 11 on SIGTERM
#:   grand        on SIGTERM, write argv[1] + ".term" and exit
#:   slow-grandchild, slow-grand   the same, the grandchild taking 0.5 s before it writes
#: Whatever the mode, it gives up after 60 s so that nothing can hang forever.
CHILD = r"""
import json, os, signal, socket, subprocess, sys, time

report_path, mode = sys.argv[1], sys.argv[2]


def write_atomically(path, data):
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


def families():
    found = {}
    for fd in range(3, 3 + int(os.environ.get("LISTEN_FDS", "0"))):
        try:
            with socket.socket(fileno=os.dup(fd)) as s:
                found[str(fd)] = int(s.family)
        except OSError as exc:
            found[str(fd)] = repr(exc)
    return found


def exit_with(code):
    return lambda signum, frame: os._exit(code)


extra = {}
if mode == "codes":
    signal.signal(signal.SIGINT, exit_with(10))
    signal.signal(signal.SIGTERM, exit_with(11))
    signal.signal(signal.SIGQUIT, exit_with(12))
elif mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif mode in ("grandchild", "slow-grandchild"):
    signal.signal(signal.SIGTERM, exit_with(11))
    grand_report = report_path + ".grand"
    grand_mode = "grand" if mode == "grandchild" else "slow-grand"
    grand = subprocess.Popen([sys.executable, __file__, grand_report, grand_mode])
    deadline = time.monotonic() + 20
    while not os.path.exists(grand_report) and time.monotonic() < deadline:
        time.sleep(0.02)
    extra["grandchild"] = grand.pid
elif mode in ("grand", "slow-grand"):
    def on_term(signum, frame):
        if mode == "slow-grand":
            time.sleep(0.5)  # a worker finishing its last request
        write_atomically(report_path + ".term", {"signal": signum, "pid": os.getpid()})
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)

write_atomically(report_path, {
    "pid": os.getpid(),
    "pgid": os.getpgrp(),
    "ppid": os.getppid(),
    "argv": sys.argv,
    "listen_pid": os.environ.get("LISTEN_PID"),
    "listen_fds": os.environ.get("LISTEN_FDS"),
    "listen_fdnames": os.environ.get("LISTEN_FDNAMES"),
    "families": families(),
    **extra,
})
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.5)
sys.exit(99)
"""


@pytest.fixture
def child(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture
def responder(tmp_path: Path) -> Path:
    return write_responder(tmp_path)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path, for unix sockets (sun_path holds 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="zk-") as name:
        yield Path(name)


def read_report(path: Path, timeout: float = 20.0) -> dict[str, Any]:
    wait_for(path.exists, timeout, message=f"{path} to be written")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def assert_one_error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The run failed with ``status`` and exactly one ``zocket: error:`` line; that line."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zocket: error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, status, fragment",
    [
        (["70000", "true"], 2, "70000"),
        (["--port", "70000", "true"], 2, "70000"),
        (["--listen", "a b", "true"], 2, "a b"),
        (["--listen", "::1:80", "true"], 2, "::1:80"),
        (["0", ""], 2, "empty command"),
        (["--port", "0", ""], 2, "empty command"),
        ([], 2, ""),
        (["8000"], 2, "no command"),
        (["--port", "1", "2", "true"], 2, "twice"),
        (["--no-such-option", "0", "true"], 2, "--no-such-option"),
        (["--port", "0", "'unbalanced"], 2, "unbalanced"),
        (["--backlog", "1000000000000", "0", "true"], 2, "--backlog"),
        (["--backlog", str(2**31), "0", "true"], 2, "--backlog"),
        (["--port", "0", *["--listen=127.0.0.1:0"] * 64, "true"], 2, "at most 64"),
        (["--ready-timeout", "1e10", "0", "true"], 2, "--ready-timeout"),
        (["--stop-timeout", "1e10", "0", "true"], 2, "--stop-timeout"),
        (["--debounce", "inf", "0", "true"], 2, "--debounce"),
        (["--ready", "delay:1e10", "0", "true"], 2, "delay"),
        (["-1", "true"], 2, "invalid port: '-1'"),
        (["+80", "--", "true"], 2, "invalid port: '+80'"),
        (["--no-respawn", "-l", "http=127.0.0.1:0", "0", "true"], 2, "'http' is given twice"),
        (["--socket-mode", "600", "-l", "unix:@zk-test-abstract", "true"], 2, "no permissions"),
        (["--socket-owner", "0", "-l", "unix:@zk-test-abstract", "true"], 2, "abstract"),
        (["--socket-mode", "600", "0", "true"], 2, "no --listen unix:PATH"),
    ],
    ids=[
        "port-70000",
        "option-port-70000",
        "listen-space",
        "listen-bare-ipv6",
        "empty-command",
        "option-port-empty-command",
        "nothing",
        "port-only",
        "port-twice",
        "unknown-option",
        "unbalanced-quote",
        "backlog-10**12",
        "backlog-2**31",
        "65-sockets",
        "ready-timeout-1e10",
        "stop-timeout-1e10",
        "debounce-inf",
        "ready-delay-1e10",
        "negative-port",
        "signed-port",
        "port-socket-named-http-twice",
        "socket-mode-abstract",
        "socket-owner-abstract",
        "socket-mode-no-unix-socket",
    ],
)
def test_usage_errors(args: list[str], status: int, fragment: str) -> None:
    line = assert_one_error_line(run_zocket(args), status)
    assert fragment in line


def test_durations_up_to_a_day_are_accepted() -> None:
    config = parse_args(["--ready-timeout", "86400", "--stop-timeout", "86400", "0", "cmd"])
    assert (config.ready_timeout, config.stop_timeout) == (86400.0, 86400.0)


@pytest.mark.parametrize(
    "count, fragment",
    [("99999999999999999999", "too large"), ("65", "at most 64"), ("3x", "not a number")],
)
def test_listen_fds_zocket_cannot_take_is_one_line(count: str, fragment: str) -> None:
    # LISTEN_PID must be zocket's own pid: sh exports its $$ and execs zocket in its place.
    zocket = shlex.join(zocket_argv(["--", "true"]))
    script = f"export LISTEN_PID=$$ LISTEN_FDS={count}; exec {zocket}"
    result = subprocess.run(
        ["/bin/sh", "-c", script],
        env=zocket_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert fragment in assert_one_error_line(result, 2)


#: Runs ``python -m zocket ARGV`` with SIGINT at its default (a shell or harness that
#: started the tests in the background may have left it ignored, and an ignored signal
#: stays ignored across exec), after writing one byte on stdout: by then the interpreter
#: has finished its own start (site, and finding the package), which zocket cannot
#: guard, and what follows is zocket's, from the first line of ``zocket/__main__.py`` on,
#: a fraction of a millisecond later (the delays start at 5 ms, never in between).
_SIGINT_AFTER_SITE = (
    "import os, runpy, signal, sys, zocket; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['zocket', *sys.argv[1:]]; os.write(1, b'.'); "
    "runpy.run_module('zocket', run_name='__main__', alter_sys=True)"
)


@pytest.mark.parametrize("delay_ms", [5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 250, 400])
def test_sigint_during_start_up_exits_130_and_leaves_nothing(
    delay_ms: int, short_tmp: Path
) -> None:
    sock, pid_file = short_tmp / "s", short_tmp / "pid"
    marker = f"{30 + delay_ms / 1000:.3f}"  # sleep's argument: finds the server if it lives on
    args = [
        "--no-respawn", "--port", "0", "--listen", f"unix:{sock}", "--pid-file", str(pid_file),
        "--", "sleep", marker,
    ]  # fmt: skip
    proc = subprocess.Popen(
        [PY, "-c", _SIGINT_AFTER_SITE, *args],
        env=zocket_env(),
        cwd=short_tmp,  # not the checkout: see zocket_command
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.read(1) == b"."
        time.sleep(delay_ms / 1000)
        proc.send_signal(signal.SIGINT)
        _, raw = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = raw.decode(errors="replace")
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert not sock.exists() and not pid_file.exists(), stderr
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, marker)]
    assert not left, f"the server outlived zocket: {left}"


def _cmdline_has(pid: str, word: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return word.encode() in f.read().split(b"\0")
    except OSError:
        return False


def test_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_zocket(["--no-respawn", "--port", port, "true"])
    line = assert_one_error_line(result, 3)
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line


def _unprivileged() -> tuple[list[str], dict[str, Any]]:
    """(command prefix, Popen keywords) that run zocket without the right to bind port 80.

    Not root: as we are. Root: as uid/gid 65534 when that user can run this
    interpreter and import zocket; else still root but with CAP_NET_BIND_SERVICE
    dropped from the bounding set (setpriv), which is what the check is about.
    """
    if os.geteuid() != 0:
        return [], {}
    as_nobody: dict[str, Any] = {"user": 65534, "group": 65534, "extra_groups": []}
    try:
        probe = subprocess.run(
            [PY, "-c", "import zocket.libc"],
            env=zocket_env(),
            cwd="/",
            capture_output=True,
            timeout=30,
            check=False,
            **as_nobody,
        )
    except PermissionError:
        pass  # the interpreter is in a directory uid 65534 cannot enter
    else:
        if probe.returncode == 0:
            return [], {**as_nobody, "cwd": "/"}
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, uid 65534 cannot run this interpreter, and no setpriv")
    return [setpriv, "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"], {}


def test_privileged_port_without_permission() -> None:
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        if int(f.read()) <= 80:
            pytest.skip("ip_unprivileged_port_start lets anyone bind port 80 here")
    prefix, popen_kw = _unprivileged()
    result = run_zocket(["--no-respawn", "--port", "80", "true"], prefix=prefix, **popen_kw)
    line = assert_one_error_line(result, 3)
    assert "permission denied" in line.lower()
    assert "127.0.0.1:80" in line


def test_unknown_host() -> None:
    line = assert_one_error_line(
        run_zocket(["--no-respawn", "--host", "nosuch.invalid", "--port", "0", "true"], timeout=60),
        3,
    )
    assert "nosuch.invalid" in line


def test_command_not_found() -> None:
    name = "zocket-test-no-such-command"
    line = assert_one_error_line(run_zocket(["--no-respawn", "--port", "0", "--", name]), 127)
    assert f"command not found: {name}" in line


def test_command_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "server.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    line = assert_one_error_line(run_zocket(["--no-respawn", "--port", "0", "--", script]), 126)
    assert str(script) in line


def test_unix_path_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("do not delete me\n")
    before = path.stat()
    line = assert_one_error_line(
        run_zocket(["--no-respawn", "--listen", f"unix:{path}", "true"]), 3
    )
    assert str(path) in line
    assert path.read_text() == "do not delete me\n"
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, stat.S_IFMT(after.st_mode)) == (
        before.st_ino,
        before.st_mtime_ns,
        stat.S_IFMT(before.st_mode),
    )


def test_placeholder_naming_no_socket() -> None:
    line = assert_one_error_line(
        run_zocket(["--no-respawn", "--port", "0", "--", "echo", "{fd:nope}"]), 2
    )
    assert "{fd:nope}" in line
    assert "'nope'" in line


def test_placeholder_error_removes_the_unix_socket_file(short_tmp: Path) -> None:
    path = short_tmp / "admin.sock"
    result = run_zocket(
        ["--no-respawn", "--listen", f"admin=unix:{path}", "--", "echo", "{port:admin}"]
    )
    line = assert_one_error_line(result, 2)
    assert "{port:admin}" in line
    assert not path.exists(), "zocket left its unix socket file behind"


def test_unix_socket_file_removed_after_spawn_error(short_tmp: Path) -> None:
    path = short_tmp / "s.sock"
    name = "zocket-test-no-such-command"
    result = run_zocket(["--no-respawn", "--listen", f"unix:{path}", "--", name])
    assert_one_error_line(result, 127)
    assert not path.exists()


def test_stale_unix_socket_is_replaced_and_a_live_one_is_not(
    short_tmp: Path, child: Path, tmp_path: Path
) -> None:
    path = short_tmp / "s.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        line = assert_one_error_line(
            run_zocket(["--no-respawn", "--listen", f"unix:{path}", "true"]), 3
        )
        assert f"unix:{path}" in line
        assert "in use" in line
    # Closed without unlink: the file stays, nobody accepts on it: a stale socket.
    assert stat.S_ISSOCK(path.lstat().st_mode)
    report = tmp_path / "report.json"
    with start_zocket(
        ["--no-respawn", "--listen", f"unix:{path}", "--", PY, child, report, "wait"]
    ):
        assert read_report(report)["families"] == {"3": socket.AF_UNIX}
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(path))
    assert not path.exists()


def test_abstract_unix_socket(child: Path, tmp_path: Path) -> None:
    name = f"zocket-test-{os.getpid()}-{time.monotonic_ns()}"
    report = tmp_path / "report.json"
    with start_zocket(
        ["--no-respawn", "--listen", f"unix:@{name}", "--", PY, child, report, "wait"]
    ) as zocket:
        assert zocket.urls == [f"unix:@{name}"]
        seen = read_report(report)
        assert seen["families"] == {"3": socket.AF_UNIX}
        assert seen["listen_fdnames"] == "http"
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect("\0" + name)


# --- ports and forms --------------------------------------------------------------------------


def test_port_zero_picks_a_free_port_the_child_serves_on(responder: Path) -> None:
    with start_zocket(["--no-respawn", "--port", "0", "--", PY, responder]) as zocket:
        assert zocket.port != 0
        assert zocket.urls == [f"http://127.0.0.1:{zocket.port}"]
        status, _, body = http_get(zocket.port)
        assert status == 200
        seen = json.loads(body)
        assert seen["sockname"] == ["127.0.0.1", zocket.port]
        assert seen["pid"] == zocket.child_pid
        assert seen["listen_pid"] == str(zocket.child_pid)
        # The kernel agrees: zocket's socket listens on that port, and the child's fd 3 is it.
        inode = socket_inode(zocket.child_pid, 3)
        assert inode in socket_inodes(zocket.pid).values()
        assert tcp_listeners()[inode] == ("127.0.0.1", zocket.port)  # type: ignore[index]
        assert zocket.stop() == 128 + signal.SIGTERM


@pytest.mark.parametrize(
    "form",
    ["PORT 'CMD'", "PORT -- CMD", "--port PORT 'CMD'", "--port=PORT 'CMD'", "-p PORT -- CMD"],
)
def test_command_forms(form: str, responder: Path) -> None:
    words = [PY, str(responder), "tag={port}"]
    command = shlex.join(words)
    args = {
        "PORT 'CMD'": ["0", command],
        "PORT -- CMD": ["0", "--", *words],
        "--port PORT 'CMD'": ["--port", "0", command],
        "--port=PORT 'CMD'": ["--port=0", command],
        "-p PORT -- CMD": ["-p", "0", "--", *words],
    }[form]
    with start_zocket(["--no-respawn", *args]) as zocket:
        assert read_cmdline(zocket.child_pid) == [PY, str(responder), f"tag={zocket.port}"]
        status, _, body = http_get(zocket.port)
        assert status == 200
        assert json.loads(body)["pid"] == zocket.child_pid


def test_default_port_is_9999(responder: Path) -> None:
    assert _summary(["gunicorn app:app"]) == ([(None, "127.0.0.1", 9999)], ["gunicorn", "app:app"])
    # End to end too, when 9999 is free here (the in-process check above holds regardless).
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 9999))
        except OSError:
            return
    try:
        zocket = start_zocket(["--no-respawn", shlex.join([PY, str(responder)])])
    except ZocketStartError as exc:
        if "address already in use: 127.0.0.1:9999" in str(exc):
            return  # taken in the meantime by someone else
        raise
    with zocket:
        assert zocket.urls == ["http://127.0.0.1:9999"]
        assert http_get(9999)[0] == 200


def test_ipv6_host(responder: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no ::1 here")
    with start_zocket(["--no-respawn", "--host", "::1", "--port", "0", "--", PY, responder]) as z:
        assert z.urls == [f"http://[::1]:{z.port}"]
        status, _, body = http_get(z.port, host="::1")
        assert status == 200
        assert json.loads(body)["sockname"][:2] == ["::1", z.port]


def test_listen_names_unix_socket_and_placeholders(
    child: Path, short_tmp: Path, tmp_path: Path
) -> None:
    admin = short_tmp / "admin.sock"
    report = tmp_path / "report.json"
    args = [
        "--no-respawn",
        "--listen", "web=127.0.0.1:0",
        "--listen", f"admin=unix:{admin}",
        "--", PY, child, report, "wait",
        "--fd={fd:admin}", "--web-fd={fd}", "--port={port}", "--host={host}",
        "--web-port={port:web}", "--literal={{fd}}",
    ]  # fmt: skip
    with start_zocket(args) as zocket:
        assert [(h.name, h.fd) for h in zocket.held] == [("web", 3), ("admin", 4)]
        assert zocket.urls == [f"http://127.0.0.1:{zocket.port}", f"unix:{admin}"]
        seen = read_report(report)
        assert seen["pid"] == zocket.child_pid
        assert seen["listen_pid"] == str(zocket.child_pid)
        assert seen["listen_fds"] == "2"
        assert seen["listen_fdnames"] == "web:admin"
        assert seen["families"] == {"3": socket.AF_INET, "4": socket.AF_UNIX}
        expected_tail = [
            "--fd=4", "--web-fd=3", f"--port={zocket.port}", "--host=127.0.0.1",
            f"--web-port={zocket.port}", "--literal={fd}",
        ]  # fmt: skip
        assert read_cmdline(zocket.child_pid) == [
            PY,
            str(child),
            str(report),
            "wait",
            *expected_tail,
        ]
        assert stat.S_ISSOCK(admin.lstat().st_mode)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(admin))  # queued in the backlog: the child does not accept
        assert zocket.stop() == 128 + signal.SIGTERM
    assert not admin.exists(), "zocket removes the unix socket file it created"


def test_shell(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    command = f'echo "$$ $LISTEN_PID $LISTEN_FDS $((6 * 7))" > {shlex.quote(str(out))}; exit 5'
    with start_zocket(["--no-respawn", "--shell", "--port", "0", command]) as zocket:
        assert zocket.wait() == 5
    pid = zocket.child_pid
    assert out.read_text().split() == [str(pid), str(pid), "1", "42"]


def test_shell_argv(child: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    command = f"exec {shlex.join([PY, str(child), str(report), 'wait'])} --port={{port}}"
    with start_zocket(["--no-respawn", "--shell", "--port", "0", command]) as zocket:
        # The child started as /bin/sh -c; its exec keeps the pid, so the report comes from it.
        seen = read_report(report)
        assert seen["pid"] == zocket.child_pid
        assert seen["argv"][1:] == [str(report), "wait", f"--port={zocket.port}"]


#: Writes the fds it was started with (0..19 probed with fcntl, which opens nothing) to argv[1].
FDS_CHILD = (
    "import fcntl, json, sys\n"
    "def is_open(fd):\n"
    "    try:\n"
    "        fcntl.fcntl(fd, fcntl.F_GETFD)\n"
    "    except OSError:\n"
    "        return False\n"
    "    return True\n"
    "fds = [fd for fd in range(20) if is_open(fd)]\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump(fds, f)\n"
)


@pytest.mark.parametrize("closed", ["<&- >&-", "<&- >&- 2>&-", "2>&-"])
def test_closed_stdio_reaches_the_server_as_dev_null(closed: str, tmp_path: Path) -> None:
    child, report = tmp_path / "fds.py", tmp_path / "fds.json"
    child.write_text(FDS_CHILD)
    zocket = shlex.join(zocket_argv(["--no-respawn", "--port", "0", "--", PY, child, report]))
    result = subprocess.run(
        ["/bin/sh", "-c", f"exec {zocket} {closed}"],
        env=zocket_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text()) == [0, 1, 2, 3]


def test_one_word_after_dashdash_is_the_argv(tmp_path: Path) -> None:
    directory = tmp_path / "my dir"
    directory.mkdir()
    program = directory / "prog"
    program.write_text("#!/bin/sh\nexit 7\n")
    program.chmod(0o755)
    assert list(parse_args(["0", "--", str(program)]).command) == [str(program)]
    assert list(parse_args(["0", "--", "a b"]).command) == ["a b"]
    assert list(parse_args(["0", "a b"]).command) == ["a", "b"]  # one string is split
    result = run_zocket(["--no-respawn", "--port", "0", "--", program])
    assert result.returncode == 7, result.stderr


def test_child_sees_exactly_stdio_and_the_held_sockets(
    child: Path, short_tmp: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    # An inheritable fd given to zocket must not reach the server.
    read_end, write_end = os.pipe()
    try:
        zocket = start_zocket(
            [
                "--no-respawn", "--port", "0", "--listen", f"unix:{short_tmp / 's'}",
                "--", PY, child, report, "wait",
            ],
            pass_fds=(read_end,),
        )  # fmt: skip
    finally:
        os.close(read_end)
        os.close(write_end)
    with zocket:
        read_report(report)
        assert open_fds(zocket.child_pid) == [0, 1, 2, 3, 4]
        assert set(socket_inodes(zocket.child_pid)) == {3, 4}
        assert set(socket_inodes(zocket.child_pid).values()) <= set(
            socket_inodes(zocket.pid).values()
        )


# --- signals and exit statuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    "sig, status",
    [(signal.SIGINT, 10), (signal.SIGTERM, 11), (signal.SIGQUIT, 12)],
    ids=["INT", "TERM", "QUIT"],
)
def test_stop_signal_is_forwarded_and_status_propagated(
    sig: signal.Signals, status: int, child: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    with start_zocket(["--no-respawn", "--port", "0", "--", PY, child, report, "codes"]) as z:
        read_report(report)
        assert z.stop(sig) == status
    assert proc_stat(z.child_pid) is None


def test_child_killed_by_sigkill(child: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    with start_zocket(["--no-respawn", "--port", "0", "--", PY, child, report, "wait"]) as z:
        read_report(report)
        os.kill(z.child_pid, signal.SIGKILL)
        assert z.wait() == 128 + signal.SIGKILL


def test_child_exit_status() -> None:
    with start_zocket(["--no-respawn", "--port", "0", "--", PY, "-c", "raise SystemExit(7)"]) as z:
        assert z.wait() == 7


def test_exit_status_zero() -> None:
    with start_zocket(["--no-respawn", "--port", "0", "true"]) as z:
        assert z.wait() == 0


def test_stop_timeout_kills_a_child_that_ignores_sigterm(child: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    args = ["--no-respawn", "--stop-timeout", "1", "--port", "0", "--", PY, child, report]
    with start_zocket([*args, "ignore-term"]) as z:
        read_report(report)
        started = time.monotonic()
        assert z.stop(signal.SIGTERM, timeout=15) == 128 + signal.SIGKILL
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 8, elapsed
    assert proc_stat(z.child_pid) is None, "the child was reaped"
    assert group_members(z.child_pid, zombies=True) == []


def test_child_has_its_own_process_group_and_the_group_gets_the_signal(
    child: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    with start_zocket(["--no-respawn", "--port", "0", "--", PY, child, report, "grandchild"]) as z:
        seen = read_report(report)
        grand = read_report(Path(f"{report}.grand"))
        assert seen["pid"] == seen["pgid"] == z.child_pid
        assert seen["ppid"] == z.pid
        assert os.getpgid(z.pid) != z.child_pid  # zocket stays out of the server's group
        assert grand["pgid"] == z.child_pid
        assert grand["ppid"] == z.child_pid
        assert seen["grandchild"] == grand["pid"]
        assert z.stop(signal.SIGTERM) == 11
    # The grandchild got SIGTERM through the group, not from its parent.
    term = read_report(Path(f"{report}.grand.term"), timeout=10)
    assert term == {"signal": signal.SIGTERM, "pid": grand["pid"]}


def test_a_stop_gives_workers_left_by_their_first_process_the_stop_timeout(
    child: Path, tmp_path: Path
) -> None:
    """The server's first process exits at once on SIGTERM; a worker of its group takes
    0.5 s to finish. zocket waits for it (within --stop-timeout) before it exits and
    SIGKILLs what is left, so the worker's last answer is not cut off."""
    report = tmp_path / "report.json"
    argv = ["--no-respawn", "--stop-timeout", "10", "--port", "0", "--", PY, child, report,
            "slow-grandchild"]  # fmt: skip
    with start_zocket(argv) as z:
        read_report(report)
        grand = read_report(Path(f"{report}.grand"))
        began = time.monotonic()
        assert z.stop(signal.SIGTERM) == 11
        took = time.monotonic() - began
    term = read_report(Path(f"{report}.grand.term"), timeout=1)
    assert term == {"signal": signal.SIGTERM, "pid": grand["pid"]}
    assert took < 10, took  # it waited for the worker, not for the whole stop timeout
    wait_for(lambda: not group_members(z.child_pid), 10, message="the server's group to be empty")


# --- parse_args in-process --------------------------------------------------------------------


def _summary(argv: list[str]) -> tuple[list[tuple[str | None, str, int | None]], list[str]]:
    """(name, host or unix address, port) of each socket, and the command, of ``zocket ARGV``."""
    config = parse_args(argv)
    listen: list[tuple[str | None, str, int | None]] = []
    for spec in config.listen:
        if isinstance(spec.address, InetAddress):
            listen.append((spec.name, spec.address.host, spec.address.port))
        else:
            listen.append((spec.name, str(spec.address), None))
    return listen, list(config.command)


@pytest.mark.parametrize(
    "argv",
    [
        ["9999", "gunicorn -w 2 'app:app'"],
        ["9999", "--", "gunicorn", "-w", "2", "app:app"],
        ["--port", "9999", "gunicorn -w 2 app:app"],
        ["-p", "9999", "--", "gunicorn", "-w", "2", "app:app"],
        ["gunicorn -w 2 app:app"],
        ["--", "gunicorn", "-w", "2", "app:app"],
        ["--host", "127.0.0.1", "gunicorn -w 2 app:app"],
    ],
)
def test_parse_forms(argv: list[str]) -> None:
    assert _summary(argv) == ([(None, "127.0.0.1", 9999)], ["gunicorn", "-w", "2", "app:app"])


def test_parse_defaults_and_options() -> None:
    config = parse_args(["8000", "cmd"])
    assert config.respawn is True
    assert config.stop_timeout == 10.0
    config = parse_args(
        ["--no-respawn", "--stop-timeout", "1.5", "--backlog", "7", "--host", "::1", "8000", "cmd"]
    )
    assert config.respawn is False
    assert config.stop_timeout == 1.5
    assert config.backlog == 7
    assert _summary(["--host", "::1", "0", "cmd"])[0] == [(None, "::1", 0)]
    assert _summary(["--host", "LocalHost", "0", "cmd"])[0] == [(None, "localhost", 0)]


def test_parse_listen() -> None:
    listen, command = _summary(
        ["--listen", "web=127.0.0.1:0", "--listen", "admin=unix:/tmp/a.sock", "--", "a", "{fd}"]
    )
    assert listen == [("web", "127.0.0.1", 0), ("admin", "unix:/tmp/a.sock", None)]
    assert command == ["a", "{fd}"]  # placeholders are filled in at spawn time
    # A port next to --listen is held first.
    listen, _ = _summary(["--listen", "[::1]:81", "80", "cmd"])
    assert listen == [(None, "127.0.0.1", 80), (None, "::1", 81)]


def test_socket_mode_with_a_socket_file_among_abstract_ones_is_accepted() -> None:
    config = parse_args(
        ["--socket-mode", "600", "-l", "unix:/tmp/zk-a.sock", "-l", "unix:@zk-b", "--", "cmd"]
    )
    assert config.unix_permissions.mode == 0o600


def test_socket_mode_with_handed_sockets_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    with pytest.raises(UsageError, match="LISTEN_FDS"):
        parse_args(["--socket-mode", "600", "cmd"])


def test_shell_keeps_the_quoting_of_several_words() -> None:
    words = ["printf", "[%s]\n", "a  b", "x; echo INJECTED"]
    result = run_zocket(["--no-respawn", "--port", "0", "--shell", "--", *words])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[a  b]\n[x; echo INJECTED]\n"
    assert list(parse_args(["--shell", "0", "--", *words]).command) == [
        "/bin/sh", "-c", shlex.join(words)
    ]  # fmt: skip


def test_parse_shell() -> None:
    assert list(parse_args(["--shell", "0", "echo $HOME | wc"]).command) == [
        "/bin/sh",
        "-c",
        "echo $HOME | wc",
    ]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["70000", "cmd"], "70000"),
        (["--port", "70000", "cmd"], "70000"),
        (["--port", "-1", "cmd"], "-1"),
        (["--port", "1", "2", "cmd"], "twice"),
        (["--listen", "a b", "cmd"], "a b"),
        (["--listen", "::1:80", "cmd"], "::1:80"),
        (["--listen", "unix:", "cmd"], "unix"),
        (["0", ""], "empty command"),
        (["0", "   "], "empty command"),
        ([], ""),
        (["8000"], "no command"),
        (["--port", "0"], ""),
        (["0", "cmd", "--", "more"], "cmd"),
        (["--host", "localhost", "--listen", "127.0.0.1:0", "cmd"], "--host"),
        (["--host", "nosuch host", "0", "cmd"], "nosuch host"),
        (["--backlog", "0", "0", "cmd"], "backlog"),
        (["--stop-timeout", "-1", "0", "cmd"], "-1"),
        (["--no-such-option", "cmd"], "--no-such-option"),
        (["0", "'unbalanced"], "unbalanced"),
    ],
)
def test_parse_errors(argv: list[str], fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_args(argv)
    message = str(info.value)
    assert message and "\n" not in message
    assert fragment in message
    assert info.value.exit_status == 2
