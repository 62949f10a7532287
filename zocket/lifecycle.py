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
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

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
class Lifecycle:
    """The generations and the holder-wide facts the rules need; :meth:`handle` is the API."""

    rules: Rules
    #: Said in the first start line: what is held ("http://127.0.0.1:8000 (http, fd 3)").
    holding: str = ""
    generations: dict[int, Generation] = field(default_factory=dict)
    started: int = 0
    restarts: int = 0
    crashes: int = 0
    stopping: bool = False
    #: A trigger came while a generation was starting: restart once it settles.
    restart_pending: bool = False
    #: No overlap: this generation is stopping so that the next one can start.
    making_way: int | None = None
    #: The generation whose exit status zocket exits with.
    principal: int | None = None
    #: The generation that exited last: its status is zocket's if there is no principal.
    last_exited: int | None = None
    #: Waiters of restarts not yet begun (coalesced, or behind a generation making way).
    waiters: list[Hashable] = field(default_factory=list)
    #: What went wrong last, for the status: "generation 7 failed before ready: exit 1".
    last_failure: str = ""
    exit_status: int | None = None

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

    def last(self) -> Generation | None:
        return self.generations[self.started] if self.started else None

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
        """The first generation; a failure to start it is fatal (nothing ever served)."""
        actions: list[Action] = []
        self._start(now, actions, fatal=True)
        return actions

    # --- rules -----------------------------------------------------------------------------

    def _restart(self, reason: str, now: float, actions: list[Action]) -> None:
        if self.stopping:
            return
        if self.starting is not None:
            self.restart_pending = True
            return
        if self.making_way is not None:
            return  # the generation about to start will see this change too
        actions.append(Log(f"{reason}: restarting"))
        self.restarts += 1
        actions.append(Notify(f"RELOADING=1\nMONOTONIC_USEC={int(now * 1_000_000)}"))
        actions.append(CancelTimer(RESPAWN_TIMER))
        old = self.serving
        if not self.rules.overlap and old is not None:
            self.making_way = old.number
            self._stop(old, self.rules.stop_signal, "making way", now, actions)
            return
        self._start(now, actions)

    def _start(self, now: float, actions: list[Action], fatal: bool = False) -> None:
        self.started += 1
        generation = self.generations[self.started] = Generation(self.started, now)
        generation.waiters, self.waiters = self.waiters, []
        actions.append(Spawn(self.started, fatal))

    def _spawned(self, event: Spawned, actions: list[Action]) -> None:
        generation = self.generations[event.number]
        generation.pid = event.pid
        started = f"generation {generation.number} started (pid {event.pid})"
        if generation.number == 1 and self.holding:
            started = f"holding {self.holding}; {started}"
        actions.append(Log(started))
        actions.append(WatchReadiness(generation.number))
        actions.append(SetTimer(_ready_timer(generation.number), self.rules.ready_timeout))

    def _spawn_failed(self, event: SpawnFailed, actions: list[Action]) -> None:
        # A generation that never ran leaves no record; the next try gets its number.
        generation = self.generations.pop(event.number)
        self.started -= 1
        message = f"cannot start generation {event.number}: {event.message}"
        self.last_failure = message
        actions.append(Log(message))
        self._answer(generation, False, f"{message}; {self._who_serves()}", actions)
        self._after_failure(None, event.now, actions)

    def _ready(self, event: Ready, actions: list[Action]) -> None:
        generation = self.generations.get(event.number)
        if generation is None or generation.state is not State.STARTING or self.stopping:
            return
        generation.state = State.SERVING
        generation.ready_at = event.now
        actions.append(StopWatching(generation.number))
        actions.append(CancelTimer(_ready_timer(generation.number)))
        elapsed = _ms(event.now - generation.started)
        actions.append(Log(f"generation {generation.number} ready in {elapsed} ms ({event.how})"))
        actions.append(SetTimer(_stable_timer(generation.number), self.rules.stable_after))
        replaced = []
        for old in self.generations.values():
            if old.state is State.SERVING and old is not generation:
                self._stop(old, self.rules.stop_signal, "replaced", event.now, actions)
                replaced.append(f"; generation {old.number} was told to stop")
        actions.append(Notify(f"READY=1\nSTATUS=generation {generation.number} serving"))
        self._answer(
            generation, True,
            f"generation {generation.number} ready in {elapsed} ms{''.join(replaced)}", actions,
        )
        self._next_if_pending(event.now, actions)

    def _not_ready(self, generation: Generation, now: float, actions: list[Action]) -> None:
        actions.append(StopWatching(generation.number))
        message = (
            f"generation {generation.number} not ready after "
            f"{self.rules.ready_timeout:g} s; stopping it; {self._who_serves()}"
        )
        actions.append(Log(message))
        self.last_failure = message
        self._answer(generation, False, message, actions)
        self._reload_done(actions)
        generation.respawn_on_exit = self.serving is None
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
            actions.append(Log(f"generation {number} stopped ({how})"))
        elif was is State.STARTING:
            message = f"generation {number} failed before ready: {how}; {self._who_serves()}"
            self.last_failure = message
            actions.append(Log(message))
            self._answer(generation, False, message, actions)
            self._reload_done(actions)
            self._after_failure(generation, event.now, actions)
        elif was is State.SERVING:
            ran = event.now - generation.started
            self.last_failure = f"generation {number} exited unexpectedly ({how}) after {ran:.1f} s"
            actions.append(Log(self.last_failure))
            if self.starting is None:
                self._after_failure(generation, event.now, actions)
        else:
            since = generation.stop_requested or generation.started
            actions.append(Log(
                f"generation {number} stopped ({how}) after {_ms(event.now - since)} ms"
            ))
            if self.making_way == number:
                self.making_way = None
                if not self.stopping:
                    self._start(event.now, actions)
            elif generation.respawn_on_exit and self.serving is None and self.starting is None:
                self._after_failure(generation, event.now, actions)
        if self.stopping and not self.alive():
            self._finish(actions)

    def _after_failure(
        self, generation: Generation | None, now: float, actions: list[Action]
    ) -> None:
        """A generation died (or could not start) with nothing to take over from it."""
        if self.stopping:
            return
        if self.serving is not None:
            self._next_if_pending(now, actions)  # the old one serves on; a later change retries
            return
        if not self.rules.respawn:
            status = generation.exit_status if generation is not None else None
            self.exit_status = status.shell_status if status is not None else 127
            actions.append(Exit(self.exit_status))
            return
        self.restart_pending = False
        served = _served(generation, now)
        if served is not None and served >= self.rules.stable_after:
            self.crashes = 0
            actions.append(Log(
                f"no generation is serving; generation {generation.number} "  # type: ignore[union-attr]
                f"had served {served:.1f} s, so it is replaced at once"
            ))
            self._start(now, actions)
            return
        self.crashes += 1
        delay = min(self.rules.backoff_max, self.rules.backoff_initial * 2 ** (self.crashes - 1))
        why = "before ready" if served is None else f"{served:.1f} s after ready"
        actions.append(Log(
            f"no generation is serving; starting again in {delay:.1f} s "
            f"(crash {self.crashes} in a row, {why})"
        ))
        actions.append(SetTimer(RESPAWN_TIMER, delay))

    def _shutdown(self, event: Shutdown, actions: list[Action]) -> None:
        """Pass a stop signal to every live generation; exit once they are all gone."""
        if not self.stopping:
            self.stopping = True
            actions.append(Notify("STOPPING=1"))
            principal = self.serving or self.starting
            self.principal = principal.number if principal is not None else None
            actions.append(CancelTimer(RESPAWN_TIMER))
        live = self.alive()
        for generation in live:
            self._answer(generation, False, "zocket is stopping", actions)
            self._stop(generation, event.signum, "shutdown", event.now, actions)
        if self.waiters:
            actions.append(Outcome(tuple(self.waiters), False, "zocket is stopping"))
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
        if event.key == RESPAWN_TIMER:
            if not self.stopping and self.starting is None:
                self._start(event.now, actions)
            return
        assert isinstance(event.key, tuple) and len(event.key) == 2
        kind: str = event.key[0]
        number: int = event.key[1]
        generation = self.generations.get(number)
        if kind == "ready-timeout":
            if generation is not None and generation.state is State.STARTING and not self.stopping:
                self._not_ready(generation, event.now, actions)
        elif kind == "stop-timeout":
            if generation is not None and generation.alive:
                actions.append(Log(
                    f"generation {number} did not stop within "
                    f"{self.rules.stop_timeout:g} s: sending SIGKILL"
                ))
                actions.append(Signal(number, signal.SIGKILL))
            else:
                actions.append(KillLeftovers(number, self.rules.stop_timeout))
        elif kind == "stable" and generation is not None and generation.state is State.SERVING:
            self.crashes = 0

    # --- helpers -----------------------------------------------------------------------------

    def _next_if_pending(self, now: float, actions: list[Action]) -> None:
        if self.restart_pending and not self.stopping:
            self.restart_pending = False
            self._restart("changed while starting", now, actions)

    def _answer(
        self, generation: Generation, ok: bool, message: str, actions: list[Action]
    ) -> None:
        if generation.waiters:
            actions.append(Outcome(tuple(generation.waiters), ok, message))
            generation.waiters = []

    def _reload_done(self, actions: list[Action]) -> None:
        """A reload that failed still ends (sd_notify): the old generation serves on."""
        serving = self.serving
        if serving is not None:
            actions.append(Notify(f"READY=1\nSTATUS=generation {serving.number} serving"))

    def _who_serves(self) -> str:
        serving = self.serving
        if serving is not None:
            return f"generation {serving.number} keeps serving"
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
        return signal.Signals(status.signal).name
    return f"exit {status.exit_code}"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def timers_of(actions: Iterable[Action]) -> list[SetTimer]:
    """The timers a list of actions sets (for tests and the status)."""
    return [a for a in actions if isinstance(a, SetTimer)]
