"""Run a command where a syscall fails: ``python seccomp_deny.py ERRNO[:NR,NR...] ARGV...``.

A stand-in for an old kernel or a container profile that forbids seccomp filters (the
default: seccomp() itself fails), or for a security module that refuses other calls
(their numbers after the colon), for the tests of zocket's fallbacks. Built with
zocket.libc's own calls; the filter is inherited by everything the command starts.
"""

from __future__ import annotations

import errno
import os
import sys

from zocket import libc


def main(argv: list[str]) -> None:
    name, _, numbers = argv[1].partition(":")
    code = getattr(errno, name)
    calls = [int(n) for n in numbers.split(",")] if numbers else [libc.SYS_SECCOMP]
    program = libc.seccomp_program({nr: libc.SECCOMP_RET_ERRNO | code for nr in calls})
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    libc.seccomp_set_mode_filter(program)
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv)
