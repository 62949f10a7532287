"""CPU placement: while a restart runs, the serving generation has CPUs of its own.

During a restart a second generation shares the machine with the one that
answers: first it boots (an interpreter starting, imports, workers forking),
then, once it answers, the old one tears down. Traced on two cores, the slow
requests of a restart were serving workers that the kernel woke on the CPU
where a booting or exiting process ran. They sat there runnable for a
millisecond or more, often while the other CPU was idle: the wake-up placement
does not look far when the machine is busy, and the slice rules of
`zocket.slices` only decide who goes first on one CPU.

So the holder splits the CPUs it was given in two halves for the length of a
restart. The serving generation runs on one half; the generation that boots
runs on the other, and so does the holder while it boots (it forks the
generation from there, and its readiness probes run there); later the old
generation stops there. When the new generation becomes the serving one, it
gets every CPU at once: its cold workers take the whole load from then on,
and the old one, now stopping, stays confined to the half it served on, so
that its teardown takes one CPU at most (the halves swap roles). The holder
gets every CPU back too. Should another generation boot before the old one is
gone, the serving one goes back to its half. Once a single generation is left,
every thread zocket moved gets every CPU back.

Only threads that run on every CPU zocket was given are moved (a thread the
server placed itself is left alone, and never widened later), and only threads
still on a half are given the CPUs back. Processes and threads started
meanwhile inherit their parent's half, and are given the CPUs back with the
rest. The holder reads its CPUs when it starts to run: a change of its cpuset
later is not followed.

Nothing depends on it: with one CPU there is nothing to split; a thread that
is gone or changed its credentials (EPERM) is skipped; any other refusal is
raised for the holder to report, once.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from . import readiness

__all__ = ["CpuSplit", "halves"]


def halves(cpus: Iterable[int]) -> tuple[frozenset[int], frozenset[int]] | None:
    """The two halves of ``cpus`` (the larger first), or None with fewer than two CPUs.

    Neighbouring numbers stay together: on most machines they share a cache.
    """
    ordered = sorted(set(cpus))
    if len(ordered) < 2:
        return None
    middle = (len(ordered) + 1) // 2
    return frozenset(ordered[:middle]), frozenset(ordered[middle:])


class CpuSplit:
    """Which half of the CPUs each generation runs on during a restart.

    ``apart`` and ``together`` are idempotent: the holder calls one or the other
    after each turn of its loop, from the lifecycle's state, and only a change
    of that state moves a thread. Every thread moved is remembered, so that the
    CPUs go back to it even once its generation's leader is gone (workers left
    behind), and every thread left alone, so that a server's own placement that
    happens to equal a half is never widened.
    """

    def __init__(self, cpus: Iterable[int]) -> None:
        self.cpus = frozenset(cpus)
        self._halves = halves(self.cpus)
        #: The half of the serving generation, and the half of everything else.
        self.front, self.back = self._halves or (self.cpus, self.cpus)
        #: The serving generation's leader while the CPUs are split, else None.
        self.serving: int | None = None
        #: Whether the serving generation has every CPU (from its ready until a next boot).
        self.serving_whole = False
        #: The other generations' leaders, already on the back half.
        self.others: set[int] = set()
        #: Where the holder's thread is: the back half while a generation boots.
        self.holder = self.cpus
        #: Threads zocket moved, and threads it found placed by the server and left alone.
        self.moved: set[int] = set()
        self.kept: set[int] = set()

    @property
    def possible(self) -> bool:
        return self._halves is not None

    def apart(self, serving: int, others: Iterable[int], booting: bool) -> None:
        """Generation ``serving`` on the front half (on every CPU from its swap until a
        next boot); ``others`` on the back, and the calling thread (the holder) too while
        one of them ``booting``: what it forks then starts there, and its readiness
        probes run there."""
        if self._halves is None:
            return
        others = set(others)
        if self.serving is None:
            self.front, self.back = self._halves  # the larger half serves, whatever came last
            self.serving = serving
            self._move(serving, self.front)
        elif serving != self.serving:
            # The new generation serves on every CPU, from the half it booted on, which
            # becomes the front; the old one stops where it served, now the back. Any
            # third one joins it there.
            old = self.serving
            self.front, self.back = self.back, self.front
            self.serving = serving
            third = self.others - {serving}
            self.others = third | {old}
            for leader in third:
                self._move(leader, self.back, source=self.front)
            self._move(serving, self.cpus, source=self.front)
            self.serving_whole = True
        if booting and self.serving_whole:
            # Another generation boots while the old one still stops: back to the front.
            self._move(serving, self.front, source=self.cpus)
            self.serving_whole = False
        for leader in others - self.others:
            self.others.add(leader)
            self._move(leader, self.back, born_there=True)
        self.others = others
        # Beside a booting generation only: with every CPU once the new one serves, the
        # restarts were better than with the holder kept on the back half (the rows of
        # docs/benchmarks.md's levers).
        holder = self.back if booting else self.cpus
        if holder != self.holder:
            self.holder = holder
            os.sched_setaffinity(0, holder)

    def together(self, leaders: Iterable[int]) -> None:
        """Every CPU back to the threads zocket moved (and to those they started)."""
        if self.serving is None:
            return
        self.serving = None
        self.serving_whole = False
        self.others = set()
        self.holder = self.cpus
        error = _set(0, self.cpus)
        leaders = list(leaders)
        # Again until a pass finds nothing on a half: a process forked during one pass
        # inherited its parent's half, and shows up in the next.
        for _ in range(3):
            found = self.moved.union(*(readiness.threads_of(leader) for leader in leaders))
            back = [tid for tid in found - self.kept if _affinity(tid) in (self.front, self.back)]
            for tid in back:
                error = error or _set(tid, self.cpus)
            if not back:
                break
        self.moved.clear()
        self.kept.clear()
        if error is not None:
            raise error

    def _move(self, leader: int, target: frozenset[int], source: frozenset[int] | None = None,
              *, born_there: bool = False) -> None:
        """Put each thread of ``leader``'s generation that runs on ``source`` (by default
        every CPU zocket was given) on ``target``; the others are left alone, for good,
        but for those already on ``target`` when the generation was ``born_there`` (forked
        by the holder on the back half: they inherited it)."""
        source = self.cpus if source is None else source
        error = None
        for tid in readiness.threads_of(leader):
            mask = _affinity(tid)
            if mask is None:
                continue  # gone
            if mask != source:
                if not (tid in self.moved or (mask == target and born_there)):
                    self.kept.add(tid)  # neither zocket's nor inherited: the server's own
                continue
            failed = _set(tid, target)
            if failed is None:
                self.moved.add(tid)
            error = error or failed
        if error is not None:
            raise error


def _affinity(tid: int) -> frozenset[int] | None:
    """The CPUs thread ``tid`` may run on; None once it is gone."""
    try:
        return frozenset(os.sched_getaffinity(tid))
    except OSError:
        return None


def _set(tid: int, cpus: frozenset[int]) -> OSError | None:
    """Put thread ``tid`` on ``cpus``; the error, unless the thread is gone (ESRCH) or no
    longer zocket's to place (EPERM, changed credentials)."""
    try:
        os.sched_setaffinity(tid, cpus)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.EPERM):
            return exc
    return None
