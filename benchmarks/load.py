"""Client load for the benchmarks, and the record of every request's outcome.

Two clients, both on loopback and both bounded in time:

* `OpenLoopLoad`: one request per ``1/rate`` seconds, each on a NEW connection,
  scheduled at fixed times ``origin + k/rate`` whatever happened to the
  requests before. It is open-loop on purpose: a server that stalls for two
  seconds gets the same requests as one that does not, and the stall shows as
  latency (measured from the *scheduled* time) instead of as fewer requests.
  It runs an asyncio loop in a background thread so that any number of
  requests can be in flight during a stall without a thread each.
* `keep_alive_load` / `run_wrk`: a closed-loop keep-alive load for throughput,
  where the question is what the server (and zocket in front of it) costs,
  not what a restart does.

Every request ends as one `Record`; the kinds are those of the README: ok,
refused, reset, timeout, http_error, and error for anything else (so that no
outcome is ever lost or miscounted as a success).
"""

from __future__ import annotations

import asyncio
import http.client
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = [
    "FAILURE_KINDS",
    "KINDS",
    "KeepAliveResult",
    "LoadClient",
    "OpenLoopLoad",
    "Record",
    "classify",
    "get_once",
    "keep_alive_load",
    "run_wrk",
]

#: Every kind a request can end as; ``ok`` first, then the failures.
FAILURE_KINDS = ("refused", "reset", "timeout", "http_error", "error")
KINDS = ("ok", *FAILURE_KINDS)
#: The response header the benchmark apps put their generation in.
GENERATION_HEADER = "x-generation"


class Record(NamedTuple):
    """What became of one request. Times are seconds since the load's origin.

    ``scheduled`` is when the request was due, ``started`` when the client
    really began to connect (later only if the client itself lagged), and
    ``ended`` when the response was complete or the request failed.
    ``latency`` is measured from ``scheduled``: a request stuck behind a stall
    is charged for the whole stall.

    A tuple of plain values on purpose: the garbage collector stops tracking
    such tuples, so a run's hundred thousand records never make the client
    pause for a collection (a dataclass each did: pauses of tens of ms, which
    the figures charged to the server).
    """

    scheduled: float
    started: float
    ended: float
    kind: str
    status: int | None = None
    generation: str | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def latency(self) -> float:
        return self.ended - self.scheduled


class ClosedEarly(ConnectionError):
    """The server closed the connection before a whole response (counted as ``reset``)."""


class BadResponse(Exception):
    """Something that is not HTTP/1.x came back (counted as ``error``)."""


def classify(exc: BaseException) -> str:
    """The outcome kind of a request that raised ``exc``: the one rule, for the benchmarks'
    asyncio client and the tests' threaded one alike."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(
        exc,
        (
            ConnectionResetError,
            BrokenPipeError,
            ConnectionAbortedError,
            ClosedEarly,
            asyncio.IncompleteReadError,
            http.client.RemoteDisconnected,
            http.client.IncompleteRead,
        ),
    ):
        return "reset"
    return "error"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one HTTP/1.x response.

    The body is read by Content-Length, chunked encoding, or up to EOF, so
    that a response cut short is a ``reset`` and never an ``ok``.
    """
    line = await reader.readline()
    if not line:
        raise ClosedEarly("connection closed before a status line")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise BadResponse(f"not an HTTP status line: {line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if not line or not line.endswith(b"\n"):
            raise ClosedEarly("connection closed in the response headers")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readline()
            if not size_line.endswith(b"\n"):
                raise ClosedEarly("connection closed in a chunk header")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()  # the empty trailer
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return status, headers, bytes(body)
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    return status, headers, await reader.read()


def _request_bytes(host: str, port: int, path: str, keep_alive: bool) -> bytes:
    connection = "keep-alive" if keep_alive else "close"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: zocket-bench\r\n"
        f"Connection: {connection}\r\n\r\n"
    ).encode("ascii")


class OpenLoopLoad:
    """Requests at a fixed rate on new connections, every outcome recorded.

    ``origin`` (time.monotonic() at `start`) is the zero of every `Record`
    time; callers that mark events (restarts) use `now()` on the same clock.
    The scheduler stops by itself after ``max_duration`` so that a forgotten
    load cannot run forever; `stop()` stops it sooner and waits (at most the
    request timeout and a bit) for the requests in flight.
    """

    def __init__(
        self,
        port: int,
        rate: float,
        *,
        host: str = "127.0.0.1",
        path: str = "/",
        timeout: float = 10.0,
        max_duration: float = 900.0,
    ) -> None:
        if rate <= 0 or timeout <= 0 or max_duration <= 0:
            raise ValueError("rate, timeout and max_duration must be positive")
        self.host = host
        self.port = port
        self.path = path
        self.rate = rate
        self.timeout = timeout
        self.max_duration = max_duration
        self.origin = 0.0
        self._request = _request_bytes(host, port, path, keep_alive=False)
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None

    # --- control ------------------------------------------------------------------------

    def start(self) -> OpenLoopLoad:
        if self._thread is not None:
            raise RuntimeError("an OpenLoopLoad starts once")
        # The loop shares the GIL with the caller's thread: hand it over within a
        # millisecond (default 5 ms), so that the caller's work never shows as latency.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self.origin = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"load-{self.port}", daemon=True)
        self._thread.start()
        return self

    def now(self) -> float:
        """Seconds since the origin, on the clock of the records."""
        return time.monotonic() - self.origin

    def stop(self) -> list[Record]:
        """Stop scheduling, wait for the requests in flight, return every record."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 10.0)
            if self._thread.is_alive():
                raise RuntimeError("the load thread did not stop")
        if self._crash is not None:
            raise RuntimeError(f"the load client failed: {self._crash!r}") from self._crash
        return self.records()

    # --- results ------------------------------------------------------------------------

    def records(self) -> list[Record]:
        """Every record so far, in completion order."""
        with self._lock:
            return list(self._records)

    def wait_for(
        self, predicate: Callable[[Record], bool], timeout: float, since: float = 0.0
    ) -> Record | None:
        """The first record ended at or after ``since`` that satisfies ``predicate``.

        Polls (every 10 ms) for at most ``timeout`` seconds; None then.
        """
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            with self._lock:
                fresh = self._records[index:]
                index = len(self._records)
            for record in fresh:
                if record.ended >= since and predicate(record):
                    return record
            if time.monotonic() >= deadline or not self._alive():
                return None
            time.sleep(0.01)

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._schedule())
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._crash = exc

    async def _schedule(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        limit = int(self.rate * self.max_duration) + 1
        for k in range(limit):
            if self._stopping.is_set():
                break
            due = k / self.rate
            delay = due - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
                if self._stopping.is_set():
                    break
            task = asyncio.get_running_loop().create_task(self._one(due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(set(in_flight), timeout=self.timeout + 5.0)
        for task in list(in_flight):
            task.cancel()

    async def _one(self, scheduled: float) -> None:
        started = self.now()
        status: int | None = None
        generation: str | None = None
        error = ""
        try:
            code, headers = await asyncio.wait_for(self._exchange(), self.timeout)
            status, generation = code, headers.get(GENERATION_HEADER)
            kind = "ok" if 200 <= code < 400 else "http_error"
        except asyncio.CancelledError:
            kind, error = "error", "cancelled when the load stopped"
        except Exception as exc:  # noqa: BLE001 - every outcome is recorded
            kind, error = classify(exc), f"{type(exc).__name__}: {exc}"
        record = Record(scheduled, started, self.now(), kind, status, generation, error)
        with self._lock:
            self._records.append(record)

    async def _exchange(self) -> tuple[int, dict[str, str]]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(self._request)
            await writer.drain()
            status, headers, _body = await read_response(reader)
            return status, headers
        finally:
            writer.close()


class LoadClient(Protocol):
    """What makes an open-loop load: `OpenLoopLoad` itself, or the compiled client's maker
    (native_load), called as ``client(port, rate, timeout=..., max_duration=...)``."""

    def __call__(
        self, port: int, rate: float, *, timeout: float = ..., max_duration: float = ...
    ) -> OpenLoopLoad: ...


def get_once(
    port: int, host: str = "127.0.0.1", path: str = "/", timeout: float = 5.0
) -> tuple[int, str | None]:
    """One GET on a new connection: (status, X-Generation). Raises OSError and friends."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader(GENERATION_HEADER)
    finally:
        conn.close()


# --- keep-alive throughput ------------------------------------------------------------------


@dataclass
class KeepAliveResult:
    """A closed-loop keep-alive run: how many requests, how fast, how long each took."""

    tool: str
    duration: float
    connections: int
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    reconnects: int = 0


def keep_alive_load(
    port: int,
    *,
    host: str = "127.0.0.1",
    connections: int = 8,
    duration: float = 5.0,
    timeout: float = 5.0,
) -> KeepAliveResult:
    """The runner's own keep-alive client, for machines without wrk.

    ``connections`` connections send requests back to back for ``duration``
    seconds, reconnecting when the server closes one. It is Python: on a
    small machine it is likely the bottleneck, which wrk is not.
    """
    from .metrics import percentile  # here to keep load importable on its own

    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0, "reconnects": 0}
    request = _request_bytes(host, port, "/", keep_alive=True)

    async def one_connection(deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout
                )
            except Exception:  # noqa: BLE001 - counted; tried again
                counts["errors"] += 1
                await asyncio.sleep(0.01)
                continue
            try:
                while time.monotonic() < deadline:
                    sent = time.monotonic()
                    writer.write(request)
                    status, headers, _ = await asyncio.wait_for(read_response(reader), timeout)
                    latencies.append(time.monotonic() - sent)
                    counts["requests"] += 1
                    if not 200 <= status < 400:
                        counts["errors"] += 1
                    if headers.get("connection", "").lower() == "close":
                        counts["reconnects"] += 1
                        break
            except Exception:  # noqa: BLE001 - counted; the connection is replaced
                counts["errors"] += 1
                await asyncio.sleep(0.01)
            finally:
                writer.close()

    async def main() -> float:
        began = time.monotonic()
        deadline = began + duration
        await asyncio.gather(*(one_connection(deadline) for _ in range(connections)))
        return time.monotonic() - began

    elapsed = asyncio.run(main())
    ms = sorted(x * 1000 for x in latencies)
    return KeepAliveResult(
        tool="python keep-alive client",
        duration=elapsed,
        connections=connections,
        requests=counts["requests"],
        errors=counts["errors"],
        requests_per_s=counts["requests"] / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        max_ms=ms[-1] if ms else None,
        reconnects=counts["reconnects"],
    )


def wrk_path() -> str | None:
    """wrk (Debian's package) when it is on PATH."""
    return shutil.which("wrk")


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _WRK_UNITS[match[2]]


def parse_wrk(output: str) -> dict[str, float]:
    """requests_per_s, p50_ms, p99_ms, max_ms, requests and errors from ``wrk --latency``."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "Latency" and len(words) >= 4:
            found["max_ms"] = _wrk_ms(words[3])
        elif words[0] == "50%":
            found["p50_ms"] = _wrk_ms(words[1])
        elif words[0] == "99%":
            found["p99_ms"] = _wrk_ms(words[1])
        elif line.strip().startswith("Requests/sec:"):
            found["requests_per_s"] = float(words[1])
        elif "requests in" in line:
            found["requests"] = float(words[0])
        elif line.strip().startswith("Socket errors:"):
            found["errors"] = found.get("errors", 0.0) + sum(
                float(n) for n in re.findall(r"\d+", line)
            )
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            found["errors"] = found.get("errors", 0.0) + float(words[-1])
    return found


def run_wrk(
    port: int,
    *,
    host: str = "127.0.0.1",
    connections: int = 8,
    duration: float = 5.0,
    threads: int = 2,
) -> KeepAliveResult:
    """wrk's keep-alive load, parsed into the same figures as `keep_alive_load`."""
    wrk = wrk_path()
    if wrk is None:
        raise FileNotFoundError("wrk is not on PATH")
    seconds = max(1, round(duration))
    result = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            f"http://{host}:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr.strip()}")
    figures = parse_wrk(result.stdout)
    if "requests_per_s" not in figures:
        raise RuntimeError(f"could not read wrk's output:\n{result.stdout}")
    return KeepAliveResult(
        tool="wrk",
        duration=float(seconds),
        connections=connections,
        requests=int(figures.get("requests", 0)),
        errors=int(figures.get("errors", 0)),
        requests_per_s=figures["requests_per_s"],
        p50_ms=figures.get("p50_ms"),
        p99_ms=figures.get("p99_ms"),
        max_ms=figures.get("max_ms"),
    )
