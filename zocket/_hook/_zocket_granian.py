"""The adapter for granian, which binds in Rust: hand it the handed-over socket where it makes its own.

Standard library only.

granian (its CLI and its ``Granian(...).serve()`` API alike) never calls
Python's ``bind()``. Every server class of it (processes, threads, embedded)
makes its listener in ``AbstractServer._init_shared_socket``: on Linux it
only records an address there, and each worker binds a SO_REUSEPORT socket
of its own, which the handed-over socket's port refuses (EADDRINUSE). Elsewhere it
builds one socket, a ``SocketHolder``, and the workers share it.

So when ``granian.server.common`` is imported, that method is wrapped: for an
address a handed-over socket serves (the hook's own rule for ``bind()``), the server
gets a ``SocketHolder`` on a copy of the handed-over fd, as on the shared-socket
path, and every worker accepts from it. granian's workers call ``listen()``
on it again with the holder's backlog, so the holder gets the handed-over socket's
own backlog (read from TCP_INFO) and the queue every generation shares stays
as zocket made it. A worker's listener owns the holder's fd and closes it
when the worker stops: worker processes each have their own copy, and
servers whose workers share the process (the embedded server, the threaded
one) get a new copy for each worker (their ``_spawn_worker``), so that a
reload, which stops the old worker after starting the new one, cannot close
the new one's fd.

A worker told to stop stops accepting at once: its copy of the fd is made to
name a listener nobody connects to (``dup2``), so its accept loop, woken by
new connections on the handed-over socket, finds nothing, and they wait in the
kernel for the other generation. A worker still loading the app when the
stop comes runs its parent's handler, which means nothing to it: the signal
is sent again once it has installed its own (``resend``). Its shutdown then
runs ``GRACE`` later, after it has read the requests of the connections it
took just before; granian's graceful shutdown would otherwise close those as
idle. The moment is taken in the signal handler itself, whatever the loop:
granian's threads read the requests whatever this thread and its event loop
do, and uvloop and rloop act on a signal on their own, which cannot be put
off. Workers started by ``spawn`` (granian's choice where multiprocessing's
default is not ``fork``) get their holder through ``_rebuild_holder``. A
process that left SIGTERM at its default (the embedded server in an app that
sets no handler) stops accepting and lets the connections granian took
close before it dies of it, as the hook does for Python servers.

These are granian's private names (seen in 2.x): if they are not there, or
``SocketHolder`` takes other arguments, one line says so and granian binds
as it would have.
"""

import os
import socket
import struct
import sys
import time
import weakref

import _zocket_adapters
import _zocket_asyncio
import _zocket_held
import _zocket_signals

_copies = {}  # fd -> inode: this process's copies of handed-over sockets that granian uses
_stopped = []  # the listener nobody connects to, once the adopted fds name it
_handed_ports = [frozenset()]  # the ports of the handed-over sockets granian was given here
_embedded = weakref.WeakSet()  # embedded granian servers on a handed-over socket, to stop


def _patch_common(module):
    def make(original):
        def _init_shared_socket(self):
            if not _give_holder(self):
                original(self)

        return _init_shared_socket

    server = getattr(module, "AbstractServer", None)
    if not _zocket_adapters.wrap(server, "_init_shared_socket", make):
        _warn("granian's server module has no AbstractServer._init_shared_socket")


def _patch_in_process(class_name):
    """Servers whose workers share this process: a copy of the fd for each worker."""

    def patch(module):
        def make(original):
            def _spawn_worker(self, *args, **kwargs):
                spec = getattr(self, "_zocket_spec", None)
                if spec is not None:
                    if self._zocket_fresh:  # _give_holder's copy: no worker has it yet
                        self._zocket_fresh = False
                    else:
                        _new_holder(self, spec)
                return original(self, *args, **kwargs)

            return _spawn_worker

        if not _zocket_adapters.wrap(getattr(module, class_name, None), "_spawn_worker", make):
            _warn(f"granian's {module.__name__} has no {class_name}._spawn_worker")

    return patch


_IN_PROCESS = {"granian.server.embed": "Server", "granian.server.mt": "MTServer"}
_PATCHES = {"granian.server.common": _patch_common}
_PATCHES.update({name: _patch_in_process(cls) for name, cls in _IN_PROCESS.items()})


def _give_holder(server):
    """Give ``server`` a SocketHolder on the handed-over socket its address asks for, if any."""
    if getattr(server, "bind_uds", None):
        return False
    try:
        host, port = str(server.bind_addr), int(server.bind_port)
    except (AttributeError, TypeError, ValueError):
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    handed = _zocket_held.match_address(family, (host, port))
    if handed is None:
        return False
    try:
        from granian._granian import SocketHolder
    except ImportError as exc:
        _warn(f"no SocketHolder in granian ({exc})")
        return False
    spawn_worker = getattr(type(server), "_spawn_worker", None)
    if type(server).__module__ in _IN_PROCESS and not _zocket_adapters.wrapped(spawn_worker):
        _warn(f"{type(server).__name__}'s workers could not get a copy of the fd each")
        return False
    fd, inode = handed[0], handed[5]
    spec = (SocketHolder, fd, inode, _backlog(fd))
    try:
        _new_holder(server, spec)
    except TypeError as exc:  # another granian: its holder takes other arguments
        _warn(f"granian's SocketHolder is not the one this hook knows ({exc})")
        return False
    server._zocket_spec = spec
    server._zocket_fresh = True
    _handed_ports[0] |= {handed[3]}
    if type(server).__module__ == "granian.server.embed":
        _embedded.add(server)
    _pickle_for_spawn(SocketHolder)
    # The embedded server in an app that leaves SIGTERM at its default would die of
    # zocket's SIGTERM with the requests granian is serving.
    _zocket_signals.default_term_drains()
    return True


def _new_holder(server, spec):
    """Hand ``server`` a holder on a new copy of the handed-over fd (the listener built from
    it owns the copy: granian closes it when that worker stops)."""
    holder_class, fd, inode, backlog = spec
    copy = os.dup(fd)
    try:
        holder = holder_class(copy, False, backlog)
    except BaseException:
        os.close(copy)
        raise
    _copies[copy] = inode
    server._ssp = None
    server._shd = holder
    server._sfd = holder.get_fd()


def _pickle_for_spawn(holder_class):
    """A holder sent to a spawned worker makes it one that stops accepting on a stop signal.

    The fd goes by number, as granian's own pickling sends it: granian passes the
    same fd to the worker as a socket object beside it (``_sso``), which
    multiprocessing keeps at that number in the child.
    """
    import copyreg

    def reduce(holder):
        state = holder.__getstate__()
        if state[0] not in _copies:
            return holder_class, state  # granian's own pickling
        return _rebuild_holder, tuple(state)

    copyreg.pickle(holder_class, reduce)


def _rebuild_holder(fd, *state):
    """In a spawned worker, whose hook found no fd handed over at start-up (spawn passes
    none); its stop signals are wrapped in any case."""
    from granian._granian import SocketHolder

    _copies[fd] = os.fstat(fd).st_ino
    _zocket_signals.install()  # imported above: installed already, said for the reader
    return SocketHolder(fd, *state)


def _live():
    """The copies still naming what they were made for (granian closes a worker's copy
    when it stops, and the number may be reused for anything)."""
    live = []
    for fd, inode in list(_copies.items()):
        try:
            if os.fstat(fd).st_ino == inode:
                live.append(fd)
                continue
        except OSError:
            pass
        _copies.pop(fd, None)
    return live


def serving():
    """Whether granian accepts (or did until a stop signal) from a handed-over socket here."""
    return bool(_stopped) or bool(_live())


def stop_accepting():
    """Make this process's copies name a listener nobody connects to; whether any.

    The handed-over socket's file stays registered in the worker's epoll under the same
    fd number, so the worker still wakes when a connection arrives, and its accept
    on that number finds nothing (EAGAIN, edge-triggered: no spin). Nothing is
    closed: granian goes on using a valid fd, and the handed-over socket is untouched.
    """
    live = _live()
    if not live:
        return bool(_stopped)
    if not _stopped:
        _stopped.append(_nobody())
    for fd in live:
        os.dup2(_stopped[0].fileno(), fd, inheritable=False)
    return True


def _nobody():
    """A listening socket nobody connects to, that granian can take for its own.

    TCP on a loopback port the kernel picks, so that a worker stopped before it built
    its listener (still loading the app) builds it on this one without a complaint
    (granian asks a TCP listener for its address); failing that, an abstract Unix one.
    """
    kind = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
    try:
        nobody = socket.socket(socket.AF_INET, kind)
        try:
            nobody.bind(("127.0.0.1", 0))
            nobody.listen(1)
            return nobody
        except OSError:
            nobody.close()
            raise
    except OSError:
        nobody = socket.socket(socket.AF_UNIX, kind)
        nobody.bind("")  # Linux picks an unused abstract name
        nobody.listen(1)
        return nobody


def stop_embedded():
    """Ask each embedded granian of this process to stop, as its app would."""
    for server in list(_embedded):
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 (the process dies of SIGTERM by the deadline anyway)
            sys.stderr.write(f"zocket hook: granian's stop failed: {exc}\n")


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


class _Granian(_zocket_adapters.Adapter):
    order = 10  # before the asyncio adapter: an embedded granian may run in any loop

    def stop_accepting(self):
        return stop_accepting()

    def busy(self):
        return _zocket_adapters.connections_open(_handed_ports[0])

    def resend(self):
        return serving()

    def defer(self, handler, signum, frame, own, deferrable):
        if not own or not serving():
            return False
        time.sleep(_zocket_signals.GRACE)
        handler(signum, frame)
        return True

    def finish(self, signum, deadline):
        """Nothing else tells an embedded granian to stop: its graceful stop closes idle
        keep-alive connections and finishes the requests in flight, in the loop that
        runs the app's code, which must go on running while the connections close."""
        if not serving():
            return False
        loop = _zocket_asyncio.running_loop()
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(loop.call_later, _zocket_signals.GRACE, stop_embedded)
            loop.call_soon_threadsafe(_zocket_signals.die_when_idle, loop, signum, deadline)
        except RuntimeError:  # the loop is closing: nothing will answer through it
            return False
        return True


_zocket_adapters.register(_Granian())
_zocket_adapters.when_imported(_PATCHES)
