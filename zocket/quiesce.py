"""Stopping a server that would drop what it took: it is frozen until it holds none.

Many servers die at once of their stop signal: node and ``php -S`` have no
handler for SIGTERM, nor has a Python server run with ``--no-hook``. Whatever
such a process had accepted and not answered yet is reset when it dies, and no
signal makes it finish first. zocket cannot change how it dies, but it can
choose the moment.

SIGSTOP freezes the old generation's process group. While it is frozen nothing
in it accepts, reads or answers, so what the kernel shows of it stays true: a
connection it accepted is an fd in its ``/proc/PID/fd``, and a copy of that
socket (``pidfd_getfd``; the holder may, the generation being its own child)
tells whether it came from a held listener. If none did, the stop signal is sent
while the group is still frozen, to each process's main thread. A signal whose
action is the default and fatal kills a stopped process without it running
another instruction; one that it catches runs in the main thread before that
thread's own code (node catches SIGTERM, then dies of it): either way it takes
nothing more from there, and the connections still waiting in the held socket's
backlog go to the new generation. If one did, the group is thawed (SIGCONT) and
looked at again a few milliseconds later, up to a bound; then the signal is sent
as it would have been without any of this (a client holding an idle keep-alive
connection open would otherwise keep the old generation alive).

Every stop is sent so, not only those of servers known to die at once, except
where the group is Python processes with zocket's hook, whose drain already
finishes what was taken: a process's signal masks cannot tell (node and php catch SIGTERM, then re-raise
it and die with what they took), and a server that stops gracefully loses
nothing by being told at a quiet moment. Each look freezes the group for well
under a millisecond.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from . import libc, readiness

#: How often a generation that still holds an accepted connection is looked at again.
RETRY = 0.005
#: The longest a stop waits for that, at most (and half the stop timeout, if less).
LIMIT = 2.0
#: How long one look waits for every task of the group to have stopped.
FREEZE_WAIT = 0.02
#: What a look found instead of a count: not every task stopped in time (look again)...
UNFROZEN = -1
#: ...or a socket could not be copied (pidfd_getfd refused): there is no knowing.
BLIND = -2

#: Signals sent as they are: SIGKILL cannot wait, and the others stop nothing.
_NOT_STOPPING = frozenset({signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT, 0})


def group_members(pgid: int, *, subreaper: bool = True) -> list[int]:
    """The processes of group ``pgid`` (what killpg reaches).

    Found among the descendants of its leader (a walk of a few /proc files), and
    by a scan of all of /proc once the leader is gone, or where zocket is no
    subreaper (a member orphaned onto init is no descendant): a scan costs a few
    milliseconds on a busy machine, spent with the generation frozen.
    """
    if subreaper and os.path.exists(f"/proc/{pgid}"):
        return [pid for pid in readiness.processes_of(pgid) if readiness._pgid(pid) == pgid]
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(f"/proc/{entry}/stat")
            if stat is not None and stat[1] == pgid:
                members.append(int(entry))
    return members


def _stat(path: str) -> tuple[str, int] | None:
    """(state, pgid) from a /proc stat file; None if it is gone."""
    try:
        with open(path) as file:
            text = file.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[2])


def _all_stopped(pids: Iterable[int]) -> bool:
    """Whether every task of ``pids`` is stopped (or already dead)."""
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone
        for tid in tasks:
            stat = _stat(f"/proc/{pid}/task/{tid}/stat")
            if stat is not None and stat[0] not in ("T", "t", "Z", "X"):
                return False
    return True


def held_names(fds: Iterable[int]) -> frozenset[tuple[int, object]]:
    """What a connection accepted from one of the held sockets ``fds`` has as its own
    address: (family, port) for TCP, (AF_UNIX, path) for a Unix socket."""
    names = set()
    for fd in fds:
        with socket.socket(fileno=os.dup(fd)) as held:
            names.add(_name(held))
    return frozenset(names)


def _name(sock: socket.socket) -> tuple[int, object]:
    address = sock.getsockname()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return (sock.family, address[1])
    return (sock.family, address)


def accepted(pids: Iterable[int], held_inodes: Collection[int], names: Collection[tuple[int, object]]) -> int:
    """How many connections accepted from a held socket ``pids`` hold, or ``BLIND``."""
    count = 0
    for pid in pids:
        sockets = _socket_fds(pid, held_inodes)
        if not sockets:
            continue
        try:
            pidfd = libc.pidfd_open(pid)
        except ProcessLookupError:
            continue  # gone
        except OSError:
            return BLIND
        try:
            for fd in sockets:
                try:
                    copy = libc.pidfd_getfd(pidfd, fd)
                except ProcessLookupError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EBADF:
                        continue  # closed since it was listed
                    return BLIND
                try:
                    sock = socket.socket(fileno=copy)
                except OSError:
                    os.close(copy)
                    continue  # no longer a socket: that fd number was reused
                with sock:
                    if _is_accepted(sock, names):
                        count += 1
        finally:
            os.close(pidfd)
    return count


def _socket_fds(pid: int, held_inodes: Collection[int]) -> list[int]:
    """The fds of ``pid`` that are sockets other than the held ones."""
    found: list[int] = []
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) not in held_inodes:
            found.append(int(entry))
    return found


def _is_accepted(sock: socket.socket, names: Collection[tuple[int, object]]) -> bool:
    try:
        if sock.type != socket.SOCK_STREAM or sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            return False
        return _name(sock) in names
    except OSError:
        return False


def stop_if_idle(
    pgid: int,
    signum: int,
    held_inodes: Collection[int],
    names: Collection[tuple[int, object]],
    *,
    subreaper: bool = True,
) -> int:
    """Freeze group ``pgid``; if it holds no accepted connection, send ``signum`` while it
    is frozen. Thawed again in any case. The connections it holds (0: signalled), or
    ``UNFROZEN`` or ``BLIND``."""
    _killpg(pgid, signal.SIGSTOP)
    try:
        members = group_members(pgid, subreaper=subreaper)
        deadline = time.monotonic() + FREEZE_WAIT
        while not _all_stopped(members):
            if time.monotonic() >= deadline:
                return UNFROZEN  # a task in an uninterruptible wait: another time
            time.sleep(0.0002)
        held = accepted(members, held_inodes, names)
        if held == 0:
            for pid in members:
                _signal_main_thread(pid, signum)
        return held
    finally:
        _killpg(pgid, signal.SIGCONT)


def _signal_main_thread(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid``'s main thread, or to the process if that thread blocks it.

    Sent to the process, the signal is taken by whichever of its threads runs first
    once thawed. node catches SIGTERM and dies only after its handler has reset the
    terminal, meanwhile its main thread, if it was not the one, accepts and reads on:
    a connection taken then is reset (measured, about 1 in 20 restarts). Sent to the
    main thread, the handler runs before that thread's next instruction of its own.
    """
    masks = _signal_masks(f"/proc/{pid}/task/{pid}/status")
    main = _stat(f"/proc/{pid}/task/{pid}/stat")
    try:
        # A main thread that exited (pthread_exit) takes no signal: the process does.
        if masks is not None and main is not None and main[0] not in ("Z", "X") and not masks & (
            1 << (signum - 1)
        ):
            libc.tgkill(pid, pid, signum)
        else:
            libc.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_masks(path: str) -> int | None:
    """A thread's blocked signals, from its status file; None if it is gone."""
    try:
        with open(path) as status:
            for line in status:
                if line.startswith("SigBlk:"):
                    return int(line[7:].strip(), 16)
    except OSError:
        pass
    return None


def _is_python(pid: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("python")
    except OSError:
        return False


def _killpg(pgid: int, signum: int) -> None:
    try:
        libc.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Timers(Protocol):
    def set_timer(self, key: object, delay: float, action: Callable[[], None]) -> None: ...
    def cancel_timer(self, key: object) -> None: ...
    def clock(self) -> float: ...


class QuietStops:
    """The holder's stops that wait for the moment a generation holds nothing taken."""

    def __init__(
        self,
        timers: Timers,
        log: Callable[[str], None],
        held_fds: Collection[int],
        held_inodes: Collection[int],
        stop_timeout: float,
        *,
        subreaper: bool = True,
        hooked: bool = False,
    ) -> None:
        self._timers = timers
        self._subreaper = subreaper
        self._hooked = hooked
        self._log = log
        self._inodes = held_inodes
        self._names = held_names(held_fds)
        self._limit = min(LIMIT, stop_timeout / 2)
        #: generation number -> (pgid, signal, when to give up waiting)
        self._pending: dict[int, tuple[int, int, float]] = {}

    def signal(self, number: int, pgid: int, signum: int) -> None:
        """Send ``signum`` to generation ``number``'s group at a moment when it holds no
        accepted connection (or at the bound); SIGKILL at once."""
        if signum == signal.SIGKILL:
            self.forget(number)
        elif number in self._pending:
            waiting_pgid, waiting, give_up = self._pending[number]
            if signum != waiting:  # SIGINT or SIGQUIT at zocket's own stop: that one now
                self._pending[number] = (waiting_pgid, signum, give_up)
            return
        elif self._names and signum not in _NOT_STOPPING and not self._stops_itself(pgid):
            self._pending[number] = (pgid, signum, self._timers.clock() + self._limit)
            self._try(number)
            return
        _killpg(pgid, signum)

    def _stops_itself(self, pgid: int) -> bool:
        """Whether the group is Python processes only, with zocket's hook: the hook
        finishes what they took (``_zocket_held.drain``), and a look would only freeze
        requests in flight for nothing (gunicorn at 1000 requests/s: the difference in
        the in-window p99 was within the noise of 5 paired runs, so no gain to pay for)."""
        if not self._hooked:
            return False
        members = group_members(pgid, subreaper=self._subreaper)
        return bool(members) and all(_is_python(pid) for pid in members)

    def forget(self, number: int) -> None:
        """Generation ``number`` is to be killed: no more waiting for it."""
        if self._pending.pop(number, None) is not None:
            self._timers.cancel_timer(("quiesce", number))

    def exited(self, number: int) -> None:
        """Generation ``number``'s first process exited: what it left behind in its group
        gets the signal still waiting now (a frozen look needs the leader's tree)."""
        waiting = self._pending.get(number)
        self.forget(number)
        if waiting is not None:
            _killpg(waiting[0], waiting[1])

    def flush(self) -> None:
        """Send every signal still waiting, now (zocket is about to exec itself)."""
        for number, (pgid, signum, _) in list(self._pending.items()):
            self.forget(number)
            _killpg(pgid, signum)

    def _try(self, number: int) -> None:
        pgid, signum, give_up = self._pending[number]
        held = stop_if_idle(pgid, signum, self._inodes, self._names, subreaper=self._subreaper)
        if held == 0:
            self.forget(number)
        elif held == BLIND or self._timers.clock() >= give_up:
            self.forget(number)
            if held > 0:
                self._log(
                    f"generation {number} still held {held} connection(s) after "
                    f"{self._limit:g} s: signalling it anyway"
                )
            elif held == UNFROZEN:
                self._log(
                    f"generation {number} could not be frozen within {self._limit:g} s: "
                    "signalling it anyway"
                )
            _killpg(pgid, signum)
        else:
            self._timers.set_timer(("quiesce", number), RETRY, lambda: self._try(number))
