"""The adapter for Twisted's own reactors (``twist``, twisted.web); standard library only.

Twisted's stop handlers (``sigTerm``, ``sigInt``) stop the reactor, and a
stopping reactor disconnects every connection it holds: one it accepted just
before the signal, whose request it had not read yet, is closed unanswered.
Its listening port also stays in the reactor's poller until then, and the
held socket stays readable (what is queued there is the other generation's),
so each turn of the reactor would try to accept again.

So a reactor that accepted from a held socket counts as serving it, and there:

- its stop handler runs in the reactor GRACE seconds after the signal (the
  asyncio adapter's rule), by which time the reactor has read and answered
  the requests of the connections it took just before;
- a held socket's accept while stopping takes that port out of the reactor's
  poller instead of letting the reactor spin on it (or sleep, the core's
  fallback, which would hold up the answers it owes).

Reactors built on asyncio (daphne's) are the asyncio adapter's: its loop is
the one that runs there.
"""

import sys

import _zocket_adapters
import _zocket_signals

_serving = []  # the reactor that accepted from a held socket (at most one per process)


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
    if threadable is not None and not threadable.isInIOThread():
        return None
    return reactor


class _Twisted(_zocket_adapters.Adapter):
    order = 40

    def on_accept(self, sock):
        reactor = _reactor()
        if reactor is not None and reactor not in _serving:
            _serving.append(reactor)

    def refuse(self, sock):
        reactor = _reactor()
        if reactor is None or reactor not in _serving:
            return False
        # The reader is twisted's port, which keeps the socket object it accepts on.
        ports = [r for r in reactor.getReaders() if getattr(r, "socket", None) is sock]
        for port in ports:
            reactor.removeReader(port)
        return bool(ports)

    def defer(self, handler, signum, frame, own, deferrable):
        if not (deferrable and own and _serving):
            return False
        reactor = _serving[0]
        # callFromThread: the one entry Twisted's own signal handlers use, safe between
        # any two bytecodes of the reactor.
        reactor.callFromThread(reactor.callLater, _zocket_signals.GRACE, handler, signum, None)
        return True


_zocket_adapters.register(_Twisted())
