"""The sentry: stops every generation's process group if the holder dies without doing it.

PR_SET_PDEATHSIG, set on each generation's first process, is the kernel's
only way to signal a child when its parent dies, and it reaches that one
process. A server behind ``--shell`` is the shell's child; workers that
ignore SIGTERM outlive their master: a SIGKILLed holder would leave them
serving the port, with no one to restart or stop them.

So the holder forks one small process at start, in C (``zocket_sentry``):
it holds no socket, blocks every signal, and reads the holder's list of
process groups from a pipe. A clean exit of the holder ends the list with a
0 and the sentry leaves quietly. If the pipe reaches EOF without one, the
holder died: the sentry sends each listed group the death signal, waits up to
the stop timeout, then SIGKILLs what is left.

What it cannot reach: a process that left its generation's process group
(``setsid``, a daemonizing server), and anything once the sentry itself is
SIGKILLed (``kill -9 -PGID`` of zocket's group does not reach it: it has its
own group).
"""

from __future__ import annotations

import errno
import struct

from . import libc
from ._libc import lib

_RECORD = struct.Struct("=i")


class Sentry:
    """The holder's end of the sentry's pipe."""

    def __init__(
        self, deathsig: int, timeout: float, resume: tuple[int, int] | None = None
    ) -> None:
        if resume is not None:  # the same sentry, through zocket's own re-exec
            self.pid, self._write_end = resume
            libc.set_cloexec(self._write_end)
            return
        read_end, self._write_end = libc.pipe2(libc.O_CLOEXEC)
        try:
            pid = lib.zocket_sentry(read_end, deathsig, int(timeout * 1000))
            if pid == -1:
                raise libc.error("fork")
        except BaseException:
            libc.close(self._write_end)
            raise
        finally:
            libc.close(read_end)
        self.pid = int(pid)

    @property
    def fd(self) -> int:
        return self._write_end

    def watch(self, pgid: int) -> None:
        """Stop this process group should the holder die."""
        self._send(pgid)

    def forget(self, pgid: int) -> None:
        """The group is gone: its number may be reused by someone else's."""
        self._send(-pgid)

    def close(self) -> None:
        """The holder exits cleanly (it stopped everything itself): the sentry leaves too."""
        if self._write_end < 0:
            return
        self._send(0)
        libc.close(self._write_end)
        self._write_end = -1
        try:
            libc.waitpid(self.pid)
        except ChildProcessError:
            pass  # reaped already by a waitpid(-1) of the orphan reaper

    def _send(self, record: int) -> None:
        try:
            libc.write(self._write_end, _RECORD.pack(record))
        except OSError as exc:
            if exc.errno != errno.EPIPE:  # the sentry was killed: nothing left to tell
                raise
