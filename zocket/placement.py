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
restart. The serving generation runs on one half; everything else of the
restart runs on the other: the generation that boots, later the one that
stops, and the holder itself (its fork of the new generation, its readiness
probes). When the new generation becomes the serving one, nothing moves: it
already has its half, and the old one, now stopping, has the other, so the
halves swap roles and only the holder changes sides. Once a single generation
is left, every thread zocket moved gets every CPU back.

Only threads that run on every CPU zocket was given are moved (a thread the
server placed itself is left alone), and only threads still on the half zocket
put them on are given the CPUs back. Processes and threads started meanwhile
inherit their parent's half, and are given the CPUs back with the rest.
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


def _threads(leader: int) -> list[int]:
    """Every thread of every process of the generation led by ``leader``."""
    tids: list[int] = []
    for pid in readiness.processes_of(leader):
        try:
            tids.extend(int(name) for name in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue  # exited meanwhile
    return tids


def _move(leader: int, source: frozenset[int], target: frozenset[int]) -> None:
    """Put each thread of ``leader``'s generation that runs on ``source`` on ``target``."""
    for tid in _threads(leader):
        try:
            if os.sched_getaffinity(tid) == source:
                os.sched_setaffinity(tid, target)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise


class CpuSplit:
    """Which half of the CPUs each generation, and the holder, runs on during a restart.

    ``apart`` and ``together`` are idempotent: the holder calls one or the other
    after each turn of its loop, from the lifecycle's state, and only a change
    of that state moves a thread.
    """

    def __init__(self, cpus: Iterable[int]) -> None:
        self.cpus = frozenset(cpus)
        split = halves(self.cpus)
        #: The half of the serving generation, and the half of everything else.
        self.front, self.back = split if split is not None else (self.cpus, self.cpus)
        #: The serving generation's leader while the CPUs are split, else None.
        self.serving: int | None = None
        #: The other generations' leaders, already on the back half.
        self.others: set[int] = set()

    @property
    def possible(self) -> bool:
        return self.front != self.back

    def apart(self, serving: int, others: Iterable[int]) -> None:
        """Generation ``serving`` on the front half; ``others`` and the holder on the back."""
        if not self.possible:
            return
        others = set(others)
        if self.serving is None:
            os.sched_setaffinity(0, self.back)  # first: what it forks from now on starts there
            _move(serving, self.cpus, self.front)
        elif serving != self.serving:
            # The new generation serves: it is on the back half, which becomes the front.
            self.front, self.back = self.back, self.front
            os.sched_setaffinity(0, self.back)
            self.others.add(self.serving)  # the old one is where the others belong now
            self.others.discard(serving)
        self.serving = serving
        for leader in others - self.others:
            _move(leader, self.cpus, self.back)
        self.others = others

    def together(self, leaders: Iterable[int]) -> None:
        """Every CPU back to ``leaders``' threads that zocket moved, and to the holder."""
        if self.serving is None:
            return
        self.serving = None
        self.others = set()
        os.sched_setaffinity(0, self.cpus)
        for leader in leaders:
            for half in (self.front, self.back):
                _move(leader, half, self.cpus)
