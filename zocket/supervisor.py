"""The holder: keeps the listening sockets open and runs generations of the server on them.

One loop, one thread. Signal handlers only record (Python writes the signal
number to a wake-up pipe); child exits arrive as readable pidfds; file
changes as a readable inotify fd; a generation's READY=1 as a datagram on its
notify socket; everything else (readiness checks, debounce, backoff, stop
timeouts) is a timer. Each event is one step of a generation's life and one
log line.

A restart, with overlap (the default):

    trigger -> generation N+1 starts while N serves
            -> N+1 ready: N gets --stop-signal, then SIGKILL after --stop-timeout
            -> N+1 exits or times out before ready: it is stopped, N keeps serving

Triggers that come while N+1 is starting coalesce into one more restart
after it, so the last change is always the one that goes live.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import libc, readiness
from .activation import notify
from .addresses import ListenSpec
from .adoption import Adopter  # kernel adoption (issue 14)
from .command import expand
from .listeners import Listener, UnixPermissions, inherited_listeners, open_listeners
from .readiness import ReadyMode
from .spawn import Child, SpawnError, spawn
from .watch import DEFAULT_IGNORES, Watcher, describe

Log = Callable[[str], None]

#: Signals zocket passes on to every generation's process group before exiting.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
#: Put first on the PYTHONPATH of every generation: its sitecustomize loads the hook.
HOOK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_hook")
#: The line a child sends on its NOTIFY_SOCKET to say "I wait on a held fd" (the hook does).
WAITING_MESSAGE = "ZOCKET_WAITING="


class SetupError(Exception):
    """Something zocket was asked to create could not be; one line for the CLI."""

    exit_status = 2


def stderr_log(line: str) -> None:
    """One line on stderr; a closed or broken stderr must never stop the holder."""
    if sys.stderr is None:  # fd 2 was closed when Python started
        return
    try:
        sys.stderr.write(f"zocket: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


@dataclass
class Config:
    """What to hold and what to run: everything the CLI can say, as data."""

    listen: Sequence[ListenSpec]
    command: Sequence[str]
    backlog: int = libc.SOMAXCONN
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    #: Sent to every generation's process group by the kernel if zocket dies.
    deathsig: int = signal.SIGTERM
    #: How an old generation is asked to stop, and how long it has before SIGKILL.
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    #: Start the new generation before stopping the old one.
    overlap: bool = True
    ready: ReadyMode = field(default_factory=lambda: ReadyMode("auto"))
    ready_timeout: float = 60.0
    #: How often ``--ready auto`` looks at /proc while a generation boots: this often at
    #: first, then less often as the boot goes on (readiness.Probe.interval).
    ready_interval: float = 0.005
    #: Start the server again when it exits by itself; else exit with its status.
    respawn: bool = True
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    #: A generation that served this long resets the backoff.
    stable_after: float = 1.0
    watch: Sequence[str] = ()
    ignore: Sequence[str] = DEFAULT_IGNORES
    debounce: float = 0.02
    #: Make Python servers that bind the held address adopt the held socket (zocket/_hook).
    hook: bool = True
    #: Answer each generation's bind()/listen() of a held address with the held socket, at
    #: the kernel boundary (seccomp user notification; zocket/adoption.py).
    adopt: bool = True
    #: Hold the sockets zocket was itself given through LISTEN_FDS instead of binding.
    inherit: bool = False
    #: Become a child subreaper and reap every orphan (what PID 1 in a container must do).
    #: Only for a process that has no other children: it reaps with waitpid(-1).
    reap_orphans: bool = False
    status_file: str | None = None
    pid_file: str | None = None
    unix_permissions: UnixPermissions = field(default_factory=UnixPermissions)


@dataclass
class Generation:
    """One run of the command on the held sockets."""

    number: int
    child: Child
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    ready_at: float | None = None
    stop_requested: float | None = None
    exited_at: float | None = None
    exit_status: libc.WaitStatus | None = None
    #: Stopped for not being ready with nothing serving: its exit calls for a respawn.
    failed: bool = False
    notify_fd: int = -1
    notify_name: str = ""

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def alive(self) -> bool:
        return self.exit_status is None


@dataclass(order=True)
class _Timer:
    deadline: float
    seq: int
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Supervisor:
    """Hold the sockets of ``config`` and run generations of its command on them.

    ``run()`` is the whole life: open the sockets (unless given), start
    generation 1, restart on SIGHUP, file changes and crashes, stop on
    SIGINT/SIGTERM/SIGQUIT and return the status zocket should exit with.
    Sockets passed in ``listeners`` are the caller's to close.
    """

    def __init__(
        self,
        config: Config,
        *,
        listeners: Sequence[Listener] | None = None,
        log: Log = stderr_log,
    ) -> None:
        self.config = config
        self.log = log
        self._own_listeners = listeners is None
        self.listeners: list[Listener] = list(listeners) if listeners is not None else []
        #: Generations alive, plus the last one that exited (for the status and exit code).
        self.generations: list[Generation] = []
        self._started = 0
        #: Process groups whose first process exited while other members may live on.
        self._lingering: set[int] = set()
        #: The generation taking connections now, and the one booting to replace it.
        self.serving: Generation | None = None
        self.starting: Generation | None = None
        self._argv: list[str] = []
        self._inodes: frozenset[int] = frozenset()
        self._selector: selectors.BaseSelector | None = None
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._restart_pending = False
        self._waiting_for_stop: Generation | None = None
        self._respawn_timer: _Timer | None = None
        self._debounce_timer: _Timer | None = None
        self._changed: list[str] = []
        self._crashes = 0
        self._restarts = 0
        self._status_written = ""
        self._status_error = ""
        self._stopping = False
        self._principal: Generation | None = None
        self._exit_status: int | None = None
        self._watcher: Watcher | None = None

    # --- public -------------------------------------------------------------------------------

    def open(self) -> list[Listener]:
        """Bind and listen every socket; raises ListenError. Idempotent."""
        if not self.listeners:
            if self.config.inherit:
                self.listeners = inherited_listeners(self.config.backlog)
            if not self.listeners:
                self.listeners = open_listeners(
                    self.config.listen, self.config.backlog, self.config.unix_permissions
                )
        return self.listeners

    def run(self) -> int:
        """Serve until told to stop (or, with respawn off, until the server exits)."""
        self.open()
        try:
            self._argv = expand(self.config.command, self.listeners)
            self._inodes = readiness.socket_inodes(listener.fd for listener in self.listeners)
            if self.config.reap_orphans:
                libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
            if self.config.pid_file:
                try:
                    _write_atomically(self.config.pid_file, f"{os.getpid()}\n")
                except OSError as exc:
                    raise SetupError(
                        f"cannot write pid file {self.config.pid_file}: {exc.strerror or exc}"
                    ) from None
            if self.config.watch:
                self._watcher = Watcher(self.config.watch, self.config.ignore)
            with self._signals() as wakeup:
                self._selector = selectors.DefaultSelector()
                self._selector.register(wakeup, selectors.EVENT_READ, self._on_signals)
                if self._watcher is not None:
                    self._selector.register(
                        self._watcher.fd, selectors.EVENT_READ, self._on_file_events
                    )
                first = self._start()
                self.log(
                    f"holding {self._describe_listeners()}; "
                    f"generation {first.number} started (pid {first.pid})"
                )
                while self._exit_status is None:
                    self._step()
                    self._write_status()
                return self._exit_status
        finally:
            self._shutdown()

    # --- the loop --------------------------------------------------------------------------------

    def _step(self) -> None:
        assert self._selector is not None
        for key, _mask in self._selector.select(self._next_timeout()):
            # An earlier handler of this batch may have closed this fd (a generation's exit
            # closes its notify socket): its number may even belong to something else now.
            if self._selector.get_map().get(key.fd) is key:
                key.data(key.fileobj)
        now = time.monotonic()
        while self._timers and (self._timers[0].cancelled or self._timers[0].deadline <= now):
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.action()

    def _next_timeout(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0].deadline - time.monotonic())

    def _call_later(self, delay: float, action: Callable[[], None]) -> _Timer:
        timer = _Timer(time.monotonic() + delay, next(self._seq), action)
        heapq.heappush(self._timers, timer)
        return timer

    # --- events ---------------------------------------------------------------------------------

    def _on_signals(self, wakeup: int) -> None:
        try:
            data = os.read(wakeup, 512)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGHUP:
                self.restart("SIGHUP")
            elif signum in FORWARDED:
                self._begin_stop(signum)
            elif signum == signal.SIGCHLD:
                self._reap()

    def _on_child_exit(self, _pidfd: int) -> None:
        self._reap()

    def _on_file_events(self, _fd: int) -> None:
        assert self._watcher is not None
        changed = self._watcher.read()
        if not changed:
            return
        self._changed.extend(changed)
        if self._debounce_timer is not None:
            self._debounce_timer.cancel()
        self._debounce_timer = self._call_later(self.config.debounce, self._files_settled)

    def _files_settled(self) -> None:
        self._debounce_timer = None
        changed, self._changed = self._changed, []
        self.restart(f"{describe(os.path.relpath(p) for p in changed)} changed")

    def _on_notify(self, fd: int) -> None:
        generation = next((g for g in self.generations if g.notify_fd == fd), None)
        while True:
            try:
                message = libc.read(fd, 4096).decode("utf-8", "replace")
            except BlockingIOError:
                return
            if generation is None or generation is not self.starting:
                continue
            lines = message.splitlines()
            waiting = [line for line in lines if line.startswith(WAITING_MESSAGE)]
            if waiting and self.config.ready.kind in ("auto", "notify"):
                self._ready(generation, f"hook: waiting on fd {waiting[0][len(WAITING_MESSAGE):]}")
            elif "READY=1" in lines and self.config.ready.kind == "notify":
                self._ready(generation, "notify: READY=1")

    def _reap(self) -> None:
        for generation in [g for g in self.generations if g.alive]:
            found = libc.reap(generation.pid)
            if found is not None:
                self._exited(generation, found[1])
        if self.config.reap_orphans:
            # Orphans reparented to us (as subreaper or PID 1): collect, or they stay zombies.
            # waitpid(-1) may also return a generation that exited since the loop above.
            while (found := libc.reap(-1)) is not None:
                for generation in self.generations:
                    if generation.pid == found[0] and generation.alive:
                        self._exited(generation, found[1])

    # --- the life of a generation ------------------------------------------------------------

    def restart(self, reason: str) -> None:
        """A trigger: start a new generation now, or once the one booting has settled."""
        if self._stopping:
            return
        if self.starting is not None:
            self._restart_pending = True
            return
        if self._waiting_for_stop is not None:
            return  # the generation about to start will see this change too
        self.log(f"{reason}: restarting")
        self._restarts += 1
        _sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        if self._respawn_timer is not None:
            self._respawn_timer.cancel()
            self._respawn_timer = None
        if not self.config.overlap and self.serving is not None:
            old = self.serving
            self.serving = None
            self._waiting_for_stop = old
            self._stop(old, self.config.stop_signal)
            return
        self._start_logged()

    def _start(self) -> Generation:
        number = self._started + 1
        notify_fd, notify_name = _open_notify_socket(number)
        try:
            child = spawn(
                self._argv,
                fds=[listener.fd for listener in self.listeners],
                names=[listener.name for listener in self.listeners],
                env=self.config.env,
                extra_env=self._extra_env(notify_name, number),
                cwd=self.config.cwd,
                deathsig=self.config.deathsig,
                adopt=self.config.adopt,  # kernel adoption (issue 14)
            )
        except BaseException:
            libc.close(notify_fd)
            raise
        generation = Generation(number, child, notify_fd=notify_fd, notify_name=notify_name)
        self.generations.append(generation)
        self._started = number
        self.starting = generation
        assert self._selector is not None
        self._selector.register(notify_fd, selectors.EVENT_READ, self._on_notify)
        if child.pidfd is not None:
            self._selector.register(child.pidfd, selectors.EVENT_READ, self._on_child_exit)
        # --- kernel adoption (issue 14): the generation's bind()/listen() wait on this fd.
        if child.seccomp_listener is not None:
            adopter = Adopter(self.listeners, self.log, number)
            self._selector.register(child.seccomp_listener, selectors.EVENT_READ, adopter.handle)
        elif self.config.adopt:
            self.log(
                f"adoption: seccomp user notification unavailable ({os.strerror(child.adopt_error)}"
                f"): generation {number} runs without it"
            )
        # --- end of kernel adoption
        self._watch_readiness(generation)
        return generation

    def _extra_env(self, notify_name: str, number: int) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": notify_name, "ZOCKET_GENERATION": str(number)}
        if self.config.hook:
            # The fds as the server will see them (3, 4, ...), each with its socket's inode.
            env["ZOCKET_HOOK_FDS"] = ",".join(
                f"{3 + i}:{os.fstat(held.fd).st_ino}" for i, held in enumerate(self.listeners)
            )
            inherited = (self.config.env if self.config.env is not None else os.environ).get(
                "PYTHONPATH"
            )
            env["PYTHONPATH"] = HOOK_DIR + (os.pathsep + inherited if inherited else "")
            env["ZOCKET_STOP_SIGNAL"] = str(int(self.config.stop_signal))
            env["ZOCKET_STOP_TIMEOUT"] = f"{self.config.stop_timeout:g}"
        return env

    def _start_logged(self) -> None:
        try:
            generation = self._start()
        except SpawnError as exc:
            self.log(f"cannot start generation {self._started + 1}: {exc}")
            self._after_failure(None)
            return
        self.log(f"generation {generation.number} started (pid {generation.pid})")

    def _watch_readiness(self, generation: Generation) -> None:
        mode = self.config.ready
        if mode.kind == "none":
            self._call_later(0, lambda: self._ready(generation, "none"))
        elif mode.kind == "delay":
            self._call_later(mode.delay, lambda: self._ready(generation, f"delay {mode.delay:g} s"))
        elif mode.kind == "auto":
            probe = readiness.Probe(generation.pid, self._inodes)
            self._call_later(0, lambda: self._probe(generation, probe))
        self._call_later(self.config.ready_timeout, lambda: self._not_ready(generation))

    def _probe(self, generation: Generation, probe: readiness.Probe) -> None:
        if generation is not self.starting:
            return
        waiting = probe.check()
        if waiting is not None:
            self._ready(generation, f"auto: {waiting.describe(generation.pid)}")
        else:
            delay = probe.interval(self.config.ready_interval)
            self._call_later(delay, lambda: self._probe(generation, probe))

    def _ready(self, generation: Generation, how: str) -> None:
        if generation is not self.starting:
            return
        generation.ready_at = time.monotonic()
        self.starting = None
        elapsed = _ms(generation.ready_at - generation.started)
        self.log(f"generation {generation.number} ready in {elapsed} ms ({how})")
        self._call_later(self.config.stable_after, lambda: self._stable(generation))
        old, self.serving = self.serving, generation
        if old is not None and old.alive:
            self._stop(old, self.config.stop_signal)
        _sd_notify(f"READY=1\nSTATUS=generation {generation.number} serving")
        self._next_if_pending()

    def _stable(self, generation: Generation) -> None:
        """A generation that served a while resets the crash backoff."""
        if generation.alive and generation is self.serving:
            self._crashes = 0

    def _not_ready(self, generation: Generation) -> None:
        if generation is not self.starting:
            return
        self.starting = None
        self.log(
            f"generation {generation.number} not ready after "
            f"{self.config.ready_timeout:g} s; stopping it; {self._who_serves()}"
        )
        # With nothing serving, its exit is a failure like any other: respawn with backoff.
        generation.failed = self.serving is None
        self._reload_done()
        self._stop(generation, self.config.stop_signal)
        self._next_if_pending()

    def _reload_done(self) -> None:
        """A reload that failed still ends (sd_notify): the old generation serves on."""
        if self.serving is not None:
            _sd_notify(f"READY=1\nSTATUS=generation {self.serving.number} serving")

    def _next_if_pending(self) -> None:
        if self._restart_pending and not self._stopping:
            self._restart_pending = False
            self.restart("changed while starting")

    def _stop(self, generation: Generation, signum: int) -> None:
        """Ask a generation's process group to stop; SIGKILL it after the stop timeout."""
        if generation.stop_requested is None:
            generation.stop_requested = time.monotonic()
        _signal_group(generation.pid, signum)
        self._call_later(self.config.stop_timeout, lambda: self._kill(generation))

    def _kill(self, generation: Generation) -> None:
        """The stop timeout: SIGKILL whatever is left of the generation's process group."""
        if generation.alive:
            self.log(
                f"generation {generation.number} did not stop within "
                f"{self.config.stop_timeout:g} s: sending SIGKILL"
            )
        elif _group_alive(generation.pid):
            self.log(
                f"generation {generation.number} left processes behind after "
                f"{self.config.stop_timeout:g} s: sending SIGKILL"
            )
        else:
            return
        _signal_group(generation.pid, signal.SIGKILL)

    def _exited(self, generation: Generation, status: libc.WaitStatus) -> None:
        generation.exit_status = status
        generation.exited_at = time.monotonic()
        self._forget(generation)
        ran = generation.exited_at - generation.started
        if self._stopping and generation in (self.starting, self.serving):
            self.starting = None if generation is self.starting else self.starting
            self.serving = None if generation is self.serving else self.serving
            self.log(f"generation {generation.number} stopped ({_describe_exit(status)})")
        elif generation is self.starting:
            self.starting = None
            self.log(
                f"generation {generation.number} failed before ready: "
                f"{_describe_exit(status)}; {self._who_serves()}"
            )
            self._reload_done()
            self._after_failure(generation)
        elif generation is self.serving:
            self.serving = None
            self.log(
                f"generation {generation.number} exited unexpectedly "
                f"({_describe_exit(status)}) after {ran:.1f} s"
            )
            if self.starting is None:
                self._after_failure(generation)
        else:
            since = generation.stop_requested or generation.started
            self.log(
                f"generation {generation.number} stopped ({_describe_exit(status)}) "
                f"after {_ms(generation.exited_at - since)} ms"
            )
            if generation is self._waiting_for_stop:
                self._waiting_for_stop = None
                if not self._stopping:
                    self._start_logged()
            elif generation.failed and self.serving is None and self.starting is None:
                self._after_failure(generation)
        if self._stopping and not any(g.alive for g in self.generations):
            self._finish()

    def _after_failure(self, generation: Generation | None) -> None:
        """A generation died (or could not start) with nothing to take over from it."""
        if self._stopping:
            return
        if self.serving is not None:
            self._next_if_pending()  # the old one serves on; a change made meanwhile retries
            return
        if not self.config.respawn:
            self._exit_status = generation.exit_status.shell_status if (
                generation is not None and generation.exit_status is not None
            ) else 127
            return
        self._crashes += 1  # _stable() set it back to 0 if a generation served long enough
        delay = min(self.config.backoff_max, self.config.backoff_initial * 2 ** (self._crashes - 1))
        self._restart_pending = False
        self.log(f"no generation is serving; starting again in {delay:.1f} s")
        self._respawn_timer = self._call_later(delay, self._respawn)

    def _respawn(self) -> None:
        self._respawn_timer = None
        if not self._stopping and self.starting is None:
            self._start_logged()

    # --- stopping ---------------------------------------------------------------------------------

    def _begin_stop(self, signum: int) -> None:
        """Pass a stop signal to every live generation; exit once they are all gone."""
        if not self._stopping:
            self._stopping = True
            _sd_notify("STOPPING=1")
            self._principal = self.serving or self.starting
            if self._respawn_timer is not None:
                self._respawn_timer.cancel()
        live = [g for g in self.generations if g.alive]
        for generation in live:
            self._stop(generation, signum)
        for pgid in self._lingering_groups():
            _signal_group(pgid, signum)
        if not live:
            self._finish()

    def _finish(self) -> None:
        last = self._principal or (self.generations[-1] if self.generations else None)
        status = last.exit_status if last is not None else None
        self._exit_status = status.shell_status if status is not None else 0

    def _forget(self, generation: Generation) -> None:
        """Release what an exited generation held; keep only the latest exited record."""
        if _group_alive(generation.pid):
            self._lingering.add(generation.pid)
        self.generations = [
            g for g in self.generations if g.alive or g is generation or g is self._principal
        ]
        if self._selector is not None:
            child = generation.child
            # child.seccomp_listener: kernel adoption (issue 14)
            for fd in (child.pidfd, generation.notify_fd, child.seccomp_listener):
                if fd is not None and fd >= 0:
                    self._selector.unregister(fd)
        generation.child.close()
        if generation.notify_fd >= 0:
            libc.close(generation.notify_fd)
            generation.notify_fd = -1

    def _shutdown(self) -> None:
        """On the way out: no server may outlive the holder, then release everything."""
        for generation in self.generations:
            if generation.alive:
                _signal_group(generation.pid, signal.SIGKILL)
                try:
                    _, status = libc.waitpid(generation.pid)
                except ChildProcessError:
                    status = 0  # reaped already, as an orphan
                generation.exit_status = libc.WaitStatus(status)
                self._forget(generation)
        for pgid in self._lingering_groups():
            _signal_group(pgid, signal.SIGKILL)  # workers their first process left behind
        if self.config.reap_orphans:
            while libc.reap(-1) is not None:
                pass
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._watcher is not None:
            self._watcher.close()
        if self._own_listeners:
            for listener in self.listeners:
                listener.close()
        if self.config.pid_file:
            _remove_quietly(self.config.pid_file)
        self._write_status(final=True)

    # --- helpers --------------------------------------------------------------------------------

    @contextmanager
    def _signals(self) -> Iterator[int]:
        """Handlers that only record: the wake-up fd carries the signal numbers to the loop."""
        read_end, write_end = libc.pipe2(libc.O_CLOEXEC | libc.O_NONBLOCK)
        handled = FORWARDED + (signal.SIGHUP, signal.SIGCHLD)
        previous = {signum: signal.signal(signum, _record) for signum in handled}
        old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        try:
            yield read_end
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            libc.close(read_end)
            libc.close(write_end)

    def _lingering_groups(self) -> list[int]:
        self._lingering = {pgid for pgid in self._lingering if _group_alive(pgid)}
        return sorted(self._lingering)

    def status(self) -> dict[str, object]:
        """What --status-file holds: the sockets, the generations alive, the counts."""
        def state(g: Generation) -> str:
            if not g.alive:
                return "exited"
            if self._stopping or g.stop_requested is not None:
                return "stopping"
            if g is self.serving:
                return "serving"
            if g is self.starting:
                return "starting"
            return "stopping"

        return {
            "pid": os.getpid(),
            "sockets": [
                {"name": listener.name, "fd": 3 + index, "address": str(listener.address),
                 "url": listener.url}
                for index, listener in enumerate(self.listeners)
            ],
            "generations": [
                {
                    "number": g.number,
                    "state": state(g),
                    "pid": g.pid,
                    "started": g.started_wall,
                    "ready": g.started_wall + (g.ready_at - g.started) if g.ready_at else None,
                    "exit_status": g.exit_status.shell_status if g.exit_status else None,
                }
                for g in self.generations
                if g.alive or g is self.generations[-1]
            ],
            "restarts": self._restarts,
            "generations_started": self._started,
            "stopping": self._stopping,
        }

    def _write_status(self, final: bool = False) -> None:
        """Keep --status-file current; a full disk is reported once and never stops the holder."""
        path = self.config.status_file
        if not path:
            return
        if final:
            _remove_quietly(path)
            return
        text = json.dumps(self.status(), indent=2) + "\n"
        if text == self._status_written:
            return
        try:
            _write_atomically(path, text)
        except OSError as exc:
            message = f"cannot write status file {path}: {exc.strerror or exc}"
            if message != self._status_error:
                self.log(message)
                self._status_error = message
            return
        self._status_written = text
        self._status_error = ""

    def _who_serves(self) -> str:
        if self.serving is not None:
            return f"generation {self.serving.number} keeps serving"
        return "no generation is serving (connections wait in the backlog)"

    def _describe_listeners(self) -> str:
        return ", ".join(
            f"{listener.url} ({listener.name}, fd {3 + index})"
            for index, listener in enumerate(self.listeners)
        )


def _open_notify_socket(number: int) -> tuple[int, str]:
    """A datagram socket on a fresh abstract name, for one generation's READY=1."""
    fd = libc.socket(libc.AF_UNIX, libc.SOCK_DGRAM | libc.SOCK_CLOEXEC | libc.SOCK_NONBLOCK)
    name = f"zocket/{os.getpid()}/{number}/{os.urandom(4).hex()}"
    try:
        libc.bind(fd, "\0" + name, libc.AF_UNIX)
    except BaseException:
        libc.close(fd)
        raise
    return fd, "@" + name


def _write_atomically(path: str, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _sd_notify(state: str) -> None:
    """Tell zocket's own supervisor (systemd), if any; never fail because of it."""
    try:
        notify(state)
    except (OSError, ValueError):
        pass


def _record(signum: int, frame: object) -> None:
    """The Python-level handler: nothing. The C handler already wrote ``signum`` to the pipe."""


def _signal_group(pgid: int, signum: int) -> None:
    try:
        libc.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # already gone; it will be reaped


def _group_alive(pgid: int) -> bool:
    """Whether any process is left in a generation's process group (its leader may be gone)."""
    try:
        libc.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe_exit(status: libc.WaitStatus) -> str:
    if status.signaled:
        assert status.signal is not None
        return signal.Signals(status.signal).name
    return f"exit {status.exit_code}"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
