"""Servers that accept in native code (granian's Rust, uvloop's libuv); standard library only.

The hook cannot see such a server call ``bind()`` or ``accept()``: it reaches
them through their Python front, patched as the module is imported, and it
counts the connections they hold from this process's own sockets.
"""

import os
import socket
import sys


def when_imported(patches):
    """Call ``patches[name](module)`` for each module, now or once this process imports it."""
    waiting = {}
    for name, patch in patches.items():
        if name in sys.modules:
            patch(sys.modules[name])
        else:
            waiting[name] = patch
    if waiting:
        sys.meta_path.insert(0, _Finder(waiting))


class _Finder:
    """Finds nothing itself: wraps the loaders of the modules it was given."""

    def __init__(self, patches):
        self._patches = patches

    def find_spec(self, name, path=None, target=None):
        patch = self._patches.get(name)
        if patch is None:
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
            spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


class _PatchingLoader:
    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._patch(module)

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

    Only this process's own sockets are looked at (a connection is a socket that
    does not listen, whose local port is a held one): the cost follows its
    connections, not the machine's.
    """
    if not ports:
        return False
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
