"""What zocket itself costs: keep-alive throughput, start-up time, idle CPU and memory.

zocket only holds the listening socket; once a connection is accepted it goes
straight to the server, so a keep-alive load through zocket should be as fast
as one against the server alone. These measurements check that claim rather
than assume it: the same gunicorn, once binding its own port, once under
zocket, loaded the same way.

A restart cannot put new code live sooner than the server takes to start, so
the runner also times cold starts of the scenarios' own gunicorn and app, at
each boot time of the run: the yardstick for "trigger → new code answers".
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from .load import KeepAliveResult, LoadClient, OpenLoopLoad, keep_alive_load, run_wrk, wrk_path
from .scenarios import (
    GUNICORN_ARGS,
    ZOCKET,
    Plain,
    Scenario,
    ZocketGunicorn,
    base_env,
    free_port,
    gunicorn_options,
    installed,
    wait_first_ok,
)

__all__ = [
    "machine_cpu_ticks",
    "measure_cold_starts",
    "measure_cost",
    "measure_hook_import",
    "measure_hook_import_cost",
    "parse_importtime",
    "proc_cpu_seconds",
    "proc_rss_kib",
    "steal_share",
]

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


def machine_cpu_ticks(stat: str = "/proc/stat") -> list[int] | None:
    """The machine's CPU time so far, in ticks per state, from the first line of /proc/stat.

    The eighth state is *steal*: time the hypervisor gave this machine's virtual CPUs
    to someone else. On a shared host it comes and goes for hours, and a run that had
    some measured the host as much as the server. None where /proc/stat cannot be read.
    """
    try:
        with open(stat, encoding="ascii") as f:
            words = f.readline().split()
    except OSError:
        return None
    if not words or words[0] != "cpu" or len(words) < 9:
        return None
    return [int(word) for word in words[1:]]


def steal_share(before: Sequence[int] | None, after: Sequence[int] | None) -> float | None:
    """The share (0-1) of the CPU time between two `machine_cpu_ticks` that was stolen."""
    if before is None or after is None:
        return None
    spent = [b - a for a, b in zip(before, after)]
    total = sum(spent)
    return spent[7] / total if total > 0 else None


def proc_rss_kib(pid: int) -> int:
    """Resident memory (KiB) of process ``pid``: VmRSS of /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant of it, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, ()))
    return tree


def _tree_figures(pids: Sequence[int]) -> tuple[float, int]:
    """(CPU s, RSS KiB) summed over ``pids``, skipping those that exited meanwhile."""
    cpu, rss = 0.0, 0
    for pid in pids:
        try:
            cpu += proc_cpu_seconds(pid)
            rss += proc_rss_kib(pid)
        except (OSError, ValueError):
            continue
    return cpu, rss


def _keep_alive(port: int, duration: float, connections: int) -> KeepAliveResult:
    if wrk_path() is not None:
        return run_wrk(port, connections=connections, duration=duration)
    return keep_alive_load(port, connections=connections, duration=duration)


def _on_free_port(cls: type[Scenario]) -> Callable[[Path], Scenario]:
    """``cls`` with keep-alive gunicorn, no boot time, on a port picked beforehand.

    A port given to zocket up front means no start line to wait for, so both
    start-up times are measured the same way: by polling the port.
    """
    return lambda workdir: cls(workdir, 0.0, gunicorn_args=KEEP_ALIVE_GUNICORN, port=free_port())


def _with_server(
    make: Callable[[Path], Scenario],
    root: Path,
    action: Callable[[Scenario], dict[str, Any]],
    prefix: str = "cost-",
) -> dict[str, Any]:
    """Start a server, wait for its first answer, run ``action``, always stop it."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    scenario = make(workdir)
    scenario.prepare()
    try:
        began = time.monotonic()
        port = scenario.start()
        wait_first_ok(port, None, timeout=scenario.boot + 60)
        figures: dict[str, Any] = {"start_to_first_response_s": time.monotonic() - began}
        figures.update(action(scenario))
        return figures
    finally:
        scenario.stop()


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _holder_figures(scenario: Scenario, idle: float) -> dict[str, Any]:
    """zocket's CPU over an idle period after the load, and its RSS."""
    pid = scenario.holder_pid()
    assert pid is not None
    time.sleep(0.5)
    cpu = proc_cpu_seconds(pid)
    began = time.monotonic()
    time.sleep(idle)
    elapsed = time.monotonic() - began
    used = proc_cpu_seconds(pid) - cpu
    return {
        "idle": {
            "seconds": elapsed,
            "cpu_s": used,
            "cpu_percent": 100 * used / elapsed if elapsed > 0 else None,
            "clock_ticks_per_s": CLOCK_TICKS,
        },
        "rss_kib": proc_rss_kib(pid),
    }


def measure_cost(
    root: Path,
    *,
    idle: float,
    keep_alive_duration: float,
    connections: int = 8,
    rounds: int = 3,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Every cost figure, as JSON-ready data; {"status": "skipped: ..."} without gunicorn.

    Each round starts gunicorn alone and gunicorn under zocket (in alternating
    order, so that neither always runs second), times the start-up, runs the
    keep-alive load; medians over the rounds. The last zocket server then
    idles for ``idle`` seconds for the CPU figure.
    """
    if not installed("gunicorn"):
        return {"status": "skipped: gunicorn not installed"}
    runs: dict[str, list[dict[str, Any]]] = {"alone": [], "zocket": []}
    holder: dict[str, Any] = {}
    for number in range(rounds):
        order = [("alone", Plain), ("zocket", ZocketGunicorn)]
        for key, cls in order if number % 2 == 0 else order[::-1]:
            log(f"cost: round {number + 1}/{rounds}, keep-alive load, {key}")
            last_zocket = key == "zocket" and number == rounds - 1

            def action(scenario: Scenario, last: bool = last_zocket) -> dict[str, Any]:
                pid = scenario.holder_pid()
                cpu = proc_cpu_seconds(pid) if pid is not None else 0.0
                # The server's own processes (gunicorn's arbiter and workers), for comparison:
                # under zocket, its descendants but the small sentry (no RSS of note).
                server = [p for p in process_tree(scenario.main_proc.pid) if p != pid]
                server_cpu, _ = _tree_figures(server)
                figures: dict[str, Any] = {
                    "keep_alive": asdict(
                        _keep_alive(scenario.port, keep_alive_duration, connections)
                    )
                }
                server_cpu_after, server_rss = _tree_figures(server)
                figures["server_cpu_s_under_load"] = server_cpu_after - server_cpu
                figures["server_rss_kib"] = server_rss
                if pid is not None:
                    figures["holder_cpu_s_under_load"] = proc_cpu_seconds(pid) - cpu
                if last:
                    log(f"cost: zocket idle for {idle:g} s")
                    holder.update(_holder_figures(scenario, idle))
                return figures

            runs[key].append(_with_server(_on_free_port(cls), root, action))
    summary: dict[str, Any] = {}
    for key, found in runs.items():
        loads = [run["keep_alive"] for run in found]
        summary[key] = {
            "start_to_first_response_s": _median([r["start_to_first_response_s"] for r in found]),
            "requests_per_s": _median([k["requests_per_s"] for k in loads]),
            "p50_ms": _median([k["p50_ms"] for k in loads]),
            "p99_ms": _median([k["p99_ms"] for k in loads]),
            "max_ms": max((k["max_ms"] for k in loads if k["max_ms"] is not None), default=None),
            "errors": sum(k["errors"] for k in loads),
            "server_cpu_s_under_load": _median([r["server_cpu_s_under_load"] for r in found]),
            "server_rss_kib": _median([r["server_rss_kib"] for r in found]),
        }
    summary["zocket"]["holder_cpu_s_under_load"] = max(
        run["holder_cpu_s_under_load"] for run in runs["zocket"]
    )
    first = runs["alone"][0]["keep_alive"]
    return {
        "status": "ok",
        "gunicorn_args": list(KEEP_ALIVE_GUNICORN),
        "rounds": rounds,
        "tool": first["tool"],
        "connections": first["connections"],
        "duration_s": first["duration"],
        "alone": summary["alone"],
        "zocket": {**summary["zocket"], **holder},
        "runs": runs,
    }


def measure_cold_starts(
    root: Path,
    boots: Sequence[float],
    *,
    rounds: int = 3,
    load_rate: float | None = None,
    log: Callable[[str], None] = lambda line: None,
    server: type[Scenario] = Plain,
    client: LoadClient = OpenLoopLoad,
) -> dict[str, Any]:
    """Cold starts per boot time, as JSON-ready data; {"status": "skipped: ..."} without gunicorn.

    The server is the scenarios' gunicorn (GUNICORN_ARGS, the same app and boot
    sleep) binding a free port itself, timed from spawn to its first successful
    response, with no load running. With ``load_rate``, each round also times
    it while another gunicorn of the same app serves that rate on its own port:
    what a restart under load competes with for the cores (the serving
    generation and the load), so that "new code live" is compared like with
    like. Each round measures every boot time once, so the samples of one boot
    time are spread over the rounds; medians decide. ``server`` is another
    server that binds its own port (scenarios.NodeAlone for the node scenarios).
    ``client`` makes the load, as the scenarios' runs make theirs.
    """
    reason = server.skip_reason()
    if reason is not None:
        return {"status": reason}
    gunicorn_options()  # asks ``gunicorn --help`` once: not a part of any cold start
    idle: dict[float, list[float]] = {boot: [] for boot in boots}
    loaded: dict[float, list[float]] = {boot: [] for boot in boots}
    for number in range(rounds):
        for boot in idle:
            log(f"cold start ({server.name}): round {number + 1}/{rounds}, boot {boot:g} s")
            idle[boot].append(_cold_start(root, boot, server))
            if load_rate is not None:
                log(
                    f"cold start ({server.name}): round {number + 1}/{rounds}, boot {boot:g} s,"
                    " under load"
                )
                loaded[boot].append(_cold_start_under_load(root, boot, load_rate, server, client))
    return {
        "status": "ok",
        "server": server.description if server is not Plain else "gunicorn",
        "gunicorn_args": list(GUNICORN_ARGS),
        "rounds": rounds,
        "load_rate": load_rate,
        "boots": [
            {
                "boot_s": boot,
                "samples": len(idle[boot]),
                "samples_s": idle[boot],
                "median_s": _median(idle[boot]),
                "under_load_samples_s": loaded[boot],
                "under_load_median_s": _median(loaded[boot]) if loaded[boot] else None,
            }
            for boot in idle
        ],
    }


def _cold_start(root: Path, boot: float, server: type[Scenario] = Plain) -> float:
    figures = _with_server(partial(server, boot=boot), root, lambda _: {}, "cold-")
    return float(figures["start_to_first_response_s"])


def _cold_start_under_load(
    root: Path,
    boot: float,
    rate: float,
    server: type[Scenario] = Plain,
    client: LoadClient = OpenLoopLoad,
) -> float:
    """A cold start while a server of the same app, already up, serves ``rate``."""

    def measure(serving: Scenario) -> dict[str, Any]:
        load = client(serving.port, rate, max_duration=boot + 120).start()
        try:
            load.wait_for(lambda record: record.ok, timeout=10)
            return {"cold_start_s": _cold_start(root, boot, server)}
        finally:
            load.stop()

    figures = _with_server(partial(server, boot=0.0), root, measure, "serving-")
    return float(figures["cold_start_s"])


#: Prints, from a process that does not serve, every module it has after start-up.
_MODULES = "import sys; print(' '.join(sorted(sys.modules)))"


def measure_hook_import_cost(
    hook_dir: Path | None = None, *, python: str = sys.executable, runs: int = 7
) -> dict[str, Any]:
    """What the hook adds to the start of an interpreter that does not serve.

    ``python -X importtime -c ...`` with the environment a generation gets (the
    hook first on PYTHONPATH, ZOCKET_HOOK_FDS naming a real listening socket):
    the median of ``runs`` of sitecustomize's cumulative import time, in µs,
    and the modules such a process has that the same interpreter without the
    hook has not. The hook is measured from a copy compiled beforehand, as an
    installed one is (pip compiles it), so that no run pays for compiling it.
    """
    if hook_dir is None:
        import zocket

        hook_dir = Path(zocket.__file__).parent / "_hook"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOCKET_", "LISTEN_"))}
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as held:
        copy = Path(tmp) / "hook"
        shutil.copytree(hook_dir, copy, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([python, "-m", "compileall", "-q", str(copy)], check=True, timeout=60)
        held.bind(("127.0.0.1", 0))
        held.listen()
        fd = held.fileno()
        hooked = {
            **env,
            "PYTHONPATH": str(copy),
            # The names of zocket/_hook/_zocket_protocol.py (untyped: not imported here).
            "ZOCKET_HOOK_FDS": f"{fd}:{os.fstat(fd).st_ino}",
            "ZOCKET_STOP_SIGNAL": "15",
            "ZOCKET_STOP_TIMEOUT": "10",
        }
        baseline = _start_up(python, env, fd)[1]
        samples: list[int] = []
        modules: set[str] = set()
        for _ in range(runs):
            micros, modules = _start_up(python, hooked, fd)
            samples.append(micros)
    return {
        "python": python,
        "sitecustomize_us": statistics.median(samples),
        "samples_us": samples,
        "modules_added": sorted(modules - baseline),
    }


def _start_up(python: str, env: dict[str, str], fd: int) -> tuple[int, set[str]]:
    """sitecustomize's cumulative µs (0 if none ran) and the modules after start-up."""
    result = subprocess.run(
        [python, "-X", "importtime", "-c", _MODULES],
        env=env,
        pass_fds=[fd],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    micros = 0
    for line in result.stderr.splitlines():
        fields = line.split("|")
        if len(fields) == 3 and fields[2].strip() == "sitecustomize":
            micros = int(fields[1])
    return micros, set(result.stdout.split())


# --- the hook's import time ---------------------------------------------------------------

_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)\s*$")


def parse_importtime(stderr: str) -> dict[str, Any]:
    """``python -X importtime`` output: the total of the top-level imports' cumulative
    times, and sitecustomize's cumulative time (None when none was imported), in seconds."""
    total_us = 0
    sitecustomize_us: int | None = None
    modules = 0
    for line in stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if not match:
            continue
        modules += 1
        cumulative, indent, name = int(match[2]), len(match[3]), match[4]
        if indent == 1:  # one space after the bar: imported by nobody but the interpreter
            total_us += cumulative
        if name == "sitecustomize" and sitecustomize_us is None:
            sitecustomize_us = cumulative
    return {
        "imports_s": total_us / 1e6,
        "sitecustomize_s": None if sitecustomize_us is None else sitecustomize_us / 1e6,
        "modules": modules,
    }


def _importtime_once(under_zocket: bool) -> dict[str, Any]:
    argv = [sys.executable, "-X", "importtime", "-c", "pass"]
    if under_zocket:
        # The generation's environment exactly as zocket makes it: the held fd, the hook on
        # PYTHONPATH and its variables. --no-respawn: zocket exits once the process has.
        argv = [*ZOCKET, "--port", "0", "--no-respawn", "--", *argv]
    began = time.monotonic()
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env=base_env()
    )
    figures = parse_importtime(result.stderr)
    figures["wall_s"] = time.monotonic() - began
    if not figures["modules"]:
        raise RuntimeError(f"no -X importtime output from {argv}: {result.stderr[-500:]}")
    return figures


def measure_hook_import(
    rounds: int = 7, log: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """What the hook adds to every Python process zocket starts: ``python -X importtime -c
    pass`` with and without the generation's environment (alternating), medians."""
    log(f"cost: hook import time, {rounds} rounds")
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with_hook": []}
    for number in range(rounds):
        order = [("without", False), ("with_hook", True)]
        for key, under in order if number % 2 == 0 else order[::-1]:
            runs[key].append(_importtime_once(under))
    summary: dict[str, Any] = {
        "status": "ok",
        "rounds": rounds,
        "command": "python -X importtime -c pass",
    }
    for key, found in runs.items():
        summary[key] = {
            "imports_s": _median([r["imports_s"] for r in found]),
            "sitecustomize_s": _median([r["sitecustomize_s"] for r in found]),
        }
    without, with_hook = summary["without"], summary["with_hook"]
    summary["added_s"] = with_hook["imports_s"] - without["imports_s"]
    summary["runs"] = runs
    return summary


if __name__ == "__main__":  # python -m benchmarks.cost [PYTHON]: the hook's import cost
    import json

    print(json.dumps(measure_hook_import_cost(python=(sys.argv[1:] or [sys.executable])[0])))
