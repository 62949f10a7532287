"""Make an unchanged Python server listen on the socket zocket holds; standard library only.

Runs inside the user's interpreter, possibly another venv or Python version
than zocket's, so it imports nothing but the standard library.

- ``socket.socket.bind`` is wrapped: a bind to an address a held socket
  serves (same port; same host, or a wildcard, or the other family's
  loopback where that is sound) turns the socket object into a copy of the
  held listening socket instead. ``listen()`` and ``shutdown()`` become
  no-ops on it: the first would shrink the backlog every generation shares,
  the second would disconnect the listener for all of them.
- ``subprocess.Popen`` is wrapped so that a reloader that starts its
  server with ``close_fds=True`` (the default) still passes the held fds on.
- socketserver's accept-and-dispatch step is wrapped so that a loop in the
  main thread gets SIGINT's and SIGTERM's defaults made safe for the requests
  it holds (``_zocket_stop``).
- The first time the server asks an adopted socket for its fd after
  ``listen()`` (as a selector or event loop does just before waiting on it)
  the hook sends ``ZOCKET_WAITING=FD`` on NOTIFY_SOCKET: zocket's sign that
  this generation is ready.
- ``socket.fromfd`` on a held fd (werkzeug's reloader child, gunicorn) and
  ``socket.socket(fileno=FD)`` on one (hypercorn's ``fd://``, tornado, waitress)
  give a held socket too, with the same drain at exit.
- A stop signal makes the held sockets stop accepting at once, and an event
  loop's stop handler runs a moment later (``_zocket_signals``).
- granian, which binds in Rust, is handed the held socket where it makes its
  listener (``_zocket_granian``); uvloop's servers on a held socket, which
  accept in libuv, are closed by a stop signal (``_zocket_uvloop``).

ZOCKET_HOOK_FDS lists the held fds as ``FD:INODE,...``; a descendant checks
the inode so that an fd number reused for something else is never taken.
"""

import atexit
import errno
import ipaddress
import os
import select
import signal
import socket
import sys
import threading
import time
import weakref

import _zocket_granian
import _zocket_signals
import _zocket_uvloop

_held = []  # (fd, family, host, port, v6only, inode) of each held socket in this process
_classes = {}
_notified = [False]
_quiet = weakref.WeakSet()  # held sockets that send no ZOCKET_WAITING (see _init)
_held_fds = set()
_original_bind = socket.socket.bind
_original_fromfd = socket.fromfd
_original_init = socket.socket.__init__


def install():
    # Stop signals are wrapped even where no held fd arrived (a multiprocessing child
    # started by spawn): one may come later, pickled, and by then a compiled event loop
    # (uvloop) may keep the signal.signal it found when it was imported. Until this
    # process holds a socket the wrapper only calls the app's handler.
    wrap_stop_signals()
    _zocket_uvloop.install(_is_held)  # a held socket may reach a uvloop server later, pickled
    _held[:] = _read_held(os.environ.get("ZOCKET_HOOK_FDS", ""))
    if not _held:
        return
    _held_fds.update(h[0] for h in _held)
    socket.socket.bind = _bind
    socket.fromfd = _fromfd
    socket.socket.__init__ = _init
    _patch_subprocess()
    _zocket_granian.install(_match_address)


def _stop_signals():
    """The signals that tell a generation to stop: zocket's --stop-signal, and the ones
    zocket passes on when it stops itself."""
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
    try:
        signals.add(int(os.environ.get("ZOCKET_STOP_SIGNAL", "")))
    except ValueError:
        pass
    return signals


def _read_held(value):
    held = []
    for item in value.split(","):
        fd_text, _, inode_text = item.partition(":")
        try:
            fd, inode = int(fd_text), int(inode_text)
            if os.fstat(fd).st_ino != inode:
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except (ValueError, OSError):
            continue
        try:
            if probe.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            host, port = probe.getsockname()[:2]
            v6only = (
                probe.family == socket.AF_INET6
                and probe.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            )
            held.append((fd, probe.family, host, port, v6only, inode))
        finally:
            probe.close()
    return held


def _bind(self, address):
    match = _match(self, address)
    if match is None:
        return _original_bind(self, address)
    _adopt(self, match[0])


def _match(sock, address):
    """The held socket that soundly serves a bind to ``address``, or None."""
    if sock.type != socket.SOCK_STREAM:
        return None
    return _match_address(sock.family, address)


def _match_address(family, address):
    """The held socket that soundly serves a TCP listener of ``family`` at ``address``."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        host, port = address[0], int(address[1])
    except (TypeError, ValueError, IndexError):
        return None
    candidates = [h for h in _held if h[3] == port and port != 0]
    if not candidates:
        return None
    asked = _ip(host, port, family)
    for held in candidates:
        if _serves(held, asked):
            return held
    shown = ", ".join(_format(h[2], h[3]) for h in candidates)
    sys.stderr.write(
        f"zocket hook: not adopting the bind to {_format(host, port)}: zocket holds {shown}, "
        "which does not serve that address; binding normally\n"
    )
    return None


def _ip(host, port, family):
    """The address ``host`` means to bind(), or None for a wildcard."""
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


def _serves(held, asked):
    """Would clients that connect to ``asked`` reach the held socket?"""
    _fd, family, host, _port, v6only, _inode = held
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


def _init(self, family=-1, type=-1, proto=-1, fileno=None):
    """``socket.socket(fileno=FD)`` of a held fd (hypercorn's fd://) is held too.

    Such an app knows it was handed a socket and may say READY=1 itself when it is
    ready (``--ready notify``): the hook does not speak for it.
    """
    _original_init(self, family, type, proto, fileno)
    if fileno is None or fileno not in _held_fds or self.__class__ is not socket.socket:
        return  # every accepted connection passes here: keep it one set look-up
    if any(h[0] == fileno and _still_held(fileno, h[5]) for h in _held):
        timeout = self.gettimeout()
        _hold(self, self.detach(), timeout)
        _quiet.add(self)


def _fromfd(fd, family, type, proto=0):
    """A socket made from a held fd (werkzeug's reloader child gets it so) is held too."""
    sock = _original_fromfd(fd, family, type, proto)
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except OSError:
        return sock
    if sock.type == socket.SOCK_STREAM and any(h[5] == inode for h in _held):
        timeout = sock.gettimeout()
        _hold(sock, sock.detach(), timeout)
    return sock


def _adopt(sock, fd):
    timeout = sock.gettimeout()
    copy = os.dup(fd)
    os.close(sock.detach())
    _hold(sock, copy, timeout)


def _hold(sock, fd, timeout):
    """Make ``sock`` the held socket on ``fd`` (its own copy), with the at-exit drain."""
    _make_held(sock, fd, timeout)
    _zocket_signals.default_term_on_hold()
    if not _holding[0]:
        _holding[0] = True
        atexit.register(_drain)
    _patch_socketserver()


# Servers whose own reloader ends the process with sys.exit() (Django's, werkzeug's) run
# their requests in daemon threads that die with it: a request accepted a moment before
# would get no answer. At exit the held sockets stop accepting (what is queued waits in
# the kernel for the next process) and the requests already accepted get up to a second
# (bounded: an idle keep-alive connection of a browser would otherwise delay every reload).
_DRAIN_SECONDS = 1.0
_draining = [False]
_holding = [False]  # a held socket object was made in this process (or its forked parent)
_in_flight = weakref.WeakSet()
_removed = set()  # (loop, fd) whose accept callback a stop removed


class _Hold:
    """What a stop signal does to this process's held sockets (``_zocket_signals``)."""

    @staticmethod
    def stop_accepting():
        """Held sockets take nothing more here; whether there are any."""
        if _holding[0]:
            _draining[0] = True
        native = _zocket_granian.stop_accepting()
        native = _zocket_uvloop.stop_accepting() or native
        return _holding[0] or native

    @staticmethod
    def busy():
        """Whether a connection taken from a held socket is still open."""
        while True:
            try:
                taken = list(_in_flight)
                break
            except RuntimeError:  # another thread took one while we copied: again
                continue
        if any(conn.fileno() != -1 for conn in taken):
            return True
        return _zocket_granian.busy() or _zocket_uvloop.busy()

    @staticmethod
    def drain(deadline):
        _drain(deadline)

    @staticmethod
    def reads_natively():
        return _zocket_granian.adopted()

    @staticmethod
    def stop_natively():
        _zocket_granian.stop_embedded()


def _accept(self):
    loop = _zocket_signals.running_loop()
    if _draining[0]:
        fd = socket.socket.fileno(self)
        if loop is not None and (loop, fd) not in _removed:
            # asyncio's accept callback: stop it being called (the listener stays
            # readable for the other generation) instead of spinning the loop.
            loop.remove_reader(fd)
            _removed.add((loop, fd))
        else:
            # A loop that registers the fd again after each refusal (loop.sock_accept),
            # or a server's own retry loop: do not spin meanwhile.
            time.sleep(0.01 if loop is not None else 0.05)
        raise BlockingIOError(errno.EAGAIN, "zocket hook: this process is stopping")
    if loop is not None:
        _zocket_signals.serving_loops.add(loop)
    guard = _guard[0]
    fd = socket.socket.fileno(self)
    if guard is not None and _serving[0] and fd >= 0 and guard.on_main_thread():
        conn, address = _accept_holding(self, guard, fd)
    else:
        conn, address = socket.socket.accept(self)
    _in_flight.add(conn)
    return conn, address


# --- a socketserver loop in the main thread: stop signals wait for the hand-off ----------
_guard = [None]  # _zocket_stop.Guard, once a socketserver loop served from the main thread
_guard_tried = [False]
_serving = [False]  # the main thread is in socketserver's _handle_request_noblock
_socketserver_patched = [False]


def _patch_socketserver():
    """Wrap socketserver's accept-and-dispatch step, once, if socketserver is in use."""
    socketserver = sys.modules.get("socketserver")
    if socketserver is None or _socketserver_patched[0]:
        return
    _socketserver_patched[0] = True
    original = socketserver.BaseServer._handle_request_noblock

    def _handle_request_noblock(self):
        guard = _main_thread_guard()
        if guard is None:
            return original(self)
        _serving[0] = True
        try:
            return original(self)
        finally:
            _serving[0] = False
            guard.handed_on()

    socketserver.BaseServer._handle_request_noblock = _handle_request_noblock


def _main_thread_guard():
    """The stop guard when called on the main thread; set up the first time (lazily: an
    app that installs its own handlers before serving keeps them)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if not _guard_tried[0]:
        _guard_tried[0] = True
        try:
            import _zocket_stop

            guard = _zocket_stop.Guard(_drain)
            if guard.install():
                _guard[0] = guard
        except Exception as exc:  # the server must run even if the guard cannot
            sys.stderr.write(f"zocket hook: stop guard disabled: {type(exc).__name__}: {exc}\n")
    return _guard[0]


def _accept_holding(sock, guard, fd):
    """accept() on the main thread, which holds the connection from the moment it is taken.

    The wait is separate from the taking, so a stop signal during the wait acts at
    once; from the non-blocking accept on, it waits for the hand-off (guard).
    """
    timeout = socket.socket.gettimeout(sock)
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("timed out")  # noqa: UP041 (the hook runs on 3.8 too)
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(min(remaining, 3600.0) * 1000):
                continue
        guard.take()
        try:
            return _try_accept(sock, fd)
        except BlockingIOError:
            guard.handed_on()
            if deadline is None:
                raise
            # another generation took it: wait again
        except BaseException:
            guard.handed_on()
            raise


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


def _drain(deadline=None):
    _draining[0] = True
    if deadline is None:
        deadline = time.monotonic() + _DRAIN_SECONDS
    while time.monotonic() < deadline and _Hold.busy():
        time.sleep(0.02)


def _is_held(sock):
    return type(sock) in _classes.values()


def _make_held(sock, fd, timeout):
    _original_init(sock, fileno=fd)
    sock.__class__ = _held_class(type(sock))
    sock.settimeout(timeout)


def _held_class(cls):
    """A subclass of the app's socket class that keeps the shared socket whole."""
    held = _classes.get(cls)
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
        _classes[cls] = held
    return held


# O_NONBLOCK belongs to the open file that zocket and every generation share: an
# app that makes its copy blocking would freeze an asyncio generation still serving
# (its accept loop relies on EAGAIN). So "blocking" is emulated with a timeout long
# enough never to matter, which keeps O_NONBLOCK set; CPython then polls before each
# accept and goes back to waiting when another process took the connection.
_FOREVER = 7 * 24 * 3600.0
_blocking = weakref.WeakSet()


def _settimeout(self, value):
    if value is None:
        _blocking.add(self)
        socket.socket.settimeout(self, _FOREVER)
    else:
        _blocking.discard(self)
        socket.socket.settimeout(self, value)


def _setblocking(self, flag):
    _settimeout(self, None if flag else 0.0)


def _gettimeout(self):
    return None if self in _blocking else socket.socket.gettimeout(self)


def _getblocking(self):
    return self in _blocking or socket.socket.getblocking(self)


def _reduce_ex(self, protocol):
    """Pickled for a multiprocessing child (uvicorn --reload, --workers): held there too."""
    from multiprocessing import reduction

    df = reduction.DupFd(self.fileno())
    return _rebuild_held, (df, self.gettimeout())


def _rebuild_held(df, timeout):
    """In the multiprocessing child, whose ZOCKET_HOOK_FDS named fds it did not get (so
    install() found nothing held there); its stop signals are wrapped in any case."""
    wrap_stop_signals()
    sock = socket.socket.__new__(socket.socket)
    _hold(sock, df.detach(), timeout)
    return sock


def wrap_stop_signals():
    """Stop signals make this process stop accepting first (``_zocket_signals``)."""
    _zocket_signals.install(_stop_signals(), _Hold)


def _listen(self, backlog=None):
    """A no-op: already listening, with the backlog every generation shares."""


def _shutdown(self, how):
    """A no-op: shutdown() on a listening socket would stop it for every generation."""


def _fileno(self):
    fd = socket.socket.fileno(self)
    if not _notified[0] and fd >= 0 and self not in _quiet and _asked_by_event_loop():
        _notified[0] = True
        _notify(f"ZOCKET_WAITING={fd}")
    return fd


# Modules that ask for a listening socket's fd to wait on it: socketserver through
# selectors (Django runserver, http.server, werkzeug), asyncio (aiohttp, uvicorn).
_WAITERS = ("selectors", "asyncio.selector_events", "asyncio.base_events")


def _asked_by_event_loop():
    """Whether fileno() was called on the way to registering the socket with a selector.

    Other callers (werkzeug's reloader parent puts the fd in the environment)
    do not mean that anything waits on the socket yet.
    """
    frame = sys._getframe(1)
    for _ in range(4):
        if frame is None:
            return False
        if frame.f_globals.get("__name__") in _WAITERS:
            return True
        frame = frame.f_back
    return False


def _notify(message):
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not target.startswith(("@", "/")):
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), target)
    except OSError:
        pass  # zocket's auto readiness still sees the server from /proc


def _patch_subprocess():
    import subprocess

    original = subprocess.Popen.__init__

    def __init__(self, *args, **kwargs):
        if kwargs.get("close_fds", True):
            alive = [h[0] for h in _held if _still_held(h[0], h[5])]
            if alive:
                kwargs["pass_fds"] = tuple(sorted(set(kwargs.get("pass_fds", ())) | set(alive)))
        original(self, *args, **kwargs)

    subprocess.Popen.__init__ = __init__


def _still_held(fd, inode):
    try:
        return os.fstat(fd).st_ino == inode
    except OSError:
        return False


def _format(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
