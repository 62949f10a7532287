"""benchmarks/sched_trace.py: a scheduler trace read back beside the load's records.

The trace is tracefs's own text format, written out here for one restart in which a
serving worker, woken by the client, waits 4 ms behind the booting generation while
the other CPU idles: the analysis must name that, not merely count a slow request.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import sched_trace
from benchmarks.load import Record
from benchmarks.metrics import Restart

HOLDER, SENTRY, OLD, WORKER, NEW, CLIENT = 100, 101, 102, 103, 104, 200


def line(comm: str, pid: int, cpu: int, at: float, event: str, rest: str) -> str:
    return f"{comm:>16}-{pid:<7} [{cpu:03d}] d..2.  {at:.6f}: {event}: {rest}"


def switch(cpu: int, at: float, prev: tuple[str, int, str], nxt: tuple[str, int]) -> str:
    return line(
        prev[0], prev[1], cpu, at, "sched_switch",
        f"prev_comm={prev[0]} prev_pid={prev[1]} prev_prio=120 prev_state={prev[2]} ==> "
        f"next_comm={nxt[0]} next_pid={nxt[1]} next_prio=120",
    )


def fork(at: float, parent: int, child: int) -> str:
    return line("python", parent, 0, at, "sched_process_fork",
                f"comm=python pid={parent} child_comm=python child_pid={child}")


TRACE = [
    "# tracer: nop",
    fork(10.000, HOLDER, SENTRY),
    fork(10.001, HOLDER, OLD),
    fork(10.200, OLD, WORKER),
    switch(1, 10.300, ("python", SENTRY, "S"), ("swapper/1", 0)),
    switch(1, 10.301, ("swapper/1", 0, "R"), ("zocket-sentry", SENTRY)),
    switch(1, 10.302, ("zocket-sentry", SENTRY, "S"), ("swapper/1", 0)),
    line("python", HOLDER, 0, 11.000, "tracing_mark_write", "zocket-bench trigger 1 1.000000000"),
    fork(11.0001, HOLDER, NEW),
    switch(0, 11.005, ("swapper/0", 0, "R"), ("python", NEW)),
    switch(1, 11.008, ("swapper/1", 0, "R"), ("openloop", CLIENT)),
    line("openloop", CLIENT, 1, 11.010, "sched_wakeup",
         f"comm=python pid={WORKER} prio=120 target_cpu=000"),
    switch(1, 11.0101, ("openloop", CLIENT, "S"), ("swapper/1", 0)),
    switch(0, 11.014, ("python", NEW, "R"), ("python", WORKER)),
    switch(0, 11.0145, ("python", WORKER, "S"), ("python", NEW)),
    switch(0, 11.100, ("python", NEW, "S"), ("swapper/0", 0)),
    switch(1, 11.100, ("swapper/1", 0, "R"), ("kworker/u8:3", 15)),
    switch(1, 11.101, ("kworker/u8:3", 15, "I"), ("swapper/1", 0)),
]

#: One request slow behind the new generation, one fast, one before the trigger.
RECORDS = [
    Record(0.8, 0.8, 0.8003, "ok", 200, "1"),
    Record(1.009, 1.009, 1.0146, "ok", 200, "1"),
    Record(1.05, 1.05, 1.0503, "ok", 200, "1"),
]
RESTARTS = [Restart(1, "2", 1.0, 1.0)]


@pytest.fixture()
def events() -> sched_trace.Events:
    return sched_trace.parse(TRACE)


def test_the_trace_is_read_into_runs_waits_forks_and_markers(events: sched_trace.Events) -> None:
    assert events.markers == [(11.0, 1, 1.0)]
    assert events.children[HOLDER] == [SENTRY, OLD, NEW]
    assert events.names[SENTRY] == "zocket-sentry"  # its name after prctl, not at fork
    # The worker was woken at 11.010 and ran at 11.014: runnable for 4 ms.
    assert events.runnable[WORKER] == [(11.010, 11.014)]
    # The new generation was preempted at 11.014 (state R) and ran again at 11.0145.
    assert events.runnable[NEW] == [(11.014, 11.0145)]
    assert (11.005, 11.014, NEW) in events.running[0]


def test_roles_come_from_the_holder_s_forks(events: sched_trace.Events) -> None:
    roles = sched_trace.roles(events, HOLDER, CLIENT)
    assert roles.client == {CLIENT}
    assert roles.holder == {HOLDER, SENTRY}
    assert roles.generations == [{OLD, WORKER}, {NEW}]
    names = events.names
    assert [roles.of(p, 1, names) for p in (OLD, WORKER, NEW, CLIENT, HOLDER, 0, 15)] == [
        "old", "old", "new", "client", "holder", "idle", "kworker",
    ]
    # Seen from a later restart, generation 1 is neither the old nor the new one.
    assert roles.of(WORKER, 2, names) == "other generation"
    assert roles.of(NEW, 2, names) == "old"


def test_a_slow_request_is_charged_to_what_had_the_cpus(events: sched_trace.Events) -> None:
    analysis = sched_trace.analyse(events, RECORDS, RESTARTS, HOLDER, CLIENT, slow_s=0.001)
    assert analysis["status"] == "ok"
    (restart,) = analysis["restarts"]
    (slow,) = restart["slow"]
    assert slow["after_trigger_ms"] == pytest.approx(9.0)
    assert slow["latency_ms"] == pytest.approx(5.6)
    assert slow["client_late_ms"] == 0
    assert slow["old_runnable_ms"] == pytest.approx(4.0)  # woken 11.010, ran 11.014
    assert slow["old_ran_ms"] == pytest.approx(0.5)
    assert slow["new_runnable_ms"] == pytest.approx(0.5)  # preempted by the worker
    # 11.009-11.0146 on two CPUs: the new generation 5.1 ms, CPU 1 idle 4.5 ms.
    assert slow["cpu_ms"]["new"] == pytest.approx(5.1, abs=0.01)
    assert slow["cpu_ms"]["idle"] == pytest.approx(4.5, abs=0.01)
    assert next(iter(slow["cpu_ms"])) == "new"
    first = restart["phases"][1]
    assert (first["from_s"], first["to_s"], first["requests"], first["slow"]) == (0.0, 0.1, 2, 1)
    assert first["cpu_share"]["new"] > first["cpu_share"]["old"] > 0
    before = restart["phases"][0]
    assert before["requests"] == 1 and before["slow"] == 0
    text = sched_trace.report(analysis)
    assert "slow at +9.0 ms: 5.6 ms" in text and "sat runnable 4.0 ms in all" in text


def test_a_trace_without_markers_says_so(events: sched_trace.Events) -> None:
    events.markers.clear()
    analysis = sched_trace.analyse(events, RECORDS, RESTARTS, HOLDER, CLIENT, slow_s=0.001)
    assert analysis == {"status": "no trigger markers in the trace"}
    assert sched_trace.report(analysis) == "sched trace: no trigger markers in the trace\n"


def test_without_tracefs_recording_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(sched_trace.TraceUnavailable, match="cannot trace the scheduler"):
        sched_trace.Trace(root=tmp_path / "no-tracefs").start()


def test_recording_writes_the_events_and_the_markers(tmp_path: Path) -> None:
    """Against a directory shaped like tracefs: what is written where, and the copy."""
    root = tmp_path / "tracefs"
    for event in sched_trace.EVENTS:
        (root / "events" / event).mkdir(parents=True)
    (root / "trace_clock").write_text("[local] global counter mono\n")
    (root / "buffer_size_kb").write_text("7 (expanded: 1408)\n")
    trace = sched_trace.Trace(root=root).start()
    assert (root / "trace_clock").read_text() == "mono"  # the clock time.monotonic() reads
    assert (root / "tracing_on").read_text() == "1"
    assert all((root / "events" / e / "enable").read_text() == "1" for e in sched_trace.EVENTS)
    trace.mark(3, 12.5)
    (root / "trace").write_text("\n".join(TRACE) + "\n")
    path = trace.stop(tmp_path / "out")
    assert (root / "trace_marker").read_text() == "zocket-bench trigger 3 12.500000000\n"
    assert (root / "tracing_on").read_text() == "0"
    assert all((root / "events" / e / "enable").read_text() == "0" for e in sched_trace.EVENTS)
    assert path.read_text().splitlines() == TRACE
    assert (root / "trace").read_text() == ""  # the kernel's buffer is cleared
    # tracefs is left as it was found: its clock, and the buffer size it would have taken.
    assert (root / "trace_clock").read_text() == "local"
    assert (root / "buffer_size_kb").read_text() == "1408"


def test_a_failed_start_leaves_no_event_enabled(tmp_path: Path) -> None:
    root = tmp_path / "tracefs"
    for event in sched_trace.EVENTS:
        (root / "events" / event).mkdir(parents=True)
    (root / "trace_marker").mkdir()  # cannot be opened for writing
    with pytest.raises(sched_trace.TraceUnavailable):
        sched_trace.Trace(root=root).start()
    assert all((root / "events" / e / "enable").read_text() == "0" for e in sched_trace.EVENTS)


def test_a_wake_up_seen_while_the_task_still_runs_is_no_wait() -> None:
    """The kernel may log a task's wake-up before it has switched out to sleep; the sleep
    that follows is not time spent waiting for a CPU."""
    events = sched_trace.parse([
        "# entries-in-buffer/entries-written: 5/5   #P:4",
        switch(0, 1.000, ("swapper/0", 0, "R"), ("python", 300)),
        line("python", 301, 1, 1.001, "sched_wakeup", "comm=python pid=300 prio=120 target_cpu=000"),
        switch(0, 1.002, ("python", 300, "S"), ("swapper/0", 0)),
        line("python", 301, 1, 2.000, "sched_wakeup", "comm=python pid=300 prio=120 target_cpu=000"),
        switch(0, 2.0001, ("swapper/0", 0, "R"), ("python", 300)),
    ])
    assert events.runnable[300] == [(2.000, 2.0001)]
    assert events.cpus == 4  # from the header, not from the one CPU that switched
