"""Typed glibc bindings for Linux: sockets, fds, processes, signals, inotify, seccomp.

Each function keeps the C call's name and meaning but speaks Python: fds are
ints, addresses are the values the ``socket`` module uses, and a failure
raises the ``OSError`` subclass that matches errno (``FileNotFoundError``,
``PermissionError``, ...) with the call's name in the message and in the
exception's ``call`` attribute. Calls that block are retried on EINTR, after
giving Python's signal handlers a chance to run (an exception raised by a
handler propagates, as with the standard library since PEP 475).

Addresses:
    AF_INET   ``("127.0.0.1", 8000)``
    AF_INET6  ``("::1", 8000, flowinfo, scope_id)`` (a 2-tuple is accepted)
    AF_UNIX   ``"/run/app.sock"``; an abstract name starts with a NUL:
              ``"\\0name"`` on input, ``b"\\0name"`` on output, as in ``socket``.

Linux only; every fd this module creates is close-on-exec unless asked.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import socket as _socket
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ._libc import ffi, lib
from .constants import *  # noqa: F403 - the constants are part of this module's API
from .constants import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
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
    SCM_RIGHTS,
    SHUT_WR,
    SOCK_CLOEXEC,
    SOL_SOCKET,
    WNOHANG,
)

SockAddr = tuple[str, int] | tuple[str, int, int, int] | str | bytes

HAS_CLOSE_RANGE: bool = bool(lib.HAS_CLOSE_RANGE)
HAS_PIDFD_OPEN: bool = bool(lib.HAS_PIDFD_OPEN)
HAS_PIDFD_SEND_SIGNAL: bool = bool(lib.HAS_PIDFD_SEND_SIGNAL)
SPAWN_MAX_FDS: int = lib.ZOCKET_SPAWN_MAX_FDS
#: Seccomp user notification with ADDFD and SETFD in the headers (it also needs Linux 5.14).
HAS_SECCOMP_ADOPT: bool = bool(lib.HAS_SECCOMP_ADOPT)
HAS_PIDFD_GETFD: bool = bool(lib.HAS_PIDFD_GETFD)


# --- errors: the one place where -1 and errno become exceptions -------------------------------


def error(call: str, err: int | None = None, filename: Any = None) -> OSError:
    """The OSError for a failed call; reads errno first, before any other cffi call."""
    if err is None:
        err = ffi.errno
    message = f"{call}: {os.strerror(err)}"
    exc = OSError(err, message) if filename is None else OSError(err, message, filename)
    exc.call = call  # type: ignore[attr-defined]
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


# --- socket addresses --------------------------------------------------------------------------

_SUN_PATH_MAX = ffi.sizeof(ffi.typeof("struct sockaddr_un").fields[1][1].type)
_SUN_PATH_OFFSET = ffi.offsetof("struct sockaddr_un", "sun_path")


def _inet_parts(address: SockAddr) -> tuple[str, int, int, int]:
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise TypeError(f"an IP address is a (host, port[, flowinfo, scope_id]) tuple: {address!r}")
    host, port = address[0], address[1]
    flowinfo, scope_id = (address[2], address[3]) if len(address) == 4 else (0, 0)
    return host, port, flowinfo, scope_id


def pack_sockaddr(family: int, address: SockAddr, call: str = "bind") -> tuple[Any, int]:
    """A C sockaddr for a Python address value: (cdata, length); ``call`` names errors."""
    if family == AF_INET:
        host, port, _, _ = _inet_parts(address)
        try:
            packed = ipaddress.IPv4Address(host).packed
        except ValueError:
            raise ValueError(f"not an IPv4 address: {host!r}") from None
        sin = ffi.new("struct sockaddr_in *")
        sin.sin_family = AF_INET
        sin.sin_port = lib.htons(_port(port))
        ffi.memmove(ffi.addressof(sin.sin_addr), packed, 4)
        return sin, ffi.sizeof(sin[0])
    if family == AF_INET6:
        host, port, flowinfo, scope_id = _inet_parts(address)
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {host!r}") from None
        if ip.scope_id:
            scope_id = scope_id or _interface_index(ip.scope_id)
        sin6 = ffi.new("struct sockaddr_in6 *")
        sin6.sin6_family = AF_INET6
        sin6.sin6_port = lib.htons(_port(port))
        sin6.sin6_flowinfo = flowinfo
        sin6.sin6_scope_id = scope_id
        ffi.memmove(ffi.addressof(sin6.sin6_addr), ip.packed, 16)
        return sin6, ffi.sizeof(sin6[0])
    if family == AF_UNIX:
        path = os.fsencode(address) if isinstance(address, str) else address
        if not isinstance(path, bytes):
            raise TypeError(f"AF_UNIX address must be str or bytes, not {type(address).__name__}")
        # A filesystem path needs room for its NUL; an abstract name has none.
        room = _SUN_PATH_MAX if path.startswith(b"\0") else _SUN_PATH_MAX - 1
        if len(path) > room:
            raise error(call, _errno.ENAMETOOLONG, os.fsdecode(path))
        sun = ffi.new("struct sockaddr_un *")
        sun.sun_family = AF_UNIX
        ffi.memmove(sun.sun_path, path, len(path))
        return sun, _SUN_PATH_OFFSET + len(path) + (0 if path.startswith(b"\0") else 1)
    raise ValueError(f"unsupported address family {family}")


def unpack_sockaddr(addr: Any, length: int) -> SockAddr:
    """The Python address value for a C sockaddr the kernel filled in."""
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


def _port(port: int) -> int:
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise OverflowError(f"port must be 0-65535, not {port!r}")
    return port


def _interface_index(name: str) -> int:
    try:
        return int(name)
    except ValueError:
        return _socket.if_nametoindex(name)


def _sockaddr_call(call: str, func: Callable[..., int], fd: int) -> SockAddr:
    storage = ffi.new("struct sockaddr_storage *")
    length = ffi.new("socklen_t *", ffi.sizeof(storage[0]))
    _check(call, func(fd, ffi.cast("struct sockaddr *", storage), length))
    return unpack_sockaddr(storage, length[0])


# --- sockets -------------------------------------------------------------------------------------


def socket(family: int, type: int, protocol: int = 0) -> int:
    """socket(2). Pass SOCK_CLOEXEC in ``type`` unless the fd is meant for a child."""
    return _check("socket", lib.socket(family, type, protocol))


def socketpair(family: int, type: int, protocol: int = 0) -> tuple[int, int]:
    sv = ffi.new("int[2]")
    _check("socketpair", lib.socketpair(family, type, protocol, sv))
    return sv[0], sv[1]


def setsockopt(fd: int, level: int, option: int, value: int | bytes) -> None:
    if isinstance(value, int):
        buf = ffi.new("int *", value)
        size = ffi.sizeof("int")
    else:
        buf = ffi.from_buffer(value)
        size = len(value)
    _check("setsockopt", lib.setsockopt(fd, level, option, buf, size))


def getsockopt(fd: int, level: int, option: int) -> int:
    """An integer option's value."""
    buf = ffi.new("int *")
    size = ffi.new("socklen_t *", ffi.sizeof("int"))
    _check("getsockopt", lib.getsockopt(fd, level, option, buf, size))
    return int(buf[0])


def getsockopt_bytes(fd: int, level: int, option: int, buflen: int) -> bytes:
    buf = ffi.new("char[]", buflen)
    size = ffi.new("socklen_t *", buflen)
    _check("getsockopt", lib.getsockopt(fd, level, option, buf, size))
    return bytes(ffi.buffer(buf, size[0]))


def _family(fd: int, call: str) -> int:
    """The socket's own family (SO_DOMAIN); a failure is reported as ``call``'s."""
    value = ffi.new("int *")
    size = ffi.new("socklen_t *", ffi.sizeof("int"))
    _check(call, lib.getsockopt(fd, SOL_SOCKET, lib.SO_DOMAIN, value, size))
    return int(value[0])


def bind(fd: int, address: SockAddr, family: int | None = None) -> None:
    """bind(2). ``family`` defaults to the socket's own (SO_DOMAIN)."""
    if family is None:
        family = _family(fd, "bind")
    addr, length = pack_sockaddr(family, address)
    filename = address if family == AF_UNIX else None
    _check("bind", lib.bind(fd, ffi.cast("struct sockaddr *", addr), length), filename)


def connect(fd: int, address: SockAddr, family: int | None = None) -> None:
    """connect(2). Not retried on EINTR: the kernel goes on connecting; wait for writability."""
    if family is None:
        family = _family(fd, "connect")
    addr, length = pack_sockaddr(family, address, "connect")
    _check("connect", lib.connect(fd, ffi.cast("struct sockaddr *", addr), length))


def listen(fd: int, backlog: int) -> None:
    _check("listen", lib.listen(fd, backlog))


def accept4(fd: int, flags: int = SOCK_CLOEXEC) -> tuple[int, SockAddr]:
    storage = ffi.new("struct sockaddr_storage *")
    length = ffi.new("socklen_t *")

    def call(fd: int, flags: int) -> int:
        length[0] = ffi.sizeof(storage[0])
        return int(lib.accept4(fd, ffi.cast("struct sockaddr *", storage), length, flags))

    conn = _retry("accept4", call, fd, flags)
    return conn, unpack_sockaddr(storage, length[0])


def getsockname(fd: int) -> SockAddr:
    return _sockaddr_call("getsockname", lib.getsockname, fd)


def getpeername(fd: int) -> SockAddr:
    return _sockaddr_call("getpeername", lib.getpeername, fd)


def shutdown(fd: int, how: int) -> None:
    _check("shutdown", lib.shutdown(fd, how))


def sendmsg_fds(fd: int, data: bytes, fds: Sequence[int], flags: int = MSG_NOSIGNAL) -> int:
    """Send ``data`` with ``fds`` attached as SCM_RIGHTS; returns the bytes sent.

    At least one byte of data must go with the fds: a stream socket drops
    ancillary data sent with an empty payload.
    """
    if not data:
        raise ValueError("sendmsg_fds needs at least one byte of data to carry the fds")
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
    return _retry("sendmsg", lib.sendmsg, fd, msg, flags)


def recvmsg_fds(
    fd: int, bufsize: int, maxfds: int, flags: int = MSG_CMSG_CLOEXEC
) -> tuple[bytes, list[int], int]:
    """Receive up to ``bufsize`` bytes and up to ``maxfds`` SCM_RIGHTS fds.

    Returns (data, fds, msg_flags). The fds arrive close-on-exec by default;
    MSG_CTRUNC in msg_flags means the sender attached more than ``maxfds``
    (the kernel closed the surplus).
    """
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
    received = _retry("recvmsg", lib.recvmsg, fd, msg, flags)
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
    """fcntl(2) for the commands that take an int (F_GETFD, F_SETFL, F_DUPFD_CLOEXEC, ...)."""
    return _check("fcntl", lib.fcntl(fd, cmd, ffi.cast("int", arg)))


def get_cloexec(fd: int) -> bool:
    return bool(fcntl(fd, F_GETFD) & FD_CLOEXEC)


def set_cloexec(fd: int, cloexec: bool = True) -> None:
    flags = fcntl(fd, F_GETFD)
    fcntl(fd, F_SETFD, flags | FD_CLOEXEC if cloexec else flags & ~FD_CLOEXEC)


def get_nonblocking(fd: int) -> bool:
    return bool(fcntl(fd, F_GETFL) & O_NONBLOCK)


def set_nonblocking(fd: int, nonblocking: bool = True) -> None:
    """O_NONBLOCK lives on the open file: every process holding the fd sees the change."""
    flags = fcntl(fd, F_GETFL)
    fcntl(fd, F_SETFL, flags | O_NONBLOCK if nonblocking else flags & ~O_NONBLOCK)


def dup(fd: int) -> int:
    """dup(2): the copy is inheritable, as in C. Prefer fcntl(fd, F_DUPFD_CLOEXEC, 0)."""
    return _check("dup", lib.dup(fd))


def dup2(oldfd: int, newfd: int) -> int:
    """dup2(2). Note: when oldfd == newfd nothing happens, close-on-exec included."""
    return _retry("dup2", lib.dup2, oldfd, newfd)


def dup3(oldfd: int, newfd: int, flags: int = 0) -> int:
    return _retry("dup3", lib.dup3, oldfd, newfd, flags)


def close(fd: int) -> None:
    """close(2). EINTR is not retried: on Linux the fd is released whatever close returns."""
    result = lib.close(fd)
    if result == -1 and ffi.errno != _errno.EINTR:
        raise error("close")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """close_range(2): close, or with CLOSE_RANGE_CLOEXEC mark, fds first..last."""
    _check("close_range", lib.zocket_close_range(first, last, flags))


def pipe2(flags: int = O_CLOEXEC) -> tuple[int, int]:
    fds = ffi.new("int[2]")
    _check("pipe2", lib.pipe2(fds, flags))
    return fds[0], fds[1]


def read(fd: int, size: int) -> bytes:
    buf = ffi.new("char[]", max(size, 1))
    count = _retry("read", lib.read, fd, buf, size)
    return bytes(ffi.buffer(buf, count))


def write(fd: int, data: bytes) -> int:
    return _retry("write", lib.write, fd, ffi.from_buffer(data), len(data))


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
    """execvp(3): replaces the process, or raises."""
    c_argv, keep = _cstrings(argv)
    lib.execvp(os.fsencode(file), c_argv)
    del keep
    raise error("execvp", filename=os.fsdecode(file))


def waitpid(pid: int, options: int = 0) -> tuple[int, int]:
    """waitpid(2): (pid, wait status); (0, 0) with WNOHANG and nothing to reap."""
    status = ffi.new("int *")
    reaped = _retry("waitpid", lib.waitpid, pid, status, options)
    return reaped, int(status[0])


def kill(pid: int, sig: int) -> None:
    _check("kill", lib.kill(pid, sig))


def killpg(pgid: int, sig: int) -> None:
    if pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid}")
    _check("kill", lib.kill(-pgid, sig))


def setpgid(pid: int, pgid: int) -> None:
    _check("setpgid", lib.setpgid(pid, pgid))


def getpgid(pid: int) -> int:
    return _check("getpgid", lib.getpgid(pid))


def getpid() -> int:
    return int(lib.getpid())


def getppid() -> int:
    return int(lib.getppid())


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    args = [ffi.cast("unsigned long", a) for a in (arg2, arg3, arg4, arg5)]
    return _check("prctl", lib.prctl(option, *args))


def pidfd_open(pid: int, flags: int = 0) -> int:
    """pidfd_open(2): an fd that becomes readable when the process exits (close-on-exec)."""
    return _check("pidfd_open", lib.zocket_pidfd_open(pid, flags))


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """Signal through a pidfd: never reaches a recycled pid."""
    _check("pidfd_send_signal", lib.zocket_pidfd_send_signal(pidfd, sig, 0))


@dataclass(frozen=True)
class WaitStatus:
    """A decoded wait status."""

    raw: int

    @property
    def exited(self) -> bool:
        return bool(lib.WIFEXITED(self.raw))

    @property
    def exit_code(self) -> int | None:
        return int(lib.WEXITSTATUS(self.raw)) if self.exited else None

    @property
    def signaled(self) -> bool:
        return bool(lib.WIFSIGNALED(self.raw))

    @property
    def signal(self) -> int | None:
        return int(lib.WTERMSIG(self.raw)) if self.signaled else None

    @property
    def shell_status(self) -> int:
        """The status a shell would report: the exit code, or 128 + the signal."""
        if self.exited:
            return int(lib.WEXITSTATUS(self.raw))
        if self.signaled:
            return 128 + int(lib.WTERMSIG(self.raw))
        raise ValueError(f"wait status {self.raw:#x} is neither an exit nor a signal")


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
#: Reports of the child that are no failure: the seccomp listener comes with the first
#: (as SCM_RIGHTS), the second says why the filter could not be installed (its errno).
SPAWN_ADOPT_LISTENER: int = lib.ZOCKET_STAGE_ADOPT_LISTENER
SPAWN_ADOPT_UNAVAILABLE: int = lib.ZOCKET_STAGE_ADOPT_UNAVAILABLE
SPAWN_REPORT_SIZE = 2 * ffi.sizeof("int")

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
    """
    if len(fds) > SPAWN_MAX_FDS:
        raise ValueError(f"at most {SPAWN_MAX_FDS} fds can be handed over, not {len(fds)}")
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
        c_filter,
    )
    if pid == -1:
        raise error("fork")
    del keep_paths, keep_argv, keep_env, c_filter
    return int(pid)


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
    return _check("inotify_init1", lib.inotify_init1(flags))


def inotify_add_watch(fd: int, path: str | bytes, mask: int) -> int:
    return _check("inotify_add_watch", lib.inotify_add_watch(fd, os.fsencode(path), mask), path)


def inotify_rm_watch(fd: int, wd: int) -> None:
    _check("inotify_rm_watch", lib.inotify_rm_watch(fd, wd))


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
