"""Stop signals wait until the main thread has handed on what it accepted; stdlib only.

A server whose loop runs in the main thread (socketserver: ``python -m
http.server``, Django's ``runserver --noreload``, ``flask run --no-reload``)
is stopped by zocket with a signal, and Python runs the handler in the main
thread between two bytecodes. A KeyboardInterrupt raised after accept()
returned but before the request's thread started drops that connection
unanswered; SIGTERM left at its default kills the process together with the
requests its threads are serving. Neither is a choice the app made.

So in a process that adopted a held socket from its main thread, and only for
the two defaults (SIGINT's KeyboardInterrupt, SIGTERM's death):

- a signal that arrives while the main thread holds a connection it took from
  a held socket and has not handed on yet (socketserver's
  ``_handle_request_noblock`` has not returned, or the loop has not come back
  to accept()) is recorded and acted on at the hand-off; a second signal, or a
  second passing, acts at once;
- SIGTERM's default becomes: stop accepting (what is queued waits in the kernel
  for the next generation), let the accepted requests finish (the hook's drain,
  at most a second), then die of SIGTERM as before.

Handlers the app installs itself, before or after, are left alone.
"""

import os
import signal
import sys
import threading

# How long a signal may wait for the hand-off: a server that handles the request
# in the main thread (no ThreadingMixIn) hands on only once it has answered.
_LIMIT = 1.0


class Guard:
    """The main thread's hold on an accepted connection, and the signals waiting on it."""

    def __init__(self, drain):
        self._drain = drain
        self._main = threading.main_thread().ident
        self._actions = {}
        self._pending = None
        self._timer = None
        self.holding = False

    def install(self):
        """Wrap the default stop handlers; False when not on the main thread."""
        if not self.on_main_thread():
            return False
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._actions[signal.SIGINT] = _interrupt
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._actions[signal.SIGTERM] = self._terminate
        for signum in self._actions:
            signal.signal(signum, self._handle)
        _patch_socketserver(self)
        return True

    def on_main_thread(self):
        return threading.get_ident() == self._main

    def handed_on(self):
        """The main thread no longer holds a connection: act on a signal that waited."""
        if not self.on_main_thread():
            return
        self.holding = False
        if self._pending is not None:
            self._act(self._pending, None)

    def _handle(self, signum, frame):
        if self.holding and self._pending is None:
            self._pending = signum
            # Bounded: the same signal comes again after the limit and then acts.
            self._timer = threading.Timer(_LIMIT, os.kill, (os.getpid(), signum))
            self._timer.daemon = True
            self._timer.start()
            return
        self._act(signum, frame)

    def _act(self, signum, frame):
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
        self._actions[signum](signum, frame)

    def _terminate(self, signum, frame):
        self._drain()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)  # not reached: the default action ends the process


def _interrupt(signum, frame):
    signal.default_int_handler(signum, frame)


def _patch_socketserver(guard):
    """socketserver hands a connection on when _handle_request_noblock returns."""
    socketserver = sys.modules.get("socketserver")
    if socketserver is None:
        return
    original = socketserver.BaseServer._handle_request_noblock

    def _handle_request_noblock(self):
        try:
            original(self)
        finally:
            guard.handed_on()

    socketserver.BaseServer._handle_request_noblock = _handle_request_noblock
