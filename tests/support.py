"""Helpers for end-to-end tests and benchmarks: run zocket, talk HTTP to it, load it.

Everything here is bounded in time and cleans up after itself:

* `start_zocket` starts ``python -m zocket ...``, waits (with a deadline) for
  its start line and returns a `ZocketProcess`, a context manager that always
  stops zocket and its server (SIGTERM, then SIGKILL) and waits for them.
  stderr is drained by a thread for the whole life of the process, so neither
  zocket nor the server ever blocks on a full pipe.
* `run_zocket` runs zocket to completion, for the error cases.
* `http_get` makes one request on a new connection; `LoadClient` keeps a
  steady request rate from background threads and records every outcome, to
  assert that no request failed while a server restarted.
  `assert_no_failures` checks what such a client saw.
* `started` reads the ``generation N started`` lines zocket logged.
* `wait_for` polls a condition that has no event to wait on, with a deadline;
  `wait_readable` waits for one fd.
* A few /proc readers (`open_fds`, `socket_inode`, `tcp_listeners`,
  `group_members`, `children_of`, ...) to look at what a process really holds;
  `own_fds` and `no_new_fds` (behind the ``no_fd_leak`` fixture of conftest.py)
  for fd leaks of the test process itself; `kill_groups` to clean up.
* Real servers and their apps: `server_command`, `start_in`, `held_inode`,
  `wsgi_app` and `asgi_app` (sources of small apps), `write_atomically` (edits
  that a reloader sees whole).

zocket runs as ``sys.executable -m zocket`` with the repository first on
PYTHONPATH when the checkout holds a built extension (``python
zocket/_build_libc.py``), so that the code under test is the checkout's;
otherwise the installed zocket runs (see `zocket_command`).
"""

from __future__ import annotations

import http.client
import importlib.machinery
import os
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from string import Template
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

# benchmarks/ is not installed; appended (not prepended), so that an installed zocket still
# comes before the source tree, whose compiled module CI does not build in place.
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from benchmarks.load import FAILURE_KINDS, classify

__all__ = [
    "FAILURE_KINDS",
    "FD_RESPONDER",
    "REPO",
    "REQUEST",
    "STARTED",
    "START_LINE",
    "HeldSocket",
    "HookedProcess",
    "LoadClient",
    "Outcome",
    "ZocketProcess",
    "ZocketStartError",
    "answer",
    "asgi_app",
    "assert_no_failures",
    "checkout_is_built",
    "children_of",
    "group_members",
    "held_inode",
    "hooked_process",
    "http_get",
    "kill_groups",
    "no_new_fds",
    "open_fds",
    "own_fds",
    "parse_start_line",
    "proc_stat",
    "proc_status",
    "read_cmdline",
    "read_environ",
    "run_zocket",
    "server_command",
    "socket_inode",
    "socket_inodes",
    "start_in",
    "start_zocket",
    "started",
    "tcp_listeners",
    "wait_for",
    "wait_readable",
    "wait_ready",
    "write_atomically",
    "write_responder",
    "wsgi_app",
    "zocket_argv",
    "zocket_command",
    "zocket_env",
]

#: The repository root: the directory that holds the ``zocket`` package.
REPO = Path(__file__).resolve().parents[1]

#: The one line zocket prints on stderr once generation 1 runs.
START_LINE = re.compile(r"zocket: holding (.+); generation 1(?: \(copy 1\))? started \(pid (\d+)\)")
#: ``generation N started (pid P)``, the start line included.
STARTED = re.compile(r"zocket: (?:holding .*; )?generation (\d+)(?: \(copy \d+\))? started \(pid (\d+)\)")
#: One held socket in the start line: ``URL (NAME, fd N)``, comma-separated.
_HELD = re.compile(r"(.+?) \(([^()]*), fd (\d+)\)(?:, |$)")

#: How long zocket may take to print its start line (a cold interpreter on a busy CI box).
START_TIMEOUT = 20.0
#: How long zocket and its server get to stop after SIGTERM before SIGKILL.
STOP_TIMEOUT = 15.0

T = TypeVar("T")


# --- running zocket ---------------------------------------------------------------------------


def checkout_is_built() -> bool:
    """Whether the checkout's ``zocket`` can run: its compiled extension is built in place."""
    package = REPO / "zocket"
    return any(
        (package / f"_libc_cffi{suffix}").is_file()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def zocket_command() -> list[str]:
    """How to run zocket: the checkout's when it is built, else the installed one.

    ``python -m zocket`` puts the working directory first on sys.path, so run
    from the repository root it would import the source tree even where that
    is not built (CI installs zocket with pip, which builds elsewhere). Then
    the installed console script runs instead, or, without one, the installed
    package with the working directory taken off sys.path.
    """
    if checkout_is_built():
        return [sys.executable, "-m", "zocket"]
    script = Path(sys.executable).parent / "zocket"
    if script.is_file():
        return [str(script)]
    code = "import sys; del sys.path[0]; from zocket.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def zocket_argv(args: Iterable[object]) -> list[str]:
    """The command line that runs zocket with ``args`` (see `zocket_command`)."""
    return [*zocket_command(), *(str(a) for a in args)]


def zocket_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default os.environ) plus ``extra``, set up to run the zocket under test.

    The repository goes first on PYTHONPATH when the checkout is built (see
    `checkout_is_built`). Activation variables inherited from whatever runs
    the tests are dropped: zocket sets its own for the server.
    """
    env = dict(os.environ if base is None else base)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    env.update(extra)
    if checkout_is_built():
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *paths])
    return env


def run_zocket(
    args: Iterable[object],
    *,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    **popen_kw: object,
) -> subprocess.CompletedProcess[str]:
    """Run zocket to completion; stdout and stderr captured as text.

    ``prefix`` is put before the interpreter (e.g. a ``setpriv`` command line).
    On timeout subprocess.run kills zocket and raises TimeoutExpired.
    """
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*prefix, *zocket_argv(args)],
        env=zocket_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **popen_kw,
    )


class ZocketStartError(AssertionError):
    """zocket exited or stayed silent instead of printing its start line."""


@dataclass(frozen=True)
class HeldSocket:
    """One socket of the start line: ``http://127.0.0.1:44239 (http, fd 3)``."""

    url: str
    name: str
    fd: int

    @property
    def is_inet(self) -> bool:
        return not self.url.startswith("unix:")

    @property
    def host(self) -> str | None:
        """The host of an inet socket (no brackets for IPv6); None for unix sockets."""
        return urlsplit(self.url).hostname if self.is_inet else None

    @property
    def port(self) -> int | None:
        """The real port of an inet socket; None for unix sockets."""
        return urlsplit(self.url).port if self.is_inet else None


def parse_start_line(line: str) -> tuple[list[HeldSocket], int] | None:
    """The held sockets and the server's pid from a start line; None if ``line`` is not one."""
    match = START_LINE.search(line)
    if match is None:
        return None
    held = [HeldSocket(m[1], m[2], int(m[3])) for m in _HELD.finditer(match[1])]
    return held, int(match[2])


class _LineReader(threading.Thread):
    """Drains a pipe into a list of lines until EOF or `close()`.

    The pipe is read with select() and os.read() on its fd rather than through
    the file object, so that `close()` can stop the thread (within 0.1 s) even
    when a leaked grandchild still holds the write end open.
    """

    def __init__(self, pipe: object, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._pipe = pipe
        self._fd: int = pipe.fileno()  # type: ignore[attr-defined]
        self._lines: list[str] = []
        #: time.monotonic() when each line was read, in step with _lines.
        self._times: list[float] = []
        self._partial = b""
        self._eof = False
        self._stopping = threading.Event()
        self._changed = threading.Condition()

    def run(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._fd, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    if not selector.select(0.1):
                        continue
                    try:
                        data = os.read(self._fd, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    self._feed(data)
        finally:
            with self._changed:
                if self._partial:
                    self._lines.append(self._partial.decode("utf-8", "replace"))
                    self._times.append(time.monotonic())
                    self._partial = b""
                self._eof = True
                self._changed.notify_all()

    def _feed(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        if complete:
            now = time.monotonic()
            with self._changed:
                self._lines.extend(line.decode("utf-8", "replace") for line in complete)
                self._times.extend(now for _ in complete)
                self._changed.notify_all()

    @property
    def eof(self) -> bool:
        return self._eof

    def lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    def timed_lines(self) -> list[tuple[float, str]]:
        with self._changed:
            return list(zip(self._times, self._lines, strict=True))

    def wait_for_line(
        self, pattern: re.Pattern[str] | str, timeout: float, start: int = 0
    ) -> tuple[int, re.Match[str]] | None:
        """(index, match) of the first line from ``start`` that matches; None on timeout or EOF."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        index = start
        with self._changed:
            while True:
                while index < len(self._lines):
                    match = regex.search(self._lines[index])
                    if match is not None:
                        return index, match
                    index += 1
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def wait_eof(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._eof, timeout)

    def close(self, grace: float = 2.0, timeout: float = 5.0) -> None:
        """Stop reading (keeping what was read) and close the pipe.

        Reading goes on for up to ``grace`` seconds while the writers finish,
        so that the last lines of a process that just exited are not lost.
        """
        self.wait_eof(grace)
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
        if not self.is_alive():
            self._pipe.close()  # type: ignore[attr-defined]


_GENERATION_STARTED = re.compile(r"generation \d+(?: \(copy \d+\))? started \(pid (\d+)\)")


class ZocketProcess:
    """A running ``zocket`` started by `start_zocket`.

    Attributes: ``proc`` (the Popen), ``pid`` (zocket's), ``child_pid`` (the
    server's, generation 1; also its process group), ``held`` (the
    `HeldSocket` list of the start line), ``urls``, ``port`` and ``host`` (of
    the first inet socket).

    Use it as a context manager: leaving it stops zocket with SIGTERM, then
    SIGKILLs zocket and the server's process group if they outstay
    ``stop_timeout``, and waits; the server's group is SIGKILLed as well if
    any member outlived zocket.
    """

    def __init__(
        self, args: Sequence[str], proc: subprocess.Popen[bytes], stop_timeout: float
    ) -> None:
        self.args = list(args)
        self.proc = proc
        self.pid = proc.pid
        self.stop_timeout = stop_timeout
        self.held: list[HeldSocket] = []
        self.child_pid = -1
        self._stderr = _LineReader(proc.stderr, f"zocket-{proc.pid}-stderr")
        self._stderr.start()

    # --- starting ---------------------------------------------------------------------------

    def _await_start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            found = self._stderr.wait_for_line(START_LINE, min(0.2, max(remaining, 0.0)))
            if found is not None:
                parsed = parse_start_line(found[1].string)
                assert parsed is not None
                self.held, self.child_pid = parsed
                return
            if self.proc.poll() is not None:
                self._stderr.wait_eof(2.0)
                if self._stderr.wait_for_line(START_LINE, 0) is None:
                    raise self._start_failed(f"exited with status {self.proc.returncode}")
            elif remaining <= 0:
                raise self._start_failed(f"printed no start line within {timeout:g} s")

    def _start_failed(self, what: str) -> ZocketStartError:
        self.close()
        stderr = self.stderr_text(timeout=0)
        return ZocketStartError(f"zocket {' '.join(self.args)!r} {what}; stderr:\n{stderr}")

    # --- what it holds ----------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [h.url for h in self.held]

    @property
    def _first_inet(self) -> HeldSocket:
        for held in self.held:
            if held.is_inet:
                return held
        raise AttributeError(f"zocket holds no inet socket: {self.urls}")

    @property
    def port(self) -> int:
        """The port of the first inet socket zocket holds."""
        port = self._first_inet.port
        assert port is not None
        return port

    @property
    def host(self) -> str:
        """The host of the first inet socket zocket holds (IPv6 without brackets)."""
        host = self._first_inet.host
        assert host is not None
        return host

    # --- its output -------------------------------------------------------------------------

    def stderr_lines(self) -> list[str]:
        """The lines read so far from the stderr of zocket and its server."""
        return self._stderr.lines()

    def stderr_times(self, pattern: re.Pattern[str] | str) -> list[float]:
        """When (time.monotonic(), as read) each stderr line matching ``pattern`` appeared."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        return [when for when, line in self._stderr.timed_lines() if regex.search(line)]

    def stderr_text(self, timeout: float = 5.0) -> str:
        """Everything written on stderr; once zocket has exited, waits (bounded) for the rest."""
        if self.proc.poll() is not None:
            self._stderr.wait_eof(timeout)
        return "".join(line + "\n" for line in self._stderr.lines())

    def wait_for_stderr(self, pattern: re.Pattern[str] | str, timeout: float = 10.0) -> str:
        """The first stderr line matching ``pattern``, waiting for it; AssertionError on timeout."""
        found = self._stderr.wait_for_line(pattern, timeout)
        if found is None:
            raise AssertionError(
                f"no stderr line matching {getattr(pattern, 'pattern', pattern)!r} within "
                f"{timeout:g} s; stderr:\n{self.stderr_text(timeout=0)}"
            )
        return found[1].string

    # --- its life ---------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, sig: int) -> None:
        """Signal zocket itself (not the server), unless it has exited already."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """zocket's exit status once it exits by itself; raises subprocess.TimeoutExpired."""
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` to zocket and return its exit status; AssertionError after ``timeout``."""
        self.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(
                f"zocket did not exit within {timeout:g} s of {signal.Signals(sig).name}; "
                f"stderr:\n{self.stderr_text(timeout=0)}"
            ) from None

    def close(self) -> None:
        """Stop everything this process started, whatever state it is in; idempotent."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    for pgid in self.generation_pids():
                        _kill_group(pgid)
                    self.proc.kill()
                    self.proc.wait()
            # zocket is gone; a server process that outlived it must not outlive the test.
            kill_groups(self.generation_pids())
        finally:
            self.proc.wait()
            self._stderr.close()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()

    def generation_pids(self) -> list[int]:
        """The first pid (and process group) of every generation zocket logged."""
        pids = {self.child_pid} if self.child_pid > 0 else set()
        for line in self.stderr_lines():
            match = _GENERATION_STARTED.search(line)
            if match:
                pids.add(int(match.group(1)))
        return sorted(pids)

    def __enter__(self) -> ZocketProcess:  # noqa: PYI034
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_zocket(
    args: Iterable[object],
    *,
    env: Mapping[str, str] | None = None,
    start_timeout: float = START_TIMEOUT,
    stop_timeout: float = STOP_TIMEOUT,
    prefix: Sequence[str] = (),
    **popen_kw: object,
) -> ZocketProcess:
    """Start ``python -m zocket ARGS`` and wait for its start line.

    ``prefix`` is put before the interpreter; it must exec it (zocket keeps the pid).
    ``env`` defaults to os.environ (see `zocket_env`); other keyword arguments
    go to Popen (``cwd``, ``stdout``, ...; stdin defaults to /dev/null).
    Raises ZocketStartError, with all of stderr, if zocket exits or prints no
    start line within ``start_timeout``; nothing is left running then.
    """
    words = [str(a) for a in args]
    popen_kw.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(  # type: ignore[call-overload]
        [*prefix, *zocket_argv(words)],
        env=zocket_env(env),
        stderr=subprocess.PIPE,
        bufsize=0,
        **popen_kw,
    )
    zocket = ZocketProcess(words, proc, stop_timeout)
    try:
        zocket._await_start(start_timeout)
    except BaseException:
        zocket.close()
        raise
    return zocket


def started(zocket: ZocketProcess) -> list[tuple[int, int]]:
    """(generation, pid) of every ``generation N started`` line so far."""
    found = []
    for line in zocket.stderr_lines():
        match = STARTED.search(line)
        if match:
            found.append((int(match[1]), int(match[2])))
    return found


# --- HTTP -------------------------------------------------------------------------------------


def http_get(
    port: int,
    path: str = "/",
    host: str = "127.0.0.1",
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Message, bytes]:
    """GET ``path`` on a new connection (closed afterwards): (status, headers, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        return response.status, response.headers, body
    finally:
        conn.close()


def answers_ok(port: int) -> bool:
    """Whether a GET / on ``port`` gets a 200 now (for waiting until a server serves)."""
    try:
        return http_get(port, timeout=5)[0] == 200
    except OSError:
        return False


@dataclass(frozen=True)
class Outcome:
    """What became of one request of a `LoadClient`.

    ``kind`` is one of: ``ok`` (a 2xx or 3xx response), ``refused`` (connect()
    refused), ``reset`` (the connection was reset or closed before a whole
    response), ``timeout``, ``http_error`` (a 4xx or 5xx response), ``error``
    (anything else, with the exception in ``error``).
    """

    kind: str
    #: time.monotonic() when the request started, and how long it took.
    started: float
    elapsed: float
    status: int | None = None
    body: bytes = b""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"




class LoadClient:
    """A steady request rate on one port, from background threads, every outcome recorded.

    ``threads`` threads share ``rate`` requests per second, each request on a
    new connection; a thread whose request is slow does not burst afterwards
    to catch up. Threads stop by themselves after ``duration`` seconds, so a
    forgotten client cannot run forever; `stop()` (or leaving the ``with``
    block) stops them sooner and waits for them.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        path: str = "/",
        threads: int = 4,
        rate: float = 100.0,
        duration: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        if threads < 1 or rate <= 0 or duration <= 0 or timeout <= 0:
            raise ValueError("threads, rate, duration and timeout must be positive")
        self.port = port
        self.host = host
        self.path = path
        self.threads = threads
        self.rate = rate
        self.duration = duration
        self.timeout = timeout
        self._outcomes: list[Outcome] = []
        self._recorded = threading.Condition()
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._end = 0.0

    # --- running ----------------------------------------------------------------------------

    def start(self) -> LoadClient:
        if self._workers:
            raise RuntimeError("a LoadClient starts once")
        start = time.monotonic()
        self._end = start + self.duration
        for index in range(self.threads):
            worker = threading.Thread(
                target=self._work,
                args=(start + index / self.rate,),
                name=f"load-{self.port}-{index}",
                daemon=True,
            )
            self._workers.append(worker)
            worker.start()
        return self

    def stop(self) -> None:
        """Stop sending and wait for the requests in flight (at most ``timeout`` more)."""
        self._stopping.set()
        deadline = time.monotonic() + self.timeout + 5.0
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        stuck = [w.name for w in self._workers if w.is_alive()]
        if stuck:
            raise RuntimeError(f"load threads did not stop: {stuck}")

    @property
    def running(self) -> bool:
        return any(w.is_alive() for w in self._workers)

    def __enter__(self) -> LoadClient:  # noqa: PYI034
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _work(self, first: float) -> None:
        interval = self.threads / self.rate
        next_at = first
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= self._end:
                return
            if next_at > now and self._stopping.wait(next_at - now):
                return
            self._record(self._request())
            next_at = max(next_at + interval, time.monotonic())

    def _request(self) -> Outcome:
        started = time.monotonic()

        def outcome(kind: str, **kw: object) -> Outcome:
            return Outcome(kind, started, time.monotonic() - started, **kw)  # type: ignore[arg-type]

        try:
            status, _headers, body = http_get(self.port, self.path, self.host, self.timeout)
        except Exception as exc:  # noqa: BLE001 - recorded, never lost
            # The benchmarks' rule for what a failure is: one rule, so that "no reset" means
            # the same in a test and in a benchmark table.
            return outcome(classify(exc), error=repr(exc))
        kind = "ok" if 200 <= status < 400 else "http_error"
        return outcome(kind, status=status, body=body)

    def _record(self, outcome: Outcome) -> None:
        with self._recorded:
            self._outcomes.append(outcome)
            self._recorded.notify_all()

    # --- results ----------------------------------------------------------------------------

    @property
    def outcomes(self) -> list[Outcome]:
        """Every outcome so far, in the order they completed."""
        with self._recorded:
            return list(self._outcomes)

    @property
    def oks(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def counts(self) -> Counter[str]:
        """How many outcomes of each kind; every failure kind is present, zero or not."""
        counts: Counter[str] = Counter({kind: 0 for kind in ("ok", *FAILURE_KINDS)})
        counts.update(o.kind for o in self.outcomes)
        return counts

    def bodies(self) -> list[bytes]:
        """The bodies of the successful responses, in the order they completed."""
        return [o.body for o in self.oks]

    def wait_for(
        self, predicate: Callable[[Outcome], bool], timeout: float, since: float | None = None
    ) -> Outcome:
        """The first outcome (started at or after ``since``) that satisfies ``predicate``.

        Waits for new outcomes up to ``timeout`` seconds; AssertionError then.
        """
        deadline = time.monotonic() + timeout
        index = 0
        with self._recorded:
            while True:
                for outcome in self._outcomes[index:]:
                    if (since is None or outcome.started >= since) and predicate(outcome):
                        return outcome
                index = len(self._outcomes)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no matching response within {timeout:g} s; counts: {dict(self.counts())}"
                    )
                self._recorded.wait(remaining)

    def summary(self) -> str:
        """Counts, then up to 10 failures: for assertion messages."""
        lines = [f"counts: {dict(self.counts())}"]
        lines += [
            f"  {o.kind} at {o.started:.3f} after {o.elapsed:.3f} s: {o.error or o.status}"
            for o in self.failures()[:10]
        ]
        return "\n".join(lines)


def assert_no_failures(load: LoadClient, minimum_ok: int = 0) -> None:
    """No request of ``load`` failed in any way (`FAILURE_KINDS`); ``minimum_ok`` succeeded."""
    counts = load.counts()
    failed = {kind: counts[kind] for kind in FAILURE_KINDS}
    assert failed == dict.fromkeys(failed, 0), load.summary()
    assert counts["ok"] >= minimum_ok, load.summary()


# --- polling ----------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], T | None], timeout: float, interval: float = 0.05, message: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    For conditions without an event (a file appearing, a process going away);
    raises AssertionError after ``timeout`` seconds. The predicate is always
    tried once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"condition not met within {timeout:g} s" + (f": {message}" if message else "")
            )
        time.sleep(min(interval, remaining))


def need(binary: str) -> str:
    """The path of ``binary``; skips the test without it, fails in CI (which installs it)."""
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is not installed: .ci/run should have installed it")
        pytest.skip(f"{binary} is not installed")
    return path


def connect_refused(port: int) -> bool:
    """Whether a connection to ``port`` on loopback is refused (nothing listens there).

    A reset instead means the last listener was closing just then (its backlog is reset):
    not refused yet, so a caller polling this looks again.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False


def wait_readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` is readable, waiting for it up to ``timeout`` seconds."""
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable)


# --- /proc ------------------------------------------------------------------------------------


def open_fds(pid: int) -> list[int]:
    """The fd numbers process ``pid`` has open, sorted."""
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def own_fds() -> set[int]:
    """This process's open fds, without the one listing them."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the directory fd of the listing itself, already closed
            continue
        if target != f"/proc/{os.getpid()}/fd":
            fds.add(int(name))
    return fds


@contextmanager
def no_new_fds() -> Iterator[None]:
    """Fails, naming what they are, if fds opened in the block are still open after it.

    The ``no_fd_leak`` fixture (conftest.py) runs a whole test in this block.
    """
    before = own_fds()
    yield
    leaked = own_fds() - before
    assert not leaked, {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in leaked}


def socket_inode(pid: int, fd: int) -> int | None:
    """The inode of the socket on ``fd`` of process ``pid``; None if it is not a socket."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except FileNotFoundError:
        return None
    match = re.fullmatch(r"socket:\[(\d+)\]", target)
    return int(match[1]) if match else None


def held_fds(pid: int, inode: int) -> set[int]:
    """The fds of ``pid`` that name the held socket (none once it is gone)."""
    try:
        return {fd for fd, i in socket_inodes(pid).items() if i == inode}
    except FileNotFoundError:
        return set()


def socket_inodes(pid: int) -> dict[int, int]:
    """fd -> socket inode, for every socket process ``pid`` has open."""
    found = {}
    for fd in open_fds(pid):
        inode = socket_inode(pid, fd)
        if inode is not None:
            found[fd] = inode
    return found


def tcp_listeners() -> dict[int, tuple[str, int]]:
    """socket inode -> (address, port) of every listening TCP socket in this network namespace."""
    found: dict[int, tuple[str, int]] = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(table, encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state != "0A":  # TCP_LISTEN
                continue
            hex_address, hex_port = local.split(":")
            raw = bytes.fromhex(hex_address)
            # /proc prints the address as host-order 32-bit words.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found[inode] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return found


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of process ``pid``; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def proc_status(pid: int) -> dict[str, str]:
    """The fields of /proc/PID/status (``Name``, ``SigIgn``, ``Threads``, ...) as text."""
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").partition(":\t")[::2] for line in f if ":\t" in line)


def children_of(pid: int) -> list[int]:
    """The pids of the children of process ``pid``, zombies included, sorted."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat[1] == pid:
                found.append(int(entry))
    return sorted(found)


def group_members(pgid: int, *, zombies: bool = False) -> list[int]:
    """The pids of the processes in process group ``pgid`` (zombies left out by default)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if stat is not None and stat[2] == pgid and (zombies or stat[0] != "Z"):
            members.append(int(entry))
    return sorted(members)


def per_thread(pgid: int, read: Callable[[int], T]) -> dict[int, T]:
    """``read(tid)`` for every thread of every process in group ``pgid``, by tid; threads
    and processes that exit meanwhile are left out."""
    found = {}
    for pid in group_members(pgid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for name in tids:
            try:
                found[int(name)] = read(int(name))
            except ProcessLookupError:
                pass
    return found


def read_cmdline(pid: int) -> list[str]:
    """The argv of process ``pid``."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [os.fsdecode(arg) for arg in f.read().split(b"\0")[:-1]]


def read_environ(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started with."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = [item for item in f.read().split(b"\0") if item]
    return dict(os.fsdecode(item).partition("=")[::2] for item in items)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_groups(pgids: Iterable[int]) -> None:
    """SIGKILL each process group of ``pgids`` that still has a live member."""
    for pgid in pgids:
        if pgid > 1 and group_members(pgid):
            _kill_group(pgid)


# --- a minimal server -------------------------------------------------------------------------

#: The one responder of the tests: a standard-library HTTP server on the socket inherited
#: on fd 3, or on fd argv[1] when that is a number (other arguments are ignored). It
#: answers every GET with a JSON description of what it sees: its generation, pid and
#: start time, the address of its socket, its LISTEN_* variables and the request path
#: (and the generation in an X-Zocket-Generation header).
#:
#: Each RESPONDER_* variable is a comma-separated list of GEN:VALUE (``*`` for any
#: generation), so that generations of one zocket can behave differently:
#:   RESPONDER_BOOT     seconds to sleep before serving (dies of a stop signal meanwhile)
#:   RESPONDER_EXIT     exit with this status instead of serving (after BOOT)
#:   RESPONDER_NOTIFY   raw | zocket: send READY=1 once serving, by hand or with zocket.notify()
#:   RESPONDER_NOTIFY_DELAY  seconds after serving starts before READY=1
#:   RESPONDER_ON_STOP  die (default: the signal's default action) | graceful (finish the
#:                      request in hand, exit 0) | exit:N (graceful, exit N) | ignore
#:   RESPONDER_LOG_DIR  every stop signal received is appended to LOG_DIR/genN.signals
FD_RESPONDER = r"""
import http.server, json, os, signal, socket, sys, threading, time

GENERATION = os.environ.get("ZOCKET_GENERATION", "?")
BOOTED = time.monotonic()
FD = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3


def setting(name, default=""):
    found = default
    for item in os.environ.get("RESPONDER_" + name, "").split(","):
        gen, sep, value = item.partition(":")
        if sep and gen == GENERATION:
            return value
        if sep and gen == "*":
            found = value
    return found


def record(what):
    directory = os.environ.get("RESPONDER_LOG_DIR")
    if directory:
        with open(os.path.join(directory, f"gen{GENERATION}.signals"), "a") as f:
            f.write(what + "\n")


def notify_raw(message):
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message, address)


time.sleep(float(setting("BOOT", "0")))
if setting("EXIT"):
    sys.exit(int(setting("EXIT")))

listener = socket.socket(fileno=FD)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = listener.getsockname()
        body = json.dumps({
            "generation": GENERATION,
            "pid": os.getpid(),
            "booted": BOOTED,
            "sockname": name if isinstance(name, str) else list(name),
            "listen_pid": os.environ.get("LISTEN_PID"),
            "listen_fds": os.environ.get("LISTEN_FDS"),
            "listen_fdnames": os.environ.get("LISTEN_FDNAMES"),
            "path": self.path,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Zocket-Generation", GENERATION)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("", 0), Handler, bind_and_activate=False)
server.socket.close()
server.socket = listener
exit_code = [0]
on_stop = setting("ON_STOP", "die")


def stop(signum, frame):
    record(signal.Signals(signum).name)
    if on_stop.startswith("exit:"):
        exit_code[0] = int(on_stop[5:])
    threading.Thread(target=server.shutdown, daemon=True).start()


def ignore(signum, frame):
    record(signal.Signals(signum).name)


if on_stop != "die":
    # A racing sibling may take the connection select() saw: never block in accept().
    listener.setblocking(False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, ignore if on_stop == "ignore" else stop)


def notify_later(how, delay):
    time.sleep(delay)
    if how == "raw":
        notify_raw(b"READY=1")
    else:
        import zocket
        assert zocket.notify("READY=1")


how = setting("NOTIFY")
if how:
    threading.Thread(
        target=notify_later, args=(how, float(setting("NOTIFY_DELAY", "0"))), daemon=True
    ).start()
server.serve_forever(poll_interval=0.05)
sys.exit(exit_code[0])
"""


def wait_ready(zocket: ZocketProcess, number: int, timeout: float = 40.0) -> int:
    """Wait for zocket's ``generation N ready in M ms``; returns M."""
    line = zocket.wait_for_stderr(rf"zocket: generation {number} ready in \d+ ms", timeout)
    match = re.search(r"ready in (\d+) ms", line)
    assert match is not None
    return int(match[1])


def write_responder(directory: Path) -> Path:
    """Write `FD_RESPONDER` into ``directory``; run it as ``[sys.executable, path]``."""
    path = Path(directory) / "fd_responder.py"
    path.write_text(FD_RESPONDER)
    return path


# --- real servers and their apps --------------------------------------------------------------


def server_command(name: str) -> list[str]:
    """The command that runs server ``name``: its script next to this interpreter, else ``-m``.

    Skips the test if ``name`` is not installed.
    """
    pytest.importorskip(name)
    script = Path(sys.executable).parent / name
    return [str(script)] if script.is_file() else [sys.executable, "-m", name]


def start_in(
    directory: Path, args: Iterable[object], *, home: Path | None = None, **env: str
) -> ZocketProcess:
    """`start_zocket` with ``--port 0 ARGS``, in ``directory``.

    The environment is os.environ, HOME set to ``home`` (default ``directory``;
    gunicorn keeps its control socket there), and ``env`` on top.
    """
    full_env = {**os.environ, "HOME": str(directory if home is None else home), **env}
    return start_zocket(["--port", "0", *args], cwd=directory, env=full_env)


def held_inode(zocket: ZocketProcess) -> int:
    """The inode of the listening socket zocket itself holds on its port."""
    listeners = tcp_listeners()
    found = [
        inode
        for inode in socket_inodes(zocket.pid).values()
        if listeners.get(inode) == (zocket.host, zocket.port)
    ]
    assert len(found) == 1, (found, listeners)
    return found[0]


def write_atomically(path: Path, text: str, tmp_dir: Path | None = None) -> None:
    """Replace ``path`` whole, so that no reloader ever reads half a file.

    The text is written to a temporary file in ``tmp_dir`` (default: next to
    ``path``) and renamed over ``path``; from outside a watched directory the
    rename is the one event a watcher sees.
    """
    tmp = (tmp_dir or path.parent) / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


_WSGI_APP = Template('''\
$prelude

def app(environ, start_response):
    body = ($body).encode()
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
$headers
    ])
    return [body]
''')

_ASGI_APP = Template('''\
$prelude

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = ($body).encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(body)).encode()),
$headers
        ],
    })
    await send({"type": "http.response.body", "body": body})
''')


def wsgi_app(body: str, *, prelude: str = "", headers: Mapping[str, str] | None = None) -> str:
    """The source of a module whose WSGI ``app`` answers every request 200, text/plain.

    ``prelude`` is the module's code before the app; ``body`` is a Python
    expression for the response text (a str, evaluated per request, sent UTF-8
    encoded with its Content-Length); ``headers`` maps the names of extra
    response headers to Python expressions for their (str) values.
    """
    lines = [f'        ("{name}", {value}),' for name, value in (headers or {}).items()]
    return _WSGI_APP.substitute(prelude=prelude, body=body, headers="\n".join(lines))


def asgi_app(body: str, *, prelude: str = "", headers: Mapping[str, str] | None = None) -> str:
    """`wsgi_app` as an ASGI app, with the lifespan protocol (uvicorn and hypercorn speak it)."""
    lines = [
        f'            (b"{name.lower()}", ({value}).encode()),'
        for name, value in (headers or {}).items()
    ]
    return _ASGI_APP.substitute(prelude=prelude, body=body, headers="\n".join(lines))


def zombie_children(pid: int) -> list[int]:
    """The children of ``pid`` that exited and were not reaped yet."""
    return [c for c in children_of(pid) if (st := proc_stat(c)) is not None and st[0] == "Z"]


# --- a process under the hook, handed a socket the test holds --------------------------------

#: A whole HTTP/1.1 request, for clients written by hand.
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


class HookedProcess:
    """A listening socket of the test's, handed to a process under the hook as zocket does.

    ``{fd}`` and ``{port}`` in ``argv`` become the socket's fd and port. What the
    process leaves in the queue can be accepted by the test afterwards.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.fd = self.listener.fileno()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOCKET_", "LISTEN_"))}
        env.update(
            PYTHONPATH=_hook_dir(),
            ZOCKET_HOOK_FDS=f"{self.fd}:{os.fstat(self.fd).st_ino}",
            PYTHONUNBUFFERED="1",
            **(extra_env or {}),
        )
        with _ignored_signals_not_inherited():
            self.process = subprocess.Popen(
                [a.replace("{fd}", str(self.fd)).replace("{port}", str(self.port)) for a in argv],
                env=env,
                cwd=cwd,
                pass_fds=[self.fd],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        self._out = b""

    def line(self, timeout: float = 20.0) -> str:
        """The process's next line on stdout (fails after ``timeout``)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._out:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise AssertionError(f"no whole line within {timeout} s: {self._out!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"stdout closed: {self._out!r}\n{self.stderr()}")
            self._out += chunk
        line, _, self._out = self._out.partition(b"\n")
        return line.decode().strip()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=20)

    def backlog(self) -> int:
        """Connections waiting in the held socket's accept queue (from /proc/net/tcp)."""
        inode = os.fstat(self.fd).st_ino
        with open("/proc/net/tcp") as table:
            for row in table.readlines()[1:]:
                fields = row.split()
                if int(fields[9]) == inode:
                    return int(fields[4].split(":")[1], 16)
        raise AssertionError("the held socket is not in /proc/net/tcp")

    def left_in_queue(self) -> list[bytes]:
        """Accept what still waits in the held socket and read each request."""
        self.listener.setblocking(False)
        requests: list[bytes] = []
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return requests
            with conn:
                conn.settimeout(20)
                requests.append(conn.recv(1000))

    def stderr(self) -> str:
        """What the process wrote on stderr so far (for failure messages: never waits)."""
        assert self.process.stderr is not None
        os.set_blocking(self.process.stderr.fileno(), False)
        try:
            return (self.process.stderr.read() or b"").decode(errors="replace")
        except BlockingIOError:
            return ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(20)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        self.listener.close()


@contextmanager
def _ignored_signals_not_inherited() -> Iterator[None]:
    """Start a process with the signal dispositions zocket gives its children: the default.

    An ignored signal survives exec, and a shell ignores SIGINT and SIGQUIT in the jobs
    it puts in the background, so a test run started with ``&`` would otherwise hand its
    processes an ignored SIGINT, and Python would then install no KeyboardInterrupt
    handler. For the moment of the fork each ignored one is caught by a handler that does
    nothing, which the exec resets to the default; then it is ignored again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ignored = [
        s for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM)
        if signal.getsignal(s) is signal.SIG_IGN
    ]
    for s in ignored:
        signal.signal(s, lambda signum, frame: None)
    try:
        yield
    finally:
        for s in ignored:
            signal.signal(s, signal.SIG_IGN)


@contextmanager
def hooked_process(argv: Sequence[str], **kw: object) -> Iterator[HookedProcess]:
    """A `HookedProcess`, always killed and closed afterwards."""
    running = HookedProcess(argv, **kw)  # type: ignore[arg-type]
    try:
        yield running
    finally:
        running.close()


def assert_taken_answered_late_queued(
    running: HookedProcess, taken: list[socket.socket], late: list[socket.socket]
) -> None:
    """Each client sends its request; the server must answer every connection it took
    before its stop and leave every ``late`` one in the held socket's queue."""
    for client in taken + late:
        client.sendall(REQUEST)
    answers = [answer(c) for c in taken]
    assert all(a.startswith(b"HTTP/1.1 200 OK") for a in answers), answers
    running.process.wait(20)
    assert running.left_in_queue() == [REQUEST] * len(late), running.stderr()
    for client in late:
        client.close()


def answer(client: socket.socket) -> bytes:
    """What the client got: the whole response, b"" for a close, b"<reset>" for a reset."""
    with client:
        try:
            return client.makefile("rb").read()
        except ConnectionResetError:
            return b"<reset>"


def _hook_dir() -> str:
    """The hook of the zocket under test (imported here only: benchmarks use this module)."""
    from zocket import holder

    return holder.HOOK_DIR
