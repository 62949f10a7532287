"""The holder: keeps the listening sockets open and runs generations of the server on them.

Three layers, each knowing less than the one above it:

- :mod:`zocket.loop` turns fds, timers and signals into callbacks;
- :mod:`zocket.lifecycle` decides, from each event, what should happen;
- this module carries the actions out (spawn, signal, SIGKILL, status file,
  sd_notify, log) and feeds what the world answers back as events.

One restart, as data: SIGHUP (a byte on the signal pipe) -> ``Restart`` ->
``Spawn(N+1)`` -> ``Spawned`` -> ``WatchReadiness`` -> /proc or a notify
message -> ``Ready`` -> ``Signal(N, --stop-signal)`` and a stop-timeout timer
-> N's pidfd is readable -> ``Exited(N)``. Every step is one log line and one
rewrite of the status file.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import libc, readiness, upgrade
from ._hook import _zocket_protocol as protocol
from ._version import __version__
from .activation import notify
from .adoption import Adopter
from .command import expand
from .config import Config
from .control import Client, ControlServer, control_dir
from .files import Identity, remove_if_ours, write_atomically
from .lifecycle import (
    Action,
    CancelTimer,
    Event,
    Exit,
    Exited,
    Generation,
    KillLeftovers,
    Lifecycle,
    Log,
    Notify,
    Outcome,
    Promote,
    Ready,
    Restart,
    SetTimer,
    Shutdown,
    Signal,
    SignalLingering,
    Spawn,
    Spawned,
    SpawnFailed,
    State,
    StopWatching,
    Timeout,
    WatchReadiness,
)
from .listeners import Listener, inherited_listeners, open_listeners, resumed_listener
from .loop import Loop
from .notifications import NotifySocket, trusted
from .placement import CpuSplit
from .quiesce import QuietStops
from .sentry import Sentry
from .slices import DEFAULT, GIVE_WAY, set_generation_slice
from .spawn import Child, SpawnError, spawn
from .upgrade import UpgradeError
from .watch import Watcher, describe

LogFn = Callable[[str], None]

#: Signals zocket passes on to every generation's process group before exiting.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
#: Every signal the holder handles: SIGHUP restarts, SIGUSR2 upgrades zocket itself.
HANDLED = (*FORWARDED, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR2)
#: Put first on the PYTHONPATH of every generation: its sitecustomize loads the hook.
HOOK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_hook")


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
class Process:
    """What the holder keeps of one generation's running process: fds and the readiness watch."""

    child: Child
    notify: NotifySocket
    started_wall: float = field(default_factory=time.time)
    watch: readiness.Watch | None = None
    #: A message that failed the credential check was logged once.
    untrusted_logged: bool = False
    #: Booting at --boot-nice: to be given zocket's own priority when ready.
    niced: bool = False
    #: Started while another generation served: its threads have the longest slice
    #: (zocket.slices) until it is ready.
    giving_way: bool = False


class Holder:
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
        log: LogFn = stderr_log,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        #: The state an older zocket left when it re-executed into this one (upgrade).
        self._resume = resume
        self.log = log
        self._own_listeners = listeners is None
        self.listeners: list[Listener] = list(listeners) if listeners is not None else []
        self.lifecycle = Lifecycle(config.rules())
        self.processes: dict[int, Process] = {}
        #: Process groups (by generation number) whose first process exited while other
        #: members lived on: still to be SIGKILLed after the stop timeout or at exit.
        self._lingering: dict[int, int] = {}
        self._argv: list[str] = []
        self._inodes: frozenset[int] = frozenset()
        self._quiet: QuietStops | None = None
        #: Whether a booting generation is given the longest slice (zocket.slices): where
        #: generations share two CPUs or more (decided in run(), and again if the
        #: placement is refused), never once the kernel refused a slice.
        self._slices = False
        self._slices_refused = False
        #: The CPUs zocket was given, split in halves while a restart runs (zocket.placement);
        #: None with --share-cpus, or once the kernel refused.
        self._cpus: CpuSplit | None = None
        self._loop: Loop | None = None
        self._watcher: Watcher | None = None
        self._changed: list[str] = []
        self._exit_status: int | None = None
        #: After a shutdown began: until when lingering groups may finish (stop timeout).
        self._drain_until: float | None = None
        self._status_written = ""
        self._status_error = ""
        #: What zocket wrote at --pid-file and --status-file: removed at exit only if still there.
        self._pid_file: Identity | None = None
        self._status_file: Identity | None = None
        #: When each generation started, on the wall clock, for the status file.
        self._walls: dict[int, float] = {}
        self._sentry: Sentry | None = None
        self._control: ControlServer | None = None
        #: An upgrade's check of the installed zocket, while it runs, and who asked for it.
        self._preflight: upgrade.Preflight | None = None
        self._preflight_client: Client | None = None
        #: The hint that a server may bind the held port itself was given (once a run).
        self._hinted = False

    # --- public -------------------------------------------------------------------------------

    def open(self) -> list[Listener]:
        """Bind and listen every socket; raises ListenError. Idempotent."""
        if not self.listeners and self._resume is not None:
            self.listeners = [
                resumed_listener(h["name"], h["fd"], _pair(h["unix_file"]))
                for h in self._resume["listeners"]
            ]
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
        # Read here, not at construction: the CPUs of the thread that runs (and forks).
        cpus = os.sched_getaffinity(0)
        if self.config.split_cpus and self.config.copies == 1:
            self._cpus = CpuSplit(cpus)
        # Split apart, generations do not compete for a CPU; on one CPU, a long slice can
        # starve a generation's exit and the holder's wait for it (zocket.slices).
        self._slices = len(cpus) >= 2 and self._cpus is None
        loop = self._loop = Loop()
        try:
            self._argv = expand(self.config.command, self.listeners)
            self._inodes = readiness.socket_inodes(listener.fd for listener in self.listeners)
            self._quiet = QuietStops(
                loop, self.log, [held.fd for held in self.listeners], self._inodes,
                self.config.stop_timeout, subreaper=self.config.reap_orphans,
                hooked=self.config.hook,
            )
            self.lifecycle.holding = self._describe_listeners()
            if self.config.reap_orphans:
                libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
            if self._resume is None:
                self._set_up()
            else:
                self._restore(self._resume)
            if self.config.watch:
                self._watcher = Watcher(self.config.watch, self.config.ignore)
                loop.add_reader(self._watcher.fd, self._on_file_events)
            with loop.signals(HANDLED, self._on_signal):
                if self._resume is None:
                    self._carry_out(self.lifecycle.begin(loop.clock()))
                else:
                    upgrade.unblock(HANDLED)
                    self._resumed(self._resume)
                    for signum in self._resume.get("signals", []):
                        self._on_signal(signum)
                while self._exit_status is None or self._draining(loop):
                    loop.step()
                    self._place()
                    self._write_status()
                return self._exit_status
        finally:
            self._shutdown()

    def _set_up(self) -> None:
        """A fresh start: the pid file, the sentry, the control socket, then the user."""
        if self.config.pid_file:
            try:
                self._pid_file = write_atomically(self.config.pid_file, f"{os.getpid()}\n")
            except OSError as exc:
                raise SetupError(
                    f"cannot write pid file {self.config.pid_file}: {exc.strerror or exc}"
                ) from None
        self._open_control()
        if self.config.user is not None:
            self.config.user.become()
        if self.config.deathsig:
            # After become(): the sentry needs no more than to signal the user's groups.
            self._sentry = Sentry(self.config.deathsig, self.config.stop_timeout)

    # --- upgrade: this process re-executes the installed zocket ------------------------------

    @property
    def _leaving(self) -> bool:
        """Whether zocket is on its way out: told to stop, or its exit status decided."""
        return self.lifecycle.stopping or self._exit_status is not None

    def upgrade(self, client: Client | None = None) -> None:
        """Check the installed zocket, then exec it in this process with the state (in
        `_preflight_done`); on failure, serve on."""
        assert self._loop is not None
        try:
            if self._leaving:
                raise UpgradeError("zocket is stopping")
            if self._preflight is not None:
                raise UpgradeError("an upgrade is already under way")
            preflight = upgrade.Preflight()
        except UpgradeError as exc:
            self._upgrade_failed(exc, client)
            return
        self._preflight, self._preflight_client = preflight, client
        assert preflight.pidfd is not None
        self._loop.add_reader(preflight.pidfd, lambda _fd: self._preflight_done())
        self._loop.set_timer(("upgrade",), upgrade.PREFLIGHT_TIMEOUT, self._preflight_done)

    def _preflight_done(self) -> None:
        """The check ended (or ran out of time): exec, or say why not and serve on."""
        preflight, client = self._preflight, self._preflight_client
        if preflight is None or self._loop is None:
            return
        self._preflight = self._preflight_client = None
        self._loop.cancel_timer(("upgrade",))
        if preflight.pidfd is not None:
            self._loop.remove_reader(preflight.pidfd)
        if client is not None and client.fd < 0:
            client = None  # it went away while it waited: the upgrade goes on without it
        try:
            preflight.finish()
            if self._leaving:
                raise UpgradeError("zocket is stopping")
        except UpgradeError as exc:
            self._upgrade_failed(exc, client)
            return
        self._exec_upgrade(client)

    def _exec_upgrade(self, client: Client | None) -> None:
        """The installed zocket passed its check: hand it everything, in this process."""
        assert self._loop is not None
        self.log(f"upgrading: exec {' '.join(upgrade.command())}")
        mask = upgrade.block(HANDLED)
        caught = self._loop.take_signals()  # caught, not yet handled: they go along
        if self._quiet is not None:
            self._quiet.flush()  # the new image knows nothing of a stop still waiting
        self._place(together=True)  # nor of a split of the CPUs: it takes them as it finds them
        try:
            state, keep = self._snapshot(client)
            state["signals"] = caught
            upgrade.exec_new_image(state, keep)
        except UpgradeError as exc:
            upgrade.restore(mask)
            self._upgrade_failed(exc, client)
            for signum in caught:
                self._on_signal(signum)

    def _upgrade_failed(self, exc: UpgradeError, client: Client | None) -> None:
        message = f"upgrade failed: {exc}" + ("" if self._leaving else "; this zocket keeps running")
        self.log(message)
        if client is not None:
            client.send({"ok": False, "message": message})
            self._drop_client(client)

    def _snapshot(self, client: Client | None) -> tuple[dict[str, Any], list[int]]:
        """What the new image needs, and the fds it needs kept open across exec."""
        assert self._loop is not None
        processes = {
            str(n): {"pid": p.child.pid, "notify": [p.notify.fd, p.notify.name],
                     "seccomp": p.child.seccomp_listener,
                     "started_wall": p.started_wall, "niced": p.niced,
                     "giving_way": p.giving_way}
            for n, p in self.processes.items()
        }
        keep = [listener.fd for listener in self.listeners]
        keep += [p.notify.fd for p in self.processes.values()]
        # Without its listener a generation's next bind() would fail (ENOSYS): it goes along.
        keep += [p.child.seccomp_listener for p in self.processes.values()
                 if p.child.seccomp_listener is not None]
        state: dict[str, Any] = {
            "listeners": [{"fd": h.fd, "name": h.name, "unix_file": h.unix_file}
                          for h in self.listeners],
            "lifecycle": self.lifecycle.to_state(),
            "processes": processes,
            "walls": {str(n): wall for n, wall in self._walls.items()},
            "lingering": {str(n): pgid for n, pgid in self._lingering.items()},
            "pid_file": self._pid_file,
            "status_file": self._status_file,
            # Lifecycle timers only: the probes start again, a debounce is dropped.
            "timers": [[list(key), left] for key, left in self._loop.pending()
                       if isinstance(key, tuple) and key[:1] != ("probe",)],
            "sentry": None,
            "control": None,
            "client": None,
        }
        if self._sentry is not None:
            state["sentry"] = [self._sentry.pid, self._sentry.fd]
            keep.append(self._sentry.fd)
        if self._control is not None:
            state["control"] = [self._control.path, self._control.fd, self._control.identity]
            keep.append(self._control.fd)
        if client is not None:
            state["client"] = client.fd
            keep.append(client.fd)
        return state, keep

    def _restore(self, state: dict[str, Any]) -> None:
        """Take over what the old image left: the same generations, sockets and timers."""
        assert self._loop is not None
        self.lifecycle = Lifecycle.from_state(self.config.rules(), state["lifecycle"])
        self._walls = {int(n): wall for n, wall in state["walls"].items()}
        self._lingering = {int(n): pgid for n, pgid in state["lingering"].items()}
        self._pid_file = _pair(state["pid_file"])
        self._status_file = _pair(state["status_file"])
        if state["sentry"] is not None:
            pid, fd = state["sentry"]
            self._sentry = Sentry(self.config.deathsig, self.config.stop_timeout, (pid, fd))
        if state["control"] is not None:
            path, fd, identity = state["control"]
            self._control = ControlServer(
                path, self._on_control_request, resume=(fd, _pair(identity))
            )
            self._loop.add_reader(self._control.fd, self._on_control_accept)
        # The timers first: a probe below may decide a Ready that cancels one of them.
        for key, left in state["timers"]:
            self._do(SetTimer(tuple(key), left))
        for text, saved in state["processes"].items():
            number = int(text)
            pid = saved["pid"]
            notify_socket = NotifySocket(number, resume=(saved["notify"][0], saved["notify"][1]))
            seccomp = saved.get("seccomp")
            if seccomp is not None:
                libc.set_cloexec(seccomp)
            child = Child(pid, _pidfd(pid), seccomp_listener=seccomp)
            if seccomp is not None:
                self._answer_binds(number, seccomp)
            self.processes[number] = Process(
                child,
                notify_socket,
                saved["started_wall"],
                niced=saved["niced"],
                giving_way=saved.get("giving_way", False),
            )
            self._loop.add_reader(notify_socket.fd, self._notify_reader(number))
            if child.pidfd is not None:
                self._loop.add_reader(child.pidfd, self._on_child_exit)
            generation = self.lifecycle.generations.get(number)
            if generation is not None and generation.state is State.STARTING:
                self._watch(number)

    def _notify_reader(self, number: int) -> Callable[[int], None]:
        return lambda _fd: self._on_notify(number)

    def _resumed(self, state: dict[str, Any]) -> None:
        """Say that the upgrade happened, to the log and to whoever asked for it."""
        serving = self.lifecycle.serving
        message = (
            f"upgraded in place from zocket {state.get('from')} to {__version__} "
            f"(pid {os.getpid()}); "
            + (f"generation {serving.number} serving" if serving else "no generation serving")
        )
        self.log(message)
        self._reap()  # anything that exited while the new image started
        if state["client"] is not None and self._control is not None:
            client = Client(socket.socket(fileno=state["client"]))
            client.sock.set_inheritable(False)
            client.send({"ok": True, "message": message})
            client.sock.close()

    # --- events in ----------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """One event through the rules, and their actions carried out."""
        if isinstance(event, Shutdown) and self._drain_until is None:
            self._drain_until = event.now + self.config.stop_timeout
        self._carry_out(self.lifecycle.handle(event))

    def _draining(self, loop: Loop) -> bool:
        """Whether zocket, its generations gone, still waits for what they left behind.

        On a shutdown every process of a generation's group got the stop signal. Its first
        process may exit at once while its workers still answer their last requests: they
        get the rest of the stop timeout, as at a restart, before the SIGKILL on the way
        out. Without a shutdown (a generation that ended by itself) nothing is waited for.
        """
        if self._drain_until is None or not self._lingering_groups():
            return False
        if loop.clock() >= self._drain_until:
            return False
        # Orphans not reparented to zocket send it no SIGCHLD: look again soon.
        loop.set_timer(("drain",), 0.02, lambda: None)
        return True

    def restart(self, reason: str) -> None:
        """A trigger: start a new generation now, or once the one booting has settled."""
        self.handle(Restart(self._now(), reason))

    def _now(self) -> float:
        return self._loop.clock() if self._loop is not None else time.monotonic()

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self.restart("SIGHUP")
        elif signum in FORWARDED:
            self.handle(Shutdown(self._now(), signum))
        elif signum == signal.SIGCHLD:
            self._reap()
        elif signum == signal.SIGUSR2:
            self.upgrade()

    def _on_child_exit(self, _pidfd: int) -> None:
        self._reap()

    def _on_file_events(self, _fd: int) -> None:
        assert self._watcher is not None and self._loop is not None
        changed = self._watcher.read()
        if not changed:
            return
        self._changed.extend(changed)
        self._loop.set_timer("debounce", self.config.debounce, self._files_settled)

    def _files_settled(self) -> None:
        changed, self._changed = self._changed, []
        self.restart(f"{describe(os.path.relpath(p) for p in changed)} changed")

    def _on_notify(self, number: int) -> None:
        process = self.processes.get(number)
        if process is None:
            return
        messages = process.notify.receive()
        generation = self.lifecycle.generations.get(number)
        if process.watch is None or generation is None or generation.pid is None:
            return  # not booting: nothing a message could decide
        members = readiness.processes_of(generation.pid)
        for message in messages:
            if not trusted(message, members):
                if not process.untrusted_logged:
                    process.untrusted_logged = True
                    self.log(
                        f"ignored a notify message to generation {number} from pid "
                        f"{message.pid} (uid {message.uid}): not one of its processes"
                    )
                continue
            how = process.watch.message(message.text, message.pid)
            if how is not None:
                self.handle(Ready(self._now(), number, how))
                return

    def _reap(self) -> None:
        for number, generation in list(self.lifecycle.generations.items()):
            if generation.alive and generation.pid is not None:
                found = libc.reap(generation.pid)
                if found is not None:
                    self._exited(number, found[1])
        if self.config.reap_orphans:
            # Orphans reparented to us (as subreaper or PID 1): collect, or they stay zombies.
            # waitpid(-1) may also return a generation that exited since the loop above.
            while (found := libc.reap(-1)) is not None:
                if self._preflight is not None and found[0] == self._preflight.pid:
                    self._preflight.exited(found[1])
                for number, generation in list(self.lifecycle.generations.items()):
                    if generation.pid == found[0] and generation.alive:
                        self._exited(number, found[1])
        if self._lingering:
            self._lingering_groups()  # a member of a lingering group may have just gone

    def _exited(self, number: int, status: libc.WaitStatus) -> None:
        process = self.processes.get(number)
        generation = self.lifecycle.generations.get(number)
        self._release(number)
        unadopted = (
            generation is not None and generation.state is State.STARTING
            and process is not None and process.child.seccomp_listener is None
        )
        self.handle(Exited(self._now(), number, status))
        if unadopted:
            self._hint_adoption(number)

    def _hint_adoption(self, number: int) -> None:
        """Once: a generation died before ready while nothing could adopt its own bind()."""
        if self._hinted:
            return
        self._hinted = True
        why = ("adoption is off (--no-adopt)" if not self.config.adopt
               else "adoption is unavailable here (see the line above)")
        ports = ", ".join(str(h.port) for h in self.listeners if h.port is not None)
        self.log(
            f"generation {number} exited before it was ready and {why}: if the server binds "
            f"{'port ' + ports if ports else 'the held address'} itself, it gets 'address "
            "already in use' while zocket holds it; give it the socket on fd 3 (see the "
            "recipes)" + (" or drop --no-adopt" if not self.config.adopt else "")
        )

    def _probe(self, number: int) -> None:
        process = self.processes.get(number)
        if process is None or process.watch is None:
            return
        how = process.watch.check()
        if how is not None:
            self.handle(Ready(self._now(), number, how))
            return
        delay = process.watch.next_check()
        if delay is not None and self._loop is not None:
            self._loop.set_timer(("probe", number), delay, lambda: self._probe(number))

    # --- actions out --------------------------------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            self._do(action)

    def _do(self, action: Action) -> None:
        loop = self._loop
        assert loop is not None
        if isinstance(action, Log):
            self.log(action.line)
        elif isinstance(action, Spawn):
            self._spawn(action)
        elif isinstance(action, WatchReadiness):
            self._watch(action.number)
        elif isinstance(action, StopWatching):
            loop.cancel_timer(("probe", action.number))
            process = self.processes.get(action.number)
            if process is not None:
                process.watch = None
        elif isinstance(action, Promote):
            generation = self.lifecycle.generations.get(action.number)
            process = self.processes.get(action.number)
            if process is not None and process.giving_way:
                process.giving_way = False
                self._default_slice(process.child.pid)
            if generation is not None and process is not None and process.niced:
                process.niced = False
                _renice_group(process.child.pid, os.getpriority(os.PRIO_PROCESS, 0))
        elif isinstance(action, Signal):
            generation = self.lifecycle.generations.get(action.number)
            if generation is not None and generation.pid is not None:
                assert self._quiet is not None
                self._quiet.signal(action.number, generation.pid, action.signum)
        elif isinstance(action, KillLeftovers):
            # By its group, not its record: the lifecycle may have forgotten the generation.
            pgid = self._lingering.get(action.number)
            if pgid is not None and _group_alive(pgid):
                self.log(
                    f"generation {action.number} left processes behind after "
                    f"{action.stop_timeout:g} s: sending SIGKILL"
                )
                _signal_group(pgid, signal.SIGKILL)
        elif isinstance(action, SignalLingering):
            for pgid in self._lingering_groups():
                _signal_group(pgid, action.signum)
        elif isinstance(action, SetTimer):
            key = action.key
            loop.set_timer(key, action.delay, lambda: self.handle(Timeout(self._now(), key)))
        elif isinstance(action, CancelTimer):
            loop.cancel_timer(action.key)
        elif isinstance(action, Notify):
            _sd_notify(action.state)
        elif isinstance(action, Exit):
            self._exit_status = action.status
        elif isinstance(action, Outcome):
            for waiter in action.waiters:
                if isinstance(waiter, Client) and self._control is not None:
                    waiter.send({"ok": action.ok, "message": action.message})
                    self._drop_client(waiter)
        else:
            raise TypeError(f"not an action: {action!r}")

    def _spawn(self, action: Spawn) -> None:
        number = action.number
        notify_socket: NotifySocket | None = None
        # A generation that boots while another serves boots on CPUs of its own, forked by
        # a holder already there (zocket.placement); where they share the CPUs instead (a
        # refused placement among them), it gives way to the serving one (zocket.slices).
        self._place()
        giving_way = self._slices and self.lifecycle.serving is not None
        try:
            notify_socket = NotifySocket(number)
            child = spawn(
                self._argv,
                fds=[listener.fd for listener in self.listeners],
                names=[listener.name for listener in self.listeners],
                env=self.config.env,
                extra_env=self._generation_env(notify_socket.address, number),
                cwd=self.config.cwd,
                deathsig=self.config.deathsig,
                adopt=self.config.adopt,
                slice_ns=GIVE_WAY if giving_way else DEFAULT,
            )
        except (SpawnError, OSError) as exc:
            # fork's EAGAIN under RLIMIT_NPROC, EMFILE: generation N+1 cannot start, and
            # generation N serves on, as when the command itself fails.
            if notify_socket is not None:
                notify_socket.close()
            if action.fatal:
                raise
            reason = str(exc) if isinstance(exc, SpawnError) else (exc.strerror or str(exc))
            self.handle(SpawnFailed(self._now(), number, reason))
            return
        except BaseException:
            if notify_socket is not None:
                notify_socket.close()
            raise
        self.processes[number] = Process(child, notify_socket, giving_way=giving_way)
        if self.config.boot_nice and self.lifecycle.serving is not None and _may_renice():
            # The serving generation keeps the cores while this one boots (its workers,
            # forked later, inherit the value); Promote gives the priority back.
            self.processes[number].niced = _renice_group(
                child.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.config.boot_nice
            )
        if self._sentry is not None:
            self._sentry.watch(child.pid)
        # The wall-clock time of the lifecycle's own start (before the spawn), so that the
        # ready time derived from it is never later than the moment it is read.
        generation = self.lifecycle.generations[number]
        wall = time.time() - (self._now() - generation.started)
        self.processes[number].started_wall = wall
        # Only the generations the lifecycle still keeps: a long run restarts without end.
        self._walls = {n: w for n, w in self._walls.items() if n in self.lifecycle.generations}
        self._walls[number] = wall
        assert self._loop is not None
        self._loop.add_reader(notify_socket.fd, lambda _fd: self._on_notify(number))
        if child.pidfd is not None:
            self._loop.add_reader(child.pidfd, self._on_child_exit)
        if child.seccomp_listener is not None:
            self._answer_binds(number, child.seccomp_listener)
        elif self.config.adopt:
            self.log(
                f"adoption: seccomp user notification unavailable ({os.strerror(child.adopt_error)}"
                f"): generation {number} runs without it"
            )
        self.handle(Spawned(self._now(), number, child.pid))

    def _default_slice(self, leader: int) -> None:
        """The kernel's default slice back to a generation that booted giving way; a kernel
        that refuses is told once, then spared. Even where slices are no longer asked
        for: a holder that upgraded mid-restart may be split where its predecessor was not."""
        if self._slices_refused:
            return
        try:
            set_generation_slice(leader, DEFAULT)
        except OSError as exc:
            self._slices = False
            self._slices_refused = True
            self.log(
                f"CPU slices refused ({exc.strerror or exc}): a booting generation no longer "
                "gives way to the serving one"
            )

    def _place(self, together: bool = False) -> None:
        """The CPUs follow the lifecycle (zocket.placement): split while one generation
        serves and another boots or stops, whole again otherwise."""
        if self._cpus is None:
            return
        serving: list[int] = []
        others: list[int] = []
        for generation in self.lifecycle.alive():
            if generation.pid is not None:
                (serving if generation.state is State.SERVING else others).append(generation.pid)
        booting = self.lifecycle.starting is not None  # about to be spawned, or just was
        try:
            if together or len(serving) != 1 or not (others or booting):
                self._cpus.together(serving + others)
            else:
                self._cpus.apart(serving[0], others, booting)
        except OSError as exc:
            cpus, self._cpus = self._cpus, None
            self._slices = len(cpus.cpus) >= 2 and not self._slices_refused
            self.log(
                f"CPU placement refused ({exc.strerror or exc}): generations now share "
                "every CPU during a restart"
            )
            try:  # as much as the kernel allows, back as it was
                cpus.together(serving + others)
            except OSError:
                pass

    def _answer_binds(self, number: int, listener: int) -> None:
        """The generation's bind()/listen() calls wait on ``listener`` for adoption's answer."""
        assert self._loop is not None
        self._loop.add_reader(listener, Adopter(self.listeners, self.log, number).handle)

    def _watch(self, number: int) -> None:
        generation = self.lifecycle.generations[number]
        assert generation.pid is not None
        self.processes[number].watch = readiness.Watch(
            self.config.ready, generation.pid, self._inodes, self.config.ready_interval
        )
        if self.config.ready.kind != "notify":
            self._probe(number)

    def _generation_env(self, notify_address: str, number: int) -> dict[str, str]:
        env = {
            protocol.NOTIFY_SOCKET: notify_address,
            protocol.GENERATION: str(number),
            protocol.COPY: str(self.lifecycle.generations[number].copy),
        }
        if self.config.user is not None:
            env.update(self.config.user.environment())
        if self.config.hook:
            env[protocol.HELD_FDS] = protocol.format_held_fds(
                (3 + i, os.fstat(held.fd).st_ino) for i, held in enumerate(self.listeners)
            )
            inherited = (self.config.env if self.config.env is not None else os.environ).get(
                "PYTHONPATH"
            )
            env["PYTHONPATH"] = HOOK_DIR + (os.pathsep + inherited if inherited else "")
            env[protocol.STOP_SIGNAL] = str(int(self.config.stop_signal))
            env[protocol.STOP_TIMEOUT] = f"{self.config.stop_timeout:g}"
        return env

    def _release(self, number: int) -> None:
        """Close what an exited generation held; remember its group if members live on."""
        if self._quiet is not None:
            self._quiet.exited(number)
        process = self.processes.pop(number, None)
        if process is None:
            return
        if _group_alive(process.child.pid):
            self._lingering[number] = process.child.pid
        elif self._sentry is not None:
            self._sentry.forget(process.child.pid)
        if self._loop is not None:
            self._loop.cancel_timer(("probe", number))
            self._loop.remove_reader(process.notify.fd)
            if process.child.pidfd is not None:
                self._loop.remove_reader(process.child.pidfd)
            if process.child.seccomp_listener is not None:
                self._loop.remove_reader(process.child.seccomp_listener)
        process.child.close()
        process.notify.close()

    # --- the control socket -------------------------------------------------------------------

    def _open_control(self) -> None:
        """``zocket reload|status|stop`` reach this zocket here; only a given path is a must."""
        path = self.config.control
        if path == "":
            return
        chosen = path or os.path.join(control_dir(), f"{os.getpid()}.sock")
        try:
            self._control = ControlServer(chosen, self._on_control_request)
        except OSError as exc:
            message = f"cannot open control socket {chosen}: {exc.strerror or exc}"
            if path:
                raise SetupError(message) from None
            self.log(f"{message}; zocket reload/status/stop will not reach this zocket")
            return
        assert self._loop is not None
        self._loop.add_reader(self._control.fd, self._on_control_accept)

    def _on_control_accept(self, _fd: int) -> None:
        assert self._control is not None and self._loop is not None
        client = self._control.accept()
        if client is not None:
            self._loop.add_reader(client.fd, lambda _fd: self._on_control_data(client))
        for idle in self._control.idle_beyond():
            idle.send({"ok": False, "message": "too many idle control connections: closed"})
            self._drop_client(idle)

    def _on_control_data(self, client: Client) -> None:
        assert self._control is not None and self._loop is not None
        if not self._control.readable(client):
            self._drop_client(client)
        elif client.muted:
            self._loop.remove_reader(client.fd)

    def _drop_client(self, client: Client) -> None:
        if self._loop is not None:
            self._loop.remove_reader(client.fd)
        if self._control is not None:
            self._control.drop(client)

    def _on_control_request(self, client: Client, request: dict[str, object]) -> None:
        command = request.get("command")
        if command == "status":
            client.send({"ok": True, "status": self.status()})
            self._drop_client(client)
        elif command == "reload":
            self.handle(Restart(self._now(), "reload requested", waiter=client))
        elif command == "upgrade":
            self.upgrade(client)
        elif command == "stop":
            client.send({"ok": True, "message": "stopping", "pid": os.getpid()})
            self.handle(Shutdown(self._now(), signal.SIGTERM))
        else:
            client.send({"ok": False, "message": f"unknown command {command!r}"})
            self._drop_client(client)

    # --- stopping -----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """On the way out: no server may outlive the holder, then release everything."""
        for number, generation in list(self.lifecycle.generations.items()):
            if generation.alive and generation.pid is not None:
                _signal_group(generation.pid, signal.SIGKILL)
                try:
                    _, status = libc.waitpid(generation.pid)
                except ChildProcessError:
                    status = 0  # reaped already, as an orphan
                self._release(number)
                self.lifecycle.handle(Exited(self._now(), number, libc.WaitStatus(status)))
        for pgid in self._lingering_groups():
            _signal_group(pgid, signal.SIGKILL)  # workers their first process left behind
        if self._preflight is not None:
            self._preflight.kill()  # an upgrade's check, still running: moot now
            self._preflight.close()
            self._preflight = None
            if self._preflight_client is not None:
                self._preflight_client.send(
                    {"ok": False, "message": "upgrade failed: zocket is stopping"}
                )
            self._preflight_client = None
        self._place(together=True)  # a holder run in-process leaves its thread as it found it
        if self._sentry is not None:
            self._sentry.close()
            self._sentry = None
        if self._control is not None:
            self._control.close()  # a `zocket stop` waiting on its connection now returns
            self._control = None
        if self.config.reap_orphans:
            while libc.reap(-1) is not None:
                pass
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        if self._watcher is not None:
            self._watcher.close()
        if self._own_listeners:
            for listener in self.listeners:
                listener.close()
        if self.config.pid_file:
            remove_if_ours(self.config.pid_file, self._pid_file)
        if self.config.status_file:
            remove_if_ours(self.config.status_file, self._status_file)

    def _lingering_groups(self) -> list[int]:
        """The lingering groups still alive; the others are forgotten, here and by the
        sentry, before the kernel can give their numbers to someone else's group."""
        for number, pgid in list(self._lingering.items()):
            if not _group_alive(pgid):
                del self._lingering[number]
                if self._sentry is not None:
                    self._sentry.forget(pgid)
        return sorted(self._lingering.values())

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What --status-file holds: the sockets, the generations alive, the counts."""
        lifecycle = self.lifecycle
        shown = [g for g in lifecycle.generations.values() if g.alive]
        last = max(lifecycle.generations.values(), key=lambda g: g.number, default=None)
        if last is not None and not last.alive:
            shown.append(last)

        def state(g: Generation) -> str:
            if not g.alive:
                return "exited"
            return "stopping" if lifecycle.stopping else g.state.value

        def ready(g: Generation) -> float | None:
            if g.ready_at is None or g.number not in self._walls:
                return None
            return self._walls[g.number] + (g.ready_at - g.started)

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
                    "copy": g.copy,
                    "state": state(g),
                    "pid": g.pid,
                    "started": self._walls.get(g.number),
                    "ready": ready(g),
                    "exit_status": g.exit_status.shell_status if g.exit_status else None,
                }
                for g in sorted(shown, key=lambda g: g.number)
            ],
            "copies": lifecycle.rules.copies,
            "restarts": lifecycle.restarts,
            "generations_started": lifecycle.started,
            "stopping": lifecycle.stopping,
            "last_failure": lifecycle.last_failure or None,
            "control": self._control.path if self._control is not None else None,
        }

    def _write_status(self) -> None:
        """Keep --status-file current; a full disk is reported once and never stops the holder."""
        path = self.config.status_file
        if not path:
            return
        text = json.dumps(self.status(), indent=2) + "\n"
        if text == self._status_written:
            return
        try:
            self._status_file = write_atomically(path, text)
        except (OSError, LookupError, ValueError) as exc:
            message = f"cannot write status file {path}: {getattr(exc, 'strerror', None) or exc}"
            if message != self._status_error:
                self.log(message)
                self._status_error = message
            return
        self._status_written = text
        self._status_error = ""

    def _describe_listeners(self) -> str:
        return ", ".join(
            f"{listener.url} ({listener.name}, fd {3 + index})"
            for index, listener in enumerate(self.listeners)
        )


def _sd_notify(state: str) -> None:
    """Tell zocket's own supervisor (systemd), if any; never fail because of it."""
    try:
        notify(state)
    except (OSError, ValueError):
        pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        libc.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # already gone; it will be reaped
    except PermissionError:
        pass  # what is left of it changed its uid: nothing zocket may signal


def _pair(value: object) -> tuple[int, int] | None:
    """A (st_dev, st_ino) identity back from JSON's list."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    return None


def _pidfd(pid: int) -> int | None:
    try:
        return libc.pidfd_open(pid)
    except OSError:
        return None


def _may_renice() -> bool:
    """Whether zocket may give a process its own priority back after lowering it.

    Lowering a nice value needs CAP_SYS_NICE or an RLIMIT_NICE that allows it;
    without either, a generation booted at a lower priority would keep it.
    """
    if os.geteuid() == 0:
        return True
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or 20 - soft <= os.getpriority(os.PRIO_PROCESS, 0)


def _renice_group(pgid: int, value: int) -> bool:
    """Set every thread of a process group to nice ``value``; False if it could not."""
    try:
        os.setpriority(os.PRIO_PGRP, pgid, min(19, value))
    except OSError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any process is left in a generation's process group (its leader may be gone)."""
    try:
        libc.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
