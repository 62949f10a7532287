"""``--user USER[:GROUP]``: bind as root, then run the holder and every generation as USER.

The ports below 1024 and the sockets are taken while zocket is root; then,
before the first generation starts, zocket itself becomes USER (supplementary
groups from the group database, then the group, then the user: the order
in which each step still has the right to take the next). Generations
inherit that identity, so no code of the server ever runs as root, and the
holder keeps no privilege it cannot name a use for: the listening sockets
stay open across the change, signals, /proc and seccomp answers all work
between processes of one user.

What zocket can no longer do as USER: remove files it made as root in
directories USER may not write (its pid file or control socket under /run);
a new holder replaces such a control socket, and clients skip it meanwhile.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass


class IdentityError(Exception):
    exit_status = 2


@dataclass(frozen=True)
class User:
    """Who the generations (and the holder, once the sockets are held) run as."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str

    @classmethod
    def parse(cls, text: str) -> User:
        """``USER`` or ``USER:GROUP``, by name or number."""
        name, _, group = text.partition(":")
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, ValueError):
            raise IdentityError(f"unknown user {name!r} in --user {text!r}") from None
        gid = entry.pw_gid
        if group:
            try:
                gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            except KeyError:
                raise IdentityError(f"unknown group {group!r} in --user {text!r}") from None
        return cls(entry.pw_name, entry.pw_uid, gid, entry.pw_dir, entry.pw_shell)

    def environment(self) -> dict[str, str]:
        """What su(1) sets for the user it switches to."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name,
                "SHELL": self.shell or "/bin/sh"}

    def become(self) -> None:
        """Drop every privilege for good: groups, then gid, then uid (real, effective, saved)."""
        if os.geteuid() != 0:
            if (os.geteuid(), os.getegid()) == (self.uid, self.gid):
                return
            raise IdentityError(f"--user {self.name} needs zocket to start as root")
        os.initgroups(self.name, self.gid)
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)
