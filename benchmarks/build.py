"""Building the benchmark's compiled programs (the Go app, the C load client) once per run.

A build writes beside its target and renames into place, so that a build that fails or is
killed never leaves a half-written binary that the next scenario would run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["build_into"]


def build_into(
    binary: Path,
    command: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """Run ``command`` with ``{out}`` standing for a temporary path beside ``binary``,
    then rename the result to ``binary``. None on success, else the tail of the
    builder's stderr (with its exit status)."""
    partial = binary.with_name(f".{binary.name}.tmp")
    result = subprocess.run(
        [part.replace("{out}", str(partial)) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        return f"({result.returncode}): {result.stderr.strip()[-2000:]}"
    os.replace(partial, binary)
    return None
