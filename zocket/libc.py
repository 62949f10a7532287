"""Typed glibc bindings for Linux: the calls a socket-holding or process-supervising tool needs.

zocket is built on this module, and it is public so that another tool of the
same kind (a socket holder, a process supervisor, an fd-passing helper) can be
too: sockets and their options, SCM_RIGHTS fd passing, peer credentials, fds
and their flags, poll, processes (fork, exec, wait, signals, process groups,
sessions, prctl, pidfds), inotify, and seccomp user notification (a
filter whose listener answers another process's syscalls). The reference is ``docs/libc.md``.

Each function keeps the C call's name and meaning but speaks Python: fds are
ints, addresses are the values the ``socket`` module uses, and a failure
raises a `LibcError`: an ``OSError`` whose class also matches errno the way
Python's own do (``except FileNotFoundError`` works), whose message starts
with the call's name, and whose typed ``call`` attribute holds it. An
argument that C cannot take unchanged (out of range for its C type, of the
wrong type, a bool where a number is meant) raises `ArgumentError`, a
``ValueError`` naming the call and the argument, before anything reaches
the kernel. Calls that block are retried on EINTR, after giving Python's
signal handlers a chance to run (an exception raised by a handler
propagates, as with the standard library since PEP 475).

Addresses:
    AF_INET   ``("127.0.0.1", 8000)``; the host may also be ``""`` (any) or a
              name (resolved with getaddrinfo, as ``socket`` does)
    AF_INET6  ``("::1", 8000, flowinfo, scope_id)`` (a 2-tuple is accepted)
    AF_UNIX   ``"/run/app.sock"``; an abstract name starts with a NUL:
              ``"\\0name"`` on input, ``b"\\0name"`` on output, as in ``socket``.

Every fd this module creates is close-on-exec (PEP 446) unless asked with
``inheritable=True`` (or by leaving out the CLOEXEC flag of the calls that
take flags: ``pipe2``, ``accept4``, ``dup3``, ``inotify_init1``, ``recvmsg_fds``);
``dup2`` alone makes an inheritable copy by default, as ``os.dup2`` does,
because placing an fd on a chosen number is how it is handed to a child.
Linux only.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import socket as _socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from . import constants as _constants
from ._libc import ffi, lib
from .constants import *  # the constants are part of this module's API
from .constants import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    F_DUPFD_CLOEXEC,
    F_GETFD,
    F_GETFL,
    F_SETFD,
    F_SETFL,
    FD_CLOEXEC,
    IN_CLOEXEC,
    IN_NONBLOCK,
    MSG_CMSG_CLOEXEC,
    MSG_NOSIGNAL,
    O_CLOEXEC,
    O_NONBLOCK,
    PR_GET_CHILD_SUBREAPER,
    PR_GET_NAME,
    PR_GET_PDEATHSIG,
    PR_SET_NAME,
    SCM_RIGHTS,
    SHUT_WR,
    SO_PEERCRED,
    SOCK_CLOEXEC,
    SOL_SOCKET,
    WNOHANG,
)

__all__ = [  # noqa: RUF022 - grouped as docs/libc.md is
    # errors
    "ArgumentError",
    "LibcError",
    "LibcBlockingIOError",
    "LibcBrokenPipeError",
    "LibcChildProcessError",
    "LibcConnectionAbortedError",
    "LibcConnectionRefusedError",
    "LibcConnectionResetError",
    "LibcFileExistsError",
    "LibcFileNotFoundError",
    "LibcInterruptedError",
    "LibcIsADirectoryError",
    "LibcNotADirectoryError",
    "LibcPermissionError",
    "LibcProcessLookupError",
    "LibcTimeoutError",
    "error",
    # addresses
    "SockAddr",
    "pack_sockaddr",
    "unpack_sockaddr",
    # sockets
    "socket",
    "socketpair",
    "setsockopt",
    "getsockopt",
    "getsockopt_bytes",
    "bind",
    "connect",
    "listen",
    "accept4",
    "getsockname",
    "getsockname_inet",
    "getpeername",
    "getpeername_inet",
    "peercred",
    "shutdown",
    "sendmsg_fds",
    "recvmsg_fds",
    # fds
    "fcntl",
    "get_cloexec",
    "set_cloexec",
    "get_nonblocking",
    "set_nonblocking",
    "dup",
    "dup2",
    "dup3",
    "close",
    "close_range",
    "pipe2",
    "read",
    "write",
    "poll",
    "HAS_CLOSE_RANGE",
    # processes
    "fork",
    "execvp",
    "execve",
    "_exit",
    "waitpid",
    "WaitStatus",
    "reap",
    "kill",
    "killpg",
    "tgkill",
    "sched_slice",
    "set_sched_slice",
    "setpgid",
    "getpgid",
    "setsid",
    "getpid",
    "getppid",
    "prctl",
    "get_process_name",
    "pidfd_open",
    "pidfd_send_signal",
    "HAS_PIDFD_OPEN",
    "HAS_PIDFD_SEND_SIGNAL",
    # the fork-to-exec path
    "spawn",
    "SPAWN_MAX_FDS",
    "SPAWN_STAGES",
    "SPAWN_REPORT_SIZE",
    "SPAWN_ADOPT_LISTENER",
    "SPAWN_ADOPT_UNAVAILABLE",
    # seccomp user notification
    "SeccompProgram",
    "seccomp_program",
    "adoption_program",
    "seccomp_set_mode_filter",
    "Notification",
    "notif_recv",
    "notif_id_valid",
    "notif_addfd",
    "notif_respond",
    "pidfd_getfd",
    "read_process_memory",
    "parse_sockaddr",
    "HAS_SECCOMP_ADOPT",
    "HAS_PIDFD_GETFD",
    "SECCOMP_SET_MODE_FILTER",
    "SECCOMP_FILTER_FLAG_NEW_LISTENER",
    "SECCOMP_RET_ALLOW",
    "SECCOMP_RET_ERRNO",
    "SECCOMP_RET_USER_NOTIF",
    "SECCOMP_RET_KILL_PROCESS",
    "SECCOMP_USER_NOTIF_FLAG_CONTINUE",
    "SECCOMP_ADDFD_FLAG_SETFD",
    "SECCOMP_ADDFD_FLAG_SEND",
    "PR_SET_NO_NEW_PRIVS",
    "PR_GET_NO_NEW_PRIVS",
    "AUDIT_ARCH",
    "SYS_BIND",
    "SYS_LISTEN",
    "SYS_SHUTDOWN",
    "SYS_SECCOMP",
    # inotify
    "InotifyEvent",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "parse_inotify_events",
    "read_inotify_events",
    # what a waiting process looks like from /proc (zocket's --ready auto)
    "WAIT_SYSCALLS",
    "POLLIN",
    "EPOLLIN",
    "FD_SETSIZE",
    "POLLFD_SIZE",
    "POLLFD_FD",
    "POLLFD_EVENTS",
]
__all__ += _constants.__all__

SockAddr = tuple[str, int] | tuple[str, int, int, int] | str | bytes

HAS_CLOSE_RANGE: bool = bool(lib.HAS_CLOSE_RANGE)
HAS_PIDFD_OPEN: bool = bool(lib.HAS_PIDFD_OPEN)
HAS_PIDFD_SEND_SIGNAL: bool = bool(lib.HAS_PIDFD_SEND_SIGNAL)
SPAWN_MAX_FDS: int = lib.ZOCKET_SPAWN_MAX_FDS
#: Seccomp user notification with ADDFD and SETFD in the headers (it also needs Linux 5.14).
HAS_SECCOMP_ADOPT: bool = bool(lib.HAS_SECCOMP_ADOPT)
HAS_PIDFD_GETFD: bool = bool(lib.HAS_PIDFD_GETFD)


# --- errors: the one place where -1 and errno become exceptions -------------------------------


class LibcError(OSError):
    """A call of this module failed: errno, strerror and the C call's name in ``call``.

    Raised as the subclass that also derives from Python's own class for the
    errno (`LibcFileNotFoundError` is a ``FileNotFoundError``, ...), so code
    that catches the builtin classes keeps working; catch ``LibcError`` to
    read ``call`` with its type known.
    """

    call: str

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.call = ""


class LibcBlockingIOError(LibcError, BlockingIOError):
    """EAGAIN, EWOULDBLOCK, EALREADY, EINPROGRESS."""


class LibcBrokenPipeError(LibcError, BrokenPipeError):
    """EPIPE, ESHUTDOWN."""


class LibcChildProcessError(LibcError, ChildProcessError):
    """ECHILD."""


class LibcConnectionAbortedError(LibcError, ConnectionAbortedError):
    """ECONNABORTED."""


class LibcConnectionRefusedError(LibcError, ConnectionRefusedError):
    """ECONNREFUSED."""


class LibcConnectionResetError(LibcError, ConnectionResetError):
    """ECONNRESET."""


class LibcFileExistsError(LibcError, FileExistsError):
    """EEXIST."""


class LibcFileNotFoundError(LibcError, FileNotFoundError):
    """ENOENT."""


class LibcInterruptedError(LibcError, InterruptedError):
    """EINTR (only from calls that are not retried: close, connect)."""


class LibcIsADirectoryError(LibcError, IsADirectoryError):
    """EISDIR."""


class LibcNotADirectoryError(LibcError, NotADirectoryError):
    """ENOTDIR."""


class LibcPermissionError(LibcError, PermissionError):
    """EACCES, EPERM."""


class LibcProcessLookupError(LibcError, ProcessLookupError):
    """ESRCH."""


class LibcTimeoutError(LibcError, TimeoutError):
    """ETIMEDOUT."""


_BY_BUILTIN: dict[type[OSError], type[LibcError]] = {
    base: cls
    for cls in LibcError.__subclasses__()
    for base in cls.__bases__
    if base is not LibcError
}
# The errno-to-class map is Python's own (the one OSError(errno, ...) applies).
_BY_ERRNO: dict[int, type[LibcError]] = {
    number: _BY_BUILTIN.get(type(OSError(number, "")), LibcError) for number in _errno.errorcode
}


class ArgumentError(ValueError):
    """An argument C cannot take unchanged; raised before any call reaches the kernel.

    One class for every such case (out of range for the C type, the wrong
    type, a bool where a number is meant, a malformed address), so that a
    caller has one thing to catch; ``call`` and ``argument`` name them.
    """

    def __init__(self, call: str, argument: str, problem: str) -> None:
        super().__init__(f"{call}: {argument} {problem}")
        self.call = call
        self.argument = argument


def error(call: str, err: int | None = None, filename: Any = None) -> LibcError:
    """The LibcError for a failed call; reads errno first, before any other cffi call.

    Public for a tool's own cffi calls next to this module's: the same class,
    message and ``call`` attribute as every error of ``zocket.libc``.
    """
    if err is None:
        err = ffi.errno
    message = f"{call}: {os.strerror(err)}"
    cls = _BY_ERRNO.get(err, LibcError)
    exc = cls(err, message) if filename is None else cls(err, message, filename)
    exc.call = call
    return exc


def _check(call: str, result: int, filename: Any = None) -> int:
    if result == -1:
        raise error(call, filename=filename)
    return result


def _retry(call: str, func: Callable[..., int], *args: Any) -> int:
    """Call until it does not fail with EINTR; the loop lets signal handlers run."""
    while True:
        result = func(*args)
        if result != -1:
            return result
        err = ffi.errno
        if err != _errno.EINTR:
            raise error(call, err)


# --- arguments: checked here so that cffi never truncates or refuses one -------------------------

_INT_MIN, _INT_MAX = -(2 ** (8 * ffi.sizeof("int") - 1)), 2 ** (8 * ffi.sizeof("int") - 1) - 1
_UINT_MAX = 2 ** (8 * ffi.sizeof("unsigned int")) - 1
_ULONG_MAX = 2 ** (8 * ffi.sizeof("unsigned long")) - 1
_SSIZE_MAX = 2 ** (8 * ffi.sizeof("ssize_t") - 1) - 1


def _int(call: str, name: str, value: object, low: int = _INT_MIN, high: int = _INT_MAX) -> int:
    """``value`` as a C integer argument: an int (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(call, name, f"must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ArgumentError(call, name, f"must be {low} to {high}, not {value}")
    return value


def _fd(call: str, value: object, name: str = "fd") -> int:
    return _int(call, name, value, 0, _INT_MAX)


def _buffer(call: str, name: str, value: object) -> Any:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ArgumentError(call, name, f"must be bytes-like, not {type(value).__name__}")
    return value


# --- socket addresses --------------------------------------------------------------------------

_SUN_PATH_MAX = ffi.sizeof(ffi.typeof("struct sockaddr_un").fields[1][1].type)
_SUN_PATH_OFFSET = ffi.offsetof("struct sockaddr_un", "sun_path")


def _inet_parts(address: SockAddr, call: str) -> tuple[str, int, int, int]:
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise ArgumentError(
            call, "address", f"must be a (host, port[, flowinfo, scope_id]) tuple: {address!r}"
        )
    host, port = address[0], address[1]
    if not isinstance(host, str):
        raise ArgumentError(call, "host", f"must be a str, not {type(host).__name__}")
    flowinfo, scope_id = (address[2], address[3]) if len(address) == 4 else (0, 0)
    return (
        host,
        _int(call, "port", port, 0, 0xFFFF),
        _int(call, "flowinfo", flowinfo, 0, 0xFFFFFFFF),
        _int(call, "scope_id", scope_id, 0, 0xFFFFFFFF),
    )


def _host_address(family: int, host: str, call: str) -> str:
    """A literal for ``host`` the way Python's ``socket`` reads it: "" is any, a name resolves."""
    if host == "":
        return "0.0.0.0" if family == AF_INET else "::"
    if host == "<broadcast>" and family == AF_INET:
        return "255.255.255.255"
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        pass
    else:
        return host
    if any(c in host for c in "%:/ ") or host.replace(".", "").isdigit():
        return host  # a malformed literal: let the family's parser name it
    try:
        infos = _socket.getaddrinfo(host, None, family, _socket.SOCK_STREAM)
    except _socket.gaierror as exc:
        raise _socket.gaierror(exc.errno, f"{call}: {host!r}: {exc.strerror}") from None
    return str(infos[0][4][0])


def pack_sockaddr(family: int, address: SockAddr, call: str = "bind") -> tuple[Any, int]:
    """A C sockaddr for a Python address value: (cdata, length); ``call`` names errors.

    Exported for a tool's own cffi calls (sendto, ...) and for the tests' round trips.
    """
    if family == AF_INET:
        host, port, _, _ = _inet_parts(address, call)
        try:
            packed = ipaddress.IPv4Address(_host_address(family, host, call)).packed
        except ValueError:
            raise ArgumentError(call, "address", f"is not an IPv4 address: {host!r}") from None
        sin = ffi.new("struct sockaddr_in *")
        sin.sin_family = AF_INET
        sin.sin_port = lib.htons(port)
        ffi.memmove(ffi.addressof(sin.sin_addr), packed, 4)
        return sin, ffi.sizeof(sin[0])
    if family == AF_INET6:
        host, port, flowinfo, scope_id = _inet_parts(address, call)
        try:
            ip = ipaddress.IPv6Address(_host_address(family, host, call))
        except ValueError:
            raise ArgumentError(call, "address", f"is not an IPv6 address: {host!r}") from None
        if ip.scope_id:
            scope_id = scope_id or _interface_index(ip.scope_id)
        sin6 = ffi.new("struct sockaddr_in6 *")
        sin6.sin6_family = AF_INET6
        sin6.sin6_port = lib.htons(port)
        sin6.sin6_flowinfo = flowinfo
        sin6.sin6_scope_id = scope_id
        ffi.memmove(ffi.addressof(sin6.sin6_addr), ip.packed, 16)
        return sin6, ffi.sizeof(sin6[0])
    if family == AF_UNIX:
        path = os.fsencode(address) if isinstance(address, str) else address
        if not isinstance(path, bytes):
            raise ArgumentError(
                call, "address", f"of AF_UNIX must be str or bytes, not {type(address).__name__}"
            )
        # A filesystem path needs room for its NUL; an abstract name has none.
        room = _SUN_PATH_MAX if path.startswith(b"\0") else _SUN_PATH_MAX - 1
        if len(path) > room:
            raise error(call, _errno.ENAMETOOLONG, os.fsdecode(path))
        sun = ffi.new("struct sockaddr_un *")
        sun.sun_family = AF_UNIX
        ffi.memmove(sun.sun_path, path, len(path))
        return sun, _SUN_PATH_OFFSET + len(path) + (0 if path.startswith(b"\0") else 1)
    raise ArgumentError(call, "family", f"is not supported: {family}")


def unpack_sockaddr(addr: Any, length: int) -> SockAddr:
    """The Python address value for a C sockaddr the kernel filled in.

    Exported for a tool's own cffi calls (recvfrom, ...) and for the tests' round trips.
    """
    family = ffi.cast("struct sockaddr *", addr).sa_family
    if family == AF_INET:
        sin = ffi.cast("struct sockaddr_in *", addr)
        host = _socket.inet_ntop(AF_INET, bytes(ffi.buffer(ffi.addressof(sin.sin_addr), 4)))
        return host, lib.ntohs(sin.sin_port)
    if family == AF_INET6:
        # inet_ntop, not ipaddress: the same text as the socket module ("::ffff:127.0.0.1").
        sin6 = ffi.cast("struct sockaddr_in6 *", addr)
        host = _socket.inet_ntop(AF_INET6, bytes(ffi.buffer(ffi.addressof(sin6.sin6_addr), 16)))
        return host, lib.ntohs(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id
    if family == AF_UNIX:
        raw = bytes(ffi.buffer(addr, length))[_SUN_PATH_OFFSET:]
        if raw.startswith(b"\0"):
            return raw
        return os.fsdecode(raw.split(b"\0", 1)[0])
    raise ValueError(f"unsupported address family {family}")


def parse_sockaddr(data: bytes) -> tuple[int, SockAddr]:
    """(family, address) of a sockaddr's raw bytes, as read from another process's memory.

    Raises ValueError for a family other than AF_INET, AF_INET6 and AF_UNIX, or
    bytes too short for the family's fixed part.
    """
    storage = ffi.new("struct sockaddr_storage *")
    size = min(len(data), ffi.sizeof(storage[0]))
    if size < ffi.sizeof("sa_family_t"):
        raise ValueError(f"a sockaddr of {len(data)} bytes has no family")
    ffi.memmove(storage, data[:size], size)
    family = int(storage.ss_family)
    needed = {
        AF_INET: ffi.sizeof("struct sockaddr_in"),
        AF_INET6: ffi.sizeof("struct sockaddr_in6"),
        AF_UNIX: _SUN_PATH_OFFSET,
    }.get(family)
    if needed is None:
        raise ValueError(f"unsupported address family {family}")
    if size < needed:
        raise ValueError(f"a sockaddr of family {family} needs {needed} bytes, not {size}")
    return family, unpack_sockaddr(storage, size)


def _interface_index(name: str) -> int:
    try:
        return int(name)
    except ValueError:
        return _socket.if_nametoindex(name)


def _sockaddr_call(call: str, func: Callable[..., int], fd: int) -> SockAddr:
    storage = ffi.new("struct sockaddr_storage *")
    length = ffi.new("socklen_t *", ffi.sizeof(storage[0]))
    _check(call, func(_fd(call, fd), ffi.cast("struct sockaddr *", storage), length))
    return unpack_sockaddr(storage, length[0])


def _inet_only(call: str, address: SockAddr) -> tuple[str, int]:
    if not isinstance(address, tuple):
        raise ArgumentError(call, "fd", f"is not an AF_INET or AF_INET6 socket: {address!r}")
    return address[0], address[1]


# --- sockets -------------------------------------------------------------------------------------


def _cloexec_type(call: str, type: int, inheritable: bool) -> int:
    type = _int(call, "type", type)
    if inheritable and type & SOCK_CLOEXEC:
        raise ArgumentError(call, "type", "has SOCK_CLOEXEC, and inheritable=True was asked")
    return type if inheritable else type | SOCK_CLOEXEC


def socket(family: int, type: int, protocol: int = 0, *, inheritable: bool = False) -> int:
    """socket(2): a new socket's fd, close-on-exec unless ``inheritable`` (SOCK_CLOEXEC added).

    ``type`` may carry SOCK_NONBLOCK. Errors: EAFNOSUPPORT, EPROTONOSUPPORT, EMFILE, ...
    """
    type = _cloexec_type("socket", type, inheritable)
    return _check("socket", lib.socket(_int("socket", "family", family), type,
                                       _int("socket", "protocol", protocol)))  # fmt: skip


def socketpair(
    family: int, type: int, protocol: int = 0, *, inheritable: bool = False
) -> tuple[int, int]:
    """socketpair(2): two connected sockets (AF_UNIX), close-on-exec unless ``inheritable``."""
    type = _cloexec_type("socketpair", type, inheritable)
    sv = ffi.new("int[2]")
    family = _int("socketpair", "family", family)
    _check("socketpair", lib.socketpair(family, type, _int("socketpair", "protocol", protocol), sv))
    return sv[0], sv[1]


def setsockopt(fd: int, level: int, option: int, value: int | bytes) -> None:
    """setsockopt(2): an int option (a bool counts as 0 or 1), or a raw bytes value."""
    call = "setsockopt"
    if isinstance(value, int):
        buf = ffi.new("int *", _int(call, "value", int(value)))
        size = ffi.sizeof("int")
    else:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            kind = type(value).__name__
            raise ArgumentError(call, "value", f"must be an int or bytes, not {kind}")
        buf = ffi.from_buffer(value)
        size = len(buf)
    args = _fd(call, fd), _int(call, "level", level), _int(call, "option", option)
    _check(call, lib.setsockopt(*args, buf, size))


def getsockopt(fd: int, level: int, option: int) -> int:
    """getsockopt(2) of an integer option: its value (SO_ERROR, SO_ACCEPTCONN, ...)."""
    call = "getsockopt"
    buf = ffi.new("int *")
    size = ffi.new("socklen_t *", ffi.sizeof("int"))
    args = _fd(call, fd), _int(call, "level", level), _int(call, "option", option)
    _check(call, lib.getsockopt(*args, buf, size))
    return int(buf[0])


def getsockopt_bytes(fd: int, level: int, option: int, buflen: int) -> bytes:
    """getsockopt(2) of a structured option: at most ``buflen`` raw bytes (TCP_INFO, ...)."""
    call = "getsockopt"
    buflen = _int(call, "buflen", buflen, 0, 1 << 20)
    buf = ffi.new("char[]", max(buflen, 1))
    size = ffi.new("socklen_t *", buflen)
    args = _fd(call, fd), _int(call, "level", level), _int(call, "option", option)
    _check(call, lib.getsockopt(*args, buf, size))
    return bytes(ffi.buffer(buf, size[0]))


def _family(fd: int, call: str) -> int:
    """The socket's own family (SO_DOMAIN); a failure is reported as ``call``'s."""
    value = ffi.new("int *")
    size = ffi.new("socklen_t *", ffi.sizeof("int"))
    _check(call, lib.getsockopt(_fd(call, fd), SOL_SOCKET, lib.SO_DOMAIN, value, size))
    return int(value[0])


def bind(fd: int, address: SockAddr, family: int | None = None) -> None:
    """bind(2). ``family`` defaults to the socket's own (SO_DOMAIN).

    Errors: EADDRINUSE, EACCES (a privileged port), EADDRNOTAVAIL, ENAMETOOLONG
    (a Unix path longer than sun_path); a Unix path is the error's ``filename``.
    """
    if family is None:
        family = _family(fd, "bind")
    addr, length = pack_sockaddr(family, address)
    filename = address if family == AF_UNIX else None
    _check("bind", lib.bind(_fd("bind", fd), ffi.cast("struct sockaddr *", addr), length), filename)


def connect(fd: int, address: SockAddr, family: int | None = None) -> None:
    """connect(2). Not retried on EINTR: the kernel goes on connecting; wait for writability.

    On a non-blocking socket, LibcBlockingIOError (EINPROGRESS) means "in
    progress": poll for POLLOUT, then read SO_ERROR.
    """
    if family is None:
        family = _family(fd, "connect")
    addr, length = pack_sockaddr(family, address, "connect")
    _check("connect", lib.connect(_fd("connect", fd), ffi.cast("struct sockaddr *", addr), length))


def listen(fd: int, backlog: int) -> None:
    """listen(2). The kernel caps ``backlog`` at net.core.somaxconn."""
    _check("listen", lib.listen(_fd("listen", fd), _int("listen", "backlog", backlog)))


def accept4(fd: int, flags: int = SOCK_CLOEXEC) -> tuple[int, SockAddr]:
    """accept4(2): (connection fd, peer address); close-on-exec unless ``flags`` leaves it out.

    Retried on EINTR. A non-blocking listener with nothing queued raises
    LibcBlockingIOError (EAGAIN).
    """
    storage = ffi.new("struct sockaddr_storage *")
    length = ffi.new("socklen_t *")

    def call(fd: int, flags: int) -> int:
        length[0] = ffi.sizeof(storage[0])
        return int(lib.accept4(fd, ffi.cast("struct sockaddr *", storage), length, flags))

    conn = _retry("accept4", call, _fd("accept4", fd), _int("accept4", "flags", flags))
    return conn, unpack_sockaddr(storage, length[0])


def getsockname(fd: int) -> SockAddr:
    """getsockname(2): the socket's own address, of any family (see `getsockname_inet`)."""
    return _sockaddr_call("getsockname", lib.getsockname, fd)


def getsockname_inet(fd: int) -> tuple[str, int]:
    """(host, port) of an AF_INET or AF_INET6 socket; ArgumentError for any other family.

    For ``host, port = getsockname_inet(fd)``, which type-checks where the
    union `getsockname` returns cannot.
    """
    return _inet_only("getsockname", getsockname(fd))


def getpeername(fd: int) -> SockAddr:
    """getpeername(2): the connected peer's address; ENOTCONN when there is none."""
    return _sockaddr_call("getpeername", lib.getpeername, fd)


def getpeername_inet(fd: int) -> tuple[str, int]:
    """(host, port) of an AF_INET or AF_INET6 socket's peer; see `getsockname_inet`."""
    return _inet_only("getpeername", getpeername(fd))


def shutdown(fd: int, how: int) -> None:
    """shutdown(2) with SHUT_RD, SHUT_WR or SHUT_RDWR.

    On a listening socket this stops it for every process that shares it.
    """
    _check("shutdown", lib.shutdown(_fd("shutdown", fd), _int("shutdown", "how", how)))


def sendmsg_fds(fd: int, data: bytes, fds: Sequence[int], flags: int = MSG_NOSIGNAL) -> int:
    """Send ``data`` with ``fds`` attached as SCM_RIGHTS; returns the bytes sent.

    At least one byte of data must go with the fds: a stream socket drops
    ancillary data sent with an empty payload.
    """
    call = "sendmsg"
    if not _buffer(call, "data", data):
        raise ArgumentError(call, "data", "must hold at least one byte to carry the fds")
    fds = [_fd(call, one, "fds") for one in fds]
    fd, flags = _fd(call, fd), _int(call, "flags", flags)
    payload = ffi.from_buffer(data)
    iov = ffi.new("struct iovec *")
    iov.iov_base = payload
    iov.iov_len = len(data)
    msg = ffi.new("struct msghdr *")
    msg.msg_iov = iov
    msg.msg_iovlen = 1
    if fds:
        size = ffi.sizeof("int") * len(fds)
        control = ffi.new("char[]", lib.CMSG_SPACE(size))
        msg.msg_control = control
        msg.msg_controllen = len(control)
        cmsg = lib.CMSG_FIRSTHDR(msg)
        cmsg.cmsg_level = SOL_SOCKET
        cmsg.cmsg_type = SCM_RIGHTS
        cmsg.cmsg_len = lib.CMSG_LEN(size)
        ffi.memmove(lib.CMSG_DATA(cmsg), struct.pack(f"{len(fds)}i", *fds), size)
    return _retry(call, lib.sendmsg, fd, msg, flags)


def recvmsg_fds(
    fd: int, bufsize: int, maxfds: int, flags: int = MSG_CMSG_CLOEXEC
) -> tuple[bytes, list[int], int]:
    """Receive up to ``bufsize`` bytes and up to ``maxfds`` SCM_RIGHTS fds.

    Returns (data, fds, msg_flags). The fds arrive close-on-exec by default;
    MSG_CTRUNC in msg_flags means the sender attached more than ``maxfds``
    (the kernel closed the surplus). Retried on EINTR.
    """
    call = "recvmsg"
    fd, flags = _fd(call, fd), _int(call, "flags", flags)
    bufsize = _int(call, "bufsize", bufsize, 0, _INT_MAX)
    maxfds = _int(call, "maxfds", maxfds, 0, 253)  # SCM_MAX_FD: the kernel's limit per message
    buf = ffi.new("char[]", max(bufsize, 1))
    iov = ffi.new("struct iovec *")
    iov.iov_base = buf
    iov.iov_len = bufsize
    msg = ffi.new("struct msghdr *")
    msg.msg_iov = iov
    msg.msg_iovlen = 1
    if maxfds > 0:
        # CMSG_LEN, not CMSG_SPACE: the padding of CMSG_SPACE has room for one more
        # fd when maxfds is odd, and the kernel would deliver it without MSG_CTRUNC.
        control = ffi.new("char[]", lib.CMSG_SPACE(ffi.sizeof("int") * maxfds))
        msg.msg_control = control
        msg.msg_controllen = lib.CMSG_LEN(ffi.sizeof("int") * maxfds)
    received = _retry(call, lib.recvmsg, fd, msg, flags)
    fds: list[int] = []
    cmsg = lib.CMSG_FIRSTHDR(msg)
    while cmsg != ffi.NULL:
        if cmsg.cmsg_level == SOL_SOCKET and cmsg.cmsg_type == SCM_RIGHTS:
            count = (cmsg.cmsg_len - lib.CMSG_LEN(0)) // ffi.sizeof("int")
            fds.extend(ffi.cast("int *", lib.CMSG_DATA(cmsg))[0:count])
        cmsg = lib.CMSG_NXTHDR(msg, cmsg)
    return bytes(ffi.buffer(buf, received)), fds, int(msg.msg_flags)


# --- file descriptors ---------------------------------------------------------------------------


def fcntl(fd: int, cmd: int, arg: int = 0) -> int:
    """fcntl(2) for the commands that take an int (F_GETFD, F_SETFL, F_DUPFD_CLOEXEC, ...).

    ``arg`` must fit a C int: a larger one is refused, not truncated.
    """
    call = "fcntl"
    fd, cmd, arg = _fd(call, fd), _int(call, "cmd", cmd), _int(call, "arg", arg)
    return _check(call, lib.fcntl(fd, cmd, ffi.cast("int", arg)))


def get_cloexec(fd: int) -> bool:
    """Whether ``fd`` is close-on-exec (FD_CLOEXEC): the opposite of inheritable."""
    return bool(fcntl(fd, F_GETFD) & FD_CLOEXEC)


def set_cloexec(fd: int, cloexec: bool = True) -> None:
    """Set or clear FD_CLOEXEC: clear it on exactly the fds a child is meant to inherit."""
    flags = fcntl(fd, F_GETFD)
    fcntl(fd, F_SETFD, flags | FD_CLOEXEC if cloexec else flags & ~FD_CLOEXEC)


def get_nonblocking(fd: int) -> bool:
    """Whether O_NONBLOCK is set on the open file ``fd`` refers to."""
    return bool(fcntl(fd, F_GETFL) & O_NONBLOCK)


def set_nonblocking(fd: int, nonblocking: bool = True) -> None:
    """O_NONBLOCK lives on the open file: every process holding the fd sees the change."""
    flags = fcntl(fd, F_GETFL)
    fcntl(fd, F_SETFL, flags | O_NONBLOCK if nonblocking else flags & ~O_NONBLOCK)


def dup(fd: int, *, inheritable: bool = False) -> int:
    """A copy of ``fd`` on the lowest free number, close-on-exec unless ``inheritable``.

    (F_DUPFD_CLOEXEC, so the copy is never inheritable even for a moment.)
    """
    if inheritable:
        return _check("dup", lib.dup(_fd("dup", fd)))
    return _check("dup", lib.fcntl(_fd("dup", fd), F_DUPFD_CLOEXEC, ffi.cast("int", 0)))


def dup2(oldfd: int, newfd: int, *, inheritable: bool = True) -> int:
    """dup2(2): ``oldfd`` copied onto ``newfd`` (closed first if open); returns newfd.

    Inheritable by default, as ``os.dup2``: putting an fd on a chosen number is
    how it is handed to a child. When ``oldfd == newfd`` the C call changes
    nothing, close-on-exec included, so the flag is then set by hand to match
    ``inheritable``.
    """
    oldfd, newfd = _fd("dup2", oldfd, "oldfd"), _fd("dup2", newfd, "newfd")
    if oldfd == newfd:
        fcntl(oldfd, F_GETFD)  # EBADF for a closed fd, as dup2 reports it
        set_cloexec(newfd, not inheritable)
        return newfd
    if not inheritable:
        return _retry("dup2", lib.dup3, oldfd, newfd, O_CLOEXEC)
    return _retry("dup2", lib.dup2, oldfd, newfd)


def dup3(oldfd: int, newfd: int, flags: int = 0) -> int:
    """dup3(2): like dup2, with O_CLOEXEC in ``flags``; EINVAL when oldfd == newfd."""
    call = "dup3"
    args = _fd(call, oldfd, "oldfd"), _fd(call, newfd, "newfd"), _int(call, "flags", flags)
    return _retry(call, lib.dup3, *args)


def close(fd: int) -> None:
    """close(2). EINTR is not retried: on Linux the fd is released whatever close returns."""
    result = lib.close(_fd("close", fd))
    if result == -1 and ffi.errno != _errno.EINTR:
        raise error("close")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """close_range(2): close, or with CLOSE_RANGE_CLOEXEC mark, fds first..last.

    ENOSYS where the kernel or headers lack it (see HAS_CLOSE_RANGE).
    """
    call = "close_range"
    first, last = _int(call, "first", first, 0, _UINT_MAX), _int(call, "last", last, 0, _UINT_MAX)
    _check(call, lib.zocket_close_range(first, last, _int(call, "flags", flags)))


def pipe2(flags: int = O_CLOEXEC) -> tuple[int, int]:
    """pipe2(2): (read end, write end), close-on-exec unless ``flags`` leaves O_CLOEXEC out."""
    fds = ffi.new("int[2]")
    _check("pipe2", lib.pipe2(fds, _int("pipe2", "flags", flags)))
    return fds[0], fds[1]


def read(fd: int, size: int) -> bytes:
    """read(2) of at most ``size`` bytes; b"" at end of file. Retried on EINTR.

    A non-blocking fd with nothing to read raises LibcBlockingIOError (EAGAIN).
    """
    fd, size = _fd("read", fd), _int("read", "size", size, 0, _SSIZE_MAX)
    buf = ffi.new("char[]", max(size, 1))
    count = _retry("read", lib.read, fd, buf, size)
    return bytes(ffi.buffer(buf, count))


def write(fd: int, data: bytes) -> int:
    """write(2): how many bytes were written (maybe fewer than given). Retried on EINTR."""
    fd, buf = _fd("write", fd), ffi.from_buffer(_buffer("write", "data", data))
    return _retry("write", lib.write, fd, buf, len(buf))


# --- processes -----------------------------------------------------------------------------------


def fork() -> int:
    """Raw fork(2), without CPython's before/after-fork hooks.

    The child must not use threads, locks or the allocator of its parent's
    other threads; prefer ``spawn()``, which does the child's work in C.
    """
    return _check("fork", lib.fork())


def _cstrings(items: Sequence[str | bytes]) -> tuple[Any, list[Any]]:
    keep = [ffi.new("char[]", os.fsencode(item)) for item in items]
    return ffi.new("char *[]", keep + [ffi.NULL]), keep


def execvp(file: str | bytes, argv: Sequence[str | bytes]) -> NoReturn:
    """execvp(3): replaces the process (searching PATH for ``file``), or raises."""
    c_argv, keep = _cstrings(argv)
    lib.execvp(os.fsencode(file), c_argv)
    del keep
    raise error("execvp", filename=os.fsdecode(file))


def execve(path: str | bytes, argv: Sequence[str | bytes], env: Sequence[str | bytes]) -> NoReturn:
    """execve(2): replaces the process with ``path`` (no PATH search), ``env`` as NAME=value."""
    c_argv, keep_argv = _cstrings(argv)
    c_env, keep_env = _cstrings(env)
    lib.execve(os.fsencode(path), c_argv, c_env)
    del keep_argv, keep_env
    raise error("execve", filename=os.fsdecode(path))


def _exit(status: int) -> NoReturn:
    """_exit(2): end the process now, without atexit handlers or flushing (a forked child)."""
    lib._exit(_int("_exit", "status", status))
    raise AssertionError("_exit returned")  # pragma: no cover


def waitpid(pid: int, options: int = 0) -> tuple[int, int]:
    """waitpid(2): (pid, wait status); (0, 0) with WNOHANG and nothing to reap.

    Retried on EINTR; LibcChildProcessError (ECHILD) when there is no such
    child. Decode the status with `WaitStatus`.
    """
    status = ffi.new("int *")
    pid, options = _int("waitpid", "pid", pid), _int("waitpid", "options", options)
    reaped = _retry("waitpid", lib.waitpid, pid, status, options)
    return reaped, int(status[0])


def kill(pid: int, sig: int) -> None:
    """kill(2); sig 0 only checks. LibcProcessLookupError (ESRCH) when it is gone."""
    _check("kill", lib.kill(_int("kill", "pid", pid), _int("kill", "sig", sig)))


def killpg(pgid: int, sig: int) -> None:
    """Signal process group ``pgid``; 0 and 1 (our own group, every process) are refused."""
    pgid = _int("kill", "pgid", pgid)
    if pgid <= 1:
        raise ArgumentError("kill", "pgid", f"must be above 1: refusing to signal group {pgid}")
    _check("kill", lib.kill(-pgid, _int("kill", "sig", sig)))


def tgkill(tgid: int, tid: int, sig: int) -> None:
    """tgkill(2): signal thread ``tid`` of process ``tgid`` alone (a thread-directed signal,
    which no other thread of the process can take)."""
    call = "tgkill"
    _check(call, lib.zocket_tgkill(_int(call, "tgid", tgid), _int(call, "tid", tid), _int(call, "sig", sig)))


def sched_slice(tid: int) -> int:
    """The time slice of thread ``tid`` (0: the caller) in ns, from sched_getattr(2).

    Linux 6.12 and later let a thread under a fair policy ask for its own slice (0.1
    to 100 ms). One with a shorter slice than the running thread's takes the CPU
    from it when it wakes; one with a longer slice never does. Earlier kernels
    report 0 here and ignore the value asked for.
    """
    call = "sched_getattr"
    attr = ffi.new("struct zocket_sched_attr *")
    _check(call, lib.zocket_sched_getattr(_int(call, "tid", tid), attr))
    return int(attr.sched_runtime)


def set_sched_slice(tid: int, slice_ns: int) -> bool:
    """Give thread ``tid`` a time slice of ``slice_ns`` (0: the kernel's default).

    Its policy, nice value and reset-on-fork flag are kept: sched_getattr(2), then
    sched_setattr(2). A thread under another policy than SCHED_OTHER or SCHED_BATCH
    has no slice and is left alone: False. The two calls are not atomic: a nice value
    the thread sets between them is undone.
    """
    call = "sched_setattr"
    slice_ns = _int(call, "slice_ns", slice_ns, 0)
    return _check(call, lib.zocket_set_slice(_int(call, "tid", tid), slice_ns)) == 0


def setpgid(pid: int, pgid: int) -> None:
    """setpgid(2); (0, 0) makes the caller the leader of a new process group."""
    _check("setpgid", lib.setpgid(_int("setpgid", "pid", pid), _int("setpgid", "pgid", pgid)))


def getpgid(pid: int) -> int:
    """getpgid(2): the process group of ``pid`` (0: the caller)."""
    return _check("getpgid", lib.getpgid(_int("getpgid", "pid", pid)))


def setsid() -> int:
    """setsid(2): a new session and process group led by the caller; returns its id.

    EPERM when the caller already leads a process group (call it in a child).
    """
    return _check("setsid", lib.setsid())


def getpid() -> int:
    """getpid(2): this process's id (after a raw `fork`, the child's own)."""
    return int(lib.getpid())


def getppid() -> int:
    """getppid(2): the parent's pid; 1 or a subreaper's once the parent died."""
    return int(lib.getppid())


#: prctl options whose answer the kernel writes through a pointer in arg2.
_PRCTL_READS = (PR_GET_PDEATHSIG, PR_GET_CHILD_SUBREAPER)


def prctl(
    option: int, arg2: int | bytes = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0
) -> int:
    """prctl(2), returning what the option answers.

    - PR_GET_PDEATHSIG, PR_GET_CHILD_SUBREAPER: no argument; returns the value
      the kernel writes through arg2 (the signal; 1 or 0).
    - PR_SET_NAME: ``arg2`` is the name as bytes (the kernel keeps 15 bytes).
    - PR_GET_NAME answers bytes: use `get_process_name`.
    - any other option: integer arguments, passed as unsigned long; returns
      prctl's own result.
    """
    call = "prctl"
    option = _int(call, "option", option)
    if option in _PRCTL_READS:
        if arg2 != 0 or arg3 != 0 or arg4 != 0 or arg5 != 0:
            raise ArgumentError(call, "arg2", "is not taken: the answer is returned")
        value = ffi.new("int *")
        _check(call, lib.prctl(option, value, *[ffi.cast("unsigned long", 0)] * 3))
        return int(value[0])
    if option == PR_GET_NAME:
        raise ArgumentError(call, "option", "PR_GET_NAME answers bytes: use get_process_name()")
    if option == PR_SET_NAME and isinstance(arg2, (bytes, bytearray)):
        if b"\0" in arg2:
            raise ArgumentError(call, "arg2", "must not contain a NUL byte")
        name = ffi.new("char[]", bytes(arg2))
        return _check(call, lib.prctl(option, name, *[ffi.cast("unsigned long", 0)] * 3))
    if not isinstance(arg2, int):
        kind = type(arg2).__name__
        raise ArgumentError(call, "arg2", f"must be an int for this option, not {kind}")
    args = [
        ffi.cast("unsigned long", _int(call, name, value, 0, _ULONG_MAX))
        for name, value in (("arg2", arg2), ("arg3", arg3), ("arg4", arg4), ("arg5", arg5))
    ]
    return _check(call, lib.prctl(option, *args))


def get_process_name() -> bytes:
    """prctl(PR_GET_NAME): the calling thread's name (``comm``), at most 15 bytes."""
    buf = ffi.new("char[]", 16)
    _check("prctl", lib.prctl(PR_GET_NAME, buf, *[ffi.cast("unsigned long", 0)] * 3))
    return ffi.string(buf)  # type: ignore[no-any-return]


def pidfd_open(pid: int, flags: int = 0) -> int:
    """pidfd_open(2): an fd that becomes readable when the process exits (close-on-exec).

    ENOSYS where the kernel or headers lack it (see HAS_PIDFD_OPEN).
    """
    call = "pidfd_open"
    flags = _int(call, "flags", flags, 0, _UINT_MAX)
    return _check(call, lib.zocket_pidfd_open(_int(call, "pid", pid), flags))


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """Signal through a pidfd: never reaches a recycled pid."""
    call = "pidfd_send_signal"
    _check(call, lib.zocket_pidfd_send_signal(_fd(call, pidfd, "pidfd"), _int(call, "sig", sig), 0))


@dataclass(frozen=True)
class WaitStatus:
    """A decoded wait status: exited, killed by a signal, stopped, or continued.

    Stopped and continued come only from waitpid with WUNTRACED or WCONTINUED.
    """

    raw: int

    @property
    def exited(self) -> bool:
        """The child called exit (WIFEXITED)."""
        return bool(lib.WIFEXITED(self.raw))

    @property
    def exit_code(self) -> int | None:
        """Its exit code, if it exited."""
        return int(lib.WEXITSTATUS(self.raw)) if self.exited else None

    @property
    def signaled(self) -> bool:
        """A signal killed the child (WIFSIGNALED)."""
        return bool(lib.WIFSIGNALED(self.raw))

    @property
    def signal(self) -> int | None:
        """The signal that killed it, if one did."""
        return int(lib.WTERMSIG(self.raw)) if self.signaled else None

    @property
    def stopped(self) -> bool:
        """The child is stopped, not gone (WIFSTOPPED; waitpid with WUNTRACED)."""
        return bool(lib.WIFSTOPPED(self.raw))

    @property
    def stop_signal(self) -> int | None:
        """The signal that stopped it (SIGSTOP, SIGTSTP, ...), if stopped."""
        return int(lib.WSTOPSIG(self.raw)) if self.stopped else None

    @property
    def continued(self) -> bool:
        """The child was resumed by SIGCONT (WIFCONTINUED; waitpid with WCONTINUED)."""
        return bool(lib.WIFCONTINUED(self.raw))

    @property
    def shell_status(self) -> int:
        """The status a shell would report: the exit code, or 128 + the signal.

        For a stopped child, 128 + the stopping signal, as a shell reports a
        stopped job. A continued child has no status to report (ValueError).
        """
        if self.exited:
            return int(lib.WEXITSTATUS(self.raw))
        if self.signaled:
            return 128 + int(lib.WTERMSIG(self.raw))
        if self.stopped:
            return 128 + int(lib.WSTOPSIG(self.raw))
        raise ValueError(f"wait status {self.raw:#x} is a continued child: it has no exit status")


def reap(pid: int = -1) -> tuple[int, WaitStatus] | None:
    """waitpid(pid, WNOHANG): (pid, status) of one exited child, or None; ECHILD is None."""
    try:
        reaped, status = waitpid(pid, WNOHANG)
    except ChildProcessError:
        return None
    return (reaped, WaitStatus(status)) if reaped else None


# --- the fork-to-exec path ----------------------------------------------------------------------

SPAWN_STAGES = {
    lib.ZOCKET_STAGE_EXEC: "exec",
    lib.ZOCKET_STAGE_SETPGID: "setpgid",
    lib.ZOCKET_STAGE_PDEATHSIG: "prctl(PR_SET_PDEATHSIG)",
    lib.ZOCKET_STAGE_FDS: "placing the inherited fds",
    lib.ZOCKET_STAGE_CHDIR: "chdir",
    lib.ZOCKET_STAGE_ADOPT: "sending the seccomp listener",
}
"""What `spawn`'s child reports it was doing when it failed, by stage number."""
#: Reports of the child that are no failure: the seccomp listener comes with the first
#: (as SCM_RIGHTS), the second says why the filter could not be installed (its errno).
SPAWN_ADOPT_LISTENER: int = lib.ZOCKET_STAGE_ADOPT_LISTENER
SPAWN_ADOPT_UNAVAILABLE: int = lib.ZOCKET_STAGE_ADOPT_UNAVAILABLE
SPAWN_REPORT_SIZE = 2 * ffi.sizeof("int")
"""The size of that report on the error pipe: (stage, errno) as two C ints."""

# Room after "LISTEN_PID=" for any pid (pid_max is at most 2**22 on Linux, but be generous).
_PID_SLOT = b"LISTEN_PID=" + b"0" * 20


def spawn(
    candidates: Sequence[bytes],
    argv: Sequence[bytes],
    env: Sequence[bytes],
    *,
    fds: Sequence[int],
    errpipe: int,
    listen_pid: bool = True,
    new_group: bool = True,
    deathsig: int = 0,
    cwd: bytes | None = None,
    seccomp_filter: SeccompProgram | None = None,
    slice_ns: int = 0,
) -> int:
    """fork and exec with the held ``fds`` on 3, 4, ... and nothing else inherited.

    Call it from a thread that lives as long as the child should: the kernel
    sends PR_SET_PDEATHSIG's ``deathsig`` when the *thread* that forked exits,
    not only when the process does. The holder spawns from its main thread.

    ``candidates`` are the paths to try in order (the PATH search, done by the
    caller). ``env`` is a list of ``b"NAME=value"``; with ``listen_pid`` a
    ``LISTEN_PID`` entry holding the child's own pid is added in the child. If
    exec fails the child writes (stage, errno) as two ints on ``errpipe``
    (which must be close-on-exec) and exits 127; a successful exec closes it.
    Returns the child's pid.

    With ``seccomp_filter`` the child installs it just before exec with a notification
    listener (seccomp_set_mode_filter, setting PR_SET_NO_NEW_PRIVS only if the
    kernel asks for it) and sends the listener over ``errpipe``, which must then be
    a SOCK_SEQPACKET socket: a (SPAWN_ADOPT_LISTENER, 0) report with the fd attached.
    If the filter cannot be installed the report is (SPAWN_ADOPT_UNAVAILABLE, errno)
    and the child execs all the same.

    With ``slice_ns`` the child asks for that time slice before exec (see
    `set_sched_slice`); its own processes and threads inherit it. A kernel that
    refuses it is not a reason to fail the spawn.
    """
    if len(fds) > SPAWN_MAX_FDS:
        raise ArgumentError(
            "spawn", "fds", f"must be at most {SPAWN_MAX_FDS} fds to hand over, not {len(fds)}"
        )
    fds = [_fd("spawn", fd, "fds") for fd in fds]
    c_paths, keep_paths = _cstrings(list(candidates))
    c_argv, keep_argv = _cstrings(list(argv))
    env_items = [e for e in env if not e.startswith(b"LISTEN_PID=")]
    slot = -1
    if listen_pid:
        slot = len(env_items)
        env_items.append(_PID_SLOT)
    c_env, keep_env = _cstrings(env_items)
    c_fds = ffi.new("int[]", list(fds) or [0])
    c_cwd = ffi.new("char[]", cwd) if cwd is not None else ffi.NULL
    c_filter = seccomp_filter.fprog if seccomp_filter is not None else ffi.NULL
    pid = lib.zocket_spawn(
        c_paths, c_argv, c_env, slot, c_fds, len(fds), errpipe, int(new_group), deathsig, c_cwd,
        c_filter, _int("spawn", "slice_ns", slice_ns, 0),
    )
    if pid == -1:
        raise error("fork")
    del keep_paths, keep_argv, keep_env, c_filter
    return int(pid)


# --- what a supervising tool reaches for: poll, peer credentials ------------------------------


def poll(fds: Sequence[tuple[int, int]], timeout: float | None = None) -> list[tuple[int, int]]:
    """poll(2) over (fd, events) pairs: the (fd, revents) of those that are ready.

    ``timeout`` in seconds (None: wait for ever; 0: just look). Retried on
    EINTR with the time that is left. Events: POLLIN, POLLOUT, POLLPRI; in
    revents also POLLERR, POLLHUP, POLLNVAL (an fd that is not open).
    """
    call = "poll"
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
    ):
        raise ArgumentError(call, "timeout", f"must be seconds >= 0 or None, not {timeout!r}")
    items = ffi.new("struct pollfd[]", max(len(fds), 1))
    for i, (fd, events) in enumerate(fds):
        items[i].fd = _int(call, "fd", fd)
        items[i].events = _int(call, "events", events, -(2**15), 2**15 - 1)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is None:
            ms = -1
        else:
            ms = min(_INT_MAX, max(0, int((deadline - time.monotonic()) * 1000 + 0.999)))
        count = lib.poll(items, len(fds), ms)
        if count != -1:
            break
        err = ffi.errno
        if err != _errno.EINTR:
            raise error(call, err)
    if count == 0:
        return []
    return [(items[i].fd, int(items[i].revents)) for i in range(len(fds)) if items[i].revents]


def peercred(fd: int) -> tuple[int, int, int]:
    """SO_PEERCRED of a connected AF_UNIX socket: the peer's (pid, uid, gid).

    The kernel records them at connect() (or socketpair()): who the other end
    was then, which a process cannot fake, unlike anything it sends.
    """
    cred = ffi.new("struct ucred *")
    size = ffi.new("socklen_t *", ffi.sizeof("struct ucred"))
    _check("getsockopt", lib.getsockopt(_fd("getsockopt", fd), SOL_SOCKET, SO_PEERCRED, cred, size))
    return int(cred.pid), int(cred.uid), int(cred.gid)

# --- seccomp user notification ----------------------------------------------------------------
#
# A filter installed with SECCOMP_FILTER_FLAG_NEW_LISTENER returns a listener fd; each syscall
# the filter answers with SECCOMP_RET_USER_NOTIF then waits in the kernel until the holder of
# the listener reads it (notif_recv) and answers (notif_respond, after notif_addfd if it wants
# an fd in the caller). The listener is readable (POLLIN) while a notification waits and hangs
# up (POLLHUP) once no process uses the filter any more. notif_recv blocks when nothing waits:
# poll first. ENOENT from any of these calls means the caller is gone, or its syscall was
# interrupted by a signal: the notification is void.

SECCOMP_SET_MODE_FILTER: int = lib.SECCOMP_SET_MODE_FILTER
SECCOMP_FILTER_FLAG_NEW_LISTENER: int = lib.SECCOMP_FILTER_FLAG_NEW_LISTENER
SECCOMP_RET_ALLOW: int = lib.SECCOMP_RET_ALLOW
SECCOMP_RET_ERRNO: int = lib.SECCOMP_RET_ERRNO
SECCOMP_RET_USER_NOTIF: int = lib.SECCOMP_RET_USER_NOTIF
SECCOMP_RET_KILL_PROCESS: int = lib.SECCOMP_RET_KILL_PROCESS
SECCOMP_USER_NOTIF_FLAG_CONTINUE: int = lib.SECCOMP_USER_NOTIF_FLAG_CONTINUE
SECCOMP_ADDFD_FLAG_SETFD: int = lib.SECCOMP_ADDFD_FLAG_SETFD
SECCOMP_ADDFD_FLAG_SEND: int = lib.SECCOMP_ADDFD_FLAG_SEND
PR_SET_NO_NEW_PRIVS: int = lib.PR_SET_NO_NEW_PRIVS
PR_GET_NO_NEW_PRIVS: int = lib.PR_GET_NO_NEW_PRIVS
#: This architecture's AUDIT_ARCH_* value, the one seccomp_data.arch holds; 0 if unknown.
AUDIT_ARCH: int = lib.ZOCKET_AUDIT_ARCH
SYS_BIND: int = lib.ZOCKET_SYS_bind
SYS_LISTEN: int = lib.ZOCKET_SYS_listen
SYS_SHUTDOWN: int = lib.ZOCKET_SYS_shutdown
#: -1 where this architecture has no seccomp syscall.
SYS_SECCOMP: int = lib.ZOCKET_SYS_seccomp

_SECCOMP_DATA_NR = ffi.offsetof("struct seccomp_data", "nr")
_SECCOMP_DATA_ARCH = ffi.offsetof("struct seccomp_data", "arch")
_SECCOMP_DATA_ARGS = ffi.offsetof("struct seccomp_data", "args")


@dataclass(frozen=True)
class SeccompProgram:
    """A classic BPF program for seccomp, kept alive with the C memory it lives in.

    ``fprog`` is the ``struct sock_fprog *`` the kernel reads; ``actions`` says
    what it does, for messages and tests.
    """

    fprog: Any
    instructions: Any
    actions: tuple[tuple[int, int], ...]
    default: int


def seccomp_program(
    actions: Mapping[int, int],
    default: int = SECCOMP_RET_ALLOW,
    arch: int = AUDIT_ARCH,
    unless: Mapping[int, tuple[int, int]] | None = None,
) -> SeccompProgram:
    """A filter: syscall number -> SECCOMP_RET_* action, everything else ``default``.

    ``unless`` maps a syscall number to (argument index, value): when that argument's
    low 32 bits equal the value, the syscall gets ``default`` instead of its action
    (how shutdown(fd, SHUT_WR), every connection's half-close, stays at full speed).
    A syscall made under another architecture's convention (i386 code on x86_64)
    gets ``default`` too: its numbers mean other calls. Built in the parent, so the
    fork-to-exec child only hands a pointer to the kernel.
    """
    if not arch:
        raise ValueError("this architecture's AUDIT_ARCH value is unknown to zocket")
    unless = dict(unless or {})
    pairs = tuple(sorted(actions.items()))
    if len(pairs) > 40:
        raise ValueError("at most 40 syscalls in one program")
    ld = lib.BPF_LD | lib.BPF_W | lib.BPF_ABS
    jeq = lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K
    ret = lib.BPF_RET | lib.BPF_K
    code: list[tuple[int, int, int, int]] = [
        (ld, 0, 0, _SECCOMP_DATA_ARCH),
        (jeq, 1, 0, arch),  # the right arch: skip the next instruction
        (ret, 0, 0, default),
        (ld, 0, 0, _SECCOMP_DATA_NR),
    ]
    for nr, action in pairs:
        if nr in unless:
            index, value = unless[nr]
            if not 0 <= index < 6:
                raise ValueError(f"a syscall has arguments 0 to 5, not {index}")
            low = _SECCOMP_DATA_ARGS + 8 * index + (0 if sys.byteorder == "little" else 4)
            code.append((jeq, 0, 4, nr & 0xFFFFFFFF))  # not this call: on to the next one
            code.append((ld, 0, 0, low))
            code.append((jeq, 1, 0, value & 0xFFFFFFFF))
            code.append((ret, 0, 0, action))
            code.append((ret, 0, 0, default))
        else:
            code.append((jeq, 0, 1, nr & 0xFFFFFFFF))
            code.append((ret, 0, 0, action))
    code.append((ret, 0, 0, default))
    instructions = ffi.new("struct sock_filter[]", len(code))
    for slot, (op, jt, jf, k) in zip(instructions, code):
        slot.code, slot.jt, slot.jf, slot.k = op, jt, jf, k
    fprog = ffi.new("struct sock_fprog *")
    fprog.len = len(code)
    fprog.filter = instructions
    return SeccompProgram(fprog, instructions, pairs, default)


def adoption_program() -> SeccompProgram:
    """What zocket installs in a generation: bind(), listen() and shutdown() go to the holder.

    shutdown(SHUT_RD or SHUT_RDWR) of a listening socket stops it listening, for
    every process that shares it: WEBrick does that to its listeners when it stops,
    which would refuse every connection until the next bind. shutdown(SHUT_WR), a
    connection's half-close that node and Go make for every response, is let
    through in the kernel: it cannot stop a listener.
    """
    notify = SECCOMP_RET_USER_NOTIF
    return seccomp_program(
        {SYS_BIND: notify, SYS_LISTEN: notify, SYS_SHUTDOWN: notify},
        unless={SYS_SHUTDOWN: (1, SHUT_WR)},
    )


def seccomp_set_mode_filter(program: SeccompProgram, flags: int = 0) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER): install ``program`` in this thread, for good.

    Returns the listener fd (close-on-exec) with SECCOMP_FILTER_FLAG_NEW_LISTENER,
    else 0. Without CAP_SYS_ADMIN, set PR_SET_NO_NEW_PRIVS first (EACCES otherwise).
    """
    return _check("seccomp", lib.zocket_seccomp_set_mode_filter(flags, program.fprog))


@dataclass(frozen=True)
class Notification:
    """One syscall waiting for an answer: ``pid`` is the calling *thread*'s id."""

    id: int
    pid: int
    nr: int
    arch: int
    args: tuple[int, ...]


def notif_recv(listener: int) -> Notification:
    """SECCOMP_IOCTL_NOTIF_RECV: the next waiting syscall. Blocks if none waits."""
    notif = ffi.new("struct seccomp_notif *")  # zeroed, as the kernel requires
    _retry("ioctl(SECCOMP_IOCTL_NOTIF_RECV)", lib.zocket_notif_recv, listener, notif)
    data = notif.data
    return Notification(
        int(notif.id), int(notif.pid), int(data.nr), int(data.arch), tuple(int(a) for a in data.args)
    )


def notif_id_valid(listener: int, id: int) -> bool:
    """SECCOMP_IOCTL_NOTIF_ID_VALID: is the caller still waiting in that syscall?

    Check it after reading the caller's memory: a pid read from the notification
    may have been recycled by the time the memory was read.
    """
    if lib.zocket_notif_id_valid(listener, id) == 0:
        return True
    err = ffi.errno
    if err == _errno.ENOENT:
        return False
    raise error("ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID)", err)


def notif_addfd(
    listener: int, id: int, srcfd: int, newfd: int | None = None, cloexec: bool = False
) -> int:
    """SECCOMP_IOCTL_NOTIF_ADDFD: install a copy of our ``srcfd`` in the caller.

    With ``newfd`` it goes at that number (SECCOMP_ADDFD_FLAG_SETFD; what was there is
    closed, as dup2 does), else at the lowest free one. Returns the caller's fd number.
    """
    addfd = ffi.new("struct seccomp_notif_addfd *")
    addfd.id = id
    addfd.srcfd = srcfd
    if newfd is not None:
        addfd.flags = SECCOMP_ADDFD_FLAG_SETFD
        addfd.newfd = newfd
    addfd.newfd_flags = O_CLOEXEC if cloexec else 0
    return _check("ioctl(SECCOMP_IOCTL_NOTIF_ADDFD)", lib.zocket_notif_addfd(listener, addfd))


def notif_respond(
    listener: int, id: int, value: int = 0, error: int = 0, continue_: bool = False
) -> None:
    """SECCOMP_IOCTL_NOTIF_SEND: the syscall returns ``value``, or fails with ``error``.

    ``continue_`` lets the kernel run the syscall as if no filter had stopped it
    (SECCOMP_USER_NOTIF_FLAG_CONTINUE); ``value`` and ``error`` must be 0 then.
    """
    resp = ffi.new("struct seccomp_notif_resp *")
    resp.id = id
    resp.val = value
    resp.error = -error if error > 0 else error
    resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE if continue_ else 0
    _check("ioctl(SECCOMP_IOCTL_NOTIF_SEND)", lib.zocket_notif_send(listener, resp))


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """pidfd_getfd(2): a copy (close-on-exec) of another process's fd ``targetfd``."""
    return _check("pidfd_getfd", lib.zocket_pidfd_getfd(pidfd, targetfd, 0))


def read_process_memory(pid: int, address: int, size: int) -> bytes:
    """``size`` bytes at ``address`` in process (or thread) ``pid``, from /proc/PID/mem.

    Needs the right to ptrace it (a parent of the same user may, under Yama's
    default). A short read (the range ends in unmapped memory) returns fewer bytes.
    """
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise error("open(/proc/PID/mem)", exc.errno or _errno.EIO) from None
    try:
        return os.pread(fd, size, address)
    except OSError as exc:
        raise error("pread(/proc/PID/mem)", exc.errno or _errno.EIO) from None
    finally:
        os.close(fd)


# --- inotify -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InotifyEvent:
    """One inotify event: the watch, the IN_* mask, the rename cookie and the name in the dir."""

    wd: int
    mask: int
    cookie: int
    name: str


_EVENT_SIZE = ffi.sizeof("struct inotify_event")
_EVENT_FIELDS = [
    (ffi.offsetof("struct inotify_event", f), ffi.sizeof(t.type))
    for f, t in ffi.typeof("struct inotify_event").fields
    if f in ("wd", "mask", "cookie", "len")
]


def inotify_init1(flags: int = IN_CLOEXEC | IN_NONBLOCK) -> int:
    """inotify_init1(2): a new inotify fd; close-on-exec and non-blocking by default."""
    return _check("inotify_init1", lib.inotify_init1(_int("inotify_init1", "flags", flags)))


def inotify_add_watch(fd: int, path: str | bytes, mask: int) -> int:
    """inotify_add_watch(2): the watch descriptor of ``path`` (the error's filename)."""
    call = "inotify_add_watch"
    fd, mask = _fd(call, fd), _int(call, "mask", mask, 0, _UINT_MAX)
    return _check(call, lib.inotify_add_watch(fd, os.fsencode(path), mask), path)


def inotify_rm_watch(fd: int, wd: int) -> None:
    """inotify_rm_watch(2); the kernel then queues IN_IGNORED for ``wd``."""
    call = "inotify_rm_watch"
    _check(call, lib.inotify_rm_watch(_fd(call, fd), _int(call, "wd", wd)))


def parse_inotify_events(data: bytes) -> list[InotifyEvent]:
    """Split what read() returned on an inotify fd into events."""
    events = []
    offset = 0
    while offset + _EVENT_SIZE <= len(data):
        wd, mask, cookie, length = (
            int.from_bytes(data[offset + o : offset + o + s], sys.byteorder, signed=(i == 0))
            for i, (o, s) in enumerate(_EVENT_FIELDS)
        )
        raw_name = data[offset + _EVENT_SIZE : offset + _EVENT_SIZE + length]
        events.append(InotifyEvent(wd, mask, cookie, os.fsdecode(raw_name.split(b"\0", 1)[0])))
        offset += _EVENT_SIZE + length
    return events


def read_inotify_events(fd: int, bufsize: int = 65536) -> list[InotifyEvent]:
    """The events waiting on an inotify fd; [] when none (non-blocking fd)."""
    try:
        return parse_inotify_events(read(fd, bufsize))
    except BlockingIOError:
        return []


# --- what a waiting process looks like from /proc ---------------------------------------------

#: Syscalls a server waits for connections in, by this architecture's numbers.
WAIT_SYSCALLS: dict[int, str] = {
    int(getattr(lib, attr)): attr[len("ZOCKET_SYS_") :]
    for attr in dir(lib)
    if attr.startswith("ZOCKET_SYS_") and int(getattr(lib, attr)) >= 0
}
POLLIN: int = lib.POLLIN
EPOLLIN: int = lib.EPOLLIN
FD_SETSIZE: int = lib.FD_SETSIZE
POLLFD_SIZE: int = ffi.sizeof("struct pollfd")
POLLFD_FD: tuple[int, int] = (ffi.offsetof("struct pollfd", "fd"), ffi.sizeof("int"))
POLLFD_EVENTS: tuple[int, int] = (ffi.offsetof("struct pollfd", "events"), ffi.sizeof("short"))
