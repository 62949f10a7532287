"""Held sockets: adoption, the held socket's class, taking connections, readiness; stdlib only.

The bulk of the core (see ``_zocket_hook`` for the words used). Imported
when this process first imports ``socket`` (or starts a child process), so
that an interpreter that never serves does not even compile it.

- ``bind()`` to an address a handed-over socket serves (same port; same
  host, or a wildcard, or the other family's loopback where that is sound)
  adopts the socket instead; ``socket.fromfd`` and ``socket.socket(fileno=FD)``
  of a handed-over fd give a held socket too. ``listen()`` and ``shutdown()``
  are no-ops on a held socket: the first would shrink the backlog every
  generation shares, the second would disconnect the listener for all of them.
- The first time an event loop or selector asks a held socket for its fd, the
  process tells zocket it waits for connections (``ZOCKET_WAITING=FD``).
- A held socket takes no connection once the process is stopping, and at
  exit the requests already taken get a moment to finish (``drain``).
"""

import _thread
import errno
import os
import sys
import time

import _zocket_adapters
import _zocket_protocol

#: The socket module, given by `start` (the hook never imports it first).
socket = None

_handed_over = []  # (fd, family, host, port, v6only, inode) of each handed-over socket
handed_fds = set()
originals = {}  # what the hook replaced in the socket module
_held_classes = {}  # the app's socket class -> its Held subclass
_notified = [False]
_adopted_here = [False]  # a held socket was made in this process (or its forked parent)


def start(module):
    """``socket`` was imported: read the handed-over sockets; whether there are any."""
    global socket
    socket = module
    _state.create()
    _zocket_adapters.register(_HELD_SOCKETS)
    originals.update(bind=module.socket.bind, fromfd=module.fromfd, init=module.socket.__init__)
    _handed_over[:] = _read_handed_over(os.environ.get(_zocket_protocol.HELD_FDS, ""))
    handed_fds.update(h[0] for h in _handed_over)
    return bool(_handed_over)


def _read_handed_over(value):
    handed = []
    for fd, inode in _zocket_protocol.parse_held_fds(value):
        try:
            if os.fstat(fd).st_ino != inode:
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if probe.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            host, port = probe.getsockname()[:2]
            v6only = (
                probe.family == socket.AF_INET6
                and probe.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            )
            handed.append((fd, probe.family, host, port, v6only, inode))
        finally:
            probe.close()
    return handed


class _State:
    """The weak sets of held sockets and connections, made once socket is imported
    (weakref is not worth importing in a process that never serves)."""

    def create(self):
        import weakref

        self.quiet = weakref.WeakSet()  # held sockets that send no ZOCKET_WAITING (_init)
        self.in_flight = weakref.WeakSet()  # connections taken from held sockets
        self.blocking = weakref.WeakSet()  # held sockets whose blocking is emulated


_state = _State()


# --- adoption ------------------------------------------------------------------------------


def bind(sock, address):
    """bind() of ``sock`` to ``address``: adopted (True) if a handed-over socket serves it."""
    handed = _handed_for(sock, address)
    if handed is None:
        return False
    _adopt_for_bind(sock, handed[0])
    return True


def _handed_for(sock, address):
    """The handed-over socket that soundly serves a bind of ``sock`` to ``address``, or None."""
    if sock.type != socket.SOCK_STREAM:
        return None
    return match_address(sock.family, address)


def match_address(family, address):
    """The handed-over socket that soundly serves a TCP listener of ``family`` at ``address``."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        host, port = address[0], int(address[1])
    except (TypeError, ValueError, IndexError):
        return None
    candidates = [h for h in _handed_over if h[3] == port and port != 0]
    if not candidates:
        return None
    asked = _ip(host, port, family)
    for handed in candidates:
        if _serves(handed, asked):
            return handed
    shown = ", ".join(_format(h[2], h[3]) for h in candidates)
    sys.stderr.write(
        f"zocket hook: not adopting the bind to {_format(host, port)}: zocket holds {shown}, "
        "which does not serve that address; binding normally\n"
    )
    return None


def _ip(host, port, family):
    """The address ``host`` means to bind(), or None for a wildcard."""
    import ipaddress

    if host in ("", "0.0.0.0", "::"):
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except OSError:
        return ipaddress.ip_address("0.0.0.0")  # unresolvable: matches nothing held
    ip = ipaddress.ip_address(infos[0][4][0].split("%", 1)[0])
    return None if ip.is_unspecified else ip


def _serves(handed, asked):
    """Would clients that connect to ``asked`` reach the handed-over socket?"""
    import ipaddress

    _fd, family, host, _port, v6only, _inode = handed
    if asked is None:
        return True  # the app asked for every address: zocket's choice of host stands
    mine = ipaddress.ip_address(host.split("%", 1)[0])
    if mine.is_unspecified:
        if family == socket.AF_INET:
            return asked.version == 4
        return asked.version == 6 or not v6only
    if asked.version == 6 and asked.ipv4_mapped is not None:
        asked = asked.ipv4_mapped
    return asked == mine


def _timeout_as_made(sock):
    """The timeout to give the held copy of a socket made from an existing fd.

    Python calls such a socket blocking (timeout None) whatever the fd's
    O_NONBLOCK says, and with O_NONBLOCK set its accept() then raises EAGAIN at
    once: Twisted's reactor (daphne, twist) sets the fd non-blocking first and
    relies on that. Emulating "blocking" there would freeze its loop, so such a
    socket keeps the state Python made (_AS_MADE).
    """
    timeout = sock.gettimeout()
    if timeout is None and not os.get_blocking(sock.fileno()):
        return _AS_MADE
    return timeout


def _adopt_for_bind(sock, fd):
    """The app's own socket, about to bind, becomes a copy of handed-over ``fd``."""
    timeout = sock.gettimeout()
    copy = os.dup(fd)
    os.close(sock.detach())
    _adopt(sock, copy, timeout)


def _adopt(sock, fd, timeout):
    """Make ``sock`` a held socket on ``fd`` (its own copy), drained at exit."""
    originals["init"](sock, fileno=fd)
    sock.__class__ = _held_class(type(sock))
    if timeout != _AS_MADE:  # compared by value: it comes back from a pickle too
        sock.settimeout(timeout)
    import _zocket_signals

    _zocket_signals.default_term_drains()
    if not _adopted_here[0]:
        _adopted_here[0] = True
        import atexit

        atexit.register(drain)


def adopted_here():
    """Whether this process (or the parent it was forked from) made a held socket."""
    return _adopted_here[0]


def is_held(sock):
    return type(sock) in _held_classes.values()


def _held_class(cls):
    """A subclass of the app's socket class that keeps the shared socket whole."""
    held = _held_classes.get(cls)
    if held is None:
        held = type(f"Held{cls.__name__}", (cls,), {
            "__slots__": (),
            "listen": _listen,
            "accept": _accept,
            "shutdown": _shutdown,
            "fileno": _fileno,
            "settimeout": _settimeout,
            "setblocking": _setblocking,
            "gettimeout": _gettimeout,
            "getblocking": _getblocking,
            "__reduce_ex__": _reduce_ex,
        })
        _held_classes[cls] = held
    return held


def _listen(self, backlog=None):
    """A no-op: already listening, with the backlog every generation shares."""


def _shutdown(self, how):
    """A no-op: shutdown() on a listening socket would stop it for every generation."""


# --- taking connections, and stopping -----------------------------------------------------

# Servers whose own reloader ends the process with sys.exit() (Django's, werkzeug's) run
# their requests in daemon threads that die with it: a request accepted a moment before
# would get no answer. At exit the held sockets stop accepting (what is queued waits in
# the kernel for the next process) and the requests already accepted get up to a second
# (bounded: an idle keep-alive connection of a browser would otherwise delay every reload).
_DRAIN_SECONDS = 1.0
_draining = [False]
_taking = set()  # threads taking a connection (see _accept): a drain waits for them too


class _HeldSockets(_zocket_adapters.Adapter):
    """The core's own part in a stop: the held socket objects of this process."""

    order = 0
    waiters = ("selectors",)  # socketserver (Django runserver, http.server, werkzeug)

    def stop_accepting(self):
        if _adopted_here[0]:
            _draining[0] = True
        return _adopted_here[0]

    def busy(self):
        if _taking:
            return True
        while True:
            try:
                taken = list(_state.in_flight)
                break
            except RuntimeError:  # another thread took one while we copied: again
                continue
        return any(conn.fileno() != -1 for conn in taken)


_HELD_SOCKETS = _HeldSockets()


def _accept(self):
    """accept() on a held socket: the wait apart from the taking, and the taking counted.

    A process that is stopping (``_draining``) must take nothing more, and its
    drain must wait for every connection taken just before: so a thread takes
    a connection only inside ``_taking`` (checked by ``busy()``), after it saw
    that the process is not stopping, and never while it waits (a wait can be
    long, and takes nothing).
    """
    guard = None
    for adapter in _zocket_adapters.registered():
        guard = adapter.on_accept(self) or guard
    fd = socket.socket.fileno(self)
    if fd < 0:
        guard = None
    timeout = socket.socket.gettimeout(self)
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        if deadline is not None:
            _wait_readable(fd, deadline)
        if guard is not None:
            guard.take()
        me = _thread.get_ident()
        _taking.add(me)
        try:
            if _draining[0]:
                _refuse(self)
            conn, address = _try_accept(self, fd)
            _state.in_flight.add(conn)
            return conn, address
        except BlockingIOError:
            if guard is not None:
                guard.handed_on()
            if deadline is None or _draining[0]:
                raise
            # another generation took it: wait again
        except BaseException:
            if guard is not None:
                guard.handed_on()
            raise
        finally:
            _taking.discard(me)


def _refuse(sock):
    """Raise EAGAIN: this process is stopping, and takes nothing more."""
    if not any(adapter.refuse(sock) for adapter in _zocket_adapters.registered()):
        time.sleep(0.05)  # a server's own retry loop: do not spin meanwhile
    raise BlockingIOError(errno.EAGAIN, "zocket hook: this process is stopping")


def _wait_readable(fd, deadline):
    """Wait until a connection is queued on ``fd``; socket.timeout at ``deadline``."""
    import select

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")  # socket.timeout is TimeoutError since 3.10
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if poller.poll(min(remaining, 3600.0) * 1000):
            return


def _try_accept(sock, fd):
    """One non-blocking accept4: never waits, whatever the object's timeout.

    Through a copy of the fd, so that an exception from a signal handler while
    the copy's object is being made or dropped can only ever close the copy.
    """
    attempt = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(fd))
    try:
        attempt.settimeout(0.0)  # sets O_NONBLOCK, which the shared socket has anyway
        conn_fd, address = attempt._accept()
    finally:
        attempt.close()
    conn = socket.socket(sock.family, sock.type, sock.proto, fileno=conn_fd)
    if socket.getdefaulttimeout() is None and _gettimeout(sock):
        conn.setblocking(True)  # as socket.accept() does
    return conn, address


def drain(deadline=None):
    """Take nothing more; wait until the connections taken so far are closed, or
    ``deadline`` (at exit: a second)."""
    _draining[0] = True
    if deadline is None:
        deadline = time.monotonic() + _DRAIN_SECONDS
    _zocket_adapters.drain(deadline)


# --- blocking, emulated -------------------------------------------------------------------

# O_NONBLOCK belongs to the open file that zocket and every generation share: an
# app that makes its copy blocking would freeze an asyncio generation still serving
# (its accept loop relies on EAGAIN). So "blocking" is emulated with a timeout long
# enough never to matter, which keeps O_NONBLOCK set; the hook then polls before each
# accept and goes back to waiting when another process took the connection.
_FOREVER = 7 * 24 * 3600.0
#: A held socket's timeout left as Python made it from a non-blocking fd (see _timeout_as_made).
_AS_MADE = "as made"


def _settimeout(self, value):
    if value is None:
        _state.blocking.add(self)
        socket.socket.settimeout(self, _FOREVER)
    else:
        _state.blocking.discard(self)
        socket.socket.settimeout(self, value)


def _setblocking(self, flag):
    _settimeout(self, None if flag else 0.0)


def _gettimeout(self):
    return None if self in _state.blocking else socket.socket.gettimeout(self)


def _getblocking(self):
    return self in _state.blocking or socket.socket.getblocking(self)


def _reduce_ex(self, protocol):
    """Pickled for a multiprocessing child (uvicorn --reload, --workers): held there too."""
    from multiprocessing import reduction

    df = reduction.DupFd(self.fileno())
    timeout = self.gettimeout()
    if timeout is None and self not in _state.blocking:
        timeout = _AS_MADE
    return _rebuild_held, (df, timeout)


def _rebuild_held(df, timeout):
    """In the multiprocessing child, whose ZOCKET_HOOK_FDS named fds it did not get (so
    nothing was handed over there); its stop signals are wrapped in any case."""
    import _zocket_signals  # noqa: F401 (importing it installs it)

    sock = socket.socket.__new__(socket.socket)
    _adopt(sock, df.detach(), timeout)
    return sock


# --- readiness ----------------------------------------------------------------------------


def _fileno(self):
    fd = socket.socket.fileno(self)
    if not _notified[0] and fd >= 0 and self not in _state.quiet and _asked_by_event_loop():
        _notified[0] = True
        _notify(_zocket_protocol.waiting_message(fd))
    return fd


def _asked_by_event_loop():
    """Whether fileno() was called on the way to registering the socket with a selector.

    The modules that do so are the adapters' ``waiters``; other callers
    (werkzeug's reloader parent puts the fd in the environment) do not mean
    that anything waits on the socket yet.
    """
    waiters = set()
    for adapter in _zocket_adapters.registered():
        waiters.update(adapter.waiters)
    frame = sys._getframe(1)
    for _ in range(4):
        if frame is None:
            return False
        if frame.f_globals.get("__name__") in waiters:
            return True
        frame = frame.f_back
    return False


def _notify(message):
    target = os.environ.get(_zocket_protocol.NOTIFY_SOCKET, "")
    if not target.startswith(("@", "/")):
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), target)
    except OSError:
        pass  # zocket's auto readiness still sees the server from /proc


def init(self, family, type, proto, fileno):
    """``socket.socket(fileno=FD)`` of a handed-over fd (hypercorn's fd://) is held too.

    Such an app knows it was handed a socket and may say READY=1 itself when it is
    ready (``--ready notify``): the hook does not speak for it.
    """
    originals["init"](self, family, type, proto, fileno)
    if fileno is None or fileno not in handed_fds or self.__class__ is not socket.socket:
        return  # an app subclass, or not a handed-over fd after all
    if any(h[0] == fileno and _still_handed(fileno, h[5]) for h in _handed_over):
        timeout = _timeout_as_made(self)
        _adopt(self, self.detach(), timeout)
        _state.quiet.add(self)


def fromfd(fd, family, type, proto):
    """A socket made from a handed-over fd (werkzeug's reloader child gets it so) is held too."""
    sock = originals["fromfd"](fd, family, type, proto)
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except OSError:
        return sock
    if sock.type == socket.SOCK_STREAM and any(h[5] == inode for h in _handed_over):
        timeout = _timeout_as_made(sock)
        _adopt(sock, sock.detach(), timeout)
    return sock


def handed_pairs():
    """(fd, inode) of the handed-over sockets still here: read from the environment, since
    a process may start a child before it ever imports socket."""
    pairs = _zocket_protocol.parse_held_fds(os.environ.get(_zocket_protocol.HELD_FDS, ""))
    return [(fd, inode) for fd, inode in pairs if _still_handed(fd, inode)]


def _still_handed(fd, inode):
    try:
        return os.fstat(fd).st_ino == inode
    except OSError:
        return False


def _format(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
