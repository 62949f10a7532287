"""Kernel-boundary adoption: a server's own bind() of the held address gets the held socket.

How it works. Just before exec, the child installs a seccomp filter (built by
``libc.adoption_program``) that turns every ``bind()`` and ``listen()`` of the
process, and of everything it starts later, into a *user notification*: the
calling thread stops in the kernel and a message waits on a listener fd, which
the child sends to the holder before it execs. The holder's loop sees that fd
readable and calls `Adopter.handle`, which decides:

- ``bind(fd, addr)`` of a TCP socket to an address a held socket serves (the
  rule of `held_for`): a copy of the held socket is put at the caller's fd
  number (SECCOMP_IOCTL_NOTIF_ADDFD with SETFD, which replaces the caller's own
  socket as dup2 would) and bind() returns 0. The caller goes on with the held
  socket, already bound and listening.
- ``listen(fd)`` of a held socket: returns 0 and leaves the shared backlog alone
  (node asks for 511, http.server for 5). ``shutdown(fd, SHUT_RD or SHUT_RDWR)``
  of a held socket likewise (WEBrick's stop would end the shared socket's
  listening for every generation); the filter never sends SHUT_WR here.
- anything else: the kernel runs the syscall itself (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
  A bind of the held port that is not adopted (UDP, or an address the held
  socket does not serve) gets the kernel's own answer and one log line.

The caller's sockaddr is read from /proc/TID/mem and its socket's type through
pidfd_getfd; the notification is checked to be still valid after those reads
(SECCOMP_IOCTL_NOTIF_ID_VALID: a pid may be recycled meanwhile). A caller that
dies meanwhile makes the ioctls fail with ENOENT, which ends the matter. Nothing
but the held sockets is ever installed into a process.

Since the held socket's open file is shared by every process that has it, the
caller's O_NONBLOCK choice (node and Go want non-blocking, a blocking server does
not) is applied to the held socket when it is adopted.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import libc
from .listeners import Listener

Log = Callable[[str], None]

_LOOPBACKS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
#: The longest sockaddr worth reading: sockaddr_storage.
_SOCKADDR_MAX = 128


@dataclass(frozen=True)
class Held:
    """What the adoption rule needs of one held TCP socket."""

    fd: int
    #: Its fd number in the server (3, 4, ...).
    server_fd: int
    family: int
    host: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    v6only: bool
    inode: int

    @classmethod
    def of(cls, listener: Listener, server_fd: int) -> Held | None:
        """The held socket's facts, read from the socket itself; None if not TCP/IP."""
        if listener.family not in (libc.AF_INET, libc.AF_INET6):
            return None
        address = libc.getsockname(listener.fd)
        assert isinstance(address, tuple)
        v6only = listener.family == libc.AF_INET6 and bool(
            libc.getsockopt(listener.fd, libc.IPPROTO_IPV6, libc.IPV6_V6ONLY)
        )
        host = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        inode = os.fstat(listener.fd).st_ino
        return cls(listener.fd, server_fd, listener.family, host, int(address[1]), v6only, inode)

    def serves(self, asked: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        """Would clients that connect to ``asked`` (None: a wildcard) reach this socket?

        A wildcard bind is served by whatever zocket holds on the port (node and Go
        bind ``[::]`` by default). Either loopback stands for the other: a server that
        binds ``localhost`` means "this machine only", whatever the name resolved to.
        """
        if asked is None:
            return True
        if isinstance(asked, ipaddress.IPv6Address) and asked.ipv4_mapped is not None:
            asked = asked.ipv4_mapped
        if asked in _LOOPBACKS:
            asked = _LOOPBACKS[0] if self.family == libc.AF_INET else _LOOPBACKS[1]
        if self.host.is_unspecified:
            if self.family == libc.AF_INET:
                return asked.version == 4
            return asked.version == 6 or not self.v6only
        mine = self.host
        if isinstance(mine, ipaddress.IPv6Address) and mine.ipv4_mapped is not None:
            mine = mine.ipv4_mapped
        return asked == mine


def held_sockets(listeners: Sequence[Listener]) -> list[Held]:
    """The held TCP/IP sockets, with the fd number each has in the server."""
    found = []
    for index, listener in enumerate(listeners):
        held = Held.of(listener, 3 + index)
        if held is not None:
            found.append(held)
    return found


def held_for(held: Sequence[Held], family: int, host: str, port: int) -> Held | None | bool:
    """The held socket that adopts a TCP bind of (host, port), the adoption rule.

    None: zocket holds nothing on that port (or port 0 was asked for), nothing to
    say. False: it holds the port but on an address that does not serve this one.
    """
    if family not in (libc.AF_INET, libc.AF_INET6) or port == 0:
        return None
    candidates = [h for h in held if h.port == port]
    if not candidates:
        return None
    asked = ipaddress.ip_address(host.split("%", 1)[0])
    wanted = None if asked.is_unspecified else asked
    for candidate in candidates:
        if candidate.serves(wanted):
            return candidate
    return False


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Adopter:
    """Answers the bind() and listen() calls of one generation (see the module docstring).

    ``handle`` is the selector callback for the generation's seccomp listener fd;
    it never blocks: it reads one notification only when poll() says one waits.
    """

    def __init__(
        self, listeners: Sequence[Listener], log: Log, generation: int, *, quiet: bool = False
    ) -> None:
        self.held = held_sockets(listeners)
        self.log = log
        self.generation = generation
        self.quiet = quiet
        self._inodes = {h.inode: h for h in self.held}
        #: Adopted binds so far, for tests and the status.
        self.adopted = 0

    def handle(self, listener: int) -> None:
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        events = poller.poll(0)
        if not events or not events[0][1] & select.POLLIN:
            return  # POLLHUP alone: the generation is gone; the holder forgets it
        try:
            notification = libc.notif_recv(listener)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: the caller died before we read it
                self.log(f"generation {self.generation}: adoption: {exc}")
            return
        try:
            self._answer(listener, notification)
        except OSError as exc:
            # ENOENT: the caller died, or a signal interrupted its call, before the answer.
            # Anything else (only sending the answer can fail here) must not stop the holder.
            if exc.errno != errno.ENOENT:
                self.log(f"generation {self.generation}: adoption: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bug here must not stop the holder
            # The caller waits in the kernel until it is answered: let its call run.
            self.log(f"generation {self.generation}: adoption failed ({exc!r}); letting it run")
            try:
                libc.notif_respond(listener, notification.id, continue_=True)
            except OSError:
                pass

    def _answer(self, listener: int, n: libc.Notification) -> None:
        try:
            if n.nr == libc.SYS_BIND and self._bind(listener, n):
                return
            if n.nr in (libc.SYS_LISTEN, libc.SYS_SHUTDOWN) and self._held_call(listener, n):
                return
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise
            # The caller's memory or fds could not be read (it is exiting): the kernel decides.
        libc.notif_respond(listener, n.id, continue_=True)

    def _bind(self, listener: int, n: libc.Notification) -> bool:
        """Adopt a bind of a held address; False to let the kernel answer it."""
        fd, address, length = _signed_fd(n.args[0]), n.args[1], n.args[2]
        if fd < 0 or not 2 <= length <= _SOCKADDR_MAX:
            return False
        data = libc.read_process_memory(n.pid, address, length)
        try:
            family, sockaddr = libc.parse_sockaddr(data)
        except ValueError:
            return False
        if family not in (libc.AF_INET, libc.AF_INET6):
            return False
        assert isinstance(sockaddr, tuple)
        host, port = str(sockaddr[0]), int(sockaddr[1])
        match = held_for(self.held, family, host, port)
        if match is None:
            return False
        kind, nonblocking, cloexec = _socket_facts(n.pid, fd)
        if not libc.notif_id_valid(listener, n.id):
            return True  # gone or interrupted: nothing to answer
        who = f"generation {self.generation} (pid {_tgid(n.pid)})"
        if kind != libc.SOCK_STREAM:
            self.log(
                f"{who}: bind({_kind_name(kind)} {_format(host, port)}) not adopted: "
                f"zocket holds only TCP on port {port}; the kernel answers it"
            )
            return False
        if match is False:
            shown = ", ".join(_format(str(h.host), h.port) for h in self.held if h.port == port)
            self.log(
                f"{who}: bind({_format(host, port)}) not adopted: zocket holds {shown}, "
                "which does not serve that address; the kernel answers it"
            )
            return False
        assert isinstance(match, Held)
        if libc.get_nonblocking(match.fd) != nonblocking:
            libc.set_nonblocking(match.fd, nonblocking)
        libc.notif_addfd(listener, n.id, match.fd, newfd=fd, cloexec=cloexec)
        libc.notif_respond(listener, n.id, 0)
        self.adopted += 1
        if not self.quiet:
            self.log(
                f"{who}: bind({_format(host, port)}) adopted the held socket (fd {match.server_fd})"
            )
        return True

    def _held_call(self, listener: int, n: libc.Notification) -> bool:
        """listen() or shutdown() of a held socket succeeds untouched; False for any other."""
        fd = _signed_fd(n.args[0])
        if fd < 0:
            return False
        try:
            inode = os.stat(f"/proc/{n.pid}/fd/{fd}").st_ino
        except OSError:
            return False
        if inode not in self._inodes:
            return False
        if libc.notif_id_valid(listener, n.id):
            libc.notif_respond(listener, n.id, 0)
        return True


def _signed_fd(arg: int) -> int:
    """A syscall's int argument from its 64-bit register value."""
    value = arg & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _tgid(tid: int) -> int:
    """The process of thread ``tid`` (a notification names the calling thread)."""
    # Bytes, not text: under --user the holder may not be able to import a codec any more.
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return tid


def _socket_facts(tid: int, fd: int) -> tuple[int, bool, bool]:
    """(SO_TYPE, O_NONBLOCK, close-on-exec) of fd ``fd`` of thread ``tid``'s process."""
    pidfd = libc.pidfd_open(_tgid(tid))
    try:
        copy = libc.pidfd_getfd(pidfd, fd)
    finally:
        libc.close(pidfd)
    try:
        kind = libc.getsockopt(copy, libc.SOL_SOCKET, libc.SO_TYPE)
        nonblocking = libc.get_nonblocking(copy)
    finally:
        libc.close(copy)
    cloexec = False
    with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as f:
        for line in f:
            if line.startswith(b"flags:"):
                cloexec = bool(int(line.split()[1], 8) & libc.O_CLOEXEC)
    return kind, nonblocking, cloexec


def _kind_name(kind: int) -> str:
    return {libc.SOCK_DGRAM: "udp", libc.SOCK_STREAM: "tcp"}.get(kind, f"type {kind}")
