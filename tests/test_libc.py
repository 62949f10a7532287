"""zocket.libc against the real kernel: round trips, flags, fd passing, errors.

Every test makes real syscalls. Where the standard library has a view of the
same thing (socket.getsockname, os.get_inheritable, os.fstat, ...) the
binding's answer is compared with it on the very same fd, so that a wrong
struct layout, byte order or flag shows up as a disagreement.

Hypothesis tests cannot use function-scoped fixtures, so resources are held
in an ``FdScope`` (closes everything it was given) instead. The
``no_fd_leak`` fixture (conftest.py) checks that no test leaks an fd, the
bindings included.
"""

from __future__ import annotations

import errno
import fcntl as std_fcntl
import ipaddress
import os
import signal
import socket as std_socket
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from support import own_fds, wait_readable
from zocket import libc
from zocket._libc import ffi
from zocket.spawn import Child, spawn

pytestmark = pytest.mark.usefixtures("no_fd_leak")

CLOEXEC = libc.SOCK_CLOEXEC
HAS_IPV6 = std_socket.has_ipv6 and os.path.exists("/proc/net/if_inet6")
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 on this host")
quick = settings(max_examples=40, deadline=None)


# --- helpers -------------------------------------------------------------------------------------


FdsT = TypeVar("FdsT", tuple[int, int], list[int])


class FdScope:
    """Raw fds owned by a test; closes them all at the end."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def add(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def add_all(self, fds: FdsT) -> FdsT:
        for fd in fds:
            self.add(fd)
        return fds

    def close(self, fd: int) -> None:
        self._fds.remove(fd)
        libc.close(fd)

    def close_all(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


@contextmanager
def fd_scope() -> Iterator[FdScope]:
    scope = FdScope()
    try:
        yield scope
    finally:
        scope.close_all()


@pytest.fixture
def fds() -> Iterator[FdScope]:
    with fd_scope() as scope:
        yield scope


def python_sockname(fd: int) -> Any:
    """What the socket module says about the same socket."""
    with std_socket.socket(fileno=os.dup(fd)) as sock:
        return sock.getsockname()


def python_getsockopt(fd: int, level: int, option: int) -> int:
    with std_socket.socket(fileno=os.dup(fd)) as sock:
        return sock.getsockopt(level, option)


def wait_child(child: Child, timeout: float = 10.0) -> libc.WaitStatus:
    """Reap ``child`` once it exits; fails (after killing it) if it takes longer than timeout."""
    assert child.pidfd is not None
    if not wait_readable(child.pidfd, timeout):
        libc.kill(child.pid, libc.SIGKILL)
        libc.waitpid(child.pid)
        child.close()
        pytest.fail(f"child {child.pid} still running after {timeout}s")
    pid, status = libc.waitpid(child.pid)
    child.close()
    assert pid == child.pid
    return libc.WaitStatus(status)


def free_pid() -> int:
    """A pid that no process has right now (the highest free one below pid_max)."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    for pid in range(pid_max - 1, 1, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free pid")


def closed_fd() -> int:
    """A valid fd number that is not open (above everything the process has)."""
    fd = libc.fcntl(0, libc.F_DUPFD_CLOEXEC, 900)
    libc.close(fd)
    return fd


# --- constants ---------------------------------------------------------------------------------

STDLIB_CONSTANTS = [
    (std_socket, name)
    for name in (
        "AF_UNSPEC AF_INET AF_INET6 AF_UNIX SOCK_STREAM SOCK_DGRAM SOCK_SEQPACKET SOCK_NONBLOCK "
        "SOCK_CLOEXEC SOL_SOCKET SO_REUSEADDR SO_REUSEPORT SO_ACCEPTCONN SO_TYPE SO_DOMAIN "
        "SO_PROTOCOL SO_ERROR SO_KEEPALIVE SO_RCVBUF SO_SNDBUF SO_PASSCRED SOMAXCONN IPPROTO_TCP "
        "IPPROTO_IPV6 IPV6_V6ONLY TCP_NODELAY TCP_DEFER_ACCEPT SCM_RIGHTS MSG_CMSG_CLOEXEC "
        "MSG_NOSIGNAL MSG_DONTWAIT MSG_CTRUNC MSG_TRUNC SHUT_RD SHUT_WR SHUT_RDWR"
    ).split()
] + [
    (os, name)
    for name in (
        "O_RDONLY O_WRONLY O_RDWR O_APPEND O_NONBLOCK O_CLOEXEC O_DIRECT O_ASYNC O_NOATIME "
        "WNOHANG WUNTRACED WCONTINUED"
    ).split()
] + [
    (std_fcntl, name)
    for name in "F_GETFD F_SETFD F_GETFL F_SETFL F_DUPFD F_DUPFD_CLOEXEC FD_CLOEXEC".split()
] + [
    (signal, name)
    for name in (
        "SIGHUP SIGINT SIGQUIT SIGKILL SIGUSR1 SIGUSR2 SIGPIPE SIGALRM SIGTERM SIGCHLD SIGCONT "
        "SIGSTOP SIGTSTP SIGWINCH SIGXFSZ"
    ).split()
]


@pytest.mark.parametrize(
    ("module", "name"), STDLIB_CONSTANTS, ids=[n for _, n in STDLIB_CONSTANTS]
)
def test_constant_matches_the_standard_library(module: Any, name: str) -> None:
    assert getattr(libc, name) == int(getattr(module, name))


def test_constants_are_plain_ints() -> None:
    for _, name in STDLIB_CONSTANTS:
        assert type(getattr(libc, name)) is int, name


def test_inotify_constants_are_distinct_single_bits() -> None:
    names = (
        "IN_ACCESS IN_MODIFY IN_ATTRIB IN_CLOSE_WRITE IN_CLOSE_NOWRITE IN_OPEN IN_MOVED_FROM "
        "IN_MOVED_TO IN_CREATE IN_DELETE IN_DELETE_SELF IN_MOVE_SELF"
    ).split()
    values = [getattr(libc, n) for n in names]
    assert all(v and v & (v - 1) == 0 for v in values)
    assert len(set(values)) == len(values)
    combined = 0
    for v in values:
        combined |= v
    assert combined == libc.IN_ALL_EVENTS
    assert libc.IN_CLOEXEC == os.O_CLOEXEC and libc.IN_NONBLOCK == os.O_NONBLOCK


def test_prctl_set_name_reaches_the_thread() -> None:
    """PR_SET_NAME (and prctl's variadic pointer argument) on a throwaway thread."""
    name = b"zkt-" + uuid.uuid4().hex[:8].encode()
    result: dict[str, Any] = {}

    def rename() -> None:
        buf = ffi.new("char[]", name)
        result["ret"] = libc.prctl(libc.PR_SET_NAME, int(ffi.cast("uintptr_t", buf)))
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "rb") as f:
            result["comm"] = f.read().strip()

    thread = threading.Thread(target=rename)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert result == {"ret": 0, "comm": name}


def test_prctl_get_child_subreaper_returns_what_the_kernel_writes_through_arg2() -> None:
    assert libc.prctl(libc.PR_GET_CHILD_SUBREAPER) in (0, 1)
    with pytest.raises(libc.ArgumentError, match="prctl: arg2"):
        libc.prctl(libc.PR_GET_CHILD_SUBREAPER, 1)


def test_process_ids_match_os() -> None:
    assert libc.getpid() == os.getpid()
    assert libc.getppid() == os.getppid()
    assert libc.getpgid(0) == os.getpgid(0)
    assert libc.getpgid(os.getpid()) == os.getpgrp()
    libc.kill(os.getpid(), 0)  # exists, no signal sent


# --- addresses: bind, then ask the kernel --------------------------------------------------------

ports = st.one_of(st.just(0), st.integers(1024, 65535))
socket_kinds = st.sampled_from([libc.SOCK_STREAM, libc.SOCK_DGRAM])


def bind_or_discard(fd: int, address: Any) -> None:
    """bind, discarding the example when the random port is taken."""
    try:
        libc.bind(fd, address)
    except OSError as exc:
        assume(exc.errno != errno.EADDRINUSE)
        raise


@st.composite
def loopback4_hosts(draw: Any) -> str:
    if draw(st.booleans()):
        return "127.0.0.1"
    return f"127.{draw(st.integers(0, 255))}.{draw(st.integers(0, 255))}.{draw(st.integers(1, 254))}"


@st.composite
def loopback6_spellings(draw: Any) -> str:
    """Every way of writing ::1: zero padding per group, any run of zeros compressed."""
    groups = ["0" * draw(st.integers(1, 4)) for _ in range(7)]
    groups.append("1".rjust(draw(st.integers(1, 4)), "0"))
    if draw(st.booleans()):
        start = draw(st.integers(0, 6))
        end = draw(st.integers(start + 1, 7))
        return ":".join(groups[:start]) + "::" + ":".join(groups[end:])
    return ":".join(groups)


@quick
@given(host=loopback4_hosts(), port=ports, kind=socket_kinds)
def test_bind_ipv4_round_trip(host: str, port: int, kind: int) -> None:
    with fd_scope() as scope:
        fd = scope.add(libc.socket(libc.AF_INET, kind | CLOEXEC))
        bind_or_discard(fd, (host, port))
        got = libc.getsockname(fd)
        assert got[0] == host
        assert isinstance(got[1], int)
        assert got[1] == port if port else 1024 <= got[1] <= 65535
        assert got == python_sockname(fd)


@needs_ipv6
@quick
@given(
    host=loopback6_spellings(),
    port=ports,
    kind=socket_kinds,
    four_tuple=st.booleans(),
)
def test_bind_ipv6_loopback_spellings_normalise(
    host: str, port: int, kind: int, four_tuple: bool
) -> None:
    assert ipaddress.IPv6Address(host) == ipaddress.IPv6Address("::1")  # the strategy's promise
    with fd_scope() as scope:
        fd = scope.add(libc.socket(libc.AF_INET6, kind | CLOEXEC))
        bind_or_discard(fd, (host, port, 0, 0) if four_tuple else (host, port))
        got = libc.getsockname(fd)
        assert len(got) == 4
        assert got[0] == "::1"
        assert isinstance(got[1], int)
        assert got[1] == port if port else got[1] > 0
        assert got[2:] == (0, 0)
        assert got == python_sockname(fd)


@needs_ipv6
@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "0:0:0:0:0:ffff:127.0.0.1", "::ffff:7f00:1"])
def test_bind_ipv4_mapped_address_matches_socket_module(host: str, fds: FdScope) -> None:
    fd = fds.add(libc.socket(libc.AF_INET6, libc.SOCK_STREAM | CLOEXEC))
    libc.bind(fd, (host, 0))
    assert libc.getsockname(fd) == python_sockname(fd)


def safe_names() -> st.SearchStrategy[str]:
    alphabet = st.characters(codec="utf-8", blacklist_characters="/\0")  # no surrogates
    return st.text(alphabet, min_size=1, max_size=30).filter(lambda s: s not in (".", ".."))


@quick
@given(name=safe_names(), kind=socket_kinds, as_bytes=st.booleans())
def test_bind_unix_path_round_trip(name: str, kind: int, as_bytes: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp, fd_scope() as scope:
        path = os.path.join(tmp, name)
        assume(len(os.fsencode(path)) <= 107)
        fd = scope.add(libc.socket(libc.AF_UNIX, kind | CLOEXEC))
        libc.bind(fd, os.fsencode(path) if as_bytes else path)
        assert os.path.exists(path)
        got = libc.getsockname(fd)
        assert got == path
        assert got == python_sockname(fd)


def test_bind_unix_path_at_the_length_limit(tmp_path: Path, fds: FdScope) -> None:
    room = 107 - len(os.fsencode(str(tmp_path))) - 1
    if room < 1:
        pytest.skip("tmp_path too long")
    path = str(tmp_path / ("p" * room))
    assert len(os.fsencode(path)) == 107
    fd = fds.add(libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    libc.bind(fd, path)
    assert libc.getsockname(fd) == path == python_sockname(fd)
    other = fds.add(libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    with pytest.raises(OSError) as info:
        libc.bind(other, path + "q")
    assert info.value.errno == errno.ENAMETOOLONG
    assert info.value.call == "bind"  # type: ignore[attr-defined]


@quick
@given(suffix=st.binary(max_size=60), kind=socket_kinds, as_str=st.booleans())
def test_bind_abstract_round_trip(suffix: bytes, kind: int, as_str: bool) -> None:
    name = b"\0zocket-test-" + uuid.uuid4().hex.encode() + suffix
    with fd_scope() as scope:
        fd = scope.add(libc.socket(libc.AF_UNIX, kind | CLOEXEC))
        libc.bind(fd, os.fsdecode(name) if as_str else name)
        got = libc.getsockname(fd)
        assert got == name
        assert isinstance(got, bytes)
        assert got == python_sockname(fd)


def test_abstract_name_length_limit(fds: FdScope) -> None:
    base = b"\0zocket-test-" + uuid.uuid4().hex.encode()
    longest = base + b"x" * (108 - len(base))
    fd = fds.add(libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    libc.bind(fd, longest)
    assert libc.getsockname(fd) == longest
    other = fds.add(libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    with pytest.raises(OSError) as info:
        libc.bind(other, longest + b"x")
    assert info.value.errno == errno.ENAMETOOLONG


def test_unnamed_unix_sockets(fds: FdScope) -> None:
    left, right = fds.add_all(libc.socketpair(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    assert libc.getsockname(left) == python_sockname(left)
    assert libc.getpeername(left) == libc.getsockname(right)
    unbound = fds.add(libc.socket(libc.AF_UNIX, libc.SOCK_DGRAM | CLOEXEC))
    assert libc.getsockname(unbound) == python_sockname(unbound)


def test_bad_addresses_are_refused_before_the_kernel(fds: FdScope) -> None:
    v4 = fds.add(libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC))
    with pytest.raises(libc.ArgumentError, match="not an IPv4 address"):
        libc.bind(v4, ("::1", 0))
    with pytest.raises(libc.ArgumentError, match="bind: port must be 0 to 65535"):
        libc.bind(v4, ("127.0.0.1", 65536))
    with pytest.raises(libc.ArgumentError, match="bind: port"):
        libc.bind(v4, ("127.0.0.1", -1))
    with pytest.raises(libc.ArgumentError, match="not an IPv6 address"):
        libc.bind(v4, ("127.0.0.1", 0), libc.AF_INET6)
    with pytest.raises(libc.ArgumentError, match="AF_UNIX"):
        libc.bind(v4, 1234, libc.AF_UNIX)  # type: ignore[arg-type]
    assert libc.getsockname(v4) == ("0.0.0.0", 0)  # nothing was bound


# --- socket options --------------------------------------------------------------------------------

BOOLEAN_OPTIONS = [
    ("SO_REUSEADDR", libc.AF_INET, libc.SOL_SOCKET, libc.SO_REUSEADDR),
    ("SO_REUSEPORT", libc.AF_INET, libc.SOL_SOCKET, libc.SO_REUSEPORT),
    ("SO_KEEPALIVE", libc.AF_INET, libc.SOL_SOCKET, libc.SO_KEEPALIVE),
    ("TCP_NODELAY", libc.AF_INET, libc.IPPROTO_TCP, libc.TCP_NODELAY),
    ("SO_PASSCRED", libc.AF_UNIX, libc.SOL_SOCKET, libc.SO_PASSCRED),
]
if HAS_IPV6:
    BOOLEAN_OPTIONS.append(("IPV6_V6ONLY", libc.AF_INET6, libc.IPPROTO_IPV6, libc.IPV6_V6ONLY))


@quick
@given(
    option=st.sampled_from(BOOLEAN_OPTIONS),
    values=st.lists(st.one_of(st.booleans(), st.integers(-(2**31), 2**31 - 1)), min_size=1),
)
def test_boolean_options_round_trip(option: Any, values: list[int]) -> None:
    _, family, level, name = option
    with fd_scope() as scope:
        fd = scope.add(libc.socket(family, libc.SOCK_STREAM | CLOEXEC))
        for value in values:
            libc.setsockopt(fd, level, name, value)
            got = libc.getsockopt(fd, level, name)
            assert got == (1 if value else 0)
            assert got == python_getsockopt(fd, level, name)


@quick
@given(
    option=st.sampled_from([libc.SO_RCVBUF, libc.SO_SNDBUF]),
    size=st.integers(0, 1 << 22),
    kind=st.sampled_from([libc.SOCK_STREAM, libc.SOCK_DGRAM]),
)
def test_buffer_sizes_round_trip(option: int, size: int, kind: int) -> None:
    limit_file = "rmem_max" if option == libc.SO_RCVBUF else "wmem_max"
    with open(f"/proc/sys/net/core/{limit_file}") as f:
        limit = int(f.read())
    with fd_scope() as scope:
        fd = scope.add(libc.socket(libc.AF_INET, kind | CLOEXEC))
        libc.setsockopt(fd, libc.SOL_SOCKET, option, size)
        got = libc.getsockopt(fd, libc.SOL_SOCKET, option)
        assert got == python_getsockopt(fd, libc.SOL_SOCKET, option)
        if 8192 <= size <= limit:
            assert got == 2 * size  # the kernel doubles it, for its bookkeeping
        assert 0 < got <= 2 * max(size, limit, 8192)


@pytest.mark.parametrize(
    ("family", "kind"),
    [
        (libc.AF_INET, libc.SOCK_STREAM),
        (libc.AF_INET, libc.SOCK_DGRAM),
        (libc.AF_UNIX, libc.SOCK_STREAM),
        (libc.AF_UNIX, libc.SOCK_DGRAM),
        (libc.AF_UNIX, libc.SOCK_SEQPACKET),
        pytest.param(libc.AF_INET6, libc.SOCK_STREAM, marks=needs_ipv6),
    ],
)
def test_read_only_options_describe_the_socket(family: int, kind: int, fds: FdScope) -> None:
    fd = fds.add(libc.socket(family, kind | CLOEXEC))
    assert libc.getsockopt(fd, libc.SOL_SOCKET, libc.SO_DOMAIN) == family
    assert libc.getsockopt(fd, libc.SOL_SOCKET, libc.SO_TYPE) == kind
    assert libc.getsockopt(fd, libc.SOL_SOCKET, libc.SO_ERROR) == 0
    raw = libc.getsockopt_bytes(fd, libc.SOL_SOCKET, libc.SO_TYPE, 64)
    assert len(raw) == struct.calcsize("i")
    assert struct.unpack("i", raw)[0] == kind
    if kind != libc.SOCK_DGRAM:
        assert libc.getsockopt(fd, libc.SOL_SOCKET, libc.SO_ACCEPTCONN) == 0
        if family != libc.AF_UNIX:
            libc.bind(fd, ("127.0.0.1", 0) if family == libc.AF_INET else ("::1", 0))
        else:
            libc.bind(fd, "\0zocket-test-" + uuid.uuid4().hex)
        libc.listen(fd, 8)
        assert libc.getsockopt(fd, libc.SOL_SOCKET, libc.SO_ACCEPTCONN) == 1


def test_setsockopt_accepts_bytes(fds: FdScope) -> None:
    fd = fds.add(libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC))
    libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_KEEPALIVE, struct.pack("i", 1))
    assert libc.getsockopt(fd, libc.SOL_SOCKET, libc.SO_KEEPALIVE) == 1
    libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_KEEPALIVE, struct.pack("i", 0))
    assert python_getsockopt(fd, libc.SOL_SOCKET, libc.SO_KEEPALIVE) == 0


# --- fd flags ----------------------------------------------------------------------------------------


def make_fd(kind: str, scope: FdScope) -> int:
    if kind == "pipe":
        read_end, write_end = scope.add_all(libc.pipe2())
        return read_end
    if kind == "socket":
        return scope.add(libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC))
    if kind == "devnull":
        return scope.add(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
    if kind == "append":
        return scope.add(os.open(os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
    raise AssertionError(kind)


fd_kinds = st.sampled_from(["pipe", "socket", "devnull", "append"])


@quick
@given(kind=fd_kinds, steps=st.lists(st.tuples(st.sampled_from(["cloexec", "nonblocking"]), st.booleans()), min_size=1, max_size=12))
def test_fd_flag_round_trips(kind: str, steps: list[tuple[str, bool]]) -> None:
    with fd_scope() as scope:
        fd = make_fd(kind, scope)
        other_fl = libc.fcntl(fd, libc.F_GETFL) & ~libc.O_NONBLOCK
        cloexec, nonblocking = True, False
        for flag, value in steps:
            if flag == "cloexec":
                libc.set_cloexec(fd, value)
                cloexec = value
            else:
                libc.set_nonblocking(fd, value)
                nonblocking = value
            assert libc.get_cloexec(fd) is cloexec
            assert os.get_inheritable(fd) is not cloexec
            assert libc.get_nonblocking(fd) is nonblocking
            assert os.get_blocking(fd) is not nonblocking
            assert libc.fcntl(fd, libc.F_GETFL) & ~libc.O_NONBLOCK == other_fl


def test_set_defaults_are_true(fds: FdScope) -> None:
    read_end, _ = fds.add_all(libc.pipe2(0))
    assert not libc.get_cloexec(read_end) and not libc.get_nonblocking(read_end)
    libc.set_cloexec(read_end)
    libc.set_nonblocking(read_end)
    assert libc.get_cloexec(read_end) and libc.get_nonblocking(read_end)


def test_nonblocking_is_shared_by_dups_cloexec_is_not(fds: FdScope) -> None:
    read_end, _ = fds.add_all(libc.pipe2())
    copy = fds.add(libc.dup(read_end, inheritable=True))
    assert libc.get_cloexec(read_end) and not libc.get_cloexec(copy)
    libc.set_nonblocking(read_end, True)
    assert libc.get_nonblocking(copy)
    libc.set_cloexec(copy, True)
    libc.set_cloexec(read_end, False)
    assert libc.get_cloexec(copy) and not libc.get_cloexec(read_end)
    assert os.fstat(copy).st_ino == os.fstat(read_end).st_ino


def test_dup_variants(fds: FdScope) -> None:
    read_end, write_end = fds.add_all(libc.pipe2())
    target = fds.add(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    assert libc.dup2(read_end, target) == target
    assert not libc.get_cloexec(target)  # dup2 onto another number clears it
    assert os.fstat(target).st_ino == os.fstat(read_end).st_ino
    assert libc.dup3(write_end, target, libc.O_CLOEXEC) == target
    assert libc.get_cloexec(target)
    assert os.fstat(target).st_ino == os.fstat(write_end).st_ino
    assert libc.dup2(target, target, inheritable=False) == target
    assert libc.get_cloexec(target)
    assert libc.dup2(target, target) == target
    assert not libc.get_cloexec(target)  # C's dup2 would leave it: set by hand (documented)
    with pytest.raises(OSError) as info:
        libc.dup3(target, target, libc.O_CLOEXEC)
    assert info.value.errno == errno.EINVAL and info.value.call == "dup3"  # type: ignore[attr-defined]
    high = fds.add(libc.fcntl(read_end, libc.F_DUPFD_CLOEXEC, 700))
    assert high >= 700 and libc.get_cloexec(high)


def free_block(size: int, start: int = 600) -> int:
    """The first number >= start with ``size`` unused fd numbers from there."""
    opened = own_fds()
    first = start
    while any(n in opened for n in range(first, first + size)):
        first += size
    return first


@quick
@given(data=st.data())
def test_close_range(data: Any) -> None:
    with fd_scope() as scope:
        base = free_block(12)
        source = make_fd("devnull", scope)
        numbers = list(range(base, base + 12))
        for n in numbers:
            libc.dup3(source, n, libc.O_CLOEXEC if data.draw(st.booleans()) else 0)
            scope.add(n)
        first = data.draw(st.sampled_from(numbers))
        last = data.draw(st.sampled_from([n for n in numbers if n >= first]))
        flags = data.draw(st.sampled_from([0, libc.CLOSE_RANGE_CLOEXEC]))
        before = {n: libc.get_cloexec(n) for n in numbers}
        libc.close_range(first, last, flags)
        for n in numbers:
            inside = first <= n <= last
            if inside and not flags:
                with pytest.raises(OSError) as info:
                    os.fstat(n)
                assert info.value.errno == errno.EBADF
                scope._fds.remove(n)
            else:
                assert libc.get_cloexec(n) is (True if inside else before[n])


# --- pipes, read, write -------------------------------------------------------------------------------


@quick
@given(chunks=st.lists(st.binary(max_size=4096), max_size=8))
def test_pipe_round_trip(chunks: list[bytes]) -> None:
    with fd_scope() as scope:
        read_end, write_end = scope.add_all(libc.pipe2())
        assert libc.get_cloexec(read_end) and libc.get_cloexec(write_end)
        for chunk in chunks:
            assert libc.write(write_end, chunk) == len(chunk)
        scope.close(write_end)
        received = b""
        while True:
            data = libc.read(read_end, 1000)
            if not data:
                break
            assert len(data) <= 1000
            received += data
        assert received == b"".join(chunks)


def test_pipe2_flags(fds: FdScope) -> None:
    read_end, write_end = fds.add_all(libc.pipe2(libc.O_NONBLOCK))
    assert not libc.get_cloexec(read_end) and libc.get_nonblocking(write_end)
    with pytest.raises(BlockingIOError) as info:
        libc.read(read_end, 10)
    assert info.value.errno == errno.EAGAIN and info.value.call == "read"  # type: ignore[attr-defined]
    assert libc.read(read_end, 0) == b""


def test_write_without_reader_is_broken_pipe(fds: FdScope) -> None:
    read_end, write_end = fds.add_all(libc.pipe2())
    fds.close(read_end)
    with pytest.raises(BrokenPipeError) as info:
        libc.write(write_end, b"x")  # Python ignores SIGPIPE
    assert info.value.call == "write"  # type: ignore[attr-defined]


# --- SCM_RIGHTS ------------------------------------------------------------------------------------

passable_kinds = st.sampled_from(["pipe_r", "pipe_w", "socket", "devnull", "tmpfile"])


def make_passable(kind: str, scope: FdScope, tmp: str) -> int:
    if kind in ("pipe_r", "pipe_w"):
        read_end, write_end = scope.add_all(libc.pipe2())
        return read_end if kind == "pipe_r" else write_end
    if kind == "socket":
        return scope.add(libc.socket(libc.AF_INET, libc.SOCK_DGRAM | CLOEXEC))
    if kind == "devnull":
        return scope.add(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    handle, _ = tempfile.mkstemp(dir=tmp)
    return scope.add(handle)


def identity(fd: int) -> tuple[int, int]:
    st_ = os.fstat(fd)
    return st_.st_dev, st_.st_ino


@quick
@given(
    kinds=st.lists(passable_kinds, min_size=1, max_size=20),
    data=st.binary(min_size=1, max_size=2000),
    family_type=st.sampled_from([libc.SOCK_STREAM, libc.SOCK_SEQPACKET, libc.SOCK_DGRAM]),
)
def test_scm_rights_round_trip(kinds: list[str], data: bytes, family_type: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, fd_scope() as scope:
        sent = [make_passable(kind, scope, tmp) for kind in kinds]
        left, right = scope.add_all(libc.socketpair(libc.AF_UNIX, family_type | CLOEXEC))
        assert libc.sendmsg_fds(left, data, sent) == len(data)
        got, received, flags = libc.recvmsg_fds(right, len(data) + 10, len(sent))
        scope.add_all(received)
        assert got == data
        assert not flags & (libc.MSG_CTRUNC | libc.MSG_TRUNC)
        assert len(received) == len(sent)
        assert not set(received) & set(sent)  # new numbers in this process
        assert [identity(fd) for fd in received] == [identity(fd) for fd in sent]
        assert all(libc.get_cloexec(fd) for fd in received)


def test_scm_rights_without_cmsg_cloexec_are_inheritable(fds: FdScope) -> None:
    read_end, _ = fds.add_all(libc.pipe2())
    left, right = fds.add_all(libc.socketpair(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    libc.sendmsg_fds(left, b"!", [read_end])
    data, received, _ = libc.recvmsg_fds(right, 1, 1, flags=0)
    fds.add_all(received)
    assert data == b"!" and len(received) == 1
    assert not libc.get_cloexec(received[0])


def test_scm_rights_data_only(fds: FdScope) -> None:
    left, right = fds.add_all(libc.socketpair(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    assert libc.sendmsg_fds(left, b"plain", []) == 5
    data, received, flags = libc.recvmsg_fds(right, 100, 4)
    assert (data, received) == (b"plain", [])
    assert not flags & (libc.MSG_CTRUNC | libc.MSG_TRUNC)
    with pytest.raises(ValueError):
        libc.sendmsg_fds(left, b"", [left])


@quick
@given(count=st.integers(2, 20), data=st.data())
def test_scm_rights_truncation_keeps_a_prefix(count: int, data: Any) -> None:
    """What holds whatever the control-buffer rounding: a prefix arrives, a cut is flagged.

    (That no more than maxfds arrive is test_recvmsg_fds_honours_maxfds.)
    """
    maxfds = data.draw(st.integers(1, count - 1))
    with tempfile.TemporaryDirectory() as tmp, fd_scope() as scope:
        sent = [make_passable("devnull" if i % 2 else "pipe_r", scope, tmp) for i in range(count)]
        left, right = scope.add_all(libc.socketpair(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
        libc.sendmsg_fds(left, b"x", sent)
        got, received, flags = libc.recvmsg_fds(right, 10, maxfds)
        scope.add_all(received)  # the surplus was closed by the kernel: no leak to check
        assert got == b"x"
        assert 1 <= len(received) <= count
        assert bool(flags & libc.MSG_CTRUNC) is (len(received) < count)
        assert [identity(fd) for fd in received] == [identity(fd) for fd in sent[: len(received)]]


@pytest.mark.parametrize(("maxfds", "sent_count"), [(1, 2), (3, 4), (0, 1)])
def test_recvmsg_fds_honours_maxfds(maxfds: int, sent_count: int, fds: FdScope) -> None:
    sent = [fds.add(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)) for _ in range(sent_count)]
    left, right = fds.add_all(libc.socketpair(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    libc.sendmsg_fds(left, b"x", sent)
    _, received, flags = libc.recvmsg_fds(right, 10, maxfds)
    fds.add_all(received)
    assert len(received) <= maxfds
    assert flags & libc.MSG_CTRUNC


# --- listen, connect, accept4 ---------------------------------------------------------------------


def listener(family: int, scope: FdScope, tmp: str) -> int:
    fd = scope.add(libc.socket(family, libc.SOCK_STREAM | CLOEXEC))
    if family == libc.AF_INET:
        libc.bind(fd, ("127.0.0.1", 0))
    elif family == libc.AF_INET6:
        libc.bind(fd, ("::1", 0))
    else:
        libc.bind(fd, os.path.join(tmp, "listen.sock"))
    libc.listen(fd, 16)
    return fd


families = [libc.AF_INET, libc.AF_UNIX] + ([libc.AF_INET6] if HAS_IPV6 else [])


@quick
@given(
    family=st.sampled_from(families),
    flags=st.sampled_from([0, CLOEXEC, libc.SOCK_NONBLOCK, CLOEXEC | libc.SOCK_NONBLOCK]),
    payload=st.binary(min_size=1, max_size=1000),
)
def test_accept4_returns_the_peer(family: int, flags: int, payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp, fd_scope() as scope:
        server = listener(family, scope, tmp)
        client = scope.add(libc.socket(family, libc.SOCK_STREAM | CLOEXEC))
        libc.connect(client, libc.getsockname(server))
        conn, peer = libc.accept4(server, flags)
        scope.add(conn)
        assert peer == libc.getsockname(client)
        assert libc.getpeername(conn) == peer
        assert libc.getpeername(client) == libc.getsockname(conn)
        assert libc.get_cloexec(conn) is bool(flags & CLOEXEC)
        assert libc.get_nonblocking(conn) is bool(flags & libc.SOCK_NONBLOCK)
        assert libc.write(client, payload) == len(payload)
        libc.shutdown(client, libc.SHUT_WR)
        received = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert wait_readable(conn, 5)
            chunk = libc.read(conn, 4096)
            if not chunk:
                break
            received += chunk
        assert received == payload


def test_accept4_default_is_cloexec_and_nonblocking_listener_says_eagain(
    tmp_path: Path, fds: FdScope
) -> None:
    server = listener(libc.AF_INET, fds, str(tmp_path))
    libc.set_nonblocking(server)
    with pytest.raises(BlockingIOError) as info:
        libc.accept4(server)
    assert info.value.call == "accept4"  # type: ignore[attr-defined]
    client = fds.add(libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC))
    libc.connect(client, libc.getsockname(server))
    assert wait_readable(server, 5)
    conn, _ = libc.accept4(server)
    fds.add(conn)
    assert libc.get_cloexec(conn) and not libc.get_nonblocking(conn)


def test_connect_refused(fds: FdScope) -> None:
    bound = fds.add(libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC))
    libc.bind(bound, ("127.0.0.1", 0))  # bound, not listening: refuses
    client = fds.add(libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC))
    with pytest.raises(ConnectionRefusedError) as info:
        libc.connect(client, libc.getsockname(bound))
    assert info.value.call == "connect"  # type: ignore[attr-defined]


# --- inotify -------------------------------------------------------------------------------------


def collect_events(
    fd: int, done: Callable[[list[libc.InotifyEvent]], bool], timeout: float = 5.0
) -> list[libc.InotifyEvent]:
    events: list[libc.InotifyEvent] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if wait_readable(fd, remaining):
            events.extend(libc.read_inotify_events(fd))
    return events


WATCH = (
    libc.IN_CREATE
    | libc.IN_MODIFY
    | libc.IN_CLOSE_WRITE
    | libc.IN_MOVED_FROM
    | libc.IN_MOVED_TO
    | libc.IN_DELETE
)


def test_inotify_sees_create_modify_rename_delete(tmp_path: Path, fds: FdScope) -> None:
    ino = fds.add(libc.inotify_init1())
    assert libc.get_cloexec(ino) and libc.get_nonblocking(ino)
    assert libc.read_inotify_events(ino) == []  # nothing pending, non-blocking
    wd = libc.inotify_add_watch(ino, str(tmp_path), WATCH)
    assert wd >= 1
    (tmp_path / "a.txt").write_bytes(b"hello")
    os.rename(tmp_path / "a.txt", tmp_path / "b.txt")
    os.mkdir(tmp_path / "sub")
    os.unlink(tmp_path / "b.txt")
    expected = [
        (libc.IN_CREATE, "a.txt"),
        (libc.IN_MODIFY, "a.txt"),
        (libc.IN_CLOSE_WRITE, "a.txt"),
        (libc.IN_MOVED_FROM, "a.txt"),
        (libc.IN_MOVED_TO, "b.txt"),
        (libc.IN_CREATE | libc.IN_ISDIR, "sub"),
        (libc.IN_DELETE, "b.txt"),
    ]
    events = collect_events(ino, lambda ev: len(ev) >= len(expected))
    assert [(e.mask, e.name) for e in events] == expected
    assert all(e.wd == wd for e in events)
    moved_from, moved_to = events[3], events[4]
    assert moved_from.cookie == moved_to.cookie != 0
    assert [e.cookie for e in events if e not in (moved_from, moved_to)] == [0] * 5
    assert libc.read_inotify_events(ino) == []
    libc.inotify_rm_watch(ino, wd)
    ignored = collect_events(ino, lambda ev: bool(ev))
    assert [(e.wd, e.mask) for e in ignored] == [(wd, libc.IN_IGNORED)]


@settings(max_examples=25, deadline=None)
@given(names=st.lists(safe_names(), min_size=1, max_size=10, unique=True))
def test_inotify_reports_every_created_name(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp, fd_scope() as scope:
        ino = scope.add(libc.inotify_init1())
        libc.inotify_add_watch(ino, tmp, libc.IN_CREATE | libc.IN_CLOSE_WRITE)
        for name in names:
            os.close(os.open(os.path.join(tmp, name), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC))
        expected = [(m, n) for n in names for m in (libc.IN_CREATE, libc.IN_CLOSE_WRITE)]
        events = collect_events(ino, lambda ev: len(ev) >= len(expected))
        assert [(e.mask, e.name) for e in events] == expected


def test_blocking_inotify_read_waits_for_an_event(tmp_path: Path, fds: FdScope) -> None:
    ino = fds.add(libc.inotify_init1(libc.IN_CLOEXEC))
    assert not libc.get_nonblocking(ino)
    libc.inotify_add_watch(ino, str(tmp_path), libc.IN_CREATE)
    (tmp_path / "x").touch()
    assert wait_readable(ino, 5)
    assert [(e.mask, e.name) for e in libc.read_inotify_events(ino)] == [(libc.IN_CREATE, "x")]


@st.composite
def raw_events(draw: Any) -> tuple[bytes, list[libc.InotifyEvent]]:
    blob = b""
    events = []
    for _ in range(draw(st.integers(0, 8))):
        wd = draw(st.integers(-(2**31), 2**31 - 1))
        mask = draw(st.integers(0, 2**32 - 1))
        cookie = draw(st.integers(0, 2**32 - 1))
        name = draw(st.one_of(st.just(""), safe_names()))
        encoded = os.fsencode(name)
        padded = encoded + b"\0" * draw(st.integers(0 if not encoded else 1, 8))
        blob += struct.pack("=iIII", wd, mask, cookie, len(padded)) + padded
        events.append(libc.InotifyEvent(wd, mask, cookie, name))
    return blob, events


@given(raw=raw_events())
def test_parse_inotify_events_round_trip(raw: tuple[bytes, list[libc.InotifyEvent]]) -> None:
    blob, events = raw
    assert libc.parse_inotify_events(blob) == events


# --- EINTR -------------------------------------------------------------------------------------------


@contextmanager
def alarms(handler: Callable[[int, Any], None], first: float = 0.1, every: float = 0.05) -> Iterator[None]:
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, first, every)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def later(delay: float, action: Callable[[], object]) -> Iterator[threading.Event]:
    """Run ``action`` on a thread after ``delay`` (or when the yielded event is set).

    The thread blocks SIGALRM so that every alarm interrupts the main thread.
    """
    go = threading.Event()

    def run() -> None:
        go.wait(delay)
        action()

    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    try:
        yield go
    finally:
        go.set()
        thread.join(10)
        assert not thread.is_alive()


class Interrupted(Exception):
    pass


def test_accept4_is_retried_after_a_quiet_signal_handler(tmp_path: Path, fds: FdScope) -> None:
    server = listener(libc.AF_INET, fds, str(tmp_path))
    address = libc.getsockname(server)
    calls: list[float] = []
    client_box: list[int] = []

    def connect() -> None:
        client = libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC)
        client_box.append(client)
        libc.connect(client, address)

    try:
        start = time.monotonic()
        with later(0.5, connect), alarms(lambda signum, frame: calls.append(time.monotonic())):
            conn, peer = libc.accept4(server)
            returned = time.monotonic()
        fds.add(conn)
        assert peer == libc.getsockname(client_box[0])
        assert returned - start >= 0.45
        assert calls and calls[0] < returned  # the handler ran while accept4 was blocked
    finally:
        fds.add_all(client_box)


def test_read_is_retried_after_a_quiet_signal_handler(fds: FdScope) -> None:
    read_end, write_end = fds.add_all(libc.pipe2())
    calls: list[int] = []
    with later(0.5, lambda: libc.write(write_end, b"late")), alarms(lambda s, f: calls.append(s)):
        data = libc.read(read_end, 100)
    assert data == b"late"
    assert len(calls) >= 2


def test_a_raising_signal_handler_propagates_out_of_accept4(tmp_path: Path, fds: FdScope) -> None:
    server = listener(libc.AF_INET, fds, str(tmp_path))
    address = libc.getsockname(server)
    client_box: list[int] = []

    def fallback_connect() -> None:  # unblocks accept4 if the signal is swallowed
        client = libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC)
        client_box.append(client)
        libc.connect(client, address)

    def raiser(signum: int, frame: Any) -> None:
        raise Interrupted

    try:
        start = time.monotonic()
        with later(5.0, fallback_connect), alarms(raiser, every=0):
            with pytest.raises(Interrupted):
                libc.accept4(server)
        assert time.monotonic() - start < 4.0  # it was the signal, not the fallback
    finally:
        fds.add_all(client_box)


def test_a_raising_signal_handler_propagates_out_of_read(fds: FdScope) -> None:
    read_end, write_end = fds.add_all(libc.pipe2())

    def raiser(signum: int, frame: Any) -> None:
        raise Interrupted

    start = time.monotonic()
    with later(5.0, lambda: libc.write(write_end, b"x")), alarms(raiser, every=0):
        with pytest.raises(Interrupted):
            libc.read(read_end, 1)
    assert time.monotonic() - start < 4.0


# --- error paths -------------------------------------------------------------------------------------

# (call name, exception type, errno, action given a closed fd number and an FdScope)
ERROR_CASES: list[tuple[str, type[OSError], int, Callable[[int, FdScope], Any]]] = [
    ("setsockopt", OSError, errno.EBADF, lambda bad, s: libc.setsockopt(bad, libc.SOL_SOCKET, libc.SO_REUSEADDR, 1)),
    ("getsockopt", OSError, errno.EBADF, lambda bad, s: libc.getsockopt(bad, libc.SOL_SOCKET, libc.SO_TYPE)),
    ("getsockopt", OSError, errno.EBADF, lambda bad, s: libc.getsockopt_bytes(bad, libc.SOL_SOCKET, libc.SO_TYPE, 4)),
    ("bind", OSError, errno.EBADF, lambda bad, s: libc.bind(bad, ("127.0.0.1", 0), libc.AF_INET)),
    ("listen", OSError, errno.EBADF, lambda bad, s: libc.listen(bad, 1)),
    ("accept4", OSError, errno.EBADF, lambda bad, s: libc.accept4(bad)),
    ("connect", OSError, errno.EBADF, lambda bad, s: libc.connect(bad, ("127.0.0.1", 1), libc.AF_INET)),
    ("getsockname", OSError, errno.EBADF, lambda bad, s: libc.getsockname(bad)),
    ("getpeername", OSError, errno.EBADF, lambda bad, s: libc.getpeername(bad)),
    ("shutdown", OSError, errno.EBADF, lambda bad, s: libc.shutdown(bad, libc.SHUT_RDWR)),
    ("sendmsg", OSError, errno.EBADF, lambda bad, s: libc.sendmsg_fds(bad, b"x", [0])),
    ("recvmsg", OSError, errno.EBADF, lambda bad, s: libc.recvmsg_fds(bad, 1, 1)),
    ("fcntl", OSError, errno.EBADF, lambda bad, s: libc.fcntl(bad, libc.F_GETFD)),
    ("fcntl", OSError, errno.EBADF, lambda bad, s: libc.get_cloexec(bad)),
    ("fcntl", OSError, errno.EBADF, lambda bad, s: libc.set_cloexec(bad, True)),
    ("fcntl", OSError, errno.EBADF, lambda bad, s: libc.get_nonblocking(bad)),
    ("fcntl", OSError, errno.EBADF, lambda bad, s: libc.set_nonblocking(bad, True)),
    ("dup", OSError, errno.EBADF, lambda bad, s: libc.dup(bad)),
    ("dup2", OSError, errno.EBADF, lambda bad, s: libc.dup2(bad, bad + 1)),
    ("dup3", OSError, errno.EBADF, lambda bad, s: libc.dup3(bad, bad + 1, libc.O_CLOEXEC)),
    ("close", OSError, errno.EBADF, lambda bad, s: libc.close(bad)),
    ("read", OSError, errno.EBADF, lambda bad, s: libc.read(bad, 1)),
    ("write", OSError, errno.EBADF, lambda bad, s: libc.write(bad, b"x")),
    ("inotify_add_watch", OSError, errno.EBADF, lambda bad, s: libc.inotify_add_watch(bad, "/", libc.IN_CREATE)),
    ("inotify_rm_watch", OSError, errno.EBADF, lambda bad, s: libc.inotify_rm_watch(bad, 1)),
    ("pidfd_send_signal", OSError, errno.EBADF, lambda bad, s: libc.pidfd_send_signal(bad, 0)),
    # not fds, or not the right kind of fd
    ("close_range", OSError, errno.EINVAL, lambda bad, s: libc.close_range(bad + 5, bad)),
    ("fcntl", OSError, errno.EINVAL, lambda bad, s: libc.fcntl(0, 0x7FFF)),
    ("socket", OSError, errno.EAFNOSUPPORT, lambda bad, s: libc.socket(12345, libc.SOCK_STREAM)),
    ("socketpair", OSError, errno.EOPNOTSUPP, lambda bad, s: libc.socketpair(libc.AF_INET, libc.SOCK_STREAM)),
    ("pipe2", OSError, errno.EINVAL, lambda bad, s: libc.pipe2(0x7FFF0000)),
    ("inotify_init1", OSError, errno.EINVAL, lambda bad, s: libc.inotify_init1(0x7FFF0000)),
    ("inotify_rm_watch", OSError, errno.EINVAL, lambda bad, s: libc.inotify_rm_watch(s.add(libc.inotify_init1()), 12345)),
    ("inotify_add_watch", FileNotFoundError, errno.ENOENT, lambda bad, s: libc.inotify_add_watch(s.add(libc.inotify_init1()), "/nonexistent/zocket", libc.IN_CREATE)),
    ("getsockopt", OSError, errno.ENOTSOCK, lambda bad, s: libc.getsockopt(s.add(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)), libc.SOL_SOCKET, libc.SO_TYPE)),
    ("getpeername", OSError, errno.ENOTCONN, lambda bad, s: libc.getpeername(s.add(libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC)))),
    ("shutdown", OSError, errno.ENOTCONN, lambda bad, s: libc.shutdown(s.add(libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC)), libc.SHUT_RDWR)),
    ("listen", OSError, errno.EOPNOTSUPP, lambda bad, s: libc.listen(s.add(libc.socket(libc.AF_INET, libc.SOCK_DGRAM | CLOEXEC)), 1)),
    ("accept4", OSError, errno.EINVAL, lambda bad, s: libc.accept4(s.add(libc.socket(libc.AF_INET, libc.SOCK_STREAM | CLOEXEC)))),
    ("waitpid", ChildProcessError, errno.ECHILD, lambda bad, s: libc.waitpid(1)),
    ("waitpid", ChildProcessError, errno.ECHILD, lambda bad, s: libc.waitpid(free_pid(), libc.WNOHANG)),
    ("kill", ProcessLookupError, errno.ESRCH, lambda bad, s: libc.kill(free_pid(), 0)),
    ("kill", ProcessLookupError, errno.ESRCH, lambda bad, s: libc.killpg(free_pid(), 0)),
    ("kill", OSError, errno.EINVAL, lambda bad, s: libc.kill(os.getpid(), 12345)),
    ("setpgid", OSError, errno.EINVAL, lambda bad, s: libc.setpgid(0, -1)),
    ("setpgid", ProcessLookupError, errno.ESRCH, lambda bad, s: libc.setpgid(free_pid(), 0)),
    ("getpgid", ProcessLookupError, errno.ESRCH, lambda bad, s: libc.getpgid(free_pid())),
    ("pidfd_open", ProcessLookupError, errno.ESRCH, lambda bad, s: libc.pidfd_open(free_pid())),
    ("pidfd_open", OSError, errno.EINVAL, lambda bad, s: libc.pidfd_open(-1)),
    ("prctl", OSError, errno.EINVAL, lambda bad, s: libc.prctl(libc.PR_SET_PDEATHSIG, 12345)),
    ("execvp", FileNotFoundError, errno.ENOENT, lambda bad, s: libc.execvp("/nonexistent/zocket-cmd", ["x"])),
]


@pytest.mark.parametrize(
    ("call", "exc_type", "err", "action"),
    ERROR_CASES,
    ids=[f"{i}-{case[0]}-{errno.errorcode[case[2]]}" for i, case in enumerate(ERROR_CASES)],
)
def test_errors_carry_the_call_and_errno(
    call: str, exc_type: type[OSError], err: int, action: Callable[[int, FdScope], Any], fds: FdScope
) -> None:
    bad = closed_fd()
    with pytest.raises(OSError) as info:
        action(bad, fds)
    exc = info.value
    # Python's own class for the errno, and zocket.libc's typed one.
    assert type(OSError(err, "")) is exc_type
    assert isinstance(exc, exc_type) and isinstance(exc, libc.LibcError)
    assert exc.errno == err
    assert exc.call == call
    assert exc.strerror == f"{call}: {os.strerror(err)}"
    assert call in str(exc)


@pytest.mark.parametrize("call", ["bind", "connect"])
@pytest.mark.parametrize("fd_kind", ["closed", "not-a-socket"])
def test_bind_and_connect_name_themselves_without_family(
    call: str, fd_kind: str, fds: FdScope
) -> None:
    fd = closed_fd() if fd_kind == "closed" else fds.add(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    with pytest.raises(OSError) as info:
        getattr(libc, call)(fd, ("127.0.0.1", 1))
    assert info.value.errno == (errno.EBADF if fd_kind == "closed" else errno.ENOTSOCK)
    assert info.value.call == call  # type: ignore[attr-defined]


def test_connect_to_a_too_long_unix_path_names_connect(fds: FdScope) -> None:
    fd = fds.add(libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    with pytest.raises(OSError) as info:
        libc.connect(fd, "/" + "x" * 200)
    assert info.value.errno == errno.ENAMETOOLONG
    assert info.value.call == "connect"  # type: ignore[attr-defined]


def test_unix_bind_errors_carry_the_path(tmp_path: Path, fds: FdScope) -> None:
    path = str(tmp_path / "missing" / "s.sock")
    fd = fds.add(libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    with pytest.raises(FileNotFoundError) as info:
        libc.bind(fd, path)
    assert info.value.filename == path
    assert info.value.call == "bind"  # type: ignore[attr-defined]
    taken = str(tmp_path / "taken.sock")
    libc.bind(fd, taken)
    other = fds.add(libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | CLOEXEC))
    with pytest.raises(OSError) as info2:
        libc.bind(other, taken)
    assert info2.value.errno == errno.EADDRINUSE and info2.value.filename == taken


def test_killpg_refuses_groups_0_and_1() -> None:
    for pgid in (0, 1, -5):
        with pytest.raises(ValueError):
            libc.killpg(pgid, 0)


def test_error_helper_uses_the_given_errno() -> None:
    exc = libc.error("frob", errno.ENOENT, "/x")
    assert isinstance(exc, FileNotFoundError)
    assert exc.call == "frob" and exc.filename == "/x"
    assert str(exc) == f"[Errno {errno.ENOENT}] frob: {os.strerror(errno.ENOENT)}: '/x'"


# --- processes: wait statuses -----------------------------------------------------------------------


@given(raw=st.integers(0, 0xFFFF))
def test_wait_status_decodes_like_os(raw: int) -> None:
    status = libc.WaitStatus(raw)
    assert status.exited is os.WIFEXITED(raw)
    assert status.signaled is os.WIFSIGNALED(raw)
    assert status.exit_code == (os.WEXITSTATUS(raw) if os.WIFEXITED(raw) else None)
    assert status.signal == (os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else None)
    assert status.stopped is os.WIFSTOPPED(raw)
    assert status.stop_signal == (os.WSTOPSIG(raw) if os.WIFSTOPPED(raw) else None)
    assert status.continued is os.WIFCONTINUED(raw)
    if status.exited:
        assert status.shell_status == os.WEXITSTATUS(raw)
    elif status.signaled:
        assert status.shell_status == 128 + os.WTERMSIG(raw)
    elif status.stopped:
        assert status.shell_status == 128 + os.WSTOPSIG(raw)
    else:
        with pytest.raises(ValueError):
            status.shell_status


@settings(max_examples=8, deadline=None)
@given(code=st.integers(0, 255))
def test_wait_status_of_a_real_exit(code: int) -> None:
    child = spawn(["sh", "-c", f"exit {code}"], fds=[], names=[])
    status = wait_child(child)
    assert status.exited and not status.signaled
    assert status.exit_code == code
    assert status.shell_status == code
    assert status.signal is None


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1])
def test_wait_status_of_a_signal_death(sig: int) -> None:
    child = spawn(["sleep", "30"], fds=[], names=[])
    libc.kill(child.pid, sig)
    status = wait_child(child)
    assert status.signaled and not status.exited
    assert status.signal == sig
    assert status.exit_code is None
    assert status.shell_status == 128 + sig


def test_wait_status_of_a_stopped_child() -> None:
    child = spawn(["sleep", "30"], fds=[], names=[])
    try:
        libc.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while True:
            pid, raw = libc.waitpid(child.pid, libc.WUNTRACED | libc.WNOHANG)
            if pid or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert pid == child.pid
        status = libc.WaitStatus(raw)
        assert os.WIFSTOPPED(raw) and os.WSTOPSIG(raw) == signal.SIGSTOP
        assert not status.exited and not status.signaled
        assert status.stopped and status.stop_signal == signal.SIGSTOP
        assert status.shell_status == 128 + signal.SIGSTOP  # what a shell reports for it
    finally:
        libc.kill(child.pid, signal.SIGKILL)
    assert wait_child(child).signal == signal.SIGKILL


def test_reap() -> None:
    assert libc.reap(free_pid()) is None  # ECHILD reads as nothing
    child = spawn(["sleep", "30"], fds=[], names=[])
    try:
        assert libc.reap(child.pid) is None  # running
        libc.pidfd_send_signal(child.pidfd, signal.SIGKILL)  # type: ignore[arg-type]
        assert child.pidfd is not None and wait_readable(child.pidfd, 10)
        reaped = libc.reap(child.pid)
        assert reaped is not None
        assert reaped[0] == child.pid and reaped[1].signal == signal.SIGKILL
        assert libc.reap(child.pid) is None
    finally:
        child.close()


def test_pidfd_open_of_a_child_becomes_readable_at_exit(fds: FdScope) -> None:
    child = spawn(["sleep", "30"], fds=[], names=[])
    try:
        pidfd = fds.add(libc.pidfd_open(child.pid))
        assert libc.get_cloexec(pidfd)
        assert not wait_readable(pidfd, 0.05)
        libc.pidfd_send_signal(pidfd, signal.SIGTERM)
        assert wait_readable(pidfd, 10)
    finally:
        status = wait_child(child)
    assert status.signal == signal.SIGTERM


def test_fork_execvp_waitpid() -> None:
    """The raw fork: the child execs at once (no other thread runs here)."""
    assert threading.active_count() == 1
    pid = libc.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            libc.execvp("sh", ["sh", "-c", "exit 42"])
        finally:
            os._exit(99)
    deadline = time.monotonic() + 10
    reaped = None
    while reaped is None and time.monotonic() < deadline:
        reaped = libc.reap(pid)
        if reaped is None:
            time.sleep(0.01)
    if reaped is None:
        libc.kill(pid, signal.SIGKILL)
        libc.waitpid(pid)
        pytest.fail("forked child did not exit")
    assert reaped[0] == pid
    assert reaped[1].exit_code == 42


def test_waitpid_is_retried_after_a_quiet_signal_handler() -> None:
    child = spawn(["sh", "-c", "sleep 0.5; exit 5"], fds=[], names=[])
    calls: list[int] = []
    try:
        with alarms(lambda s, f: calls.append(s)):
            pid, raw = libc.waitpid(child.pid)
    finally:
        child.close()
    assert pid == child.pid
    assert libc.WaitStatus(raw).exit_code == 5
    assert len(calls) >= 2


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("Linux only", allow_module_level=True)
