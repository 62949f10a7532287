"""A process told to stop takes no new connection, and its server hears of it once that is safe.

Standard library only: this runs inside the user's interpreter. It names no
server: what differs between servers is asked of the adapters
(``_zocket_adapters``).

zocket stops an old generation with a signal while the new one already accepts
on the same socket. A server that gets the signal may go on taking connections
until its shutdown begins, and a shutdown may close the connections it has
accepted but not read a request from yet, as if they were idle keep-alive
connections: their clients would see a reset.

So in a process that holds a zocket socket, a stop signal (SIGTERM, SIGINT,
SIGQUIT and zocket's --stop-signal) first makes every adapter stop accepting
(what is queued waits in the kernel for the other generation); then the first
adapter that can puts the server's own handler off until what it took has
been read (``defer``: an event loop that serves a held socket runs it GRACE
seconds later); anywhere else the handler runs at once.

Handlers are wrapped where they are installed, ``signal.signal`` (which
asyncio's ``add_signal_handler`` calls too); ``signal.signal`` and
``signal.getsignal`` still give the app its own handlers back.

SIGTERM left at its default would kill a process with the requests it is
serving (hypercorn's workers leave their stop to their parent, yet get
zocket's SIGTERM too: it goes to the generation's process group). So where a
held socket is made while SIGTERM is at its default, SIGTERM becomes: stop
accepting, let the connections taken so far close (the server's own shutdown,
or the requests simply ending), for at most ZOCKET_STOP_TIMEOUT seconds (zocket
kills the generation then anyway), then die of SIGTERM; the wait runs beside the
main thread, which may be the one that must finish them. Its fork children die
at once. The app still sees SIG_DFL, and a handler it installs replaces this one.
"""

import _thread
import os
import signal
import time

import _zocket_adapters
import _zocket_protocol

#: How long a stop handler is put off: a few loop turns under load.
GRACE = 0.1
#: How often a default SIGTERM looks whether the connections taken so far are closed.
_POLL = 0.02

_original_signal = signal.signal
_original_getsignal = signal.getsignal
_stop_signals = set()


def install():
    """Wrap stop-signal handlers from now on (once: later calls do nothing).

    Importing this module does it: the hook imports it when the process imports
    ``signal``, or when a held socket is made, whichever comes first (this
    module's own ``import signal`` may be the first one).
    """
    if signal.signal is _signal:
        return
    _stop_signals.update(_read_stop_signals())
    signal.signal = _signal
    signal.getsignal = _getsignal


def _read_stop_signals():
    """The signals that tell a generation to stop: zocket's --stop-signal, and the ones
    zocket passes on when it stops itself."""
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
    try:
        signals.add(int(os.environ.get(_zocket_protocol.STOP_SIGNAL, "")))
    except ValueError:
        pass
    return signals


def is_stop_signal(signum):
    return signum in _stop_signals


def default_term_drains():
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


class _Stopping:
    """An app's handler for a stop signal, run once the held sockets stopped accepting."""

    __slots__ = ("deferrable", "handler", "owner")

    def __init__(self, handler, deferrable):
        self.handler = handler
        self.deferrable = deferrable
        self.owner = os.getpid()

    def __call__(self, signum, frame):
        _told_to_stop()
        own = os.getpid() == self.owner
        adapters = _zocket_adapters.registered()
        if not own and any(adapter.resend() for adapter in adapters):
            # A fork child still running its parent's handler: the stop would be lost
            # (the child would then serve). It is signalled again once it has its own.
            _pending[signum] = os.getpid()
        if not _zocket_adapters.stop_accepting():
            return self.handler(signum, frame)
        for adapter in adapters:
            if adapter.defer(self.handler, signum, frame, own, self.deferrable):
                return None
        return self.handler(signum, frame)


#: Stop signals a fork child got while it still ran its parent's handler: signal -> pid.
_pending = {}


def _signal(signalnum, handler):
    if signalnum in _stop_signals and callable(handler) and not isinstance(handler, _Stopping):
        answers = [adapter.may_defer(handler) for adapter in _zocket_adapters.registered()]
        handler = _Stopping(handler, deferrable=all(answers))
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
    _told_to_stop()
    if signum in _finished:  # an adapter's thread saw the process idle: now, at once
        _die(signum)
    if os.getpid() != _term_owner[0]:
        # A fork child (a multiprocessing worker, a helper), maybe signalled before it
        # could even reset its handlers: the parent's connections are not its to wait for.
        _die(signum)
    _zocket_adapters.stop_accepting()
    deadline = time.monotonic() + stop_timeout()
    # An adapter whose event loop must go on running while the connections close.
    for adapter in _zocket_adapters.registered():
        if adapter.finish(signum, deadline):
            return
    if not _zocket_adapters.busy():
        _die(signum)
    # The main thread may be the one that must finish what was taken: it writes the
    # answers (waitress's loop) or hands the connection it just took to a worker
    # (cheroot's), and this handler interrupted it. So the wait runs beside it, and
    # the handler returns at once. _thread, not threading: threading's start takes
    # locks the interrupted code may hold.
    if not _waiting[0]:
        _waiting[0] = True
        _thread.start_new_thread(_die_when_drained, (signum, deadline))


_waiting = [False]  # a thread waits for the connections taken (see _default_term)


def _die_when_drained(signum, deadline):
    try:
        _zocket_adapters.drain(deadline)
    finally:
        die_from_thread(signum)


def when_idle(call_later, deadline, then, *args):
    """``then(*args)`` once no connection taken is open, or by ``deadline``; looked at
    again through ``call_later`` (an event loop's, which serves on meanwhile)."""
    if _zocket_adapters.busy() and time.monotonic() < deadline:
        call_later(_POLL, when_idle, call_later, deadline, then, *args)
    else:
        then(*args)


def die_when_idle(loop, signum, deadline):
    """In ``loop``, which serves on meanwhile: die once no connection taken is open."""
    when_idle(loop.call_later, deadline, _die, signum)


_finished = set()


def die_from_thread(signum):
    """From a thread of an adapter's: the process may die of ``signum`` now.

    signal.signal() works in the main thread only, so the signal goes to the process
    again and the main thread's handler (``_default_term``) ends it.
    """
    _finished.add(signum)
    os.kill(os.getpid(), signum)


def _die(signum):
    _original_signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached: the default action ends the process


# A reloader parent (Django's, werkzeug's) waits in subprocess for the child that serves,
# and its stop handler raises SystemExit there: subprocess then SIGKILLs the child, with the
# requests it had taken, in the midst of the drain that the same signal began in it (zocket
# signals the whole process group). So once this process was told to stop, killing a child
# of its own process group first gives it the time zocket gives the generation.
_stop_deadline = [None]  # time.monotonic() by which this process was told to be gone


def _told_to_stop():
    if _stop_deadline[0] is None:
        _stop_deadline[0] = time.monotonic() + stop_timeout()


def spare_child(popen, expired):
    """Before ``popen`` is killed: wait for it if it was told to stop with this process.

    ``expired`` is the exception ``popen.wait`` raises on its timeout.
    """
    deadline = _stop_deadline[0]
    if deadline is None or popen.returncode is not None:
        return
    try:
        if os.getpgid(popen.pid) != os.getpgrp():
            return  # its own group: zocket's signal did not reach it
    except OSError:
        return
    try:
        popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    except expired:
        pass


def stop_timeout():
    """Seconds zocket gives a generation between its stop signal and SIGKILL."""
    try:
        return float(os.environ.get(_zocket_protocol.STOP_TIMEOUT, ""))
    except ValueError:
        return _zocket_protocol.DEFAULT_STOP_TIMEOUT


install()
