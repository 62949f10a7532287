"""The holder: keeps the listening sockets open and runs generations of the server on them.

One loop, one thread. Signal handlers only record (Python writes the signal
number to a wake-up pipe); child exits arrive as readable pidfds; everything
else is a timer. The loop turns each into a step of a generation's life and
one log line.
"""

from __future__ import annotations

import os
import selectors
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import libc
from .addresses import ListenSpec
from .command import expand
from .listeners import Listener, open_listeners
from .spawn import Child, spawn

Log = Callable[[str], None]

#: Signals zocket passes on to the server's process group, then exits with its status.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)


def stderr_log(line: str) -> None:
    """One line on stderr; a closed or broken stderr must never stop the holder."""
    try:
        sys.stderr.write(f"zocket: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


@dataclass
class Config:
    """What to hold and what to run: everything the CLI can say, as data."""

    listen: Sequence[ListenSpec]
    command: Sequence[str]
    backlog: int = libc.SOMAXCONN
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    #: Sent to the server's process group by the kernel if zocket dies.
    deathsig: int = signal.SIGTERM
    #: After forwarding a stop signal, how long before the process group gets SIGKILL.
    stop_timeout: float = 10.0
    #: Start the server again when it exits by itself (with backoff); else exit with its status.
    respawn: bool = True


@dataclass
class Generation:
    """One run of the command on the held sockets."""

    number: int
    child: Child
    argv: list[str]
    started: float = field(default_factory=time.monotonic)
    exit_status: libc.WaitStatus | None = None

    @property
    def pid(self) -> int:
        return self.child.pid


class Supervisor:
    """Hold the sockets of ``config`` and run its command on them until told to stop.

    ``run()`` is the whole life: open the sockets (unless given), start
    generation 1, forward stop signals, return the exit status zocket should
    exit with. Sockets passed in ``listeners`` are the caller's to close.
    """

    def __init__(
        self,
        config: Config,
        *,
        listeners: Sequence[Listener] | None = None,
        log: Log = stderr_log,
    ) -> None:
        self.config = config
        self.log = log
        self._own_listeners = listeners is None
        self.listeners: list[Listener] = list(listeners) if listeners is not None else []
        self.generations: list[Generation] = []
        self._selector: selectors.BaseSelector | None = None
        self._stop_deadline: float | None = None
        self._exit_status: int | None = None

    # --- public -------------------------------------------------------------------------------

    def open(self) -> list[Listener]:
        """Bind and listen every socket; raises ListenError. Idempotent."""
        if not self.listeners:
            self.listeners = open_listeners(self.config.listen, self.config.backlog)
        return self.listeners

    def run(self) -> int:
        """Serve until the server exits or zocket is told to stop; the status to exit with."""
        self.open()
        argv = expand(self.config.command, self.listeners)
        try:
            with self._signals() as wakeup:
                self._selector = selectors.DefaultSelector()
                self._selector.register(wakeup, selectors.EVENT_READ, self._on_signals)
                generation = self._start(argv)
                self.log(
                    f"holding {self._describe_listeners()}; "
                    f"generation {generation.number} started (pid {generation.pid})"
                )
                while self._exit_status is None:
                    self._step()
                return self._exit_status
        finally:
            self._shutdown()

    @property
    def current(self) -> Generation | None:
        return self.generations[-1] if self.generations else None

    # --- the loop --------------------------------------------------------------------------------

    def _step(self) -> None:
        assert self._selector is not None
        timeout = None
        if self._stop_deadline is not None:
            timeout = max(0.0, self._stop_deadline - time.monotonic())
        for key, _mask in self._selector.select(timeout):
            key.data(key.fileobj)
        if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
            self._kill_all()

    def _on_signals(self, wakeup: int) -> None:
        try:
            data = os.read(wakeup, 512)
        except BlockingIOError:
            return
        for signum in data:
            if signum in FORWARDED:
                self._forward(signum)
            elif signum == signal.SIGCHLD:
                self._reap_orphans()

    def _on_child_exit(self, pidfd: int) -> None:
        for generation in self.generations:
            if generation.child.pidfd == pidfd and generation.exit_status is None:
                self._reaped(generation)

    def _reaped(self, generation: Generation) -> None:
        found = libc.reap(generation.pid)
        if found is None:
            return
        generation.exit_status = found[1]
        self._forget(generation)
        self.log(
            f"generation {generation.number} {_describe_exit(found[1])} "
            f"after {time.monotonic() - generation.started:.1f} s"
        )
        if generation is self.current:
            self._exit_status = found[1].shell_status

    # --- actions --------------------------------------------------------------------------------

    def _start(self, argv: list[str]) -> Generation:
        child = spawn(
            argv,
            fds=[listener.fd for listener in self.listeners],
            names=[listener.name for listener in self.listeners],
            env=self.config.env,
            cwd=self.config.cwd,
            deathsig=self.config.deathsig,
        )
        generation = Generation(len(self.generations) + 1, child, argv)
        self.generations.append(generation)
        assert self._selector is not None
        if child.pidfd is not None:
            self._selector.register(child.pidfd, selectors.EVENT_READ, self._on_child_exit)
        return generation

    def _forward(self, signum: int) -> None:
        """Pass a stop signal to every live generation's process group; arm the KILL timer."""
        for generation in self._live():
            _signal_group(generation.pid, signum)
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.config.stop_timeout

    def _kill_all(self) -> None:
        live = list(self._live())
        for generation in live:
            self.log(
                f"generation {generation.number} did not stop within "
                f"{self.config.stop_timeout:g} s: sending SIGKILL"
            )
            _signal_group(generation.pid, signal.SIGKILL)
        self._stop_deadline = None if not live else time.monotonic() + self.config.stop_timeout

    def _reap_orphans(self) -> None:
        """Reap children that are not generations (adopted as subreaper or PID 1)."""
        ours = {g.pid for g in self._live()}
        while True:
            found = libc.reap(-1)
            if found is None:
                return
            pid, status = found
            for generation in self.generations:
                if generation.pid == pid and generation.exit_status is None:
                    generation.exit_status = status
                    self._forget(generation)
                    if pid in ours and generation is self.current:
                        self._exit_status = status.shell_status

    def _live(self) -> Iterator[Generation]:
        return (g for g in self.generations if g.exit_status is None)

    def _forget(self, generation: Generation) -> None:
        if generation.child.pidfd is not None and self._selector is not None:
            self._selector.unregister(generation.child.pidfd)
        generation.child.close()

    def _shutdown(self) -> None:
        """On the way out: no server may outlive the holder, then release the sockets."""
        for generation in list(self._live()):
            _signal_group(generation.pid, signal.SIGKILL)
            libc.waitpid(generation.pid)
            generation.exit_status = libc.WaitStatus(0)
            self._forget(generation)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._own_listeners:
            for listener in self.listeners:
                listener.close()

    # --- helpers --------------------------------------------------------------------------------

    @contextmanager
    def _signals(self) -> Iterator[int]:
        """Handlers that only record: the wake-up fd carries the signal numbers to the loop."""
        read_end, write_end = libc.pipe2(libc.O_CLOEXEC | libc.O_NONBLOCK)
        handled = FORWARDED + (signal.SIGCHLD,)
        previous = {signum: signal.signal(signum, _record) for signum in handled}
        old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        try:
            yield read_end
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            libc.close(read_end)
            libc.close(write_end)

    def _describe_listeners(self) -> str:
        return ", ".join(
            f"{listener.url} ({listener.name}, fd {3 + index})"
            for index, listener in enumerate(self.listeners)
        )


def _record(signum: int, frame: object) -> None:
    """The Python-level handler: nothing. The C handler already wrote ``signum`` to the pipe."""


def _signal_group(pgid: int, signum: int) -> None:
    try:
        libc.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # already gone; it will be reaped


def _describe_exit(status: libc.WaitStatus) -> str:
    if status.signaled:
        assert status.signal is not None
        return f"killed by {signal.Signals(status.signal).name}"
    return f"exited with status {status.exit_code}"
