"""The adapter for uvloop, which accepts in libuv; standard library only.

uvloop (what ``uvicorn --loop auto`` picks when it is installed, as with
``uvicorn[standard]``; hypercorn's ``-k uvloop``) never calls the socket
object's ``accept()``, so the core's stop (held sockets refuse to accept)
does not reach it: a generation told to stop would go on taking connections
until its server's shutdown, which closes those it has not read a request
from yet.

So ``uvloop.Loop.create_server`` is wrapped: a server made on a held socket
is remembered, and a stop signal closes it at once, in its loop (what the
server's own shutdown does a moment later anyway; closing it is local to
this process: the held socket stays open in zocket and the other
generations). Its loop counts as serving a held socket, so the asyncio
adapter puts the server's stop handler off by GRACE, and the connections it
holds are counted from this process's sockets.
"""

import weakref

import _zocket_adapters
import _zocket_asyncio
import _zocket_held

_servers = weakref.WeakKeyDictionary()  # uvloop server on a held socket -> its loop
_ports = set()  # the local ports of those sockets


def _patch(module):
    def make(original):
        async def create_server(self, *args, **kwargs):
            server = await original(self, *args, **kwargs)
            sock = kwargs.get("sock")
            if sock is not None and _zocket_held.is_held(sock):
                _servers[server] = self
                _ports.add(sock.getsockname()[1])
                _zocket_asyncio.serving_loops.add(self)
            return server

        return create_server

    _zocket_adapters.wrap(getattr(module, "Loop", None), "create_server", make)


class _Uvloop(_zocket_adapters.Adapter):
    order = 20

    def stop_accepting(self):
        """Close this process's uvloop servers on held sockets (in their loops)."""
        servers = list(_servers.items())
        for server, loop in servers:
            try:
                loop.call_soon_threadsafe(server.close)
            except RuntimeError:  # the loop is closed: so is its server
                pass
        return bool(servers) or bool(_ports)

    def busy(self):
        return _zocket_adapters.connections_open(_ports)


_zocket_adapters.register(_Uvloop())
_zocket_adapters.when_imported({"uvloop": _patch})
