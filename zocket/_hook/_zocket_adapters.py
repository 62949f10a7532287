"""What a server needs from the hook beyond adoption, behind one interface; standard library only.

The core (``_zocket_hook``, ``_zocket_held``) makes a bind of a held address
adopt the held socket and names no server. What a family of servers needs besides (stop
taking connections the moment a stop signal comes, say whether a connection
it took is still open, put its own stop off until it has read what it took,
stop gracefully) is an ``Adapter``, in a module of its own that registers it
here. An adapter module is imported only once this process imports its
server's module (``ADAPTERS``), through an import finder that finds nothing
itself and patches a module right after it executed: a process that never
serves pays for no adapter. The core and the stop handling
(``_zocket_signals``) loop over ``registered()``.
"""

import os
import sys
import time

#: A module of the server, and the adapter module imported once this process imports it.
ADAPTERS = {
    "socketserver": "_zocket_socketserver",
    "asyncio": "_zocket_asyncio",
    "uvloop": "_zocket_uvloop",
    "granian": "_zocket_granian",
    "twisted.internet.base": "_zocket_twisted",
}
#: How often a drain looks whether the connections taken so far are closed.
POLL = 0.02


class Adapter:
    """What one family of servers needs beyond adoption; each method does nothing by default.

    ``order`` decides who is asked first where the first answer wins (``defer``,
    ``finish``): the more specific adapter (one whose server reads connections
    in native threads) before the general one (any asyncio loop).
    """

    order = 50
    #: Modules whose call of fileno() on a held socket means "waiting for connections on it".
    waiters = ()

    def stop_accepting(self):
        """A stop signal came: take nothing more from held sockets here; whether any are."""
        return False

    def busy(self):
        """Whether a connection taken from a held socket is still open in this process."""
        return False

    def on_accept(self, sock):
        """accept() on the held socket object ``sock`` begins.

        Returns a guard whose ``take()`` and ``handed_on()`` bracket the taking of
        a connection in this thread, or None.
        """

    def refuse(self, sock):
        """accept() while stopping: keep the caller from spinning; whether this adapter did."""
        return False

    def may_defer(self, handler):
        """Whether the app's stop ``handler``, being installed, may be put off by ``defer``."""
        return True

    def defer(self, handler, signum, frame, own, deferrable):
        """Run the app's stop handler once what was taken is read; whether this adapter did.

        ``own``: the handler was installed by this process (not inherited over a
        fork); ``deferrable``: every adapter's ``may_defer`` said yes.
        """
        return False

    def finish(self, signum, deadline):
        """SIGTERM at its default: die once idle, by ``deadline``; whether this adapter arranged it."""
        return False

    def resend(self):
        """Whether a fork child still running its parent's stop handler gets the signal again
        once it installs its own (the parent's handler means nothing to it)."""
        return False


_registered = []


def register(adapter):
    """Ask ``adapter`` from now on (once per adapter)."""
    if adapter not in _registered:
        _registered.append(adapter)
        _registered.sort(key=lambda a: a.order)


def registered():
    """The registered adapters, in ``order``."""
    return tuple(_registered)


def stop_accepting():
    """Tell every adapter to stop accepting; whether any holds a socket here."""
    answers = [adapter.stop_accepting() for adapter in _registered]
    return any(answers)


def busy():
    """Whether any adapter still has a connection open that it took from a held socket."""
    return any(adapter.busy() for adapter in _registered)


def drain(deadline):
    """Wait until no connection taken is open, or ``deadline`` (time.monotonic())."""
    while time.monotonic() < deadline and busy():
        time.sleep(POLL)


def install():
    """Import each adapter module once its server's module is imported (now, if it is)."""
    when_imported({name: _importer(adapter) for name, adapter in ADAPTERS.items()})


def _importer(adapter_module):
    def load(_module):
        __import__(adapter_module)

    return load


# --- patching a module as it is imported -------------------------------------------------


def when_imported(patches):
    """Call ``patches[name](module)`` for each module, now or once this process imports it."""
    for name, patch in patches.items():
        if name in sys.modules:
            patch(sys.modules[name])
        else:
            _FINDER.waiting.setdefault(name, []).append(patch)
    if _FINDER.waiting and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


class _Finder:
    """Finds nothing itself: wraps the loaders of the modules it waits for."""

    def __init__(self):
        self.waiting = {}

    def find_spec(self, name, path=None, target=None):
        if name not in self.waiting:
            return None
        for finder in list(sys.meta_path):  # the ones after this: the module's own
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            # The patches stay waiting until the module is executed: a spec may be
            # asked for and never used (runpy's -m looks a package up, then imports it).
            spec.loader = _PatchingLoader(spec.loader, self.waiting)
        return spec


_FINDER = _Finder()


class _PatchingLoader:
    def __init__(self, loader, waiting):
        self._loader = loader
        self._waiting = waiting

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        for patch in self._waiting.pop(module.__name__, ()):
            patch(module)

    def __getattr__(self, name):  # get_source, is_package, ...: the real loader's
        return getattr(self._loader, name)


def wrap(cls, name, make):
    """Replace ``cls.name`` by ``make(original)``, once; whether there was one to wrap."""
    original = getattr(cls, name, None) if isinstance(cls, type) else None
    if original is None:
        return False
    if not wrapped(original):
        wrapper = make(original)
        wrapper._zocket = True
        wrapper.__wrapped__ = original
        setattr(cls, name, wrapper)
    return True


def wrapped(function):
    """Whether ``function`` is one of the hook's wrappers."""
    return getattr(function, "_zocket", False)


def connections_open(ports):
    """Whether this process has a TCP connection open on one of ``ports`` (local side).

    For servers that accept in native code, where the hook never sees a
    connection object: only this process's own sockets are looked at (a
    connection is a socket that does not listen, whose local port is a held
    one), so the cost follows its connections, not the machine's.
    """
    if not ports:
        return False
    import socket

    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:["):
                continue
            probe = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        try:
            if probe.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                continue
            if probe.getsockname()[1] in ports:
                probe.getpeername()  # connected (OSError otherwise: not one of them)
                return True
        except OSError:
            continue
        finally:
            probe.close()
    return False
