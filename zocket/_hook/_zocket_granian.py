"""granian binds in Rust: hand it the held socket where it makes its own; standard library only.

granian (its CLI and its ``Granian(...).serve()`` API alike) never calls
Python's ``bind()``. Every server class of it (processes, threads, embedded)
makes its listener in ``AbstractServer._init_shared_socket``: on Linux it
only records an address there, and each worker binds a SO_REUSEPORT socket
of its own, which the held socket's port refuses (EADDRINUSE). Elsewhere it
builds one socket, a ``SocketHolder``, and the workers share it.

So when ``granian.server.common`` is imported, that method is wrapped: for an
address a held socket serves (the hook's own rule for ``bind()``), the server
gets a ``SocketHolder`` on a copy of the held fd, as on the shared-socket
path, and every worker accepts from it. granian's workers call ``listen()``
on it again with the holder's backlog, so the holder gets the held socket's
own backlog (read from TCP_INFO) and the queue every generation shares stays
as zocket made it.

A worker told to stop stops accepting at once: its copy of the fd is made to
name a listener nobody connects to (``dup2``), so its accept loop, woken by
new connections on the held socket, finds nothing, and they wait in the
kernel for the other generation. Its shutdown then runs ``GRACE`` later
(``_zocket_signals``), after it has read the requests of the connections it
took just before; granian's graceful shutdown would otherwise close those as
idle. Workers started by ``spawn`` (granian's choice where multiprocessing's
default is not ``fork``) get their holder through ``_rebuild_holder``.

These are granian's private names (seen in 2.x): if they are not there, or
``SocketHolder`` takes other arguments, one line says so and granian binds
as it would have.
"""

import os
import socket
import struct
import sys

_MODULE = "granian.server.common"
_match = [None]  # _zocket_hook's rule: (family, address) -> held entry or None
_adopted = set()  # fds of this process that granian's holders use: copies of a held socket
_stopped = []  # the listener nobody connects to, once the adopted fds name it


def install(match):
    """Patch granian's server module when (if ever) this process imports it."""
    _match[0] = match
    if _MODULE in sys.modules:
        _patch(sys.modules[_MODULE])
    else:
        sys.meta_path.insert(0, _Finder())


class _Finder:
    """Finds nothing itself: wraps the loader of granian's server module."""

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        import importlib.machinery

        sys.meta_path.remove(self)  # one module, once
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader)
        return spec


class _PatchingLoader:
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _patch(module)

    def __getattr__(self, name):  # get_source, is_package, ...: the real loader's
        return getattr(self._loader, name)


def _patch(module):
    server = getattr(module, "AbstractServer", None)
    original = getattr(server, "_init_shared_socket", None)
    if original is None:
        _warn("granian's server module has no AbstractServer._init_shared_socket")
        return

    def _init_shared_socket(self):
        if not _adopt(self):
            original(self)

    _init_shared_socket.__wrapped__ = original
    server._init_shared_socket = _init_shared_socket


def _adopt(server):
    """Give ``server`` a SocketHolder on the held socket its address asks for, if any."""
    if getattr(server, "bind_uds", None):
        return False
    try:
        host, port = str(server.bind_addr), int(server.bind_port)
    except (AttributeError, TypeError, ValueError):
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held = _match[0](family, (host, port))
    if held is None:
        return False
    try:
        from granian._granian import SocketHolder
    except ImportError as exc:
        _warn(f"no SocketHolder in granian ({exc})")
        return False
    fd = os.dup(held[0])
    try:
        holder = SocketHolder(fd, False, _backlog(fd))
    except TypeError as exc:  # another granian: its holder takes other arguments
        os.close(fd)
        _warn(f"granian's SocketHolder is not the one this hook knows ({exc})")
        return False
    # The fd is the holder's now; granian never closes it (it forgets its sockets).
    _adopted.add(fd)
    _pickle_for_spawn(SocketHolder)
    server._ssp = None
    server._shd = holder
    server._sfd = holder.get_fd()
    return True


def _pickle_for_spawn(holder_class):
    """A holder sent to a spawned worker makes it one that stops accepting on a stop signal.

    The fd goes by number, as granian's own pickling sends it: granian passes the
    same fd to the worker as a socket object beside it (``_sso``), which
    multiprocessing keeps at that number in the child.
    """
    import copyreg

    def reduce(holder):
        state = holder.__getstate__()
        if state[0] not in _adopted:
            return holder_class, state  # granian's own pickling
        return _rebuild_holder, tuple(state)

    copyreg.pickle(holder_class, reduce)


def _rebuild_holder(fd, *state):
    """In a spawned worker, whose hook found no held fd at start-up (spawn passes none)."""
    import _zocket_hook
    from granian._granian import SocketHolder

    _adopted.add(fd)
    _zocket_hook.wrap_stop_signals()
    return SocketHolder(fd, *state)


def adopted():
    """Whether granian accepts from a held socket in this process (or its workers do)."""
    return bool(_adopted)


def stop_accepting():
    """Make this process's adopted fds name a listener nobody connects to; whether any.

    The held socket's file stays registered in the worker's epoll under the same
    fd number, so the worker still wakes when a connection arrives, and its accept
    on that number finds nothing (EAGAIN, edge-triggered: no spin). Nothing is
    closed: granian goes on using a valid fd, and the held socket is untouched.
    """
    if not _adopted:
        return False
    if not _stopped:
        nobody = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        nobody.bind("")  # Linux picks an unused abstract name
        nobody.listen(1)
        _stopped.append(nobody)
        for fd in _adopted:
            os.dup2(nobody.fileno(), fd, inheritable=False)
    return True


# struct tcp_info: eight one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked,
# sacked. For a listening socket Linux puts the accept queue's length in tcpi_unacked
# and its limit (listen()'s backlog, capped by somaxconn) in tcpi_sacked.
_TCP_INFO_SACKED = 28
_DEFAULT_BACKLOG = 1024  # granian's own default, should TCP_INFO not tell


def _backlog(fd):
    probe = socket.socket(fileno=os.dup(fd))
    try:
        info = probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return struct.unpack_from("I", info, _TCP_INFO_SACKED)[0] or _DEFAULT_BACKLOG
    except (OSError, struct.error):
        return _DEFAULT_BACKLOG
    finally:
        probe.close()


def _warn(why):
    sys.stderr.write(f"zocket hook: granian keeps its own sockets: {why}\n")
