"""CPU time slices: a generation that boots gives way to the one that serves.

During a restart two generations share the cores: the new one boots (an
interpreter starting, imports, workers forking) while the old one answers, and
then the old one tears down while the new one answers. Traced with the kernel's
scheduler events on two cores, the slow requests of a restart were mostly of one
kind: a serving worker, woken by a new connection, waited 1-4 ms in the run queue
behind a booting process of the same priority. Linux's EEVDF scheduler lets the
running task finish its slice before a task that wakes may take the CPU, and
with a 250 Hz tick that slice ends at the next tick.

Since Linux 6.12 a thread may ask for its own slice (0.1 to 100 ms) without
privileges. A task that wakes with a *shorter* slice than the running one's
takes the CPU at once; one with a longer slice never does. The share of CPU each
gets is unchanged: the slice decides who goes first, not who gets more. So the
holder gives a generation the longest slice while it is not the one serving:
from its spawn (the child asks for it before exec, and every process and thread
it starts inherits it) until it is ready. A ready generation's threads get the
kernel's default back. The first generation, with nobody to give way to, is left
as it is. A generation told to stop keeps the default: its exit is where the
hazard below struck, and with the long slice from its stop the restarts were no
better (in 3 paired runs, a little worse).

The holder asks for slices only where generations share two or more CPUs
(``--share-cpus``, ``--copies``). Where zocket splits the CPUs between them
(``zocket.placement``) they do not compete. On one CPU a long slice is a hazard:
traced on Linux 6.18, a generation's last thread, preempted in the middle of its
exit, was never picked again while the holder, reaping the generation, spun in
the kernel (``release_task`` waiting in ``shrink_dcache_parent`` for the /proc
entries that thread was still releasing) and the serving generation took turns
with it: the exit was reported only once the load stopped, 30 s later. It happened for a
generation told to stop (then given the long slice) and for one that died while
booting; with the default slice it never did. Two CPUs or more is where it was not seen, not where it cannot
happen: a CPU quota (cgroup ``cpu.max``) leaves every CPU in the affinity that
decides this, and every run queue may be full.

Nothing depends on it: on an older kernel, or for a thread whose policy has no
slice (real-time, SCHED_IDLE), nothing changes; where the kernel refuses the calls
(a security module), the holder says so once and stops asking. A thread a process starts while
its generation is being reset may keep the long slice: it then only waits its
turn behind the serving ones, as a booting one did.
"""

from __future__ import annotations

import errno

from . import libc, readiness

__all__ = ["DEFAULT", "GIVE_WAY", "set_generation_slice"]

#: The longest slice the kernel grants: a generation with it never preempts one with less.
GIVE_WAY = 100_000_000
#: Ask for the kernel's default slice back.
DEFAULT = 0


def set_generation_slice(leader: int, slice_ns: int) -> int:
    """Give every thread of generation ``leader``'s processes ``slice_ns``; how many took it.

    The processes are those `readiness.processes_of` finds: the leader's descendants
    and its process group. A thread that exits meanwhile, or that changed its
    credentials since (EPERM), is skipped. Any other refusal (a security module's
    EACCES, say) raises OSError: the caller decides whether to try again.
    """
    changed = 0
    for tid in readiness.threads_of(leader):
        try:
            if libc.set_sched_slice(tid, slice_ns):
                changed += 1
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise
    return changed
