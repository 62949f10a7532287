"""The figures of a benchmark run, computed from the request records alone.

Pure functions over `Record` lists (no clock, no I/O), so that the test suite
can check them on synthetic records. Definitions (also in docs/benchmarks.md):

* **restart window**: from the trigger of a restart to the completion of the
  first successful response from the new generation, plus a margin; cut at
  the next trigger and at the end of the run. When the new generation never
  answers, the window runs to the next trigger (or the end of the run).
* a request is **inside** a window when its life, from its scheduled time to
  its end, overlaps the window: a request sent just before the trigger and
  stuck behind the restart counts as inside.
* **longest no-success stretch**: the largest gap between consecutive
  completions of successful responses, on the client's clock. The run's first
  scheduled time and last request end bound the first and last gaps, so a run
  that ends in failures counts its tail. For a restart, the largest such gap
  that overlaps its window (not clipped to it).
* **latency** percentiles (nearest rank) are over successful requests only, from
  the scheduled time to the complete response; failures are counted by kind.
* **new code live against a cold start**: the median time from a trigger to the
  first successful response of the new generation, next to the median cold start
  of the same server, app and boot time (measured in the same run, without load),
  and the difference: what the restart adds to the boot the new code needs anyway
  (for zocket, zocket's share; the target is at most 20 ms).
* **control windows** (``--controls``): stretches between restarts that are judged
  like restart windows but where no restart happens. In a *still* window nothing
  is done: its p99 against the outside p99 is the metric's own spread on this
  machine. In a *bystander* window gunicorn with the same WSGI app boots beside the
  serving server, on another port and at the lowest CPU priority, and is stopped
  once it answers:
  one boot and one exit that never touch the served socket, the least a restart
  of any tool does; its ratio is this machine's floor. A bystander window runs
  from its spawn to its first answer plus the margin, as a restart's runs to the
  new generation's, and at least to the end of its exit. Control windows count
  neither inside nor outside; a bystander that never answered measured nothing
  and is counted apart (``unanswered``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .load import FAILURE_KINDS, KINDS, Record

#: JSON-ready data: what summarise() returns and the report reads.
Json = dict[str, Any]

__all__ = [
    "CONTROL_KINDS",
    "Control",
    "Json",
    "Restart",
    "Window",
    "against_cold_start",
    "control_figures",
    "count_kinds",
    "latency_stats",
    "longest_no_success",
    "no_success_gaps",
    "percentile",
    "restart_windows",
    "summarise",
    "timeline",
]


@dataclass(frozen=True)
class Restart:
    """One restart the runner performed. Times are seconds since the load's origin."""

    number: int
    #: The X-Generation value the new generation answers with.
    generation: str
    #: When the runner began the restart (before the signal, edit or stop).
    trigger: float
    #: When the trigger action returned (for a plain restart: after stop and start).
    trigger_returned: float | None = None


class _Span:
    """A stretch of the client timeline: what a window holds."""

    start: float
    end: float

    def holds(self, record: Record) -> bool:
        """Whether ``record``'s life (scheduled .. ended) overlaps the window."""
        return record.scheduled <= self.end and record.ended >= self.start


@dataclass(frozen=True)
class Window(_Span):
    """The stretch of the client timeline that one restart disturbs."""

    restart: Restart
    start: float
    end: float
    #: Completion of the first successful response from the new generation, if any.
    first_new: float | None


#: The kinds of control window (the module docstring).
CONTROL_KINDS = ("still", "bystander")


@dataclass(frozen=True)
class Control(_Span):
    """One control window the runner opened between restarts (``--controls``)."""

    kind: str
    start: float
    end: float
    #: For a bystander: when it first answered on its own port (None if it never did).
    answered: float | None = None


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of already sorted values; None when empty."""
    if not sorted_values:
        return None
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} not in (0, 100]")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def latency_stats(records: Iterable[Record]) -> dict[str, float | int | None]:
    """n, p50, p99 and max latency (ms) of the successful requests among ``records``."""
    values = sorted(r.latency * 1000 for r in records if r.ok)
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": values[-1] if values else None,
    }


def count_kinds(records: Iterable[Record]) -> dict[str, int]:
    """How many requests ended as each kind; every kind present, zero or not."""
    found = dict.fromkeys(KINDS, 0)
    for record in records:
        found[record.kind] = found.get(record.kind, 0) + 1
    return found


def no_success_gaps(records: Sequence[Record]) -> list[tuple[float, float]]:
    """The stretches between consecutive successful completions, bounded by the run.

    The run starts at the first scheduled time and ends at the last end of any
    request; with no success at all the whole run is one gap.
    """
    if not records:
        return []
    start = min(r.scheduled for r in records)
    end = max(r.ended for r in records)
    points = [start, *sorted(r.ended for r in records if r.ok), end]
    return list(itertools.pairwise(points))


def longest_no_success(
    records: Sequence[Record], within: tuple[float, float] | None = None
) -> float:
    """The longest gap (s) between successful completions; only gaps that overlap ``within``."""
    gaps = no_success_gaps(records)
    if within is not None:
        lo, hi = within
        gaps = [(a, b) for a, b in gaps if a <= hi and b >= lo]
    return max((b - a for a, b in gaps), default=0.0)


def first_success_from(records: Iterable[Record], generation: str, after: float) -> float | None:
    """When the first successful response from ``generation`` completed, at or after ``after``."""
    return min(
        (r.ended for r in records if r.ok and r.generation == generation and r.ended >= after),
        default=None,
    )


def restart_windows(
    restarts: Sequence[Restart], records: Sequence[Record], margin: float
) -> list[Window]:
    """The window of each restart (see the module docstring), in trigger order."""
    ordered = sorted(restarts, key=lambda r: r.trigger)
    run_end = max((r.ended for r in records), default=0.0)
    windows = []
    for index, restart in enumerate(ordered):
        limit = ordered[index + 1].trigger if index + 1 < len(ordered) else math.inf
        limit = min(limit, max(run_end, restart.trigger))
        first = first_success_from(records, restart.generation, restart.trigger)
        end = min(first + margin, limit) if first is not None else limit
        windows.append(Window(restart, restart.trigger, max(end, restart.trigger), first))
    return windows


def _generation_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def summarise(
    records: Sequence[Record],
    restarts: Sequence[Restart],
    *,
    margin: float = 0.5,
    initial_generation: str = "1",
    controls: Sequence[Control] = (),
) -> Json:
    """Every figure of one scenario run, as JSON-ready data (times in s, latencies in ms)."""
    windows = restart_windows(restarts, records, margin)
    inside = [r for r in records if any(w.holds(r) for w in windows)]
    outside = [
        r
        for r in records
        if not any(w.holds(r) for w in windows) and not any(c.holds(r) for c in controls)
    ]
    seen = sorted({r.generation for r in records if r.ok and r.generation}, key=_generation_key)
    expected = {initial_generation, *(r.generation for r in restarts)}
    per_restart: list[Json] = []
    to_new: list[float] = []
    for window in windows:
        held = [r for r in records if window.holds(r)]
        kinds = count_kinds(held)
        restart = window.restart
        waited = window.first_new - restart.trigger if window.first_new is not None else None
        if waited is not None:
            to_new.append(waited)
        per_restart.append(
            {
                "number": restart.number,
                "generation": restart.generation,
                "trigger_s": restart.trigger,
                "trigger_returned_s": restart.trigger_returned,
                "window_s": [window.start, window.end],
                "first_new_s": window.first_new,
                "to_new_generation_s": waited,
                "new_generation_seen": window.first_new is not None,
                "requests": len(held),
                "counts": kinds,
                "failed": sum(kinds[k] for k in FAILURE_KINDS),
                "longest_no_success_s": longest_no_success(records, (window.start, window.end)),
                "latency": latency_stats(held),
            }
        )
    kinds = count_kinds(records)
    to_new.sort()
    # How late the client itself started requests: large values mean the client, not the
    # server, was short of CPU, and the latencies are to be read with care.
    lags = sorted((r.started - r.scheduled) * 1000 for r in records)
    return {
        "requests": len(records),
        "counts": kinds,
        "failed": sum(kinds[k] for k in FAILURE_KINDS),
        "longest_no_success_s": longest_no_success(records),
        "latency_in_windows": latency_stats(inside),
        "latency_outside": latency_stats(outside),
        "restarts": len(restarts),
        "new_generations_seen": sum(1 for p in per_restart if p["new_generation_seen"]),
        "generations_seen": seen,
        "unexpected_generations": [g for g in seen if g not in expected],
        "to_new_generation_s": {
            "median": percentile(to_new, 50),
            "max": to_new[-1] if to_new else None,
        },
        "per_restart": per_restart,
        "client_lag_ms": {"p99": percentile(lags, 99), "max": lags[-1] if lags else None},
        "controls": control_figures(records, controls, inside, outside),
    }


def control_figures(
    records: Sequence[Record],
    controls: Sequence[Control],
    inside: Sequence[Record],
    outside: Sequence[Record],
) -> Json:
    """Per kind of control window: how many, their latency, and each p99 ratio to the outside
    p99 beside the restart windows' own ratio (the module docstring). Empty without controls.

    A request in both a restart window and a control window (only when a window ran
    long) counts for the restart alone.
    """
    if not controls:
        return {}
    outside_p99 = latency_stats(outside)["p99_ms"]

    def ratio(stats: dict[str, float | int | None]) -> float | None:
        p99 = stats["p99_ms"]
        if p99 is None or not outside_p99:
            return None
        return float(p99) / float(outside_p99)

    restarts = latency_stats(inside)
    kept = set(map(id, inside))
    figures: Json = {"restart_p99_ratio": ratio(restarts)}
    for kind in CONTROL_KINDS:
        mine = [c for c in controls if c.kind == kind]
        if not mine:
            continue
        unanswered = 0
        if kind == "bystander":
            unanswered = sum(1 for c in mine if c.answered is None)
            mine = [c for c in mine if c.answered is not None]
        held = [r for r in records if id(r) not in kept and any(c.holds(r) for c in mine)]
        stats = latency_stats(held)
        answered = sorted(c.answered - c.start for c in mine if c.answered is not None)
        figures[kind] = {
            "windows": len(mine),
            "latency": stats,
            "p99_ratio": ratio(stats),
            "windows_s": [[c.start, c.end] for c in mine],
            "per_window_p99_ms": [
                latency_stats(r for r in held if c.holds(r))["p99_ms"] for c in mine
            ],
        }
        if kind == "bystander":
            figures[kind]["unanswered"] = unanswered
            figures[kind]["answered_s"] = {"median": percentile(answered, 50)}
    return figures


def against_cold_start(
    summary: Json, cold_start_s: float | None, under_load_s: float | None = None
) -> Json:
    """``summary``'s median trigger → new code answers, cold starts' medians (idle and under
    the same load), and the differences.

    A difference is None when either side is missing (no new generation
    answered, or no cold start was measured): never a figure made up from one side.
    """
    live = summary["to_new_generation_s"]["median"]

    def minus(cold: float | None) -> float | None:
        return live - cold if live is not None and cold is not None else None

    return {
        "new_code_live_s": live,
        "cold_start_s": cold_start_s,
        "difference_s": minus(cold_start_s),
        "cold_start_under_load_s": under_load_s,
        "difference_under_load_s": minus(under_load_s),
    }


def timeline(records: Sequence[Record], bucket: float = 0.1) -> list[list[float]]:
    """The run in ``bucket``-second slices of scheduled time: [t, ok, failed, max ms of ok].

    A compact stand-in for the per-request records in the JSON output.
    """
    if not records:
        return []
    slices: dict[int, list[float]] = {}
    for record in records:
        key = math.floor(record.scheduled / bucket)
        row = slices.setdefault(key, [round(key * bucket, 3), 0, 0, 0.0])
        if record.ok:
            row[1] += 1
            row[3] = max(row[3], round(record.latency * 1000, 2))
        else:
            row[2] += 1
    return [slices[k] for k in sorted(slices)]
