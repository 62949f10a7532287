"""zocket: hold a listening socket so that web servers restart without refusing a connection.

The names importable from here are the app side (standard library only):
`listen_fds()`, `listen_fds_with_names()`, `listen_socket()` and `notify()`.
The holder lives in `zocket.holder`, the glibc bindings in `zocket.libc`.
"""

from ._version import __version__
from .activation import listen_fds, listen_fds_with_names, listen_socket, notify

__all__ = ["__version__", "listen_fds", "listen_fds_with_names", "listen_socket", "notify"]
