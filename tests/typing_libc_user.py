"""A small tool written against zocket.libc the way a user would, checked with ``mypy --strict``.

tests/test_libc_user.py type-checks this file with a strict config of its own
and runs it: every line here must type-check without a cast or an ignore.
"""

from __future__ import annotations

import errno

from zocket import libc
from zocket.libc import AF_INET, SOCK_STREAM, LibcError, WaitStatus


def held_port() -> tuple[int, int]:
    """Hold a listening socket on a free loopback port: (fd, port)."""
    fd = libc.socket(AF_INET, SOCK_STREAM)  # close-on-exec: nothing leaks into children
    libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_REUSEADDR, 1)
    libc.bind(fd, ("localhost", 0))
    libc.listen(fd, libc.SOMAXCONN)
    host, port = libc.getsockname_inet(fd)
    assert host == "127.0.0.1"
    return fd, port


def describe(error: LibcError) -> str:
    call: str = error.call
    return f"{call} failed: {errno.errorcode.get(error.errno or 0, '?')}"


def main() -> int:
    fd, port = held_port()
    left, right = libc.socketpair(libc.AF_UNIX, SOCK_STREAM)
    try:
        sent: int = libc.sendmsg_fds(left, b"x", [fd])
        data, fds, flags = libc.recvmsg_fds(right, 1, 1)
        assert sent == 1 and data == b"x" and len(fds) == 1 and not flags & libc.MSG_CTRUNC
        pid, uid, gid = libc.peercred(right)
        ready: list[tuple[int, int]] = libc.poll([(fds[0], libc.POLLIN)], 0)
        assert ready == [] and pid > 0 and uid >= 0 and gid >= 0 and port > 0
        libc.close(fds[0])
        try:
            libc.bind(fd, "/nonexistent/zocket/s", libc.AF_UNIX)
        except FileNotFoundError:
            pass  # the builtin classes still catch
        except LibcError as exc:  # everything else, with the call's name typed
            print(describe(exc))
        try:
            libc.listen(fd, 2**31)
        except libc.ArgumentError as exc:
            assert exc.call == "listen" and exc.argument == "backlog"
        status = WaitStatus(0)
        code: int = status.shell_status
        stopped: bool = status.stopped
        deathsig: int = libc.prctl(libc.PR_GET_PDEATHSIG)
        name: bytes = libc.get_process_name()
        assert code == 0 and not stopped and deathsig >= 0 and name
    finally:
        for one in (fd, left, right):
            libc.close(one)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
