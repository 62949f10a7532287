"""zocket's hook in a Python process of a generation: the start-up, and what it patches.

Runs inside the user's interpreter, possibly another venv or Python version
than zocket's, so it imports nothing but the standard library. It names no
server: what a family of servers needs beyond adoption is an adapter
(``_zocket_adapters``), imported only when that server is.

Words used throughout the hook:

- a *handed-over socket* is one of the listening sockets zocket gave this
  process (``ZOCKET_HOOK_FDS``: fd and inode; the inode is checked, since an
  fd number may have been closed and reused on the way down);
- to *adopt* is to turn one of the app's socket objects into a copy of a
  handed-over socket; the result is a *held socket* (its class is
  ``Held<the app's class>``, ``_zocket_held``).

At start-up nothing is patched but the import system, and nothing is
imported but this module, the registry and the protocol: each patch is made
when the process imports the module it patches. ``socket``:
``socket.socket.bind``, ``socket.socket.__init__`` and ``socket.fromfd`` go
through ``_zocket_held``; ``signal``: stop signals are wrapped
(``_zocket_signals``); ``subprocess``: a child started with
``close_fds=True`` (a reloader's server) still gets the handed-over fds, and a
process told to stop kills no child that was told with it before the child
could finish (``_zocket_signals.spare_child``). A process that never serves
pays almost nothing for the hook.
"""

import os

import _zocket_adapters
import _zocket_protocol

#: ``_zocket_held``, once this process imported socket.
_held = None


def install():
    """At start-up: patch each module when (if ever) this process imports it."""
    _zocket_adapters.when_imported(
        {"socket": _on_socket, "signal": _on_signal, "subprocess": _on_subprocess}
    )
    _zocket_adapters.install()


def _on_signal(_module):
    # Stop signals are wrapped even where no fd was handed over (a multiprocessing
    # child started by spawn): a held socket may come later, pickled, and by then a
    # compiled event loop may keep the signal.signal it found when it was
    # imported. Until this process holds a socket the wrapper only calls the app's handler.
    import _zocket_signals  # noqa: F401 (importing it installs it)


def _on_socket(module):
    global _held
    import _zocket_held

    _held = _zocket_held
    if _held.start(module):
        module.socket.bind = _bind
        module.fromfd = _fromfd
        module.socket.__init__ = _init


def _bind(self, address):
    if not _held.bind(self, address):
        _held.originals["bind"](self, address)


def _init(self, family=-1, type=-1, proto=-1, fileno=None):
    if fileno is None or fileno not in _held.handed_fds:
        # every socket the process makes passes here: keep it one set look-up
        _held.originals["init"](self, family, type, proto, fileno)
    else:
        _held.init(self, family, type, proto, fileno)


def _fromfd(fd, family, type, proto=0):
    return _held.fromfd(fd, family, type, proto)


def _on_subprocess(module):
    """A child started with close_fds=True (the default) gets the handed-over fds too; a
    child told to stop together with this process is not killed before it could."""
    original_kill = module.Popen.kill

    def kill(self):
        import _zocket_signals

        _zocket_signals.spare_child(self, module.TimeoutExpired)
        original_kill(self)  # nothing to kill if the child exited meanwhile

    module.Popen.kill = kill
    original = module.Popen.__init__

    def __init__(self, *args, **kwargs):
        if kwargs.get("close_fds", True):
            import _zocket_held

            alive = [fd for fd, _inode in _zocket_held.handed_pairs()]
            if alive:
                kwargs["pass_fds"] = tuple(sorted(set(kwargs.get("pass_fds", ())) | set(alive)))
        original(self, *args, **kwargs)

    if os.environ.get(_zocket_protocol.HELD_FDS):
        module.Popen.__init__ = __init__
