"""What to hold and what to run: everything the CLI can say, as data.

The CLI's defaults are read from here, so that each default is written once.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import libc
from ._hook import _zocket_protocol as protocol
from .addresses import ListenSpec
from .identity import User
from .lifecycle import Rules
from .listeners import UnixPermissions
from .readiness import ReadyMode
from .watch import DEFAULT_IGNORES

#: ``--ready``'s default (ReadyMode is frozen, so one instance serves every Config).
DEFAULT_READY = ReadyMode("auto")


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
    stop_timeout: float = protocol.DEFAULT_STOP_TIMEOUT
    #: Start the new generation before stopping the old one.
    overlap: bool = True
    #: How many processes of the command serve at once (each a generation of its own slot);
    #: a restart replaces them one at a time.
    copies: int = 1
    ready: ReadyMode = DEFAULT_READY
    ready_timeout: float = 60.0
    #: How often ``--ready auto`` looks at /proc while a generation boots: this often at
    #: first, then less often as the boot goes on (readiness.Probe.interval).
    ready_interval: float = 0.025
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
    #: The control socket (``zocket reload|status|stop``): None for the default path in
    #: control.control_dir(), "" for none.
    control: str | None = None
    #: Run the holder and every generation as this user once the sockets are held.
    user: User | None = None
    #: Boot a generation that overlaps a serving one at this nice value (0: as zocket),
    #: and give it zocket's priority once it is ready (only where zocket may raise it back).
    boot_nice: int = 0
    #: While a restart runs, keep the serving generation on half of zocket's CPUs and the
    #: other generation on the other half (zocket.placement); False: share them all.
    split_cpus: bool = True
    pid_file: str | None = None
    unix_permissions: UnixPermissions = field(default_factory=UnixPermissions)

    def rules(self) -> Rules:
        """The part of the configuration that decides restarts (the lifecycle's)."""
        return Rules(
            overlap=self.overlap,
            respawn=self.respawn,
            stop_signal=self.stop_signal,
            stop_timeout=self.stop_timeout,
            ready_timeout=self.ready_timeout,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            stable_after=self.stable_after,
            copies=self.copies,
        )
