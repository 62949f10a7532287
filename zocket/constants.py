"""Constants of zocket.libc, every value supplied by the C headers at build time."""

from typing import Final as _Final

from ._libc import lib as _lib

# socket
AF_UNSPEC: _Final[int] = _lib.AF_UNSPEC
AF_INET: _Final[int] = _lib.AF_INET
AF_INET6: _Final[int] = _lib.AF_INET6
AF_UNIX: _Final[int] = _lib.AF_UNIX
SOCK_STREAM: _Final[int] = _lib.SOCK_STREAM
SOCK_DGRAM: _Final[int] = _lib.SOCK_DGRAM
SOCK_SEQPACKET: _Final[int] = _lib.SOCK_SEQPACKET
SOCK_NONBLOCK: _Final[int] = _lib.SOCK_NONBLOCK
SOCK_CLOEXEC: _Final[int] = _lib.SOCK_CLOEXEC
SOL_SOCKET: _Final[int] = _lib.SOL_SOCKET
SO_REUSEADDR: _Final[int] = _lib.SO_REUSEADDR
SO_REUSEPORT: _Final[int] = _lib.SO_REUSEPORT
SO_ACCEPTCONN: _Final[int] = _lib.SO_ACCEPTCONN
SO_TYPE: _Final[int] = _lib.SO_TYPE
SO_DOMAIN: _Final[int] = _lib.SO_DOMAIN
SO_PROTOCOL: _Final[int] = _lib.SO_PROTOCOL
SO_ERROR: _Final[int] = _lib.SO_ERROR
SO_KEEPALIVE: _Final[int] = _lib.SO_KEEPALIVE
SO_RCVBUF: _Final[int] = _lib.SO_RCVBUF
SO_SNDBUF: _Final[int] = _lib.SO_SNDBUF
SO_PASSCRED: _Final[int] = _lib.SO_PASSCRED
SO_PEERCRED: _Final[int] = _lib.SO_PEERCRED
SOMAXCONN: _Final[int] = _lib.SOMAXCONN
IPPROTO_TCP: _Final[int] = _lib.IPPROTO_TCP
IPPROTO_IPV6: _Final[int] = _lib.IPPROTO_IPV6
IPV6_V6ONLY: _Final[int] = _lib.IPV6_V6ONLY
TCP_NODELAY: _Final[int] = _lib.TCP_NODELAY
TCP_DEFER_ACCEPT: _Final[int] = _lib.TCP_DEFER_ACCEPT
SCM_RIGHTS: _Final[int] = _lib.SCM_RIGHTS
MSG_CMSG_CLOEXEC: _Final[int] = _lib.MSG_CMSG_CLOEXEC
MSG_NOSIGNAL: _Final[int] = _lib.MSG_NOSIGNAL
MSG_DONTWAIT: _Final[int] = _lib.MSG_DONTWAIT
MSG_CTRUNC: _Final[int] = _lib.MSG_CTRUNC
MSG_TRUNC: _Final[int] = _lib.MSG_TRUNC
SHUT_RD: _Final[int] = _lib.SHUT_RD
SHUT_WR: _Final[int] = _lib.SHUT_WR
SHUT_RDWR: _Final[int] = _lib.SHUT_RDWR

# fcntl
F_GETFD: _Final[int] = _lib.F_GETFD
F_SETFD: _Final[int] = _lib.F_SETFD
F_GETFL: _Final[int] = _lib.F_GETFL
F_SETFL: _Final[int] = _lib.F_SETFL
F_DUPFD: _Final[int] = _lib.F_DUPFD
F_DUPFD_CLOEXEC: _Final[int] = _lib.F_DUPFD_CLOEXEC
FD_CLOEXEC: _Final[int] = _lib.FD_CLOEXEC
O_RDONLY: _Final[int] = _lib.O_RDONLY
O_WRONLY: _Final[int] = _lib.O_WRONLY
O_RDWR: _Final[int] = _lib.O_RDWR
O_APPEND: _Final[int] = _lib.O_APPEND
O_NONBLOCK: _Final[int] = _lib.O_NONBLOCK
O_CLOEXEC: _Final[int] = _lib.O_CLOEXEC
O_DIRECT: _Final[int] = _lib.O_DIRECT
O_ASYNC: _Final[int] = _lib.O_ASYNC
O_NOATIME: _Final[int] = _lib.O_NOATIME
CLOSE_RANGE_CLOEXEC: _Final[int] = _lib.CLOSE_RANGE_CLOEXEC

# signal
SIGHUP: _Final[int] = _lib.SIGHUP
SIGINT: _Final[int] = _lib.SIGINT
SIGQUIT: _Final[int] = _lib.SIGQUIT
SIGKILL: _Final[int] = _lib.SIGKILL
SIGUSR1: _Final[int] = _lib.SIGUSR1
SIGUSR2: _Final[int] = _lib.SIGUSR2
SIGPIPE: _Final[int] = _lib.SIGPIPE
SIGALRM: _Final[int] = _lib.SIGALRM
SIGTERM: _Final[int] = _lib.SIGTERM
SIGCHLD: _Final[int] = _lib.SIGCHLD
SIGCONT: _Final[int] = _lib.SIGCONT
SIGSTOP: _Final[int] = _lib.SIGSTOP
SIGTSTP: _Final[int] = _lib.SIGTSTP
SIGWINCH: _Final[int] = _lib.SIGWINCH
SIGXFSZ: _Final[int] = _lib.SIGXFSZ

# process
WNOHANG: _Final[int] = _lib.WNOHANG
WUNTRACED: _Final[int] = _lib.WUNTRACED
WCONTINUED: _Final[int] = _lib.WCONTINUED
PR_SET_PDEATHSIG: _Final[int] = _lib.PR_SET_PDEATHSIG
PR_GET_PDEATHSIG: _Final[int] = _lib.PR_GET_PDEATHSIG
PR_SET_CHILD_SUBREAPER: _Final[int] = _lib.PR_SET_CHILD_SUBREAPER
PR_GET_CHILD_SUBREAPER: _Final[int] = _lib.PR_GET_CHILD_SUBREAPER
PR_SET_NAME: _Final[int] = _lib.PR_SET_NAME
PR_GET_NAME: _Final[int] = _lib.PR_GET_NAME

# poll (POLLIN is with the readiness constants in zocket.libc)
POLLPRI: _Final[int] = _lib.POLLPRI
POLLOUT: _Final[int] = _lib.POLLOUT
POLLERR: _Final[int] = _lib.POLLERR
POLLHUP: _Final[int] = _lib.POLLHUP
POLLNVAL: _Final[int] = _lib.POLLNVAL

# inotify
IN_NONBLOCK: _Final[int] = _lib.IN_NONBLOCK
IN_CLOEXEC: _Final[int] = _lib.IN_CLOEXEC
IN_ACCESS: _Final[int] = _lib.IN_ACCESS
IN_MODIFY: _Final[int] = _lib.IN_MODIFY
IN_ATTRIB: _Final[int] = _lib.IN_ATTRIB
IN_CLOSE_WRITE: _Final[int] = _lib.IN_CLOSE_WRITE
IN_CLOSE_NOWRITE: _Final[int] = _lib.IN_CLOSE_NOWRITE
IN_OPEN: _Final[int] = _lib.IN_OPEN
IN_MOVED_FROM: _Final[int] = _lib.IN_MOVED_FROM
IN_MOVED_TO: _Final[int] = _lib.IN_MOVED_TO
IN_CREATE: _Final[int] = _lib.IN_CREATE
IN_DELETE: _Final[int] = _lib.IN_DELETE
IN_DELETE_SELF: _Final[int] = _lib.IN_DELETE_SELF
IN_MOVE_SELF: _Final[int] = _lib.IN_MOVE_SELF
IN_UNMOUNT: _Final[int] = _lib.IN_UNMOUNT
IN_Q_OVERFLOW: _Final[int] = _lib.IN_Q_OVERFLOW
IN_IGNORED: _Final[int] = _lib.IN_IGNORED
IN_ONLYDIR: _Final[int] = _lib.IN_ONLYDIR
IN_DONT_FOLLOW: _Final[int] = _lib.IN_DONT_FOLLOW
IN_EXCL_UNLINK: _Final[int] = _lib.IN_EXCL_UNLINK
IN_MASK_ADD: _Final[int] = _lib.IN_MASK_ADD
IN_ISDIR: _Final[int] = _lib.IN_ISDIR
IN_ONESHOT: _Final[int] = _lib.IN_ONESHOT
IN_ALL_EVENTS: _Final[int] = _lib.IN_ALL_EVENTS

__all__ = [
    "AF_INET",
    "AF_INET6",
    "AF_UNIX",
    "AF_UNSPEC",
    "CLOSE_RANGE_CLOEXEC",
    "FD_CLOEXEC",
    "F_DUPFD",
    "F_DUPFD_CLOEXEC",
    "F_GETFD",
    "F_GETFL",
    "F_SETFD",
    "F_SETFL",
    "IN_ACCESS",
    "IN_ALL_EVENTS",
    "IN_ATTRIB",
    "IN_CLOEXEC",
    "IN_CLOSE_NOWRITE",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_DONT_FOLLOW",
    "IN_EXCL_UNLINK",
    "IN_IGNORED",
    "IN_ISDIR",
    "IN_MASK_ADD",
    "IN_MODIFY",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_MOVE_SELF",
    "IN_NONBLOCK",
    "IN_ONESHOT",
    "IN_ONLYDIR",
    "IN_OPEN",
    "IN_Q_OVERFLOW",
    "IN_UNMOUNT",
    "IPPROTO_IPV6",
    "IPPROTO_TCP",
    "IPV6_V6ONLY",
    "MSG_CMSG_CLOEXEC",
    "MSG_CTRUNC",
    "MSG_DONTWAIT",
    "MSG_NOSIGNAL",
    "MSG_TRUNC",
    "O_APPEND",
    "O_ASYNC",
    "O_CLOEXEC",
    "O_DIRECT",
    "O_NOATIME",
    "O_NONBLOCK",
    "O_RDONLY",
    "O_RDWR",
    "O_WRONLY",
    "POLLERR",
    "POLLHUP",
    "POLLNVAL",
    "POLLOUT",
    "POLLPRI",
    "PR_GET_CHILD_SUBREAPER",
    "PR_GET_NAME",
    "PR_GET_PDEATHSIG",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_NAME",
    "PR_SET_PDEATHSIG",
    "SCM_RIGHTS",
    "SHUT_RD",
    "SHUT_RDWR",
    "SHUT_WR",
    "SIGALRM",
    "SIGCHLD",
    "SIGCONT",
    "SIGHUP",
    "SIGINT",
    "SIGKILL",
    "SIGPIPE",
    "SIGQUIT",
    "SIGSTOP",
    "SIGTERM",
    "SIGTSTP",
    "SIGUSR1",
    "SIGUSR2",
    "SIGWINCH",
    "SIGXFSZ",
    "SOCK_CLOEXEC",
    "SOCK_DGRAM",
    "SOCK_NONBLOCK",
    "SOCK_SEQPACKET",
    "SOCK_STREAM",
    "SOL_SOCKET",
    "SOMAXCONN",
    "SO_ACCEPTCONN",
    "SO_DOMAIN",
    "SO_ERROR",
    "SO_KEEPALIVE",
    "SO_PASSCRED",
    "SO_PEERCRED",
    "SO_PROTOCOL",
    "SO_RCVBUF",
    "SO_REUSEADDR",
    "SO_REUSEPORT",
    "SO_SNDBUF",
    "SO_TYPE",
    "TCP_DEFER_ACCEPT",
    "TCP_NODELAY",
    "WCONTINUED",
    "WNOHANG",
    "WUNTRACED",
]
