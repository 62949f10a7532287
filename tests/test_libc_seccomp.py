"""zocket.libc's seccomp calls: the filter program, user notifications, the caller's memory and fds.

The filters are installed in children (a filter is for good: never in the test process).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support import no_new_fds
from zocket import libc, spawn
from zocket._libc import ffi, lib

HERE = Path(__file__).resolve().parent


# --- the program ------------------------------------------------------------------------------


def run_bpf(program: libc.SeccompProgram, nr: int, arch: int, args: tuple[int, ...]) -> int:
    """Run a seccomp program on one seccomp_data the way the kernel does: the action."""
    data = (
        (nr & 0xFFFFFFFF).to_bytes(4, sys.byteorder)
        + arch.to_bytes(4, sys.byteorder)
        + bytes(8)
        + b"".join(a.to_bytes(8, sys.byteorder) for a in args)
    )
    ld = lib.BPF_LD | lib.BPF_W | lib.BPF_ABS
    jeq = lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K
    ret = lib.BPF_RET | lib.BPF_K
    insns = program.instructions
    pc, acc = 0, 0
    for _ in range(len(insns) + 1):  # no backward jumps in classic BPF: bounded
        op, jt, jf, k = insns[pc].code, insns[pc].jt, insns[pc].jf, insns[pc].k
        if op == ld:
            acc = int.from_bytes(data[k : k + 4], sys.byteorder)
            pc += 1
        elif op == jeq:
            pc += 1 + (jt if acc == k else jf)
        elif op == ret:
            return int(k)
        else:
            raise AssertionError(f"unexpected BPF op {op:#x}")
    raise AssertionError("the program ran off its end")


syscall_numbers = st.integers(min_value=0, max_value=600)
actions = st.sampled_from(
    [libc.SECCOMP_RET_USER_NOTIF, libc.SECCOMP_RET_ERRNO | errno.EPERM, libc.SECCOMP_RET_ALLOW]
)
args6 = st.tuples(*[st.integers(min_value=0, max_value=2**64 - 1)] * 6)


@given(
    table=st.dictionaries(syscall_numbers, actions, max_size=8),
    nr=syscall_numbers,
    args=args6,
    exempt=st.booleans(),
)
def test_program_acts_as_its_table_says(
    table: Mapping[int, int], nr: int, args: tuple[int, ...], exempt: bool
) -> None:
    unless = {n: (1, args[1] & 0xFFFFFFFF) for n in list(table)[:1]} if exempt else {}
    program = libc.seccomp_program(table, unless=unless)
    expected = table.get(nr, libc.SECCOMP_RET_ALLOW)
    if nr in unless:
        expected = libc.SECCOMP_RET_ALLOW
    assert run_bpf(program, nr, libc.AUDIT_ARCH, args) == expected
    # Another architecture's numbers mean other calls: the default.
    assert run_bpf(program, nr, libc.AUDIT_ARCH ^ 1, args) == libc.SECCOMP_RET_ALLOW


def test_adoption_program_sends_bind_listen_and_shutdown_but_not_half_closes() -> None:
    program = libc.adoption_program()
    notify, allow = libc.SECCOMP_RET_USER_NOTIF, libc.SECCOMP_RET_ALLOW
    zero = (0,) * 6
    assert run_bpf(program, libc.SYS_BIND, libc.AUDIT_ARCH, zero) == notify
    assert run_bpf(program, libc.SYS_LISTEN, libc.AUDIT_ARCH, zero) == notify
    for how, action in ((libc.SHUT_RD, notify), (libc.SHUT_RDWR, notify), (libc.SHUT_WR, allow)):
        args = (5, how, 0, 0, 0, 0)
        assert run_bpf(program, libc.SYS_SHUTDOWN, libc.AUDIT_ARCH, args) == action
    assert run_bpf(program, libc.SYS_SECCOMP, libc.AUDIT_ARCH, zero) == allow


def test_program_refuses_an_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="AUDIT_ARCH"):
        libc.seccomp_program({}, arch=0)


# --- sockaddr bytes ---------------------------------------------------------------------------

ports = st.integers(min_value=0, max_value=65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda ip: socket.inet_ntop(socket.AF_INET6, ip.packed))


@given(host=ipv4, port=ports)
def test_sockaddr_bytes_round_trip_ipv4(host: str, port: int) -> None:
    addr, length = libc.pack_sockaddr(libc.AF_INET, (host, port))
    raw = bytes(ffi.buffer(addr, length))
    assert libc.parse_sockaddr(raw) == (libc.AF_INET, (host, port))


@given(host=ipv6, port=ports, flowinfo=st.integers(0, 2**20 - 1), scope=st.integers(0, 2**31))
def test_sockaddr_bytes_round_trip_ipv6(host: str, port: int, flowinfo: int, scope: int) -> None:
    addr, length = libc.pack_sockaddr(libc.AF_INET6, (host, port, flowinfo, scope))
    raw = bytes(ffi.buffer(addr, length))
    assert libc.parse_sockaddr(raw) == (libc.AF_INET6, (host, port, flowinfo, scope))


def test_sockaddr_bytes_too_short_or_unknown() -> None:
    addr, length = libc.pack_sockaddr(libc.AF_INET, ("127.0.0.1", 80))
    raw = bytes(ffi.buffer(addr, length))
    with pytest.raises(ValueError, match="needs"):
        libc.parse_sockaddr(raw[:8])
    with pytest.raises(ValueError, match="no family"):
        libc.parse_sockaddr(b"\x02")
    with pytest.raises(ValueError, match="unsupported"):
        libc.parse_sockaddr(b"\x7f\x00" + bytes(14))


# --- notifications from a real child ----------------------------------------------------------

CHILD = """\
import os, socket, sys
s = socket.socket()
for attempt in range(3):
    try:
        s.bind(("127.0.0.1", 0))
        print("bound", os.fstat(s.fileno()).st_ino, os.get_inheritable(s.fileno()), flush=True)
    except OSError as exc:
        print("error", exc.errno, flush=True)
"""


@contextmanager
def adopting_child(code: str) -> Iterator[tuple[spawn.Child, int]]:
    """A Python child spawned with the adoption filter; yields (child, its stdout's pipe)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        # The child's stdout is a pipe of ours, handed over as fd 3: sh points stdout at
        # it and execs python.
        child = spawn.spawn(
            ["/bin/sh", "-c", 'exec "$0" -c "$1" >&3 3>&-', sys.executable, code],
            fds=[write_end],
            names=["out"],
            adopt=True,
        )
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    os.close(write_end)
    try:
        yield child, read_end
    finally:
        os.kill(child.pid, 9)  # not reaped before this: it is ours, a zombie at worst
        os.waitpid(child.pid, 0)
        child.close()
        os.close(read_end)


def next_notification(listener: int, timeout: float = 10.0) -> libc.Notification:
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    assert poller.poll(timeout * 1000), "no notification"
    return libc.notif_recv(listener)


def read_line(fd: int, timeout: float = 10.0) -> str:
    data = b""
    while not data.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], timeout)
        assert readable, f"no line from the child: {data!r}"
        chunk = os.read(fd, 1)
        assert chunk, f"the child closed its stdout: {data!r}"
        data += chunk
    return data.decode().strip()


@pytest.mark.skipif(not libc.HAS_SECCOMP_ADOPT, reason="built without seccomp user notification")
def test_notification_round_trip() -> None:
    """A child's bind() arrives, its sockaddr is read back, and three answers reach it."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    with held, adopting_child(CHILD) as (child, out):
        listener = child.seccomp_listener
        assert listener is not None and child.adopt_error == 0
        assert libc.get_cloexec(listener)

        # 1. An error of our choosing.
        first = next_notification(listener)
        assert first.nr == libc.SYS_BIND and first.arch == libc.AUDIT_ARCH
        assert first.pid == child.pid  # the thread that called: here the main one
        raw = libc.read_process_memory(first.pid, first.args[1], first.args[2])
        assert libc.parse_sockaddr(raw) == (libc.AF_INET, ("127.0.0.1", 0))
        assert libc.notif_id_valid(listener, first.id)
        libc.notif_respond(listener, first.id, error=errno.EPERM)
        assert read_line(out) == f"error {errno.EPERM}"
        assert not libc.notif_id_valid(listener, first.id)  # answered: void now

        # 2. Our socket installed at the caller's fd number, close-on-exec, and success.
        second = next_notification(listener)
        fd = second.args[0]
        pidfd = libc.pidfd_open(child.pid)
        try:
            theirs = libc.pidfd_getfd(pidfd, fd)
        finally:
            libc.close(pidfd)
        try:
            assert libc.getsockopt(theirs, libc.SOL_SOCKET, libc.SO_TYPE) == libc.SOCK_STREAM
            assert libc.get_cloexec(theirs)
        finally:
            libc.close(theirs)
        assert libc.notif_addfd(listener, second.id, held.fileno(), newfd=fd, cloexec=True) == fd
        libc.notif_respond(listener, second.id, 0)
        assert read_line(out) == f"bound {os.fstat(held.fileno()).st_ino} False"

        # 3. Let the kernel do it: the child's own bind happens (on the adopted socket, which
        # is bound already: EINVAL is the kernel's own answer).
        third = next_notification(listener)
        libc.notif_respond(listener, third.id, continue_=True)
        assert read_line(out) == f"error {errno.EINVAL}"


@pytest.mark.skipif(not libc.HAS_SECCOMP_ADOPT, reason="built without seccomp user notification")
def test_a_dead_caller_voids_its_notification() -> None:
    with adopting_child(CHILD) as (child, _out):
        assert child.seccomp_listener is not None
        notification = next_notification(child.seccomp_listener)
        os.kill(child.pid, 9)
        assert child.pidfd is not None
        assert select.select([child.pidfd], [], [], 10)[0], "the child did not die"
        assert not libc.notif_id_valid(child.seccomp_listener, notification.id)
        with pytest.raises(FileNotFoundError) as info:
            libc.notif_respond(child.seccomp_listener, notification.id, 0)
        assert "ioctl(SECCOMP_IOCTL_NOTIF_SEND)" in str(info.value)
        # Every process of the filter is gone: the listener hangs up.
        poller = select.poll()
        poller.register(child.seccomp_listener, select.POLLIN)
        assert poller.poll(5000)[0][1] & select.POLLHUP


@pytest.mark.skipif(not libc.HAS_SECCOMP_ADOPT, reason="built without seccomp user notification")
def test_a_failed_exec_with_adoption_leaks_no_listener(tmp_path: Path) -> None:
    with no_new_fds(), pytest.raises(spawn.CommandNotFound):
        spawn.spawn([str(tmp_path / "missing")], fds=[], names=[], adopt=True)


def test_errors_name_the_call(tmp_path: Path) -> None:
    read_end, write_end = libc.pipe2()
    try:
        with pytest.raises(OSError) as info:
            libc.notif_recv(read_end)
        assert info.value.errno == errno.ENOTTY
        assert "ioctl(SECCOMP_IOCTL_NOTIF_RECV)" in str(info.value)
        with pytest.raises(OSError, match=r"ioctl\(SECCOMP_IOCTL_NOTIF_ADDFD\)"):
            libc.notif_addfd(read_end, 1, write_end, newfd=10)
    finally:
        libc.close(read_end)
        libc.close(write_end)
    pidfd = libc.pidfd_open(os.getpid())
    try:
        with pytest.raises(OSError, match="pidfd_getfd") as bad:
            libc.pidfd_getfd(pidfd, 100000)
        assert bad.value.errno == errno.EBADF
    finally:
        libc.close(pidfd)
    with pytest.raises(FileNotFoundError, match=r"open\(/proc/PID/mem\)"):
        libc.read_process_memory(2**22 + 1, 0, 8)
    with pytest.raises(OSError, match=r"pread\(/proc/PID/mem\)"):
        libc.read_process_memory(os.getpid(), 8, 8)  # page 0 is never mapped


def test_set_mode_filter_error_in_a_child_that_forbids_it() -> None:
    """The deny wrapper the fallback tests use: seccomp() fails with the errno it names."""
    code = (
        "import errno\nfrom zocket import libc\n"
        "try:\n    libc.seccomp_set_mode_filter(libc.adoption_program(),"
        " libc.SECCOMP_FILTER_FLAG_NEW_LISTENER)\n"
        "except OSError as exc:\n    print(errno.errorcode[exc.errno], exc.call)\n"
    )
    result = subprocess.run(
        [sys.executable, str(HERE / "seccomp_deny.py"), "ENOSYS", sys.executable, "-c", code],
        cwd="/",  # not the checkout, whose source tree has no compiled module in CI
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "ENOSYS seccomp\n"), result.stderr
