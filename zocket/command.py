"""The server's command line: split without a shell, placeholders filled in.

Placeholders let servers that take an fd or an address as an argument use
the held sockets: ``uvicorn --fd {fd} app:app``, ``hypercorn --bind
fd://{fd} app:app``. Only these forms are replaced; any other brace is left
alone, so JSON or shell snippets in arguments pass through untouched:

    {fd}  {fd:NAME}      the fd number the socket has in the server (3, 4, ...)
    {port} {port:NAME}   its real port (after --port 0 too)
    {host} {host:NAME}   its host as asked for (a name stays a name)
    {{ and }}            a literal brace, for the rare argument that needs one
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Protocol

from .activation import SD_LISTEN_FDS_START

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(fd|port|host)(?::([^{}]+))?\}")


class CommandError(ValueError):
    """A command line zocket cannot run; one line for the CLI."""

    exit_status = 2


class Held(Protocol):
    name: str

    @property
    def port(self) -> int | None: ...

    @property
    def host(self) -> str | None: ...


def split_command(
    words: Sequence[str], shell: bool = False, *, as_argv: bool = False
) -> list[str]:
    """The argv to run for the command words.

    With ``shell``, one word is the script for ``/bin/sh -c``; several words
    are joined with shell quoting (``shlex.join``), so the shell runs exactly
    that argv, words with spaces or ``;`` included.

    ``as_argv``: the words came after ``--``, and are the argv as given, even a
    single one (``-- "/tmp/my dir/prog"`` runs that path). Otherwise one string
    is split like a shell would (no shell runs) and several are taken as argv.
    """
    if shell:
        if not words:
            raise CommandError("empty command")
        # One word is the script. Several are an argv for the shell to run as it is:
        # quoted, so that "x; echo INJECTED" stays one argument instead of becoming a
        # second command (" ".join lost every quote).
        script = words[0] if len(words) == 1 else shlex.join(words)
        return ["/bin/sh", "-c", script]
    if len(words) == 1 and not as_argv:
        try:
            argv = shlex.split(words[0])
        except ValueError as exc:
            raise CommandError(f"cannot split command {words[0]!r}: {exc}") from None
    else:
        argv = list(words)
    if not argv or not argv[0]:
        raise CommandError("empty command")
    return argv


def expand(argv: Sequence[str], held: Sequence[Held]) -> list[str]:
    """Fill in the placeholders of every argument from the held sockets."""
    return [_expand_one(arg, held) for arg in argv]


def _expand_one(arg: str, held: Sequence[Held]) -> str:
    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text in ("{{", "}}"):
            return text[0]
        kind, name = match.group(1), match.group(2)
        index = _find(held, name, text)
        if kind == "fd":
            return str(SD_LISTEN_FDS_START + index)
        value = held[index].port if kind == "port" else held[index].host
        if value is None:
            raise CommandError(f"{text}: socket {held[index].name!r} is a unix socket")
        return str(value)

    return _PLACEHOLDER.sub(replace, arg)


def _find(held: Sequence[Held], name: str | None, text: str) -> int:
    if not held:
        raise CommandError(f"{text}: no socket is held")
    if name is None:
        return 0
    for index, socket in enumerate(held):
        if socket.name == name:
            return index
    names = ", ".join(s.name for s in held)
    raise CommandError(f"{text}: no socket named {name!r} (held: {names})")
