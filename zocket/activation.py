"""The app side: pick up the sockets zocket (or systemd) bound for this process.

Standard library only, because this module is imported by the web server's
own interpreter, which may live in a virtualenv that has nothing else.
The rules are those of sd_listen_fds(3) and sd_notify(3), so an app written
against this module works the same under zocket and under systemd.
"""

from __future__ import annotations

import os
import re
import socket
import threading

from .fdnames import UNKNOWN, decode_fdnames

__all__ = [
    "SD_LISTEN_FDS_START",
    "listen_fds",
    "listen_fds_with_names",
    "listen_socket",
    "notify",
]

#: The first inherited fd; 0, 1 and 2 stay stdin, stdout and stderr.
SD_LISTEN_FDS_START = 3

_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# int() would also take " 3", "+3", "3_0" and non-ASCII digits; systemd does not.
_DECIMAL = re.compile(r"[0-9]+")
# systemd refuses counts whose last fd would not fit in a C int.
_MAX_FDS = 2**31 - 1 - SD_LISTEN_FDS_START

_lock = threading.Lock()
# One socket object per (pid, fd): two objects owning one fd would close it
# twice, and the second close could hit an unrelated file that reused the
# number. The pid is in the key so that a forked child re-reads the
# environment, while the parent's objects it inherited stay alive (dropping
# them would close fds a pre-fork worker may still accept on).
_held: dict[tuple[int, int], socket.socket] = {}
_names: dict[tuple[int, int], str] = {}


def _parse_pid(value: str | None) -> int | None:
    """None for anything that is not a positive pid: such a variable is not for us."""
    if value is None or not _DECIMAL.fullmatch(value):
        return None
    pid = int(value)
    return pid if pid > 0 else None


def parse_listen_count(value: str) -> int:
    """LISTEN_FDS's count; ValueError (one line) for anything sd_listen_fds(3) refuses.

    Garbage here is an error, not "no fds": the variables were meant for us.
    """
    if not _DECIMAL.fullmatch(value):
        raise ValueError(
            f"LISTEN_FDS={value!r} is not a number of file descriptors "
            "(expected a non-negative decimal integer)"
        )
    count = int(value)
    if count > _MAX_FDS:
        raise ValueError(f"LISTEN_FDS={value!r} is too large to be a number of file descriptors")
    return count


def _adopt(pid: int, fd: int) -> socket.socket:
    """Wrap an inherited fd once per process, so every caller shares one owner."""
    held = _held.get((pid, fd))
    if held is not None:
        # Returned even if the app closed it: the number may since belong to
        # another file, and wrapping that would be worse than a closed socket.
        return held
    try:
        sock = socket.socket(fileno=fd)
    except OSError as error:
        raise OSError(
            error.errno, f"LISTEN_FDS promises fd {fd}, but it is not a socket: {error.strerror}"
        ) from error
    _held[(pid, fd)] = sock
    return sock


def _listen(unset_environment: bool) -> list[tuple[str, socket.socket]]:
    """Read the three variables together so names and sockets come from one snapshot."""
    try:
        with _lock:
            pid = os.getpid()
            if _parse_pid(os.environ.get("LISTEN_PID")) != pid:
                return []
            value = os.environ.get("LISTEN_FDS")
            if value is None:
                return []
            count = parse_listen_count(value)
            fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
            # Like sd_listen_fds(): the fds were inherited on purpose once;
            # our own children (helpers, reloads) must not inherit them again.
            for fd in fds:
                if (pid, fd) in _held:
                    # Done when first taken; the app may have closed it since.
                    continue
                try:
                    os.set_inheritable(fd, False)
                except OSError as error:
                    raise OSError(
                        error.errno,
                        f"LISTEN_FDS={count} promises fd {fd}, "
                        f"but it is not open: {error.strerror}",
                    ) from error
            names = decode_fdnames(os.environ.get("LISTEN_FDNAMES"), count)
            result: list[tuple[str, socket.socket]] = []
            for fd, name in zip(fds, names, strict=True):
                sock = _adopt(pid, fd)
                _names[(pid, fd)] = name
                result.append((name, sock))
            return result
    finally:
        # Also on the early returns and on errors, as sd_listen_fds() does:
        # the caller asked that no child of ours sees these variables.
        if unset_environment:
            for variable in _LISTEN_VARIABLES:
                os.environ.pop(variable, None)


def listen_fds(unset_environment: bool = False) -> list[socket.socket]:
    """The sockets passed to this very process, the sd_listen_fds(3) way.

    LISTEN_PID must equal our pid, so a child that merely inherited the
    environment does not take sockets meant for its parent. A second call
    returns the same socket objects, not new owners of the same fds.
    """
    return [sock for _, sock in _listen(unset_environment)]


def listen_fds_with_names(unset_environment: bool = False) -> list[tuple[str, socket.socket]]:
    """Like listen_fds(), paired with LISTEN_FDNAMES so an app can tell its sockets apart."""
    return _listen(unset_environment)


def listen_socket(name: str) -> socket.socket:
    """The first socket named `name`, for apps that want "web", not "fd 3".

    Sockets taken earlier in this process still count after the environment
    was unset, so the lookup works whichever order the app does things in.
    Closed ones do not: they can no longer serve.
    """
    _listen(unset_environment=False)
    with _lock:
        pid = os.getpid()
        held = sorted(
            (fd, _names[(key_pid, fd)], sock)
            for (key_pid, fd), sock in _held.items()
            if key_pid == pid and sock.fileno() != -1
        )
    for _, held_name, sock in held:
        if held_name == name:
            return sock
    if not held:
        raise LookupError(
            f"no socket named {name!r}: this process was given no sockets "
            "(LISTEN_PID is unset or names another process, or LISTEN_FDS is 0)"
        )
    available = ", ".join(repr(held_name) for _, held_name, _ in held)
    if all(held_name == UNKNOWN for _, held_name, _ in held):
        available += " (LISTEN_FDNAMES is unset)"
    raise LookupError(f"no socket named {name!r}; available: {available}")


def _notify_address(value: str) -> bytes:
    """sd_notify(3) accepts exactly two forms; guessing at others could message a stranger."""
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    raise ValueError(
        f"NOTIFY_SOCKET={value!r} is neither an absolute path "
        "nor an abstract socket name starting with '@'"
    )


def notify(state: str = "READY=1", unset_environment: bool = False) -> bool:
    """Tell the supervisor about our state, the sd_notify(3) way.

    False (not an error) without NOTIFY_SOCKET, so an app can call it
    unconditionally whether or not anything supervises it.
    """
    try:
        value = os.environ.get("NOTIFY_SOCKET")
        if not value:
            return False
        address = _notify_address(value)
        data = state.encode("utf-8")
        # A fresh socket per message, close-on-exec, as sd_notify() does:
        # nothing to keep open, and nothing for our children to inherit.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(data, address)
        return True
    finally:
        if unset_environment:
            os.environ.pop("NOTIFY_SOCKET", None)
