"""``--boot-nice``: a generation boots at a lower priority while the old one serves."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from support import proc_stat, start_zocket, started, wait_for, write_responder

#: Boots until the file named by its first argument exists, then serves the held fd.
SLOW_BOOT = r"""
import os, runpy, sys, time
gate, responder = sys.argv[1], sys.argv[2]
while os.environ["ZOCKET_GENERATION"] != "1" and not os.path.exists(gate):
    time.sleep(0.01)
sys.argv = [responder]
runpy.run_path(responder, run_name="__main__")
"""


def nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def test_a_booting_generation_runs_niced_until_it_is_ready(tmp_path: Path) -> None:
    wrapper = tmp_path / "slow.py"
    wrapper.write_text(SLOW_BOOT)
    gate = tmp_path / "gate"
    command = [sys.executable, wrapper, gate, write_responder(tmp_path)]
    with start_zocket(["--port", "0", "--boot-nice", "7", "--", *command]) as zocket:
        zocket.wait_for_stderr(r"generation 1 ready in", 30)
        first = zocket.child_pid
        assert nice(first) == 0  # nothing served yet: no reason to hold it back
        zocket.send_signal(signal.SIGHUP)
        zocket.wait_for_stderr(r"generation 2 started", 10)
        second = dict(started(zocket))[2]
        wait_for(lambda: proc_stat(second) is not None and nice(second) == 7, 5,
                 message="generation 2 booting at nice 7")
        assert nice(first) == 0
        gate.touch()
        zocket.wait_for_stderr(r"generation 2 ready in", 30)
        wait_for(lambda: nice(second) == 0, 5, message="generation 2 back at nice 0")
        assert zocket.stop() == 128 + signal.SIGTERM
