"""Is a new generation ready to take connections? Asked of the kernel, not of the app.

A server is ready when one of its processes waits for connections on a held
socket. /proc shows that without any change to the app:

- a task blocked in accept/accept4 on it: ``/proc/PID/task/TID/syscall``
  gives the syscall number and its first argument, the fd;
- a task blocked in poll/ppoll or select/pselect6 with it among the fds: the
  same file gives the address of the pollfd array or fd_set, which the parent
  (an ancestor, same user) reads from ``/proc/PID/mem``;
- an epoll set that holds it (asyncio, gevent, gthread workers):
  ``/proc/PID/fdinfo/EPFD`` lists every watched fd as ``tfd: N``. This needs
  no task to be asleep: a busy event loop that will accept is ready too.

A process that merely holds the fd (gunicorn's arbiter, uvicorn's reloader)
does not count: only its workers wait on it. gunicorn's own READY=1 comes
before the workers import the app, which is why ``auto`` does not trust it.

A pre-fork server starts its workers one after another (gunicorn sleeps up to
0.1 s between two), so the first worker to wait may be alone for a while. The
old generation is stopped at ready; with one worker of several taking the
whole load, cold, the clients would wait. So ``auto`` calls a generation ready
once a process waits and so do its *sibling workers*: the processes that hold
a held socket and have the same parent and executable as one that waits (a
``tee`` beside the server in a ``--shell`` pipeline holds the fd too, and is
not a worker). A sibling that never waits (stuck, or no worker after all)
delays readiness by ``SETTLE`` seconds at most.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from . import libc
from ._hook import _zocket_protocol as protocol

# The syscall's arguments are in the file in this order; only the first two matter here.
_ACCEPT = {"accept", "accept4"}
_POLL = {"poll", "ppoll"}
_SELECT = {"select", "pselect6"}
_EPOLL = "anon_inode:[eventpoll]"
#: The longest ``auto`` waits, after a first process waits, for its sibling workers to.
SETTLE = 1.0


@dataclass(frozen=True)
class Waiting:
    """Evidence that a generation is ready: who waits on which held fd, and how."""

    pid: int
    tid: int
    fd: int
    how: str

    def describe(self, root_pid: int) -> str:
        who = "process" if self.pid == root_pid else "worker"
        return f"{who} {self.pid} waiting on fd {self.fd} ({self.how})"


@dataclass(frozen=True)
class ReadyMode:
    """``--ready``: auto, notify, delay:SECONDS or none."""

    kind: str
    delay: float = 0.0

    def __str__(self) -> str:
        if self.kind != "delay":
            return self.kind
        text = repr(self.delay)  # repr, not :g, so that parsing it back gives the same float
        return f"delay:{text.removesuffix('.0')}"


def parse_ready_mode(text: str) -> ReadyMode:
    if text in ("auto", "notify", "none"):
        return ReadyMode(text)
    if text.startswith("delay:"):
        try:
            delay = float(text[len("delay:") :])
        except ValueError:
            delay = -1.0
        if delay >= 0 and delay == delay and delay != float("inf"):
            return ReadyMode("delay", delay)
    raise ValueError(f"invalid --ready {text!r}: auto, notify, delay:SECONDS or none")


def socket_inodes(fds: Iterable[int]) -> frozenset[int]:
    """The inodes that identify the held sockets in any process's /proc/PID/fd."""
    return frozenset(os.fstat(fd).st_ino for fd in fds)


def find_waiting(root_pid: int, inodes: Collection[int]) -> Waiting | None:
    """The first process of ``root_pid``'s tree (and process group) waiting on a held socket."""
    return Probe(root_pid, inodes).check()


class Probe:
    """Repeated checks of one booting generation, cheap enough to run every few ms.

    Finding the generation's processes (a walk of its tree in /proc) and
    their held fds (every fd link of each) is done at most every ``rescan``
    seconds. In between, only the processes already known to hold a held
    socket are looked at.

    With ``settle`` (seconds), a waiting process counts only once its sibling
    workers wait too, or ``settle`` after a process was first seen waiting.
    """

    def __init__(
        self,
        root_pid: int,
        inodes: Collection[int],
        rescan: float = 0.05,
        settle: float | None = None,
    ) -> None:
        self.root_pid = root_pid
        self.inodes = inodes
        self.rescan = rescan
        self.settle = settle
        self.started = time.monotonic()
        self._next_scan = 0.0
        self._holders: dict[int, _Holder] = {}
        self._first: float | None = None
        self._announced: dict[int, Waiting] = {}

    def interval(self, base: float) -> float:
        """When to check again: ``base`` at first, then a tenth of the time booted so far,
        up to five times ``base``.

        Readiness only decides when the old generation is stopped (until then
        both serve), so a slow boot can be looked at less often: the delay stays
        a small part of the boot while the holder's CPU stays low.
        """
        booted = time.monotonic() - self.started
        return min(max(base, booted / 10), 5 * base)

    def announce(self, pid: int, fd: int) -> None:
        """The process ``pid`` said it waits on ``fd`` (the hook's message): count it so."""
        self._announced[pid] = Waiting(pid, pid, fd, "hook")
        self._next_scan = 0.0  # it may have been forked since the last scan

    def check(self) -> Waiting | None:
        """A process waiting on a held socket (with ``settle``: once its siblings are too)."""
        now = time.monotonic()
        if now >= self._next_scan:
            self._scan(now)
        waiting = {}
        for pid, holder in self._holders.items():
            found = self._announced.get(pid) or _check_process(pid, holder.fds, holder.epolls)
            if found is not None and self.settle is None:
                return found
            if found is not None:
                waiting[pid] = found
        if not waiting or self.settle is None:
            return None
        if self._first is None:
            self._first = now
        pending = self.pending(waiting)
        if pending and now - self._first < self.settle:
            return None
        first = next(iter(waiting.values()))
        if pending:
            how = f"{len(pending)} of its sibling workers not waiting after {self.settle:g} s"
        elif len(waiting) > 1:
            how = f"{len(waiting)} workers waiting"
        else:
            return first
        return Waiting(first.pid, first.tid, first.fd, f"{first.how}; {how}")

    def pending(self, waiting: dict[int, Waiting]) -> list[int]:
        """The sibling workers of the waiting processes that do not wait (yet)."""
        kinds = {self._holders[pid].kind for pid in waiting}
        return [pid for pid, holder in self._holders.items()
                if pid not in waiting and holder.kind in kinds]

    def _scan(self, now: float) -> None:
        self._next_scan = now + self.rescan
        self._holders = {}
        for pid in processes_of(self.root_pid):
            held, epolls = _held_fds(pid, self.inodes)
            if held:
                self._holders[pid] = _Holder(held, epolls, _kind(pid))


@dataclass(frozen=True)
class _Holder:
    """A process of the generation that holds a held socket."""

    fds: set[int]
    epolls: list[int]
    #: (parent pid, executable): processes alike in both are sibling workers.
    kind: tuple[int | None, str | None]


def _kind(pid: int) -> tuple[int | None, str | None]:
    parent: int | None = None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        parent = int(stat[stat.rfind(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        exe: str | None = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = None
    return parent, exe


class Watch:
    """Whether one booting generation is ready: the one place that weighs the evidence.

    Evidence comes from three sources: time (``none``, ``delay:S``), /proc
    (``auto``: a :class:`Probe`), and messages on the generation's notify
    socket, already checked to come from one of its processes: the hook's
    ``ZOCKET_WAITING=FD`` (trusted by ``auto`` and ``notify``: it is the
    kernel-level fact "waits on a held fd", reported from inside) and the
    app's own ``READY=1`` (trusted only by ``notify``: gunicorn sends it
    before its workers have imported the app).
    """

    def __init__(
        self, mode: ReadyMode, root_pid: int, inodes: Collection[int], interval: float
    ) -> None:
        self.mode = mode
        self.interval = interval
        self.started = time.monotonic()
        self._probe = Probe(root_pid, inodes, settle=SETTLE) if mode.kind == "auto" else None

    def next_check(self) -> float | None:
        """Seconds until :meth:`check` should be called; None: only messages can tell."""
        if self.mode.kind == "none":
            return 0.0
        if self.mode.kind == "delay":
            return max(0.0, self.started + self.mode.delay - time.monotonic())
        if self._probe is not None:
            return self._probe.interval(self.interval)
        return None

    def check(self) -> str | None:
        """How the generation is ready, by time or /proc; None if it is not (yet)."""
        if self.mode.kind == "none":
            return "none"
        if self.mode.kind == "delay":
            return f"delay {self.mode.delay:g} s"
        if self._probe is not None:
            waiting = self._probe.check()
            if waiting is not None and waiting.how.startswith("hook"):  # the hook's own word
                return f"hook: waiting on fd {waiting.fd}{waiting.how[len('hook'):]}"
            if waiting is not None:
                return f"auto: {waiting.describe(self._probe.root_pid)}"
        return None

    def message(self, text: str, pid: int) -> str | None:
        """How a notify datagram from the generation's process ``pid`` shows it ready; None
        if it does not (yet: under ``auto`` its sibling workers may still be booting)."""
        waiting = protocol.parse_waiting(text)
        if waiting is not None and self._probe is not None and waiting.isdigit():
            self._probe.announce(pid, int(waiting))
            return self.check()
        if waiting is not None and self.mode.kind == "notify":
            return f"hook: waiting on fd {waiting}"
        if protocol.is_ready(text) and self.mode.kind == "notify":
            return "notify: READY=1"
        return None


def threads_of(root_pid: int) -> list[int]:
    """Every thread of every process `processes_of` finds; processes that exit
    meanwhile are left out."""
    tids: list[int] = []
    for pid in processes_of(root_pid):
        try:
            tids.extend(int(name) for name in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return tids


def processes_of(root_pid: int) -> list[int]:
    """``root_pid``, its descendants, and the members of its process group, root first."""
    if not _children_files():
        return _processes_by_scan(root_pid)
    tree = _descendants(root_pid)
    if not tree:
        return []
    # A member of the group that is not a descendant has been orphaned onto the caller
    # (zocket is a subreaper) or moved into the group by it: one of the caller's children.
    for pid in _children(os.getpid()):
        if pid not in tree and _pgid(pid) == root_pid:
            tree.append(pid)
    return [root_pid] + sorted(set(tree) - {root_pid})


def _descendants(root_pid: int) -> list[int]:
    """``root_pid`` and its descendants by /proc/PID/task/TID/children; [] if it is gone."""
    if not os.path.exists(f"/proc/{root_pid}/task"):
        return []
    found = [root_pid]
    for pid in found:  # grows while it is walked: breadth first
        found.extend(child for child in _children(pid) if child not in found)
    return found


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (a child belongs to the thread that forked it)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    children: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                children.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return children


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


_HAS_CHILDREN_FILES: list[bool] = []


def _children_files() -> bool:
    """Whether this kernel has /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)."""
    if not _HAS_CHILDREN_FILES:
        _HAS_CHILDREN_FILES.append(os.path.exists(f"/proc/self/task/{os.getpid()}/children"))
    return _HAS_CHILDREN_FILES[0]


def _processes_by_scan(root_pid: int) -> list[int]:
    """`processes_of` in one pass over /proc/*/stat, for kernels without children files.

    Costs a read per process of the machine: several ms with a few hundred.
    """
    parents: dict[int, int] = {}
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        if int(fields[2]) == root_pid:
            members.append(pid)
    tree = {root_pid}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    ordered = [root_pid] + sorted((tree | set(members)) - {root_pid})
    return [pid for pid in ordered if pid in parents]


def _check_process(pid: int, held: set[int], epolls: list[int]) -> Waiting | None:
    for epfd in epolls:
        for fd in _epoll_targets(pid, epfd):
            if fd in held:
                return Waiting(pid, pid, fd, "epoll")
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return None
    for tid in tids:
        found = _check_task(pid, tid, held)
        if found is not None:
            return found
    return None


def _held_fds(pid: int, inodes: Collection[int]) -> tuple[set[int], list[int]]:
    """Which of the process's fds are held sockets, and which are epoll instances."""
    held: set[int] = set()
    epolls: list[int] = []
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return held, epolls
    for name in fds:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            held.add(int(name))
        elif target == _EPOLL:
            epolls.append(int(name))
    return held, epolls


def _epoll_targets(pid: int, epfd: int) -> list[int]:
    """The fds an epoll set watches for reading: ``tfd: N events: HEX ...`` lines."""
    try:
        with open(f"/proc/{pid}/fdinfo/{epfd}") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    targets = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "tfd:" and fields[2] == "events:":
            if int(fields[3], 16) & libc.EPOLLIN:
                targets.append(int(fields[1]))
    return targets


def _check_task(pid: int, tid: int, held: set[int]) -> Waiting | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return None
    if len(fields) < 3 or not fields[0].isdigit():
        return None  # "running", or not in a syscall
    name = libc.WAIT_SYSCALLS.get(int(fields[0]))
    if name is None:
        return None
    args = [int(a, 16) for a in fields[1:7]]
    if name in _ACCEPT:
        fds = {args[0]}
    elif name in _POLL:
        fds = _poll_fds(pid, args[0], args[1])
    elif name in _SELECT:
        fds = _select_fds(pid, args[0], args[1])
    else:
        return None  # epoll waits were judged from fdinfo
    for fd in sorted(fds & held):
        return Waiting(pid, tid, fd, name)
    return None


def _read_memory(pid: int, address: int, size: int) -> bytes:
    if not address or size <= 0:
        return b""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(address)
            return mem.read(size)
    except (OSError, OverflowError, ValueError):
        return b""


def _poll_fds(pid: int, address: int, count: int) -> set[int]:
    """The fds a pollfd array asks POLLIN for."""
    count = min(count, 4096)
    data = _read_memory(pid, address, count * libc.POLLFD_SIZE)
    (fd_at, fd_size), (ev_at, ev_size) = libc.POLLFD_FD, libc.POLLFD_EVENTS
    fds = set()
    for base in range(0, len(data) - libc.POLLFD_SIZE + 1, libc.POLLFD_SIZE):
        fd = int.from_bytes(data[base + fd_at : base + fd_at + fd_size], sys.byteorder, signed=True)
        events = int.from_bytes(data[base + ev_at : base + ev_at + ev_size], sys.byteorder)
        if fd >= 0 and events & libc.POLLIN:
            fds.add(fd)
    return fds


def _select_fds(pid: int, nfds: int, readfds: int) -> set[int]:
    """The fds set in a select() read set (an array of longs: bit i of the set is fd i)."""
    nfds = min(nfds, libc.FD_SETSIZE)
    data = _read_memory(pid, readfds, (nfds + 7) // 8)
    bits = int.from_bytes(data, "little")  # bit order of fd_set on a little-endian machine
    return {fd for fd in range(min(nfds, len(data) * 8)) if bits >> fd & 1}
