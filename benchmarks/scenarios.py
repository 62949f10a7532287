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
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from .load import get_once

__all__ = [
    "GUNICORN_ARGS",
    "SCENARIOS",
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


def render(template: str, edit: int) -> str:
    """An app's source with ``EDIT = edit``."""
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
    #: Which app: "wsgi", "asgi" or "django".
    app_kind: ClassVar[str] = "wsgi"
    uses_zocket: ClassVar[bool] = False

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
            / {"wsgi": "benchapp.py", "asgi": "benchasgi.py", "django": "benchsite/views.py"}[
                self.app_kind
            ]
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
        template = {"wsgi": WSGI_APP, "asgi": ASGI_APP, "django": DJANGO_VIEWS}[self.app_kind]
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


#: Every scenario, in the order of the README and of the report.
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
        ZocketWatch,
        ZocketDjango,
        ZocketUvicornReload,
        ZocketGranian,
    )
}
