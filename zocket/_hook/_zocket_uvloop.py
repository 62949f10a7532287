"""uvloop accepts in libuv: stop its servers on a held socket when told to stop; stdlib only.

uvloop (what ``uvicorn --loop auto`` picks when it is installed, as with
``uvicorn[standard]``; hypercorn's ``-k uvloop``) never calls the socket
object's ``accept()``, so the hook's own stop (held sockets refuse to accept)
does not reach it: a generation told to stop went on taking connections until
its server's shutdown, which closes those it has not read a request from yet.

So ``uvloop.Loop.create_server`` is wrapped when uvloop is imported: a server
made on a held socket is remembered, and a stop signal closes it at once, in
its loop (what the server's own shutdown does a moment later anyway; closing
it is local to this process: the held socket stays open in zocket and the
other generations). Its loop counts as serving a held socket, so the
server's stop handler is deferred by GRACE (``_zocket_signals``), and the
connections it holds are counted from this process's sockets.
"""

import weakref

import _zocket_native
import _zocket_signals

_is_held = [None]  # _zocket_hook's test: is this socket object a held one?
_servers = weakref.WeakKeyDictionary()  # uvloop server on a held socket -> its loop
_ports = set()  # the local ports of those sockets


def install(is_held):
    _is_held[0] = is_held
    _zocket_native.when_imported({"uvloop": _patch})


def _patch(module):
    def make(original):
        async def create_server(self, *args, **kwargs):
            server = await original(self, *args, **kwargs)
            sock = kwargs.get("sock")
            if sock is not None and _is_held[0](sock):
                _servers[server] = self
                _ports.add(sock.getsockname()[1])
                _zocket_signals.serving_loops.add(self)
            return server

        return create_server

    _zocket_native.wrap(getattr(module, "Loop", None), "create_server", make)


def stop_accepting():
    """Close this process's uvloop servers on held sockets (in their loops); whether any."""
    servers = list(_servers.items())
    for server, loop in servers:
        try:
            loop.call_soon_threadsafe(server.close)
        except RuntimeError:  # the loop is closed: so is its server
            pass
    return bool(servers) or bool(_ports)


def busy():
    """Whether a connection a uvloop server took from a held socket is still open here."""
    return _zocket_native.connections_open(_ports)
