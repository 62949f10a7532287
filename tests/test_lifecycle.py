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
    assert "changed while starting: restarting" in world.logs()
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
