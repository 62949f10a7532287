"""What the hook costs a process, and the oldest Python it must run under.

Every Python process of a generation imports the hook at start-up, most of
them never serve (a CLI helper, a reloader's file watcher): for those it must
cost next to nothing. The figure itself comes from ``benchmarks/cost.py``
(``python -m benchmarks.cost``), which the README quotes; the robust part of
the test is which modules such a process ends up with.
"""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO, LoadClient, assert_no_failures
from test_hook import HOOK_DIR, OLDEST_PYTHON, PY, RUNNING_HOOK_DIR, start_on_free_port

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.cost import measure_hook_import_cost

#: Modules that a process which never serves must not import because of the hook.
HEAVY = {
    "threading", "selectors", "select", "socket", "signal", "subprocess", "weakref",
    "ipaddress", "asyncio", "socketserver", "_zocket_held", "_zocket_signals", "_zocket_asyncio",
    "_zocket_socketserver", "_zocket_uvloop", "_zocket_granian",
}  # fmt: skip


def assert_cheap_start_up(python: str) -> None:
    cost = measure_hook_import_cost(Path(RUNNING_HOOK_DIR), python=python, runs=5)
    added = set(cost["modules_added"])
    assert "_zocket_hook" in added, cost  # the hook did run
    heavy = {m for m in added if m in HEAVY or m.partition(".")[0] in ("granian", "uvloop")}
    assert not heavy, cost
    assert cost["sitecustomize_us"] < 5000, cost  # about 0.5 ms on this machine kind


def test_the_hook_costs_little_to_a_process_that_does_not_serve() -> None:
    """Every Python process of a generation imports the hook: one that never imports socket
    (a CLI helper, a reloader's watcher) pays for three small modules, nothing more."""
    assert_cheap_start_up(PY)



COMPILE_ALL = r"""
import sys
for path in sys.argv[1:]:
    with open(path) as f:
        compile(f.read(), path, "exec")
print(len(sys.argv) - 1)
"""


@pytest.mark.slow
def test_the_hook_runs_under_the_oldest_python_claimed(tmp_path: Path) -> None:
    """Python 3.10: every hook module compiles, start-up stays cheap, and a hooked
    ``python3.10 -m http.server`` adopts the held socket and restarts under load."""
    assert Path(OLDEST_PYTHON).exists(), "no Python 3.10 (set ZOCKET_OLDEST_PYTHON)"
    files = sorted(str(p) for p in HOOK_DIR.glob("*.py"))
    compiled = subprocess.run(
        [OLDEST_PYTHON, "-c", COMPILE_ALL, *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert compiled.returncode == 0 and compiled.stdout.strip() == str(len(files)), compiled
    assert_cheap_start_up(OLDEST_PYTHON)
    server = [OLDEST_PYTHON, "-m", "http.server", "--bind", "127.0.0.1"]
    with start_on_free_port(lambda port: [port, "--", *server, port], cwd=tmp_path) as zocket:
        with LoadClient(zocket.port, threads=2, rate=40, duration=60, timeout=10) as load:
            ready = []
            for n in (1, 2, 3):
                ready.append(zocket.wait_for_stderr(rf"generation {n} ready in \d+ ms", 20))
                load.wait_for(lambda o: o.ok, timeout=10, since=time.monotonic())
                time.sleep(1.0)  # a second of load on each generation
                if n < 3:
                    zocket.send_signal(signal.SIGHUP)
        assert zocket.stop() in (0, 128 + signal.SIGTERM)  # http.server dies of SIGTERM
    # The hook's message and zocket's look at /proc race to tell; the hook wins nearly always.
    assert any("(hook: waiting on fd" in line for line in ready), ready
    assert_no_failures(load, minimum_ok=80)


SERVERS = {
    "asyncio", "socketserver", "uvloop", "granian", "gunicorn", "uvicorn", "hypercorn",
    "daphne", "twisted", "django", "werkzeug", "flask", "aiohttp", "tornado", "waitress",
}  # fmt: skip
#: The modules that must name no server (the registry names them: that is its job).
GENERIC = ("sitecustomize", "_zocket_protocol", "_zocket_hook", "_zocket_held", "_zocket_signals")


def _code_names(tree: ast.AST) -> set[str]:
    """Names, attributes and strings in code, docstrings left out (prose may give examples)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.update(node.name.split("."))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            found.update(re.findall(r"\w+", node.value))
    return found


def test_the_hook_imports_in_one_direction_and_its_core_names_no_server() -> None:
    trees = {p.stem: ast.parse(p.read_text()) for p in HOOK_DIR.glob("*.py")}
    graph = {
        name: {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if alias.name in trees
        }
        for name, tree in trees.items()
    }
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in graph[name]:
                visit(dep, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())
    for name in GENERIC:
        named = _code_names(trees[name]) & SERVERS
        assert not named, (name, named)
