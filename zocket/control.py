"""The control socket: ``zocket reload``, ``zocket status``, ``zocket stop``, ``zocket upgrade``.

The client's side imports nothing but the standard library, so that these
commands still work when the rest of an install is broken.

A running zocket listens on a Unix socket of its own, by default
``<dir>/<pid>.sock`` in a directory only its user can enter: ``$XDG_RUNTIME_DIR/zocket``,
else ``/run/zocket`` for root, else ``/tmp/zocket-<uid>``. The directory is
created 0700 and refused if it is a symlink, belongs to someone else, or
others can write to it, so nobody can plant a socket where a client will
look. Each connection's peer is checked with SO_PEERCRED as well: only
zocket's own user and root are answered, should the socket be reachable
through another path or mode.

One request per connection, one JSON line each way:

- ``{"command": "status"}`` -> ``{"ok": true, "status": {...}}``, the same
  record as ``--status-file``;
- ``{"command": "reload"}`` -> the answer comes once the restart has an
  outcome: ``{"ok": true, "message": "generation 7 ready in 310 ms; ..."}`` or
  ``{"ok": false, "message": "generation 7 failed before ready: exit 1; ..."}``;
- ``{"command": "stop"}`` -> ``{"ok": true, "message": "stopping", "pid": P}``, then
  the connection stays open until zocket's last step, and the client waits for P to go;
- ``{"command": "upgrade"}`` -> the answer comes from the new image once it runs
  (:mod:`zocket.upgrade`), or from this one if the upgrade was refused.

A client finds the zocket for a port by asking every socket in the directory
for its status (``find``).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

_UCRED = struct.Struct("iII")
MAX_REQUEST = 4096
#: Connections that sent no request yet: beyond this many, the oldest is closed, so that a
#: client that connects and never asks cannot use up the holder's fds.
MAX_IDLE = 32


class ControlError(Exception):
    """One line for the user, and the documented exit status."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


# Exit statuses of `zocket reload|status|stop` (also in the README).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TIMEOUT = 4


def control_dir() -> str:
    """Where zockets of this user put their control sockets."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and _owned(runtime):
        return os.path.join(runtime, "zocket")
    if os.geteuid() == 0:
        return "/run/zocket"
    return f"/tmp/zocket-{os.geteuid()}"


def _owned(path: str) -> bool:
    try:
        return os.stat(path).st_uid == os.geteuid()
    except OSError:
        return False


def ensure_private_dir(path: str) -> None:
    """Create ``path`` 0700, or check that the one there is ours and private."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"{path} is not a directory")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OSError(errno.EPERM, f"{path} belongs to another user or others can write to it")


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(creds)
    return int(uid)


# --- the holder's side ------------------------------------------------------------------------


@dataclass(eq=False)
class Client:
    """One connection to the control socket, until it has its answer."""

    sock: socket.socket
    #: The peer's uid, from the kernel (SO_PEERCRED), as it was at connect().
    uid: int = -1
    buffer: bytes = b""
    #: Set once a command is under way (reload: waiting for its outcome; stop: for the exit).
    busy: bool = False
    #: Sent all it will send (EOF after its request): waiting for the answer only.
    muted: bool = False

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    def send(self, reply: dict[str, Any]) -> None:
        """One JSON line; a client that went away is nobody's loss."""
        try:
            self.sock.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass


@dataclass
class ControlServer:
    """The listening control socket; requests reach ``on_request``."""

    path: str
    on_request: Callable[[Client, dict[str, Any]], None]
    sock: socket.socket = field(init=False)
    clients: dict[int, Client] = field(default_factory=dict)
    _identity: tuple[int, int] | None = None
    #: (fd, identity) of the socket this zocket had before its own re-exec.
    resume: tuple[int, tuple[int, int] | None] | None = None

    def __post_init__(self) -> None:
        if self.resume is not None:
            fd, self._identity = self.resume
            self.sock = socket.socket(fileno=fd)
            self.sock.set_inheritable(False)
            return
        directory = os.path.dirname(self.path) or "."
        if self.path.startswith(control_dir() + os.sep):
            ensure_private_dir(directory)
        _remove_stale(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            self.sock.bind(self.path)
            from .listeners import UnixPermissions  # the holder's side only: see client_main

            # Before listen(): nobody connects while the mode is still the umask's.
            self._identity = UnixPermissions(mode=0o600).apply(self.path)
            self.sock.listen(16)
        except BaseException:
            self.sock.close()
            raise

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    @property
    def identity(self) -> tuple[int, int] | None:
        return self._identity

    def accept(self) -> Client | None:
        try:
            conn, _ = self.sock.accept()
        except OSError:  # EAGAIN, a client gone already, EMFILE: never the holder's end
            return None
        conn.setblocking(False)
        client = Client(conn, uid=peer_uid(conn))
        self.clients[client.fd] = client
        return client

    def readable(self, client: Client) -> bool:
        """Read what the client sent; False once it is gone (close it then)."""
        try:
            data = client.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            if client.busy:
                # Half-closed after its request (`printf ... | socat`): it still reads the
                # answer. Nothing more to read, so the holder stops watching it.
                client.muted = True
                return True
            return False
        if client.busy:
            return True  # one request per connection: the rest is ignored
        client.buffer += data
        if b"\n" not in client.buffer:
            if len(client.buffer) > MAX_REQUEST:
                client.send({"ok": False, "message": "request too long"})
                return False
            return True
        line = client.buffer.split(b"\n", 1)[0]
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            client.send({"ok": False, "message": "not a JSON request"})
            return False
        if client.uid not in (os.geteuid(), 0):
            # Answered after reading the request: closing with it unread would reset the
            # connection, and the client would never see why.
            client.send({"ok": False, "message": f"refused: uid {client.uid} is neither "
                         f"zocket's (uid {os.geteuid()}) nor root"})
            return False
        client.busy = True
        self.on_request(client, request)
        return True

    def idle_beyond(self, limit: int = MAX_IDLE) -> list[Client]:
        """The oldest connections with no request under way, beyond ``limit`` of them."""
        idle = [client for client in self.clients.values() if not client.busy]
        return idle[: max(0, len(idle) - limit)]

    def drop(self, client: Client) -> None:
        self.clients.pop(client.fd, None)
        client.sock.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self.drop(client)
        self.sock.close()
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        except OSError:
            pass


def _remove_stale(path: str) -> None:
    """A socket file nobody accepts on (a zocket that was killed) is replaced."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return  # let bind() say what is wrong
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another zocket answers on {path}")


# --- the client's side ------------------------------------------------------------------------


def _check_socket(path: str) -> None:
    """A path that exists and is no socket is nobody's control socket: say so plainly."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # connect() says what is wrong
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"{path} is not a socket (a zocket's control socket is)",
                           EXIT_NOT_FOUND)


def _ask(path: str, command: str, timeout: float) -> tuple[socket.socket, float, dict[str, Any]]:
    """Connect, send one command, read its one-line answer: the open socket, the deadline
    (``timeout`` s from now) and the answer. The caller closes the socket."""
    _check_socket(path)
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no zocket at {path}", EXIT_NOT_FOUND) from None
        except ConnectionRefusedError:
            raise ControlError(
                f"no zocket answers at {path} (a stale socket: the zocket that made it is gone)",
                EXIT_NOT_FOUND,
            ) from None
        except PermissionError:
            raise ControlError(
                f"permission denied: {path} (run by another user?)", EXIT_NOT_FOUND
            ) from None
        except OSError as exc:
            raise ControlError(f"cannot reach {path}: {exc.strerror}", EXIT_NOT_FOUND) from None
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        line = _read_line(sock, deadline, path)
        try:
            reply = json.loads(line)
        except ValueError:
            raise ControlError(f"not a zocket answer from {path}", EXIT_NOT_FOUND) from None
        if not isinstance(reply, dict):
            raise ControlError(f"not a zocket answer from {path}", EXIT_NOT_FOUND)
    except BaseException:
        sock.close()
        raise
    return sock, deadline, reply


def request(path: str, command: str, timeout: float) -> dict[str, Any]:
    """Send one command and read its one-line answer (waits up to ``timeout`` s)."""
    sock, _deadline, reply = _ask(path, command, timeout)
    sock.close()
    return reply


def wait_closed(path: str, command: str, timeout: float) -> dict[str, Any]:
    """``stop``: the answer, then wait until zocket closes the connection by exiting."""
    sock, deadline, reply = _ask(path, command, timeout)
    try:
        while True:  # zocket closes the connection last thing before it exits
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not sock.recv(4096):
                    break
            except TimeoutError:
                raise ControlError(
                    f"zocket did not exit within {timeout:g} s", EXIT_TIMEOUT
                ) from None
            except ConnectionResetError:
                break
    finally:
        sock.close()
    pid = reply.get("pid")
    while isinstance(pid, int) and _running(pid):
        if time.monotonic() > deadline:
            raise ControlError(f"zocket did not exit within {timeout:g} s", EXIT_TIMEOUT)
        time.sleep(0.01)
    return dict(reply)


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent has exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _read_line(sock: socket.socket, deadline: float, path: str) -> bytes:
    data = b""
    while b"\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise ControlError(f"no answer from {path} in time", EXIT_TIMEOUT) from None
        if not chunk:
            raise ControlError(f"{path} closed the connection without an answer", EXIT_FAILED)
        data += chunk
    return data.split(b"\n", 1)[0]


def find(port: int | None) -> str:
    """The control socket of the one running zocket of this user (holding ``port``)."""
    directory = control_dir()
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".sock"))
    except FileNotFoundError:
        names = []
    found: list[tuple[str, int]] = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            status = request(path, "status", 2.0).get("status")
        except ControlError:
            continue  # stale, or not answering: not a candidate
        if not isinstance(status, dict):
            continue
        ports = {_port_of(s.get("address")) for s in status.get("sockets", [])
                 if isinstance(s, dict)}
        if port is None or port in ports:
            found.append((path, int(status.get("pid", 0))))
    where = f" holding port {port}" if port is not None else ""
    if not found:
        raise ControlError(f"no running zocket{where} found in {directory}", EXIT_NOT_FOUND)
    if len(found) > 1:
        pids = ", ".join(str(pid) for _, pid in found)
        raise ControlError(
            f"several zockets{where} run (pids {pids}): say which with --port or --control",
            EXIT_USAGE,
        )
    return found[0][0]


def _port_of(address: object) -> int | None:
    """The port of a status record's address (``127.0.0.1:8000``, ``[::1]:8000``)."""
    if not isinstance(address, str) or address.startswith("unix:"):
        return None
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


# --- `zocket reload|status|stop` ----------------------------------------------------------------

COMMANDS = ("reload", "status", "stop", "upgrade")


def client_main(argv: list[str]) -> int:
    """``zocket reload|status|stop|upgrade [--control PATH | --port PORT] ...``; the status."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:  # one line, as every zocket error
            raise ControlError(message, EXIT_USAGE)

    command, rest = argv[0], argv[1:]
    parser = Parser(prog=f"zocket {command}", description=_DESCRIPTIONS[command])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--control", metavar="PATH", help="the zocket's control socket")
    where.add_argument("-p", "--port", type=int, help="the zocket holding this port")
    if command == "status":
        parser.add_argument("--json", action="store_true", help="the status record as JSON")
    else:
        parser.add_argument("--timeout", type=float, default=120.0 if command == "reload" else 60.0,
                            help="seconds to wait for the outcome")
    try:
        try:
            args = parser.parse_args(rest)
        except SystemExit as exc:  # --help
            return EXIT_USAGE if exc.code else EXIT_OK
        if command != "status" and not 0 < args.timeout <= 86400:  # NaN and inf fail too
            raise ControlError(
                    "--timeout must be a number of seconds above 0 and at most 86400", EXIT_USAGE
                )
        path = args.control or find(args.port)
        if command == "status":
            reply = request(path, "status", 10.0)
            if not reply.get("ok"):
                raise ControlError(str(reply.get("message")), EXIT_NOT_FOUND)
            status = reply["status"]
            print(json.dumps(status, indent=2) if args.json else describe_status(status))
            return EXIT_OK
        if command == "stop":
            reply = wait_closed(path, "stop", args.timeout)
        else:
            reply = request(path, command, args.timeout)
        message = str(reply.get("message", ""))
        if not reply.get("ok"):
            raise ControlError(message, EXIT_NOT_FOUND if command == "stop" else EXIT_FAILED)
        print("zocket stopped" if command == "stop" else message)
        return EXIT_OK
    except ControlError as exc:
        _error(str(exc))
        return exc.exit_status
    except KeyboardInterrupt:
        return 130


_DESCRIPTIONS = {
    "reload": "Restart the running zocket's server and wait for the outcome: exit 0 once the "
    "new generation is ready (the old one told to stop), 1 with the reason if it failed.",
    "status": "Show the running zocket's sockets and generations.",
    "stop": "Stop the running zocket gracefully and wait until it has exited.",
    "upgrade": "Replace the running zocket by the installed one in the same process (same pid, "
    "same sockets, same generations) and wait for the outcome.",
}


def describe_status(status: dict[str, Any]) -> str:
    """The status record, for a person."""
    lines = [f"zocket {status.get('pid')}: "
             + ", ".join(f"{s.get('url')} ({s.get('name')}, fd {s.get('fd')})"
                         for s in status.get("sockets", []))]
    for g in status.get("generations", []):
        started = time.strftime("%H:%M:%S", time.localtime(g["started"])) if g.get("started") else "?"
        ready = f", ready {g['ready'] - g['started']:.2f} s later" if g.get("ready") else ""
        ended = f", exit status {g['exit_status']}" if g.get("exit_status") is not None else ""
        copy = f" (copy {g['copy']})" if status.get("copies", 1) > 1 else ""
        lines.append(f"  generation {g['number']}{copy}: {g['state']}, pid {g['pid']}, "
                     f"started {started}{ready}{ended}")
    copies = f"copies: {status['copies']}, " if status.get("copies", 1) > 1 else ""
    lines.append(f"  {copies}restarts: {status.get('restarts')}, generations started: "
                 f"{status.get('generations_started')}")
    if status.get("last_failure"):
        lines.append(f"  last failure: {status['last_failure']}")
    return "\n".join(lines)


def _error(message: str) -> None:
    import sys

    if sys.stderr is not None:
        try:
            sys.stderr.write(f"zocket: error: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
