"""Load the compiled cffi module, and refuse one built for another zocket version.

The raw layer: `ffi` and `lib` keep C names and C conventions (-1 and errno).
`zocket.libc` is the typed, exception-raising layer on top.
"""

from __future__ import annotations

from ._version import __version__

_REBUILD = (
    "reinstall zocket (pip install --force-reinstall zocket), or, in a source "
    "checkout, rebuild in place: python zocket/_build_libc.py"
)

try:
    from ._libc_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"zocket's compiled glibc bindings are missing ({exc}); {_REBUILD}") from exc

_built_for = ffi.string(lib.zocket_build_version()).decode()
if _built_for != __version__:  # pragma: no cover - depends on the install
    raise ImportError(
        f"zocket's compiled glibc bindings were built for zocket {_built_for}, "
        f"this is zocket {__version__}; {_REBUILD}"
    )

__all__ = ["ffi", "lib"]
