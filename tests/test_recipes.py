"""Every recipe of the README's "Recipes" table, run as written, under load across SIGHUPs.

The commands are read from README.md itself, so a recipe cannot change without its
test, nor rot unnoticed: each one runs with its port replaced by a free one, in a
directory holding the app it names (an app that answers ``generation N``, N from
ZOCKET_GENERATION), under a steady load of new connections, through four SIGHUPs.
Every request must be answered, each new generation must serve, and every old one
must stop by itself (no SIGKILL after --stop-timeout). A recipe that is a line of
app code ("in the app: ...") runs as that line in an app started with
``python app.py``, the way the table says to run it.

A server that is not installed fails its test: they are all in the ``test`` extra.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import (
    REPO,
    LoadClient,
    ZocketProcess,
    assert_no_failures,
)
from test_hook import DJANGO_MANAGE, DJANGO_URLS, body_is, child_env, start_on_free_port

README = REPO / "README.md"
#: The port every recipe is written with.
README_PORT = "8000"
RESTARTS = 4
RATE = 60.0
#: Load on each generation once the one before it stopped, before the next SIGHUP.
SERVE = 1.0


@dataclass(frozen=True)
class Recipe:
    server: str
    #: ``PYTHONPATH=. zocket 8000 "..."`` as written, or app code ("in the app: ...").
    text: str

    @property
    def in_app(self) -> bool:
        return not re.match(r"(\w+=\S* )*zocket ", self.text)


def readme_recipes() -> list[Recipe]:
    """Each command (or line of app code) in the rows of the README's Recipes table."""
    section = README.read_text().split("\n## Recipes\n", 1)[1].split("\n## ", 1)[0]
    recipes = []
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")] if row.startswith("|") else []
        if len(cells) != 2 or cells[0] in ("server", "---"):
            continue
        server, cell = cells
        spans = re.findall(r"`([^`]+)`", cell)
        if cell.startswith("in the app:"):
            recipes.append(Recipe(server, spans[0]))
        else:
            recipes += [Recipe(server, s) for s in spans if Recipe(server, s).in_app is False]
    return recipes


RECIPES = readme_recipes()

GENERATION = 'f"generation {os.environ[\'ZOCKET_GENERATION\']}\\n"'

WSGI = f"""\
import os


def app(environ, start_response):
    body = {GENERATION}.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

ASGI = f"""\
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    body = {GENERATION}.encode()
    await send({{
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    }})
    await send({{"type": "http.response.body", "body": body}})


application = app
"""

FLASK = f"""\
import os

from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return {GENERATION}
"""

DJANGO_VIEWS = f"""\
import os

from django.http import HttpResponse


def index(request):
    body = {GENERATION}.encode()
    return HttpResponse(body, headers={{"Content-Length": str(len(body))}})
"""

#: Apps for the "in the app" recipes: RECIPE is replaced by the README's line.
IN_APP = {
    "aiohttp": f"""\
import os
import socket

from aiohttp import web


async def index(request):
    return web.Response(text={GENERATION})


app = web.Application()
app.router.add_get("/", index)
RECIPE
""",
    "waitress": WSGI + "\n\nimport socket\n\nimport waitress\n\nRECIPE\n",
    "tornado": f"""\
import asyncio
import os
import socket

import tornado.web
from tornado.httpserver import HTTPServer


class Index(tornado.web.RequestHandler):
    def get(self):
        self.write({GENERATION})


async def main():
    app = tornado.web.Application([("/", Index)])
    RECIPE
    await asyncio.Event().wait()


asyncio.run(main())
""",
}

#: The module each server row needs (a missing one is a failure: see the test extra).
MODULES = {
    "gunicorn": "gunicorn", "uvicorn": "uvicorn", "hypercorn": "hypercorn", "daphne": "daphne",
    "twisted": "twisted", "werkzeug / Flask": "flask", "Django runserver": "django",
    "granian": "granian", "aiohttp": "aiohttp", "waitress": "waitress", "tornado": "tornado",
    "cheroot": "cheroot",
}  # fmt: skip
ASGI_SERVERS = {"uvicorn", "hypercorn", "daphne", "granian"}


def write_app(directory: Path, recipe: Recipe) -> None:
    """The app the recipe names, in ``directory`` (its working directory)."""
    if recipe.in_app:
        (directory / "app.py").write_text(IN_APP[recipe.server].replace("RECIPE", recipe.text))
    elif recipe.server == "Django runserver":
        (directory / "manage.py").write_text(DJANGO_MANAGE)
        (directory / "urls.py").write_text(DJANGO_URLS)
        (directory / "views.py").write_text(DJANGO_VIEWS)
    elif recipe.server == "werkzeug / Flask":
        (directory / "app.py").write_text(FLASK)
    else:
        (directory / "app.py").write_text(ASGI if recipe.server in ASGI_SERVERS else WSGI)


def command(recipe: Recipe, port: int) -> tuple[dict[str, str], list[str]]:
    """The recipe's environment assignments and zocket arguments, on ``port``."""
    text = recipe.text
    if recipe.in_app:
        text = 'zocket 8000 "python app.py"'
    words = shlex.split(re.sub(rf"\b{README_PORT}\b", str(port), text))
    env = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words.pop(0) == "zocket", recipe
    return env, words


def test_the_readme_has_the_recipes_these_tests_run() -> None:
    """The parse found every row (a change of the table's shape would hide recipes)."""
    assert {r.server for r in RECIPES} == set(MODULES)
    assert {r.server for r in RECIPES if r.in_app} == set(IN_APP)
    assert len([r for r in RECIPES if not r.in_app]) >= len(MODULES) - len(IN_APP) + 2


def restart_under(load: LoadClient, zocket: ZocketProcess) -> None:
    """SIGHUP after SIGHUP, each once the new generation serves and the old one stopped."""
    load.wait_for(body_is(b"generation 1\n"), timeout=30)
    for n in range(2, RESTARTS + 2):
        sent = time.monotonic()
        zocket.send_signal(signal.SIGHUP)
        load.wait_for(body_is(f"generation {n}\n".encode()), timeout=30, since=sent)
        zocket.wait_for_stderr(rf"generation {n - 1} stopped", timeout=15)
        time.sleep(SERVE)


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe", RECIPES, ids=[f"{r.server.split()[0].lower()}-{i}" for i, r in enumerate(RECIPES)]
)
def test_recipe_serves_across_sighups_under_load(recipe: Recipe, tmp_path: Path) -> None:
    module = MODULES[recipe.server]
    assert importlib.util.find_spec(module) is not None, f"{module} is in the test extra"
    write_app(tmp_path, recipe)
    bin_dir = os.path.dirname(sys.executable)  # the servers' scripts and `python`
    base = child_env(HOME=str(tmp_path), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def args(port: int) -> list[str]:
        extra, words = command(recipe, port)
        base.update(extra)
        return words

    with start_on_free_port(args, env=base, cwd=tmp_path) as zocket:
        with LoadClient(zocket.port, threads=4, rate=RATE, duration=120, timeout=10) as load:
            try:
                restart_under(load, zocket)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nzocket's log:\n{zocket.stderr_text(0)}") from None
        log = zocket.stderr_text(0)
        zocket.stop()
    bodies = set(load.bodies())
    assert_no_failures(load, minimum_ok=int(RATE * SERVE * RESTARTS * 0.8))
    assert "SIGKILL" not in log, log
    assert bodies == {f"generation {n}\n".encode() for n in range(1, RESTARTS + 2)}
