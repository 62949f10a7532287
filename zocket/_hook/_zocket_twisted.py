"""The adapter for Twisted's own reactors (``twist``, twisted.web); standard library only.

Twisted's stop handlers (``sigTerm``, ``sigInt``) stop the reactor, and a
stopping reactor disconnects every connection it holds: one it accepted just
before the signal, whose request it had not read yet, is closed unanswered,
and so is one whose answer a WSGI thread is still computing. Its listening
port also stays in the reactor's poller until then, and the held socket stays
readable (what is queued there is the other generation's), so each turn of the
reactor would try to accept again.

So a reactor that accepted from a held socket counts as serving it, and there:

- its stop handler runs in the reactor once every connection it took from a
  held socket is closed (answered), looked at GRACE seconds after the signal
  and every POLL after that, for at most half the stop timeout (then it runs
  anyway, and disconnects what is left: idle keep-alive connections, say);
- a held socket's accept while stopping takes that port out of the reactor's
  poller instead of letting the reactor spin on it (or sleep, the core's
  fallback, which would hold up the answers it owes).

Only in the process and the thread where that reactor runs: a fork child
inherits the record of a reactor that will never run there, and a reactor in
another thread would run a handler meant for the main one. Reactors built on
asyncio (daphne's) are the asyncio adapter's: its loop is the one that runs
there.
"""

import os
import sys
import time

import _zocket_adapters
import _zocket_signals

_serving = set()  # (pid, reactor): the reactor accepted from a held socket in that process


def _reactor():
    """The installed reactor if it runs in this thread and is not asyncio's, else None.

    Twisted installs its reactor object in place of the module
    ``twisted.internet.reactor``; nothing is installed before a server imports it.
    """
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return None
    if hasattr(reactor, "_asyncioEventloop"):
        return None
    threadable = sys.modules.get("twisted.python.threadable")
    if threadable is None or not threadable.isInIOThread():
        return None
    return reactor


def _serving_here():
    """The reactor running in this thread, if it serves a held socket in this process."""
    reactor = _reactor()
    if reactor is None or (os.getpid(), id(reactor)) not in _serving:
        return None
    return reactor


class _Twisted(_zocket_adapters.Adapter):
    order = 40

    def on_accept(self, sock):
        reactor = _reactor()
        if reactor is not None:
            _serving.add((os.getpid(), id(reactor)))

    def refuse(self, sock):
        reactor = _serving_here()
        if reactor is None:
            return False
        # The reader is twisted's port, which keeps the socket object it accepts on.
        ports = [r for r in reactor.getReaders() if getattr(r, "socket", None) is sock]
        for port in ports:
            reactor.removeReader(port)
        return bool(ports)

    def defer(self, handler, signum, frame, own, deferrable):
        reactor = _serving_here()
        if not (deferrable and own) or reactor is None:
            return False
        deadline = time.monotonic() + _zocket_signals.stop_timeout() / 2
        # callFromThread: the one entry Twisted's own signal handlers use, safe between
        # any two bytecodes of the reactor.
        reactor.callFromThread(
            reactor.callLater, _zocket_signals.GRACE,
            _zocket_signals.when_idle, reactor.callLater, deadline, handler, signum, None,
        )
        return True


_zocket_adapters.register(_Twisted())
