"""Start one process with the held sockets on fd 3, 4, ... the systemd way.

Everything the child needs (argv, environment, the PATH search) is prepared
here in the parent; the child side is a few lines of C in the cffi module
(``zocket_spawn``) that only moves fds, sets LISTEN_PID and execs. An exec
failure comes back as (stage, errno) over a close-on-exec pipe, as CPython's
_posixsubprocess does, so that "command not found" is an error of the spawn
and not a mysterious exit 127 later.

With ``adopt``, the same channel (a socket then) brings back the listener of the
seccomp filter the child installed just before exec (see zocket.adoption), or
why it could not: that is no failure, the server runs without adoption.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import libc
from .fdnames import encode_fdnames

#: Variables describing fds that this spawn does not hand over: never inherited.
_ACTIVATION_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class SpawnError(Exception):
    """The command could not be started; ``exit_status`` follows the shell's conventions."""

    exit_status = 126


class CommandNotFound(SpawnError):
    exit_status = 127


class CommandNotExecutable(SpawnError):
    exit_status = 126


@dataclass(frozen=True)
class Child:
    """A started process: its pid (also its process group) and a pidfd for its exit.

    ``seccomp_listener`` is the fd on which its bind() and listen() calls arrive when it
    was spawned with ``adopt`` (None otherwise, or when the filter could not be
    installed: ``adopt_error`` is then the errno that said why).
    """

    pid: int
    pidfd: int | None
    seccomp_listener: int | None = None
    adopt_error: int = 0

    def close(self) -> None:
        if self.pidfd is not None:
            libc.close(self.pidfd)
        if self.seccomp_listener is not None:
            libc.close(self.seccomp_listener)


def candidates(command: str, path: str | None) -> list[bytes]:
    """The paths execvp would try for ``command``, in order."""
    if "/" in command:
        return [os.fsencode(command)]
    if path is None:
        path = os.defpath
    return [os.fsencode(os.path.join(d or ".", command)) for d in path.split(os.pathsep)]


def child_environment(
    env: Mapping[str, str], names: Sequence[str], extra: Mapping[str, str] | None = None
) -> list[bytes]:
    """The child's environment: ``env`` plus LISTEN_FDS and LISTEN_FDNAMES.

    LISTEN_PID is added by the child itself, since only it knows its pid
    before exec. Names are always set: twisted needs them, others ignore them.
    """
    merged = {k: v for k, v in env.items() if k not in _ACTIVATION_VARS}
    merged.update({k: v for k, v in (extra or {}).items() if k not in _ACTIVATION_VARS})
    if names:
        merged["LISTEN_FDS"] = str(len(names))
        merged["LISTEN_FDNAMES"] = encode_fdnames(names)
    return [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in merged.items()]


def spawn(
    argv: Sequence[str],
    *,
    fds: Sequence[int],
    names: Sequence[str],
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    deathsig: int = libc.SIGTERM,
    adopt: bool = False,
    slice_ns: int = 0,
) -> Child:
    """Start ``argv`` in its own process group with ``fds`` on 3, 4, ...

    The child gets exactly fds 0, 1, 2 and the held ones; LISTEN_FDS,
    LISTEN_FDNAMES and LISTEN_PID (its own pid) describe them. ``deathsig`` is
    sent to it if the holder dies (0: none). With ``adopt`` its bind() and listen()
    calls wait for the holder's answer on ``Child.seccomp_listener``. With ``slice_ns``
    it starts with that time slice (`libc.set_sched_slice`). Raises
    CommandNotFound, CommandNotExecutable or SpawnError, each with a one-line message.
    """
    if not argv or not argv[0]:
        raise SpawnError("empty command")
    if len(fds) != len(names):
        raise ValueError("one name per fd")
    if env is None:
        env = os.environ
    environment = child_environment(env, names, extra_env)
    paths = candidates(argv[0], env.get("PATH"))
    program = _adoption_program() if adopt else None
    if program is not None:
        # SEQPACKET: each report is one message, and the listener rides on its own.
        read_end, write_end = libc.socketpair(
            libc.AF_UNIX, libc.SOCK_SEQPACKET | libc.SOCK_CLOEXEC
        )
    else:
        read_end, write_end = libc.pipe2()
    listener: int | None = None
    adopt_error = errno.ENOSYS if adopt and program is None else 0
    try:
        pid = libc.spawn(
            paths,
            [os.fsencode(a) for a in argv],
            environment,
            fds=fds,
            errpipe=write_end,
            listen_pid=bool(fds),
            deathsig=deathsig,
            cwd=os.fsencode(cwd) if cwd is not None else None,
            seccomp_filter=program,
            slice_ns=slice_ns,
        )
        libc.close(write_end)
        write_end = -1
        if program is not None:
            report, listener, adopt_error = _read_adopt_reports(read_end)
        else:
            report = _read_report(read_end)
    finally:
        if write_end != -1:
            libc.close(write_end)
        libc.close(read_end)
    if report is not None:
        if listener is not None:
            libc.close(listener)
        libc.waitpid(pid)  # it has _exit()ed already; do not leave a zombie
        raise _spawn_error(argv[0], *report)
    try:
        pidfd: int | None = libc.pidfd_open(pid)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            # A child nobody could watch must not live on with the held sockets.
            if listener is not None:
                libc.close(listener)
            libc.kill(pid, libc.SIGKILL)
            libc.waitpid(pid)
            raise
        pidfd = None
    return Child(pid, pidfd, listener, adopt_error)


def _adoption_program() -> libc.SeccompProgram | None:
    """The filter for ``adopt``, or None where this build or architecture has none."""
    if not libc.HAS_SECCOMP_ADOPT or not libc.AUDIT_ARCH:
        return None
    return libc.adoption_program()


def _read_adopt_reports(fd: int) -> tuple[tuple[int, int] | None, int | None, int]:
    """(failure report or None, seccomp listener or None, errno of an unavailable filter).

    The child sends at most one adoption report, then a failure report or nothing
    (exec closed the channel).
    """
    listener: int | None = None
    adopt_error = 0
    half = libc.SPAWN_REPORT_SIZE // 2
    try:
        for _ in range(3):
            data, fds, _flags = libc.recvmsg_fds(fd, libc.SPAWN_REPORT_SIZE, 1)
            for extra in fds:
                if listener is None:
                    listener = extra
                else:
                    libc.close(extra)
            if len(data) < libc.SPAWN_REPORT_SIZE:
                return None, listener, adopt_error
            stage = int.from_bytes(data[:half], sys.byteorder, signed=True)
            err = int.from_bytes(data[half:], sys.byteorder, signed=True)
            if stage == libc.SPAWN_ADOPT_UNAVAILABLE:
                adopt_error = err
            elif stage != libc.SPAWN_ADOPT_LISTENER:
                return (stage, err), listener, adopt_error
        return None, listener, adopt_error
    except BaseException:
        if listener is not None:
            libc.close(listener)
        raise


def _read_report(fd: int) -> tuple[int, int] | None:
    """(stage, errno) if the child failed before exec; None once exec closed the pipe."""
    data = b""
    while len(data) < libc.SPAWN_REPORT_SIZE:
        chunk = libc.read(fd, libc.SPAWN_REPORT_SIZE - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) < libc.SPAWN_REPORT_SIZE:
        return None
    half = libc.SPAWN_REPORT_SIZE // 2
    return (
        int.from_bytes(data[:half], sys.byteorder, signed=True),
        int.from_bytes(data[half:], sys.byteorder, signed=True),
    )


def _spawn_error(command: str, stage: int, err: int) -> SpawnError:
    reason = os.strerror(err)
    if libc.SPAWN_STAGES.get(stage) != "exec":
        step = libc.SPAWN_STAGES.get(stage, stage)
        return SpawnError(f"cannot start {command}: {step}: {reason}")
    if err == errno.ENOENT:
        return CommandNotFound(f"command not found: {command}")
    if err in (errno.EACCES, errno.EPERM):
        return CommandNotExecutable(f"command not executable: {command} ({reason})")
    return CommandNotExecutable(f"cannot run {command}: {reason}")
