"""SIGINT between exec and the holder's own handlers: recorded, not raised.

Python's default SIGINT handler raises KeyboardInterrupt wherever the main
thread happens to be, and for the first ~60 ms of zocket that is inside an
import: a Ctrl-C (or a supervisor's SIGINT) then printed a traceback and could
leave half-made state behind. So the entry point's first statement installs
a handler that only records the signal; the CLI, once its imports are done
and its sockets are open, asks whether one arrived (then it closes them and
exits 130) and puts Python's default handler back. The price: a Ctrl-C while a
host name is being resolved acts only when the resolver returns. Standard library only, and
imported before anything else of zocket's, so the window stays as short as
the interpreter's own start.
"""

from __future__ import annotations

import signal
from types import FrameType

_received: list[int] = []


def _record(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)


def hold_interrupts() -> None:
    """Record SIGINT instead of raising, unless it is ignored (``nohup``, ``&`` in sh)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _record)


def release_interrupts() -> bool:
    """Put the default handler back; whether a SIGINT arrived while it was held."""
    if signal.getsignal(signal.SIGINT) is _record:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return bool(_received)
