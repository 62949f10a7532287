"""docs/libc.md is checked against the module: its example runs as written, every name is there.

The example block is extracted from the markdown and run as a script, and its
output compared with the block the page says it prints, so the page cannot
drift from the code.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support import zocket_env
from zocket import libc

PAGE = Path(__file__).resolve().parent.parent / "docs" / "libc.md"


def _blocks(section: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block under the ``## `` heading that starts so."""
    text = PAGE.read_text()
    start = text.index(f"\n## {section}")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```(\w*)\n(.*?)^```$", body, re.DOTALL | re.MULTILINE)


def test_the_example_runs_as_written_and_prints_what_the_page_says(tmp_path: Path) -> None:
    blocks = _blocks("Example")
    code = next(body for lang, body in blocks if lang == "python")
    expected = next(body for lang, body in blocks if lang == "")
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        env=zocket_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def test_every_exported_name_is_on_the_page() -> None:
    text = PAGE.read_text()
    missing = [name for name in libc.__all__ if not re.search(rf"`{re.escape(name)}\b", text)]
    assert missing == []
