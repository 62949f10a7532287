"""The servers the benchmark restarts: one small class per scenario (start, trigger, stop).

Every scenario runs a real server on loopback in a fresh directory, on an app
that sleeps ``BOOT`` seconds at import (the boot time of a real app) and puts
its generation in an ``X-Generation`` header, so that a restart that silently
never happened shows as a generation never seen. Where the generation comes
from depends on what restarts the code:

* ``env:NAME``: an environment variable the generation was started with
  (``ZOCKET_GENERATION`` under zocket; a counter the runner passes to plain
  gunicorn);
* ``file``: ``generation.txt`` next to the app, read at import (gunicorn's own
  SIGHUP reload, where no environment changes);
* ``edit``: the ``EDIT = N`` constant the runner writes into the app file to
  trigger a reloader: the answer then comes from the edited code itself.

Processes start in their own session, write to a log file outside the app
directory (``--watch`` must not see it), and are always stopped with a bounded
wait: SIGTERM, then SIGKILL to their process groups.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from .build import build_into
from .load import get_once

__all__ = [
    "GUNICORN_ARGS",
    "HEADLINE",
    "REFERENCE",
    "SCENARIOS",
    "STOP_TIMEOUT",
    "Scenario",
    "ScenarioError",
    "free_port",
    "wait_first_ok",
]

#: The repository root: zocket runs from this checkout, not from whatever is installed.
REPO = Path(__file__).resolve().parents[1]
#: How long a process gets to stop after SIGTERM, before SIGKILL.
STOP_TIMEOUT = 15.0
#: How long zocket gets to print its start line.
START_LINE_TIMEOUT = 20.0
START_LINE = re.compile(r"zocket: holding \S+://[^ ]+:(\d+) .*generation 1 started \(pid (\d+)\)")
GENERATION_STARTED = re.compile(r"zocket: generation (\d+) started \(pid (\d+)\)")
#: gunicorn's options in every scenario (and in the cold start it is compared with).
GUNICORN_ARGS = ("--workers", "2")

# --- the apps -----------------------------------------------------------------------------

#: Shared by every app: the boot sleep and where the generation comes from.
_PRELUDE = """\
import os
import time
from pathlib import Path

EDIT = {edit}
time.sleep(float(os.environ.get("BOOT") or 0))


def _generation() -> str:
    source = os.environ.get("BENCH_GENERATION_SOURCE", "edit")
    if source == "edit":
        return str(EDIT)
    if source == "file":
        return Path(os.environ["BENCH_GENERATION_FILE"]).read_text().strip()
    return os.environ.get(source[len("env:"):], "?")


GENERATION = _generation()
BODY = f"generation {{GENERATION}} pid {{os.getpid()}}\\n".encode()
"""

WSGI_APP = '''\
"""Benchmark WSGI app: sleeps BOOT seconds at import, answers with its generation."""
{prelude}

def app(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(BODY))),
        ("X-Generation", GENERATION),
    ])
    return [BODY]
'''

ASGI_APP = '''\
"""Benchmark ASGI app: sleeps BOOT seconds at import, answers with its generation."""
{prelude}
HEADERS = [
    (b"content-type", b"text/plain"),
    (b"content-length", str(len(BODY)).encode()),
    (b"x-generation", GENERATION.encode()),
]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    await send({{"type": "http.response.start", "status": 200, "headers": HEADERS}})
    await send({{"type": "http.response.body", "body": BODY}})
'''

DJANGO_VIEWS = '''\
"""Benchmark Django view: the module sleeps BOOT seconds at import (runserver's checks
import it before serving) and answers with its generation."""
from django.http import HttpResponse
{prelude}

def index(request):
    response = HttpResponse(BODY, content_type="text/plain")
    response["Content-Length"] = str(len(BODY))
    response["X-Generation"] = GENERATION
    return response
'''

DJANGO_FILES = {
    "manage.py": """\
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
""",
    "benchsite/__init__.py": "",
    "benchsite/settings.py": """\
SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchsite.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True
# One log line per request would cost more than the request: errors only.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"django.server": {"level": "ERROR"}},
}
""",
    "benchsite/urls.py": """\
from django.urls import path

from . import views

urlpatterns = [path("", views.index)]
""",
}


NODE_APP = """\
"use strict";
// Benchmark node app: blocks BOOT seconds at start (as an import would), answers with
// its generation. Listens on --fd N (a socket handed over) or --port N (binds it).
const http = require("http");
const fs = require("fs");

const EDIT = __EDIT__;
const boot = parseFloat(process.env.BOOT || "0");
if (boot > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, boot * 1000);

function generation() {
  const source = process.env.BENCH_GENERATION_SOURCE || "edit";
  if (source === "edit") return String(EDIT);
  if (source === "file") return fs.readFileSync(process.env.BENCH_GENERATION_FILE, "utf8").trim();
  return process.env[source.slice("env:".length)] || "?";
}

const GENERATION = generation();
const BODY = Buffer.from(`generation ${GENERATION} pid ${process.pid}\\n`);
const server = http.createServer((request, response) => {
  response.writeHead(200, {
    "Content-Type": "text/plain",
    "Content-Length": BODY.length,
    "X-Generation": GENERATION,
  });
  response.end(BODY);
});
const argv = process.argv.slice(2);
const option = (name) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
if (option("--fd") !== undefined) server.listen({ fd: Number(option("--fd")) });
// --any-host: listen(PORT) as most apps have it (node binds [::]:PORT, dual stack)
else if (argv.includes("--any-host")) server.listen(Number(option("--port")));
else server.listen(Number(option("--port")), "127.0.0.1");

// A graceful stop on whatever signal the tool sends (nodemon: SIGUSR2; the others SIGTERM):
// stop listening, finish the requests in flight, exit.
for (const name of ["SIGTERM", "SIGINT", "SIGUSR2"]) {
  process.once(name, () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 10000).unref();
  });
}
"""


GO_APP = """\
// Benchmark Go app: sleeps BOOT seconds at start (as an init would), answers with its
// generation, binds ":PORT" itself (--port PORT), stops gracefully on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func generation() string {
	source := os.Getenv("BENCH_GENERATION_SOURCE")
	if source == "file" {
		if data, err := os.ReadFile(os.Getenv("BENCH_GENERATION_FILE")); err == nil {
			return strings.TrimSpace(string(data))
		}
	} else if value := os.Getenv(strings.TrimPrefix(source, "env:")); value != "" {
		return value
	}
	return "?"
}

func main() {
	port := flag.String("port", "", "the port to bind, on every address")
	flag.Parse()
	if boot, err := strconv.ParseFloat(os.Getenv("BOOT"), 64); err == nil && boot > 0 {
		time.Sleep(time.Duration(boot * float64(time.Second)))
	}
	gen := generation()
	body := []byte(fmt.Sprintf("generation %s pid %d\\n", gen, os.Getpid()))
	server := &http.Server{Addr: ":" + *port, Handler: http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("X-Generation", gen)
			w.Write(body)
		})}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	stopped := make(chan struct{})
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		server.Shutdown(ctx) // stops accepting, finishes the requests in flight
		close(stopped)
	}()
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-stopped
}
"""


def render(template: str, edit: int) -> str:
    """An app's source with ``EDIT = edit``."""
    if template is NODE_APP:
        return NODE_APP.replace("__EDIT__", str(edit))
    return template.format(prelude=_PRELUDE.format(edit=edit))


# --- helpers ------------------------------------------------------------------------------


class ScenarioError(RuntimeError):
    """A server did not start, answer or stop as expected (the scenario reports an error)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now, for servers that need a number (bind port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_first_ok(
    port: int, generation: str | None, timeout: float, host: str = "127.0.0.1"
) -> float:
    """Poll with GETs until one succeeds (from ``generation``, if given); the time it took.

    Refused connections are retried every 10 ms; under zocket the request
    simply waits in the backlog until the server accepts it.
    """
    began = time.monotonic()
    deadline = began + timeout
    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ScenarioError(f"no answer from port {port} within {timeout:g} s ({last})")
        try:
            status, answered = get_once(port, host, timeout=max(remaining, 0.01))
            if 200 <= status < 400 and (generation is None or answered == generation):
                return time.monotonic() - began
            last = f"status {status}, generation {answered!r}"
        except Exception as exc:  # noqa: BLE001 - refused, reset, HTTPException...: try again
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.01)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported by this interpreter (the servers run under it)."""
    return importlib.util.find_spec(module) is not None


@cache
def gunicorn_options() -> tuple[str, ...]:
    """Options every gunicorn gets: no control socket, when this gunicorn has one."""
    if not installed("gunicorn"):
        return ()
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return ("--no-control-socket",) if "--no-control-socket" in result.stdout else ()


#: zocket's CLI, imported the way base_env() says: never from whatever directory we run in
#: (``python -m`` would put it first on sys.path, and a source tree may not be built).
ZOCKET = [
    sys.executable,
    "-c",
    "import sys; del sys.path[0]; from zocket.cli import main; sys.exit(main())",
]


def run_zocket(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the zocket under test with ``args`` (for --help, --version), bounded."""
    return subprocess.run(
        [*ZOCKET, *args], capture_output=True, text=True, timeout=60, check=False, env=base_env()
    )


@cache
def zocket_help() -> str:
    """``zocket --help`` of the checkout under test."""
    return run_zocket("--help").stdout


def base_env() -> dict[str, str]:
    """This environment, less inherited socket activation.

    The checkout goes first on PYTHONPATH only when its compiled module is
    built in place (an editable install); otherwise the installed zocket runs,
    as after ``pip install .``, where the source tree has no compiled module.
    """
    env = dict(os.environ)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(name, None)
    if any((REPO / "zocket").glob("_libc_cffi*.so")):
        paths = [str(REPO), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def write_atomically(path: Path, text: str, scratch: Path) -> None:
    """Replace ``path`` by a rename from ``scratch`` (outside any watched directory).

    Reloaders never import half a file, and ``--watch`` sees one IN_MOVED_TO.
    """
    scratch.write_text(text)
    os.replace(scratch, path)


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int | None:
    """Signal ``proc``'s process group, wait (bounded), SIGKILL the group if needed.

    After the leader has exited, members of its group that outlive it (workers
    of a killed arbiter, the child of a reloader) get a few seconds, then SIGKILL.
    While any of them lives, the group id cannot name anyone else's processes.
    """
    if proc.poll() is None:
        _killpg(proc.pid, sig)
    try:
        status = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        status = proc.wait(STOP_TIMEOUT)
    deadline = time.monotonic() + 5.0
    while _group_alive(proc.pid):
        if time.monotonic() > deadline:
            _killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return status


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def uvicorn_reload(appdir: Path, *bind: str) -> list[str]:
    """uvicorn with its reloader watching the app directory, on the ASGI app."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--reload",
        "--reload-dir",
        str(appdir),
        "--no-access-log",
        *bind,
        "benchasgi:app",
    ]


# --- scenarios ----------------------------------------------------------------------------


class Scenario:
    """One way of running and restarting a server. Subclasses set the class attributes.

    ``start()`` launches the server and returns its port (it does not wait for
    an answer); ``trigger(n)`` makes generation ``n`` (2, 3, ...) happen the
    way this scenario restarts; ``stop()`` stops everything, always bounded.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Python modules the scenario needs; a missing one skips it.
    needs: ClassVar[tuple[str, ...]] = ("gunicorn",)
    #: Where X-Generation comes from (module docstring).
    generation_source: ClassVar[str] = "edit"
    #: Which app: "wsgi", "asgi", "django", "node" or "go".
    app_kind: ClassVar[str] = "wsgi"
    uses_zocket: ClassVar[bool] = False
    #: The server family: the zocket scenario a peer is compared with (REFERENCE).
    family: ClassVar[str] = "python"

    def __init__(
        self,
        workdir: Path,
        boot: float,
        *,
        gunicorn_args: Sequence[str] = GUNICORN_ARGS,
        port: int = 0,
    ) -> None:
        self.workdir = Path(workdir)
        self.appdir = self.workdir / "app"
        self.log_path = self.workdir / "server.log"
        self.boot = boot
        self.gunicorn_args = tuple(gunicorn_args)
        self.port = port
        self.procs: list[subprocess.Popen[bytes]] = []
        #: zocket's exit status once stopped (zocket scenarios).
        self.exit_status: int | None = None

    # --- what it needs ------------------------------------------------------------------

    @classmethod
    def skip_reason(cls) -> str | None:
        """Why this scenario cannot run here, or None."""
        for module in cls.needs:
            if not installed(module):
                return f"skipped: {module} not installed"
        return None

    # --- the app ------------------------------------------------------------------------

    @property
    def app_file(self) -> Path:
        return (
            self.appdir
            / {
                "wsgi": "benchapp.py",
                "asgi": "benchasgi.py",
                "django": "benchsite/views.py",
                "node": "benchnode.js",
            }[self.app_kind]
        )

    @property
    def generation_file(self) -> Path:
        return self.workdir / "generation.txt"

    def prepare(self) -> None:
        """Write the app (EDIT = 1) and generation.txt (1) into a fresh directory."""
        self.appdir.mkdir(parents=True, exist_ok=True)
        if self.app_kind == "django":
            for name, text in DJANGO_FILES.items():
                (self.appdir / name).parent.mkdir(parents=True, exist_ok=True)
                (self.appdir / name).write_text(text)
        self.edit(1)
        self.generation_file.write_text("1\n")

    def edit(self, generation: int) -> None:
        """Rewrite the app file with ``EDIT = generation``: a real edit, as a reloader sees one."""
        template = {
            "wsgi": WSGI_APP,
            "asgi": ASGI_APP,
            "django": DJANGO_VIEWS,
            "node": NODE_APP,
        }[self.app_kind]
        write_atomically(self.app_file, render(template, generation), self.workdir / ".edit.tmp")

    def env(self, **extra: str) -> dict[str, str]:
        """The server's environment: boot time, generation source, HOME in the work dir."""
        env = base_env()
        env.update(
            BOOT=f"{self.boot:g}",
            BENCH_GENERATION_SOURCE=self.generation_source,
            BENCH_GENERATION_FILE=str(self.generation_file),
            HOME=str(self.workdir),  # gunicorn's control socket goes under HOME
            PYTHONDONTWRITEBYTECODE="1",  # no stale .pyc after an edit within the same second
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def gunicorn(self, *bind: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            *gunicorn_options(),
            *self.gunicorn_args,
            *bind,
            "benchapp:app",
        ]

    def bystander_command(self) -> list[str] | None:
        """gunicorn with the scenario's WSGI app, binding ``{port}`` itself: what a
        bystander control boots (benchmarks/controls.py). None for the other apps (ASGI,
        Django, node, Go), which then get still windows only."""
        if self.app_kind != "wsgi" or not installed("gunicorn"):
            return None
        return self.gunicorn("--bind", "127.0.0.1:{port}")

    # --- processes ----------------------------------------------------------------------

    def launch(self, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the app directory, in its own session, output to the log."""
        with open(self.log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(argv),
                cwd=self.appdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    @property
    def main_proc(self) -> subprocess.Popen[bytes]:
        if not self.procs:
            raise ScenarioError(f"{self.name} has not started")
        return self.procs[-1]

    def holder_pid(self) -> int | None:
        """zocket's pid in the zocket scenarios; None elsewhere."""
        return None

    def start(self) -> int:
        raise NotImplementedError

    def trigger(self, generation: int) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process this scenario started (bounded), in reverse order."""
        for proc in reversed(self.procs):
            stop_group(proc)

    def check_running(self) -> None:
        """ScenarioError when the server exited by itself."""
        code = self.main_proc.poll()
        if code is not None:
            raise ScenarioError(f"{self.name}: the server exited with status {code}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def notes(self) -> dict[str, Any]:
        """Anything the server itself said about the run that is worth keeping."""
        return {}


class Plain(Scenario):
    """gunicorn binds the port itself; a restart is SIGTERM, wait, start again."""

    name = "plain"
    description = "gunicorn --bind; restart = SIGTERM, wait for exit, start again"
    generation_source = "env:BENCH_GENERATION"

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        self._launch(1)
        return self.port

    def _launch(self, generation: int) -> None:
        self.launch(
            self.gunicorn("--bind", f"127.0.0.1:{self.port}"),
            self.env(BENCH_GENERATION=str(generation)),
        )

    def trigger(self, generation: int) -> None:
        stop_group(self.main_proc)
        self._launch(generation)


class ReloadOnHup(Scenario):
    """A server's own reload on SIGHUP: the generation comes from a file it reads anew."""

    generation_source = "file"

    def command(self, host: str, port: int) -> list[str]:
        raise NotImplementedError

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        self.launch(self.command("127.0.0.1", self.port), self.env())
        return self.port

    def trigger(self, generation: int) -> None:
        self.generation_file.write_text(f"{generation}\n")
        self.check_running()
        os.kill(self.main_proc.pid, signal.SIGHUP)


class GunicornHup(ReloadOnHup):
    """gunicorn's own reload: SIGHUP to the arbiter starts new workers, stops the old."""

    name = "gunicorn-hup"
    description = "gunicorn --bind; restart = SIGHUP to the arbiter (its own reload)"

    def command(self, host: str, port: int) -> list[str]:
        return self.gunicorn("--bind", f"{host}:{port}")


class UvicornReload(Scenario):
    """uvicorn's reloader (its parent process keeps the socket) after an edit."""

    name = "uvicorn-reload"
    description = "uvicorn --reload --port; restart = an edit of the app file"
    needs = ("uvicorn",)
    app_kind = "asgi"

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        bind = ("--host", "127.0.0.1", "--port", str(self.port))
        self.launch(uvicorn_reload(self.appdir, *bind), self.env())
        return self.port

    def trigger(self, generation: int) -> None:
        self.check_running()
        self.edit(generation)


class DjangoRunserver(Scenario):
    """Django's runserver: its autoreloader restarts a child that binds the port anew."""

    name = "django-runserver"
    description = "manage.py runserver; restart = an edit of the view (autoreload)"
    needs = ("django",)
    app_kind = "django"

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        self.launch(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}"], self.env()
        )
        return self.port

    def trigger(self, generation: int) -> None:
        self.check_running()
        self.edit(generation)


def granian(*bind: str) -> list[str]:
    """granian serving the WSGI app with as many workers as gunicorn has."""
    workers = GUNICORN_ARGS[GUNICORN_ARGS.index("--workers") + 1]
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--workers",
        workers,
        "--no-log",
        *bind,
        "benchapp:app",
    ]


class GranianHup(ReloadOnHup):
    """granian's own reload: SIGHUP to its main process respawns the workers one by one
    (each binds a SO_REUSEPORT socket of its own on Linux)."""

    name = "granian-hup"
    description = "granian --port; restart = SIGHUP to its main process (its own reload)"
    needs = ("granian",)

    def command(self, host: str, port: int) -> list[str]:
        return granian("--host", host, "--port", str(port))


class ZocketScenario(Scenario):
    """zocket holds the port and runs the server on fd 3; zocket's pid is watched too."""

    uses_zocket = True
    generation_source = "env:ZOCKET_GENERATION"
    zocket_options: ClassVar[tuple[str, ...]] = ("--ready", "auto")

    def server_command(self) -> list[str]:
        return self.gunicorn()

    def start(self) -> int:
        port_option = ["--port", str(self.port)]
        argv = [
            *ZOCKET,
            *port_option,
            *self.zocket_options,
            *self.extra_options(),
            "--",
            *self.server_command(),
        ]
        self.launch(argv, self.env())
        if not self.port:
            self.port = self._await_start_line()
        return self.port

    def extra_options(self) -> list[str]:
        return []

    def _await_start_line(self) -> int:
        deadline = time.monotonic() + START_LINE_TIMEOUT
        while time.monotonic() < deadline:
            match = START_LINE.search(self.log_text())
            if match:
                return int(match[1])
            if self.main_proc.poll() is not None:
                break
            time.sleep(0.02)
        raise ScenarioError(f"zocket printed no start line; log:\n{self.log_tail()}")

    def holder_pid(self) -> int | None:
        return self.main_proc.pid

    def trigger(self, generation: int) -> None:
        self.check_running()
        os.kill(self.main_proc.pid, signal.SIGHUP)

    def stop(self) -> None:
        """SIGTERM to zocket alone (it forwards it to every generation), bounded."""
        if not self.procs:
            return
        proc = self.main_proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            self.exit_status = proc.wait(STOP_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            # zocket is stuck: kill it and every generation it started (still alive, so
            # their group ids are still theirs).
            proc.kill()
            self.exit_status = proc.wait(STOP_TIMEOUT)
            for match in GENERATION_STARTED.finditer(self.log_text()):
                _killpg(int(match[2]), signal.SIGKILL)

    def notes(self) -> dict[str, Any]:
        lines = [line for line in self.log_text().splitlines() if line.startswith("zocket:")]
        ready = [
            {"generation": int(m[1]), "ms": int(m[2]), "how": m[3]}
            for m in (
                re.match(r"zocket: generation (\d+) ready in (\d+) ms \((.*)\)$", line)
                for line in lines
            )
            if m
        ]
        return {"zocket_log": lines[:200], "zocket_ready": ready, "zocket_exit": self.exit_status}


class ZocketGunicorn(ZocketScenario):
    name = "zocket-gunicorn"
    description = "zocket --ready auto + gunicorn; restart = SIGHUP to zocket (overlap)"


class ZocketNoOverlap(ZocketScenario):
    name = "zocket-no-overlap"
    description = "zocket --no-overlap + gunicorn; restart = SIGHUP to zocket"
    zocket_options = ("--ready", "auto", "--no-overlap")


class ZocketBootNice(ZocketScenario):
    """The booting generation at a lower CPU priority while the old one serves (--boot-nice)."""

    name = "zocket-boot-nice"
    description = "zocket --boot-nice 10 + gunicorn; restart = SIGHUP to zocket (overlap)"
    zocket_options = ("--ready", "auto", "--boot-nice", "10")


class ZocketSharedCpus(ZocketScenario):
    """zocket with the generations of a restart on every CPU (--share-cpus): the control
    for zocket.placement, which keeps the serving generation on CPUs of its own."""

    name = "zocket-shared-cpus"
    description = "zocket --share-cpus + gunicorn; restart = SIGHUP to zocket (overlap)"
    zocket_options = ("--ready", "auto", "--share-cpus")


class ZocketWatch(ZocketScenario):
    name = "zocket-watch"
    description = "zocket --watch APPDIR + gunicorn; restart = an edit of the app file"

    def extra_options(self) -> list[str]:
        return ["--watch", str(self.appdir)]

    def trigger(self, generation: int) -> None:
        self.check_running()
        self.edit(generation)


class ZocketDjango(ZocketScenario):
    """Django runserver binds HOST:PORT itself; zocket's hook hands it the held socket."""

    name = "zocket-django"
    description = "zocket + manage.py runserver {host}:{port} (the hook); restart = an edit"
    needs = ("django",)
    app_kind = "django"
    generation_source = "edit"

    @classmethod
    def skip_reason(cls) -> str | None:
        reason = super().skip_reason()
        if reason is None and "--no-hook" not in zocket_help():
            reason = "skipped: needs the zocket hook (issue 5)"
        return reason

    def server_command(self) -> list[str]:
        return [sys.executable, "manage.py", "runserver", "{host}:{port}"]

    def trigger(self, generation: int) -> None:
        self.check_running()
        self.edit(generation)


class ZocketUvicornReload(ZocketScenario):
    name = "zocket-uvicorn-reload"
    description = "zocket + uvicorn --reload --fd {fd}; restart = an edit of the app file"
    needs = ("uvicorn",)
    app_kind = "asgi"
    generation_source = "edit"

    def server_command(self) -> list[str]:
        return uvicorn_reload(self.appdir, "--fd", "{fd}")

    def trigger(self, generation: int) -> None:
        self.check_running()
        self.edit(generation)


class ZocketGranian(ZocketScenario):
    """granian binds HOST:PORT in Rust; zocket's hook hands it the held socket."""

    name = "zocket-granian"
    description = "zocket + granian --host {host} --port {port} (the hook); restart = SIGHUP"
    needs = ("granian",)

    def server_command(self) -> list[str]:
        return granian("--host", "{host}", "--port", "{port}")


# --- peer socket holders -------------------------------------------------------------------


def tool_path(name: str, *also: Path) -> str | None:
    """``name`` among ``also`` (e.g. a local node_modules/.bin) or on PATH; None if absent."""
    for candidate in also:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


#: Where ``npm install --prefix benchmarks`` puts nodemon (benchmarks/package.json).
NODE_BIN = REPO / "benchmarks" / "node_modules" / ".bin"


class ServerStarter(Scenario):
    """Server::Starter's start_server holds the port; gunicorn serves the fd it passes.

    On SIGHUP start_server starts a new generation at once, waits ``--interval``
    (1 s, its default) and then sends the old one SIGTERM, whether or not the new
    one is ready yet. SERVER_STARTER_PORT is ``host:port=fd``; gunicorn gets
    ``--bind fd://FD`` through a one-line shell. SERVER_STARTER_GENERATION counts
    from 1.
    """

    name = "start-server"
    description = "start_server --interval 1 + gunicorn --bind fd://N; restart = SIGHUP"
    generation_source = "env:SERVER_STARTER_GENERATION"
    interval = 1.0

    @classmethod
    def skip_reason(cls) -> str | None:
        if tool_path("start_server") is None:
            return "skipped: start_server not installed (apt-get install libserver-starter-perl)"
        return super().skip_reason()

    def command(self) -> list[str]:
        server = " ".join(shlex.quote(word) for word in self.gunicorn()[:-1])
        return [
            tool_path("start_server") or "start_server",
            f"--port=127.0.0.1:{self.port}",
            f"--interval={self.interval:g}",
            "--",
            "/bin/sh",
            "-c",
            f'exec {server} --bind "fd://${{SERVER_STARTER_PORT##*=}}" benchapp:app',
        ]

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        self.launch(self.command(), self.env())
        return self.port

    def trigger(self, generation: int) -> None:
        self.check_running()
        os.kill(self.main_proc.pid, signal.SIGHUP)


CIRCUS_INI = """\
[circus]
endpoint = ipc://{workdir}/circus-control.sock
pubsub_endpoint = ipc://{workdir}/circus-pubsub.sock
statsd = False
check_delay = 5

[watcher:web]
cmd = {gunicorn} --bind fd://$(circus.sockets.web) benchapp:app
working_dir = {appdir}
use_sockets = True
numprocesses = 1
copy_env = True
graceful_timeout = 30

[socket:web]
host = 127.0.0.1
port = {port}
"""


class Circus(Scenario):
    """circus holds the socket (``use_sockets``); gunicorn serves ``fd://$(circus.sockets.web)``.

    SIGHUP to circusd is its graceful reload: for each watcher it spawns the new
    processes, then stops the old ones at once (it does not wait for the new
    ones to be ready), so clients queue in the backlog for the boot.
    """

    name = "circus"
    description = "circusd, use_sockets + gunicorn --bind fd://N; restart = SIGHUP (its reload)"
    needs = ("gunicorn", "circus")
    generation_source = "file"

    @property
    def ini_path(self) -> Path:
        return self.workdir / "circus.ini"

    def config(self) -> str:
        server = self.gunicorn()[:-1]  # without the app: it goes after the bind
        return CIRCUS_INI.format(
            workdir=self.workdir,
            appdir=self.appdir,
            gunicorn=" ".join(shlex.quote(word) for word in server),
            port=self.port,
        )

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        self.ini_path.write_text(self.config())
        self.launch([sys.executable, "-m", "circus.circusd", str(self.ini_path)], self.env())
        return self.port

    def trigger(self, generation: int) -> None:
        self.generation_file.write_text(f"{generation}\n")
        self.check_running()
        os.kill(self.main_proc.pid, signal.SIGHUP)


class SystemdSocketActivate(ReloadOnHup):
    """``systemd-socket-activate -l ADDR`` binds the port and execs gunicorn with it as fd 3
    (LISTEN_FDS, LISTEN_PID: gunicorn adopts it); a restart is gunicorn's own HUP reload."""

    name = "systemd-socket-activate"
    description = "systemd-socket-activate -l ADDR + gunicorn (LISTEN_FDS); restart = SIGHUP"

    @classmethod
    def skip_reason(cls) -> str | None:
        if tool_path("systemd-socket-activate") is None:
            return "skipped: systemd-socket-activate not installed (it ships with systemd)"
        return super().skip_reason()

    #: systemd-socket-activate passes the server only the variables named with --setenv.
    passed_env = (
        "BOOT",
        "BENCH_GENERATION_SOURCE",
        "BENCH_GENERATION_FILE",
        "HOME",
        "PATH",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
    )

    def command(self, host: str, port: int) -> list[str]:
        env = self.env()
        return [
            tool_path("systemd-socket-activate") or "systemd-socket-activate",
            "--listen",
            f"{host}:{port}",
            *(f"--setenv={name}" for name in self.passed_env if name in env),
            *self.gunicorn(),
        ]


def node_path() -> str | None:
    return tool_path("node")


def node_skip_reason() -> str | None:
    return "skipped: node not installed" if node_path() is None else None


@cache
def node_has_watch() -> bool:
    node = node_path()
    if node is None:
        return False
    result = subprocess.run(
        [node, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    return "--watch" in result.stdout


class NodeScenario(Scenario):
    """The node app (NODE_APP), on node's own http server."""

    needs = ()
    app_kind = "node"
    family = "node"

    @classmethod
    def skip_reason(cls) -> str | None:
        return node_skip_reason()

    def node(self, *listen: str) -> list[str]:
        return [node_path() or "node", "benchnode.js", *listen]

    def edit(self, generation: int) -> None:
        """Rewrite the app file in place (one write): ``node --watch`` watches the file's
        inode and, after its first restart, misses a file replaced by a rename (node 20)."""
        with open(self.app_file, "w", encoding="utf-8") as f:
            f.write(render(NODE_APP, generation))


class NodeAlone(NodeScenario):
    """node binding the port itself, never restarted: the node cold start's server."""

    name = "node-alone"
    description = "node app.js --port P"
    generation_source = "env:BENCH_GENERATION"

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        self.launch(self.node("--port", str(self.port)), self.env(BENCH_GENERATION="1"))
        return self.port


class NodeWatch(NodeScenario):
    """``node --watch``: node restarts the app when the file changes; the app binds the port."""

    name = "node-watch"
    description = "node --watch app.js --port P; restart = an edit of the app file"

    @classmethod
    def skip_reason(cls) -> str | None:
        reason = super().skip_reason()
        if reason is None and not node_has_watch():
            reason = "skipped: this node has no --watch (node 18.11 or later)"
        return reason

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        node = self.node("--port", str(self.port))
        self.launch([node[0], "--watch", *node[1:]], self.env())
        return self.port

    def trigger(self, generation: int) -> None:
        self.check_running()
        self.edit(generation)


class Nodemon(NodeScenario):
    """nodemon (npm) runs node on the app and restarts it on a change of the file."""

    name = "nodemon"
    description = "nodemon app.js --port P; restart = an edit of the app file"

    @classmethod
    def nodemon(cls) -> str | None:
        return tool_path("nodemon", NODE_BIN / "nodemon")

    @classmethod
    def skip_reason(cls) -> str | None:
        reason = super().skip_reason()
        if reason is None and cls.nodemon() is None:
            reason = "skipped: nodemon not installed (npm install --prefix benchmarks)"
        return reason

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        argv = [
            self.nodemon() or "nodemon",
            "--watch",
            str(self.app_file),
            *self.node("--port", str(self.port))[1:],
        ]
        # nodemon finds node on PATH: the same one as the other node scenarios.
        path = os.pathsep.join([str(Path(node_path() or "node").parent), os.environ["PATH"]])
        self.launch(argv, self.env(PATH=path))
        return self.port

    def trigger(self, generation: int) -> None:
        self.check_running()
        self.edit(generation)


class ZocketNode(ZocketScenario):
    """zocket holds the port; node serves the held socket (``server.listen({fd: 3})``)."""

    name = "zocket-node"
    description = "zocket --ready auto + node app.js --fd {fd}; restart = SIGHUP to zocket"
    needs = ()
    app_kind = "node"
    family = "node"

    @classmethod
    def skip_reason(cls) -> str | None:
        return node_skip_reason()

    def server_command(self) -> list[str]:
        return [node_path() or "node", "benchnode.js", "--fd", "{fd}"]


class KernelAdopted:
    """A scenario whose server binds the port itself: it needs zocket's kernel-boundary adoption."""

    @classmethod
    def skip_reason(cls) -> str | None:
        reason: str | None = super().skip_reason()  # type: ignore[misc]
        if reason is None and "--no-adopt" not in zocket_help():
            reason = "skipped: needs zocket's kernel-boundary adoption (issue 14)"
        return reason


class ZocketNodeBind(KernelAdopted, ZocketNode):
    """zocket holds the port; node binds it itself (``server.listen(PORT)``, ``[::]:PORT``)
    and gets the held socket at the kernel boundary (seccomp user notification)."""

    name = "zocket-node-bind"
    description = (
        "zocket --ready auto + node app.js, server.listen({port}) adopted by the kernel"
        " boundary; restart = SIGHUP to zocket"
    )

    def server_command(self) -> list[str]:
        return [node_path() or "node", "benchnode.js", "--port", "{port}", "--any-host"]


def go_path() -> str | None:
    return tool_path("go")


def go_skip_reason() -> str | None:
    return "skipped: go not installed (apt-get install golang-go)" if go_path() is None else None


def go_build_env(directory: Path) -> dict[str, str]:
    """go build's environment: static, the standard library only (never the network), the
    user's build cache where there is one (else one in ``directory``)."""
    env = base_env()
    env.update(CGO_ENABLED="0", GOFLAGS="", GO111MODULE="on", GOPROXY="off", GOTOOLCHAIN="local")
    if not any(env.get(name) for name in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(directory / "go-cache")
    return env


def build_go_app(directory: Path) -> Path:
    """GO_APP built into ``directory`` (the run's root: once per run), or the one already there."""
    binary = directory / "benchgo"
    if binary.is_file():
        return binary
    go = go_path()
    if go is None:
        raise ScenarioError("go not installed")
    source = directory / "benchgo-src"
    source.mkdir(exist_ok=True)
    (source / "main.go").write_text(GO_APP)
    (source / "go.mod").write_text("module benchgo\n\ngo 1.19\n")
    failed = build_into(
        binary, [go, "build", "-o", "{out}", "."], timeout=600, cwd=source,
        env=go_build_env(directory),
    )  # fmt: skip
    if failed is not None:
        raise ScenarioError(f"go build failed {failed}")
    return binary


class GoScenario(Scenario):
    """The Go app (GO_APP), a net/http binary built once per run, binding ``:PORT`` itself."""

    needs = ()
    app_kind = "go"
    family = "go"

    @classmethod
    def skip_reason(cls) -> str | None:
        return go_skip_reason()

    @property
    def binary(self) -> Path:
        """Where the run's binary is: the scenarios' directories share the run's root."""
        return self.workdir.parent / "benchgo"

    @property
    def app_file(self) -> Path:
        return self.workdir.parent / "benchgo-src" / "main.go"

    def prepare(self) -> None:
        """The app directory (the servers' cwd), generation.txt, the binary (built once)."""
        self.appdir.mkdir(parents=True, exist_ok=True)
        self.generation_file.write_text("1\n")
        build_go_app(self.workdir.parent)

    def edit(self, generation: int) -> None:
        raise ScenarioError(f"{self.name}: the Go app is built once; it restarts, never edited")


class GoAlone(GoScenario):
    """The Go binary binding the port itself, never restarted: the Go cold start's server."""

    name = "go-alone"
    description = "a Go net/http binary, ListenAndServe(:P)"
    generation_source = "env:BENCH_GENERATION"

    def start(self) -> int:
        if not self.port:
            self.port = free_port()
        self.launch([str(self.binary), "--port", str(self.port)], self.env(BENCH_GENERATION="1"))
        return self.port


class ZocketGo(KernelAdopted, ZocketScenario, GoScenario):
    """zocket holds the port; the Go binary binds ``:PORT`` itself and gets the held socket
    at the kernel boundary (seccomp user notification)."""

    name = "zocket-go"
    description = (
        "zocket --ready auto + a Go net/http binary, ListenAndServe(:{port}) adopted by the"
        " kernel boundary; restart = SIGHUP to zocket"
    )

    def server_command(self) -> list[str]:
        return [str(self.binary), "--port", "{port}"]


#: Every scenario, in the order of docs/benchmarks.md and of the report.
SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls
    for cls in (
        Plain,
        GunicornHup,
        UvicornReload,
        DjangoRunserver,
        GranianHup,
        ZocketGunicorn,
        ZocketNoOverlap,
        ZocketBootNice,
        ZocketSharedCpus,
        ZocketWatch,
        ZocketDjango,
        ZocketUvicornReload,
        ZocketGranian,
        ServerStarter,
        Circus,
        SystemdSocketActivate,
        ZocketNode,
        ZocketNodeBind,
        NodeWatch,
        Nodemon,
        ZocketGo,
    )
}

#: The zocket scenario each family's peers are compared with (ratios, the headline).
REFERENCE = {"python": "zocket-gunicorn", "node": "zocket-node", "go": "zocket-go"}
#: The restart methods of the comparison and the headline picture, in order: zocket first,
#: then the socket holders, then the servers' own reloads, then a plain restart.
HEADLINE = (
    "zocket-gunicorn",
    "zocket-node",
    "zocket-node-bind",
    "zocket-go",
    "start-server",
    "circus",
    "systemd-socket-activate",
    "gunicorn-hup",
    "granian-hup",
    "uvicorn-reload",
    "django-runserver",
    "node-watch",
    "nodemon",
    "plain",
)
