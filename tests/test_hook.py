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
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from support import (
    REPO,
    LoadClient,
    ZocketProcess,
    ZocketStartError,
    http_get,
    run_zocket,
    socket_inode,
    socket_inodes,
    start_zocket,
    tcp_listeners,
    wait_for,
)

PY = sys.executable
HOOK_DIR = REPO / "zocket" / "_hook"
#: What a generation made ready through the hook (or found by --ready auto) logs.
READY_LINE = r"generation {n} ready in \d+ ms \((hook: waiting on fd \d+|auto: [^)]*\)?[^)]*)\)"
#: Environment for every server: no bytecode cache (an edit within the same second as
#: the last one, same size, would otherwise be served from a stale .pyc) and unbuffered
#: output (banners printed to a file show up at once).
CHILD_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


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


def start_on_free_port(
    args: Callable[[int], Sequence[object]], **kw: object
) -> ZocketProcess:
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


def read_json(path: Path, timeout: float = 20.0, zocket: ZocketProcess | None = None) -> dict:
    def ready() -> bool:
        return path.exists()

    try:
        wait_for(ready, timeout, message=f"{path.name} written")
    except AssertionError:
        if zocket is not None:
            raise AssertionError(f"{path.name} not written; stderr:\n{zocket.stderr_text(0)}")
        raise
    data: dict = json.loads(path.read_text())
    return data


def write_atomically(path: Path, text: str, tmp_dir: Path | None = None) -> None:
    """Replace ``path`` whole, so that no reloader ever reads half a file."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def assert_no_failures(load: LoadClient) -> None:
    counts = load.counts()
    failed = {k: counts[k] for k in ("refused", "reset", "timeout", "http_error", "error")}
    assert failed == dict.fromkeys(failed, 0), load.summary()


def edit_until_served(
    load: LoadClient,
    write: Callable[[], None],
    expected: bytes,
    *,
    timeout: float = 40.0,
    retry_after: float = 8.0,
) -> None:
    """Make an edit and wait until a response shows it; edit again if the reloader missed it.

    A stat-polling reloader takes the mtime it first sees as its baseline: an edit made
    between a restart and that first look goes unnoticed, a second write is then seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        edited = time.monotonic()
        write()
        try:
            load.wait_for(lambda o: o.body == expected, timeout=retry_after, since=edited)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def run_direct(
    code: str,
    env: Mapping[str, str],
    pass_fds: Sequence[int] = (),
    args: Sequence[str] = (),
    timeout: float = 30.0,
) -> dict:
    """Run ``python -c code`` (not under zocket); its stdout is one JSON document."""
    result = subprocess.run(
        [PY, "-c", code, *args],
        env=dict(env),
        pass_fds=tuple(pass_fds),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict = json.loads(result.stdout)
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
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        done += 1
    finally:
        for s in socks:
            s.close()
    return done


# --- probe scripts -------------------------------------------------------------------------

#: Common part of the probe scripts: report(dict) writes JSON atomically to argv[2].
PROBE_HEAD = r'''
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
'''

#: Binds the held port, port 0, another free port (argv[3]) and the held port on another
#: loopback address (127.0.0.2): only the first may be the held socket.
PORTS_PROBE = PROBE_HEAD + r'''
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
'''

#: Binds the held port, listen(1), reports, and never accepts.
BACKLOG_PROBE = PROBE_HEAD + r'''
s = socket.socket()
s.bind(("127.0.0.1", PORT))
s.listen(1)
report({"inode": ino(s), "class": type(s).__name__})
time.sleep(120)
'''

#: Binds the held port and prints what happened on stdout (for run_zocket --no-respawn).
BIND_PROBE = r'''
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
'''

#: A tiny HTTP server bound by port number, that shuts its socket down at start and on
#: SIGTERM (then exits), and answers with its generation.
SHUTDOWN_SERVER = r'''
import http.server, os, signal, socket, sys

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


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
# An app that tears its listener down: harmless on the adopted socket.
server.socket.shutdown(socket.SHUT_RDWR)


def on_term(signum, frame):
    server.socket.shutdown(socket.SHUT_RDWR)
    server.socket.close()
    sys.stderr.write(f"generation {GENERATION} shut its socket down\n")
    sys.stderr.flush()
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
server.serve_forever()
'''


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
    return HttpResponse(f"django version {{VERSION}}\\n")
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
            load.wait_for(lambda o: o.body == django_body(0), timeout=30)
            for version in range(1, 11):
                # Let the new server process's StatReloader take its baseline first.
                time.sleep(1.2)
                edit_until_served(
                    load,
                    lambda: write_atomically(
                        views, DJANGO_VIEWS.format(version=version), tmp_path
                    ),
                    django_body(version),
                )
            time.sleep(0.5)
        summary = load.summary()
        # Django's own reloader restarted its server process; zocket's generation 1 stayed.
        assert not any(re.search(r"generation 2 started", l) for l in zocket.stderr_lines())
        assert zocket.returncode is None, zocket.stderr_text(0)
    assert_no_failures(load)
    seen = set(load.bodies())
    assert {django_body(v) for v in range(11)} <= seen, summary
    assert seen <= {django_body(v) for v in range(11)}, summary


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
            load.wait_for(lambda o: o.body == flask_body(0), timeout=30)
            for version in range(1, 6):
                time.sleep(1.2)
                edit_until_served(
                    load,
                    lambda: write_atomically(app, FLASK_APP.format(version=version), tmp_path),
                    flask_body(version),
                )
            time.sleep(0.5)
        summary = load.summary()
        assert zocket.returncode is None, zocket.stderr_text(0)
        reloads = [line for line in zocket.stderr_lines() if "Detected change" in line]
    assert_no_failures(load)
    seen = set(load.bodies())
    assert {flask_body(v) for v in range(6)} <= seen, summary
    assert seen <= {flask_body(v) for v in range(6)}, summary
    assert len(reloads) >= 5


@pytest.mark.slow
def test_http_server_sighup_restarts_under_load(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("hello from http.server\n")
    stdout_path = tmp_path / "stdout.txt"
    with open(stdout_path, "w") as stdout, start_on_free_port(
        lambda port: [port, f"{PY} -m http.server {port}"], cwd=tmp_path, stdout=stdout
    ) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=20)
        with LoadClient(
            zocket.port, path="/index.html", threads=2, rate=20, duration=120, timeout=10
        ) as load:
            load.wait_for(lambda o: o.ok, timeout=20)
            for n in range(2, 7):
                zocket.send_signal(signal.SIGHUP)
                zocket.wait_for_stderr(READY_LINE.format(n=n), timeout=30)
                zocket.wait_for_stderr(rf"generation {n - 1} stopped", timeout=30)
                time.sleep(0.3)
        summary = load.summary()
        inode = held_inode(zocket)
        assert zocket.returncode is None, zocket.stderr_text(0)
    assert_no_failures(load)
    assert load.counts()["ok"] > 20, summary
    assert set(load.bodies()) == {b"hello from http.server\n"}
    # http.server prints the address its socket has: the held one, not its own "::".
    banners = [
        line for line in stdout_path.read_text().splitlines() if line.startswith("Serving HTTP")
    ]
    port = zocket.port
    assert banners == [f"Serving HTTP on 127.0.0.1 port {port} (http://127.0.0.1:{port}/) ..."] * 6
    assert inode > 0


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


WAIT_LATER_PROBE = PROBE_HEAD + r'''
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
'''


def test_hook_notifies_only_when_an_event_loop_asks_for_the_fd(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(WAIT_LATER_PROBE)
    out = tmp_path / "out.json"
    with start_on_free_port(
        lambda port: ["--ready", "notify", port, "--", PY, probe, port, out]
    ) as zocket:
        data = read_json(out, zocket=zocket)
        time.sleep(1.0)
        assert not any("ready in" in line for line in zocket.stderr_lines()), (
            zocket.stderr_text(0)
        )
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
        # run_app with no host binds every address (0.0.0.0 and ::): nothing but the
        # held socket listens in the server process.
        listeners = tcp_listeners()
        held = held_inode(zocket)
        for fd, inode in socket_inodes(zocket.child_pid).items():
            if inode in listeners:
                assert inode == held, (fd, listeners[inode])
        with load_client(zocket.port) as load:
            load.wait_for(lambda o: o.ok, timeout=20)
            for n in range(2, 5):
                since = time.monotonic()
                zocket.send_signal(signal.SIGHUP)
                zocket.wait_for_stderr(READY_LINE.format(n=n), timeout=30)
                body = f"aiohttp generation {n}\n".encode()
                load.wait_for(lambda o: o.body == body, timeout=20, since=since)
                zocket.wait_for_stderr(rf"generation {n - 1} stopped", timeout=30)
            time.sleep(0.3)
        summary = load.summary()
        assert zocket.returncode is None, zocket.stderr_text(0)
    assert_no_failures(load)
    assert load.counts()["ok"] > 20, summary


@pytest.mark.slow
def test_watch_django_noreload_overlap_restarts(django_site: Path, tmp_path: Path) -> None:
    views = django_site / "views.py"
    with start_on_free_port(
        lambda port: [
            "--watch", django_site, port, f"{PY} manage.py runserver --noreload {port}",
        ],
        cwd=django_site,
    ) as zocket:
        zocket.wait_for_stderr(READY_LINE.format(n=1), timeout=30)
        with load_client(zocket.port) as load:
            load.wait_for(lambda o: o.body == django_body(0), timeout=30)
            for version in range(1, 5):
                edited = time.monotonic()
                write_atomically(views, DJANGO_VIEWS.format(version=version), tmp_path)
                load.wait_for(lambda o: o.body == django_body(version), 30, since=edited)
            time.sleep(0.5)
        summary = load.summary()
        lines = zocket.stderr_lines()
        assert zocket.returncode is None, zocket.stderr_text(0)
    assert_no_failures(load)
    seen = set(load.bodies())
    assert {django_body(v) for v in range(5)} <= seen, summary
    ready = [line for line in lines if re.search(READY_LINE.format(n=r"\d+"), line)]
    # One generation per edit at least (an edit may make two restarts, coalesced or not).
    assert len(ready) >= 5, "\n".join(lines)


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


NO_ZOCKET_CODE = r'''
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
'''


def test_a_process_not_started_by_zocket_is_unaffected() -> None:
    env = child_env(PYTHONPATH=os.pathsep.join([str(HOOK_DIR), str(REPO)]))
    data = run_direct(NO_ZOCKET_CODE, env)
    assert data["sitecustomize"] == str(HOOK_DIR / "sitecustomize.py")
    assert data["bind_is_original"] is True
    assert data["hook_imported"] is False
    assert data["class"] == "socket"
    assert data["sockname"][0] == "127.0.0.1" and data["sockname"][1] > 0
    assert data["popen_init_module"] == "subprocess"
    assert data["stderr"] == ""


STALE_CODE = r'''
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
'''


@pytest.mark.parametrize("inode_delta", [0, 1])
def test_hook_fds_with_a_stale_inode_adopt_nothing(inode_delta: int) -> None:
    """ZOCKET_HOOK_FDS naming an fd whose inode is another one: no adoption (control: 0)."""
    with listening_socket() as held:
        fd = held.fileno()
        port = held.getsockname()[1]
        inode = os.fstat(fd).st_ino + inode_delta
        env = child_env(
            PYTHONPATH=str(HOOK_DIR), ZOCKET_HOOK_FDS=f"{fd}:{inode}"
        )
        data = run_direct(STALE_CODE, env, pass_fds=[fd], args=[str(port)])
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


CHAINED_SITECUSTOMIZE = r'''
import os
os.environ["CHAINED_SITECUSTOMIZE"] = "ran"
with open(os.environ["CHAIN_LOG"], "a") as f:
    f.write(f"{os.getpid()}\n")
'''

CHAIN_CODE = r'''
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
'''


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
        port, result = run_on_free_port(
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


MODULES_CODE = r'''
import sys
at_start = sorted(sys.modules)
import json, socket
print(json.dumps({
    "modules": at_start,
    "stdlib": sorted(sys.stdlib_module_names),
    "hook_installed": getattr(socket.socket.bind, "__module__", None) == "_zocket_hook",
}))
'''


def test_the_hook_imports_only_the_standard_library() -> None:
    with listening_socket() as held:
        fd = held.fileno()
        base_env = child_env()
        hooked_env = child_env(
            PYTHONPATH=os.pathsep.join(
                [str(HOOK_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            ),
            ZOCKET_HOOK_FDS=f"{fd}:{os.fstat(fd).st_ino}",
        )
        baseline = run_direct(MODULES_CODE, base_env, pass_fds=[fd])
        hooked = run_direct(MODULES_CODE, hooked_env, pass_fds=[fd])
    assert baseline["hook_installed"] is False
    assert hooked["hook_installed"] is True
    added = set(hooked["modules"]) - set(baseline["modules"])
    stdlib = set(hooked["stdlib"])
    foreign = {
        m for m in added
        if m.partition(".")[0] not in stdlib and m not in ("sitecustomize", "_zocket_hook")
    }
    assert not foreign, sorted(foreign)
    assert "zocket" not in hooked["modules"]
    assert "_zocket_hook" in added


def test_no_hook_leaves_the_app_its_own_bind() -> None:
    """--no-hook: the app's bind to the held port fails (address in use); without, adopted."""
    results = {}
    for flag in (["--no-hook"], []):
        port, result = run_on_free_port(
            lambda port: ["--no-respawn", *flag, port, "--", PY, "-c", BIND_PROBE, port]
        )
        assert result.returncode == 0, result.stderr
        results[bool(flag)] = json.loads(result.stdout)
    no_hook, hook = results[True], results[False]
    assert no_hook["bound"] is False and no_hook["errno"] == 98, no_hook  # EADDRINUSE
    assert no_hook["hook_fds"] is None and not no_hook["hooked"]
    assert str(HOOK_DIR) not in no_hook["pythonpath"].split(os.pathsep)
    assert hook["bound"] is True and hook["inode"] == hook["fd3_inode"], hook
    assert hook["hooked"] and hook["hook_fds"] == f"3:{hook['fd3_inode']}"
    assert hook["pythonpath"].split(os.pathsep)[0] == str(HOOK_DIR)


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
                load.wait_for(lambda o: o.body == body, timeout=20, since=since)
            time.sleep(0.3)
        summary = load.summary()
        assert http_get(zocket.port)[2] == b"generation 3\n"
        listeners = tcp_listeners()
        assert listeners.get(held_inode(zocket)) == ("127.0.0.1", zocket.port)
    assert_no_failures(load)
    assert load.counts()["ok"] > 10, summary


POPEN_CODE = r'''
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
'''


def test_popen_passes_the_held_fds_to_a_reloader_child(tmp_path: Path) -> None:
    script = tmp_path / "popen.py"
    script.write_text(POPEN_CODE)
    port, result = run_on_free_port(lambda port: ["--no-respawn", port, "--", PY, script, port])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert 3 in data["fds"] and data["extra_fd"] in data["fds"], data  # pass_fds kept too
    assert data["inode"] == data["fd3_inode"]
