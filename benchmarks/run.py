"""``python benchmarks/run.py [--quick] ...``: restart servers under load, with and without zocket.

First, for each boot time, cold starts of the scenarios' gunicorn and app
(benchmarks/cost.py): the yardstick for how soon a restart can put new code
live. Then for each scenario and boot time: start the server, wait for its
first answer, run an open-loop load, perform N restarts at a set spacing,
stop; the figures of benchmarks/metrics.py, among them the median trigger →
new code answers against that boot time's cold start. A markdown table on
stdout, the raw figures in a JSON file and optionally a picture. Progress
goes to stderr. See docs/benchmarks.md for what each figure means.
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import controls, metrics, report, sched_trace
from benchmarks.cost import (
    machine_cpu_ticks,
    measure_cold_starts,
    measure_cost,
    measure_hook_import,
    proc_cpu_seconds,
    proc_rss_kib,
    steal_share,
)
from benchmarks.load import LoadClient, OpenLoopLoad, Record, wrk_path
from benchmarks.native_load import build_openloop, compiler_path, native_client
from benchmarks.scenarios import (
    SCENARIOS,
    STOP_TIMEOUT,
    GoAlone,
    NodeAlone,
    Nodemon,
    Scenario,
    go_path,
    node_path,
    run_zocket,
    tool_path,
    wait_first_ok,
)

T = TypeVar("T")

#: The server of each family but Python's whose cold start its scenarios are weighed against.
COLD_START_SERVERS: dict[str, type[Scenario]] = {"node": NodeAlone, "go": GoAlone}

#: At most this many failed requests are listed one by one in the JSON (all are counted).
MAX_LISTED_FAILURES = 500


@dataclass(frozen=True)
class Options:
    """Everything a run depends on; --quick only changes the defaults."""

    scenarios: tuple[str, ...]
    rate: float
    restarts: int
    boots: tuple[float, ...]
    spacing: float | None
    settle: float
    warmup: float
    margin: float
    timeout: float
    restart_timeout: float
    idle: float
    keep_alive: float
    cost: bool
    out: Path | None
    plot: Path | None
    headline: Path | None
    keep: bool
    quick: bool
    #: Which open-loop client: "native" (benchmarks/openloop.c), "python" or "auto".
    client: str = "auto"
    #: Record the scheduler's events per scenario under this directory (benchmarks.sched_trace).
    trace: Path | None = None
    #: Between restarts, a still window and a bystander window (benchmarks/controls.py).
    controls: bool = False

    def spacing_for(self, boot: float) -> float:
        """Seconds between triggers: a restart must be over before the next one."""
        if self.spacing is not None:
            return self.spacing
        return boot + (2.0 if self.quick else 3.0)


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Restart real servers under an open-loop load, with and without zocket, "
        "and count what the clients saw.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run: 2 restarts, 40 requests/s, boot 0.5 s, 3 s idle, 1 cold start per boot",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--rate", type=float, help="requests per second (default 100; quick 40)")
    parser.add_argument("--restarts", type=int, help="restarts per scenario (default 5; quick 2)")
    parser.add_argument(
        "--boot",
        type=float,
        nargs="+",
        metavar="SECONDS",
        help="app boot times to run each scenario with (default 0.5 2; quick 0.5)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        help="seconds between restart triggers (default boot + 3; quick boot + 2)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.5,
        help="seconds added to a restart window after the new generation's "
        "first answer (default 0.5)",
    )
    parser.add_argument(
        "--timeout", type=float, help="per-request timeout in seconds (default 10; quick 5)"
    )
    parser.add_argument(
        "--idle", type=float, help="seconds of idle for zocket's CPU figure (default 60; quick 3)"
    )
    parser.add_argument(
        "--keep-alive",
        type=float,
        dest="keep_alive",
        help="seconds of keep-alive load per server (default 10; quick 2)",
    )
    parser.add_argument(
        "--no-cost", action="store_true", help="skip the cost-of-zocket measurements"
    )
    parser.add_argument("--out", type=Path, help="write the raw figures to this JSON file")
    parser.add_argument(
        "--plot", type=Path, help="draw every scenario's latency and failures to this PNG"
    )
    parser.add_argument(
        "--headline",
        type=Path,
        help="draw the comparison of the restart methods (failed, stalls, latency) to this PNG",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directories (apps and server logs)"
    )
    parser.add_argument(
        "--client",
        choices=("auto", "native", "python"),
        default="auto",
        help="the open-loop load client: native (benchmarks/openloop.c, a process of its own, "
        "built with cc), python (a thread of the runner), auto (native where there is a C "
        "compiler; the default)",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        metavar="DIR",
        help="record the kernel's scheduler events while each scenario runs (tracefs: root), "
        "and write, per scenario, who had the CPUs in each phase of each restart and while "
        "each slow request waited, to DIR/SCENARIO-BOOT/analysis.txt",
    )
    parser.add_argument(
        "--controls",
        action="store_true",
        help="between two restarts, also a window where nothing happens and one where "
        "gunicorn with the same WSGI app boots beside on another port at SCHED_IDLE: the "
        "ratio's own spread and this machine's floor for it (triples the run's length; "
        "benchmarks/controls.py)",
    )
    args = parser.parse_args(argv)
    names = tuple(n.strip() for n in args.scenarios.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    quick = args.quick

    def pick(value: T | None, full: T, small: T) -> T:
        return value if value is not None else (small if quick else full)

    options = Options(
        scenarios=names,
        rate=pick(args.rate, 100.0, 40.0),
        restarts=pick(args.restarts, 5, 2),
        boots=tuple(pick(args.boot, [0.5, 2.0], [0.5])),
        spacing=args.spacing,
        settle=1.5,
        warmup=1.0 if quick else 2.0,
        margin=args.margin,
        timeout=pick(args.timeout, 10.0, 5.0),
        restart_timeout=20.0 if quick else 40.0,
        idle=pick(args.idle, 60.0, 3.0),
        keep_alive=pick(args.keep_alive, 10.0, 2.0),
        cost=not args.no_cost,
        out=args.out,
        plot=args.plot,
        headline=args.headline,
        keep=args.keep,
        quick=quick,
        client=args.client,
        trace=args.trace,
        controls=args.controls,
    )
    if options.rate <= 0 or options.restarts < 0 or options.timeout <= 0:
        parser.error("--rate and --timeout must be positive, --restarts at least 0")
    if any(b < 0 for b in options.boots) or options.margin < 0 or options.idle < 0:
        parser.error("--boot, --margin and --idle cannot be negative")
    return options


# --- one scenario -------------------------------------------------------------------------


@dataclass
class Run:
    """One scenario at one boot time: the JSON-ready result, and the records for the plot."""

    result: dict[str, Any]
    records: list[Record]
    restarts: list[metrics.Restart]


def log(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def answered_by(generation: str) -> Callable[[Record], bool]:
    """A predicate: a successful response from ``generation``."""
    return lambda record: record.ok and record.generation == generation


def _sleep_until(load: OpenLoopLoad, at: float) -> None:
    """Sleep until ``at`` on the load's clock (bounded by the gap, never negative)."""
    delay = at - load.now()
    if delay > 0:
        time.sleep(delay)


def run_scenario(
    cls: type[Scenario],
    boot: float,
    options: Options,
    root: Path,
    client: LoadClient = OpenLoopLoad,
) -> Run:
    """Start, load (from ``client``), restart N times, stop; every figure of metrics.summarise."""
    result: dict[str, Any] = {
        "scenario": cls.name,
        "description": cls.description,
        "boot_s": boot,
        "generation_source": cls.generation_source,
        # The machine may be shared: how busy it was when this scenario began (1 minute).
        "load_average_1m": os.getloadavg()[0],
    }
    reason = cls.skip_reason()
    if reason is not None:
        result["status"] = reason
        return Run(result, [], [])
    workdir = Path(tempfile.mkdtemp(prefix=f"{cls.name}-", dir=root))
    scenario = cls(workdir, boot)
    load: OpenLoopLoad | None = None
    records: list[Record] = []
    restarts: list[metrics.Restart] = []
    windows: list[metrics.Control] = []
    lengths: list[float] = []  # of the restart windows so far: a still window's length
    spacing = options.spacing_for(boot)
    trace: sched_trace.Trace | None = None
    try:
        scenario.prepare()
        if options.trace is not None:
            trace = _start_trace(result)
        began = time.monotonic()
        port = scenario.start()
        wait_first_ok(port, "1", timeout=boot + 60)
        result["start_to_first_response_s"] = time.monotonic() - began
        result["port"] = port
        holder = scenario.holder_pid()
        holder_cpu = proc_cpu_seconds(holder) if holder is not None else None
        holder_rss = [proc_rss_kib(holder)] if holder is not None else []

        cycle = spacing + options.restart_timeout
        if options.controls:  # a still and a bystander window after each restart, each
            # at most a spacing long, the bystander's boot, its stop (bounded) and the gaps
            cycle += 2 * (spacing + options.settle + options.margin) + boot
            cycle += options.restart_timeout + 2 * STOP_TIMEOUT + 5
        budget = options.warmup + options.restarts * cycle + 60
        load = client(port, options.rate, timeout=options.timeout, max_duration=budget)
        load.start()
        client_pid = getattr(load, "pid", None)
        ticks = machine_cpu_ticks()
        next_at = options.warmup
        for number in range(1, options.restarts + 1):
            generation = str(number + 1)
            _sleep_until(load, next_at)
            scenario.check_running()
            triggered = load.now()
            if trace is not None:
                trace.mark(number, triggered)
            scenario.trigger(number + 1)
            restarts.append(metrics.Restart(number, generation, triggered, load.now()))
            log(f"{cls.name}: restart {number} triggered")
            answered = load.wait_for(
                answered_by(generation),
                timeout=boot + options.restart_timeout,
                since=triggered,
            )
            if answered is None:
                log(f"{cls.name}: generation {generation} never answered")
            if holder is not None:
                holder_rss.append(proc_rss_kib(holder))
            next_at = triggered + spacing
            if answered is not None:
                next_at = max(next_at, answered.ended + options.settle)
                lengths.append(answered.ended - triggered + options.margin)
            if options.controls:
                at = next_at
                if answered is not None:  # never inside the restart's window
                    at = max(at, answered.ended + options.margin + options.settle)
                next_at = _controls(scenario, load, boot, options, at, lengths, windows)
        _sleep_until(load, next_at)
        records = load.stop()
        load = None
        result["steal_share"] = steal_share(ticks, machine_cpu_ticks())
        if holder is not None and holder_cpu is not None:
            result["holder_cpu_s"] = proc_cpu_seconds(holder) - holder_cpu
            result["holder_rss_kib"] = {"first_answer": holder_rss[0], "max": max(holder_rss)}
        summary = metrics.summarise(
            records, restarts, margin=options.margin, controls=windows
        )
        if trace is not None and options.trace is not None:
            directory = options.trace / f"{cls.name}-{boot:g}"
            result["trace"] = _finish_trace(
                trace, directory, records, restarts, holder, client_pid, summary
            )
            trace = None
        failures = [r for r in records if not r.ok]
        result.update(
            status="ok",
            spacing_s=spacing,
            summary=summary,
            failures=[
                {
                    "scheduled_s": round(r.scheduled, 4),
                    "latency_ms": round(r.latency * 1000, 2),
                    "kind": r.kind,
                    "error": r.error,
                }
                for r in failures[:MAX_LISTED_FAILURES]
            ],
            timeline=metrics.timeline(records),
        )
    except Exception as exc:  # noqa: BLE001 - one scenario's failure is reported, not fatal
        result["status"] = f"error: {exc}"
        result["log_tail"] = scenario.log_tail()
        log(f"{cls.name}: {result['status']}")
    finally:
        if load is not None:
            try:
                records = load.stop()
            except RuntimeError as exc:
                log(f"{cls.name}: {exc}")
        scenario.stop()
        if trace is not None and options.trace is not None:
            # The scenario failed before its analysis: its events are kept to be read.
            try:
                kept = trace.stop(options.trace / f"{cls.name}-{boot:g}-unfinished")
                log(f"{cls.name}: its scheduler trace is in {kept}")
            except OSError as exc:
                log(f"{cls.name}: the scheduler trace could not be kept: {exc}")
        result["notes"] = scenario.notes()
        if options.keep:
            result["workdir"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return Run(result, records, restarts)


def _controls(
    scenario: Scenario,
    load: OpenLoopLoad,
    boot: float,
    options: Options,
    at: float,
    lengths: Sequence[float],
    windows: list[metrics.Control],
) -> float:
    """A still window at ``at``, a bystander one a spacing later (where the scenario has a
    server to boot), appended to ``windows``; when the next restart may come."""
    spacing = options.spacing_for(boot)
    ordered = sorted(lengths)
    # The upper median of the restart windows so far; boot + margin before any answered.
    length = ordered[len(ordered) // 2] if ordered else boot + options.margin
    _sleep_until(load, at)
    windows.append(controls.still(load, min(length, spacing)))
    command = scenario.bystander_command()
    if command is None or controls.chrt_path() is None:
        return max(at + spacing, windows[-1].end + options.settle)
    at = max(at + spacing, windows[-1].end + options.settle)
    _sleep_until(load, at)
    windows.append(
        controls.bystander(
            command,
            load=load,
            cwd=scenario.appdir,
            env=scenario.env(),
            log_path=scenario.workdir / "bystander.log",
            margin=options.margin,
            timeout=boot + options.restart_timeout,
        )
    )
    if windows[-1].answered is None:
        log(
            f"{scenario.name}: the bystander never answered (left out of its figures; "
            f"its log: {scenario.workdir / 'bystander.log'}, kept with --keep)"
        )
    return max(at + spacing, windows[-1].end + options.settle)


def _start_trace(result: dict[str, Any]) -> sched_trace.Trace | None:
    try:
        return sched_trace.Trace().start()
    except sched_trace.TraceUnavailable as exc:
        result["trace"] = {"status": f"skipped: {exc}"}
        log(str(exc))
        return None


def _finish_trace(
    trace: sched_trace.Trace,
    directory: Path,
    records: Sequence[Record],
    restarts: Sequence[metrics.Restart],
    holder: int | None,
    client: int | None,
    summary: Mapping[str, Any],
) -> dict[str, Any]:
    """Stop the recording and analyse it: a request is slow above 1.3 times the outside p99,
    the goal of issue 16's part 4."""
    try:
        path = trace.stop(directory)
    except OSError as exc:
        return {"status": f"error: the trace could not be kept: {exc}"}
    outside = summary["latency_outside"].get("p99_ms")
    if path is None or holder is None or outside is None:
        return {"status": "recorded, not analysed (no holder or no p99 outside)", "dir": str(directory)}
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            events = sched_trace.parse(lines)
        # A Python client is a thread of this process: its role is this pid's and its threads'.
        analysis = sched_trace.analyse(
            events, records, restarts, holder, client or os.getpid(), 1.3 * outside / 1000
        )
        sched_trace.record_files(directory, records, analysis)
    except Exception as exc:  # noqa: BLE001 - the scenario's figures stand without it
        return {"status": f"error: the trace could not be analysed: {exc!r}", "dir": str(directory)}
    log(f"scheduler trace and its analysis: {directory}")
    return {"status": analysis["status"], "dir": str(directory)}


# --- versions -----------------------------------------------------------------------------


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version(argv: Sequence[str | None]) -> str | None:
    if argv[0] is None:
        return None
    try:
        done = subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else None


def versions() -> dict[str, Any]:
    """The version of every tool that may have run, and of the machine."""
    found: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    for name in ("gunicorn", "uvicorn", "Django", "granian", "circus", "zocket", "matplotlib"):
        found[name.lower()] = _version(name)
    # The peers that are not Python packages: the first line of their --version, or None.
    for key, argv in (
        ("node", [node_path(), "--version"]),
        ("go", [go_path(), "version"]),
        ("nodemon", [Nodemon.nodemon(), "--version"]),
        ("start_server", [tool_path("start_server"), "--version"]),
        ("systemd_socket_activate", [tool_path("systemd-socket-activate"), "--version"]),
    ):
        found[key] = _tool_version(argv)
    checkout = run_zocket("--version")
    found["zocket_checkout"] = checkout.stdout.strip() or checkout.stderr.strip()
    wrk = wrk_path()
    if wrk is not None:
        text = subprocess.run(
            [wrk, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        found["wrk"] = (
            (text.stdout or text.stderr).splitlines()[0] if (text.stdout or text.stderr) else wrk
        )
    else:
        found["wrk"] = None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        found["cpu"] = models[0] if models else None
    except OSError:
        found["cpu"] = None
    return found


# --- main ---------------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    """Many requests may be in flight during a stall: use the hard limit on open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _reported(label: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``, or {"status": "error: ..."}: reported in the table and the JSON, not fatal."""
    try:
        return measure()
    except Exception as exc:  # noqa: BLE001 - one measurement's failure is not the run's
        log(f"{label}: error: {exc}")
        return {"status": f"error: {exc}"}


def cold_start_medians(
    cold_start: Mapping[str, Any], boot: float
) -> tuple[float | None, float | None]:
    """The median cold starts at ``boot``, idle and under load; None when not measured."""
    for entry in cold_start.get("boots", ()):
        if entry["boot_s"] == boot:
            return entry["median_s"], entry.get("under_load_median_s")
    return None, None


def _load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was (it shares its cores)."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def _exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM (and SIGINT, even where it was ignored) unwind through every cleanup."""
    raise SystemExit(128 + signum)


def _prepare_outputs(options: Options) -> None:
    """Make the output files' directories now, and check they can be written: a run takes
    twenty minutes, and its figures must not be lost at the end (benchmarks/results/ is
    not in a fresh clone)."""
    for path in (options.out, options.plot, options.headline):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(path.parent, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path.parent))


#: How each client is named in the JSON and the report.
CLIENT_DESCRIPTIONS = {
    "native": "benchmarks/openloop.c: one C process, epoll, a new connection per request",
    "python": "benchmarks/load.py OpenLoopLoad: an asyncio thread of the runner",
}


def load_client(choice: str, root: Path) -> tuple[str, LoadClient]:
    """The client ``--client`` asks for: its name and maker. Raises RuntimeError when
    ``native`` cannot be built; ``auto`` then falls back to the Python client."""
    if choice == "python" or (choice == "auto" and compiler_path() is None):
        return "python", OpenLoopLoad
    try:
        return "native", native_client(build_openloop(root))
    except RuntimeError as exc:
        if choice == "native":
            raise
        log(f"{exc}: the Python client instead")
        return "python", OpenLoopLoad


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        _prepare_outputs(options)
    except OSError as exc:
        print(f"run.py: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    _raise_fd_limit()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    root = Path(tempfile.mkdtemp(prefix="zocket-bench-"))
    try:
        client_name, client = load_client(options.client, root)
    except RuntimeError as exc:
        shutil.rmtree(root, ignore_errors=True)
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    log(f"load client: {CLIENT_DESCRIPTIONS[client_name]}")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    runs: list[Run] = []
    scenario_results: list[dict[str, Any]] = []
    results: dict[str, Any] = {
        "started": started,
        "command": [sys.executable, *sys.argv],
        "load_average": _load_average(),
        "options": {
            "quick": options.quick,
            "rate": options.rate,
            "restarts": options.restarts,
            "boots_s": list(options.boots),
            "spacing_s": options.spacing,
            "settle_s": options.settle,
            "warmup_s": options.warmup,
            "margin_s": options.margin,
            "timeout_s": options.timeout,
            "restart_timeout_s": options.restart_timeout,
            "idle_s": options.idle,
            "keep_alive_s": options.keep_alive,
            "controls": options.controls,
        },
        "versions": versions(),
        "client": {"name": client_name, "description": CLIENT_DESCRIPTIONS[client_name]},
        "scenarios": scenario_results,
    }
    rounds = 1 if options.quick else 3
    try:
        cold = partial(
            measure_cold_starts,
            root,
            options.boots,
            rounds=rounds,
            load_rate=options.rate,
            log=log,
            client=client,
        )
        cold_start = results["cold_start"] = _reported("cold start", cold)
        cold_starts = {"python": cold_start}
        for family, server in COLD_START_SERVERS.items():
            if not any(SCENARIOS[name].family == family for name in options.scenarios):
                continue
            # The node (go) scenarios' new code live is weighed against node's (Go's) own.
            cold_starts[family] = results[f"cold_start_{family}"] = _reported(
                f"cold start ({family})", partial(cold, server=server)
            )
        for name in options.scenarios:
            for boot in options.boots:
                log(f"{name}, boot {boot:g} s")
                cls = SCENARIOS[name]
                run = run_scenario(cls, boot, options, root, client)
                if run.result["status"] == "ok":
                    run.result["vs_cold_start"] = metrics.against_cold_start(
                        run.result["summary"], *cold_start_medians(cold_starts[cls.family], boot)
                    )
                runs.append(run)
                scenario_results.append(run.result)
        if options.cost:
            results["cost"] = _reported(
                "cost",
                lambda: measure_cost(
                    root,
                    idle=options.idle,
                    keep_alive_duration=options.keep_alive,
                    rounds=rounds,
                    log=log,
                ),
            )
            results["hook_import"] = _reported(
                "hook import time",
                lambda: measure_hook_import(rounds=3 if options.quick else 11, log=log),
            )
        results["comparison"] = report.comparison(results)
    finally:
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["load_average_end"] = _load_average()
    sys.stdout.write(report.markdown(results))
    sys.stdout.flush()
    if options.out is not None:
        report.write_json(options.out, results)
        log(f"raw figures written to {options.out}")
    if options.plot is not None:
        drawn = [
            (
                f"{r.result['scenario']}, boot {r.result['boot_s']} s",
                r.records,
                r.restarts,
                options.timeout,
            )
            for r in runs
            if r.result.get("status") == "ok"
        ]
        log(report.plot(options.plot, drawn, options.margin, stamp=report.run_stamp(results)))
    if options.headline is not None:
        log(report.plot_headline(options.headline, results))
    statuses = [r.result.get("status", "") for r in runs]
    keys = ("cold_start", *(f"cold_start_{f}" for f in COLD_START_SERVERS), "cost", "hook_import")
    statuses += [results.get(key, {}).get("status", "ok") for key in keys]
    return 1 if any(str(status).startswith("error") for status in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
