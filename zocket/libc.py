"""Typed glibc bindings for Linux: sockets, fds, processes, signals, inotify.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ._libc import ffi, lib
from .constants import *
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
    SOCK_CLOEXEC,
    SOL_SOCKET,
    WNOHANG,
)

SockAddr = tuple[str, int] | tuple[str, int, int, int] | str | bytes

HAS_CLOSE_RANGE: bool = bool(lib.HAS_CLOSE_RANGE)
HAS_PIDFD_OPEN: bool = bool(lib.HAS_PIDFD_OPEN)
HAS_PIDFD_SEND_SIGNAL: bool = bool(lib.HAS_PIDFD_SEND_SIGNAL)
SPAWN_MAX_FDS: int = lib.ZOCKET_SPAWN_MAX_FDS


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
}
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
    pid = lib.zocket_spawn(
        c_paths, c_argv, c_env, slot, c_fds, len(fds), errpipe, int(new_group), deathsig, c_cwd
    )
    if pid == -1:
        raise error("fork")
    del keep_paths, keep_argv, keep_env
    return int(pid)


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
