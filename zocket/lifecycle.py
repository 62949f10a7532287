"""The rules of a restart, as a pure transition function: events in, actions out.

Nothing here touches a process, a file or a clock. The holder turns what
happens (a SIGHUP, a file change, a child's exit, evidence that a generation
waits for connections, a timer) into an :class:`Event`, hands it to
:meth:`Lifecycle.handle`, and carries out the :class:`Action` list that comes
back, in order. That keeps every rule of the README's "Restarts" section in
this one module, testable in milliseconds with a fake clock.

A generation moves through explicit states::

    starting --ready--> serving --(replaced | told to stop)--> stopping --exit--> stopped
        |                   |
        |                   +--exit (unasked)--> failed
        +--exit, or not ready in time--> failed (via stopping for a timeout)

A restart with overlap (the default): generation N+1 starts while N serves;
when N+1 is ready, N gets the stop signal and SIGKILL after the stop timeout;
if N+1 exits or is not ready in time, N serves on. Triggers that come while
N+1 starts coalesce into one more restart after it, so the last change is
always the one that goes live.

Crashes: a generation that fails before it is ready, or that dies within
``stable_after`` of becoming ready, counts as a crash, and with nothing
serving the next start waits out an exponential backoff. A generation that
served longer than that is not a crash loop: it is replaced at once.

Copies (``Rules.copies`` N > 1, for servers that are one process): N copy
slots, each run by its own generation (own number, pid, readiness and
timers), so every rule above applies per slot. The first start spawns copies
1..N. A restart is a *roll*: the new generation of slot 1 starts; once it is
ready, slot 1's old generation is told to stop and slot 2's new one starts;
and so on. With overlap every slot has a ready copy throughout; without it
(a slot's old copy stops before its new one starts) only the slot being
replaced has none, so capacity never drops below N-1 ready copies. The
restart's outcome comes when the last slot is ready, or at the first new
copy that fails before ready: the roll ends there and the remaining slots
keep their old copies. A roll that reaches a slot whose generation started
after the roll began (a crash replacement: it runs the new code already)
waits for it instead of replacing it. Triggers during a roll coalesce into
one more full roll. The crash and backoff rules are per slot: the others
serve on meanwhile.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .libc import WaitStatus


class State(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


ALIVE = (State.STARTING, State.SERVING, State.STOPPING)


@dataclass
class Generation:
    """One run of the command on the held sockets, as the rules see it."""

    number: int
    started: float
    #: The copy slot (1..Rules.copies) this generation runs in.
    copy: int = 1
    state: State = State.STARTING
    pid: int | None = None
    ready_at: float | None = None
    stop_requested: float | None = None
    exited_at: float | None = None
    exit_status: WaitStatus | None = None
    #: Why it was told to stop: "replaced", "making way", "not ready", "shutdown".
    reason: str = ""
    #: Stopped for not being ready while nothing served: its exit calls for a respawn.
    respawn_on_exit: bool = False
    #: Who waits to hear whether this generation goes live (see Restart.waiter).
    waiters: list[Hashable] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.state in ALIVE


@dataclass(frozen=True)
class Rules:
    """The options that decide a restart (the rest of Config is the effects' business)."""

    overlap: bool = True
    respawn: bool = True
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    ready_timeout: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    stable_after: float = 1.0
    #: How many processes of the command run at once, each in its own copy slot.
    copies: int = 1


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    now: float


@dataclass(frozen=True)
class Restart(Event):
    """SIGHUP, a file change, a control command: start the next generation.

    ``waiter``, if given, is told the outcome (:class:`Outcome`): whether the
    generation that carries this restart became ready, or why not.
    """

    reason: str
    waiter: Hashable | None = None


@dataclass(frozen=True)
class Spawned(Event):
    number: int
    pid: int


@dataclass(frozen=True)
class SpawnFailed(Event):
    number: int
    message: str


@dataclass(frozen=True)
class Ready(Event):
    """Readiness decided that this generation waits for connections."""

    number: int
    how: str


@dataclass(frozen=True)
class Exited(Event):
    number: int
    status: WaitStatus


@dataclass(frozen=True)
class Shutdown(Event):
    """zocket was told to stop (SIGINT, SIGTERM, SIGQUIT): pass it on, exit once all are gone."""

    signum: int


@dataclass(frozen=True)
class Timeout(Event):
    """A timer the lifecycle set with :class:`SetTimer` came due."""

    key: Hashable


# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    pass


@dataclass(frozen=True)
class Spawn(Action):
    """Start generation ``number``; report Spawned or SpawnFailed. ``fatal``: raise instead."""

    number: int
    fatal: bool = False


@dataclass(frozen=True)
class WatchReadiness(Action):
    number: int


@dataclass(frozen=True)
class StopWatching(Action):
    number: int


@dataclass(frozen=True)
class Promote(Action):
    """Generation ``number`` now serves: it gets everything a booting one was denied."""

    number: int


@dataclass(frozen=True)
class Signal(Action):
    """Send ``signum`` to generation ``number``'s process group."""

    number: int
    signum: int


@dataclass(frozen=True)
class KillLeftovers(Action):
    """SIGKILL generation ``number``'s process group if anything is left in it, saying so."""

    number: int
    stop_timeout: float


@dataclass(frozen=True)
class SignalLingering(Action):
    """Pass ``signum`` to process groups whose first process exited but whose others live on."""

    signum: int


@dataclass(frozen=True)
class SetTimer(Action):
    key: Hashable
    delay: float


@dataclass(frozen=True)
class CancelTimer(Action):
    key: Hashable


@dataclass(frozen=True)
class Log(Action):
    line: str


@dataclass(frozen=True)
class Notify(Action):
    """An sd_notify state for zocket's own supervisor (systemd)."""

    state: str


@dataclass(frozen=True)
class Exit(Action):
    status: int


@dataclass(frozen=True)
class Outcome(Action):
    """Tell the waiters of a restart how it ended (``zocket reload`` waits for this)."""

    waiters: tuple[Hashable, ...]
    ok: bool
    message: str


def _ready_timer(number: int) -> tuple[str, int]:
    return ("ready-timeout", number)


def _kill_timer(number: int) -> tuple[str, int]:
    return ("stop-timeout", number)


def _stable_timer(number: int) -> tuple[str, int]:
    return ("stable", number)


RESPAWN_TIMER = ("respawn",)


@dataclass
class Roll:
    """A restart under way: the slots are replaced one at a time, in order."""

    #: The generations numbered above this one started after the roll began: they carry it.
    base: int
    began: float
    #: The slot being replaced now, and the generation the roll waits on to be ready there.
    copy: int = 1
    number: int | None = None
    #: Waiters of this roll while no generation carries them (an old copy making way).
    waiters: list[Hashable] = field(default_factory=list)
    #: The new generations that went live, and the old ones told to stop, for the outcome.
    new: list[int] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)
    #: The last slot's ready message: a single copy's outcome is exactly that.
    message: str = ""


@dataclass
class Lifecycle:
    """The generations and the holder-wide facts the rules need; :meth:`handle` is the API."""

    rules: Rules
    #: Said in the first start line: what is held ("http://127.0.0.1:8000 (http, fd 3)").
    holding: str = ""
    generations: dict[int, Generation] = field(default_factory=dict)
    started: int = 0
    restarts: int = 0
    #: Crashes in a row, per copy slot (a stable generation resets its slot's count).
    slot_crashes: dict[int, int] = field(default_factory=dict)
    stopping: bool = False
    #: What triggered a restart while a generation was starting ("": nothing): restart
    #: once it settles, saying so.
    restart_pending: str = ""
    #: No overlap: this generation is stopping so that the next one can start.
    making_way: int | None = None
    #: The restart under way, slot by slot (see the module docstring).
    roll: Roll | None = None
    #: The generation whose exit status zocket exits with.
    principal: int | None = None
    #: The generation that exited last: its status is zocket's if there is no principal.
    last_exited: int | None = None
    #: Waiters of restarts not yet begun (coalesced, or behind a generation making way).
    waiters: list[Hashable] = field(default_factory=list)
    #: What went wrong last, for the status: "generation 7 failed before ready: exit 1".
    last_failure: str = ""
    exit_status: int | None = None

    # --- across an upgrade (zocket re-executing itself) ---------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything but the rules and the waiters, as JSON-able data."""
        return {
            "holding": self.holding,
            "generations": [
                {
                    **{k: v for k, v in vars(g).items() if k not in ("state", "exit_status",
                                                                     "waiters")},
                    "state": g.state.value,
                    "exit_status": g.exit_status.raw if g.exit_status is not None else None,
                }
                for g in self.generations.values()
            ],
            "slot_crashes": {str(slot): n for slot, n in self.slot_crashes.items()},
            "roll": (
                {k: v for k, v in vars(self.roll).items() if k != "waiters"}
                if self.roll is not None else None
            ),
            **{k: getattr(self, k) for k in (
                "started", "restarts", "stopping", "restart_pending", "making_way",
                "principal", "exit_status", "last_exited", "last_failure",
            )},
        }

    @classmethod
    def from_state(cls, rules: Rules, state: dict[str, Any]) -> Lifecycle:
        """The lifecycle that :meth:`to_state` saved, under ``rules``."""
        data = dict(state)
        generations = {}
        for g in data.pop("generations"):
            g = dict(g)
            status = g.pop("exit_status")
            generation = Generation(**{**g, "state": State(g["state"])})
            generation.exit_status = WaitStatus(status) if status is not None else None
            generations[generation.number] = generation
        crashes = {int(slot): n for slot, n in data.pop("slot_crashes").items()}
        roll = data.pop("roll")
        if isinstance(data.get("restart_pending"), bool):  # an older zocket saved a flag
            data["restart_pending"] = "a change" if data["restart_pending"] else ""
        return cls(
            rules, generations=generations, slot_crashes=crashes,
            roll=Roll(**roll) if roll is not None else None, **data,
        )

    # --- queries ---------------------------------------------------------------------------

    def in_state(self, state: State) -> Generation | None:
        return next((g for g in self.generations.values() if g.state is state), None)

    @property
    def starting(self) -> Generation | None:
        return self.in_state(State.STARTING)

    @property
    def serving(self) -> Generation | None:
        return self.in_state(State.SERVING)

    def alive(self) -> list[Generation]:
        return [g for g in self.generations.values() if g.alive]

    @property
    def crashes(self) -> int:
        """Crashes in a row of the slot with the most (the only slot with one copy)."""
        return max(self.slot_crashes.values(), default=0)

    def in_slot(self, copy: int, state: State) -> Generation | None:
        return next(
            (g for g in self.generations.values() if g.copy == copy and g.state is state), None
        )

    def name(self, generation: Generation) -> str:
        """How log lines call a generation: its number, and its copy when there are several."""
        if self.rules.copies == 1:
            return f"generation {generation.number}"
        return f"generation {generation.number} (copy {generation.copy})"

    # --- the transition function -------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; the actions to carry out, in order."""
        actions: list[Action] = []
        if isinstance(event, Restart):
            if event.waiter is not None:
                if self.stopping:
                    actions.append(Outcome((event.waiter,), False, "zocket is stopping"))
                else:
                    self.waiters.append(event.waiter)
            self._restart(event.reason, event.now, actions)
        elif isinstance(event, Spawned):
            self._spawned(event, actions)
        elif isinstance(event, SpawnFailed):
            self._spawn_failed(event, actions)
        elif isinstance(event, Ready):
            self._ready(event, actions)
        elif isinstance(event, Exited):
            self._exited(event, actions)
        elif isinstance(event, Shutdown):
            self._shutdown(event, actions)
        elif isinstance(event, Timeout):
            self._timeout(event, actions)
        else:
            raise TypeError(f"not a lifecycle event: {event!r}")
        self._forget_old()
        return actions

    def begin(self, now: float) -> list[Action]:
        """The first generation of every copy slot; a failure to start one is fatal (nothing
        ever served)."""
        actions: list[Action] = []
        for copy in range(1, self.rules.copies + 1):
            self._start(copy, now, actions, fatal=True)
        return actions

    # --- rules -----------------------------------------------------------------------------

    def _restart(self, reason: str, now: float, actions: list[Action]) -> None:
        if self.stopping:
            return
        if self.starting is not None:
            self.restart_pending = reason
            return
        if self.making_way is not None:
            assert self.roll is not None
            if self.roll.new:  # copies already replaced did not see this change
                self.restart_pending = reason
            else:  # the generations about to start will see this change too
                self.roll.waiters += self.waiters
                self.waiters = []
            return
        actions.append(Log(f"{reason}: restarting"))
        self.restarts += 1
        actions.append(Notify(f"RELOADING=1\nMONOTONIC_USEC={int(now * 1_000_000)}"))
        self.roll = Roll(self.started, now, waiters=self.waiters)
        self.waiters = []
        self._roll_slot(1, now, actions)

    def _roll_slot(self, copy: int, now: float, actions: list[Action]) -> None:
        """Replace slot ``copy``: start its new generation, or stop the old one first."""
        roll = self.roll
        assert roll is not None
        roll.copy = copy
        roll.number = None
        starting = self.in_slot(copy, State.STARTING)
        if starting is not None:  # a crash replacement, begun since the roll: it carries it
            roll.number = starting.number
            starting.waiters += roll.waiters
            roll.waiters = []
            return
        old = self.in_slot(copy, State.SERVING)
        if old is not None and old.number > roll.base:
            self._roll_next(now, actions)  # replaced since the roll began: new already
            return
        actions.append(CancelTimer(self._respawn_timer(copy)))
        if not self.rules.overlap and old is not None:
            self.making_way = old.number
            roll.replaced.append(old.number)
            self._stop(old, self.rules.stop_signal, "making way", now, actions)
            return
        self._start(copy, now, actions)

    def _roll_next(self, now: float, actions: list[Action]) -> None:
        """The roll's slot is done: on to the next one, or the restart is over."""
        roll = self.roll
        assert roll is not None
        if roll.copy < self.rules.copies:
            self._roll_slot(roll.copy + 1, now, actions)
            return
        self.roll = None
        actions.append(Notify(f"READY=1\nSTATUS={self._serving_status()}"))
        if self.rules.copies == 1:
            message = roll.message
        else:
            message = (
                f"{self.rules.copies} copies replaced in {_ms(now - roll.began)} ms: "
                f"{_numbers(roll.new)} ready"
            )
            if roll.replaced:
                message += f"; {_numbers(roll.replaced)} told to stop"
            actions.append(Log(message))
        if roll.waiters:
            actions.append(Outcome(tuple(roll.waiters), True, message))
        self._next_if_pending(now, actions)

    def _end_roll(self, generation: Generation, actions: list[Action]) -> None:
        """A new copy failed before ready: the roll ends, the slots after it keep their copies."""
        roll = self.roll
        if roll is None or roll.number != generation.number:
            return
        self.roll = None
        if self.rules.copies > 1:
            actions.append(Log(
                f"the restart stops at copy {roll.copy} of {self.rules.copies}; "
                "the copies after it keep the generations they had"
            ))

    def _start(
        self, copy: int, now: float, actions: list[Action], fatal: bool = False
    ) -> None:
        self.started += 1
        generation = self.generations[self.started] = Generation(self.started, now, copy)
        roll = self.roll
        if roll is not None and roll.copy == copy and roll.number is None:
            roll.number = generation.number
            generation.waiters, roll.waiters = roll.waiters, []
        elif roll is None and not self.restart_pending:
            # Waiters of a restart that a respawn absorbed: this generation carries it.
            generation.waiters, self.waiters = self.waiters, []
        actions.append(Spawn(self.started, fatal))

    def _respawn_timer(self, copy: int) -> tuple[str] | tuple[str, int]:
        return RESPAWN_TIMER if self.rules.copies == 1 else ("respawn", copy)

    def _spawned(self, event: Spawned, actions: list[Action]) -> None:
        generation = self.generations[event.number]
        generation.pid = event.pid
        started = f"{self.name(generation)} started (pid {event.pid})"
        if generation.number == 1 and self.holding:
            started = f"holding {self.holding}; {started}"
        actions.append(Log(started))
        actions.append(WatchReadiness(generation.number))
        actions.append(SetTimer(_ready_timer(generation.number), self.rules.ready_timeout))

    def _spawn_failed(self, event: SpawnFailed, actions: list[Action]) -> None:
        # A generation that never ran leaves no record; the next try gets its number.
        generation = self.generations.pop(event.number)
        if event.number == self.started:
            self.started -= 1
        message = f"cannot start {self.name(generation)}: {event.message}"
        self.last_failure = message
        actions.append(Log(message))
        self._answer(generation, False, f"{message}; {self._who_serves()}", actions)
        self._reload_done(actions)  # systemd's RELOADING=1 ends, as for any failed start
        self._end_roll(generation, actions)
        self._after_failure(None, generation.copy, event.now, actions)

    def _ready(self, event: Ready, actions: list[Action]) -> None:
        generation = self.generations.get(event.number)
        if generation is None or generation.state is not State.STARTING or self.stopping:
            return
        generation.state = State.SERVING
        generation.ready_at = event.now
        actions.append(StopWatching(generation.number))
        actions.append(CancelTimer(_ready_timer(generation.number)))
        actions.append(Promote(generation.number))
        elapsed = _ms(event.now - generation.started)
        name = self.name(generation)
        actions.append(Log(f"{name} ready in {elapsed} ms ({event.how})"))
        actions.append(SetTimer(_stable_timer(generation.number), self.rules.stable_after))
        replaced = []
        for old in self.generations.values():
            if old.state is State.SERVING and old is not generation and old.copy == generation.copy:
                self._stop(old, self.rules.stop_signal, "replaced", event.now, actions)
                replaced.append(old)
        message = f"{name} ready in {elapsed} ms" + "".join(
            f"; {self.name(old)} was told to stop" for old in replaced
        )
        roll = self.roll
        if roll is not None and roll.number == generation.number:
            roll.new.append(generation.number)
            roll.replaced += [old.number for old in replaced]
            roll.waiters, generation.waiters = roll.waiters + generation.waiters, []
            roll.message = message
            self._roll_next(event.now, actions)
            return
        if roll is None:  # during a roll, systemd hears READY=1 when the roll is over
            actions.append(Notify(f"READY=1\nSTATUS={self._serving_status()}"))
        self._answer(generation, True, message, actions)
        self._next_if_pending(event.now, actions)

    def _not_ready(self, generation: Generation, now: float, actions: list[Action]) -> None:
        actions.append(StopWatching(generation.number))
        message = (
            f"{self.name(generation)} not ready after "
            f"{self.rules.ready_timeout:g} s; stopping it; {self._who_serves()}"
        )
        actions.append(Log(message))
        self.last_failure = message
        self._answer(generation, False, message, actions)
        self._end_roll(generation, actions)
        self._reload_done(actions)
        generation.respawn_on_exit = self.in_slot(generation.copy, State.SERVING) is None
        self._stop(generation, self.rules.stop_signal, "not ready", now, actions)
        self._next_if_pending(now, actions)

    def _stop(
        self, generation: Generation, signum: int, reason: str, now: float, actions: list[Action]
    ) -> None:
        """Ask a generation's process group to stop; SIGKILL it after the stop timeout."""
        if generation.state is State.STARTING:
            actions.append(StopWatching(generation.number))
            actions.append(CancelTimer(_ready_timer(generation.number)))
        generation.state = State.STOPPING
        generation.reason = generation.reason or reason
        actions.append(Signal(generation.number, signum))
        if generation.stop_requested is None:  # the first request's deadline holds
            generation.stop_requested = now
            actions.append(SetTimer(_kill_timer(generation.number), self.rules.stop_timeout))

    def _exited(self, event: Exited, actions: list[Action]) -> None:
        generation = self.generations.get(event.number)
        if generation is None or not generation.alive:
            return
        was = generation.state
        generation.exit_status = event.status
        generation.exited_at = event.now
        number = generation.number
        name = self.name(generation)
        copy = generation.copy
        self.last_exited = number
        how = describe_exit(event.status)
        if was is State.STOPPING:
            generation.state = State.FAILED if generation.reason == "not ready" else State.STOPPED
        else:
            generation.state = State.FAILED
        if was is State.STARTING:
            actions.append(StopWatching(number))
            actions.append(CancelTimer(_ready_timer(number)))
        if generation.reason == "shutdown":
            actions.append(Log(f"{name} stopped ({how})"))
        elif was is State.STARTING:
            message = f"{name} failed before ready: {how}; {self._who_serves()}"
            self.last_failure = message
            actions.append(Log(message))
            self._answer(generation, False, message, actions)
            self._end_roll(generation, actions)
            self._reload_done(actions)
            self._after_failure(generation, copy, event.now, actions)
        elif was is State.SERVING:
            ran = event.now - generation.started
            self.last_failure = f"{name} exited unexpectedly ({how}) after {ran:.1f} s"
            actions.append(Log(self.last_failure))
            if self.in_slot(copy, State.STARTING) is None:  # else that one takes over
                self._after_failure(generation, copy, event.now, actions)
        else:
            since = generation.stop_requested or generation.started
            actions.append(Log(f"{name} stopped ({how}) after {_ms(event.now - since)} ms"))
            if self.making_way == number:
                self.making_way = None
                if not self.stopping:
                    self._start(copy, event.now, actions)
            elif (
                generation.respawn_on_exit
                and self.in_slot(copy, State.SERVING) is None
                and self.in_slot(copy, State.STARTING) is None
            ):
                self._after_failure(generation, copy, event.now, actions)
        if self.stopping and not self.alive():
            self._finish(actions)

    def _after_failure(
        self, generation: Generation | None, copy: int, now: float, actions: list[Action]
    ) -> None:
        """A generation of slot ``copy`` died (or could not start) with nothing to take over."""
        if self.stopping:
            return
        if self.in_slot(copy, State.SERVING) is not None:
            self._next_if_pending(now, actions)  # the old one serves on; a later change retries
            return
        others = self.serving is not None or self.starting is not None  # other slots
        if not self.rules.respawn:
            if others:
                return  # the other copies serve on; zocket exits with the last of them
            status = generation.exit_status if generation is not None else None
            self.exit_status = status.shell_status if status is not None else 127
            actions.append(Exit(self.exit_status))
            return
        if not others:
            self.restart_pending = ""  # what starts now runs the latest code anyway
        nothing = (
            "no generation is serving" if self.rules.copies == 1
            else f"no generation of copy {copy} is serving"
        )
        served = _served(generation, now)
        if generation is not None and served is not None and served >= self.rules.stable_after:
            self.slot_crashes[copy] = 0
            actions.append(Log(
                f"{nothing}; {self.name(generation)} "
                f"had served {served:.1f} s, so it is replaced at once"
            ))
            self._start(copy, now, actions)
            return
        crashes = self.slot_crashes[copy] = self.slot_crashes.get(copy, 0) + 1
        delay = min(self.rules.backoff_max, self.rules.backoff_initial * 2 ** (crashes - 1))
        why = "before ready" if served is None else f"{served:.1f} s after ready"
        actions.append(Log(
            f"{nothing}; starting again in {delay:.1f} s "
            f"(crash {crashes} in a row, {why})"
        ))
        actions.append(SetTimer(self._respawn_timer(copy), delay))
        self._next_if_pending(now, actions)  # with other copies serving, a roll may go on

    def _shutdown(self, event: Shutdown, actions: list[Action]) -> None:
        """Pass a stop signal to every live generation; exit once they are all gone."""
        if not self.stopping:
            self.stopping = True
            actions.append(Notify("STOPPING=1"))
            principal = self.serving or self.starting
            self.principal = principal.number if principal is not None else None
            for copy in range(1, self.rules.copies + 1):
                actions.append(CancelTimer(self._respawn_timer(copy)))
        live = self.alive()
        for generation in live:
            self._answer(generation, False, "zocket is stopping", actions)
            self._stop(generation, event.signum, "shutdown", event.now, actions)
        waiting = self.waiters
        if self.roll is not None:
            waiting = self.roll.waiters + waiting
            self.roll = None
        if waiting:
            actions.append(Outcome(tuple(waiting), False, "zocket is stopping"))
        self.waiters = []
        actions.append(SignalLingering(event.signum))
        if not live:
            self._finish(actions)

    def _finish(self, actions: list[Action]) -> None:
        number = self.principal if self.principal is not None else self.last_exited
        last = self.generations.get(number) if number is not None else None
        status = last.exit_status if last is not None else None
        self.exit_status = status.shell_status if status is not None else 0
        actions.append(Exit(self.exit_status))

    def _timeout(self, event: Timeout, actions: list[Action]) -> None:
        assert isinstance(event.key, tuple)
        if event.key[0] == "respawn":
            copy: int = event.key[1] if len(event.key) > 1 else 1
            if not self.stopping and self.in_slot(copy, State.STARTING) is None:
                self._start(copy, event.now, actions)
            return
        assert len(event.key) == 2
        kind: str = event.key[0]
        number: int = event.key[1]
        generation = self.generations.get(number)
        if kind == "ready-timeout":
            if generation is not None and generation.state is State.STARTING and not self.stopping:
                self._not_ready(generation, event.now, actions)
        elif kind == "stop-timeout":
            if generation is not None and generation.alive:
                actions.append(Log(
                    f"{self.name(generation)} did not stop within "
                    f"{self.rules.stop_timeout:g} s: sending SIGKILL"
                ))
                actions.append(Signal(number, signal.SIGKILL))
            else:
                actions.append(KillLeftovers(number, self.rules.stop_timeout))
        elif kind == "stable" and generation is not None and generation.state is State.SERVING:
            self.slot_crashes[generation.copy] = 0

    # --- helpers -----------------------------------------------------------------------------

    def _next_if_pending(self, now: float, actions: list[Action]) -> None:
        """The coalesced restart, once nothing starts and no roll is under way."""
        busy = self.roll is not None or self.starting is not None or self.making_way is not None
        if self.restart_pending and not self.stopping and not busy:
            reason, self.restart_pending = self.restart_pending, ""
            self._restart(f"{reason} during a start", now, actions)

    def _answer(
        self, generation: Generation, ok: bool, message: str, actions: list[Action]
    ) -> None:
        if generation.waiters:
            actions.append(Outcome(tuple(generation.waiters), ok, message))
            generation.waiters = []

    def _reload_done(self, actions: list[Action]) -> None:
        """A reload that failed still ends (sd_notify): the old generation serves on."""
        if self.serving is not None:
            actions.append(Notify(f"READY=1\nSTATUS={self._serving_status()}"))

    def _serving(self) -> list[Generation]:
        return sorted(
            (g for g in self.generations.values() if g.state is State.SERVING),
            key=lambda g: g.copy,
        )

    def _serving_status(self) -> str:
        """The sd_notify STATUS: "generation 5 serving", "generations 4, 6, 7 serving"."""
        return f"{_numbers(g.number for g in self._serving())} serving"

    def _who_serves(self) -> str:
        serving = self._serving()
        if len(serving) == 1:
            return f"{self.name(serving[0])} keeps serving"
        if serving:
            return f"generations {', '.join(_copy_of(g) for g in serving)} keep serving"
        return "no generation is serving (connections wait in the backlog)"

    def _forget_old(self) -> None:
        """Keep the generations alive, the latest one and the principal; drop the rest."""
        keep = {self.started, self.principal, self.last_exited}
        for number in [n for n, g in self.generations.items() if not g.alive and n not in keep]:
            del self.generations[number]


def _served(generation: Generation | None, now: float) -> float | None:
    """How long a generation served before it died; None if it never was ready."""
    if generation is None or generation.ready_at is None:
        return None
    end = generation.exited_at if generation.exited_at is not None else now
    return end - generation.ready_at


def describe_exit(status: WaitStatus) -> str:
    if status.signaled:
        assert status.signal is not None
        try:
            return signal.Signals(status.signal).name
        except ValueError:  # a real-time signal has no name in the enum
            return f"signal {status.signal}"
    return f"exit {status.exit_code}"


def _numbers(numbers: Iterable[int]) -> str:
    """``generation 5`` or ``generations 4, 6, 7``."""
    listed = [str(n) for n in numbers]
    return f"generation{'s' if len(listed) != 1 else ''} {', '.join(listed)}"


def _copy_of(generation: Generation) -> str:
    return f"{generation.number} (copy {generation.copy})"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
