"""The app side, tested with real sockets in real processes.

LISTEN_PID must equal the pid of the process that reads it, so every test
that hands over fds runs a child interpreter: a small launcher moves the
sockets onto fds 3, 4, ..., sets LISTEN_PID to its own pid and exec()s the
interpreter under test, which keeps that pid. The child runs with -I -S, so
only the standard library is importable there, as in a foreign virtualenv.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from support import REPO, own_fds
from zocket import activation

# Runs in the child before exec(): fds 3.. must exist and LISTEN_PID must be
# known before the interpreter under test starts, as under systemd.
LAUNCHER = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
for target, source in enumerate(spec["fds"], start=3):
    os.dup2(source, target)
for source in spec["fds"]:
    os.close(source)
if spec["pid"] == "self":
    os.environ["LISTEN_PID"] = str(os.getpid())
elif spec["pid"] == "parent":
    os.environ["LISTEN_PID"] = str(os.getppid())
os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", spec["code"], spec["repo"]])
"""

PRELUDE = r"""
import json, os, socket, subprocess, sys
sys.path.insert(0, sys.argv[1])
from zocket import activation

def describe(sock):
    return {
        "fd": sock.fileno(),
        "family": int(sock.family),
        "type": int(sock.type),
        "sockname": sock.getsockname(),
        "listening": sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
        "inheritable": os.get_inheritable(sock.fileno()),
    }

def is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True

def grandchild():
    # close_fds=False: whatever fd is still inheritable reaches the grandchild,
    # and env is not passed, so it sees the C environ after unsetenv().
    code = (
        "import json, os\n"
        "def is_open(fd):\n"
        "    try:\n"
        "        os.fstat(fd)\n"
        "    except OSError:\n"
        "        return False\n"
        "    return True\n"
        "print(json.dumps({'env': sorted(k for k in os.environ if k.startswith('LISTEN_')),"
        " 'open': [fd for fd in range(3, 8) if is_open(fd)]}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], close_fds=False, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)

out = {"pid": os.getpid(), "LISTEN_PID": os.environ.get("LISTEN_PID")}
"""

EPILOGUE = r"""
out["zocket_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "zocket")
print(json.dumps(out))
"""


def run_child(
    body: str, fds: Sequence[int], *, pid: str = "self", env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `body` in an interpreter that finds `fds` on 3, 4, ... and return what it printed."""
    # High numbers, so that moving them onto 3.. in the launcher cannot clobber one another.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
    try:
        child_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET")
        }
        child_env.update(env or {})
        spec = {"fds": high, "pid": pid, "code": PRELUDE + body + EPILOGUE, "repo": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, json.dumps(spec)],
            pass_fds=high,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for fd in high:
            os.close(fd)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result: dict[str, Any] = json.loads(done.stdout)
    # The app side must not drag in the compiled part (or anything else of zocket).
    assert set(result["zocket_modules"]) <= {
        "zocket",
        "zocket._version",
        "zocket.activation",
        "zocket.fdnames",
    }
    return result


def listener(stack: ExitStack, family: socket.AddressFamily, address: Any) -> socket.socket:
    sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
    sock.bind(address)
    sock.listen(8)
    return sock


def unix_listeners(stack: ExitStack, directory: Path, count: int) -> list[socket.socket]:
    return [listener(stack, socket.AF_UNIX, str(directory / f"s{i}")) for i in range(count)]


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --- listen_fds -------------------------------------------------------------

ROUNDTRIP = r"""
out["inheritable_before"] = [os.get_inheritable(fd) for fd in (3, 4, 5)]
pairs = activation.listen_fds_with_names()
out["sockets"] = [dict(describe(sock), name=name) for name, sock in pairs]
for name, sock in pairs:
    sock.settimeout(10)
    conn, _ = sock.accept()
    with conn:
        conn.sendall(b"hello from " + name.encode())
"""


def test_inet_inet6_and_unix_sockets_arrive_intact(tmp_path: Path) -> None:
    with ExitStack() as stack:
        listeners = [
            listener(stack, socket.AF_INET, ("127.0.0.1", 0)),
            listener(stack, socket.AF_INET6, ("::1", 0)),
            listener(stack, socket.AF_UNIX, str(tmp_path / "app.sock")),
        ]
        # Queued in the backlog now, accepted by the child: proof that the
        # child's fd is this very socket, not one with a similar address.
        clients = []
        for sock in listeners:
            client = stack.enter_context(socket.socket(sock.family, socket.SOCK_STREAM))
            client.settimeout(10)
            client.connect(sock.getsockname())
            clients.append(client)

        out = run_child(
            ROUNDTRIP,
            [sock.fileno() for sock in listeners],
            env={"LISTEN_FDS": "3", "LISTEN_FDNAMES": "web:admin:control"},
        )

        assert out["LISTEN_PID"] == str(out["pid"])
        assert out["inheritable_before"] == [True, True, True]
        names = ["web", "admin", "control"]
        assert out["sockets"] == [
            {
                "name": name,
                "fd": 3 + i,
                "family": int(sock.family),
                "type": int(socket.SOCK_STREAM),
                "sockname": as_json(sock.getsockname()),
                "listening": 1,
                # sd_listen_fds() sets FD_CLOEXEC: our own children must not inherit them.
                "inheritable": False,
            }
            for i, (name, sock) in enumerate(zip(names, listeners))
        ]
        assert [sock.family for sock in listeners] == [
            socket.AF_INET,
            socket.AF_INET6,
            socket.AF_UNIX,
        ]
        for client, name in zip(clients, names):
            assert client.recv(100) == b"hello from " + name.encode()


NOT_FOR_US = r"""
out["fds"] = [describe(sock) for sock in activation.listen_fds()]
out["named"] = [name for name, _ in activation.listen_fds_with_names()]
try:
    activation.listen_socket("web")
except LookupError as error:
    out["lookup_error"] = str(error)
out["inheritable"] = [os.get_inheritable(fd) for fd in (3, 4)]
out["grandchild"] = grandchild()
"""


@pytest.mark.parametrize("pid", ["parent", "none"])
def test_sockets_for_another_pid_or_no_pid_are_not_taken(tmp_path: Path, pid: str) -> None:
    with ExitStack() as stack:
        listeners = unix_listeners(stack, tmp_path, 2)
        out = run_child(
            NOT_FOR_US,
            [sock.fileno() for sock in listeners],
            pid=pid,
            env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:admin"},
        )
    if pid == "parent":
        assert out["LISTEN_PID"] == str(os.getpid()) != str(out["pid"])
    else:
        assert out["LISTEN_PID"] is None
    assert out["fds"] == []
    assert out["named"] == []
    assert "no sockets" in out["lookup_error"] and "'web'" in out["lookup_error"]
    # Not ours, so not touched: they stay inheritable, the environment stays set.
    assert out["inheritable"] == [True, True]
    assert out["grandchild"]["open"] == [3, 4]
    expected_env = ["LISTEN_FDNAMES", "LISTEN_FDS"] + (["LISTEN_PID"] if pid == "parent" else [])
    assert out["grandchild"]["env"] == expected_env


UNSET = r"""
socks = activation.listen_fds(unset_environment=True)
out["fds"] = [sock.fileno() for sock in socks]
out["left"] = sorted(k for k in os.environ if k.startswith("LISTEN_"))
out["again"] = len(activation.listen_fds())
out["web_after_unset"] = activation.listen_socket("web") is socks[0]
out["grandchild"] = grandchild()
"""


def test_unset_environment_removes_the_variables(tmp_path: Path) -> None:
    with ExitStack() as stack:
        listeners = unix_listeners(stack, tmp_path, 2)
        out = run_child(
            UNSET,
            [sock.fileno() for sock in listeners],
            env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:admin"},
        )
    assert out["fds"] == [3, 4]
    assert out["left"] == []
    # As sd_listen_fds(): after unsetting, a new call sees nothing ...
    assert out["again"] == 0
    # ... but a socket taken before is still found by name.
    assert out["web_after_unset"] is True
    # unsetenv() reached the C environ and FD_CLOEXEC kept 3 and 4 from leaking.
    assert out["grandchild"] == {"env": [], "open": []}


NAMES = r"""
out["named"] = [(name, sock.fileno()) for name, sock in activation.listen_fds_with_names()]
try:
    activation.listen_socket("web")
except LookupError as error:
    out["lookup_error"] = str(error)
"""


@pytest.mark.parametrize(
    ("fdnames", "expected"),
    [
        (None, ["unknown", "unknown"]),
        ("", ["unknown", "unknown"]),
        ("first", ["first", "unknown"]),
        ("first:second:surplus", ["first", "second"]),
    ],
)
def test_missing_names_read_as_unknown(
    tmp_path: Path, fdnames: str | None, expected: list[str]
) -> None:
    env = {"LISTEN_FDS": "2"}
    if fdnames is not None:
        env["LISTEN_FDNAMES"] = fdnames
    with ExitStack() as stack:
        listeners = unix_listeners(stack, tmp_path, 2)
        out = run_child(NAMES, [sock.fileno() for sock in listeners], env=env)
    assert out["named"] == [[name, fd] for name, fd in zip(expected, [3, 4])]
    available = ", ".join(repr(name) for name in expected)
    assert out["lookup_error"].startswith(f"no socket named 'web'; available: {available}")
    if fdnames is None:
        assert "LISTEN_FDNAMES is unset" in out["lookup_error"]


LOOKUP = r"""
socks = activation.listen_fds()
out["web"] = activation.listen_socket("web").fileno()
out["admin_is_third"] = activation.listen_socket("admin") is socks[2]
try:
    activation.listen_socket("metrics")
except LookupError as error:
    out["lookup_error"] = str(error)
socks[0].close()
out["web_after_close"] = activation.listen_socket("web").fileno()
"""


def test_listen_socket_finds_the_first_by_name(tmp_path: Path) -> None:
    with ExitStack() as stack:
        listeners = unix_listeners(stack, tmp_path, 3)
        out = run_child(
            LOOKUP,
            [sock.fileno() for sock in listeners],
            env={"LISTEN_FDS": "3", "LISTEN_FDNAMES": "web:web:admin"},
        )
    assert out["web"] == 3
    assert out["admin_is_third"] is True
    assert out["lookup_error"] == "no socket named 'metrics'; available: 'web', 'web', 'admin'"
    # A closed socket can no longer serve, so the next one by that name wins.
    assert out["web_after_close"] == 4


CACHE = r"""
first = activation.listen_fds()
second = activation.listen_fds()
named = activation.listen_fds_with_names()
out["fds"] = [sock.fileno() for sock in first]
out["same"] = [a is b for a, b in zip(first, second)] + [a is b for a, (_, b) in zip(first, named)]
out["lookup_same"] = activation.listen_socket("web") is first[0]
del second, named
import gc
gc.collect()
out["still_open"] = [is_open(fd) for fd in (3, 4)]

read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    os.close(read_end)
    report = {"inherited_env": [s.fileno() for s in activation.listen_fds()]}
    os.environ["LISTEN_PID"] = str(os.getpid())
    again = activation.listen_fds()
    report["reread"] = [s.fileno() for s in again]
    report["new_objects"] = [a is not b for a, b in zip(first, again)]
    os.write(write_end, json.dumps(report).encode())
    os._exit(0)
os.close(write_end)
with os.fdopen(read_end, "rb") as pipe:
    out["forked"] = json.loads(pipe.read())
os.waitpid(child, 0)
out["parent_same_after_fork"] = [a is b for a, b in zip(first, activation.listen_fds())]
"""


def test_a_second_call_returns_the_same_objects(tmp_path: Path) -> None:
    with ExitStack() as stack:
        listeners = unix_listeners(stack, tmp_path, 2)
        out = run_child(
            CACHE,
            [sock.fileno() for sock in listeners],
            env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:admin"},
        )
    assert out["fds"] == [3, 4]
    assert out["same"] == [True] * 4
    assert out["lookup_same"] is True
    # Dropping the other references closed nothing: there is one owner per fd.
    assert out["still_open"] == [True, True]
    # A forked child re-reads: LISTEN_PID names its parent, so nothing; once
    # it names the child, fresh objects for the child's own copies of the fds.
    assert out["forked"] == {"inherited_env": [], "reread": [3, 4], "new_objects": [True, True]}
    assert out["parent_same_after_fork"] == [True, True]


BAD = r"""
try:
    activation.listen_fds(unset_environment=True)
except Exception as error:
    out["error"] = [type(error).__name__, str(error)]
out["left"] = sorted(k for k in os.environ if k.startswith("LISTEN_"))
"""


@pytest.mark.parametrize(
    ("listen_fds", "error", "message"),
    [
        ("2x", "ValueError", "LISTEN_FDS='2x' is not a number"),
        ("-1", "ValueError", "LISTEN_FDS='-1' is not a number"),
        ("3", "OSError", "promises fd 5, but it is not open"),
    ],
)
def test_bad_listen_fds_for_us_is_an_error(
    tmp_path: Path, listen_fds: str, error: str, message: str
) -> None:
    with ExitStack() as stack:
        listeners = unix_listeners(stack, tmp_path, 2)
        out = run_child(BAD, [sock.fileno() for sock in listeners], env={"LISTEN_FDS": listen_fds})
    assert out["error"][0] == error
    assert message in out["error"][1]
    # Unset even on failure, as sd_listen_fds() does.
    assert out["left"] == []


def test_an_fd_that_is_not_a_socket_is_an_error(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        with ExitStack() as stack:
            (sock,) = unix_listeners(stack, tmp_path, 1)
            out = run_child(BAD, [sock.fileno(), read_end], env={"LISTEN_FDS": "2"})
    finally:
        os.close(read_end)
        os.close(write_end)
    assert out["error"][0] == "OSError"
    assert "promises fd 4, but it is not a socket" in out["error"][1]


# In-process: safe as long as no fd is ever wrapped, i.e. whenever the
# variables are not for this process or fail to parse.

not_a_count = st.text(
    alphabet=st.characters(codec="utf-8", blacklist_characters="\0")  # no surrogates
).filter(lambda s: not re.fullmatch(r"[0-9]+", s))


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
            mp.delenv(name, raising=False)
        for name, value in values.items():
            if value is not None:
                mp.setenv(name, value)
        yield


@given(value=not_a_count)
@example(value="")
@example(value="-1")
@example(value=" 1")
@example(value="+1")
@example(value="٣")  # an Arabic-Indic digit: int() takes it, systemd does not
def test_garbage_listen_fds_for_us_is_a_value_error(value: str) -> None:
    with environment(LISTEN_PID=str(os.getpid()), LISTEN_FDS=value):
        with pytest.raises(ValueError, match=r"^LISTEN_FDS=.* is not a number of file descriptors"):
            activation.listen_fds()


foreign_pid = st.one_of(
    st.integers(min_value=1, max_value=2**22).filter(lambda pid: pid != os.getpid()).map(str),
    not_a_count,
    st.just(str(-os.getpid())),
    st.just(f" {os.getpid()}"),
    st.just("0"),
)


@given(pid=foreign_pid, count=st.one_of(st.integers(0, 1000).map(str), not_a_count))
def test_variables_for_another_process_are_ignored_and_can_be_unset(pid: str, count: str) -> None:
    with environment(LISTEN_PID=pid, LISTEN_FDS=count, LISTEN_FDNAMES="web"):
        assert activation.listen_fds() == []
        assert activation.listen_fds_with_names() == []
        assert os.environ["LISTEN_FDS"] == count
        assert activation.listen_fds_with_names(unset_environment=True) == []
        assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)


@pytest.mark.parametrize("count", [None, "0"])
def test_no_fds_for_us_is_empty(count: str | None) -> None:
    with environment(LISTEN_PID=str(os.getpid()), LISTEN_FDS=count, LISTEN_FDNAMES="web"):
        assert activation.listen_fds() == []
        assert activation.listen_fds_with_names() == []
        with pytest.raises(LookupError, match="no socket named 'web'"):
            activation.listen_socket("web")


def test_no_listen_pid_is_empty() -> None:
    with environment(LISTEN_FDS="1"):
        assert activation.listen_fds() == []


def test_listen_fds_start() -> None:
    assert activation.SD_LISTEN_FDS_START == 3


def test_activation_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(activation.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    relative = {name for name in imported if name.startswith(".")}
    assert relative == {".fdnames"}
    assert imported - relative <= set(sys.stdlib_module_names) | {"__future__"}


# --- notify -----------------------------------------------------------------


@contextmanager
def receiver(address: str | bytes) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(10)
        yield sock


def test_notify_a_filesystem_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    with receiver(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        before = own_fds()
        assert activation.notify() is True
        assert own_fds() == before  # the sending socket is closed again
        assert sock.recv(4096) == b"READY=1"
        assert activation.notify("STATUS=serving\nMAINPID=42") is True
        assert sock.recv(4096) == b"STATUS=serving\nMAINPID=42"
    assert os.environ["NOTIFY_SOCKET"] == path


def test_notify_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"zocket-test-{uuid.uuid4().hex}"
    with receiver(b"\0" + name.encode()) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert activation.notify("READY=1", unset_environment=True) is True
        assert sock.recv(4096) == b"READY=1"
    assert "NOTIFY_SOCKET" not in os.environ


@pytest.mark.parametrize("value", [None, ""])
def test_notify_without_a_socket_is_false(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    if value is not None:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    before = own_fds()
    assert activation.notify() is False
    assert activation.notify("READY=1", unset_environment=True) is False
    assert own_fds() == before
    assert "NOTIFY_SOCKET" not in os.environ


@pytest.mark.parametrize("value", ["notify.sock", "run/notify", "vsock:2:1234", "./notify"])
def test_notify_rejects_other_addresses(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    with pytest.raises(ValueError, match="neither an absolute path nor an abstract socket"):
        activation.notify()
    with pytest.raises(ValueError):
        activation.notify(unset_environment=True)
    assert "NOTIFY_SOCKET" not in os.environ


def test_notify_send_errors_propagate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    before = own_fds()
    with pytest.raises(FileNotFoundError):
        activation.notify()
    assert own_fds() == before


key = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=20)
value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=200
)
key_value_lines = st.lists(st.tuples(key, value), max_size=10).map(
    lambda pairs: "\n".join(f"{k}={v}" for k, v in pairs)
)
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=2000)  # no surrogates


@settings(max_examples=200)
@given(state=st.one_of(key_value_lines, any_text))
def test_notify_delivers_any_state_intact(state: str) -> None:
    name = f"zocket-test-{uuid.uuid4().hex}"
    with receiver(b"\0" + name.encode()) as sock, environment(NOTIFY_SOCKET="@" + name):
        assert activation.notify(state) is True
        assert sock.recv(65536) == state.encode("utf-8")
