"""What the holder and the code it injects into a generation say to each other.

The one place for the names and formats both sides use: the holder imports
this module as ``zocket._hook._zocket_protocol``, the hook imports it from
the directory zocket puts on a generation's PYTHONPATH. It runs in the
user's interpreter too, so it imports nothing at run time.

From the holder to every process of a generation, in the environment:

- ``ZOCKET_HOOK_FDS``: the held sockets as the server sees them,
  ``FD:INODE,FD:INODE``. A descendant checks the inode, since an fd number
  may have been closed and reused for something else on the way down.
- ``ZOCKET_STOP_SIGNAL``: the number of ``--stop-signal``.
- ``ZOCKET_STOP_TIMEOUT``: ``--stop-timeout`` in seconds; after it, SIGKILL.
- ``ZOCKET_GENERATION``: the generation's number, for the app's own logs.
- ``ZOCKET_COPY``: which of the ``--copies`` slots the generation runs in
  (1 to N; always 1 without ``--copies``), for a copy's own logs or ports.

From a generation's process to the holder, a datagram on ``NOTIFY_SOCKET``
(the sd_notify socket, one per generation): ``ZOCKET_WAITING=FD`` says the
process now waits for connections on held fd FD, zocket's sign that the
generation is ready; ``READY=1`` is the app's own sd_notify.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: this runs at every interpreter start
    from collections.abc import Iterable

HELD_FDS = "ZOCKET_HOOK_FDS"
STOP_SIGNAL = "ZOCKET_STOP_SIGNAL"
STOP_TIMEOUT = "ZOCKET_STOP_TIMEOUT"
GENERATION = "ZOCKET_GENERATION"
COPY = "ZOCKET_COPY"
NOTIFY_SOCKET = "NOTIFY_SOCKET"

#: Seconds an old generation has between the stop signal and SIGKILL.
DEFAULT_STOP_TIMEOUT = 10.0

_WAITING = "ZOCKET_WAITING="


def format_held_fds(pairs: "Iterable[tuple[int, int]]") -> str:
    """``[(3, inode), ...]`` as the value of ZOCKET_HOOK_FDS."""
    return ",".join(f"{fd}:{inode}" for fd, inode in pairs)


def parse_held_fds(value: str) -> "list[tuple[int, int]]":
    """ZOCKET_HOOK_FDS as ``[(fd, inode), ...]``; malformed items are skipped."""
    pairs = []
    for item in value.split(","):
        fd_text, _, inode_text = item.partition(":")
        try:
            pairs.append((int(fd_text), int(inode_text)))
        except ValueError:
            continue
    return pairs


def waiting_message(fd: int) -> str:
    """What a process sends once it waits for connections on held fd ``fd``."""
    return f"{_WAITING}{fd}"


def parse_waiting(message: str) -> "str | None":
    """The held fd a notify datagram says a process waits on, or None."""
    for line in message.splitlines():
        if line.startswith(_WAITING):
            return line[len(_WAITING):]
    return None


def is_ready(message: str) -> bool:
    """Whether a notify datagram carries the app's own ``READY=1``."""
    return "READY=1" in message.splitlines()
