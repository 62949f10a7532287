"""The adapter for asyncio event loops (uvicorn, hypercorn, aiohttp, tornado); standard library only.

An asyncio server that gets a stop signal goes on taking connections until
its shutdown begins, and uvicorn's and hypercorn's shutdowns close the
connections accepted but not read from yet, as if they were idle keep-alive
ones: a connection accepted just before the signal was closed unanswered
(under load, about one request in forty restarts).

So a loop that accepted from a held socket counts as serving it, and there:

- a stop handler installed with ``signal.signal`` (uvicorn, asyncio.run) runs
  in the loop GRACE seconds after the signal, by which time the loop has read
  the requests of the connections it took just before: they are in progress,
  and a graceful shutdown finishes them;
- ``loop.add_signal_handler``'s callbacks (hypercorn, aiohttp) are put off the
  same way (its Python-level handler is a no-op, and the loop acts later);
- SIGTERM left at its default waits in the loop, which serves on, until the
  connections taken are closed;
- a held socket's accept while stopping takes the listener out of the loop
  instead of letting the loop spin on a socket that stays readable (the
  connections queued there are the other generation's).

A loop run for a moment elsewhere (asyncio.run in a sync view) has not
accepted and may be gone by then: its handlers run at once.
"""

import sys
import time
import weakref

import _zocket_adapters
import _zocket_signals

#: Event loops that accepted from a held socket (or serve one through uvloop).
serving_loops = weakref.WeakSet()
_removed = set()  # (loop, fd) whose accept callback a stop removed


def running_loop():
    """The asyncio loop running in this thread, or None."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Asyncio(_zocket_adapters.Adapter):
    order = 30
    waiters = ("asyncio.selector_events", "asyncio.base_events")

    def on_accept(self, sock):
        loop = running_loop()
        if loop is not None:
            serving_loops.add(loop)

    def refuse(self, sock):
        loop = running_loop()
        if loop is None:
            return False
        import socket

        fd = socket.socket.fileno(sock)
        if (loop, fd) not in _removed:
            # asyncio's accept callback: stop it being called (the listener stays
            # readable for the other generation) instead of spinning the loop.
            loop.remove_reader(fd)
            _removed.add((loop, fd))
        else:
            # A loop that registers the fd again after each refusal (loop.sock_accept).
            time.sleep(0.01)
        return True

    def may_defer(self, handler):
        if not _is_asyncio_noop(handler):
            return True
        _patch_asyncio_loops()  # the loop's own callbacks are put off instead
        return False

    def defer(self, handler, signum, frame, own, deferrable):
        loop = running_loop() if deferrable else None
        if loop is None or loop not in serving_loops:
            return False
        try:
            # Through the loop's thread-safe entry: a signal handler may run between
            # any two bytecodes of the loop itself.
            loop.call_soon_threadsafe(
                loop.call_later, _zocket_signals.GRACE, handler, signum, None
            )
        except RuntimeError:  # the loop is closing: nothing left to read
            return False
        return True

    def finish(self, signum, deadline):
        loop = running_loop()
        if loop is None or loop not in serving_loops:
            return False
        try:
            loop.call_soon_threadsafe(_zocket_signals.die_when_idle, loop, signum, deadline)
        except RuntimeError:  # the loop is closing: nothing will answer through it
            return False
        return True


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
        if (
            _zocket_signals.is_stop_signal(sig)
            and _zocket_adapters.stop_accepting()
            and self in serving_loops
        ):
            self.call_later(_zocket_signals.GRACE, original, self, sig)
        else:
            original(self, sig)

    cls._zocket_handle_signal = original
    cls._handle_signal = _handle_signal


_zocket_adapters.register(_Asyncio())
