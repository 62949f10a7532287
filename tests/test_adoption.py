"""Servers in other languages bind the port themselves and get the held socket (zocket/adoption).

Each test starts a real runtime, unchanged, under zocket on a free port: node, `php -S`,
`python3 -m http.server` with the Python hook off, a static Go net/http binary and `go run .`
(which builds it and runs it as its child), Ruby's WEBrick, Java's com.sun.net.httpserver. The server's own bind() of the port zocket holds would fail with
EADDRINUSE (the held socket has no SO_REUSEPORT); it serves, so the kernel-side adoption gave
it the held socket, and /proc shows that socket in the server and no listener of its own.

A runtime missing on this machine skips its test, except in CI (CI=true), where .ci/run
installs them all and a missing one is a failure.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import (
    LoadClient,
    ZocketProcess,
    assert_no_failures,
    group_members,
    held_inode,
    http_get,
    need,
    proc_stat,
    proc_status,
    read_cmdline,
    run_zocket,
    server_command,
    socket_inodes,
    start_in,
    start_zocket,
    tcp_listeners,
    wait_for,
)
from zocket.adoption import Held, held_for

pytestmark = pytest.mark.slow

#: How many SIGHUP restarts each runtime goes through under load.
RESTARTS = 3
#: Requests per second of the steady load (4 threads, each request on a new connection).
RATE = 80.0
#: Seconds the load runs between restarts.
PAUSE = 0.7

NODE_SERVER = """\
const http = require("http");
const port = Number(process.argv[2]);
http.createServer((req, res) => res.end(`hello from node ${process.pid}\\n`)).listen(port);
"""

#: The one line that makes node finish its requests when told to stop: what loses nothing.
NODE_GRACEFUL_SERVER = """\
const http = require("http");
const port = Number(process.argv[2]);
const server = http.createServer((req, res) => res.end(`hello from node ${process.pid}\\n`));
server.listen(port);
process.on("SIGTERM", () => server.close());
"""

PHP_INDEX = "<?php echo 'hello from php ', getmypid(), \"\\n\";\n"

GO_SERVER = """\
package main

import (
\t"fmt"
\t"net/http"
\t"os"
)

func main() {
\thttp.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
\t\tfmt.Fprintf(w, "hello from go %d\\n", os.Getpid())
\t})
\tif err := http.ListenAndServe(":"+os.Args[1], nil); err != nil {
\t\tfmt.Fprintln(os.Stderr, err)
\t\tos.Exit(1)
\t}
}
"""

RUBY_SERVER = """\
require "webrick"
server = WEBrick::HTTPServer.new(Port: Integer(ARGV[0]), BindAddress: "127.0.0.1",
                                 AccessLog: [], Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN))
server.mount_proc("/") { |req, res| res.body = "hello from ruby #{Process.pid}\\n" }
trap("TERM") { server.shutdown }
server.start
"""

JAVA_SERVER = """\
import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;

public class Hello {
    public static void main(String[] args) throws Exception {
        HttpServer server = HttpServer.create(new InetSocketAddress(Integer.parseInt(args[0])), 0);
        server.createContext("/", exchange -> {
            byte[] body = ("hello from java " + ProcessHandle.current().pid() + "\\n").getBytes();
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) { out.write(body); }
        });
        server.start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(1)));
    }
}
"""


GEVENT_SERVER = """\
import os, sys
from gevent.pywsgi import WSGIServer

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"hello from gevent {os.getpid()}\\n".encode()]

WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None).serve_forever()
"""


GRANIAN_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello from granian\\n"})
"""


GO_MOD = "module hello\n\ngo 1.19\n"


@pytest.fixture(scope="module")
def go_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of every go command of this module: one build cache and GOPATH for
    them all (the binary's build warms it for `go run .`), static, never on the network."""
    need("go")
    work = tmp_path_factory.mktemp("go-env")
    return {
        "CGO_ENABLED": "0",
        "GOCACHE": str(work / "cache"),
        "GOPATH": str(work / "gopath"),
        "GOFLAGS": "",
        "GO111MODULE": "on",
        "GOPROXY": "off",  # the module needs nothing but the standard library
        "GOTOOLCHAIN": "local",  # go 1.21+: never download another toolchain
    }


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory, go_env: dict[str, str]) -> Path:
    """A static Go net/http server, built once for this module with its own caches."""
    go = need("go")
    work = tmp_path_factory.mktemp("go")
    (work / "main.go").write_text(GO_SERVER)
    (work / "go.mod").write_text(GO_MOD)
    subprocess.run(
        [go, "build", "-o", str(work / "hello")],
        cwd=work,
        env={**os.environ, **go_env},
        check=True,
        timeout=300,
    )
    return work / "hello"


@pytest.fixture(scope="module")
def java_class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    javac = need("javac")
    work = tmp_path_factory.mktemp("java")
    (work / "Hello.java").write_text(JAVA_SERVER)
    subprocess.run([javac, "Hello.java"], cwd=work, check=True, timeout=300)
    return work


@dataclass(frozen=True)
class Runtime:
    """One runtime's server: its files, its command line (``{port}`` is zocket's placeholder)."""

    name: str
    binary: str
    command: list[str]
    body: bytes
    files: dict[str, str] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)


RUNTIMES = [
    Runtime(
        "node",
        "node",
        ["node", "server.js", "{port}"],
        b"hello from node",
        {"server.js": NODE_SERVER},
    ),
    Runtime(
        "node-graceful",
        "node",
        ["node", "server.js", "{port}"],
        b"hello from node",
        {"server.js": NODE_GRACEFUL_SERVER},
    ),
    # node (above), php -S, WEBrick, gevent and granian without the hook die of SIGTERM with
    # what they had taken (1 reset in 20-50 restarts at 300-500 requests/s): zocket sends it
    # while they are frozen and hold no connection (zocket.quiesce), so none is lost.
    Runtime(
        "php",
        "php",
        ["php", "-S", "127.0.0.1:{port}"],
        b"hello from php",
        {"index.php": PHP_INDEX},
    ),
    Runtime(
        "python",
        sys.executable,
        [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
        b"<!DOCTYPE",
        {"index.txt": "hello\n"},
        ["--no-hook"],
    ),
    Runtime("go", "go", ["./hello", "{port}"], b"hello from go"),
    # `go run .` builds the module (from the build cache the binary above warmed: only the
    # link runs again) and runs the binary as its child, which binds: a generation of two
    # processes, the second one adopting the held socket.
    Runtime(
        "go-run",
        "go",
        ["go", "run", ".", "{port}"],
        b"hello from go",
        {"main.go": GO_SERVER, "go.mod": GO_MOD},
    ),
    Runtime(
        "ruby",
        "ruby",
        ["ruby", "server.rb", "{port}"],
        b"hello from ruby",
        {"server.rb": RUBY_SERVER},
    ),
    Runtime("java", "java", ["java", "-cp", "{classes}", "Hello", "{port}"], b"hello from java"),
    # gevent binds through its own socket class, which the Python hook never sees.
    Runtime(
        "gevent",
        sys.executable,
        [sys.executable, "server.py", "{port}"],
        b"hello from gevent",
        {"server.py": GEVENT_SERVER},
        ["--no-hook"],
    ),
    # granian binds in Rust, in its main process and again in each worker: with the hook off,
    # the kernel path alone adopts both (the evidence for retiring the hook's granian bind
    # patch).
    Runtime(
        "granian",
        sys.executable,
        ["{granian}", "--interface", "asgi", "--port", "{port}", "app:app"],
        b"hello from granian",
        {"app.py": GRANIAN_APP},
        ["--no-hook"],
    ),
]


def prepare(runtime: Runtime, tmp_path: Path, request: pytest.FixtureRequest) -> list[str]:
    """Write the runtime's files into ``tmp_path``; the zocket arguments that run it."""
    need(runtime.binary)
    if runtime.name == "gevent":
        pytest.importorskip("gevent")  # in the test extra: installed wherever the tests run
    for name, text in runtime.files.items():
        (tmp_path / name).write_text(text)
    command = list(runtime.command)
    if runtime.name == "go":
        shutil.copy(request.getfixturevalue("go_binary"), tmp_path / "hello")
    if runtime.name == "go-run":
        request.getfixturevalue("go_binary")  # the standard library, compiled into the cache
        # go run links the binary under GOTMPDIR and leaves it there when it is killed
        # (each stopped generation): here, not in /tmp.
        (tmp_path / "gotmp").mkdir()
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for name, value in {
            **request.getfixturevalue("go_env"),
            "GOTMPDIR": str(tmp_path / "gotmp"),
        }.items():
            monkeypatch.setenv(name, value)  # zocket's environment, so go run's
    if runtime.name == "granian":
        granian = server_command("granian")
        command = [*granian, *command[1:]]
    if runtime.name == "java":
        classes = str(request.getfixturevalue("java_class"))
        command = [classes if word == "{classes}" else word for word in command]
    return [*runtime.options, "--", *command]


def adopted_lines(zocket: ZocketProcess, generation: int) -> list[str]:
    pattern = re.compile(
        rf"generation {generation} \(pid \d+\): bind\((\S+)\) adopted the held socket \(fd 3\)"
    )
    return [line for line in zocket.stderr_lines() if pattern.search(line)]


def assert_serves_on_the_held_socket(zocket: ZocketProcess, pid: int) -> None:
    """Every TCP listener the server's processes have open is the held socket; one has it."""
    held = held_inode(zocket)
    listeners = tcp_listeners()
    seen = []
    for member in group_members(pid):
        try:
            inodes = socket_inodes(member)
        except FileNotFoundError:
            continue
        for fd, inode in inodes.items():
            if inode in listeners:
                assert inode == held, f"pid {member} fd {fd} listens on {listeners[inode]}"
                seen.append((member, fd))
    assert seen, f"no process of generation {pid} holds the socket"


def assert_go_run_child_binds(zocket: ZocketProcess, generation: int, pid: int, tmp: Path) -> None:
    """`go run .` (the generation's process ``pid``) did not bind: the binary it built and
    started as its child did, and adopted the held socket."""
    (line,) = adopted_lines(zocket, generation)
    match = re.search(r"\(pid (\d+)\): bind", line)
    assert match is not None, line
    binder = int(match[1])
    assert binder != pid, line
    stat = proc_stat(binder)
    assert stat is not None and stat[1] == pid, (line, stat)  # its parent is go run
    assert read_cmdline(binder)[0].startswith(str(tmp / "gotmp")), read_cmdline(binder)
    assert read_cmdline(pid)[1:3] == ["run", "."], read_cmdline(pid)


def generation_pid(zocket: ZocketProcess, number: int) -> int:
    line = zocket.wait_for_stderr(rf"generation {number} started \(pid \d+\)", timeout=30)
    match = re.search(r"\(pid (\d+)\)", line)
    assert match is not None
    return int(match[1])


@pytest.mark.parametrize("runtime", RUNTIMES, ids=[r.name for r in RUNTIMES])
def test_runtime_adopts_the_held_socket_across_restarts(
    runtime: Runtime, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    args = prepare(runtime, tmp_path, request)
    with start_in(tmp_path, args) as zocket:
        ready = zocket.wait_for_stderr(r"generation 1 ready in \d+ ms", timeout=60)
        # --ready auto saw a process of it wait on the held socket (epoll, poll, ...).
        assert re.search(r"\(auto: (process|worker) \d+ waiting on fd \d+", ready), ready
        assert adopted_lines(zocket, 1), zocket.stderr_text(timeout=0)
        status, _, body = http_get(zocket.port)
        assert status == 200 and body.startswith(runtime.body), body
        assert_serves_on_the_held_socket(zocket, zocket.child_pid)
        if runtime.name == "go-run":
            assert_go_run_child_binds(zocket, 1, zocket.child_pid, tmp_path)
        with LoadClient(zocket.port, rate=RATE, threads=4, duration=120) as load:
            load.wait_for(lambda o: o.ok, timeout=10)
            for number in range(2, RESTARTS + 2):
                time.sleep(PAUSE)  # serve a while between restarts
                zocket.send_signal(signal.SIGHUP)
                pid = generation_pid(zocket, number)
                zocket.wait_for_stderr(rf"generation {number} ready in", timeout=60)
                zocket.wait_for_stderr(rf"generation {number - 1} stopped", timeout=30)
                assert adopted_lines(zocket, number)
                since = time.monotonic()
                load.wait_for(lambda o: o.ok, timeout=10, since=since)
            assert_serves_on_the_held_socket(zocket, pid)
            if runtime.name == "go-run":
                assert_go_run_child_binds(zocket, RESTARTS + 1, pid, tmp_path)
            time.sleep(PAUSE)
        assert_no_failures(load, minimum_ok=int(RATE * PAUSE * RESTARTS / 2))
        print(f"{runtime.name}: {load.summary()}")
        assert not any("not adopted" in line for line in zocket.stderr_lines())
        assert zocket.stop() in (0, 128 + signal.SIGTERM, 143, 130)


def test_no_adopt_leaves_the_bind_to_the_kernel(tmp_path: Path) -> None:
    """With --no-adopt a server that binds the held port meets EADDRINUSE, as before."""
    need("node")
    (tmp_path / "server.js").write_text(NODE_SERVER)
    with start_in(
        tmp_path, ["--no-adopt", "--no-respawn", "--", "node", "server.js", "{port}"]
    ) as zocket:
        wait_for(lambda: zocket.returncode is not None, 30, message="zocket to exit")
        text = zocket.stderr_text()
    assert "EADDRINUSE" in text
    assert "adopted" not in text and "adoption:" not in text


def test_no_adopt_is_one_switch_for_the_hook_too_and_says_why_a_server_fails(
    tmp_path: Path,
) -> None:
    """A Python server that binds the held port is adopted by the hook or the kernel;
    with --no-adopt by neither, and zocket says what the likely cause is."""
    server = [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    with start_in(tmp_path, ["--no-adopt", "--no-respawn", "--", *server]) as zocket:
        wait_for(lambda: zocket.returncode is not None, 30, message="zocket to exit")
        text = zocket.stderr_text()
        port = zocket.port
    assert "Address already in use" in text, text
    assert (
        f"generation 1 exited before it was ready and adoption is off (--no-adopt): if the "
        f"server binds port {port} itself, it gets 'address already in use' while zocket "
        "holds it; give it the socket on fd 3 (see the recipes) or drop --no-adopt"
    ) in text, text


# --- node's own watcher, localhost --------------------------------------------------------------


def test_node_watch_restarts_its_child_on_the_held_socket(tmp_path: Path) -> None:
    """`node --watch` restarts its server child itself when the file changes: each new child
    binds again and adopts the held socket, under load, losing nothing (the server closes
    on SIGTERM, which node's watcher sends the old child)."""
    need("node")
    script = tmp_path / "server.js"
    script.write_text(NODE_GRACEFUL_SERVER)
    with start_in(tmp_path, ["--", "node", "--watch", "server.js", "{port}"]) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", timeout=60)
        with LoadClient(zocket.port, rate=RATE, threads=4, duration=120) as load:
            load.wait_for(lambda o: o.ok, timeout=10)
            for version in range(1, RESTARTS + 1):
                time.sleep(PAUSE)
                text = NODE_GRACEFUL_SERVER.replace(
                    "hello from node", f"hello from node v{version}"
                )
                script.write_text(text)
                expected = f"hello from node v{version}".encode()
                load.wait_for(lambda o, e=expected: o.body.startswith(e), timeout=30)  # type: ignore[misc]
            time.sleep(PAUSE)
        assert_no_failures(load, minimum_ok=int(RATE * PAUSE * RESTARTS / 2))
        print(f"node --watch: {load.summary()}")
        # One generation throughout; each of node's children adopted the held socket.
        assert len(adopted_lines(zocket, 1)) == RESTARTS + 1, zocket.stderr_text(timeout=0)
        assert not any("generation 2" in line for line in zocket.stderr_lines())


def test_node_binding_localhost_adopts_the_held_loopback(tmp_path: Path) -> None:
    """node resolves `localhost` to ::1 or 127.0.0.1: either loopback is served by the held one."""
    need("node")
    server = NODE_SERVER.replace(".listen(port)", '.listen(port, "localhost")')
    (tmp_path / "server.js").write_text(server)
    with start_in(tmp_path, ["--", "node", "server.js", "{port}"]) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", timeout=60)
        lines = adopted_lines(zocket, 1)
        assert lines and re.search(rf"bind\((\[::1\]|127\.0\.0\.1):{zocket.port}\)", lines[0])
        status, _, body = http_get(zocket.port)
        assert status == 200 and body.startswith(b"hello from node")
        assert_serves_on_the_held_socket(zocket, zocket.child_pid)


# --- binds that are not adopted, and no adoption at all ----------------------------------------

NOT_ADOPTED = """\
import socket, sys
port = int(sys.argv[1])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", port))
print("udp bound", udp.getsockname(), flush=True)
other = socket.socket()
other.bind(("127.0.0.2", port))
print("tcp bound", other.getsockname(), flush=True)
"""


def test_binds_the_held_socket_cannot_serve_get_the_kernels_answer(tmp_path: Path) -> None:
    (tmp_path / "binds.py").write_text(NOT_ADOPTED)
    command = [
        "--port",
        "0",
        "--no-hook",
        "--no-respawn",
        "--",
        sys.executable,
        "binds.py",
        "{port}",
    ]
    with start_zocket(command, cwd=tmp_path, stdout=subprocess.PIPE) as zocket:
        assert zocket.wait() == 0
        assert zocket.proc.stdout is not None
        out = zocket.proc.stdout.read().decode()
        port = zocket.port
        lines = zocket.stderr_lines()
    # The kernel's own answers: both ports are free for these binds.
    assert out == f"udp bound ('127.0.0.1', {port})\ntcp bound ('127.0.0.2', {port})\n"
    pid = zocket.child_pid
    udp = [line for line in lines if f"(pid {pid}): bind(udp 127.0.0.1:{port}) not adopted" in line]
    assert len(udp) == 1, lines
    other = [
        line
        for line in lines
        if f"(pid {pid}): bind(127.0.0.2:{port}) not adopted: zocket holds 127.0.0.1:{port}" in line
    ]
    assert len(other) == 1, lines
    assert not any("adopted the held socket" in line for line in lines)


@pytest.mark.parametrize("code", ["ENOSYS", "EPERM"])
def test_without_seccomp_the_generation_runs_and_one_line_says_why(code: str) -> None:
    deny = Path(__file__).resolve().parent / "seccomp_deny.py"
    result = run_zocket(
        ["--port", "0", "--no-respawn", "--", sys.executable, "-c", "print('generation ran')"],
        prefix=[sys.executable, str(deny), code],
        timeout=60,
    )
    reason = os.strerror(getattr(errno, code))
    expected = (
        f"zocket: adoption: seccomp user notification unavailable ({reason}): "
        "generation 1 runs without it"
    )
    assert result.stderr.splitlines().count(expected) == 1, result.stderr
    assert result.stdout == "generation ran\n"
    assert result.returncode == 0, result.stderr


# --- the rule ---------------------------------------------------------------------------------


def held(host: str, port: int = 8000, v6only: bool = False) -> Held:
    ip = ipaddress.ip_address(host)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return Held(fd=-1, server_fd=3, family=family, host=ip, port=port, v6only=v6only, inode=1)


@pytest.mark.parametrize(
    "holding, family, host, port, expected",
    [
        ("127.0.0.1", socket.AF_INET, "127.0.0.1", 8000, True),
        ("127.0.0.1", socket.AF_INET, "0.0.0.0", 8000, True),
        ("127.0.0.1", socket.AF_INET6, "::", 8000, True),  # node's and Go's default
        ("127.0.0.1", socket.AF_INET6, "::1", 8000, True),  # localhost as ::1
        ("127.0.0.1", socket.AF_INET6, "::ffff:127.0.0.1", 8000, True),
        ("::1", socket.AF_INET, "127.0.0.1", 8000, True),
        ("127.0.0.1", socket.AF_INET, "127.0.0.2", 8000, False),
        ("127.0.0.1", socket.AF_INET, "192.0.2.1", 8000, False),
        ("0.0.0.0", socket.AF_INET, "192.0.2.1", 8000, True),
        ("0.0.0.0", socket.AF_INET6, "2001:db8::1", 8000, False),
        ("::", socket.AF_INET, "192.0.2.1", 8000, True),  # dual stack
        ("127.0.0.1", socket.AF_INET, "127.0.0.1", 8001, None),  # another port: not ours
        ("127.0.0.1", socket.AF_INET, "127.0.0.1", 0, None),  # Go's probe binds
        ("127.0.0.1", socket.AF_UNIX, "127.0.0.1", 8000, None),
    ],
)
def test_the_adoption_rule(
    holding: str, family: int, host: str, port: int, expected: bool | None
) -> None:
    sockets = [held(holding)]
    match = held_for(sockets, family, host, port)
    if expected is True:
        assert match is sockets[0]
    else:
        assert match is expected


def test_a_v6only_wildcard_does_not_serve_ipv4() -> None:
    assert held_for([held("::", v6only=True)], socket.AF_INET, "192.0.2.1", 8000) is False


# --- no_new_privs: only when the kernel asks for it --------------------------------------------


def test_no_new_privs_is_set_only_without_cap_sys_admin() -> None:
    """As root zocket installs the filter without no_new_privs (setuid programs the server runs
    keep working); as another user (--user) the kernel asks for it, and adoption still works."""
    need("php")
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    with tempfile.TemporaryDirectory(prefix="zk-adopt-") as name:
        public = Path(name)
        public.chmod(0o755)  # the server runs as nobody; tmp_path is root's, 0700
        (public / "index.php").write_text(PHP_INDEX)
        (public / "index.php").chmod(0o644)
        for user in ([], ["--user", "nobody"]):
            args = ["--port", "0", *user, "--", "php", "-S", "127.0.0.1:{port}"]
            with start_zocket(args, cwd=public) as zocket:
                zocket.wait_for_stderr(r"generation 1 ready in", timeout=60)
                assert adopted_lines(zocket, 1), zocket.stderr_text(timeout=0)
                status, _, body = http_get(zocket.port)
                assert status == 200 and body.startswith(b"hello from php")
                expected = "1" if user else "0"
                assert proc_status(zocket.child_pid)["NoNewPrivs"] == expected
                assert zocket.stop() in (0, 128 + signal.SIGTERM)
