"""A WSGI app for trying zocket: it says which generation of the server answered.

    zocket 8000 "gunicorn --chdir examples hello:app"
    curl localhost:8000; kill -HUP <zocket pid>; curl localhost:8000
"""

import os


def app(environ, start_response):
    body = f"hello from generation {os.environ.get('ZOCKET_GENERATION', '?')}, pid {os.getpid()}\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body.encode()]
