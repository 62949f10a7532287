"""zocket.spawn with real processes, inspected through /proc.

The children are mostly ``sleep 30``: no interpreter opening files of its
own, so /proc/<pid>/fd shows exactly what spawn() handed over. Each child is
killed and reaped by the ``running`` context manager, and every wait has a
timeout.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zocket
from support import children_of, no_new_fds, own_fds, proc_status, wait_readable
from zocket import libc
from zocket.spawn import (
    Child,
    CommandNotExecutable,
    CommandNotFound,
    SpawnError,
    candidates,
    child_environment,
    spawn,
)

ZOCKET_PARENT = str(Path(zocket.__file__).resolve().parent.parent)
CLOEXEC = libc.SOCK_CLOEXEC
HAS_IPV6 = os.path.exists("/proc/net/if_inet6")
O_CLOEXEC_OCTAL = 0o2000000  # as fdinfo prints it


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """No fd and no child process outlives a test."""
    with no_new_fds():
        yield
        strays = children_of(os.getpid())
        for pid in strays:  # so that one failure does not spill into the next tests
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
    assert strays == []


def finish(child: Child, timeout: float = 10.0) -> libc.WaitStatus:
    """Reap ``child`` after it exits by itself (bounded), then close its pidfd."""
    assert child.pidfd is not None
    try:
        if not wait_readable(child.pidfd, timeout):
            libc.kill(child.pid, signal.SIGKILL)
            wait_readable(child.pidfd, timeout)
            libc.waitpid(child.pid)
            pytest.fail(f"child {child.pid} did not exit within {timeout}s")
        pid, raw = libc.waitpid(child.pid)
        assert pid == child.pid
        return libc.WaitStatus(raw)
    finally:
        child.close()


def stop(child: Child) -> libc.WaitStatus:
    """SIGKILL and reap."""
    try:
        libc.kill(child.pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover - cannot happen before waitpid
        pass
    return finish(child)


@contextmanager
def running(argv: Sequence[str], **kwargs: Any) -> Iterator[Child]:
    kwargs.setdefault("fds", [])
    kwargs.setdefault("names", ["fd%d" % i for i in range(len(kwargs["fds"]))])
    child = spawn(argv, **kwargs)
    try:
        yield child
    finally:
        stop(child)


def settled(pid: int, timeout: float = 5.0) -> None:
    """Wait until ``sleep`` sits in (clock_)nanosleep: its start-up fds are closed by then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/syscall") as f:
                number = f.read().split()[0]
        except (OSError, IndexError):  # pragma: no cover - no /proc/pid/syscall here
            time.sleep(0.3)
            return
        if number in ("35", "230"):  # nanosleep, clock_nanosleep on x86_64
            return
        time.sleep(0.005)
    pytest.fail(f"process {pid} never reached its sleep")


def proc_fds(pid: int) -> dict[int, str]:
    base = f"/proc/{pid}/fd"
    return {int(n): os.readlink(f"{base}/{n}") for n in os.listdir(base)}


def proc_environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if item)
    return {os.fsdecode(k): os.fsdecode(v) for k, v in pairs}


def fdinfo_flags(pid: int, fd: int) -> int:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError("no flags line")


def socket_target(fd: int) -> str:
    """What /proc shows for a socket fd: socket:[inode]."""
    return f"socket:[{os.fstat(fd).st_ino}]"


def sig_bit(mask_hex: str, sig: int) -> bool:
    return bool(int(mask_hex, 16) >> (sig - 1) & 1)


class Sockets:
    """Listening sockets made with zocket.libc (close-on-exec), closed at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fds: list[int] = []

    def make(self, kind: str) -> int:
        family = {"v4": libc.AF_INET, "v6": libc.AF_INET6, "unix": libc.AF_UNIX}[kind]
        fd = libc.socket(family, libc.SOCK_STREAM | CLOEXEC)
        self.fds.append(fd)
        if kind == "v4":
            libc.bind(fd, ("127.0.0.1", 0))
        elif kind == "v6":
            libc.bind(fd, ("::1", 0))
        else:
            libc.bind(fd, str(self.directory / f"s{len(self.fds)}.sock"))
        libc.listen(fd, 8)
        return fd

    def track(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        while self.fds:
            libc.close(self.fds.pop())


@contextmanager
def sockets(directory: Path) -> Iterator[Sockets]:
    held = Sockets(directory)
    try:
        yield held
    finally:
        held.close()


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Sockets]:
    with sockets(tmp_path) as s:
        yield s


@contextmanager
def inheritable_clutter() -> Iterator[list[int]]:
    """Inheritable fds in the test process that no child may see."""
    made = []
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        made.append(null)
        os.set_inheritable(null, True)
        read_end, write_end = os.pipe()
        made += [read_end, write_end]
        for fd in (read_end, write_end):
            os.set_inheritable(fd, True)
        high = libc.fcntl(null, libc.F_DUPFD, 300)  # inheritable, far above the targets
        made.append(high)
        assert all(os.get_inheritable(fd) for fd in made)
        yield made
    finally:
        for fd in made:
            os.close(fd)


@contextmanager
def borrowed(numbers: Sequence[int]) -> Iterator[None]:
    """Let the test put its own fds on ``numbers``; puts back what was there."""
    saved: dict[int, tuple[int, bool] | None] = {}
    for n in numbers:
        try:
            saved[n] = (libc.fcntl(n, libc.F_DUPFD_CLOEXEC, 500), libc.get_cloexec(n))
        except OSError as exc:
            assert exc.errno == errno.EBADF
            saved[n] = None
    try:
        yield
    finally:
        for n, old in saved.items():
            if old is None:
                try:
                    libc.close(n)
                except OSError:
                    pass
            else:
                copy, cloexec = old
                libc.dup3(copy, n, libc.O_CLOEXEC if cloexec else 0)
                libc.close(copy)


def check_child_fds(pid: int, held_fds: Sequence[int]) -> None:
    settled(pid)
    seen = proc_fds(pid)
    assert set(seen) == set(range(3 + len(held_fds)))
    for i, fd in enumerate(held_fds):
        assert seen[3 + i] == socket_target(fd), f"fd {3 + i} of the child"
        assert not fdinfo_flags(pid, 3 + i) & O_CLOEXEC_OCTAL


def check_listen_env(pid: int, names: Sequence[str]) -> None:
    env = proc_environ(pid)
    if names:
        assert env["LISTEN_PID"] == str(pid)
        assert env["LISTEN_FDS"] == str(len(names))
        assert env["LISTEN_FDNAMES"] == ":".join(names)
    else:
        assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(env)


# --- what the child inherits --------------------------------------------------------------------

KIND_SETS = [[], ["v4"], ["v4", "unix"], ["unix", "v4", "v4"]]
if HAS_IPV6:
    KIND_SETS += [["v6"], ["v4", "v6", "unix"]]


@pytest.mark.parametrize("kinds", KIND_SETS, ids=lambda k: "-".join(k) or "none")
def test_child_sees_exactly_the_held_fds(kinds: list[str], held: Sockets) -> None:
    fds = [held.make(kind) for kind in kinds]
    names = [f"{kind}{i}" for i, kind in enumerate(kinds)]
    assert all(libc.get_cloexec(fd) for fd in fds)
    with inheritable_clutter():
        with running(["sleep", "30"], fds=fds, names=names) as child:
            check_child_fds(child.pid, fds)
            check_listen_env(child.pid, names)
    assert all(libc.get_cloexec(fd) for fd in fds)  # the holder's copies are untouched


@settings(max_examples=15, deadline=None)
@given(
    picks=st.lists(st.integers(0, 3), min_size=1, max_size=10),
    inheritable=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_any_arrangement_of_held_fds(picks: list[int], inheritable: list[bool]) -> None:
    """Repeats, any order, inheritable or close-on-exec sources: 3+i is always picks[i]."""
    with tempfile.TemporaryDirectory() as tmp, sockets(Path(tmp)) as pool:
        made = [pool.make(kind) for kind in ("v4", "unix", "v4", "unix")]
        for fd, flag in zip(made, inheritable):
            libc.set_cloexec(fd, not flag)
        fds = [made[i] for i in picks]
        names = [f"n{i}" for i in picks]
        with running(["sleep", "30"], fds=fds, names=names) as child:
            check_child_fds(child.pid, fds)
            check_listen_env(child.pid, names)


@pytest.mark.parametrize("cloexec", [True, False], ids=["cloexec", "inheritable"])
def test_held_fds_sitting_on_the_target_numbers(cloexec: bool, held: Sockets) -> None:
    """Sources on 3, 4, 5 in the wrong order: the shuffle must not overwrite one it still needs."""
    a, b, c = held.make("v4"), held.make("unix"), held.make("v4")
    identities = {fd: socket_target(fd) for fd in (a, b, c)}
    flags = libc.O_CLOEXEC if cloexec else 0
    with borrowed([3, 4, 5]):
        libc.dup3(a, 3, flags)
        libc.dup3(b, 4, flags)
        libc.dup3(c, 5, flags)
        with inheritable_clutter():
            # target 3 <- fd 4 (b), 4 <- fd 3 (a), 5 <- fd 5 (c)
            with running(["sleep", "30"], fds=[4, 3, 5], names=["b", "a", "c"]) as child:
                settled(child.pid)
                seen = proc_fds(child.pid)
                assert set(seen) == {0, 1, 2, 3, 4, 5}
                assert [seen[3], seen[4], seen[5]] == [identities[b], identities[a], identities[c]]
                for fd in (3, 4, 5):
                    assert not fdinfo_flags(child.pid, fd) & O_CLOEXEC_OCTAL
                check_listen_env(child.pid, ["b", "a", "c"])
        # the holder's own fds 3, 4, 5 are as they were
        assert [socket_target(3), socket_target(4), socket_target(5)] == [
            identities[a],
            identities[b],
            identities[c],
        ]
        assert all(libc.get_cloexec(fd) is cloexec for fd in (3, 4, 5))


def test_a_held_fd_below_3(held: Sockets) -> None:
    """A held stdin is still placed on 3 (and stays on 0)."""
    sock = held.make("v4")
    with borrowed([0]):
        libc.dup2(sock, 0)
        with running(["sleep", "30"], fds=[0], names=["zero"]) as child:
            settled(child.pid)
            seen = proc_fds(child.pid)
            assert set(seen) == {0, 1, 2, 3}
            assert seen[0] == seen[3] == socket_target(sock)


def test_the_maximum_number_of_fds(held: Sockets) -> None:
    sock = held.make("v4")
    fds = [sock] * libc.SPAWN_MAX_FDS
    with running(["sleep", "30"], fds=fds, names=["x"] * len(fds)) as child:
        check_child_fds(child.pid, fds)
    before = own_fds()
    with pytest.raises(ValueError):
        spawn(["sleep", "30"], fds=fds + [sock], names=["x"] * (len(fds) + 1))
    assert own_fds() == before  # the error pipe was closed


def test_stdio_is_inherited() -> None:
    with running(["sleep", "30"]) as child:
        settled(child.pid)
        seen = proc_fds(child.pid)
        for fd in (0, 1, 2):
            assert seen[fd] == os.readlink(f"/proc/self/fd/{fd}")


# --- environment --------------------------------------------------------------------------------


def test_listen_variables_of_the_parent_are_never_inherited(held: Sockets) -> None:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LISTEN_PID": "1",
        "LISTEN_FDS": "9",
        "LISTEN_FDNAMES": "a:b:c:d:e:f:g:h:i",
        "KEEP": "me",
    }
    with running(["sleep", "30"], fds=[], names=[], env=env) as child:
        seen = proc_environ(child.pid)
        assert seen == {"PATH": env["PATH"], "KEEP": "me"}
    sock = held.make("v4")
    with running(["sleep", "30"], fds=[sock], names=["web"], env=env) as child:
        seen = proc_environ(child.pid)
        assert seen == {
            "PATH": env["PATH"],
            "KEEP": "me",
            "LISTEN_PID": str(child.pid),
            "LISTEN_FDS": "1",
            "LISTEN_FDNAMES": "web",
        }


def test_listen_pid_in_extra_env_is_replaced(held: Sockets) -> None:
    sock = held.make("v4")
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    extra = {"LISTEN_PID": "1", "EXTRA": "yes"}
    with running(["sleep", "30"], fds=[sock], names=["web"], env=env, extra_env=extra) as child:
        seen = proc_environ(child.pid)
        assert seen["LISTEN_PID"] == str(child.pid)
        assert seen["EXTRA"] == "yes"
        assert list(seen).count("LISTEN_PID") == 1
    with running(["sleep", "30"], fds=[], names=[], env=env, extra_env=extra) as child:
        assert "LISTEN_PID" not in proc_environ(child.pid)


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOCKET_SPAWN_TEST", "inherited value")
    monkeypatch.setenv("LISTEN_PID", "1")
    with running(["sleep", "30"], extra_env={"ZOCKET_EXTRA": "x"}) as child:
        seen = proc_environ(child.pid)
    assert seen["ZOCKET_SPAWN_TEST"] == "inherited value"
    assert seen["ZOCKET_EXTRA"] == "x"
    assert "LISTEN_PID" not in seen


def test_child_environment_helper() -> None:
    env = child_environment({"A": "1", "LISTEN_FDS": "5"}, ["x", "y"], {"B": "2"})
    assert sorted(env) == sorted([b"A=1", b"B=2", b"LISTEN_FDS=2", b"LISTEN_FDNAMES=x:y"])
    with pytest.raises(ValueError):
        child_environment({}, ["bad:name"])


def test_candidates_follow_path() -> None:
    assert candidates("sleep", "/a:/b::/c") == [b"/a/sleep", b"/b/sleep", b"./sleep", b"/c/sleep"]
    assert candidates("./x", "/a") == [b"./x"]
    assert candidates("sleep", None) == [
        os.fsencode(os.path.join(d or ".", "sleep")) for d in os.defpath.split(":")
    ]


# --- process group, cwd, signals ------------------------------------------------------------------


def test_child_has_its_own_process_group() -> None:
    with running(["sleep", "30"]) as child:
        assert os.getpgid(child.pid) == child.pid != os.getpgrp()
        assert libc.getpgid(child.pid) == child.pid
        assert os.getsid(child.pid) == os.getsid(0)  # a new group, not a new session


def test_low_level_spawn_can_keep_the_group_and_skip_listen_pid(held: Sockets) -> None:
    sock = held.make("v4")
    read_end, write_end = libc.pipe2()
    try:
        pid = libc.spawn(
            [b"/bin/sleep", b"/usr/bin/sleep"],
            [b"sleep", b"30"],
            [b"LISTEN_PID=1", b"X=y"],
            fds=[sock],
            errpipe=write_end,
            listen_pid=False,
            new_group=False,
        )
        libc.close(write_end)
        write_end = -1
        assert wait_readable(read_end, 10)
        assert libc.read(read_end, 8) == b""  # exec succeeded
        try:
            assert os.getpgid(pid) == os.getpgrp()
            assert proc_environ(pid) == {"X": "y"}
            settled(pid)
            assert proc_fds(pid)[3] == socket_target(sock)
        finally:
            libc.kill(pid, signal.SIGKILL)
            libc.waitpid(pid)
    finally:
        if write_end != -1:
            libc.close(write_end)
        libc.close(read_end)


def test_cwd_is_honoured(tmp_path: Path) -> None:
    with running(["sleep", "30"], cwd=str(tmp_path)) as child:
        assert os.readlink(f"/proc/{child.pid}/cwd") == str(tmp_path.resolve())
    with running(["sleep", "30"]) as child:
        assert os.readlink(f"/proc/{child.pid}/cwd") == os.getcwd()


def test_relative_command_is_found_from_cwd(tmp_path: Path) -> None:
    script = tmp_path / "prog"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    with running(["./prog"], cwd=str(tmp_path)) as child:
        settled(child.pid)
        assert os.readlink(f"/proc/{child.pid}/exe").endswith("sleep")


def test_signal_dispositions_and_mask_are_reset() -> None:
    assert sig_bit(proc_status(os.getpid())["SigIgn"], signal.SIGPIPE)  # Python ignores it
    old_usr2 = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    old_hup = signal.signal(signal.SIGHUP, lambda s, f: None)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert {signal.SIGUSR1, signal.SIGTERM} <= blocked
        with running(["sleep", "30"]) as child:
            settled(child.pid)
            status = proc_status(child.pid)
            # spawn put the caller's mask back
            assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == blocked
        assert not sig_bit(status["SigIgn"], signal.SIGPIPE)
        assert not sig_bit(status["SigIgn"], signal.SIGUSR2)
        assert int(status["SigIgn"], 16) == 0
        assert int(status["SigBlk"], 16) == 0
        assert int(status["SigCgt"], 16) == 0
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGHUP, old_hup)
        signal.signal(signal.SIGUSR2, old_usr2)


def test_sigpipe_kills_the_child_as_in_a_fresh_process() -> None:
    """With SIGPIPE at its default, ``yes`` writing into a pipe nobody reads dies of it.

    (Were it ignored, as in the holder, ``yes`` would get EPIPE and exit 1.)
    """
    read_end, write_end = libc.pipe2()
    libc.close(read_end)
    try:
        with borrowed([1]):
            libc.dup2(write_end, 1)
            child = spawn(["yes"], fds=[], names=[])
    finally:
        libc.close(write_end)
    status = finish(child)
    assert status.signaled and status.signal == signal.SIGPIPE


PRCTL_PROBE = """
import ctypes, os, sys
value = ctypes.c_int(-1)
ret = ctypes.CDLL(None, use_errno=True).prctl(int(sys.argv[1]), ctypes.byref(value), 0, 0, 0)
os.write(3, f"{ret} {value.value}".encode())
"""


@pytest.mark.parametrize(
    "deathsig", [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1, 0], ids=lambda s: str(s)
)
def test_parent_death_signal_is_set_as_asked(deathsig: int) -> None:
    read_end, write_end = libc.pipe2()
    try:
        child = spawn(
            [sys.executable, "-I", "-S", "-c", PRCTL_PROBE, str(libc.PR_GET_PDEATHSIG)],
            fds=[write_end],
            names=["probe"],
            deathsig=deathsig,
        )
        libc.close(write_end)
        write_end = -1
        status = finish(child)
        assert wait_readable(read_end, 5)
        report = libc.read(read_end, 100)
    finally:
        if write_end != -1:
            libc.close(write_end)
        libc.close(read_end)
    assert status.exit_code == 0
    assert report == f"0 {deathsig}".encode()


INTERMEDIATE = """
import sys, time
from zocket.spawn import spawn
child = spawn(["sleep", "30"], fds=[], names=[], deathsig=int(sys.argv[1]))
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(
    ("deathsig", "dies"), [(signal.SIGTERM, True), (signal.SIGKILL, True), (0, False)]
)
def test_child_dies_with_its_holder(deathsig: int, dies: bool, tmp_path: Path) -> None:
    # The holder imports the zocket under test (installed or in place), not the checkout.
    env = dict(os.environ, PYTHONPATH=ZOCKET_PARENT)
    with ExitStack() as stack:
        holder = stack.enter_context(
            subprocess.Popen(
                [sys.executable, "-c", INTERMEDIATE, str(deathsig)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
        )
        stack.callback(holder.kill)  # runs before Popen.__exit__ waits
        assert holder.stdout is not None
        assert wait_readable(holder.stdout.fileno(), 30), "the holder did not report"
        sleeper = int(holder.stdout.readline())
        pidfd = libc.pidfd_open(sleeper)
        stack.callback(libc.close, pidfd)
        assert not wait_readable(pidfd, 0.05)
        with open(f"/proc/{sleeper}/status") as f:
            assert f"PPid:\t{holder.pid}\n" in f.read()
        holder.kill()
        holder.wait(timeout=10)
        died = wait_readable(pidfd, 5 if dies else 0.5)
        if not died:
            libc.pidfd_send_signal(pidfd, signal.SIGKILL)
            assert wait_readable(pidfd, 5)
        assert died is dies


def test_deathsig_follows_the_spawning_thread() -> None:
    """PR_SET_PDEATHSIG fires when the *thread* that forked exits (documented on spawn()):
    this is why the holder spawns from its main thread only."""
    box: list[Child] = []
    thread = threading.Thread(target=lambda: box.append(spawn(["sleep", "30"], fds=[], names=[])))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    child = box[0]
    try:
        assert child.pidfd is not None
        assert wait_readable(child.pidfd, 5), "the kernel no longer ties deathsig to the thread"
    finally:
        stop(child)


def test_pidfd_reports_the_exit() -> None:
    child = spawn(["sleep", "30"], fds=[], names=[])
    assert child.pidfd is not None
    assert libc.get_cloexec(child.pidfd)
    assert not wait_readable(child.pidfd, 0.05)
    libc.pidfd_send_signal(child.pidfd, signal.SIGTERM)
    status = finish(child)
    assert status.signal == signal.SIGTERM
    with pytest.raises(OSError) as info:
        os.fstat(child.pidfd)  # closed by Child.close()
    assert info.value.errno == errno.EBADF


# --- errors ---------------------------------------------------------------------------------------


def assert_no_child_left() -> None:
    assert children_of(os.getpid()) == []
    try:
        reaped = libc.waitpid(-1, libc.WNOHANG)
    except ChildProcessError:
        return
    assert reaped == (0, 0)


def test_command_not_found() -> None:
    name = "zocket-no-such-command-xyz"
    before = own_fds()
    with pytest.raises(CommandNotFound) as info:
        spawn([name, "arg"], fds=[], names=[])
    assert str(info.value) == f"command not found: {name}"
    assert info.value.exit_status == 127
    assert isinstance(info.value, SpawnError)
    assert own_fds() == before
    assert_no_child_left()


def test_command_not_found_by_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(CommandNotFound, match=f"^command not found: {missing}$"):
        spawn([missing], fds=[], names=[])
    assert_no_child_left()


def test_command_not_found_on_the_given_path(tmp_path: Path) -> None:
    with pytest.raises(CommandNotFound):
        spawn(["sleep", "1"], fds=[], names=[], env={"PATH": str(tmp_path)})
    assert_no_child_left()


def test_non_executable_file(tmp_path: Path) -> None:
    target = tmp_path / "script"
    target.write_text("#!/bin/sh\nexit 0\n")
    target.chmod(0o644)
    with pytest.raises(CommandNotExecutable) as info:
        spawn([str(target)], fds=[], names=[])
    assert info.value.exit_status == 126
    assert str(info.value).startswith(f"command not executable: {target}")
    assert os.strerror(errno.EACCES) in str(info.value)
    assert_no_child_left()


def test_directory_is_not_executable(tmp_path: Path) -> None:
    with pytest.raises(CommandNotExecutable) as info:
        spawn([str(tmp_path)], fds=[], names=[])
    assert info.value.exit_status == 126
    assert_no_child_left()


def test_unknown_binary_format(tmp_path: Path) -> None:
    target = tmp_path / "garbage"
    target.write_bytes(b"\x00\x01\x02 not a program\n")
    target.chmod(0o755)
    with pytest.raises(CommandNotExecutable) as info:
        spawn([str(target)], fds=[], names=[])
    assert info.value.exit_status == 126
    assert os.strerror(errno.ENOEXEC) in str(info.value)
    assert_no_child_left()


def test_path_search_skips_a_non_executable_match(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "zocket-prog").write_text("#!/bin/sh\nexit 1\n")
    (first / "zocket-prog").chmod(0o644)
    (second / "zocket-prog").write_text("#!/bin/sh\nexit 7\n")
    (second / "zocket-prog").chmod(0o755)
    env = {"PATH": f"{tmp_path / 'missing'}:{first}:{second}"}
    child = spawn(["zocket-prog"], fds=[], names=[], env=env)
    assert finish(child).exit_code == 7
    (second / "zocket-prog").unlink()
    with pytest.raises(CommandNotExecutable):  # EACCES was seen: not "not found"
        spawn(["zocket-prog"], fds=[], names=[], env=env)
    assert_no_child_left()


@pytest.mark.parametrize("argv", [[], [""]])
def test_empty_command(argv: list[str]) -> None:
    before = own_fds()
    with pytest.raises(SpawnError) as info:
        spawn(argv, fds=[], names=[])
    assert type(info.value) is SpawnError
    assert own_fds() == before
    assert_no_child_left()


def test_one_name_per_fd(held: Sockets) -> None:
    sock = held.make("v4")
    with pytest.raises(ValueError):
        spawn(["sleep", "30"], fds=[sock], names=[])
    with pytest.raises(ValueError):
        spawn(["sleep", "30"], fds=[sock], names=["bad:name"])
    assert_no_child_left()


@pytest.mark.parametrize("count", [1, 16, libc.SPAWN_MAX_FDS])
def test_exec_failure_is_reported_past_the_held_fds(count: int, held: Sockets) -> None:
    """The error pipe may sit where a held fd goes: the report must still arrive."""
    sock = held.make("unix")
    with pytest.raises(CommandNotFound):
        spawn(["zocket-missing-command"], fds=[sock] * count, names=["s"] * count)
    assert_no_child_left()


def test_missing_cwd_is_a_spawn_error(tmp_path: Path) -> None:
    with pytest.raises(SpawnError) as info:
        spawn(["sleep", "30"], fds=[], names=[], cwd=str(tmp_path / "gone"))
    assert type(info.value) is SpawnError
    assert str(info.value) == f"cannot start sleep: chdir: {os.strerror(errno.ENOENT)}"
    assert_no_child_left()


def test_bad_held_fd_is_a_spawn_error() -> None:
    bad = libc.fcntl(0, libc.F_DUPFD_CLOEXEC, 900)
    libc.close(bad)
    with pytest.raises(SpawnError) as info:
        spawn(["sleep", "30"], fds=[bad], names=["gone"])
    assert type(info.value) is SpawnError
    assert str(info.value) == (
        f"cannot start sleep: placing the inherited fds: {os.strerror(errno.EBADF)}"
    )
    assert_no_child_left()


def test_bad_deathsig_is_a_spawn_error() -> None:
    with pytest.raises(SpawnError) as info:
        spawn(["sleep", "30"], fds=[], names=[], deathsig=12345)
    assert type(info.value) is SpawnError
    assert "prctl(PR_SET_PDEATHSIG)" in str(info.value)
    assert os.strerror(errno.EINVAL) in str(info.value)
    assert_no_child_left()


def test_error_classes_and_exit_statuses() -> None:
    for exc_type in (CommandNotFound, CommandNotExecutable):
        assert issubclass(exc_type, SpawnError)
    assert (CommandNotFound.exit_status, CommandNotExecutable.exit_status) == (127, 126)
    assert SpawnError.exit_status == 126


def test_failed_spawns_leave_nothing_behind_repeatedly(tmp_path: Path) -> None:
    before = own_fds()
    for i in range(20):
        with pytest.raises(SpawnError):
            spawn([f"zocket-missing-{i}"], fds=[], names=[])
    assert own_fds() == before
    assert_no_child_left()


def test_exit_status_of_a_started_child() -> None:
    child = spawn(["sh", "-c", "exit 3"], fds=[], names=[])
    status = finish(child)
    assert status.exited and status.exit_code == 3 and status.shell_status == 3


def test_file_mode_of_non_executable_is_really_unexecutable(tmp_path: Path) -> None:
    """Guards test_non_executable_file: even root cannot exec a file with no x bit."""
    target = tmp_path / "f"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o644)
    assert not stat.S_IMODE(target.stat().st_mode) & 0o111
    assert not os.access(target, os.X_OK)
