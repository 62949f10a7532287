"""``zocket.libc`` as another tool's author uses it (issue 13): defaults, errors, types, additions.

The low-level behaviour of each call is in test_libc.py; here is what a
careful user of the public API tripped on: fds that were inheritable by
default, a star import that rebound ``os``, an error attribute mypy could not
see, arguments cffi silently truncated, prctl options that could not be used.
"""

from __future__ import annotations

import errno
import inspect
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import zocket_env
from zocket import libc

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fds() -> Iterator[list[int]]:
    """fds a test opens; all closed at the end."""
    opened: list[int] = []
    yield opened
    for fd in opened:
        try:
            os.close(fd)
        except OSError:
            pass


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=zocket_env(),
        # Not the checkout: `-c` puts the working directory first on sys.path, and the source
        # tree has no compiled module where CI installs zocket instead of building in place.
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# --- close-on-exec by default (PEP 446) -----------------------------------------------------------


def test_every_new_fd_is_close_on_exec_unless_asked(fds: list[int]) -> None:
    sock = libc.socket(libc.AF_INET, libc.SOCK_STREAM)
    fds.append(sock)
    pair = libc.socketpair(libc.AF_UNIX, libc.SOCK_STREAM)
    fds.extend(pair)
    copy = libc.dup(sock)
    fds.append(copy)
    assert libc.get_cloexec(sock) and all(libc.get_cloexec(fd) for fd in pair)
    assert libc.get_cloexec(copy)

    sock2 = libc.socket(libc.AF_INET, libc.SOCK_STREAM | libc.SOCK_NONBLOCK, inheritable=True)
    fds.append(sock2)
    pair2 = libc.socketpair(libc.AF_UNIX, libc.SOCK_STREAM, inheritable=True)
    fds.extend(pair2)
    copy2 = libc.dup(sock, inheritable=True)
    fds.append(copy2)
    assert not libc.get_cloexec(sock2) and libc.get_nonblocking(sock2)
    assert not any(libc.get_cloexec(fd) for fd in (*pair2, copy2))


def test_inheritable_with_sock_cloexec_is_a_contradiction() -> None:
    with pytest.raises(libc.ArgumentError, match="socket: type has SOCK_CLOEXEC"):
        libc.socket(libc.AF_INET, libc.SOCK_STREAM | libc.SOCK_CLOEXEC, inheritable=True)


# --- the module's namespace -----------------------------------------------------------------------


def test_star_import_brings_the_api_and_nothing_else() -> None:
    namespace: dict[str, Any] = {}
    exec("from zocket.libc import *", namespace)  # noqa: S102 - what a user's script does
    for name in ("os", "sys", "ffi", "lib", "struct", "ipaddress", "time", "Any", "dataclass"):
        assert name not in namespace, name
    for name in ("socket", "bind", "LibcError", "ArgumentError", "AF_INET", "SOCK_CLOEXEC",
                 "peercred", "poll", "setsid", "WaitStatus"):  # fmt: skip
        assert name in namespace, name


def test_all_lists_every_public_name_and_only_existing_ones() -> None:
    public = {
        name
        for name, value in vars(libc).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "zocket.libc") == "zocket.libc"
        and (inspect.isfunction(value) or inspect.isclass(value))
    }
    assert public <= set(libc.__all__), public - set(libc.__all__)
    assert all(hasattr(libc, name) for name in libc.__all__)
    assert len(set(libc.__all__)) == len(libc.__all__)


def test_every_constant_is_exported() -> None:
    from zocket import constants

    defined = {name for name in vars(constants) if name.isupper() and not name.startswith("_")}
    assert defined == set(constants.__all__)
    assert defined <= set(libc.__all__)


def test_every_public_function_and_class_has_a_docstring() -> None:
    missing = [
        name
        for name in libc.__all__
        if (inspect.isfunction(getattr(libc, name)) or inspect.isclass(getattr(libc, name)))
        and not inspect.getdoc(getattr(libc, name))
    ]
    assert missing == []


# --- errors ---------------------------------------------------------------------------------------


def test_errors_are_typed_and_still_the_builtin_classes(tmp_path: Path, fds: list[int]) -> None:
    fd = libc.socket(libc.AF_UNIX, libc.SOCK_STREAM)
    fds.append(fd)
    path = str(tmp_path / "missing" / "s")
    try:
        libc.bind(fd, path)
    except FileNotFoundError as exc:  # the builtin class still catches it
        assert isinstance(exc, libc.LibcError) and isinstance(exc, libc.LibcFileNotFoundError)
        assert exc.call == "bind" and exc.errno == errno.ENOENT and exc.filename == path
    else:
        pytest.fail("bind to a missing directory succeeded")
    with pytest.raises(libc.LibcProcessLookupError):
        libc.kill(2**22 + 1, 0)  # above pid_max
    with pytest.raises(libc.LibcChildProcessError):
        libc.waitpid(1)


#: "1" where an int is meant, typed Any: what an untyped caller passes.
A_STR: Any = "1"


@pytest.mark.parametrize(
    "action, call, argument",
    [
        (lambda fd: libc.listen(fd, 2**31), "listen", "backlog"),
        (lambda fd: libc.read(fd, -1), "read", "size"),
        (lambda fd: libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_REUSEADDR, A_STR), "setsockopt",
         "value"),
        (lambda fd: libc.fcntl(fd, libc.F_SETFD, 2**32 + 1), "fcntl", "arg"),
        (lambda fd: libc.bind(fd, ("127.0.0.1", True)), "bind", "port"),
        (lambda fd: libc.bind(fd, ("127.0.0.1", 2**16)), "bind", "port"),
        (lambda fd: libc.kill(2**31, 0), "kill", "pid"),
        (lambda fd: libc.recvmsg_fds(fd, 1, -1), "recvmsg", "maxfds"),
        (lambda fd: libc.getsockname(True), "getsockname", "fd"),
        (lambda fd: libc.close_range(-1), "close_range", "first"),
    ],
    ids=["listen-2**31", "read-negative", "setsockopt-str", "fcntl-2**32+1", "port-bool",
         "port-65536", "kill-2**31", "recvmsg-maxfds", "fd-bool", "close_range-negative"],
)  # fmt: skip
def test_out_of_range_arguments_are_one_error_naming_call_and_argument(
    action: Any, call: str, argument: str, fds: list[int]
) -> None:
    fd = libc.socket(libc.AF_INET, libc.SOCK_STREAM)
    fds.append(fd)
    with pytest.raises(libc.ArgumentError) as info:
        action(fd)
    assert isinstance(info.value, ValueError)
    assert (info.value.call, info.value.argument) == (call, argument)
    assert str(info.value).startswith(f"{call}: {argument} ")
    assert libc.get_cloexec(fd), "nothing reached the kernel (F_SETFD 2**32+1 used to set 1)"


# --- addresses ------------------------------------------------------------------------------------


def test_bind_takes_the_hosts_python_socket_takes(fds: list[int]) -> None:
    for host, family, expected in [
        ("localhost", libc.AF_INET, "127.0.0.1"),
        ("", libc.AF_INET, "0.0.0.0"),
        ("", libc.AF_INET6, "::"),
    ]:
        fd = libc.socket(family, libc.SOCK_STREAM)
        fds.append(fd)
        libc.bind(fd, (host, 0))
        bound_host, port = libc.getsockname_inet(fd)
        assert bound_host == expected and port > 0


def test_getsockname_inet_refuses_a_unix_socket(fds: list[int]) -> None:
    left, right = libc.socketpair(libc.AF_UNIX, libc.SOCK_STREAM)
    fds.extend((left, right))
    with pytest.raises(libc.ArgumentError, match="not an AF_INET or AF_INET6 socket"):
        libc.getsockname_inet(left)


# --- prctl ----------------------------------------------------------------------------------------


def test_prctl_get_pdeathsig_returns_the_signal() -> None:
    result = run_python(
        "from zocket import libc\n"
        "print(libc.prctl(libc.PR_GET_PDEATHSIG))\n"
        "libc.prctl(libc.PR_SET_PDEATHSIG, libc.SIGUSR1)\n"
        "print(libc.prctl(libc.PR_GET_PDEATHSIG))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", str(int(signal.SIGUSR1))]


def test_prctl_set_name_takes_bytes_and_get_process_name_reads_it() -> None:
    seen: dict[str, object] = {}

    def rename() -> None:  # a throwaway thread: the name is the thread's
        seen["ret"] = libc.prctl(libc.PR_SET_NAME, b"zk-user-test")
        seen["name"] = libc.get_process_name()
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "rb") as f:
            seen["comm"] = f.read().strip()

    thread = threading.Thread(target=rename)
    thread.start()
    thread.join(10)
    assert seen == {"ret": 0, "name": b"zk-user-test", "comm": b"zk-user-test"}
    with pytest.raises(libc.ArgumentError, match="get_process_name"):
        libc.prctl(libc.PR_GET_NAME)


# --- what a supervising tool reaches for ----------------------------------------------------------


def test_peercred_of_a_socketpair_is_us(fds: list[int]) -> None:
    left, right = libc.socketpair(libc.AF_UNIX, libc.SOCK_STREAM)
    fds.extend((left, right))
    assert libc.peercred(left) == (os.getpid(), os.getuid(), os.getgid())


def test_poll(fds: list[int]) -> None:
    read_end, write_end = libc.pipe2()
    fds.extend((read_end, write_end))
    assert libc.poll([(read_end, libc.POLLIN)], 0) == []
    assert libc.poll([(write_end, libc.POLLOUT)], 0) == [(write_end, libc.POLLOUT)]
    libc.write(write_end, b"x")
    assert libc.poll([(read_end, libc.POLLIN)], 1.0) == [(read_end, libc.POLLIN)]
    closed = libc.dup(read_end)
    libc.close(closed)
    assert libc.poll([(closed, libc.POLLIN)], 0) == [(closed, libc.POLLNVAL)]
    with pytest.raises(libc.ArgumentError, match="poll: timeout"):
        libc.poll([], -1)


def test_setsid_execve_and_exit_in_a_child() -> None:
    result = run_python(
        "import os\n"
        "from zocket import libc\n"
        "sid = libc.setsid()\n"
        "print(sid == os.getpid() == os.getsid(0), flush=True)\n"
        "libc.execve('/bin/sh', ['sh', '-c', 'echo $ZK; exit 7'], ['ZK=from-execve'])\n"
    )
    assert (result.returncode, result.stdout.split()) == (7, ["True", "from-execve"])
    result = run_python(
        "import atexit\n"
        "from zocket import libc\n"
        "atexit.register(print, 'atexit ran')\n"
        "libc._exit(5)\n"
    )
    assert (result.returncode, result.stdout) == (5, "")


# --- mypy --strict, as a user's script is checked -------------------------------------------------


def test_a_users_script_passes_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")  # in the test extra: present wherever the tests run
    script = REPO / "tests" / "typing_libc_user.py"
    # A config of its own: the user's, not the repository's (which excludes files).
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\n")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--no-incremental",
         "--cache-dir", os.devnull, str(script)],
        cwd=REPO,  # where zocket is importable for mypy, whether installed editable or not
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # And it runs: the script is an example, not only a type-checking fixture.
    result = subprocess.run(
        [sys.executable, str(script)],
        env=zocket_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
