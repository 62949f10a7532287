"""The held sockets: created, bound and listening before any server starts.

A listener is opened once and never closed while zocket runs; every
generation of the server gets a copy of it on fd 3, 4, ... Errors here are
what a user most often meets (a port in use, a privileged port, a name that
does not resolve), so each becomes one line that names the address.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import libc
from .activation import listen_fds_with_names
from .addresses import Address, InetAddress, ListenSpec, UnixAddress, url

DEFAULT_NAMES = ("http", "https")


class ListenError(Exception):
    """A socket could not be held; the message is one line naming the address."""

    exit_status = 3


def default_name(index: int) -> str:
    """``http``, ``https``, then ``socket2``, ``socket3``, ..."""
    return DEFAULT_NAMES[index] if index < len(DEFAULT_NAMES) else f"socket{index}"


@dataclass
class Listener:
    """One held listening socket."""

    name: str
    fd: int
    family: int
    #: What was asked for, e.g. ``localhost:0``.
    requested: Address
    #: What the kernel reports: the real port when port 0 was asked for.
    address: Address
    #: The (st_dev, st_ino) of a Unix socket file we created, to remove only our own.
    _unix_file: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return url(self.address)

    @property
    def unix_file(self) -> tuple[int, int] | None:
        """The identity of the Unix socket file zocket made, if it made one."""
        return self._unix_file

    @property
    def port(self) -> int | None:
        return self.address.port if isinstance(self.address, InetAddress) else None

    @property
    def host(self) -> str | None:
        return self.address.host if isinstance(self.address, InetAddress) else None

    def close(self) -> None:
        """Close the fd, and remove the Unix socket file if it is still the one we made."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        libc.close(fd)
        if self._unix_file is not None and isinstance(self.address, UnixAddress):
            try:
                st = os.lstat(self.address.path)
                if (st.st_dev, st.st_ino) == self._unix_file:
                    os.unlink(self.address.path)
            except FileNotFoundError:
                pass


@dataclass(frozen=True)
class UnixPermissions:
    """``--socket-mode`` and ``--socket-owner`` for the Unix socket files zocket creates."""

    mode: int | None = None
    uid: int = -1
    gid: int = -1

    def apply(self, path: str) -> tuple[int, int]:
        """Set the mode and owner of the socket file at ``path``; returns its identity.

        The file is opened with ``O_PATH | O_NOFOLLOW`` and changed through that
        descriptor, so that a symlink or another file put at ``path`` since
        bind() is refused instead of having its mode or owner changed (plain
        chmod(2) follows symlinks, and Linux has no lchmod).
        """
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISSOCK(st.st_mode):
                raise ListenError(f"cannot use unix:{path}: replaced by something else")
            via = f"/proc/self/fd/{fd}"  # the inode fd refers to, not the name
            if self.uid != -1 or self.gid != -1:
                os.chown(via, self.uid, self.gid)
            if self.mode is not None:
                os.chmod(via, self.mode)
            return (st.st_dev, st.st_ino)
        finally:
            os.close(fd)


def open_listeners(
    specs: Sequence[ListenSpec], backlog: int, unix: UnixPermissions = UnixPermissions()
) -> list[Listener]:
    """Open every spec in order; on any failure close what was opened and raise ListenError."""
    opened: list[Listener] = []
    try:
        for index, spec in enumerate(specs):
            opened.append(open_listener(spec, backlog, spec.name or default_name(index), unix))
    except BaseException:
        for listener in opened:
            listener.close()
        raise
    names = [listener.name for listener in opened]
    for name in names:
        if names.count(name) > 1:
            for listener in opened:
                listener.close()
            raise ListenError(f"socket name {name!r} is given twice")
    return opened


def inherited_listeners(backlog: int) -> list[Listener]:
    """The sockets zocket itself was given the systemd way (a .socket unit), if any.

    Then zocket holds those instead of binding: a production server gets
    zocket's restarts behind systemd's socket. The variables are removed
    from zocket's environment so that no child takes them for its own.
    """
    listeners: list[Listener] = []
    for name, sock in listen_fds_with_names(unset_environment=True):
        if sock.type != _socket.SOCK_STREAM:
            raise ListenError(f"inherited fd {sock.fileno()} ({name}) is not a stream socket")
        address = _address_of(sock)
        fd = sock.detach()
        libc.set_cloexec(fd)
        if not libc.getsockopt(fd, libc.SOL_SOCKET, libc.SO_ACCEPTCONN):
            libc.listen(fd, backlog)
        listeners.append(Listener(name, fd, sock.family, address, address))
    return listeners


def resumed_listener(name: str, fd: int, unix_file: tuple[int, int] | None) -> Listener:
    """A held socket that came through zocket's own re-exec (``zocket upgrade``)."""
    probe = _socket.socket(fileno=libc.dup(fd))
    try:
        address, family = _address_of(probe), probe.family
    finally:
        probe.close()
    libc.set_cloexec(fd)
    return Listener(name, fd, family, address, address, unix_file)


def _address_of(sock: _socket.socket) -> Address:
    if sock.family == _socket.AF_UNIX:
        raw = sock.getsockname()
        if isinstance(raw, bytes):
            return UnixAddress(raw[1:].decode(errors="replace"), abstract=True)
        return UnixAddress(raw)
    host, port = sock.getsockname()[:2]
    return InetAddress(host, port)


def open_listener(
    spec: ListenSpec, backlog: int, name: str, unix: UnixPermissions = UnixPermissions()
) -> Listener:
    if isinstance(spec.address, InetAddress):
        return _open_inet(spec.address, backlog, name)
    return _open_unix(spec.address, backlog, name, unix)


def _open_inet(requested: InetAddress, backlog: int, name: str) -> Listener:
    family, sockaddr = _resolve(requested)
    fd = libc.socket(family, libc.SOCK_STREAM | libc.SOCK_CLOEXEC)
    try:
        libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_REUSEADDR, 1)
        libc.bind(fd, sockaddr, family)
        libc.listen(fd, backlog)
        bound = libc.getsockname(fd)
        assert isinstance(bound, tuple)
        host, port = bound[0], bound[1]
    except OSError as exc:
        libc.close(fd)
        raise ListenError(_bind_message(exc, str(requested))) from None
    return Listener(name, fd, family, requested, InetAddress(str(host), int(port)))


def _resolve(address: InetAddress) -> tuple[int, tuple[str, int] | tuple[str, int, int, int]]:
    """The first address getaddrinfo gives for a passive TCP socket (literals pass through)."""
    try:
        infos = _socket.getaddrinfo(
            address.host,
            address.port,
            type=_socket.SOCK_STREAM,
            flags=_socket.AI_PASSIVE | _socket.AI_NUMERICSERV,
        )
    except _socket.gaierror as exc:
        raise ListenError(f"unknown host {address.host!r}: {exc.strerror}") from None
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (libc.AF_INET, libc.AF_INET6):
            return family, sockaddr  # type: ignore[return-value]
    raise ListenError(f"host {address.host!r} has no IPv4 or IPv6 address")


def _open_unix(
    requested: UnixAddress, backlog: int, name: str, unix: UnixPermissions
) -> Listener:
    path = "\0" + requested.path if requested.abstract else requested.path
    if not requested.abstract:
        _clear_stale_socket(requested.path)
    fd = libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | libc.SOCK_CLOEXEC)
    identity = None
    bound = False
    try:
        libc.bind(fd, path, libc.AF_UNIX)
        if not requested.abstract:
            bound = True
            # Before listen(): nobody connects while the mode is still the default.
            identity = unix.apply(requested.path)
        libc.listen(fd, backlog)
    except (OSError, ListenError) as exc:
        libc.close(fd)
        if bound:
            _unlink_if(requested.path, identity)  # ours, just made: leave nothing behind
        if isinstance(exc, ListenError):
            raise
        raise ListenError(_bind_message(exc, str(requested))) from None
    return Listener(name, fd, libc.AF_UNIX, requested, requested, identity)


def _unlink_if(path: str, identity: tuple[int, int] | None) -> None:
    """Remove the socket file bind() made, unless something else has taken its name."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity or (identity is None and stat.S_ISSOCK(st.st_mode)):
            os.unlink(path)
    except OSError:
        pass


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenError(f"cannot use unix:{path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"cannot use unix:{path}: the file exists and is not a socket")
    # Non-blocking: a connect to a live listener whose backlog is full would block.
    probe = libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | libc.SOCK_CLOEXEC | libc.SOCK_NONBLOCK)
    try:
        libc.connect(probe, path, libc.AF_UNIX)
    except ConnectionRefusedError:
        os.unlink(path)  # left behind by a holder that died: nobody accepts on it
        return
    except BlockingIOError:
        pass  # a listener with a full backlog: alive
    except OSError:
        return  # let bind() report what is wrong
    finally:
        libc.close(probe)
    raise ListenError(f"address already in use: unix:{path}")


def _bind_message(exc: OSError, address: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"address already in use: {address}"
    if exc.errno == errno.EACCES:
        return (
            f"permission denied binding {address} "
            "(ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            if not address.startswith("unix:")
            else f"permission denied binding {address}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address not available on this machine: {address}"
    if exc.errno == errno.ENAMETOOLONG:
        return f"unix socket path too long: {address}"
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"cannot listen on {address}: {reason}"
