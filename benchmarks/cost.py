"""What zocket itself costs: keep-alive throughput, start-up time, idle CPU and memory.

zocket only holds the listening socket; once a connection is accepted it goes
straight to the server, so a keep-alive load through zocket should be as fast
as one against the server alone. These measurements check that claim rather
than assume it: the same gunicorn, once binding its own port, once under
zocket, loaded the same way.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .load import KeepAliveResult, keep_alive_load, run_wrk, wrk_path
from .scenarios import Plain, Scenario, ZocketGunicorn, free_port, installed, wait_first_ok

__all__ = ["measure_cost", "proc_cpu_seconds", "proc_rss_kib"]

#: gunicorn with keep-alive: the sync worker closes every connection after one response.
KEEP_ALIVE_GUNICORN = (
    "--workers",
    "2",
    "--worker-class",
    "gthread",
    "--threads",
    "4",
    "--keep-alive",
    "5",
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time (s) process ``pid`` has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5); the split starts at field 3 (state).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_rss_kib(pid: int) -> int:
    """Resident memory (KiB) of process ``pid``: VmRSS of /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def _keep_alive(port: int, duration: float, connections: int) -> KeepAliveResult:
    if wrk_path() is not None:
        return run_wrk(port, connections=connections, duration=duration)
    return keep_alive_load(port, connections=connections, duration=duration)


def _on_free_port(cls: type[Scenario]) -> Callable[[Path], Scenario]:
    """Make ``cls`` with no boot time on a port picked beforehand (no start line to parse)."""
    return lambda workdir: cls(workdir, 0.0, port=free_port())


def _with_server(
    make: Callable[[Path], Scenario], root: Path, action: Callable[[Scenario], dict[str, Any]]
) -> dict[str, Any]:
    """Start a server, wait for its first answer, run ``action``, always stop it."""
    workdir = Path(tempfile.mkdtemp(prefix="cost-", dir=root))
    scenario = make(workdir)
    scenario.prepare()
    try:
        began = time.monotonic()
        port = scenario.start()
        wait_first_ok(port, None, timeout=60)
        figures: dict[str, Any] = {"start_to_first_response_s": time.monotonic() - began}
        figures.update(action(scenario))
        return figures
    finally:
        scenario.stop()


def measure_cost(
    root: Path,
    *,
    idle: float,
    keep_alive_duration: float,
    connections: int = 8,
    startup_repeats: int = 3,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Every cost figure, as JSON-ready data; {"status": "skipped: ..."} without gunicorn."""
    if not installed("gunicorn"):
        return {"status": "skipped: gunicorn not installed"}
    result: dict[str, Any] = {"status": "ok", "gunicorn_args": list(KEEP_ALIVE_GUNICORN)}

    # Start-up: Popen to the first successful response, BOOT=0, same port-picking for both.
    startup: dict[str, list[float]] = {"alone": [], "zocket": []}
    for _ in range(startup_repeats):
        for key, cls in (("alone", Plain), ("zocket", ZocketGunicorn)):
            log(f"cost: start-up, {key}")
            figures = _with_server(_on_free_port(cls), root, lambda s: {})
            startup[key].append(figures["start_to_first_response_s"])
    result["startup_s"] = {
        key: {"median": statistics.median(values), "all": values} for key, values in startup.items()
    }

    # Keep-alive load: gunicorn alone, then the same gunicorn through zocket.
    def load_alone(scenario: Scenario) -> dict[str, Any]:
        return {"keep_alive": asdict(_keep_alive(scenario.port, keep_alive_duration, connections))}

    def load_zocket(scenario: Scenario) -> dict[str, Any]:
        pid = scenario.holder_pid()
        assert pid is not None
        figures: dict[str, Any] = {"holder_pid": pid, "rss_kib_ready": proc_rss_kib(pid)}
        cpu = proc_cpu_seconds(pid)
        figures["keep_alive"] = asdict(_keep_alive(scenario.port, keep_alive_duration, connections))
        figures["holder_cpu_s_under_load"] = proc_cpu_seconds(pid) - cpu
        log(f"cost: zocket idle for {idle:g} s")
        time.sleep(0.5)
        cpu = proc_cpu_seconds(pid)
        began = time.monotonic()
        time.sleep(idle)
        elapsed = time.monotonic() - began
        used = proc_cpu_seconds(pid) - cpu
        figures["idle"] = {
            "seconds": elapsed,
            "cpu_s": used,
            "cpu_percent": 100 * used / elapsed if elapsed > 0 else None,
            "clock_ticks_per_s": CLOCK_TICKS,
        }
        figures["rss_kib"] = proc_rss_kib(pid)
        return figures

    log("cost: keep-alive load, gunicorn alone")
    result["alone"] = _with_server(
        lambda d: Plain(d, 0.0, gunicorn_args=KEEP_ALIVE_GUNICORN), root, load_alone
    )
    log("cost: keep-alive load, gunicorn through zocket")
    result["zocket"] = _with_server(
        lambda d: ZocketGunicorn(d, 0.0, gunicorn_args=KEEP_ALIVE_GUNICORN), root, load_zocket
    )
    return result
