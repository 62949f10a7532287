"""The addresses the CLI takes: parsing, validation and formatting.

Standard library only, and no import of the compiled part, so that the CLI can
report a bad argument before anything else is loaded.

Forms accepted (see `parse_address` and `parse_listen`)::

    HOST:PORT   [V6]:PORT   [V6%SCOPE]:PORT   :PORT   PORT
    unix:PATH   unix:@ABSTRACT-NAME
    NAME=ADDR   (any of the above, with a LISTEN_FDNAMES name)

The value objects validate and normalise themselves on construction, so that
`str()` of any of them parses back to an equal object: the CLI, the logs and
the environment handed to children can all use the same text.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Final, TypeAlias

from .fdnames import MAX_NAME_LENGTH, is_valid_fdname

__all__ = [
    "DEFAULT_HOST",
    "Address",
    "AddressError",
    "InetAddress",
    "ListenSpec",
    "UnixAddress",
    "parse_address",
    "parse_host",
    "parse_listen",
    "parse_port",
    "url",
]

DEFAULT_HOST: Final = "127.0.0.1"
MAX_PORT: Final = 65535
UNIX_PREFIX: Final = "unix:"
#: sun_path is 108 bytes; keep one for the terminating NUL (filesystem paths)
#: or the leading NUL (abstract names), as unix(7) advises.
MAX_UNIX_PATH_BYTES: Final = 107
MAX_HOST_LENGTH: Final = 253
#: Linux interface names are at most 15 bytes (IFNAMSIZ - 1); numeric scope
#: ids (interface indexes) fit as well.
MAX_SCOPE_LENGTH: Final = 15
#: Characters that make the text before "=" an address rather than a name;
#: a ListenSpec name may not contain them, or its str() would not parse back.
NAME_STOP_CHARS: Final = ":/[@"

_IPV6_HINT: Final = "put an IPv6 address in brackets, e.g. [::1]:8000"
_FORMS_HINT: Final = "expected HOST:PORT, [IPV6]:PORT, :PORT, PORT, unix:PATH or unix:@NAME"
_PORT_RE: Final = re.compile(r"[0-9]+")
_LABEL_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# A last label that inet_aton(3) (and so getaddrinfo) would read as a number:
# "127.1", "0x7f000001" and "010.0.0.1" are IPv4 addresses to libc, not names.
_NUMERIC_LABEL_RE: Final = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
#: Linux forbids "/", ":" and whitespace in interface names; "%" and brackets
#: would break "[V6%SCOPE]:PORT".
_SCOPE_FORBIDDEN: Final = frozenset(" %/:[]")


class AddressError(ValueError):
    """A bad address argument; the message is one line, ready for stderr.

    Every message names the offending text through repr(), which escapes
    newlines and other unprintable characters so the message stays one line.
    """


@dataclass(frozen=True)
class InetAddress:
    """A TCP host and port; the host is stored normalised (see `parse_host`).

    Normalising here (lower-case names, compressed IPv6, no brackets) makes
    equal addresses compare equal, and makes str() parse back to an equal
    object.
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise TypeError(f"port must be an int, not {type(self.port).__name__}")
        if not 0 <= self.port <= MAX_PORT:
            raise AddressError(f"port out of range: {self.port} (0-{MAX_PORT})")
        if not isinstance(self.host, str):
            raise TypeError(f"host must be a str, not {type(self.host).__name__}")
        object.__setattr__(self, "host", parse_host(self.host))

    @property
    def is_ipv6(self) -> bool:
        """Whether the host is an IPv6 literal (it then needs brackets in text)."""
        # Normalised hosts hold ":" only when they are IPv6 literals.
        return ":" in self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class UnixAddress:
    """A unix stream socket: a filesystem path, or a Linux abstract name.

    `path` holds an abstract name without the "@" (the kernel sees a leading
    NUL instead). A filesystem path may not start with "@", since "unix:@x"
    means the abstract name; write "./@x" for such a file.
    """

    path: str
    abstract: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise TypeError(f"path must be a str, not {type(self.path).__name__}")
        what = "abstract socket name" if self.abstract else "unix socket path"
        text = str(self)
        if not self.path:
            raise AddressError(f"empty {what}: {text!r}")
        if "\0" in self.path:
            raise AddressError(f"NUL character in {what}: {text!r}")
        if not self.abstract and self.path.startswith("@"):
            raise AddressError(
                f"unix socket path {self.path!r} starts with '@', which marks an abstract"
                f" name; write {'./' + self.path!r} for a file"
            )
        try:
            size = len(os.fsencode(self.path))
        except UnicodeEncodeError:
            raise AddressError(f"{what} not encodable to bytes: {text!r}") from None
        if size > MAX_UNIX_PATH_BYTES:
            raise AddressError(
                f"{what} too long: {text!r} ({size} bytes, at most {MAX_UNIX_PATH_BYTES})"
            )

    def __str__(self) -> str:
        return f"{UNIX_PREFIX}@{self.path}" if self.abstract else f"{UNIX_PREFIX}{self.path}"


Address: TypeAlias = InetAddress | UnixAddress


@dataclass(frozen=True)
class ListenSpec:
    """One --listen argument: an address and the optional LISTEN_FDNAMES name."""

    address: Address
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.address, (InetAddress, UnixAddress)):
            raise TypeError(
                f"address must be an InetAddress or UnixAddress, not {type(self.address).__name__}"
            )
        if self.name is not None:
            _check_name(self.name, str(self))

    def __str__(self) -> str:
        return str(self.address) if self.name is None else f"{self.name}={self.address}"


def _check_name(name: str, text: str) -> None:
    """Reject names systemd would refuse, or that would not parse back from text."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if not is_valid_fdname(name) or "=" in name or any(c in name for c in NAME_STOP_CHARS):
        raise AddressError(
            f"invalid name {name!r} in {text!r}: 1-{MAX_NAME_LENGTH} printable ASCII"
            f" characters, none of ':', '=', '/', '[', '@'"
        )


def parse_port(text: str) -> int:
    """A port from ASCII decimal digits; signs, spaces and "0x" are refused.

    int() alone would accept " 80", "+80", "8_0" and non-ASCII digits, none
    of which a user means as a port.
    """
    if not _PORT_RE.fullmatch(text):
        raise AddressError(f"invalid port: {text!r}")
    # Length first: int() of thousands of digits is slow or refused outright.
    if len(text.lstrip("0")) > len(str(MAX_PORT)) or int(text) > MAX_PORT:
        raise AddressError(f"port out of range: {text} (0-{MAX_PORT})")
    return int(text)


def parse_host(text: str) -> str:
    """Validate a host and return it as InetAddress stores it.

    IPv4 and IPv6 literals come back in ipaddress's canonical form (IPv6
    compressed, lower case, brackets dropped, %scope kept); names come back in
    lower case, a trailing dot kept since it makes the name absolute.
    """
    if not text:
        raise AddressError("empty host: ''")
    if text.startswith("[") or text.endswith("]"):
        if not (text.startswith("[") and text.endswith("]")):
            raise AddressError(f"unbalanced brackets in host {text!r}")
        return _parse_ipv6(text[1:-1], text)
    if ":" in text:
        return _parse_ipv6(text, text)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    return _parse_hostname(text)


def _parse_ipv6(literal: str, text: str) -> str:
    """The canonical form of an IPv6 literal, with a scope safe to put in brackets."""
    try:
        address = ipaddress.IPv6Address(literal)
    except ValueError:
        raise AddressError(f"invalid IPv6 address: {text!r}") from None
    scope = address.scope_id
    if scope is not None and not (
        len(scope) <= MAX_SCOPE_LENGTH
        and scope.isascii()
        and scope.isprintable()
        and _SCOPE_FORBIDDEN.isdisjoint(scope)
    ):
        raise AddressError(
            f"invalid IPv6 scope {scope!r} in {text!r}: an interface name or index,"
            f" 1-{MAX_SCOPE_LENGTH} printable ASCII characters"
        )
    return str(address)


def _parse_hostname(text: str) -> str:
    """A DNS name in lower case; names libc would read as IPv4 are refused."""
    name = text.removesuffix(".")
    labels = name.split(".")
    if len(name) > MAX_HOST_LENGTH or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise AddressError(f"invalid host name: {text!r}")
    if _NUMERIC_LABEL_RE.fullmatch(labels[-1]):
        raise AddressError(
            f"ambiguous host {text!r}: neither a dotted-quad IPv4 address nor a host name"
        )
    host = text.lower()
    if host == "unix":
        # "unix:PORT" is a relative unix socket path, so this host would not
        # read back; the absolute form names the same host.
        raise AddressError(f"ambiguous host {text!r}: write 'unix.' for the host named unix")
    return host


def parse_address(text: str, default_host: str = DEFAULT_HOST) -> Address:
    """Parse HOST:PORT, [V6]:PORT, :PORT, PORT, unix:PATH or unix:@NAME.

    A port is always required: the holder must know what to bind. Unbracketed
    IPv6 is refused because "::1:8000" could be an address on its own.
    """
    if text.startswith(UNIX_PREFIX):
        rest = text[len(UNIX_PREFIX) :]
        if rest.startswith("@"):
            return UnixAddress(rest[1:], abstract=True)
        return UnixAddress(rest)
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise AddressError(f"malformed address {text!r}: missing ']'")
        host, rest = text[1:close], text[close + 1 :]
        if not rest:
            raise AddressError(f"missing port in address {text!r}: use [IPV6]:PORT")
        if not rest.startswith(":"):
            raise AddressError(f"malformed address {text!r}: expected ':PORT' after ']'")
        return InetAddress(_parse_ipv6(host, f"[{host}]"), parse_port(rest[1:]))
    if _PORT_RE.fullmatch(text):
        return InetAddress(default_host, parse_port(text))
    if not text:
        raise AddressError(f"empty address: {text!r}")
    colons = text.count(":")
    if colons == 0:
        if _is_host(text):
            raise AddressError(f"missing port in address {text!r}: use HOST:PORT")
        raise AddressError(f"malformed address {text!r}: {_FORMS_HINT}")
    if colons > 1:
        # "::1:8000" is itself a valid IPv6 address: whether ":8000" is a port
        # cannot be told, so brackets are required even for the bare address.
        raise AddressError(f"malformed address {text!r}: {_IPV6_HINT}")
    host, _, port = text.partition(":")
    # Host first, so that errors are reported in reading order.
    host = parse_host(host) if host else default_host
    return InetAddress(host, parse_port(port))


def _is_host(text: str) -> bool:
    """Whether text parses as a host, to tell "port missing" from "malformed"."""
    try:
        parse_host(text)
    except AddressError:
        return False
    return True


def parse_listen(text: str, default_host: str = DEFAULT_HOST) -> ListenSpec:
    """Parse "[NAME=]ADDR".

    The text before the first "=" is a name only when it holds none of
    ":", "/", "[", "@", so that unix paths containing "=" still parse as
    addresses ("unix:/tmp/a=b.sock").
    """
    before, sep, after = text.partition("=")
    if sep and not any(c in before for c in NAME_STOP_CHARS):
        _check_name(before, text)
        return ListenSpec(parse_address(after, default_host), before)
    return ListenSpec(parse_address(text, default_host))


def url(address: Address, scheme: str = "http") -> str:
    """The address as a log line shows it: a URL for TCP, "unix:..." otherwise.

    An IPv6 scope is written "%25" as RFC 6874 has it, so the URL can be
    pasted into a client.
    """
    if isinstance(address, UnixAddress):
        return str(address)
    host = f"[{address.host.replace('%', '%25')}]" if address.is_ipv6 else address.host
    return f"{scheme}://{host}:{address.port}"
