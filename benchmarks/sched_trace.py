"""Who had the CPUs while a restart's requests were slow: the kernel's scheduler events.

The p99 of a restart window is a few dozen requests; which process made each of them
wait cannot be guessed from latencies. ``run.py --trace DIR`` records the kernel's own
account (tracefs: ``sched_switch``, ``sched_wakeup``, ``sched_process_fork``, with a
marker at each trigger, on CLOCK_MONOTONIC) while a scenario runs, and this module reads
it back beside the load's records:

- each process is given a role: the load ``client``, zocket's ``holder`` (and its
  threads and helpers), the generation that served before a restart (``old``), the one
  it started (``new``), any other generation, the kernel's own threads, ``idle``;
- per phase of each restart (before the trigger, then 100 ms steps), how the CPU time
  was shared between the roles, and how many requests were slow;
- each slow request of a window: how long the old generation's processes ran and how
  long they sat runnable (woken or preempted, waiting for a CPU) meanwhile, summed over
  their tasks (a master's timer wake-up counts as much as a worker's), the same for the
  new generation, and what had the CPUs. A serving worker that waits runnable while a CPU runs the new generation is
  the competition a restart adds; a worker that sleeps while the client is late is not
  the server's doing.

Recording needs root (or write access to tracefs); the analysis needs only the files.
Generation k is taken to be the k-th process the holder forked (its sentry aside): a
scenario whose restarts happen inside one generation (a server's own reloader), or a
run with a failed start or a crash, is mislabelled.
"""

from __future__ import annotations

import bisect
import json
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .load import Record
from .metrics import Restart

__all__ = ["Trace", "TraceUnavailable", "analyse", "parse", "record_files", "report"]

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = (
    "sched/sched_switch",
    "sched/sched_wakeup",
    "sched/sched_wakeup_new",
    "sched/sched_process_fork",
)
#: A trigger's marker: the restart's number and its time on the load's clock.
MARKER = "zocket-bench trigger"
_LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+): (.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")


class TraceUnavailable(RuntimeError):
    """tracefs cannot be written here (not root, not mounted, no sched events)."""


class Trace:
    """A recording of the scheduler events, to ``directory/trace.txt``.

    The buffer is per CPU and sized for a scenario of a few minutes at 1000 requests/s
    (about 10,000 events a second); events that overflow it are counted in the file.
    """

    def __init__(self, root: Path = TRACEFS, buffer_kib: int = 65536) -> None:
        self.root = root
        self.buffer_kib = buffer_kib
        self._marker: Any = None
        #: What start() changed, to be put back by stop(): (file, value before).
        self._saved: list[tuple[str, str]] = []

    def start(self) -> Trace:
        try:
            self._write("tracing_on", "0")
            self._write("trace", "")
            for name, value in (("trace_clock", "mono"), ("buffer_size_kb", str(self.buffer_kib))):
                before = (self.root / name).read_text() if (self.root / name).exists() else ""
                # trace_clock lists every clock, the current one in brackets; an unused
                # buffer reads "7 (expanded: 1408)", 1408 being what it will take.
                chosen = re.search(r"\[(\w+)\]|expanded: (\d+)", before)
                kept = next((g for g in chosen.groups() if g), "") if chosen else before.strip()
                self._saved.append((name, kept))
                self._write(name, value)
            for event in EVENTS:
                self._write(f"events/{event}/enable", "1")
            self._marker = open(self.root / "trace_marker", "w", buffering=1)  # noqa: SIM115
            self._write("tracing_on", "1")
        except OSError as exc:
            self._undo()
            raise TraceUnavailable(f"cannot trace the scheduler ({self.root}): {exc}") from exc
        return self

    def mark(self, number: int, at: float) -> None:
        """Note restart ``number``'s trigger at ``at`` on the load's clock."""
        if self._marker is not None:
            self._marker.write(f"{MARKER} {number} {at:.9f}\n")

    def stop(self, directory: Path | None) -> Path | None:
        """End the recording; the events go to ``directory/trace.txt`` (None: nowhere).

        tracefs is left as it was found, whatever fails on the way.
        """
        path = None
        try:
            self._write("tracing_on", "0")
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
                path = directory / "trace.txt"
                shutil.copyfile(self.root / "trace", path)
        finally:
            self._undo()
        return path

    def _undo(self) -> None:
        """Events off, the marker closed, the buffer emptied, clock and size put back."""
        if self._marker is not None:
            self._marker.close()
            self._marker = None
        for step in [
            *((f"events/{event}/enable", "0") for event in EVENTS),
            ("trace", ""),
            *reversed(self._saved),
        ]:
            try:
                self._write(*step)
            except OSError:
                pass  # not there (a failed start) or not ours to change
        self._saved = []

    def _write(self, name: str, value: str) -> None:
        (self.root / name).write_text(value)


@dataclass
class Events:
    """A trace, parsed: what ran where, what woke, who forked whom, the triggers."""

    #: (start, end, pid) of each stretch a task ran, per CPU, in time order.
    running: dict[int, list[tuple[float, float, int]]] = field(default_factory=dict)
    #: (start, end) of each stretch a task sat runnable, by pid.
    runnable: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    #: (trace time, restart number, load time) per trigger.
    markers: list[tuple[float, int, float]] = field(default_factory=list)
    #: How many CPUs the trace covers (its header's #P:), or those seen running.
    cpus: int = 0


def parse(lines: Iterable[str]) -> Events:
    """Read tracefs's text output (one event a line) into `Events`."""
    events = Events()
    running: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    runnable: dict[int, list[tuple[float, float]]] = defaultdict(list)
    children: dict[int, list[int]] = defaultdict(list)
    on_cpu: dict[int, tuple[float, int]] = {}
    waiting: dict[int, float] = {}
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            header = re.search(r"#P:(\d+)", line) if line.startswith("#") else None
            if header:
                events.cpus = int(header[1])
            continue
        _comm, _pid, cpu_text, stamp, kind, rest = match.groups()
        now, cpu = float(stamp), int(cpu_text)
        if kind == "tracing_mark_write":
            words = rest.split()
            if " ".join(words[:2]) == MARKER and len(words) >= 4:
                events.markers.append((now, int(words[2]), float(words[3])))
            continue
        values = dict(_FIELD.findall(rest))
        if kind == "sched_switch":
            prev, nxt = int(values["prev_pid"]), int(values["next_pid"])
            events.names[prev] = values["prev_comm"]
            events.names[nxt] = values["next_comm"]
            if cpu in on_cpu:
                began, pid = on_cpu[cpu]
                running[cpu].append((began, now, pid))
            on_cpu[cpu] = (now, nxt)
            # A wake-up seen while it still ran (it had not yet switched out to sleep)
            # is no wait: whatever it left in `waiting` goes with the switch.
            waiting.pop(prev, None)
            if prev and values["prev_state"].startswith("R"):
                waiting[prev] = now  # preempted: runnable still
            if nxt in waiting:
                runnable[nxt].append((waiting.pop(nxt), now))
        elif kind in ("sched_wakeup", "sched_wakeup_new"):
            pid = int(values["pid"])
            events.names.setdefault(pid, values["comm"])
            if not any(p == pid for _, p in on_cpu.values()):
                waiting.setdefault(pid, now)
        elif kind == "sched_process_fork":
            children[int(values["pid"])].append(int(values["child_pid"]))
            events.names.setdefault(int(values["child_pid"]), values["child_comm"])
    events.running = dict(running)
    events.cpus = events.cpus or len(running)
    events.runnable = dict(runnable)
    events.children = dict(children)
    return events


def _descendants(events: Events, pid: int) -> set[int]:
    found, stack = {pid}, [pid]
    while stack:
        for child in events.children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


@dataclass
class Roles:
    """Which role each pid had, as seen from restart ``number``."""

    holder: set[int]
    generations: list[set[int]]  # generation 1 first
    client: set[int]

    def of(self, pid: int, number: int, names: dict[int, str]) -> str:
        """The role of ``pid`` in restart ``number`` (from generation number to number + 1)."""
        if pid == 0:
            return "idle"
        if pid in self.client:
            return "client"
        if 0 < number <= len(self.generations) and pid in self.generations[number - 1]:
            return "old"
        if number < len(self.generations) and pid in self.generations[number]:
            return "new"
        if any(pid in g for g in self.generations):
            return "other generation"
        if pid in self.holder:
            return "holder"
        # Anything else by its name: kworker/0:1 and kworker/u8:3 are both "kworker".
        return names.get(pid, "?").split("/")[0]


def roles(events: Events, holder: int, client: int | None) -> Roles:
    """The holder forks its sentry once and one generation per start, in order: each of
    its children but the sentry is a generation, with everything it forked."""
    generations: list[set[int]] = []
    helpers = {holder}
    for child in events.children.get(holder, ()):
        tasks = _descendants(events, child)
        if events.names.get(child, "").startswith("zocket-sentry"):
            helpers |= tasks
        else:
            generations.append(tasks)
    # A Python client is a thread of the runner: the threads it started count too.
    clients = _descendants(events, client) if client is not None else set()
    return Roles(helpers, generations, clients)


def _within(
    stretches: list[tuple[float, float, int]], start: float, end: float
) -> Iterable[tuple[float, float, int]]:
    """The stretches of one CPU that overlap [start, end): they never overlap each other,
    so only the one just before the first that starts inside can reach into it."""
    first = max(0, bisect.bisect_left(stretches, (start,)) - 1)
    for stretch in stretches[first:]:
        if stretch[0] >= end:
            break
        if stretch[1] > start:
            yield stretch


def _overlap(stretches: Iterable[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in stretches)


def _shares(
    events: Events, who: Roles, number: int, start: float, end: float
) -> list[tuple[str, float]]:
    """CPU seconds per role in [start, end), over every CPU, the largest first."""
    spent: dict[str, float] = defaultdict(float)
    for stretches in events.running.values():
        for began, ended, pid in _within(stretches, start, end):
            spent[who.of(pid, number, events.names)] += min(ended, end) - max(began, start)
    return sorted(spent.items(), key=lambda item: -item[1])


PHASES = ((-0.3, 0.0), (0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.7))


def analyse(
    events: Events,
    records: Sequence[Record],
    restarts: Sequence[Restart],
    holder: int,
    client: int | None,
    slow_s: float,
) -> dict[str, Any]:
    """Per restart: per phase the CPU share of each role and the slow requests; then each
    slow request of the first 0.7 s with what the old generation and the CPUs did."""
    if not events.markers:
        return {"status": "no trigger markers in the trace"}
    who = roles(events, holder, client)
    by_number = {number: (stamp, at) for stamp, number, at in events.markers}
    cpus = max(events.cpus, 1)
    out: list[dict[str, Any]] = []
    for restart in restarts:
        if restart.number not in by_number:
            continue
        stamp, at = by_number[restart.number]
        offset = stamp - at  # trace time minus load time
        phases = []
        for low, high in PHASES:
            start, end = stamp + low, stamp + high
            spent = _shares(events, who, restart.number, start, end)
            inside = [r for r in records if at + low <= r.scheduled < at + high]
            phases.append(
                {
                    "from_s": low,
                    "to_s": high,
                    "requests": len(inside),
                    "slow": sum(1 for r in inside if r.latency > slow_s),
                    "cpu_share": {
                        role: round(seconds / (cpus * (high - low)), 3)
                        for role, seconds in spent
                    },
                }
            )
        slow = []
        old_set = (
            who.generations[restart.number - 1] if restart.number <= len(who.generations) else set()
        )
        new_set = (
            who.generations[restart.number] if restart.number < len(who.generations) else set()
        )
        for r in records:
            if not (at <= r.scheduled < at + PHASES[-1][1]) or r.latency <= slow_s:
                continue
            start, end = r.scheduled + offset, r.ended + offset
            ran = sum(
                _overlap(((a, b) for a, b, p in _within(stretches, start, end) if p in old_set),
                         start, end)
                for stretches in events.running.values()
            )
            waited = sum(_overlap(events.runnable.get(pid, ()), start, end) for pid in old_set)
            new_waited = sum(
                _overlap(events.runnable.get(pid, ()), start, end) for pid in new_set
            )
            spent = _shares(events, who, restart.number, start, end)
            slow.append(
                {
                    "after_trigger_ms": round((r.scheduled - at) * 1000, 1),
                    "latency_ms": round(r.latency * 1000, 2),
                    "client_late_ms": round((r.started - r.scheduled) * 1000, 2),
                    "generation": r.generation,
                    "old_ran_ms": round(ran * 1000, 2),
                    "old_runnable_ms": round(waited * 1000, 2),
                    "new_runnable_ms": round(new_waited * 1000, 2),
                    "cpu_ms": {k: round(v * 1000, 2) for k, v in spent[:4]},
                }
            )
        out.append({"restart": restart.number, "phases": phases, "slow": slow})
    return {"status": "ok", "slow_ms": round(slow_s * 1000, 3), "restarts": out}


def report(analysis: dict[str, Any]) -> str:
    """The analysis as text: a table of phases per restart, then the slow requests."""
    if analysis.get("status") != "ok":
        return f"sched trace: {analysis.get('status')}\n"
    lines = [f"slow: latency above {analysis['slow_ms']} ms"]
    for restart in analysis["restarts"]:
        lines.append(f"\nrestart {restart['restart']}")
        for phase in restart["phases"]:
            shares = ", ".join(
                f"{k} {v * 100:.0f}%" for k, v in phase["cpu_share"].items() if v >= 0.005
            )
            lines.append(
                f"  {phase['from_s'] * 1000:+5.0f}..{phase['to_s'] * 1000:+4.0f} ms: "
                f"{phase['slow']:3d} slow of {phase['requests']:4d} | CPU: {shares}"
            )
        for slow in restart["slow"]:
            cpu = ", ".join(f"{k} {v}" for k, v in slow["cpu_ms"].items())
            lines.append(
                f"  slow at +{slow['after_trigger_ms']} ms: {slow['latency_ms']} ms "
                f"(client late {slow['client_late_ms']}, generation {slow['generation']}); "
                f"old generation ran {slow['old_ran_ms']} ms, its tasks sat runnable "
                f"{slow['old_runnable_ms']} ms in all (the new one's {slow['new_runnable_ms']}); "
                f"CPU ms: {cpu}"
            )
    return "\n".join(lines) + "\n"


def record_files(directory: Path, records: Sequence[Record], analysis: dict[str, Any]) -> None:
    """Keep the analysis (JSON and text) and the records beside the trace."""
    (directory / "analysis.json").write_text(json.dumps(analysis, indent=1))
    (directory / "analysis.txt").write_text(report(analysis))
    (directory / "records.json").write_text(json.dumps([list(r) for r in records]))
