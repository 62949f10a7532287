"""A process told to stop takes no new connection, and its event loop hears of it a moment later.

Standard library only: this runs inside the user's interpreter.

zocket stops an old generation with a signal while the new one already accepts
on the same socket. An asyncio server (uvicorn, hypercorn, aiohttp) that gets
the signal goes on taking connections until its shutdown begins, and its
shutdown closes the connections it has accepted but not read a request from
yet, as if they were idle keep-alive connections: their clients see a reset
(measured before this module: about one request in forty restarts under load).

So in a process that holds a zocket socket, a stop signal (SIGTERM, SIGINT,
SIGQUIT and zocket's --stop-signal) first stops the held sockets from accepting
(what is queued waits in the kernel for the other generation), and where an
asyncio loop that accepted from a held socket is running, the server's own
handler runs in it GRACE seconds later, by which time the loop has read the
requests of the connections it took just before: they are in progress, and a
graceful shutdown finishes them. Anywhere else (no loop, or a loop run for a
moment that may be gone by then) the handler runs at once, as before. Where
granian's native threads read the connections (``_zocket_granian``), the
signal handler itself waits GRACE before the server's, whatever its loop:
uvloop and rloop act on a signal on their own, which cannot be put off.

Handlers are wrapped where they are installed: ``signal.signal`` (uvicorn,
gunicorn, Django's reloader, asyncio.run) and asyncio's ``add_signal_handler``
(hypercorn, aiohttp). ``signal.signal`` and ``signal.getsignal`` still give the
app its own handlers back. uvloop's loop is compiled: there the held
sockets' servers are closed instead (``_zocket_uvloop``).

SIGTERM left at its default would kill a process with the requests it is
serving: hypercorn's workers, which leave their stop to their parent, get
zocket's SIGTERM too (it goes to the generation's process group). So where a
held socket is made while SIGTERM is at its default, SIGTERM becomes: stop
accepting, let the connections taken so far close (the server's own shutdown,
or the requests simply ending), for at most ZOCKET_STOP_TIMEOUT seconds (zocket
kills the generation then anyway), then die of SIGTERM as before; its fork
children die at once. The app still sees SIG_DFL, and a handler it installs
replaces this one.
"""

import os
import signal
import sys
import time
import weakref

#: How long an event loop's stop handler waits: a few loop turns under load.
GRACE = 0.1
#: How often a default SIGTERM looks whether the connections taken so far are closed.
_POLL = 0.02

_original_signal = signal.signal
_original_getsignal = signal.getsignal
_stop_signals = set()
_hold = [None]  # install()'s: what the hook does for this process's held sockets
#: Event loops that accepted from a held socket: only there is a stop handler deferred
#: (a loop run for a moment elsewhere, asyncio.run in a sync view, may be gone by then).
serving_loops = weakref.WeakSet()


def install(stop_signals, hold):
    """Wrap stop-signal handlers from now on.

    ``hold`` is the hook's side: ``stop_accepting()`` (whether this process holds
    a socket), ``busy()`` (whether a connection it took is still open),
    ``drain()`` (wait, bounded, until none is), ``reads_natively()`` (whether
    native threads, granian's, read from the connections it takes) and
    ``stop_natively()`` (ask an embedded granian to stop gracefully). Called at
    start-up and again when a held socket reaches a multiprocessing child: once
    is enough.
    """
    if signal.signal is _signal:
        return
    _stop_signals.update(stop_signals)
    _hold[0] = hold
    signal.signal = _signal
    signal.getsignal = _getsignal


def _stop_accepting():
    hold = _hold[0]
    return hold is not None and hold.stop_accepting()


def default_term_on_hold():
    """A held socket was just made here: if SIGTERM is at its default, make it drain first."""
    try:
        if _original_getsignal(signal.SIGTERM) == signal.SIG_DFL:
            _original_signal(signal.SIGTERM, _default_term)
            _term_owner[0] = os.getpid()
            _guard_forks()
    except ValueError:
        pass  # not the main thread: signals are not ours to set from here


# A fork child gets _default_term too, and CPython forgets a signal that reaches the
# child before its interpreter has left fork() (it clears pending signals there): a
# SIGTERM sent at once, as multiprocessing's terminate() may, would be lost, and the
# child live on. So SIGTERM is blocked across fork(), and the child puts its default
# back before it unblocks: a SIGTERM that came meanwhile then ends it, as it would
# have without the hook.
_fork_guarded = [False]
_masks = []


def _guard_forks():
    if not _fork_guarded[0]:
        _fork_guarded[0] = True
        os.register_at_fork(
            before=_block_term, after_in_parent=_unblock_term, after_in_child=_child_term
        )


def _block_term():
    if _original_getsignal(signal.SIGTERM) is _default_term:
        _masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))


def _unblock_term():
    if _masks:
        signal.pthread_sigmask(signal.SIG_SETMASK, _masks.pop())


def _child_term():
    if _original_getsignal(signal.SIGTERM) is _default_term:
        _original_signal(signal.SIGTERM, signal.SIG_DFL)
    _unblock_term()


_term_owner = [0]  # the process whose connections a default SIGTERM waits for


def running_loop():
    """The asyncio loop running in this thread, or None (asyncio never imported: None)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Stopping:
    """An app's handler for a stop signal, run once the held sockets stopped accepting."""

    __slots__ = ("defer", "handler", "owner")

    def __init__(self, handler, defer):
        self.handler = handler
        self.defer = defer
        self.owner = os.getpid()

    def __call__(self, signum, frame):
        own = os.getpid() == self.owner
        if not own and _hold[0].reads_natively():
            # A fork child still running its parent's handler: a granian worker loading
            # the app. That handler means nothing here and the stop would be lost (the
            # worker would then serve): it is signalled again once it has its own.
            _pending[signum] = os.getpid()
        if not _stop_accepting():
            return self.handler(signum, frame)
        if own and _hold[0].reads_natively():
            # granian's threads read the requests of what they took whatever this thread
            # and its event loop (asyncio, uvloop, rloop) do: the moment is taken here.
            time.sleep(GRACE)
            return self.handler(signum, frame)
        loop = running_loop() if self.defer else None
        if loop is None or loop not in serving_loops:
            return self.handler(signum, frame)
        try:
            # Through the loop's thread-safe entry: a signal handler may run between
            # any two bytecodes of the loop itself.
            loop.call_soon_threadsafe(loop.call_later, GRACE, self.handler, signum, None)
        except RuntimeError:  # the loop is closing: nothing left to read
            return self.handler(signum, frame)
        return None


#: Stop signals a fork child got while it still ran its parent's handler: signal -> pid.
_pending = {}


def _signal(signalnum, handler):
    if signalnum in _stop_signals and callable(handler) and not isinstance(handler, _Stopping):
        asyncio_noop = _is_asyncio_noop(handler)
        if asyncio_noop:
            _patch_asyncio_loops()
        handler = _Stopping(handler, defer=not asyncio_noop)
    previous = _unwrap(_original_signal(signalnum, handler))
    if _pending.get(signalnum) == os.getpid() and isinstance(handler, _Stopping):
        del _pending[signalnum]
        os.kill(os.getpid(), signalnum)  # now to the handler that means it
    return previous


def _getsignal(signalnum):
    return _unwrap(_original_getsignal(signalnum))


def _unwrap(handler):
    if handler is _default_term:
        return signal.SIG_DFL
    return handler.handler if isinstance(handler, _Stopping) else handler


def _default_term(signum, frame):
    if os.getpid() != _term_owner[0]:
        # A fork child (a multiprocessing worker, a helper), maybe signalled before it
        # could even reset its handlers: the parent's connections are not its to wait for.
        _die(signum)
    _stop_accepting()
    deadline = time.monotonic() + _stop_timeout()
    loop = running_loop()
    # A loop that accepted, or one that granian's embedded server runs app code in:
    # either way it must go on running while the connections close.
    if loop is not None and (loop in serving_loops or _hold[0].reads_natively()):
        try:
            if _hold[0].reads_natively():
                # Nothing else tells an embedded granian to stop: its graceful stop
                # closes idle keep-alive connections and finishes the requests in flight.
                loop.call_soon_threadsafe(loop.call_later, GRACE, _hold[0].stop_natively)
            loop.call_soon_threadsafe(_die_when_idle, loop, signum, deadline)
            return
        except RuntimeError:  # the loop is closing: nothing will answer through it
            pass
    try:
        _hold[0].drain(deadline)  # other threads serve meanwhile
    finally:  # even if another signal's exception cuts the wait short
        _die(signum)


def _die_when_idle(loop, signum, deadline):
    """In the loop, which serves on meanwhile: die once no connection taken is open."""
    if _hold[0].busy() and time.monotonic() < deadline:
        loop.call_later(_POLL, _die_when_idle, loop, signum, deadline)
    else:
        _die(signum)


def _die(signum):
    _original_signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached: the default action ends the process


def _stop_timeout():
    try:
        return float(os.environ.get("ZOCKET_STOP_TIMEOUT", ""))
    except ValueError:
        return 10.0


def _is_asyncio_noop(handler):
    """asyncio's add_signal_handler installs a do-nothing handler and acts in the loop."""
    return (
        getattr(handler, "__module__", None) == "asyncio.unix_events"
        and getattr(handler, "__name__", None) == "_sighandler_noop"
    )


def _patch_asyncio_loops():
    """Defer the callbacks of add_signal_handler for stop signals, in every selector loop."""
    unix_events = sys.modules.get("asyncio.unix_events")
    cls = getattr(unix_events, "_UnixSelectorEventLoop", None)
    if cls is None or "_zocket_handle_signal" in cls.__dict__:
        return
    original = cls._handle_signal

    def _handle_signal(self, sig):
        # The signal's Python-level handler (the wrapped no-op) already ran, in the main
        # thread, before the loop read the signal from its wake-up fd: the held sockets
        # accept nothing more. Give the loop GRACE to read what it accepted before.
        if sig in _stop_signals and _stop_accepting() and self in serving_loops:
            self.call_later(GRACE, original, self, sig)
        else:
            original(self, sig)

    cls._zocket_handle_signal = original
    cls._handle_signal = _handle_signal
