"""The adapter for socketserver loops in the main thread; standard library only.

A socketserver running in the main thread (``python -m http.server``,
Django's ``runserver --noreload``, ``flask run --no-reload``) is stopped by
zocket with a signal, and Python runs the handler in the main thread between
two bytecodes. A KeyboardInterrupt raised after accept() returned but before
the request's thread started drops that connection unanswered; SIGTERM left
at its default kills the process together with the requests its threads are
serving. Neither is a choice the app made.

So once such a loop serves a held socket, and only for the two defaults still
in place at that moment (SIGINT's KeyboardInterrupt, SIGTERM's death):

- a signal that arrives while the main thread holds a connection it took from
  a held socket and has not handed on yet (``_handle_request_noblock`` has not
  returned) is recorded and acted on at the hand-off; at most a second later
  a watchdog sends it again and it acts then; a second signal acts at once;
- SIGTERM's default becomes: stop accepting (what is queued waits in the kernel
  for the next generation), let the accepted requests finish (the core's drain,
  at most a second), then die of SIGTERM.

Handlers the app installs itself, before or after, are left alone. Nothing here
starts a thread or takes a lock inside a signal handler: the watchdog is
started beforehand and told through a SimpleQueue, whose put() is reentrant.
"""


import os
import queue
import signal
import sys
import threading

import _zocket_adapters
import _zocket_held

# How long a signal may wait for the hand-off: a server that handles the request
# in the main thread (no ThreadingMixIn) hands on only once it has answered.
_LIMIT = 1.0


class Guard:
    """The main thread's hold on an accepted connection, and the signal waiting on it."""

    def __init__(self, drain):
        self._drain = drain
        self._main = threading.main_thread().ident
        self._actions = {}
        self._taken = False
        self._pending = None
        self._resent = False
        self._alarms = None

    def install(self):
        """Wrap the defaults still in place; False, with nothing changed, if none is."""
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._actions[signal.SIGINT] = signal.default_int_handler
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._actions[signal.SIGTERM] = self._terminate
        if not self._actions:
            return False
        self._start_watchdog()
        for signum in self._actions:
            signal.signal(signum, self._handle)
        os.register_at_fork(after_in_child=self._forked)
        return True

    def on_main_thread(self):
        return threading.get_ident() == self._main

    def take(self):
        """The main thread is about to take a connection: signals wait from now on."""
        self._taken = True

    def handed_on(self):
        """The main thread no longer holds a connection: act on a signal that waited."""
        self._taken = False
        if self._pending is not None:
            self._act(self._pending, None)

    def _handle(self, signum, frame):
        if self._resent:  # the watchdog's: act on what waited, unless the hand-off did
            self._resent = False
            if self._pending is not None:
                self._act(self._pending, frame)
            return
        if self._taken and self._pending is None:
            self._pending = signum
            self._alarms.put(signum)
            return
        self._act(signum, frame)

    def _act(self, signum, frame):
        self._pending = None
        self._alarms.put(None)  # disarm the watchdog
        self._actions[signum](signum, frame)

    def _terminate(self, signum, frame):
        try:
            self._drain()
        finally:  # even if a KeyboardInterrupt cuts the drain short: SIGTERM ends it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            os._exit(128 + signum)  # not reached: the default action ends the process

    def _start_watchdog(self):
        self._alarms = queue.SimpleQueue()
        threading.Thread(target=self._watch, name="zocket-stop-watchdog", daemon=True).start()

    def _watch(self):
        while True:
            signum = self._alarms.get()
            if signum is None:
                continue  # a disarm with nothing armed
            try:
                self._alarms.get(timeout=_LIMIT)  # disarmed in time
            except queue.Empty:
                self._resent = True
                os.kill(os.getpid(), signum)

    def _forked(self):
        """A forked child (ForkingMixIn) holds nothing yet and has no watchdog thread."""
        self._taken = False
        self._pending = None
        self._resent = False
        self._start_watchdog()


_guard = [None]  # the Guard, once a socketserver loop served from the main thread
_guard_tried = [False]
_serving = [False]  # the main thread is in socketserver's _handle_request_noblock


def _patch(module):
    """Wrap socketserver's accept-and-dispatch step."""

    def make(original):
        def _handle_request_noblock(self):
            guard = _main_thread_guard() if _zocket_held.adopted_here() else None
            if guard is None:
                return original(self)
            _serving[0] = True
            try:
                return original(self)
            finally:
                _serving[0] = False
                guard.handed_on()

        return _handle_request_noblock

    _zocket_adapters.wrap(module.BaseServer, "_handle_request_noblock", make)


def _main_thread_guard():
    """The stop guard when called on the main thread; set up the first time (lazily: an
    app that installs its own handlers before serving keeps them)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if not _guard_tried[0]:
        _guard_tried[0] = True
        try:
            guard = Guard(_zocket_held.drain)
            if guard.install():
                _guard[0] = guard
        except Exception as exc:  # noqa: BLE001 (the server must run even if the guard cannot)
            sys.stderr.write(f"zocket hook: stop guard disabled: {type(exc).__name__}: {exc}\n")
    return _guard[0]


class _SocketServer(_zocket_adapters.Adapter):
    order = 40

    def on_accept(self, sock):
        """The main thread's accept in a serving loop: the guard brackets the taking."""
        guard = _guard[0]
        if guard is not None and _serving[0] and guard.on_main_thread():
            return guard
        return None


_zocket_adapters.register(_SocketServer())
_zocket_adapters.when_imported({"socketserver": _patch})
