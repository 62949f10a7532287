"""``--watch``: file changes as events of the holder's loop, through inotify (no polling).

Directories are watched recursively and new ones are picked up as they
appear. A watched file is watched through its directory, so that an editor's
atomic save (write a temporary file, rename it over the original) is seen as
the IN_MOVED_TO it is. A file counts as changed when it is closed after
writing, moved or deleted: not at IN_CREATE or IN_MODIFY, which come before
the content is all there. The holder debounces what this reports.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import libc

DEFAULT_IGNORES = (
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "*.pyc",
    "*.pyo",
    ".mypy_cache",
    ".pytest_cache",
    ".hypothesis",
    ".tox",
    ".venv",
    "node_modules",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "4913",  # vim's probe file, written and deleted on every save
)

_CHANGED = libc.IN_CLOSE_WRITE | libc.IN_MOVED_TO | libc.IN_MOVED_FROM | libc.IN_DELETE
_DIR_MASK = (
    _CHANGED
    | libc.IN_CREATE
    | libc.IN_DELETE_SELF
    | libc.IN_MOVE_SELF
    | libc.IN_ONLYDIR
    | libc.IN_EXCL_UNLINK
)


class WatchError(Exception):
    """A path to watch that cannot be watched; one line for the CLI."""

    exit_status = 2


@dataclass
class _Watch:
    directory: str
    #: Only these names count in this directory (a watched file's own name); None: all.
    only: set[str] | None = None


@dataclass
class Watcher:
    """An inotify fd over the given paths; ``read()`` says which of them changed."""

    paths: Sequence[str]
    ignores: Sequence[str] = DEFAULT_IGNORES
    fd: int = field(init=False, default=-1)
    _watches: dict[int, _Watch] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for path in self.paths:
            if not os.path.exists(path):
                raise WatchError(f"--watch {path}: no such file or directory")
        self.fd = libc.inotify_init1()
        try:
            for path in self.paths:
                self._add_path(os.path.abspath(path))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            libc.close(fd)

    def read(self) -> list[str]:
        """The changed paths among the waiting events (empty when none counts)."""
        changed: list[str] = []
        for event in libc.read_inotify_events(self.fd):
            if event.mask & libc.IN_Q_OVERFLOW:
                changed.append("(inotify queue overflow)")
                continue
            watch = self._watches.get(event.wd)
            if watch is None:
                continue
            if event.mask & libc.IN_IGNORED:
                self._watches.pop(event.wd, None)
                continue
            path = os.path.join(watch.directory, event.name)
            if watch.only is not None and event.name not in watch.only:
                continue
            if event.name and self.ignored(event.name):
                continue
            is_dir = bool(event.mask & libc.IN_ISDIR)
            if is_dir and event.mask & (libc.IN_CREATE | libc.IN_MOVED_TO) and watch.only is None:
                # Files written into it before its watch existed would go unseen.
                changed.extend(self._add_tree(path))
                if event.mask & libc.IN_MOVED_TO:
                    changed.append(path)
            elif event.mask & _CHANGED:
                if is_dir and event.mask & libc.IN_MOVED_FROM:
                    # Its watches would go on reporting under the old path, or from
                    # outside the tree: drop them; IN_MOVED_TO adds the new place.
                    self._forget_tree(path)
                changed.append(path)
            elif event.mask & (libc.IN_DELETE_SELF | libc.IN_MOVE_SELF) and watch.only is None:
                changed.append(watch.directory)
        return changed

    def ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.ignores)

    def _add_path(self, path: str) -> None:
        if os.path.isdir(path):
            self._add_tree(path)
        else:
            directory, name = os.path.split(path)
            for watch in self._watches.values():
                if watch.directory == directory and watch.only is not None:
                    watch.only.add(name)
                    return
            self._add(directory, {name})

    def _forget_tree(self, top: str) -> None:
        prefix = top + os.sep
        for wd, watch in list(self._watches.items()):
            if watch.directory == top or watch.directory.startswith(prefix):
                del self._watches[wd]
                try:
                    libc.inotify_rm_watch(self.fd, wd)
                except OSError:
                    pass  # already gone with its directory

    def _add_tree(self, top: str) -> list[str]:
        """Watch ``top`` and every directory below it; the files found there."""
        found: list[str] = []
        for directory, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if not self.ignored(d)]
            self._add(directory, None)
            found.extend(os.path.join(directory, f) for f in files if not self.ignored(f))
        return found

    def _add(self, directory: str, only: set[str] | None) -> None:
        try:
            wd = libc.inotify_add_watch(self.fd, directory, _DIR_MASK)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone again before we got to it
        except OSError as exc:
            raise WatchError(f"--watch {directory}: {os.strerror(exc.errno or 0)}") from None
        existing = self._watches.get(wd)
        if existing is None:
            self._watches[wd] = _Watch(directory, only)
            return
        existing.directory = directory  # the same inode, seen under its current path
        if only is None:
            existing.only = None
        elif existing.only is not None:
            existing.only |= only


def describe(paths: Iterable[str], limit: int = 3) -> str:
    """``a.py, b.py and 4 more`` for a log line."""
    names = sorted(set(paths))
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
