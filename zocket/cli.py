"""``zocket [options] [PORT] COMMAND``: argparse over the Holder.

Exit statuses (also in the README):
    0..255  the server's own exit status; 128+N when it was killed by signal N
    1       an unexpected system error (one line, no traceback)
    2       bad usage: unknown option, malformed address or port, a number out of
            its range, empty command, a --watch path that does not exist, a pid
            file that cannot be written, --socket-mode/--socket-owner with no
            socket file, a LISTEN_FDS that cannot be used
    3       a socket could not be held: address in use, permission, unknown host,
            a unix path that exists and is not a socket
    126     the command is not executable
    127     the command was not found
    130     SIGINT while zocket was still starting (before any generation ran)
Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import signal
import sys
from collections.abc import Sequence

from . import control, libc, upgrade
from ._startup import release_interrupts
from ._version import __version__
from .activation import parse_listen_count
from .addresses import (
    DEFAULT_HOST,
    AddressError,
    InetAddress,
    ListenSpec,
    UnixAddress,
    parse_host,
    parse_listen,
    parse_port,
)
from .command import CommandError, split_command
from .config import DEFAULT_READY, Config
from .holder import Holder, SetupError
from .identity import IdentityError, User
from .listeners import ListenError, UnixPermissions, default_name
from .readiness import ReadyMode, parse_ready_mode
from .spawn import SpawnError
from .watch import DEFAULT_IGNORES, WatchError

DEFAULT_PORT = 9999
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
_SIGNED_NUMBER = re.compile(r"[-+][0-9]+")
#: listen(2) takes a C int; the kernel then caps it at net.core.somaxconn anyway.
MAX_BACKLOG = 2**31 - 1
#: The longest duration any option takes: a day. Longer means a typo, and the
#: loop's timers must stay within what epoll_wait's millisecond int can wait.
MAX_SECONDS = 86400.0
#: The most --copies: each copy is a process group with its own fds and timers; more than
#: this on one host is a typo, not a deployment (a multi-process server scales itself).
MAX_COPIES = 64

EPILOG = """\
examples:
  zocket 8000 "gunicorn app:app"
  zocket 8000 -- uvicorn --fd {fd} app:app
  zocket --listen 127.0.0.1:8000 --listen admin=unix:/run/app.sock -- gunicorn app:app

The server gets the sockets on fd 3, 4, ... with LISTEN_FDS, LISTEN_PID and
LISTEN_FDNAMES set, the way systemd hands them over. Placeholders in the
command: {fd} {fd:NAME} {port} {port:NAME} {host} {host:NAME}.

Limits: every SECONDS is 0 to 86400 (a day); --backlog is 1 to 2147483647;
at most 64 sockets. Every refused input: docs/bad-input.md.
"""


class UsageError(Exception):
    exit_status = EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zocket",
        description="Hold listening sockets and run a web server on them, so that it "
        "restarts without refusing a connection.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "words",
        nargs="*",
        metavar="[PORT] COMMAND",
        help="the port (default 9999), then the command: one quoted string, "
        "split like a shell would without running one, or its words after -- "
        "(the argv as given, even a single word)",
    )
    parser.add_argument(
        "-p", "--port", action=_Once, help="the port to hold (0: any free port)"
    )
    parser.add_argument(
        "--host",
        action=_Once,
        help=f"address or name to bind the port on (default {DEFAULT_HOST}); "
        "use 0.0.0.0 or :: to accept connections from other machines",
    )
    parser.add_argument(
        "-l",
        "--listen",
        action="append",
        default=[],
        metavar="[NAME=]ADDR",
        help="hold one more socket: HOST:PORT, [V6]:PORT, unix:PATH or unix:@ABSTRACT; "
        "repeatable, handed over in order",
    )
    parser.add_argument(
        "--backlog",
        action=_Once,
        type=int,
        default=Config.backlog,
        help=f"listen() backlog (default SOMAXCONN = {libc.SOMAXCONN})",
    )
    parser.add_argument(
        "--shell",
        action="store_true",
        help="run the command through /bin/sh -c: one word is the script, several words "
        "are quoted (shlex.join) so each stays one word",
    )
    restarts = parser.add_argument_group("restarts")
    restarts.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="PATH",
        help="restart when a file under PATH changes (repeatable; inotify, recursive)",
    )
    restarts.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="GLOB",
        help="file or directory names --watch skips, added to the defaults "
        "(.git, __pycache__, *.pyc, editor swap files, ...)",
    )
    restarts.add_argument(
        "--debounce",
        action=_Once,
        type=_seconds,
        default=Config.debounce,
        metavar="SECONDS",
        help=f"changes closer together than this make one restart (default {Config.debounce:g}; "
        "every SECONDS is 0 to 86400, a day)",
    )
    restarts.add_argument(
        "--ready",
        action=_Once,
        type=_ready_mode,
        default=DEFAULT_READY,
        metavar="MODE",
        help="when a new generation counts as ready: auto (a process waits on a held "
        "socket, seen in /proc; the default), notify (READY=1 on NOTIFY_SOCKET), "
        "delay:SECONDS or none",
    )
    restarts.add_argument(
        "--ready-timeout",
        action=_Once,
        type=_seconds,
        default=Config.ready_timeout,
        metavar="SECONDS",
        help="a generation not ready by then is stopped; the old one keeps serving "
        f"(default {Config.ready_timeout:g})",
    )
    restarts.add_argument(
        "--boot-nice",
        action=_Once,
        type=_boot_nice,
        default=Config.boot_nice,
        metavar="N",
        help="boot a new generation at N more nice than zocket while the old one serves, "
        "and restore its priority once it is ready (root or RLIMIT_NICE; default 0: off)",
    )
    restarts.add_argument(
        "--share-cpus",
        dest="split_cpus",
        action="store_false",
        default=Config.split_cpus,
        help="let the generations of a restart share every CPU; by default the serving one "
        "keeps half of zocket's CPUs to itself while another boots or stops",
    )
    restarts.add_argument(
        "--copies",
        action=_Once,
        type=_copies,
        default=Config.copies,
        metavar="N",
        help=f"run N processes of the command on the held sockets (1 to {MAX_COPIES}; "
        f"default {Config.copies}), each with ZOCKET_COPY=1..N; a restart replaces them "
        "one at a time, each new copy ready before the old one of its slot stops",
    )
    restarts.add_argument(
        "--no-overlap",
        dest="overlap",
        action="store_false",
        help="stop the old generation before starting the new one (clients queue meanwhile)",
    )
    restarts.add_argument(
        "--stop-signal",
        action=_Once,
        type=_signal,
        default=Config.stop_signal,
        metavar="SIGNAL",
        help="how an old generation is asked to stop "
        f"(default {signal.Signals(Config.stop_signal).name[3:]})",
    )
    restarts.add_argument(
        "--stop-timeout",
        action=_Once,
        type=_seconds,
        default=Config.stop_timeout,
        metavar="SECONDS",
        help=f"how long a generation has to stop before SIGKILL (default {Config.stop_timeout:g})",
    )
    parser.add_argument(
        "--no-hook",
        dest="hook",
        action="store_false",
        help="inject no code into Python processes (binds are still adopted at the kernel "
        "boundary; servers lose the hook's graceful stop)",
    )
    parser.add_argument(
        "--no-adopt",
        dest="adopt",
        action="store_false",
        help="no adoption at all: neither the kernel boundary (seccomp) nor the Python hook "
        "answers the server's own bind() with the held socket; the server must take fd 3",
    )
    parser.add_argument(
        "--no-respawn",
        dest="respawn",
        action="store_false",
        help="when the server exits by itself, exit with its status instead of starting "
        "it again (with backoff)",
    )
    ops = parser.add_argument_group("operations")
    ops.add_argument(
        "--status-file",
        action=_Once,
        metavar="PATH",
        help="keep PATH up to date (atomically) with the sockets and generations, as JSON",
    )
    ops.add_argument("--pid-file", action=_Once, metavar="PATH", help="write zocket's pid to PATH")
    ops.add_argument(
        "--control",
        action=_Once,
        metavar="PATH",
        help="the control socket for `zocket reload|status|stop` (default: one per zocket "
        "in $XDG_RUNTIME_DIR/zocket, /run/zocket for root, else /tmp/zocket-UID)",
    )
    ops.add_argument(
        "--no-control", dest="control", action="store_const", const="",
        help="no control socket",
    )
    ops.add_argument(
        "--socket-mode",
        action=_Once,
        type=_mode,
        metavar="OCTAL",
        help="permissions of the Unix socket files zocket creates, e.g. 660",
    )
    ops.add_argument(
        "--socket-owner",
        action=_Once,
        type=_owner,
        metavar="USER[:GROUP]",
        help="owner of the Unix socket files zocket creates",
    )
    ops.add_argument(
        "--user",
        action=_Once,
        type=_user,
        metavar="USER[:GROUP]",
        help="once the sockets are held (as root: ports below 1024), run zocket and every "
        "generation as USER, with its groups and HOME, USER, LOGNAME and SHELL",
    )
    parser.add_argument("--version", action="version", version=f"zocket {__version__}")
    return parser


def parse_args(argv: Sequence[str]) -> Config:
    """The Config that ``zocket ARGV`` describes; raises UsageError (one line)."""
    argv = list(argv)
    after: list[str] | None = None
    if "--" in argv:
        cut = argv.index("--")
        argv, after = argv[:cut], argv[cut + 1 :]
    parser = _QuietParser.from_parser(build_parser())
    args = parser.parse_args(argv)
    words = list(args.words)

    port_text = args.port
    # A signed number first is a port too, so that "-1" is called an invalid port, not a
    # command that is not found (argparse passes "-1" through as a positional word).
    is_port = bool(words) and (
        words[0].isdigit() or _SIGNED_NUMBER.fullmatch(words[0]) is not None
    )
    if is_port and after is None and len(words) == 1:
        raise UsageError(f"no command given after the port {words[0]}: zocket [PORT] COMMAND")
    if is_port:
        if port_text is not None:
            raise UsageError(f"the port is given twice: --port {port_text} and {words[0]}")
        port_text = words.pop(0)
    if after is not None:
        if words:
            raise UsageError(f"unexpected {words[0]!r} before --: give the command after --")
        words = after
    if not 1 <= args.backlog <= MAX_BACKLOG:
        raise UsageError(f"--backlog must be 1 to {MAX_BACKLOG}, not {args.backlog}")
    inherit = _handed_sockets()
    if inherit and (port_text is not None or args.listen or args.host is not None):
        raise UsageError(
            f"zocket was handed {inherit} socket(s) through LISTEN_FDS; "
            "--port, --host and --listen do not apply"
        )

    if not words:
        raise UsageError("no command given: zocket [PORT] COMMAND")
    try:
        specs: list[ListenSpec] = []
        if port_text is not None or not args.listen:
            port = parse_port(port_text) if port_text is not None else DEFAULT_PORT
            host = parse_host(args.host) if args.host is not None else DEFAULT_HOST
            specs.append(ListenSpec(InetAddress(host, port)))
        elif args.host is not None:
            raise UsageError("--host goes with a port; with --listen, put the host in ADDR")
        specs.extend(parse_listen(text) for text in args.listen)
        if len(specs) > libc.SPAWN_MAX_FDS:
            raise UsageError(
                f"at most {libc.SPAWN_MAX_FDS} sockets can be held and handed over, "
                f"not {len(specs)}"
            )
        command = split_command(words, shell=args.shell, as_argv=after is not None)
    except (AddressError, CommandError) as exc:
        raise UsageError(str(exc)) from None
    if args.socket_mode is not None or args.socket_owner is not None:
        _check_socket_files(specs, inherited=bool(inherit))
    # The names the sockets will have, defaults included: the port's socket is "http".
    names = [spec.name or default_name(index) for index, spec in enumerate(specs)]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"socket name {name!r} is given twice")
    return Config(
        listen=specs,
        command=command,
        backlog=args.backlog,
        stop_timeout=args.stop_timeout,
        stop_signal=args.stop_signal,
        respawn=args.respawn,
        # One switch for adoption: --no-adopt turns off both ways a bind is answered.
        hook=args.hook and args.adopt,
        adopt=args.adopt,
        overlap=args.overlap,
        copies=args.copies,
        ready=args.ready,
        ready_timeout=args.ready_timeout,
        watch=args.watch,
        ignore=DEFAULT_IGNORES + tuple(args.ignore),
        debounce=args.debounce,
        inherit=bool(inherit),
        reap_orphans=True,
        status_file=args.status_file,
        control=args.control,
        user=args.user,
        boot_nice=args.boot_nice,
        split_cpus=args.split_cpus,
        pid_file=args.pid_file,
        unix_permissions=UnixPermissions(args.socket_mode, *(args.socket_owner or (-1, -1))),
    )


def _check_socket_files(specs: Sequence[ListenSpec], inherited: bool) -> None:
    """--socket-mode/--socket-owner need a Unix socket file zocket creates, or they do nothing.

    Silently doing nothing would be worse than refusing: an abstract socket
    (unix:@name) has no file and so no permissions, and anyone on the host
    can connect to it; whoever asked for mode 600 believes otherwise.
    """
    option = "--socket-mode/--socket-owner"
    if inherited:
        raise UsageError(
            f"{option}: zocket was handed its sockets through LISTEN_FDS and creates no "
            "socket file to set them on"
        )
    unix = [spec.address for spec in specs if isinstance(spec.address, UnixAddress)]
    if any(not address.abstract for address in unix):
        return
    if unix:
        raise UsageError(
            f"{option}: abstract Unix sockets (unix:@{unix[0].path}) have no file and no "
            "permissions: any local user can connect; use a unix:PATH socket to restrict access"
        )
    raise UsageError(f"{option} apply to Unix socket files, and no --listen unix:PATH is given")


def _handed_sockets() -> int:
    """How many sockets zocket itself was given the systemd way (0: none, bind our own).

    The variables are read by activation's rules (what the holder will
    take), and a count zocket could not hand on is refused here, in one line,
    before anything is opened.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return 0
    value = os.environ.get("LISTEN_FDS")
    if value is None:
        return 0
    try:
        count = parse_listen_count(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if count > libc.SPAWN_MAX_FDS:
        raise UsageError(
            f"LISTEN_FDS={value}: at most {libc.SPAWN_MAX_FDS} sockets can be held "
            "and handed over"
        )
    return count


class _Once(argparse.Action):
    """Store a value, refusing a second one: ``--port 1 --port 2`` is a mistake, not an override."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        seen = namespace.__dict__.setdefault("_given", set())
        if self.dest in seen:
            raise argparse.ArgumentError(self, "given twice")
        seen.add(self.dest)
        setattr(namespace, self.dest, values)


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise argparse.ArgumentTypeError(f"not an octal file mode: {text!r}")
    return mode


def _boot_nice(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise argparse.ArgumentTypeError(f"invalid --boot-nice {text!r}: a number from 0 to 19")
    return value


def _user(text: str) -> User:
    try:
        return User.parse(text)
    except IdentityError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _owner(text: str) -> tuple[int, int]:
    user, _, group = text.partition(":")
    try:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid if user else -1
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid if group else -1
    except KeyError as exc:
        raise argparse.ArgumentTypeError(f"unknown user or group in {text!r}: {exc}") from None
    return uid, gid


def _copies(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of copies: {text!r}") from None
    if not 1 <= value <= MAX_COPIES:
        raise argparse.ArgumentTypeError(f"{text!r} copies is out of range (1 to {MAX_COPIES})")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= MAX_SECONDS:  # NaN fails too
        raise argparse.ArgumentTypeError(
            f"{text!r} seconds is out of range (0 to {MAX_SECONDS:g}, a day)"
        )
    return value


def _ready_mode(text: str) -> ReadyMode:
    try:
        mode = parse_ready_mode(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if mode.kind == "delay" and mode.delay > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"--ready {text!r}: the delay is out of range (0 to {MAX_SECONDS:g} seconds, a day)"
        )
    return mode


def _signal(text: str) -> int:
    name = text.upper()
    if name.isdigit():
        number = int(name)
    else:
        name = name if name.startswith("SIG") else "SIG" + name
        number = getattr(signal.Signals, name, -1)
    if number not in {s.value for s in signal.Signals}:
        raise argparse.ArgumentTypeError(f"unknown signal: {text!r}")
    return int(number)


class _QuietParser(argparse.ArgumentParser):
    """argparse, but its errors become UsageError so that main() prints one line."""

    @classmethod
    def from_parser(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.__class__ = cls
        return parser

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in control.COMMANDS:
        if release_interrupts():
            return EXIT_INTERRUPTED
        return control.client_main(list(argv))
    _ensure_standard_fds()
    try:
        config = parse_args(argv)
        holder = Holder(config, resume=upgrade.take_state())
        holder.open()
        # SIGINT was held since __main__'s first line (see _startup): through the imports
        # and through open(), which would leave a Unix socket file behind if interrupted
        # between bind() and its own clean-up. From here on run() cleans up whatever
        # KeyboardInterrupt interrupts, and then installs the holder's own handlers.
        if release_interrupts():
            for listener in holder.listeners:
                listener.close()
            return EXIT_INTERRUPTED
        return holder.run()
    except (
        UsageError, ListenError, SpawnError, CommandError, WatchError, SetupError, IdentityError,
        upgrade.UpgradeError,
    ) as exc:
        release_interrupts()
        _error(str(exc))
        return exc.exit_status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:  # nothing above expects it: still one line, never a traceback
        _error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_FAILURE


def _ensure_standard_fds() -> None:
    """Put /dev/null on a closed fd 0, 1 or 2, inheritable: the server gets 0, 1 and 2.

    Otherwise the first socket zocket opens would take that number, and the
    server would be handed the listening socket as its stdout. os.open makes
    its fd close-on-exec (PEP 446), so a /dev/null that lands on the number
    itself must be made inheritable by hand, or the server would start with
    that fd closed.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if null != fd:
                os.dup2(null, fd)  # inheritable, as dup2's copy is by default
                os.close(null)
            else:
                os.set_inheritable(fd, True)


def _error(message: str) -> None:
    if sys.stderr is None:  # fd 2 was closed when Python started
        return
    try:
        sys.stderr.write(f"zocket: error: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
