"""waitress under the hook: a request in flight at a restart is answered, and the old
generation goes as soon as it is, not at the stop timeout.

waitress writes its answers from its main thread's loop: a stop that waited inside the
signal handler, on that thread, left the answer unwritten until zocket's SIGKILL.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from pathlib import Path

from support import http_get, start_zocket

APP = """\
import socket, time
from waitress import serve

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(1.0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done\\n"]

serve(app, sockets=[socket.socket(fileno=3)], _quiet=True)
"""


def test_a_slow_request_across_a_restart_is_answered_and_the_old_waitress_goes_at_once(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.py").write_text(APP)
    args = ["--port", "0", "--stop-timeout", "8", "--", sys.executable, "app.py"]
    with start_zocket(args, cwd=tmp_path) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        answers: list[tuple[int, bytes]] = []

        def get_slow() -> None:
            status, _headers, body = http_get(zocket.port, "/slow", timeout=20)
            answers.append((status, body))

        slow = threading.Thread(target=get_slow)
        slow.start()
        time.sleep(0.3)  # the request is in the app now
        zocket.send_signal(signal.SIGHUP)
        line = zocket.wait_for_stderr(r"generation 1 stopped", 15)
        slow.join(20)
        assert answers == [(200, b"done\n")], (answers, zocket.stderr_text(0))
        took = int(re.search(r"after (\d+) ms", line)[1])  # type: ignore[index]
        assert "SIGKILL" not in zocket.stderr_text(0)
        assert took < 4000, line  # the slow request's second, not the stop timeout's eight
        assert zocket.stop() in (0, 128 + signal.SIGTERM)
