"""``zocket upgrade`` (or SIGUSR2): the installed zocket replaces the running one, in place.

execve(2) keeps the process: its pid, its children (every generation stays
zocket's child, so it can still be signalled, reaped and watched), and every
fd not marked close-on-exec. So the holder clears close-on-exec on what it
must keep (the held sockets, each generation's notify socket and seccomp
listener, the sentry's pipe, the control socket and the connection that
asked), writes the rest of its state (the lifecycle, the timers left, which
fd is which) as JSON to a memfd, and execs the interpreter on zocket's entry
point with its own arguments. The new image finds ``ZOCKET_UPGRADE_FD`` in
its environment, reads the state and carries on: no held socket is closed, no
generation restarted, and connections wait in the kernel's queue the ~100 ms
the new interpreter takes to start. Other control connections (a
``zocket reload`` still waiting for its outcome) are closed: their clients
report it, and the reload itself goes on in the new image.

Two things would make that window dangerous, and both are guarded:

- a new install that cannot start would leave a process with no holder in
  it: before exec, a child interpreter imports the installed zocket, parses
  this zocket's command line with it and checks the state's format, and the
  upgrade is refused (the old image serves on and says why) unless it can.
  The holder's loop runs on while it checks (`Preflight`);
- a SIGTERM or SIGHUP arriving before the new image has installed its
  handlers would kill zocket outright: the signals zocket handles are
  blocked from the snapshot on, across exec (the mask survives it), and
  unblocked by the new image once its handlers are in place, so they wait
  instead; those already caught but not yet handled travel in the state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from . import libc
from ._version import __version__

#: The environment variable that names the memfd holding the state.
STATE_FD = "ZOCKET_UPGRADE_FD"
#: The state's layout; a new image refuses one it does not know.
FORMAT = 1
#: How long the installed zocket may take to import before the upgrade is refused.
PREFLIGHT_TIMEOUT = 30.0


class UpgradeError(Exception):
    """The upgrade did not happen; this image runs on. One line."""

    exit_status = 1


#: ``python -c`` puts the working directory first on sys.path: dropped, so that a module
#: someone could write there is never imported (the console script does not look there).
_CLEAN_PATH = "import sys; del sys.path[0]; "
_START = _CLEAN_PATH + "from zocket.__main__ import run; run()"
#: What the new image must manage before this one gives anything up: import, parse this
#: zocket's own command line, and read this state's format.
_CHECK = _CLEAN_PATH + (
    "from zocket import cli, holder, libc, upgrade; cli.parse_args(sys.argv[1:]); "
    f"assert upgrade.FORMAT == {FORMAT}, 'state format %s, not {FORMAT}' % upgrade.FORMAT"
)


def command() -> list[str]:
    """How the installed zocket is started again with this one's arguments."""
    return [sys.executable, "-c", _START, *sys.argv[1:]]


class Preflight:
    """The check that the installed zocket could take over, run beside the holder's loop.

    It is a child interpreter importing the installed zocket (see ``_CHECK``):
    about 0.2 s, up to ``PREFLIGHT_TIMEOUT`` on a slow disk. The holder goes on
    meanwhile (signals, exits, readiness, control requests), and calls
    `finish` once ``pidfd`` is readable or the timeout has passed. Its stderr
    goes to a pipe read only then: a failing import writes a few lines, far
    less than the pipe holds.
    """

    def __init__(self) -> None:
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHECK, *sys.argv[1:]],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise UpgradeError(f"the installed zocket does not start: {exc}") from None
        self.pidfd: int | None = None
        try:
            self.pidfd = libc.pidfd_open(self.process.pid)
        except OSError as exc:
            self.kill()
            self.close()
            raise UpgradeError(f"cannot watch the check of the new install: {exc}") from None

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self, status: libc.WaitStatus) -> None:
        """The holder's reaper collected it first (waitpid(-1), for orphans): how it ended,
        as subprocess would have said (a negative number: killed by that signal)."""
        code = status.exit_code
        self.process.returncode = code if code is not None else -(status.signal or 0)

    def finish(self) -> None:
        """Raise UpgradeError unless the check passed; a check still running is killed."""
        try:
            code = self.process.poll()
            if code is None:
                self.kill()
                raise UpgradeError(
                    f"the installed zocket does not start: no answer in {PREFLIGHT_TIMEOUT:g} s"
                )
            if code != 0:
                assert self.process.stderr is not None
                os.set_blocking(self.process.stderr.fileno(), False)
                text = (self.process.stderr.read() or b"").decode(errors="replace")
                lines = [line for line in text.splitlines() if line.strip()]
                why = lines[-1].strip() if lines else f"exit status {code}"
                raise UpgradeError(f"the installed zocket does not start: {why}")
        finally:
            self.close()

    def kill(self) -> None:
        """Stop the check at once (zocket stops, or it took too long)."""
        if self.process.returncode is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        if self.process.stderr is not None:
            self.process.stderr.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def exec_new_image(state: dict[str, Any], keep: Iterable[int]) -> None:
    """Exec the installed zocket with ``state``; returns only by raising UpgradeError.

    The caller blocks the signals it handles first (see :func:`block`).
    """
    keep = list(keep)
    try:
        memfd = os.memfd_create("zocket-upgrade", 0)  # not close-on-exec: the new image reads it
    except OSError as exc:
        raise UpgradeError(f"cannot pass the state on: {exc.strerror}") from None
    try:
        try:
            data = json.dumps({"format": FORMAT, "from": __version__, **state}).encode()
            while data:
                data = data[os.write(memfd, data):]
            os.lseek(memfd, 0, os.SEEK_SET)
            env = {**os.environ, STATE_FD: str(memfd)}
            for fd in keep:
                os.set_inheritable(fd, True)
            os.execve(sys.executable, command(), env)
        except OSError as exc:
            raise UpgradeError(f"cannot exec {sys.executable}: {exc.strerror}") from None
        finally:
            # Only reached if execve failed: this image carries on as before.
            for fd in keep:
                os.set_inheritable(fd, False)
    finally:
        os.close(memfd)


def take_state() -> dict[str, Any] | None:
    """The state an old image left for this one, if this process is an upgrade."""
    text = os.environ.pop(STATE_FD, None)
    if text is None:
        return None
    fd = int(text)
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    state = json.loads(b"".join(chunks))
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UpgradeError(f"an upgrade state of an unknown format: {state.get('format')!r}")
    return state


def block(handled: Iterable[int]) -> set[int]:
    """Hold ``handled`` signals from here to the new image's handlers; the old mask."""
    return {int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, set(handled))}


def restore(mask: Iterable[int]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set(mask))


def unblock(handled: Iterable[int]) -> None:
    """The new image's handlers are in place: signals that waited across exec arrive now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(handled))


