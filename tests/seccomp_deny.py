"""Run a command where the seccomp() syscall fails: ``python seccomp_deny.py ERRNO ARGV...``.

A stand-in for an old kernel or a container profile that forbids seccomp filters, for
the tests of the fallback (zocket runs its generations without adoption then). Built
with zocket.libc's own calls; the filter is inherited by everything the command starts.
"""

from __future__ import annotations

import errno
import os
import sys

from zocket import libc


def main(argv: list[str]) -> None:
    code = getattr(errno, argv[1])
    program = libc.seccomp_program({libc.SYS_SECCOMP: libc.SECCOMP_RET_ERRNO | code})
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    libc.seccomp_set_mode_filter(program)
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv)
