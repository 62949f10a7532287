"""The start-up hook (zocket/_hook): unchanged Python servers that bind the held port.

zocket puts zocket/_hook first on the PYTHONPATH of every generation with
``ZOCKET_HOOK_FDS=FD:INODE,...``; its sitecustomize wraps ``socket.socket.bind``
so that a bind to the held address adopts the held socket. These tests run
real servers that only know how to bind a port number (Django runserver,
``flask run``, ``python -m http.server``, aiohttp's ``run_app``) through zocket
under a steady load, and small probe scripts that report what they got as JSON.

Servers take a port number on their command line, so each test picks a free
port first (bind port 0, read it, close it) and starts zocket on it, once more
on another port if that one was taken meanwhile. Every process a test starts
is stopped by it; every wait has a deadline; everything is on loopback.

Under load nothing may be refused, time out or fail in any way, not even for
servers that die in the middle of their requests on their own (http.server and
Django runserver on SIGTERM, the Django/werkzeug reloaders by sys.exit): the
hook's drain and stop guard are what make those strict.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from support import (
    REPO,
    LoadClient,
    Outcome,
    ZocketProcess,
    ZocketStartError,
    assert_no_failures,
    held_inode,
    http_get,
    run_zocket,
    socket_inode,
    socket_inodes,
    start_zocket,
    tcp_listeners,
    wait_for,
    write_atomically,
)
from zocket import holder

PY = sys.executable
HOOK_DIR = REPO / "zocket" / "_hook"
RUNNING_HOOK_DIR = holder.HOOK_DIR
#: What a generation made ready through the hook (or found by --ready auto) logs.
READY_LINE = r"generation {n} ready in \d+ ms \((hook: waiting on fd \d+|auto: .*)\)$"
#: Environment for every server: no bytecode cache (an edit within the same second as
#: the last one, same size, would otherwise be served from a stale .pyc) and unbuffered
#: output (banners printed to a file show up at once).
CHILD_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
#: The oldest Python the package claims (requires-python): the hook runs in the user's.
OLDEST_PYTHON = os.environ.get("ZOCKET_OLDEST_PYTHON") or next(
    (p for p in ("/root/.pyenv/versions/3.10.13/bin/python3",) if os.path.exists(p)),
    shutil.which("python3.10") or "python3.10",
)
#: The interpreters the hook's unit tests run it in: this one and the oldest claimed.
PYTHONS = [pytest.param(PY, id="this-python"), pytest.param(OLDEST_PYTHON, id="oldest-python")]


# --- helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOCKET_")}
    env.update(CHILD_ENV)
    env.update(extra)
    return env


def start_on_free_port(args: Callable[[int], Sequence[object]], **kw: object) -> ZocketProcess:
    """start_zocket(args(port)) on a free port; once more on another if it was taken."""
    kw.setdefault("env", child_env())
    for attempt in (1, 2):
        port = free_port()
        try:
            zocket = start_zocket(args(port), **kw)  # type: ignore[arg-type]
        except ZocketStartError as exc:
            if attempt == 1 and "already in use" in str(exc):
                continue
            raise
        assert zocket.port == port
        return zocket
    raise AssertionError("unreachable")


def run_on_free_port(
    args: Callable[[int], Sequence[object]], **kw: object
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """run_zocket(args(port)) on a free port; once more on another if it was taken."""
    kw.setdefault("env", child_env())
    for attempt in (1, 2):
        port = free_port()
        result = run_zocket(args(port), **kw)  # type: ignore[arg-type]
        if attempt == 1 and result.returncode == 3 and "already in use" in result.stderr:
            continue
        return port, result
    raise AssertionError("unreachable")


def read_json(
    path: Path, timeout: float = 20.0, zocket: ZocketProcess | None = None
) -> dict[str, Any]:
    def ready() -> bool:
        return path.exists()

    try:
        wait_for(ready, timeout, message=f"{path.name} written")
    except AssertionError:
        if zocket is not None:
            raise AssertionError(f"{path.name} not written; stderr:\n{zocket.stderr_text(0)}") from None
        raise
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def assert_all_answered(load: LoadClient, expected: set[bytes], minimum_ok: int = 0) -> None:
    """Nothing failed in any way and every response has one of the ``expected`` bodies.

    A body that is not expected is a loss too: wsgiref writes the status line on its
    own, so a request cut off after it looks like a 200 with an empty body.
    """
    assert_no_failures(load, minimum_ok)
    unexpected = [o for o in load.outcomes if o.body not in expected]
    assert not unexpected, (unexpected[:5], load.summary())


def edit_until_served(
    load: LoadClient,
    write: Callable[[], None],
    expected: bytes,
    *,
    timeout: float = 40.0,
    retry_after: float = 8.0,
) -> tuple[float, float]:
    """Make an edit and wait until a response shows it; edit again if the reloader missed it.

    A stat-polling reloader takes the mtime it first sees as its baseline: an edit made
    between a restart and that first look goes unnoticed, a second write is then seen.
    Returns (time of the first write, time the first response showing the edit ended):
    the old server process died in between.
    """
    first = time.monotonic()
    deadline = first + timeout
    while True:
        edited = time.monotonic()
        write()
        try:
            seen = load.wait_for(body_is(expected), timeout=retry_after, since=edited)
            return first, seen.started + seen.elapsed
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def body_is(expected: bytes) -> Callable[[Outcome], bool]:
    return lambda outcome: outcome.body == expected


def run_direct(
    code: str,
    env: Mapping[str, str],
    pass_fds: Sequence[int] = (),
    args: Sequence[str] = (),
    timeout: float = 30.0,
    python: str = PY,
) -> dict[str, Any]:
    """Run ``python -c code`` (not under zocket); its stdout is one JSON document."""
    result = subprocess.run(
        [python, "-c", code, *args],
        env=dict(env),
        pass_fds=tuple(pass_fds),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    data["stderr"] = result.stderr
    return data


def listening_socket() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def count_handshakes(port: int, n: int, timeout: float) -> int:
    """Open ``n`` connections at once; how many complete the handshake within ``timeout``."""
    socks = []
    done = 0
    try:
        with selectors.DefaultSelector() as selector:
            for _ in range(n):
                s = socket.socket()
                socks.append(s)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                selector.register(s, selectors.EVENT_WRITE)
            deadline = time.monotonic() + timeout
            pending = n
            while pending and (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(remaining):
                    selector.unregister(key.fileobj)
                    pending -= 1
                    conn = key.fileobj
                    assert isinstance(conn, socket.socket)
                    if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        done += 1
    finally:
        for s in socks:
            s.close()
    return done


# --- probe scripts -------------------------------------------------------------------------

#: Common part of the probe scripts: report(dict) writes JSON atomically to argv[2].
PROBE_HEAD = r"""
import errno, json, os, socket, sys, time

PORT = int(sys.argv[1])
OUT = sys.argv[2]


def ino(s):
    return os.fstat(s.fileno()).st_ino


def report(data):
    data.update(
        pid=os.getpid(),
        generation=os.environ.get("ZOCKET_GENERATION"),
        hook_fds=os.environ.get("ZOCKET_HOOK_FDS"),
        bind_module=getattr(socket.socket.bind, "__module__", None),
    )
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, OUT)
"""

#: Binds the held port, port 0, another free port (argv[3]) and the held port on another
#: loopback address (127.0.0.2): only the first may be the held socket.
PORTS_PROBE = (
    PROBE_HEAD
    + r"""
OTHER = int(sys.argv[3])
result = {}
for name, address in [
    ("held", ("127.0.0.1", PORT)),
    ("zero", ("127.0.0.1", 0)),
    ("other", ("127.0.0.1", OTHER)),
    ("other_host", ("127.0.0.2", PORT)),
]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(address)
        s.listen(5)
    except OSError as exc:
        result[name] = {"error": exc.errno}
        continue
    result[name] = {
        "sockname": list(s.getsockname()),
        "inode": ino(s),
        "class": type(s).__name__,
        "accepting": s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
    }
    globals()["keep_" + name] = s
report(result)
time.sleep(120)
"""
)

#: Binds the held port, listen(1), reports, and never accepts.
BACKLOG_PROBE = (
    PROBE_HEAD
    + r"""
s = socket.socket()
s.bind(("127.0.0.1", PORT))
s.listen(1)
report({"inode": ino(s), "class": type(s).__name__})
time.sleep(120)
"""
)

#: Binds the held port and prints what happened on stdout (for run_zocket --no-respawn).
BIND_PROBE = r"""
import json, os, socket, sys
port = int(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", port))
    s.listen(5)
    result = {"bound": True, "inode": os.fstat(s.fileno()).st_ino,
              "fd3_inode": os.fstat(3).st_ino}
except OSError as exc:
    result = {"bound": False, "errno": exc.errno}
result["hook_fds"] = os.environ.get("ZOCKET_HOOK_FDS")
result["pythonpath"] = os.environ.get("PYTHONPATH", "")
result["bind_module"] = getattr(socket.socket.bind, "__module__", None)
result["hooked"] = "_zocket_hook" in sys.modules
print(json.dumps(result), flush=True)
s.close()
"""

#: A tiny HTTP server bound by port number that shuts its listening socket down at start
#: and again when it stops: on SIGTERM it stops accepting, finishes the requests it has,
#: calls shutdown(SHUT_RDWR), closes and exits. It answers with its generation.
SHUTDOWN_SERVER = r"""
import http.server, os, signal, socket, sys, threading

PORT = int(sys.argv[1])
GENERATION = os.environ.get("ZOCKET_GENERATION", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = f"generation {GENERATION}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the requests in flight


server = Server(("127.0.0.1", PORT), Handler)
# An app that tears its listener down: harmless on the adopted socket.
server.socket.shutdown(socket.SHUT_RDWR)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.socket.shutdown(socket.SHUT_RDWR)
server.server_close()
sys.stderr.write(f"generation {GENERATION} shut its socket down\n")
sys.stderr.flush()
"""


# --- real servers: apps --------------------------------------------------------------------

DJANGO_MANAGE = """\
import sys

from django.conf import settings

settings.configure(
    DEBUG=True,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF="urls",
    SECRET_KEY="zocket-hook-test",
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    LOGGING_CONFIG=None,
)

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

DJANGO_URLS = """\
from django.urls import path

import views

urlpatterns = [path("", views.index)]
"""

DJANGO_VIEWS = """\
from django.http import HttpResponse

VERSION = {version}


def index(request):
    body = f"django version {{VERSION}}\\n".encode()
    # With a length a response cut short by a dying server is an error, not a short body.
    return HttpResponse(body, headers={{"Content-Length": str(len(body))}})
"""

FLASK_APP = """\
from flask import Flask

app = Flask(__name__)
VERSION = {version}


@app.route("/")
def index():
    return f"flask version {{VERSION}}\\n"
"""

AIOHTTP_APP = """\
import os
import sys

from aiohttp import web


async def index(request):
    return web.Response(text=f"aiohttp generation {os.environ['ZOCKET_GENERATION']}\\n")


app = web.Application()
app.router.add_get("/", index)
web.run_app(app, port=int(sys.argv[1]), print=None, access_log=None)
"""


def django_body(version: int) -> bytes:
    return f"django version {version}\n".encode()


def flask_body(version: int) -> bytes:
    return f"flask version {version}\n".encode()


@pytest.fixture
def django_site(tmp_path: Path) -> Path:
    pytest.importorskip("django")
    site = tmp_path / "site"
    site.mkdir()
    (site / "manage.py").write_text(DJANGO_MANAGE)
    (site / "urls.py").write_text(DJANGO_URLS)
    (site / "views.py").write_text(DJANGO_VIEWS.format(version=0))
    return site


def load_client(port: int) -> LoadClient:
    return LoadClient(port, threads=2, rate=20, duration=120, timeout=10)


# --- real servers --------------------------------------------------------------------------


@pytest.mark.slow
def test_django_runserver_autoreload_edits_under_load(django_site: Path, tmp_path: Path) -> None:
    views = django_site / "views.py"
    with start_on_free_port(
        lambda port: [port, f"{PY} manage.py runserver {port}"], cwd=django_site
    ) as zocket:
        with load_client(zocket.port) as load:
            load.wait_for(body_is(django_body(0)), timeout=30)
            for version in range(1, 11):
                # Let the new server process's StatReloader take its baseline first.
                time.sleep(1.2)
                edit_until_served(
                    load,
                    partial(
                        write_atomically, views, DJANGO_VIEWS.format(version=version), tmp_path
                    ),
                    django_body(version),
                )
            time.sleep(0.5)
        summary = load.summary()
        # Django's own reloader restarted its server process; zocket's generation 1 stayed.
        assert not any("generation 2 started" in line for line in zocket.stderr_lines())
        assert zocket.returncode is None, zocket.stderr_text(0)
    # Strict: the hook drains the requests a reloading process had accepted.
    assert_all_answered(load, {django_body(v) for v in range(11)})
    assert {django_body(v) for v in range(11)} <= set(load.bodies()), summary


@pytest.mark.slow
def test_flask_run_reload_edits_under_load(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    site = tmp_path / "site"
    site.mkdir()
    app = site / "app.py"
    app.write_text(FLASK_APP.format(version=0))
    flask = Path(PY).parent / "flask"
    command = [str(flask)] if flask.is_file() else [PY, "-m", "flask"]
    with start_on_free_port(
        lambda port: [port, "--", *command, "--app", "app", "run", "--port", port, "--reload"],
        cwd=site,
    ) as zocket:
        with load_client(zocket.port) as load:
            load.wait_for(body_is(flask_body(0)), timeout=30)
            for version in range(1, 11):
                time.sleep(1.2)
                edit_until_served(
                    load,
                    partial(write_atomically, app, FLASK_APP.format(version=version), tmp_path),
                    flask_body(version),
                )
            time.sleep(0.5)
        summary = load.summary()
        assert zocket.returncode is None, zocket.stderr_text(0)
        reloads = [line for line in zocket.stderr_lines() if "Detected change" in line]
        # werkzeug's reloader parent bound the port (adopted) and passed the fd on.
        assert not any("not adopting" in line for line in zocket.stderr_lines())
    assert_all_answered(load, {flask_body(v) for v in range(11)})
    assert {flask_body(v) for v in range(11)} <= set(load.bodies()), summary
    assert len(reloads) >= 10


SLOW_SECONDS = 1.0

DJANGO_SLOW_VIEWS = f"""\
import time

from django.http import HttpResponse


def index(request):
    open("in-view", "w").close()
    time.sleep({SLOW_SECONDS})
    return HttpResponse(b"slow\\n", headers={{"Content-Length": "5"}})
"""

FLASK_SLOW_APP = f"""\
import time

from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    open("in-view", "w").close()
    time.sleep({SLOW_SECONDS})
    return "slow\\n"
"""


@pytest.mark.slow
@pytest.mark.parametrize("server", ["django", "flask"])
def test_a_reloader_parent_lets_its_child_finish_a_request_at_a_stop(
    django_site: Path, server: str
) -> None:
    """A request in flight when SIGHUP replaces the generation gets its whole answer.

    Django's and werkzeug's reloader parents raise SystemExit on SIGTERM while they
    wait for the child that serves, and subprocess then SIGKILLs the child: the
    request was reset. The hook has the parent wait for the child's drain instead.
    """
    pytest.importorskip("flask" if server == "flask" else "django")
    if server == "django":
        (django_site / "views.py").write_text(DJANGO_SLOW_VIEWS)
        command: Callable[[int], list[object]] = lambda port: [
            port, "--", PY, "manage.py", "runserver", port
        ]
    else:
        (django_site / "app.py").write_text(FLASK_SLOW_APP)
        command = lambda port: [
            port, "--", PY, "-m", "flask", "--app", "app", "run", "--port", port, "--reload"
        ]
    with start_on_free_port(command, cwd=django_site) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready", timeout=30)
        answers: list[object] = []

        def slow_get() -> None:
            try:
                answers.append(http_get(zocket.port, "/", timeout=SLOW_SECONDS + 10))
            except OSError as exc:
                answers.append(exc)

        client = threading.Thread(target=slow_get)
        client.start()
        wait_for(lambda: (django_site / "in-view").exists(), timeout=15)
        zocket.send_signal(signal.SIGHUP)  # the new generation is ready well within the view
        zocket.wait_for_stderr(r"generation 1 stopped", timeout=SLOW_SECONDS + 15)
        client.join(SLOW_SECONDS + 10)
        log = zocket.stderr_text(0)
    assert len(answers) == 1, log
    answer = answers[0]
    assert not isinstance(answer, Exception), f"{answer!r}\n{log}"
    assert answer[0] == 200 and answer[2] == b"slow\n", f"{answer!r}\n{log}"  # type: ignore[index]


SPARE_CODE = r"""
import json, os, signal, subprocess, sys, time

os.setpgid(0, 0)  # a process group of its own, as a generation's
CHILD = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), sys.exit(0)))\n"
    "print('up', flush=True)\n"
    "time.sleep(30)\n"
)


def child(**kw):
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, **kw)
    assert p.stdout.readline() == b"up\n"
    return p


early = child()
early.kill()  # no stop signal yet: killed at once
result = {"early": early.wait()}
same, alone = child(), child(start_new_session=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # a reloader parent's handler
try:
    os.killpg(0, signal.SIGTERM)  # zocket's stop: to the whole group
    time.sleep(10)
except SystemExit:
    began = time.monotonic()
    same.kill()
    result["same"], result["same_s"] = same.wait(), time.monotonic() - began
    began = time.monotonic()
    alone.kill()
    result["alone"], result["alone_s"] = alone.wait(), time.monotonic() - began
print(json.dumps(result))
"""


def test_a_stopping_process_spares_only_children_told_to_stop_with_it() -> None:
    """After a stop signal, Popen.kill() waits for a child of the same process group (it got
    the signal too) and kills any other child at once, as it does before a stop."""
    env = child_env(
        PYTHONPATH=str(HOOK_DIR), ZOCKET_HOOK_FDS="1000:1", ZOCKET_STOP_TIMEOUT="5"
    )
    data = run_direct(SPARE_CODE, env)
    assert data["early"] == -signal.SIGKILL, data
    assert data["same"] == 0, data  # its own handler ran to the end: spared
    assert 0.2 < data["same_s"] < 5, data
    assert data["alone"] == -signal.SIGKILL and data["alone_s"] < 0.5, data


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", ["TERM", "INT"])
def test_http_server_sighup_restarts_under_load(tmp_path: Path, stop_signal: str) -> None:
    """http.server stopped by either signal loses nothing (the hook's stop guard).

    SIGTERM's default would kill it with its requests; SIGINT's KeyboardInterrupt
    could land between accept() and the start of the request's thread.
    """
    (tmp_path / "index.html").write_text("hello from http.server\n")
    stdout_path = tmp_path / "stdout.txt"
    with (
        open(stdout_path, "w") as stdout,
        start_on_free_port(
            lambda port: ["--stop-signal", stop_signal, port, f"{PY} -m http.server {port}"],
            cwd=tmp_path,
            stdout=stdout,
        ) as zocket,
    ):
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=20)
        with LoadClient(
            zocket.port, path="/index.html", threads=4, rate=100, duration=120, timeout=10
        ) as load:
            load.wait_for(lambda o: o.ok, timeout=20)
            for n in range(2, 12):
                zocket.send_signal(signal.SIGHUP)
                zocket.wait_for_stderr(READY_LINE.format(n=n), timeout=30)
                zocket.wait_for_stderr(rf"generation {n - 1} stopped", timeout=30)
                time.sleep(0.2)
        summary = load.summary()
        port = zocket.port
        lines = zocket.stderr_lines()
        assert zocket.returncode is None, zocket.stderr_text(0)
    assert_all_answered(load, {b"hello from http.server\n"}, minimum_ok=100)
    # Stopped gracefully, not killed: exit 0 after KeyboardInterrupt, or the signal itself.
    stopped = [line for line in lines if re.search(r"generation \d+ stopped", line)]
    assert len(stopped) == 10, "\n".join(lines)
    exit_text = "exit 0" if stop_signal == "INT" else "SIGTERM"
    assert all(exit_text in line for line in stopped), "\n".join(stopped)
    # http.server prints the address its socket has: the held one, not the "::" it asked.
    banners = [
        line for line in stdout_path.read_text().splitlines() if line.startswith("Serving HTTP")
    ]
    banner = f"Serving HTTP on 127.0.0.1 port {port} (http://127.0.0.1:{port}/) ..."
    assert banners == [banner] * 11, summary


def test_hook_reports_readiness_to_ready_notify(tmp_path: Path) -> None:
    """--ready notify: http.server never sends READY=1, only the hook says it waits."""
    with start_on_free_port(
        lambda port: ["--ready", "notify", port, f"{PY} -m http.server {port}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    ) as zocket:
        line = zocket.wait_for_stderr(r"generation 1 ready in", timeout=20)
        assert re.search(r"\(hook: waiting on fd \d+\)$", line), line
        status, _, _ = http_get(zocket.port)
        assert status == 200
        zocket.send_signal(signal.SIGHUP)
        line = zocket.wait_for_stderr(r"generation 2 ready in", timeout=20)
        assert re.search(r"\(hook: waiting on fd \d+\)$", line), line
        zocket.wait_for_stderr(r"generation 1 stopped", timeout=20)
        status, _, _ = http_get(zocket.port)
        assert status == 200


WAIT_LATER_PROBE = (
    PROBE_HEAD
    + r"""
import selectors
s = socket.socket()
s.bind(("127.0.0.1", PORT))
s.listen()
fd = s.fileno()  # asked by the app itself (as werkzeug's reloader does): nothing waits yet
report({"fd": fd})
go = OUT + ".go"
while not os.path.exists(go):
    time.sleep(0.05)
with selectors.DefaultSelector() as sel:
    sel.register(s, selectors.EVENT_READ)  # an event loop asks: now it waits
    while True:
        for key, _ in sel.select():
            conn, _ = s.accept()
            conn.close()
"""
)


def test_hook_notifies_only_when_an_event_loop_asks_for_the_fd(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(WAIT_LATER_PROBE)
    out = tmp_path / "out.json"
    with start_on_free_port(
        lambda port: ["--ready", "notify", port, "--", PY, probe, port, out]
    ) as zocket:
        data = read_json(out, zocket=zocket)
        time.sleep(1.0)
        assert not any("ready in" in line for line in zocket.stderr_lines()), zocket.stderr_text(0)
        Path(str(out) + ".go").touch()
        line = zocket.wait_for_stderr(r"generation 1 ready in", timeout=20)
        assert line.endswith(f"(hook: waiting on fd {data['fd']})"), line


@pytest.mark.slow
def test_aiohttp_run_app_default_host_serves_and_restarts(tmp_path: Path) -> None:
    pytest.importorskip("aiohttp")
    app = tmp_path / "app.py"
    app.write_text(AIOHTTP_APP)
    with start_on_free_port(lambda port: [port, "--", PY, app, port], cwd=tmp_path) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=30)
        status, _, body = http_get(zocket.port)
        assert (status, body) == (200, b"aiohttp generation 1\n")
        # run_app with no host binds every address (0.0.0.0 and ::): both binds adopted,
        # nothing but the held socket listens in the server process.
        listeners = tcp_listeners()
        held = held_inode(zocket)
        mine = {fd: i for fd, i in socket_inodes(zocket.child_pid).items() if i in listeners}
        assert set(mine.values()) == {held}, mine
        assert len(mine) >= 2, mine  # fd 3 and at least one adopted copy
        with load_client(zocket.port) as load:
            load.wait_for(lambda o: o.ok, timeout=20)
            for n in range(2, 5):
                since = time.monotonic()
                zocket.send_signal(signal.SIGHUP)
                zocket.wait_for_stderr(READY_LINE.format(n=n), timeout=30)
                body = f"aiohttp generation {n}\n".encode()
                load.wait_for(body_is(body), timeout=20, since=since)
                zocket.wait_for_stderr(rf"generation {n - 1} stopped", timeout=30)
            time.sleep(0.3)
        summary = load.summary()
        assert zocket.returncode is None, zocket.stderr_text(0)
    # aiohttp stops gracefully on SIGTERM: not one request may be lost.
    assert_no_failures(load)
    assert load.counts()["ok"] > 20, summary


@pytest.mark.slow
def test_watch_django_noreload_overlap_restarts(django_site: Path, tmp_path: Path) -> None:
    views = django_site / "views.py"
    with start_on_free_port(
        lambda port: [
            "--watch",
            django_site,
            port,
            f"{PY} manage.py runserver --noreload {port}",
        ],
        cwd=django_site,
    ) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=30)
        with load_client(zocket.port) as load:
            load.wait_for(body_is(django_body(0)), timeout=30)
            for version in range(1, 5):
                edited = time.monotonic()
                write_atomically(views, DJANGO_VIEWS.format(version=version), tmp_path)
                load.wait_for(body_is(django_body(version)), 30, since=edited)
                # The old generation is stopped once the new one is ready.
                time.sleep(0.5)
            time.sleep(0.5)
        summary = load.summary()
        lines = zocket.stderr_lines()
        assert zocket.returncode is None, zocket.stderr_text(0)
    assert_all_answered(load, {django_body(v) for v in range(5)})
    assert {django_body(v) for v in range(5)} <= set(load.bodies()), summary
    ready = [line for line in lines if re.search(READY_LINE.format(n=r"\d+"), line)]
    # One generation per edit at least (an edit may make two restarts, coalesced or not).
    assert len(ready) >= 5, "\n".join(lines)
    assert not any("failed before ready" in line for line in lines), "\n".join(lines)


# --- what is adopted and what is not ------------------------------------------------------


def test_only_the_held_address_is_adopted(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PORTS_PROBE)
    out = tmp_path / "out.json"
    other = free_port()
    with start_on_free_port(lambda port: [port, "--", PY, probe, port, out, other]) as zocket:
        data = read_json(out, zocket=zocket)
        held = held_inode(zocket)
        zocket_inodes = set(socket_inodes(zocket.pid).values())
        assert socket_inode(zocket.child_pid, 3) == held
        listeners = tcp_listeners()
        stderr = zocket.stderr_text(0)
        port = zocket.port
    assert data["bind_module"] == "_zocket_hook"
    assert data["held"]["sockname"] == ["127.0.0.1", port]
    assert data["held"]["inode"] == held
    assert data["held"]["class"] == "Heldsocket"
    assert data["held"]["accepting"] == 1
    for name, expected_port in [("zero", None), ("other", other), ("other_host", port)]:
        got = data[name]
        assert "error" not in got, (name, got, stderr)
        assert got["inode"] != held and got["inode"] not in zocket_inodes, (name, got)
        assert got["class"] == "socket", (name, got)
        assert listeners.get(got["inode"]) == tuple(got["sockname"]), (name, got)
        if expected_port is not None:
            assert got["sockname"][1] == expected_port
        else:
            assert got["sockname"][1] not in (0, port)
    assert data["other_host"]["sockname"] == ["127.0.0.2", port]
    assert f"not adopting the bind to 127.0.0.2:{port}" in stderr


NO_ZOCKET_CODE = r"""
import _socket, json, os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
c = socket.create_connection(s.getsockname(), timeout=5)
conn, _ = s.accept()
result = {
    "bind_is_original": socket.socket.bind is _socket.socket.bind,
    "hook_imported": "_zocket_hook" in sys.modules,
    "sitecustomize": getattr(sys.modules.get("sitecustomize"), "__file__", None),
    "sockname": list(s.getsockname()),
    "class": type(s).__name__,
    "popen_init_module": __import__("subprocess").Popen.__init__.__module__,
}
for x in (c, conn, s):
    x.close()
print(json.dumps(result))
"""


@pytest.mark.parametrize("python", PYTHONS)
def test_a_process_not_started_by_zocket_is_unaffected(python: str) -> None:
    env = child_env(PYTHONPATH=os.pathsep.join([str(HOOK_DIR), str(REPO)]))
    data = run_direct(NO_ZOCKET_CODE, env, python=python)
    assert data["sitecustomize"] == str(HOOK_DIR / "sitecustomize.py")
    assert data["bind_is_original"] is True
    assert data["hook_imported"] is False
    assert data["class"] == "socket"
    assert data["sockname"][0] == "127.0.0.1" and data["sockname"][1] > 0
    assert data["popen_init_module"] == "subprocess"
    assert data["stderr"] == ""


STALE_CODE = r"""
import json, os, socket, sys
import _socket
port = int(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
result = {"bind_is_original": socket.socket.bind is _socket.socket.bind}
try:
    s.bind(("127.0.0.1", port))
    result["bound"] = True
    result["inode"] = os.fstat(s.fileno()).st_ino
except OSError as exc:
    result["bound"] = False
    result["errno"] = exc.errno
s.close()
print(json.dumps(result))
"""


@pytest.mark.parametrize("inode_delta", [0, 1])
@pytest.mark.parametrize("python", PYTHONS)
def test_hook_fds_with_a_stale_inode_adopt_nothing(inode_delta: int, python: str) -> None:
    """ZOCKET_HOOK_FDS naming an fd whose inode is another one: no adoption (control: 0)."""
    with listening_socket() as held:
        fd = held.fileno()
        port = held.getsockname()[1]
        inode = os.fstat(fd).st_ino + inode_delta
        env = child_env(PYTHONPATH=str(HOOK_DIR), ZOCKET_HOOK_FDS=f"{fd}:{inode}")
        data = run_direct(STALE_CODE, env, pass_fds=[fd], args=[str(port)], python=python)
        real = os.fstat(fd).st_ino
    if inode_delta == 0:
        assert data["bind_is_original"] is False
        assert data["bound"] is True and data["inode"] == real
    else:
        assert data["bind_is_original"] is True
        assert data["bound"] is False and data["errno"] == 98  # EADDRINUSE: its own bind


def test_hook_fds_naming_a_non_socket_adopt_nothing(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("")
    fd = os.open(path, os.O_RDONLY)
    try:
        with listening_socket() as held:
            port = held.getsockname()[1]
            env = child_env(
                PYTHONPATH=str(HOOK_DIR),
                ZOCKET_HOOK_FDS=f"{fd}:{os.fstat(fd).st_ino},x:y,,99999:1",
            )
            data = run_direct(STALE_CODE, env, pass_fds=[fd], args=[str(port)])
    finally:
        os.close(fd)
    assert data["bind_is_original"] is True
    assert data["bound"] is False and data["errno"] == 98
    assert "disabled" not in data["stderr"]


CHAINED_SITECUSTOMIZE = r"""
import os
os.environ["CHAINED_SITECUSTOMIZE"] = "ran"
with open(os.environ["CHAIN_LOG"], "a") as f:
    f.write(f"{os.getpid()}\n")
"""

CHAIN_CODE = r"""
import json, os, socket, sys
result = {
    "env": os.environ.get("CHAINED_SITECUSTOMIZE"),
    "sitecustomize": getattr(sys.modules.get("sitecustomize"), "__file__", None),
    "hook_installed": getattr(socket.socket.bind, "__module__", None) == "_zocket_hook",
    "pid": os.getpid(),
}
if len(sys.argv) > 1:
    port = int(sys.argv[1])
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    result["adopted"] = os.fstat(s.fileno()).st_ino == os.fstat(3).st_ino
    s.close()
print(json.dumps(result), flush=True)
"""


@pytest.mark.parametrize("through_zocket", [False, True])
def test_hook_chains_to_an_existing_sitecustomize(tmp_path: Path, through_zocket: bool) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text(CHAINED_SITECUSTOMIZE)
    chain_log = tmp_path / "chain.log"
    script = tmp_path / "chain.py"
    script.write_text(CHAIN_CODE)
    if through_zocket:
        env = child_env(PYTHONPATH=str(other), CHAIN_LOG=str(chain_log))
        _, result = run_on_free_port(
            lambda port: ["--no-respawn", port, "--", PY, script, port], env=env
        )
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
    else:
        env = child_env(
            PYTHONPATH=os.pathsep.join([str(HOOK_DIR), str(other)]), CHAIN_LOG=str(chain_log)
        )
        data = run_direct(script.read_text(), env)
    assert data["env"] == "ran"
    assert data["sitecustomize"] == str(other / "sitecustomize.py")
    assert data["hook_installed"] is through_zocket
    if through_zocket:
        assert data["adopted"] is True
    # The chained sitecustomize ran once in the app's process (and, through zocket, once in
    # zocket's own interpreter, which runs with the same PYTHONPATH).
    ran = chain_log.read_text().split()
    assert ran.count(str(data["pid"])) == 1
    assert len(ran) == (2 if through_zocket else 1), ran


MODULES_CODE = r"""
import sys
at_start = sorted(sys.modules)
import json, socket
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))  # the held port: adopted under the hook
print(json.dumps({
    "modules": at_start,
    "after_adoption": sorted(sys.modules),
    "stdlib": sorted(sys.stdlib_module_names),
    "hook_installed": getattr(socket.socket.bind, "__module__", None) == "_zocket_hook",
}))
"""


@pytest.mark.parametrize("python", PYTHONS)
def test_the_hook_imports_only_the_standard_library(python: str) -> None:
    with listening_socket() as held:
        fd = held.fileno()
        base_env = child_env()
        hooked_env = child_env(
            PYTHONPATH=os.pathsep.join(
                [str(HOOK_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            ),
            ZOCKET_HOOK_FDS=f"{fd}:{os.fstat(fd).st_ino}",
        )
        # The baseline binds another port: the held one is taken (by the test).
        with socket.socket() as spare:
            spare.bind(("127.0.0.1", 0))
            other = str(spare.getsockname()[1])
        baseline = run_direct(MODULES_CODE, base_env, pass_fds=[fd], args=[other], python=python)
        port = str(held.getsockname()[1])
        hooked = run_direct(MODULES_CODE, hooked_env, pass_fds=[fd], args=[port], python=python)
    assert baseline["hook_installed"] is False
    assert hooked["hook_installed"] is True
    stdlib = set(hooked["stdlib"])
    ours = {"sitecustomize", *(p.stem for p in HOOK_DIR.glob("_zocket_*.py"))}
    for when in ("modules", "after_adoption"):
        added = set(hooked[when]) - set(baseline[when])
        foreign = {m for m in added if m.partition(".")[0] not in stdlib and m not in ours}
        assert not foreign, (when, sorted(foreign))
        assert "zocket" not in hooked[when]
    assert "_zocket_hook" in hooked["modules"]


def bind_probe_args(flags: list[str], port: int) -> list[object]:
    return ["--no-respawn", *flags, port, "--", PY, "-c", BIND_PROBE, port]


def test_no_hook_leaves_the_app_its_own_bind() -> None:
    """--no-hook (and --no-adopt, else the kernel adopts it): the app's bind to the held port
    fails (address in use); without, adopted."""
    results = {}
    for flag in (["--no-hook", "--no-adopt"], []):
        _, result = run_on_free_port(partial(bind_probe_args, flag))
        assert result.returncode == 0, result.stderr
        results[bool(flag)] = json.loads(result.stdout)
    no_hook, hook = results[True], results[False]
    assert no_hook["bound"] is False and no_hook["errno"] == 98, no_hook  # EADDRINUSE
    assert no_hook["hook_fds"] is None and not no_hook["hooked"]
    # The hook of the zocket that runs (installed, in CI), not necessarily the checkout's.
    assert RUNNING_HOOK_DIR not in no_hook["pythonpath"].split(os.pathsep)
    assert hook["bound"] is True and hook["inode"] == hook["fd3_inode"], hook
    assert hook["hooked"] and hook["hook_fds"] == f"3:{hook['fd3_inode']}"
    assert hook["pythonpath"].split(os.pathsep)[0] == RUNNING_HOOK_DIR


def test_listen_by_the_app_keeps_the_held_backlog(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(BACKLOG_PROBE)
    out = tmp_path / "out.json"
    with start_on_free_port(lambda port: [port, "--", PY, probe, port, out]) as zocket:
        data = read_json(out, zocket=zocket)
        assert data["inode"] == held_inode(zocket)
        assert data["class"] == "Heldsocket"
        # Nobody accepts: with listen(1) in force only 2 handshakes could complete.
        completed = count_handshakes(zocket.port, 20, timeout=5.0)
        assert completed == 20, zocket.stderr_text(0)
    # Control: a socket really at backlog 1 completes far fewer in the same test.
    with socket.socket() as small:
        small.bind(("127.0.0.1", 0))
        small.listen(1)
        assert count_handshakes(small.getsockname()[1], 20, timeout=1.0) < 20


@pytest.mark.slow
def test_shutdown_by_the_app_does_not_break_the_held_socket(tmp_path: Path) -> None:
    server = tmp_path / "server.py"
    server.write_text(SHUTDOWN_SERVER)
    with start_on_free_port(lambda port: [port, "--", PY, server, port]) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=20)
        # It shut its socket down at start, and still serves.
        assert http_get(zocket.port)[2] == b"generation 1\n"
        with load_client(zocket.port) as load:
            load.wait_for(lambda o: o.ok, timeout=20)
            for n in range(2, 4):
                since = time.monotonic()
                zocket.send_signal(signal.SIGHUP)
                zocket.wait_for_stderr(READY_LINE.format(n=n), timeout=20)
                zocket.wait_for_stderr(rf"generation {n - 1} shut its socket down", timeout=20)
                zocket.wait_for_stderr(rf"generation {n - 1} stopped", timeout=20)
                body = f"generation {n}\n".encode()
                load.wait_for(body_is(body), timeout=20, since=since)
            # Enough of a load to mean something, however fast the restarts went.
            wait_for(lambda: load.counts()["ok"] > 20, 20, message="20 answers")
        summary = load.summary()
        assert http_get(zocket.port)[2] == b"generation 3\n"
        listeners = tcp_listeners()
        assert listeners.get(held_inode(zocket)) == ("127.0.0.1", zocket.port)
    assert_no_failures(load)
    assert load.counts()["ok"] > 10, summary


POPEN_CODE = r"""
import json, os, socket, subprocess, sys
port = int(sys.argv[1])
if len(sys.argv) > 2:  # the grandchild, started with close_fds=True
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    print(json.dumps({"fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
                      "inode": os.fstat(s.fileno()).st_ino}), flush=True)
    s.close()
    sys.exit(0)
extra = os.pipe()
out = subprocess.run([sys.executable, __file__, str(port), "child"], capture_output=True,
                     text=True, timeout=30, close_fds=True, pass_fds=(extra[1],))
child = json.loads(out.stdout)
child["fd3_inode"] = os.fstat(3).st_ino
child["extra_fd"] = extra[1]
print(json.dumps(child), flush=True)
"""


def test_popen_passes_the_held_fds_to_a_reloader_child(tmp_path: Path) -> None:
    script = tmp_path / "popen.py"
    script.write_text(POPEN_CODE)
    _, result = run_on_free_port(lambda port: ["--no-respawn", port, "--", PY, script, port])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert 3 in data["fds"] and data["extra_fd"] in data["fds"], data  # pass_fds kept too
    assert data["inode"] == data["fd3_inode"]


# --- servers that hand the bound socket on, or bind it before their event loop runs -------

SPAWN_CODE = r"""
import json, multiprocessing, os, socket, sys


def child(sock, queue):
    queue.put({"inode": os.fstat(sock.fileno()).st_ino, "class": type(sock).__name__})


if __name__ == "__main__":
    port = int(sys.argv[1])
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    result = {"parent_inode": os.fstat(s.fileno()).st_ino, "parent_class": type(s).__name__}
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    try:
        process = ctx.Process(target=child, args=(s, queue))
        process.start()
        result.update(queue.get(timeout=30))
        process.join(30)
    except Exception as exc:
        result["error"] = repr(exc)
    print(json.dumps(result), flush=True)
"""


def test_an_adopted_socket_can_be_handed_to_a_multiprocessing_child(tmp_path: Path) -> None:
    """uvicorn --reload / --workers, hypercorn --workers: the bound socket goes to a spawned
    child by pickling (multiprocessing.reduction registers a reducer for socket.socket)."""
    script = tmp_path / "spawn.py"
    script.write_text(SPAWN_CODE)
    _, result = run_on_free_port(
        lambda port: ["--no-respawn", port, "--", PY, script, port], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["parent_class"] == "Heldsocket"
    assert "error" not in data, data
    assert data["inode"] == data["parent_inode"]


ASGI_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"hello from uvicorn\\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.slow
def test_uvicorn_reload_binding_the_port_serves(tmp_path: Path) -> None:
    """`zocket PORT "uvicorn --reload --port PORT app:app"`, no --fd: the hook must adopt."""
    pytest.importorskip("uvicorn")
    site = tmp_path / "site"
    site.mkdir()
    (site / "asgi_app.py").write_text(ASGI_APP)
    command = [PY, "-m", "uvicorn", "--reload", "--reload-dir", str(site), "--no-access-log"]
    with start_on_free_port(
        lambda port: [port, "--", *command, "--port", port, "asgi_app:app"], cwd=site
    ) as zocket:
        line = zocket.wait_for_stderr(r"generation 1 (ready|failed)", timeout=30)
        assert re.search(r"generation 1 ready in", line), zocket.stderr_text(0)
        assert http_get(zocket.port, timeout=10)[2] == b"hello from uvicorn\n"


#: Generation 1: an asyncio server on the held port. Later generations bind the held port
#: (adopting it) and then take their time before their event loop runs (here: forever),
#: like an app that binds first and imports its code afterwards.
EARLY_BIND_SERVER = r"""
import asyncio, os, socket, sys, time

PORT = int(sys.argv[1])
OUT = sys.argv[2]
GENERATION = os.environ["ZOCKET_GENERATION"]

if GENERATION != "1":
    s = socket.socket()
    s.bind(("127.0.0.1", PORT))
    s.listen()
    open(f"{OUT}.{GENERATION}", "w").close()
    time.sleep(120)
    sys.exit(0)


async def handle(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    body = f"generation {GENERATION}\n".encode()
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""


def _nonblocking(pid: int, fd: int) -> bool:
    with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as f:
        fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    return bool(int(fields["flags"].strip(), 8) & os.O_NONBLOCK)


def test_a_booting_generation_does_not_stall_the_serving_one(tmp_path: Path) -> None:
    """While generation 2 boots (adopted, not ready yet), the asyncio generation 1 serves.

    All copies of the held socket share one open file description, O_NONBLOCK included.
    """
    server = tmp_path / "server.py"
    server.write_text(EARLY_BIND_SERVER)
    out = tmp_path / "bound"
    with start_on_free_port(lambda port: [port, "--", PY, server, port, out]) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=20)
        assert http_get(zocket.port)[2] == b"generation 1\n"
        held_fd = next(
            fd for fd, inode in socket_inodes(zocket.pid).items() if inode == held_inode(zocket)
        )
        before = _nonblocking(zocket.pid, held_fd)
        zocket.send_signal(signal.SIGHUP)
        wait_for(lambda: Path(f"{out}.2").exists(), 20, message="generation 2 bound the port")
        during = _nonblocking(zocket.pid, held_fd)
        try:
            body = http_get(zocket.port, timeout=5)[2]
        except TimeoutError:
            pytest.fail(
                "generation 1 (asyncio) stopped answering once generation 2 adopted the "
                f"socket: O_NONBLOCK on the shared socket was {before} and is now {during}"
            )
        assert body == b"generation 1\n"


FROMFD_CODE = r"""
import json, os, socket, sys
held, other = int(sys.argv[1]), int(sys.argv[2])
a = socket.fromfd(held, socket.AF_INET, socket.SOCK_STREAM)
b = socket.fromfd(other, socket.AF_INET, socket.SOCK_STREAM)
print(json.dumps({
    "held_class": type(a).__name__,
    "other_class": type(b).__name__,
    "same_socket": os.fstat(a.fileno()).st_ino == os.fstat(held).st_ino,
    "own_fd": a.fileno() != held,
}))
"""


@pytest.mark.parametrize("python", PYTHONS)
def test_fromfd_of_a_held_fd_is_held(python: str) -> None:
    """werkzeug's reloader child makes its server socket with socket.fromfd(fd): held too
    (so its exit drains like an adopted socket's); other fds are left alone."""
    with listening_socket() as held, listening_socket() as other:
        fds = [held.fileno(), other.fileno()]
        env = child_env(
            PYTHONPATH=str(RUNNING_HOOK_DIR),
            ZOCKET_HOOK_FDS=f"{fds[0]}:{os.fstat(fds[0]).st_ino}",
        )
        data = run_direct(FROMFD_CODE, env, pass_fds=fds, args=[str(fd) for fd in fds], python=python)
    assert data["held_class"].startswith("Held"), data
    assert data["other_class"] == "socket", data
    assert data["same_socket"] and data["own_fd"], data


NONBLOCKING_CODE = r"""
import json, os, signal, socket, sys, threading
signal.alarm(10)  # a regression blocks in accept(): bounded, and the test says why
fd, port = int(sys.argv[1]), int(sys.argv[2])
os.set_blocking(fd, False)  # as Twisted's adopted endpoints do before socket.fromfd
made = {
    "fromfd": socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM),
    "fileno": socket.socket(fileno=os.dup(fd)),
}
out = {}
for how, s in made.items():
    try:
        s.accept()
        out[how] = "accepted"
    except BlockingIOError:
        out[how] = ["EAGAIN", s.gettimeout(), s.getblocking()]
# A socket the app made blocking (socket() + bind of the held address) stays blocking.
if len(sys.argv) > 3:
    b = socket.socket()
    b.bind(("127.0.0.1", port))
    waiting = threading.Thread(target=b.accept, daemon=True)
    waiting.start()
    waiting.join(0.3)
    out["bound"] = [waiting.is_alive(), b.gettimeout(), b.getblocking()]
out["shared_nonblocking"] = not os.get_blocking(fd)
print(json.dumps(out))
"""


@pytest.mark.parametrize("python", PYTHONS)
def test_a_socket_from_a_nonblocking_held_fd_does_not_block(python: str) -> None:
    """Twisted (daphne, twist) sets the held fd non-blocking, takes it with socket.fromfd
    and relies on accept() raising EAGAIN: under the hook it must, as without it."""
    with listening_socket() as held:
        fd, port = held.fileno(), held.getsockname()[1]
        args = [str(fd), str(port)]
        plain = run_direct(NONBLOCKING_CODE, child_env(), pass_fds=[fd], args=args, python=python)
        env = child_env(
            PYTHONPATH=str(RUNNING_HOOK_DIR), ZOCKET_HOOK_FDS=f"{fd}:{os.fstat(fd).st_ino}"
        )
        hooked = run_direct(
            NONBLOCKING_CODE, env, pass_fds=[fd], args=[*args, "bind"], python=python
        )
    expected = ["EAGAIN", None, True]  # what plain Python says: blocking, and it is not
    assert plain["fromfd"] == plain["fileno"] == expected, plain
    assert hooked["fromfd"] == hooked["fileno"] == expected, hooked
    assert hooked["bound"] == [True, None, True], hooked
    assert hooked["shared_nonblocking"] is True, hooked

