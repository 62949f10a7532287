"""The holder's event loop: readable fds, keyed timers and signals; nothing else.

One thread. Signal handlers only record: Python's C-level handler writes the
signal number to a wake-up pipe (``signal.set_wakeup_fd``), and the loop
reads it like any other fd, so a signal is handled between two events and
never in the middle of one. Child exits arrive as readable pidfds, file
changes as a readable inotify fd, notify messages as readable datagram
sockets. Timers have keys, so that setting one again moves it instead of
adding a second.

The loop knows nothing of generations: the holder registers what to call.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import libc

Clock = Callable[[], float]
#: selectors (epoll_wait) take a timeout in milliseconds as a C int: about 24 days.
MAX_TIMEOUT = (2**31 - 1) / 1000


@dataclass(order=True)
class _Timer:
    deadline: float
    seq: int
    key: Hashable = field(compare=False)
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Loop:
    """Call ``add_reader`` callbacks when their fd is readable and timers when they are due."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._selector = selectors.DefaultSelector()
        self._heap: list[_Timer] = []
        self._timers: dict[Hashable, _Timer] = {}
        self._seq = itertools.count()
        self._signal_fd = -1

    def close(self) -> None:
        self._selector.close()

    def take_signals(self) -> list[int]:
        """Signals caught but not yet handled, taken without handling them."""
        return self._read_signals(self._signal_fd) if self._signal_fd >= 0 else []

    @staticmethod
    def _read_signals(fd: int) -> list[int]:
        taken: list[int] = []
        while True:
            try:
                data = os.read(fd, 512)
            except BlockingIOError:
                return taken
            if not data:
                return taken
            taken.extend(data)

    # --- fds ----------------------------------------------------------------------------------

    def add_reader(self, fd: int, callback: Callable[[int], None]) -> None:
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd``; call before closing it (a closed number may be reused)."""
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    # --- timers -------------------------------------------------------------------------------

    def set_timer(self, key: Hashable, delay: float, action: Callable[[], None]) -> None:
        """Call ``action`` in ``delay`` seconds; a timer already set under ``key`` is replaced."""
        self.cancel_timer(key)
        timer = _Timer(self.clock() + delay, next(self._seq), key, action)
        self._timers[key] = timer
        heapq.heappush(self._heap, timer)

    def cancel_timer(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancelled = True

    def pending(self) -> list[tuple[Hashable, float]]:
        """Every timer set, with the seconds left until it is due."""
        now = self.clock()
        return [(key, max(0.0, t.deadline - now)) for key, t in self._timers.items()]

    def _next_timeout(self) -> float | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        return min(MAX_TIMEOUT, max(0.0, self._heap[0].deadline - self.clock()))

    # --- running ------------------------------------------------------------------------------

    def step(self) -> None:
        """Wait for the next fd or timer, and call what is due."""
        for key, _mask in self._selector.select(self._next_timeout()):
            # An earlier callback of this batch may have closed this fd (a generation's exit
            # closes its notify socket): its number may even belong to something else now.
            if self._selector.get_map().get(key.fd) is key:
                key.data(key.fd)
        now = self.clock()
        while self._heap and (self._heap[0].cancelled or self._heap[0].deadline <= now):
            timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            del self._timers[timer.key]
            timer.action()

    @contextmanager
    def signals(
        self, handled: Iterable[int], callback: Callable[[int], None]
    ) -> Iterator[None]:
        """Deliver ``handled`` signals to ``callback`` from the loop; restore on exit."""
        read_end, write_end = libc.pipe2(libc.O_CLOEXEC | libc.O_NONBLOCK)
        previous = {signum: signal.signal(signum, _only_wake) for signum in handled}
        old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

        def drain(fd: int) -> None:
            for signum in self._read_signals(fd):
                callback(signum)

        self.add_reader(read_end, drain)
        self._signal_fd = read_end
        try:
            yield
        finally:
            self._signal_fd = -1
            self.remove_reader(read_end)
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            libc.close(read_end)
            libc.close(write_end)


def _only_wake(signum: int, frame: object) -> None:
    """The Python-level handler does nothing: the C handler already wrote ``signum``."""
