"""docs/bad-input.md, row by row: each refused input gives its message and its exit status.

The rows are parsed from the page, so what the page says is what is tested.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from support import zocket_argv, zocket_env

PAGE = Path(__file__).resolve().parent.parent / "docs" / "bad-input.md"


class Row(NamedTuple):
    words: str
    environment: str
    message: str
    status: int


def _cell(text: str) -> str:
    text = text.strip()
    return text[1:-1] if text.startswith("`") and text.endswith("`") else text


def rows() -> list[Row]:
    found = []
    for line in PAGE.read_text().splitlines():
        if not line.startswith("| `zocket"):
            continue
        cells = line.strip().strip("|").split("|")  # no cell holds a "|"
        assert len(cells) == 4, line
        words, environment, message, status = (_cell(c) for c in cells)
        found.append(Row(words, environment, message, int(status)))
    return found


ROWS = rows()


def test_the_page_has_rows() -> None:
    assert len(ROWS) > 40


@pytest.fixture(scope="module")
def taken() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


#: Exports LISTEN_PID=$$ when asked and execs zocket in the shell's place, so that the
#: pid is zocket's own.
_SELF_PID = 'if [ "$ZK_SELF_PID" = 1 ]; then export LISTEN_PID=$$; fi; exec "$@"'


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.words} {r.environment}".strip() for r in ROWS])
def test_refused_input(row: Row, taken: int) -> None:
    with tempfile.TemporaryDirectory(prefix="zkbad-") as tmp:  # short: unix socket paths
        (Path(tmp) / "file").write_text("not a socket\n")

        def fill(text: str) -> str:
            text = re.sub(r"\{(\d+)\*([^}]*)\}", lambda m: " ".join([m[2]] * int(m[1])), text)
            return text.replace("{tmp}", tmp).replace("{taken}", str(taken))

        words = shlex.split(fill(row.words))
        assert words[0] == "zocket"
        env = zocket_env()
        for assignment in row.environment.split():
            name, _, value = assignment.partition("=")
            if (name, value) == ("LISTEN_PID", "self"):
                env["ZK_SELF_PID"] = "1"
            else:
                env[name] = value
        result = subprocess.run(
            ["/bin/sh", "-c", _SELF_PID, "sh", *zocket_argv(words[1:])],
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = result.stderr.splitlines()
        assert "Traceback" not in result.stderr
        assert result.returncode == row.status, result.stderr
        assert len(lines) == 1 and lines[0].startswith("zocket: error: "), result.stderr
        assert fill(row.message) in lines[0]
