"""The benchmarks' two open-loop clients count every outcome alike, against real sockets.

Each case is a small server on loopback that answers one way (well, with a 500,
by closing early, never); both clients, the runner's Python thread and the C
process (benchmarks/openloop.c), must record the same kinds, statuses and
generations, on the schedule k/rate, on the runner's clock.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.load import KINDS, OpenLoopLoad, Record
from benchmarks.native_load import (
    NativeOpenLoopLoad,
    build_openloop,
    compiler_path,
    native_client,
    parse_record,
)

pytestmark = pytest.mark.skipif(compiler_path() is None, reason="no C compiler")

#: What a test server does with one connection, after reading the request's head.
Behaviour = Callable[[socket.socket], None]


def respond(status: str = "200 OK", generation: str = "7", body: bytes = b"hello\n") -> Behaviour:
    def answer(conn: socket.socket) -> None:
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nX-Generation: {generation}"
            "\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    return answer


def chunked(conn: socket.socket) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Generation: c\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )


def in_pieces(*pieces: bytes) -> Behaviour:
    """The response written in several writes, a little apart, as a slow server would."""

    def answer(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(0.01)

    return answer


HEAD = b"HTTP/1.1 200 OK\r\nx-generation: p\r\n"
#: A body in pieces, by a lower-case Content-Length.
SPLIT_BODY = in_pieces(HEAD + b"content-length: 10\r\n\r\nhello", b" wor", b"ld")
#: Chunks in pieces, the last chunk with an extension, then a trailer. The first piece
#: ends in "0\r\n\r\n" inside a chunk's data: not yet the last chunk.
SPLIT_CHUNKS = in_pieces(
    HEAD + b"Transfer-Encoding: chunked\r\n\r\n9\r\nabcd0\r\n\r\n",
    b"\r\n3\r\nxyz\r\n0;last\r\n",
    b"Trailer: t\r\n\r\n",
)
#: A body shorter than its chunk size, then the end of the stream.
SHORT_CHUNK = in_pieces(HEAD + b"Transfer-Encoding: chunked\r\n\r\n9\r\nabc")


def bad_length(conn: socket.socket) -> None:
    conn.sendall(HEAD + b"Content-Length: lots\r\n\r\nhello")


def bad_status(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 20x OK\r\nContent-Length: 0\r\n\r\n")


def cut_short(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")


def close_at_once(conn: socket.socket) -> None:
    pass


def not_http(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")


def until_eof(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 200 OK\r\nX-Generation: eof\r\n\r\nthe body runs to the end")


@contextlib.contextmanager
def server(behaviour: Behaviour, *, answer: bool = True) -> Iterator[int]:
    """A loopback server doing ``behaviour`` on every connection; its port. With ``answer``
    False it accepts nothing: connections wait in its backlog (a server that hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    listener.settimeout(0.05)
    stop = threading.Event()

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            behaviour(conn)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    if answer:
        thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        if answer:
            thread.join(5)
        listener.close()


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_openloop(tmp_path_factory.mktemp("openloop"))


@pytest.fixture(params=["python", "native"])
def client(request: pytest.FixtureRequest, binary: Path) -> Callable[..., OpenLoopLoad]:
    return OpenLoopLoad if request.param == "python" else native_client(binary)


def run_for(
    make: Callable[..., OpenLoopLoad], port: int, seconds: float, rate: float = 100.0, **kw: float
) -> list[Record]:
    load = make(port, rate, **kw).start()
    time.sleep(seconds)
    return load.stop()


def kinds(records: list[Record]) -> set[str]:
    return {r.kind for r in records}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_answers_are_ok_with_their_generation_on_the_schedule(
    client: Callable[..., OpenLoopLoad],
) -> None:
    with server(respond()) as port:
        records = run_for(client, port, 0.5, rate=100.0)
    assert 45 <= len(records) <= 56
    assert kinds(records) == {"ok"}
    assert {r.status for r in records} == {200} and {r.generation for r in records} == {"7"}
    scheduled = sorted(r.scheduled for r in records)
    assert scheduled == pytest.approx([k / 100 for k in range(len(records))], abs=1e-6)
    for r in records:
        assert r.scheduled - 0.001 <= r.started <= r.ended
        assert 0 <= r.latency < 1.0


def test_the_records_share_the_runners_clock(client: Callable[..., OpenLoopLoad]) -> None:
    with server(respond()) as port:
        load = client(port, 50.0).start()
        first = load.wait_for(lambda r: r.ok, timeout=5)
        seen_at = load.now()
        load.stop()
    assert first is not None
    assert 0 <= first.ended <= seen_at < first.ended + 1.0


@pytest.mark.parametrize(
    ("behaviour", "kind", "status", "generation"),
    [
        (respond("500 Internal Server Error", "9"), "http_error", 500, "9"),
        (respond("404 Not Found"), "http_error", 404, "7"),
        (respond("302 Found", "r"), "ok", 302, "r"),
        (chunked, "ok", 200, "c"),
        (until_eof, "ok", 200, "eof"),
        (cut_short, "reset", None, None),
        (close_at_once, "reset", None, None),
        (not_http, "error", None, None),
        (SPLIT_BODY, "ok", 200, "p"),
        (SPLIT_CHUNKS, "ok", 200, "p"),
        (SHORT_CHUNK, "reset", None, None),
        (bad_length, "error", None, None),
        (bad_status, "error", None, None),
    ],
    ids=str.split(
        "500 404 302 chunked to-eof cut-short closed not-http split-body split-chunks"
        " short-chunk bad-length bad-status"
    ),
)
def test_each_outcome_is_counted_alike(
    client: Callable[..., OpenLoopLoad],
    behaviour: Behaviour,
    kind: str,
    status: int | None,
    generation: str | None,
) -> None:
    with server(behaviour) as port:
        records = run_for(client, port, 0.2)
    assert records and kinds(records) == {kind}
    if kind != "reset":  # a cut-short response's status is not the point
        assert {r.status for r in records} == {status}
        assert {r.generation for r in records} == {generation}
    # A failure says why; an answer, even a 500, is its own explanation.
    assert all(bool(r.error) == (kind not in ("ok", "http_error")) for r in records)


def test_a_closed_port_is_refused(client: Callable[..., OpenLoopLoad]) -> None:
    records = run_for(client, free_port(), 0.2)
    assert records and kinds(records) == {"refused"}


def test_a_server_that_never_answers_times_out(client: Callable[..., OpenLoopLoad]) -> None:
    with server(respond(), answer=False) as port:
        records = run_for(client, port, 0.2, rate=20.0, timeout=0.3)
    assert records and kinds(records) == {"timeout"}
    assert all(0.3 <= r.ended - r.started < 1.5 for r in records)


def test_the_native_client_stops_within_its_requests_timeout(binary: Path) -> None:
    """Requests still in flight at stop() get the timeout, then end as errors or timeouts:
    every request scheduled is recorded, none lost."""
    with server(respond(), answer=False) as port:
        load = NativeOpenLoopLoad(binary, port, 100.0, timeout=0.5).start()
        time.sleep(0.1)
        began = time.monotonic()
        records = load.stop()
        took = time.monotonic() - began
    assert took < 0.5 + 5.0 + 1.0
    assert len(records) >= 8 and kinds(records) <= {"timeout", "error"}
    scheduled = sorted(r.scheduled for r in records)  # every one scheduled, none lost
    assert scheduled == pytest.approx([k / 100 for k in range(len(records))], abs=1e-6)


def test_a_client_that_cannot_be_built_says_why(tmp_path: Path) -> None:
    env = {**os.environ, "CC": str(tmp_path / "no-such-compiler")}
    env["PATH"] = str(tmp_path)  # no cc, no gcc
    env["PYTHONPATH"] = str(REPO)  # for benchmarks/, which imports no zocket
    program = (
        "from pathlib import Path; from benchmarks.native_load import build_openloop; "
        f"build_openloop(Path({str(tmp_path)!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "no C compiler (cc or gcc) on PATH for the load client" in result.stderr


def test_the_runner_refuses_a_native_client_it_cannot_build(tmp_path: Path) -> None:
    """``--client native`` without a compiler: one line, status 2, before anything runs."""
    env = {**os.environ, "CC": "", "PATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--client", "native",
         "--scenarios", "plain", "--no-cost"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("[bench")]
    assert lines == ["run.py: no C compiler (cc or gcc) on PATH for the load client"]


text = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@given(
    times=st.tuples(*(st.floats(0, 1e5, allow_nan=False) for _ in range(3))),
    kind=st.sampled_from(KINDS),
    status=st.one_of(st.none(), st.integers(100, 999)),
    generation=st.one_of(st.none(), text.filter(lambda s: s != "-")),
    error=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
def test_record_lines_are_read_back(
    times: tuple[float, float, float],
    kind: str,
    status: int | None,
    generation: str | None,
    error: str,
) -> None:
    line = " ".join(
        ["R", *(f"{t:.6f}" for t in times), kind, str(status or "-"), generation or "-", error]
    )
    record = parse_record(line + "\n")
    assert record.scheduled == pytest.approx(times[0], abs=1e-6)
    assert record.ended == pytest.approx(times[2], abs=1e-6)
    assert (record.kind, record.status, record.generation) == (kind, status, generation)
    assert record.error == error


def test_a_line_that_is_no_record_is_refused() -> None:
    with pytest.raises(ValueError, match="not a record line"):
        parse_record("R 0.1 0.1 0.2 fine 200 - \n")
