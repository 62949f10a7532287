"""zocket: hold a listening socket so that web servers restart without refusing a connection.

The names importable from here are the app side (standard library only):
`listen_fds()`, `listen_fds_with_names()`, `listen_socket()` and `notify()`.
The holder lives in `zocket.holder`, the glibc bindings in `zocket.libc`.

They are imported on first use (PEP 562), so that ``import zocket`` is nearly
free: the ``zocket`` command starts by installing its SIGINT handler (see
`zocket._startup`), and everything imported before that is a window in which
a Ctrl-C would print a traceback.
"""

from __future__ import annotations

from ._version import __version__

TYPE_CHECKING = False  # not typing's: importing typing costs more than the rest
if TYPE_CHECKING:
    from typing import Any

    from .activation import listen_fds, listen_fds_with_names, listen_socket, notify

__all__ = ["__version__", "listen_fds", "listen_fds_with_names", "listen_socket", "notify"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import activation

        return getattr(activation, name)
    raise AttributeError(f"module 'zocket' has no attribute {name!r}")
