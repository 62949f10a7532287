"""LISTEN_FDNAMES: the names systemd gives the fds it hands over.

Standard library only: the app side imports this inside the user's interpreter.
systemd's rule (fdname_is_valid) is printable ASCII without ':', 1 to 255
characters, because the names travel colon-separated in one variable.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_NAME_LENGTH = 255
#: What sd_listen_fds_with_names() reports when LISTEN_FDNAMES is absent.
UNKNOWN = "unknown"


def is_valid_fdname(name: str) -> bool:
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and name.isascii()
        and name.isprintable()
        and ":" not in name
    )


def encode_fdnames(names: Iterable[str]) -> str:
    names = list(names)
    for name in names:
        if not is_valid_fdname(name):
            raise ValueError(
                f"invalid fd name {name!r}: 1-{MAX_NAME_LENGTH} printable ASCII characters, no ':'"
            )
    return ":".join(names)


def decode_fdnames(value: str | None, count: int) -> list[str]:
    """Names for `count` fds; missing or surplus entries are treated as systemd does.

    sd_listen_fds_with_names() fails when the count of names differs from
    LISTEN_FDS; a tool reading them should not crash a server, so missing
    names read as "unknown" and surplus ones are dropped.
    """
    names = value.split(":") if value else []
    names = [n if n else UNKNOWN for n in names[:count]]
    names.extend([UNKNOWN] * (count - len(names)))
    return names
