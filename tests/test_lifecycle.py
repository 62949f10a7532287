"""Every rule of the README's "Restarts" section, on the lifecycle alone, with a fake clock.

No process is started: ``World`` plays the part of the holder. It answers
each ``Spawn`` with a pid, keeps the timers the lifecycle sets, and moves a
fake clock forward, so that a rule that takes seconds of real time (a
backoff, a stop timeout) is checked in microseconds.
"""

from __future__ import annotations

import signal
from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest

from zocket.libc import WaitStatus
from zocket.lifecycle import (
    Action,
    CancelTimer,
    Event,
    Exit,
    Exited,
    KillLeftovers,
    Lifecycle,
    Log,
    Notify,
    Outcome,
    Ready,
    Restart,
    Rules,
    SetTimer,
    Shutdown,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    State,
    Timeout,
    WatchReadiness,
)

EXIT_1 = WaitStatus(1 << 8)
EXIT_0 = WaitStatus(0)
KILLED = WaitStatus(signal.SIGKILL)
TERMINATED = WaitStatus(signal.SIGTERM)


@dataclass
class World:
    """The holder's part, played in memory: spawns succeed unless told, time is ``now``."""

    rules: Rules = field(default_factory=Rules)
    now: float = 1000.0
    lifecycle: Lifecycle = field(init=False)
    timers: dict[Hashable, float] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    #: The next spawn fails with this message.
    spawn_fails: list[str] = field(default_factory=list)
    #: When each generation was spawned, on the fake clock.
    spawned_at: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle(self.rules, holding="http://127.0.0.1:8000 (http, fd 3)")

    def begin(self) -> None:
        self._carry_out(self.lifecycle.begin(self.now))

    def send(self, event: Event) -> None:
        self._carry_out(self.lifecycle.handle(event))

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            self.actions.append(action)
            if isinstance(action, SetTimer):
                self.timers[action.key] = self.now + action.delay
            elif isinstance(action, CancelTimer):
                self.timers.pop(action.key, None)
            elif isinstance(action, Spawn):
                if self.spawn_fails:
                    self.send(SpawnFailed(self.now, action.number, self.spawn_fails.pop(0)))
                else:
                    self.spawned_at[action.number] = self.now
                    self.send(Spawned(self.now, action.number, 100 + action.number))

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer that comes due, in deadline order."""
        end = self.now + seconds
        while True:
            due = [(t, k) for k, t in self.timers.items() if t <= end]
            if not due:
                break
            deadline, key = min(due, key=lambda item: item[0])
            self.now = max(self.now, deadline)
            del self.timers[key]
            self.send(Timeout(self.now, key))
        self.now = end

    # --- shorthands ----------------------------------------------------------------------

    def restart(self, reason: str = "SIGHUP") -> None:
        self.send(Restart(self.now, reason))

    def ready(self, number: int) -> None:
        self.send(Ready(self.now, number, "test"))

    def exit(self, number: int, status: WaitStatus = EXIT_0) -> None:
        self.send(Exited(self.now, number, status))

    def state(self, number: int) -> State:
        return self.lifecycle.generations[number].state

    def take(self) -> list[Action]:
        taken, self.actions = self.actions, []
        return taken

    def logs(self) -> list[str]:
        return [a.line for a in self.actions if isinstance(a, Log)]

    def signals(self) -> list[tuple[int, int]]:
        return [(a.number, a.signum) for a in self.actions if isinstance(a, Signal)]

    def spawns(self) -> list[int]:
        return [a.number for a in self.actions if isinstance(a, Spawn)]


def serving_world(**rules: object) -> World:
    """Generation 1 started and ready."""
    world = World(Rules(**rules))  # type: ignore[arg-type]
    world.begin()
    world.ready(1)
    world.take()
    return world


# --- start ----------------------------------------------------------------------------------


def test_the_first_generation_is_spawned_fatally_and_watched() -> None:
    world = World()
    world.begin()
    spawn, *rest = world.take()
    assert spawn == Spawn(1, fatal=True)
    assert Log("holding http://127.0.0.1:8000 (http, fd 3); generation 1 started (pid 101)") in rest
    assert WatchReadiness(1) in rest
    assert world.timers == {("ready-timeout", 1): world.now + 60.0}
    assert world.state(1) is State.STARTING


def test_ready_makes_a_generation_serve_and_tells_systemd() -> None:
    world = World()
    world.begin()
    world.advance(0.25)
    world.take()
    world.ready(1)
    assert world.state(1) is State.SERVING
    assert "generation 1 ready in 250 ms (test)" in world.logs()
    assert Notify("READY=1\nSTATUS=generation 1 serving") in world.actions
    assert ("ready-timeout", 1) not in world.timers


# --- overlap --------------------------------------------------------------------------------


def test_with_overlap_the_old_generation_serves_until_the_new_one_is_ready() -> None:
    world = serving_world()
    world.restart()
    assert world.spawns() == [2]
    assert "SIGHUP: restarting" in world.logs()
    assert world.signals() == []  # nothing stopped yet
    assert (world.state(1), world.state(2)) == (State.SERVING, State.STARTING)
    world.take()
    world.ready(2)
    assert world.signals() == [(1, signal.SIGTERM)]
    assert (world.state(1), world.state(2)) == (State.STOPPING, State.SERVING)
    assert world.timers[("stop-timeout", 1)] == world.now + 10.0
    world.take()
    world.advance(0.1)
    world.exit(1, TERMINATED)
    assert world.logs() == ["generation 1 stopped (SIGTERM) after 100 ms"]
    assert world.state(1) is State.STOPPED


def test_the_stop_timeout_sends_sigkill_then_kills_leftovers_of_a_gone_generation() -> None:
    world = serving_world(stop_timeout=2.0)
    world.restart()
    world.ready(2)
    world.take()
    world.advance(2.0)
    assert world.logs() == ["generation 1 did not stop within 2 s: sending SIGKILL"]
    assert world.signals() == [(1, signal.SIGKILL)]

    world.restart()
    world.ready(3)
    world.exit(2, EXIT_0)  # its first process exited: workers may be left in its group
    world.take()
    world.advance(2.0)
    assert world.actions == [KillLeftovers(2, 2.0)]


def test_without_overlap_the_old_generation_stops_first() -> None:
    world = serving_world(overlap=False)
    world.restart()
    assert world.spawns() == []
    assert world.signals() == [(1, signal.SIGTERM)]
    world.restart()  # while it makes way: the generation to come sees this change too
    assert world.lifecycle.restarts == 1
    world.take()
    world.exit(1, TERMINATED)
    assert world.spawns() == [2]


# --- keep the last good one -----------------------------------------------------------------


def test_a_generation_that_fails_before_ready_leaves_the_old_one_serving() -> None:
    world = serving_world()
    world.restart()
    world.take()
    world.exit(2, EXIT_1)
    assert world.logs() == ["generation 2 failed before ready: exit 1; generation 1 keeps serving"]
    assert Notify("READY=1\nSTATUS=generation 1 serving") in world.actions
    assert world.state(1) is State.SERVING
    assert world.spawns() == [] and world.signals() == []
    assert ("respawn",) not in world.timers


def test_a_generation_not_ready_in_time_is_stopped_and_the_old_one_serves_on() -> None:
    world = serving_world(ready_timeout=5.0)
    world.restart()
    world.take()
    world.advance(5.0)
    assert world.logs() == ["generation 2 not ready after 5 s; stopping it; generation 1 keeps serving"]
    assert world.signals() == [(2, signal.SIGTERM)]
    assert world.state(1) is State.SERVING
    world.ready(2)  # too late: it is being stopped
    assert world.state(2) is State.STOPPING
    world.exit(2, TERMINATED)
    assert world.state(2) is State.FAILED
    assert world.spawns() == []


def test_a_generation_not_ready_with_nothing_serving_is_started_again_after_its_exit() -> None:
    world = World(Rules(ready_timeout=5.0))
    world.begin()
    world.advance(5.0)
    world.take()
    world.exit(1, TERMINATED)
    assert ("respawn",) in world.timers
    world.advance(0.1)
    assert world.spawns() == [2]


# --- coalescing -----------------------------------------------------------------------------


def test_triggers_while_starting_coalesce_into_one_more_restart() -> None:
    world = serving_world()
    world.restart("a.py changed")
    for _ in range(5):
        world.restart("b.py changed")
    assert world.spawns() == [2]
    world.take()
    world.ready(2)
    assert world.spawns() == [3]
    assert "b.py changed during a start: restarting" in world.logs()
    world.take()
    world.ready(3)
    assert world.spawns() == []
    assert world.lifecycle.restarts == 2


def test_a_coalesced_restart_still_happens_when_the_new_generation_fails() -> None:
    world = serving_world()
    world.restart()
    world.restart()
    world.take()
    world.exit(2, EXIT_1)
    assert world.spawns() == [3]


# --- crashes and backoff --------------------------------------------------------------------


def test_boot_crashes_back_off_doubling_up_to_the_maximum() -> None:
    world = World(Rules(backoff_initial=0.1, backoff_max=1.0))
    world.begin()
    delays = []
    for number in range(1, 7):
        world.take()
        world.exit(number, EXIT_1)
        start = world.now
        world.advance(5.0)
        assert world.spawns() == [number + 1]
        delays.append(round(world.spawned_at[number + 1] - start, 3))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_generation_that_served_long_enough_is_replaced_at_once() -> None:
    world = World(Rules(stable_after=1.0))
    world.begin()
    world.exit(1, EXIT_1)  # a boot crash: backoff 0.1 s
    world.advance(0.1)
    world.ready(2)
    world.advance(3.0)
    world.take()
    world.exit(2, KILLED)
    assert world.spawns() == [3]  # no wait
    assert world.logs()[-2:] == [
        "no generation is serving; generation 2 had served 3.0 s, so it is replaced at once",
        "generation 3 started (pid 103)",
    ]
    assert world.lifecycle.crashes == 0


def test_a_crash_soon_after_ready_counts_and_backs_off() -> None:
    world = World(Rules(stable_after=1.0, backoff_initial=0.5))
    world.begin()
    world.ready(1)
    world.advance(0.5)
    world.take()
    world.exit(1, KILLED)
    assert world.spawns() == []
    assert world.logs()[-1] == (
        "no generation is serving; starting again in 0.5 s (crash 1 in a row, 0.5 s after ready)"
    )
    world.advance(0.5)
    assert world.spawns() == [2]


def test_the_backoff_resets_once_a_generation_has_served_stable_after() -> None:
    world = World(Rules(stable_after=1.0, backoff_initial=0.1))
    world.begin()
    for number in (1, 2, 3):
        world.exit(number, EXIT_1)
        world.advance(10)
    assert world.lifecycle.crashes == 3
    world.ready(4)
    world.advance(0.99)
    assert world.lifecycle.crashes == 3
    world.advance(0.02)
    assert world.lifecycle.crashes == 0


def test_a_spawn_that_fails_is_retried_with_backoff_under_the_same_number() -> None:
    world = serving_world()
    world.exit(1, KILLED)  # served 0 s: a crash
    world.take()
    world.spawn_fails.append("command not found: app")
    world.advance(0.1)
    assert "cannot start generation 2: command not found: app" in world.logs()
    assert world.lifecycle.started == 1
    world.take()
    world.advance(0.2)
    assert world.spawns() == [2]
    assert "generation 2 started (pid 102)" in world.logs()


def test_without_respawn_the_server_exit_is_zockets_exit() -> None:
    world = serving_world(respawn=False)
    world.exit(1, WaitStatus(3 << 8))
    assert world.actions[-1] == Exit(3)


# --- shutdown -------------------------------------------------------------------------------


def test_shutdown_passes_the_signal_to_every_live_generation_and_exits_with_the_servers_status(
) -> None:
    world = serving_world()
    world.restart()
    world.take()
    world.send(Shutdown(world.now, signal.SIGINT))
    assert sorted(world.signals()) == [(1, signal.SIGINT), (2, signal.SIGINT)]
    assert Notify("STOPPING=1") in world.actions
    world.restart()
    world.ready(2)
    assert world.spawns() == [] and world.state(2) is State.STOPPING
    world.take()
    world.exit(2, TERMINATED)
    assert world.logs() == ["generation 2 stopped (SIGTERM)"]
    assert not any(isinstance(a, Exit) for a in world.actions)
    world.exit(1, WaitStatus(130 << 8))
    assert world.actions[-1] == Exit(130)  # the serving generation's, not the last one's


def test_shutdown_with_nothing_alive_exits_with_the_last_status() -> None:
    world = World()
    world.begin()
    world.exit(1, EXIT_1)
    world.take()
    world.send(Shutdown(world.now, signal.SIGTERM))
    assert world.actions[-1] == Exit(1)
    assert CancelTimer(("respawn",)) in world.actions


def test_only_the_latest_and_the_principal_generations_are_kept() -> None:
    world = serving_world()
    for number in range(2, 12):
        world.restart()
        world.ready(number)
        world.exit(number - 1, TERMINATED)
    assert sorted(world.lifecycle.generations) == [10, 11]


@pytest.mark.parametrize("event", [Ready(0.0, 99, "x"), Exited(0.0, 99, EXIT_0)])
def test_events_about_unknown_generations_are_ignored(event: Event) -> None:
    world = serving_world()
    world.send(event)
    assert world.take() == []


# --- outcomes of a restart (zocket reload) ---------------------------------------------------


def outcomes(world: World) -> list[Outcome]:
    return [a for a in world.actions if isinstance(a, Outcome)]


def test_a_reload_hears_that_its_generation_went_live() -> None:
    world = serving_world()
    world.send(Restart(world.now, "control", waiter="client"))
    assert outcomes(world) == []
    world.advance(0.3)
    world.ready(2)
    assert outcomes(world) == [
        Outcome(("client",), True, "generation 2 ready in 300 ms; generation 1 was told to stop")
    ]


def test_a_reload_hears_why_its_generation_failed() -> None:
    world = serving_world()
    world.send(Restart(world.now, "control", waiter="client"))
    world.exit(2, EXIT_1)
    assert outcomes(world) == [Outcome(
        ("client",), False, "generation 2 failed before ready: exit 1; generation 1 keeps serving"
    )]


def test_reloads_that_coalesce_hear_from_the_generation_that_carries_them() -> None:
    world = serving_world()
    world.send(Restart(world.now, "control", waiter="first"))
    world.send(Restart(world.now, "control", waiter="second"))
    world.send(Restart(world.now, "control", waiter="third"))
    world.ready(2)
    assert [(o.waiters, o.ok) for o in outcomes(world)] == [(("first",), True)]
    world.take()
    world.ready(3)
    assert [(o.waiters, o.ok) for o in outcomes(world)] == [(("second", "third"), True)]


def test_a_reload_without_overlap_waits_for_the_generation_after_the_old_one() -> None:
    world = serving_world(overlap=False)
    world.send(Restart(world.now, "control", waiter="client"))
    world.exit(1, TERMINATED)
    assert outcomes(world) == []
    world.ready(2)
    assert [o.ok for o in outcomes(world)] == [True]


def test_a_reload_while_stopping_or_interrupted_by_a_stop_is_told_so() -> None:
    world = serving_world()
    world.send(Restart(world.now, "control", waiter="during"))
    world.send(Shutdown(world.now, signal.SIGTERM))
    world.send(Restart(world.now, "control", waiter="after"))
    assert outcomes(world) == [
        Outcome(("during",), False, "zocket is stopping"),
        Outcome(("after",), False, "zocket is stopping"),
    ]


def test_a_reload_whose_spawn_fails_is_told_why() -> None:
    world = serving_world()
    world.spawn_fails.append("command not found: app")
    world.send(Restart(world.now, "control", waiter="client"))
    assert outcomes(world) == [Outcome(
        ("client",), False, "cannot start generation 2: command not found: app; "
        "generation 1 keeps serving",
    )]


# --- copies (--copies N): one generation per copy slot, restarts roll slot by slot -------------


def copies_world(copies: int = 3, **rules: object) -> World:
    """Copies 1..N started (generations 1..N) and ready."""
    world = World(Rules(copies=copies, **rules))  # type: ignore[arg-type]
    world.begin()
    for number in range(1, copies + 1):
        world.ready(number)
    world.take()
    return world


def serving_slots(world: World) -> dict[int, int]:
    """copy -> the generation serving it."""
    found: dict[int, int] = {}
    for generation in world.lifecycle.generations.values():
        if generation.state is State.SERVING:
            assert generation.copy not in found, "two generations serve one slot"
            found[generation.copy] = generation.number
    return found


def test_copies_the_first_start_spawns_every_copy_fatally_each_in_its_slot() -> None:
    world = World(Rules(copies=3))
    world.begin()
    assert [a for a in world.actions if isinstance(a, Spawn)] == [
        Spawn(1, fatal=True), Spawn(2, fatal=True), Spawn(3, fatal=True)
    ]
    assert [(g.number, g.copy) for g in world.lifecycle.generations.values()] == [
        (1, 1), (2, 2), (3, 3)
    ]
    assert world.logs() == [
        "holding http://127.0.0.1:8000 (http, fd 3); generation 1 (copy 1) started (pid 101)",
        "generation 2 (copy 2) started (pid 102)",
        "generation 3 (copy 3) started (pid 103)",
    ]
    world.take()
    world.ready(2)
    assert world.logs() == ["generation 2 (copy 2) ready in 0 ms (test)"]
    assert world.signals() == []  # a first start replaces nothing
    assert Notify("READY=1\nSTATUS=generation 2 serving") in world.actions


def test_copies_a_restart_replaces_one_slot_at_a_time_each_new_copy_ready_first() -> None:
    world = copies_world(3)
    world.send(Restart(world.now, "control", waiter="client"))
    assert world.spawns() == [4]  # slot 1 only
    steps = [(4, 1, 5), (5, 2, 6), (6, 3, None)]
    for new, old, next_spawn in steps:
        assert world.signals() == []  # nothing stops before its replacement is ready
        assert len(serving_slots(world)) == 3
        assert world.lifecycle.generations[new].copy == old
        world.take()
        world.advance(0.1)
        world.ready(new)
        assert world.signals() == [(old, signal.SIGTERM)]  # the old copy of that slot only
        assert world.spawns() == ([next_spawn] if next_spawn else [])
        assert serving_slots(world)[old] == new
        if next_spawn is not None:
            assert outcomes(world) == []
            assert not any(isinstance(a, Notify) for a in world.actions)  # still reloading
        if next_spawn is not None:
            world.take()
    assert serving_slots(world) == {1: 4, 2: 5, 3: 6}
    assert outcomes(world) == [Outcome(
        ("client",), True,
        "3 copies replaced in 300 ms: generations 4, 5, 6 ready; generations 1, 2, 3 told to stop",
    )]
    assert Notify("READY=1\nSTATUS=generations 4, 5, 6 serving") in world.actions
    assert world.lifecycle.roll is None and world.lifecycle.restarts == 1


def test_copies_a_new_copy_that_fails_before_ready_ends_the_roll_the_rest_serve_on() -> None:
    world = copies_world(3)
    world.send(Restart(world.now, "control", waiter="client"))
    world.ready(4)
    world.take()
    world.exit(5, EXIT_1)  # slot 2's new copy
    message = (
        "generation 5 (copy 2) failed before ready: exit 1; "
        "generations 4 (copy 1), 2 (copy 2), 3 (copy 3) keep serving"
    )
    assert world.logs() == [
        message,
        "the restart stops at copy 2 of 3; the copies after it keep the generations they had",
    ]
    assert outcomes(world) == [Outcome(("client",), False, message)]
    assert world.spawns() == [] and world.signals() == []
    assert serving_slots(world) == {1: 4, 2: 2, 3: 3}
    assert world.lifecycle.roll is None
    assert ("respawn", 2) not in world.timers  # slot 2 still has its old copy
    world.take()
    world.restart()  # the next change rolls from slot 1 again
    assert world.spawns() == [6] and world.lifecycle.generations[6].copy == 1


def test_copies_a_new_copy_not_ready_in_time_ends_the_roll() -> None:
    world = copies_world(2, ready_timeout=5.0)
    world.restart()
    world.ready(3)
    world.take()
    world.advance(5.0)
    assert world.logs()[0] == (
        "generation 4 (copy 2) not ready after 5 s; stopping it; "
        "generations 3 (copy 1), 2 (copy 2) keep serving"
    )
    assert world.signals() == [(4, signal.SIGTERM)]
    world.take()
    world.exit(4, TERMINATED)
    assert world.spawns() == []  # its slot's old copy serves: nothing to respawn
    assert serving_slots(world) == {1: 3, 2: 2}


def test_copies_a_spawn_that_fails_during_a_roll_ends_it() -> None:
    world = copies_world(2)
    world.send(Restart(world.now, "control", waiter="client"))
    world.spawn_fails.append("fork: resource temporarily unavailable")
    world.ready(3)
    assert [o.ok for o in outcomes(world)] == [False]
    assert "cannot start generation 4 (copy 2): fork: resource temporarily unavailable" in world.logs()
    assert world.lifecycle.started == 3  # the number is reused by the next start
    assert serving_slots(world) == {1: 3, 2: 2}


def test_copies_triggers_during_a_roll_make_one_more_full_roll() -> None:
    world = copies_world(3)
    world.send(Restart(world.now, "a.py changed", waiter="first"))
    world.take()
    world.ready(4)
    world.send(Restart(world.now, "b.py changed", waiter="second"))
    world.send(Restart(world.now, "c.py changed", waiter="third"))
    world.ready(5)
    world.ready(6)
    assert [(o.waiters, o.ok) for o in outcomes(world)] == [(("first",), True)]
    assert world.spawns() == [5, 6, 7]  # the second roll began at slot 1
    assert "c.py changed during a start: restarting" in world.logs()
    world.take()
    for number in (7, 8, 9):
        world.ready(number)
    assert world.spawns() == [8, 9]
    assert [(o.waiters, o.ok) for o in outcomes(world)] == [(("second", "third"), True)]
    assert serving_slots(world) == {1: 7, 2: 8, 3: 9}
    assert world.lifecycle.restarts == 2


def test_copies_a_restart_during_the_first_start_waits_for_every_copy() -> None:
    world = World(Rules(copies=2))
    world.begin()
    world.ready(1)
    world.restart()
    assert world.spawns() == [1, 2]
    world.take()
    world.ready(2)
    assert world.spawns() == [3]


def test_copies_without_overlap_each_slot_stops_its_old_copy_first() -> None:
    world = copies_world(2, overlap=False)
    world.restart()
    assert world.spawns() == [] and world.signals() == [(1, signal.SIGTERM)]
    world.restart()  # before any new copy started: the copies to come see it too
    assert not world.lifecycle.restart_pending
    world.take()
    world.exit(1, TERMINATED)
    assert world.spawns() == [3]
    assert serving_slots(world) == {2: 2}  # capacity N-1 while slot 1 changes
    world.take()
    world.ready(3)
    assert world.signals() == [(2, signal.SIGTERM)] and world.spawns() == []
    world.restart()  # copy 1 runs code older than this change: one more roll
    assert world.lifecycle.restart_pending
    world.take()
    world.exit(2, TERMINATED)
    world.ready(4)
    assert "2 copies replaced in 0 ms: generations 3, 4 ready; generations 1, 2 told to stop" in (
        world.logs()
    )
    assert world.signals() == [(3, signal.SIGTERM)]  # the next roll has begun
    assert world.lifecycle.restarts == 2


def test_copies_a_crashed_copy_is_replaced_in_its_slot_the_others_serve_on() -> None:
    world = copies_world(3, stable_after=1.0, backoff_initial=0.5)
    world.advance(3.0)
    world.exit(2, KILLED)  # served 3 s: replaced at once
    assert world.spawns() == [4]
    assert world.lifecycle.generations[4].copy == 2
    assert world.logs()[-2:] == [
        ("no generation of copy 2 is serving; generation 2 (copy 2) had served 3.0 s, "
         "so it is replaced at once"),
        "generation 4 (copy 2) started (pid 104)",
    ]
    assert serving_slots(world) == {1: 1, 3: 3}
    world.take()
    world.ready(4)
    world.exit(4, KILLED)  # at once after ready: a crash of slot 2, backed off
    assert world.spawns() == []
    assert world.logs()[-1] == (
        "no generation of copy 2 is serving; starting again in 0.5 s (crash 1 in a row, 0.0 s "
        "after ready)"
    )
    assert world.timers[("respawn", 2)] == world.now + 0.5
    assert world.lifecycle.slot_crashes[2] == 1
    assert serving_slots(world) == {1: 1, 3: 3}
    world.take()
    world.exit(3, EXIT_1)  # another slot: its own count (it had served long: at once)
    assert (world.lifecycle.slot_crashes[2], world.lifecycle.slot_crashes[3]) == (1, 0)
    world.advance(0.5)
    assert world.spawns() == [5, 6]
    assert [world.lifecycle.generations[n].copy for n in (5, 6)] == [3, 2]


def test_copies_a_restart_fills_a_slot_waiting_out_its_backoff() -> None:
    world = copies_world(2, backoff_initial=5.0)
    world.exit(2, KILLED)
    assert ("respawn", 2) in world.timers
    world.take()
    world.restart()
    world.ready(3)
    assert world.spawns() == [3, 4] and world.lifecycle.generations[4].copy == 2
    assert ("respawn", 2) not in world.timers
    world.ready(4)
    assert world.signals() == [(1, signal.SIGTERM)]  # slot 2 had nothing to stop
    assert serving_slots(world) == {1: 3, 2: 4}


def test_copies_a_roll_takes_a_slot_replaced_since_it_began_as_done() -> None:
    world = copies_world(3, stable_after=1.0)
    world.advance(2.0)
    world.send(Restart(world.now, "control", waiter="client"))
    world.exit(3, KILLED)  # slot 3 crashes while slot 1 rolls: replaced at once (generation 5)
    assert world.spawns() == [4, 5]
    world.ready(5)
    world.ready(4)
    world.ready(6)
    assert world.spawns() == [4, 5, 6]  # no copy is started for slot 3 again
    assert serving_slots(world) == {1: 4, 2: 6, 3: 5}
    assert [o.ok for o in outcomes(world)] == [True]


def test_copies_a_roll_waits_for_a_slot_still_starting_since_it_began() -> None:
    world = copies_world(2, stable_after=1.0)
    world.advance(2.0)
    world.send(Restart(world.now, "control", waiter="client"))
    world.exit(2, KILLED)  # replaced at once: generation 4 starts in slot 2
    world.ready(3)
    assert world.spawns() == [3, 4]
    assert outcomes(world) == []
    world.exit(4, EXIT_1)  # the copy the roll waited for fails: the roll's outcome
    assert [o.ok for o in outcomes(world)] == [False]


def test_copies_without_respawn_zocket_exits_when_the_last_copy_has() -> None:
    world = copies_world(2, respawn=False)
    world.exit(1, EXIT_1)
    assert not any(isinstance(a, Exit) for a in world.actions)
    assert world.spawns() == []
    world.exit(2, WaitStatus(3 << 8))
    assert world.actions[-1] == Exit(3)


def test_copies_a_shutdown_during_a_roll_stops_every_copy_and_tells_the_waiters() -> None:
    world = copies_world(2, overlap=False)
    world.send(Restart(world.now, "control", waiter="client"))
    world.send(Shutdown(world.now, signal.SIGTERM))
    assert outcomes(world) == [Outcome(("client",), False, "zocket is stopping")]
    assert sorted(world.signals()) == [(1, signal.SIGTERM), (1, signal.SIGTERM),
                                       (2, signal.SIGTERM)]
    assert CancelTimer(("respawn", 1)) in world.actions
    assert CancelTimer(("respawn", 2)) in world.actions
    world.exit(1, TERMINATED)
    assert world.spawns() == []
    world.exit(2, TERMINATED)
    assert isinstance(world.actions[-1], Exit)


def test_copies_the_backoff_resets_per_slot_once_a_copy_served_stable_after() -> None:
    world = copies_world(2, stable_after=1.0)
    world.exit(2, KILLED)
    world.advance(0.1)
    assert world.lifecycle.crashes == 1
    world.ready(3)
    world.advance(1.0)
    assert world.lifecycle.crashes == 0


# --- across an upgrade -----------------------------------------------------------------------


def test_the_state_survives_json_and_the_rules_carry_on_from_it() -> None:
    import json

    world = serving_world(copies=2)
    world.advance(0.1)
    world.ready(2)
    world.restart()  # a roll under way: slot 1's new copy starts
    world.exit(2, KILLED)  # and slot 2 crashed: its backoff is counting
    saved = json.loads(json.dumps(world.lifecycle.to_state()))
    restored = Lifecycle.from_state(world.lifecycle.rules, saved)
    assert restored.to_state() == saved
    assert restored.roll == world.lifecycle.roll
    assert restored.slot_crashes == world.lifecycle.slot_crashes
    world.lifecycle = restored
    world.take()
    world.ready(3)  # the roll goes on in the restored lifecycle
    assert world.signals() == [(1, signal.SIGTERM)]


def test_a_coalesced_trigger_survives_an_upgrade_and_says_what_it_was() -> None:
    world = serving_world()
    world.restart("a.py changed")
    world.send(Restart(world.now, "SIGHUP"))  # while generation 2 starts
    saved = world.lifecycle.to_state()
    assert saved["restart_pending"] == "SIGHUP"
    world.lifecycle = Lifecycle.from_state(world.lifecycle.rules, saved)
    world.take()
    world.ready(2)
    assert world.spawns() == [3]
    assert "SIGHUP during a start: restarting" in world.logs()


def test_a_state_saved_with_a_bare_pending_flag_still_restarts() -> None:
    world = serving_world()
    world.restart("a.py changed")
    saved = {**world.lifecycle.to_state(), "restart_pending": True}
    world.lifecycle = Lifecycle.from_state(world.lifecycle.rules, saved)
    world.take()
    world.ready(2)
    assert world.spawns() == [3]
    assert "a change during a start: restarting" in world.logs()


def test_a_start_that_cannot_spawn_still_ends_the_reload_for_systemd() -> None:
    world = serving_world()
    world.spawn_fails.append("Resource temporarily unavailable")
    world.restart()
    notifies = [a.state for a in world.actions if isinstance(a, Notify)]
    assert notifies[0].startswith("RELOADING=1")
    assert notifies[-1] == "READY=1\nSTATUS=generation 1 serving"


def test_a_generation_killed_by_a_real_time_signal_is_described() -> None:
    from zocket.lifecycle import describe_exit

    assert describe_exit(WaitStatus(37)) == "signal 37"
    assert describe_exit(KILLED) == "SIGKILL"
