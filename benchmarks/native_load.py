"""The open-loop load from a process of its own: benchmarks/openloop.c, built with the C compiler.

`OpenLoopLoad` runs in the runner's process: at 1000 requests/s on two cores
its asyncio loop lags by 1-5 ms while a new generation boots, and that lag is
counted as the server's latency, exactly inside the restart windows the
benchmark compares with the rest. `NativeOpenLoopLoad` asks the same requests
of the same server on the same schedule, but from a C program with its own
process and a few microseconds of work per request, so that what it records is
the server's time. Its records are the same `Record` values on the same clock
(CLOCK_MONOTONIC, which is ``time.monotonic()``): the runner marks restarts
with `now()` and `wait_for` sees records within a few milliseconds, as before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from functools import partial
from pathlib import Path
from typing import IO

from .build import build_into
from .load import KINDS, LoadClient, OpenLoopLoad, Record

__all__ = ["SOURCE", "NativeOpenLoopLoad", "build_openloop", "compiler_path", "native_client"]

SOURCE = Path(__file__).with_name("openloop.c")


def compiler_path() -> str | None:
    """The C compiler the client is built with: $CC, else cc or gcc on PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and (found := shutil.which(name)):
            return found
    return None


def build_openloop(directory: Path) -> Path:
    """openloop.c compiled into ``directory`` (once: an existing binary newer than the
    source is reused). Raises RuntimeError, with the compiler's words, when it fails."""
    binary = directory / "openloop"
    if binary.is_file() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    compiler = compiler_path()
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH for the load client")
    failed = build_into(binary, [compiler, "-O2", "-Wall", "-o", "{out}", str(SOURCE)], timeout=120)
    if failed is not None:
        raise RuntimeError(f"building the load client failed {failed}")
    return binary


def parse_record(line: str) -> Record:
    """One ``R scheduled started ended kind status generation error`` line as a Record."""
    tag, scheduled, started, ended, kind, status, generation, *error = line.rstrip("\n").split(
        " ", 7
    )
    if tag != "R" or kind not in KINDS:
        raise ValueError(f"not a record line: {line!r}")
    return Record(
        float(scheduled),
        float(started),
        float(ended),
        kind,
        None if status == "-" else int(status),
        None if generation == "-" else generation,
        error[0] if error else "",
    )


class NativeOpenLoopLoad(OpenLoopLoad):
    """`OpenLoopLoad`'s requests, records and interface, from the compiled client.

    A thread of the runner only reads the client's lines into records. `stop()`
    closes the client's stdin; it then waits for the requests in flight (the
    request timeout and 5 s at most) and ends with a last line of its own.
    """

    def __init__(self, binary: Path, port: int, rate: float, **kwargs: float | str) -> None:
        super().__init__(port, rate, **kwargs)  # type: ignore[arg-type]
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._ended = False

    def start(self) -> NativeOpenLoopLoad:
        if self._process is not None:
            raise RuntimeError("an OpenLoopLoad starts once")
        self._process = subprocess.Popen(
            [
                str(self.binary),
                self.host,
                str(self.port),
                self.path,
                repr(self.rate),
                repr(self.timeout),
                repr(self.max_duration),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Bytes: only "\n" ends a record (a "\r" may be in a header value), and
            # values are decoded as load.read_response decodes them, latin-1. (A buffered
            # readline returns each line as soon as it is in: the reads take what is there.)
        )
        assert self._process.stdout is not None
        first = self._process.stdout.readline().decode("latin-1")
        if not first.startswith("S "):
            self._process.kill()
            self._process.wait()
            raise RuntimeError(f"the load client did not start: {first.strip()!r}")
        self.origin = int(first.split()[1]) / 1e9
        self._thread = threading.Thread(
            target=self._read, args=(self._process.stdout,), name=f"load-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    @property
    def pid(self) -> int | None:
        """The client process's pid, once started (a scheduler trace names it the client)."""
        return self._process.pid if self._process is not None else None

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode("latin-1")
                if line.startswith("E"):
                    self._ended = True
                    break
                record = parse_record(line)
                with self._lock:
                    self._records.append(record)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._crash = exc
            # Nobody reads its output now: it would block on a full pipe, never stop.
            if self._process is not None:
                self._process.kill()

    def stop(self) -> list[Record]:
        process = self._process
        if process is not None and process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
        if self._thread is not None:
            self._thread.join(self.timeout + 10.0)
        if process is not None:
            try:
                status = process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise RuntimeError("the load client did not stop") from None
            finally:
                if process.stdout is not None:
                    process.stdout.close()
            if status != 0 and self._crash is None:
                raise RuntimeError(f"the load client failed with status {status}")
        if self._crash is not None:
            raise RuntimeError(f"the load client failed: {self._crash!r}") from self._crash
        if process is not None and not self._ended:
            raise RuntimeError("the load client ended without its last line")
        return self.records()


def native_client(binary: Path) -> LoadClient:
    """A `LoadClient` whose loads come from ``binary`` (`build_openloop`'s)."""
    return partial(NativeOpenLoopLoad, binary)
