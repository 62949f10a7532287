"""A generation's notify socket: sd_notify datagrams, each with its sender's credentials.

Every generation gets its own datagram socket on a fresh abstract name, given
to it as NOTIFY_SOCKET. Abstract names have no permissions, and every local
user can read them in /proc/net/unix: anyone could send ``READY=1`` there and
make zocket stop the generation that serves before its successor can. So the
socket has SO_PASSCRED set, the kernel attaches the sender's real pid and uid
to each datagram (SCM_CREDENTIALS, which a sender cannot forge without
CAP_SYS_ADMIN), and a message counts only if that pid is one of the
generation's processes, as systemd checks a service's MAINPID.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Collection
from dataclasses import dataclass

_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid


@dataclass(frozen=True)
class Message:
    text: str
    pid: int
    uid: int


class NotifySocket:
    """The datagram socket one generation's processes report to."""

    def __init__(self, number: int, resume: tuple[int, str] | None = None) -> None:
        if resume is not None:  # the same socket, through zocket's own re-exec
            fd, self.name = resume
            self._sock = socket.socket(fileno=fd)
            self._sock.set_inheritable(False)
            return
        self.name = f"zocket/{os.getpid()}/{number}/{os.urandom(4).hex()}"
        # Python's socket objects are close-on-exec: only NOTIFY_SOCKET's name reaches a child.
        self._sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.bind("\0" + self.name)
        except BaseException:
            self._sock.close()
            raise

    @property
    def fd(self) -> int:
        return self._sock.fileno()

    @property
    def address(self) -> str:
        """The NOTIFY_SOCKET value: ``@`` stands for the abstract namespace's NUL."""
        return "@" + self.name

    def receive(self) -> list[Message]:
        """Every datagram queued now, with the kernel's word on who sent it."""
        messages: list[Message] = []
        while True:
            try:
                data, ancillary, _flags, _addr = self._sock.recvmsg(
                    4096, socket.CMSG_SPACE(_UCRED.size)
                )
            except (BlockingIOError, InterruptedError):
                return messages
            pid, uid = 0, -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, uid, _gid = _UCRED.unpack(payload[: _UCRED.size])
            messages.append(Message(data.decode("utf-8", "replace"), pid, uid))

    def close(self) -> None:
        self._sock.close()


def trusted(message: Message, processes: Collection[int]) -> bool:
    """Whether a message came from one of ``processes``, the generation's own.

    The pid decides, not the uid: a server may switch to another user itself (a root
    zocket, a server that drops to www-data), and its messages are its own all the same.
    """
    return message.pid in processes
