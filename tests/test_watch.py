"""``--watch``: the inotify watcher, against real files in a temporary directory.

Events are waited for with select() on the watcher's fd (always with a
timeout) and read with ``Watcher.read()``, accumulated until the wanted paths
showed up and then until a short quiet period passed, since one change may be
split across several reads. What must not be reported is checked with a
sentinel: write the ignored files, then the sentinel, and once the sentinel is
reported nothing else may have been.
"""

from __future__ import annotations

import fcntl
import os
import select
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import own_fds
from zocket import libc
from zocket.watch import DEFAULT_IGNORES, Watcher, WatchError, describe

pytestmark = pytest.mark.usefixtures("no_fd_leak")

#: How long a change may take to be reported (a busy CI box).
EVENT_TIMEOUT = 5.0
#: How long without events counts as "no more events coming". The kernel queues an event
#: before the syscall that caused it returns, and every change here is made by the test
#: itself, so this only has to cover reads that split what is already queued.
SETTLE = 0.05


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def watcher() -> Iterator[Callable[..., Watcher]]:
    """Makes watchers that are all closed at the end of the test."""
    made: list[Watcher] = []

    def make(paths: list[Path | str], **kw: object) -> Watcher:
        w = Watcher([str(p) for p in paths], **kw)  # type: ignore[arg-type]
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.close()


def write(path: Path, data: str = "x = 1\n") -> None:
    """open, write, close: one IN_CLOSE_WRITE."""
    with open(path, "w") as f:
        f.write(data)


def atomic_save(path: Path, data: str = "x = 2\n") -> None:
    """What editors do: write a temporary file, rename it over the original."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp, data)
    os.replace(tmp, path)


def collect(w: Watcher, wanted: object = (), timeout: float = EVENT_TIMEOUT) -> list[str]:
    """Everything reported until all of ``wanted`` was, then until SETTLE s pass quietly.

    Returns early (with what was seen) at the deadline; the caller's assertions
    then say what is missing.
    """
    wanted_set = {str(p) for p in wanted}  # type: ignore[attr-defined]
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return seen
        missing = not wanted_set <= set(seen)
        ready, _, _ = select.select([w.fd], [], [], min(remaining, 0.5) if missing else SETTLE)
        if ready:
            seen.extend(w.read())
        elif not missing:
            return seen


def first_changes(w: Watcher, timeout: float = EVENT_TIMEOUT) -> list[str]:
    """Whatever is reported first (waiting up to ``timeout``), until SETTLE s pass quietly."""
    ready, _, _ = select.select([w.fd], [], [], timeout)
    return w.read() + collect(w) if ready else []


def reported(w: Watcher, *paths: Path) -> set[str]:
    """The set of paths reported, after waiting for ``paths``; asserts they all came."""
    seen = set(collect(w, paths))
    missing = {str(p) for p in paths} - seen
    assert not missing, f"not reported: {missing}; reported: {seen}"
    return seen


def quiet(w: Watcher) -> list[str]:
    """Drain what is pending (e.g. the events of a test's setup)."""
    return collect(w)


# --- the fd --------------------------------------------------------------------------------------


def test_fd_is_nonblocking_cloexec_and_idle(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    w = watcher([tmp_path])
    assert w.fd >= 0
    flags = fcntl.fcntl(w.fd, fcntl.F_GETFL)
    assert flags & os.O_NONBLOCK
    assert fcntl.fcntl(w.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert os.readlink(f"/proc/self/fd/{w.fd}") == "anon_inode:inotify"
    assert w.read() == []  # nothing pending: no block, no error
    assert select.select([w.fd], [], [], 0.1) == ([], [], [])


def test_close_releases_the_fd_and_is_idempotent(tmp_path: Path) -> None:
    before = own_fds()
    w = Watcher([str(tmp_path)])
    fd = w.fd
    assert fd in own_fds() - before
    w.close()
    assert w.fd == -1
    w.close()
    assert own_fds() == before


def test_no_fd_leak_over_many_watchers(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    write(tmp_path / "f.py")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        w = Watcher([str(tmp_path), str(tmp_path / "f.py")])
        w.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_failed_watch_closes_the_fd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(fd: int, path: object, mask: int) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(libc, "inotify_add_watch", denied)  # what zocket.watch calls
    before = own_fds()
    with pytest.raises(WatchError) as info:
        Watcher([str(tmp_path)])
    assert str(tmp_path) in str(info.value)
    assert os.strerror(13) in str(info.value)
    assert info.value.exit_status == 2
    assert own_fds() == before


# --- what counts as a change ---------------------------------------------------------------------


def test_written_file_is_reported(tmp_path: Path, watcher: Callable[..., Watcher]) -> None:
    w = watcher([tmp_path])
    write(tmp_path / "app.py")
    assert reported(w, tmp_path / "app.py") == {str(tmp_path / "app.py")}


def test_rewriting_an_existing_file_is_reported(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    write(tmp_path / "app.py")
    w = watcher([tmp_path])
    write(tmp_path / "app.py", "changed\n")
    assert reported(w, tmp_path / "app.py") == {str(tmp_path / "app.py")}


def test_empty_file_created_and_closed_is_reported(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    w = watcher([tmp_path])
    fd = os.open(tmp_path / "empty.py", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    assert reported(w, tmp_path / "empty.py") == {str(tmp_path / "empty.py")}


def test_file_counts_when_closed_not_while_written(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    w = watcher([tmp_path])
    fd = os.open(tmp_path / "slow.py", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"half")
        assert quiet(w) == []  # IN_CREATE and IN_MODIFY only
        os.write(fd, b" and the rest\n")
    finally:
        os.close(fd)
    assert reported(w, tmp_path / "slow.py") == {str(tmp_path / "slow.py")}


def test_atomic_save_is_reported(tmp_path: Path, watcher: Callable[..., Watcher]) -> None:
    write(tmp_path / "app.py")
    w = watcher([tmp_path])
    atomic_save(tmp_path / "app.py")
    seen = reported(w, tmp_path / "app.py")
    assert seen <= {str(tmp_path / "app.py"), str(tmp_path / "app.py.tmp")}


def test_deleted_file_is_reported(tmp_path: Path, watcher: Callable[..., Watcher]) -> None:
    write(tmp_path / "gone.py")
    w = watcher([tmp_path])
    os.unlink(tmp_path / "gone.py")
    assert reported(w, tmp_path / "gone.py") == {str(tmp_path / "gone.py")}


def test_renamed_file_is_reported_under_both_names(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    write(tmp_path / "old.py")
    w = watcher([tmp_path])
    os.rename(tmp_path / "old.py", tmp_path / "new.py")
    seen = reported(w, tmp_path / "old.py", tmp_path / "new.py")
    assert seen == {str(tmp_path / "old.py"), str(tmp_path / "new.py")}


def test_file_moved_in_and_out_is_reported(tmp_path: Path, watcher: Callable[..., Watcher]) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    write(outside / "a.py")
    w = watcher([inside])
    os.rename(outside / "a.py", inside / "a.py")
    assert reported(w, inside / "a.py") == {str(inside / "a.py")}
    os.rename(inside / "a.py", outside / "b.py")
    assert reported(w, inside / "a.py") == {str(inside / "a.py")}
    write(outside / "c.py")  # not watched
    assert quiet(w) == []


def test_reported_paths_are_absolute(
    tmp_path: Path, watcher: Callable[..., Watcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path)
    w = watcher(["src"])
    write(tmp_path / "src" / "app.py")
    assert reported(w, tmp_path / "src" / "app.py") == {str(tmp_path / "src" / "app.py")}


# --- recursion -----------------------------------------------------------------------------------


def test_file_in_existing_nested_directory_is_reported(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    nested = tmp_path / "a" / "b" / "c"
    nested.mkdir(parents=True)
    write(nested / "deep.py")
    w = watcher([tmp_path])
    write(nested / "deep.py", "changed\n")
    assert reported(w, nested / "deep.py") == {str(nested / "deep.py")}


def test_directory_created_after_start_is_watched(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    w = watcher([tmp_path])
    (tmp_path / "new").mkdir()
    assert quiet(w) == []  # an empty new directory is no change yet
    write(tmp_path / "new" / "mod.py")
    assert reported(w, tmp_path / "new" / "mod.py") == {str(tmp_path / "new" / "mod.py")}
    # and below it, again
    (tmp_path / "new" / "sub").mkdir()
    quiet(w)
    write(tmp_path / "new" / "sub" / "x.py")
    assert reported(w, tmp_path / "new" / "sub" / "x.py") == {
        str(tmp_path / "new" / "sub" / "x.py")
    }


def test_tree_created_quickly_after_start_is_reported(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    # Written before the watcher could have read the IN_CREATE of the directory.
    w = watcher([tmp_path])
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    write(tmp_path / "pkg" / "sub" / "mod.py")
    reported(w, tmp_path / "pkg" / "sub" / "mod.py")
    # Its directories are watched from now on.
    write(tmp_path / "pkg" / "sub" / "later.py")
    reported(w, tmp_path / "pkg" / "sub" / "later.py")


def test_tree_moved_into_the_watched_tree_is_reported(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    watched, elsewhere = tmp_path / "watched", tmp_path / "elsewhere"
    watched.mkdir()
    (elsewhere / "pkg" / "sub").mkdir(parents=True)
    w = watcher([watched])
    write(elsewhere / "pkg" / "sub" / "mod.py")
    assert quiet(w) == []
    write(elsewhere / "pkg" / "sub" / "mod.pyc")  # ignored, moved in or not
    write(elsewhere / "pkg" / ".mod.py.swp")
    os.rename(elsewhere / "pkg", watched / "pkg")
    seen = reported(w, watched / "pkg" / "sub" / "mod.py")
    assert seen == {str(watched / "pkg"), str(watched / "pkg" / "sub" / "mod.py")}
    write(watched / "pkg" / "sub" / "later.py")
    reported(w, watched / "pkg" / "sub" / "later.py")


def test_empty_directory_moved_in_is_reported(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    (tmp_path / "empty").mkdir()
    w = watcher([watched])
    os.rename(tmp_path / "empty", watched / "empty")
    assert reported(w, watched / "empty") == {str(watched / "empty")}


def test_tree_made_then_moved_in_quickly_is_reported(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    w = watcher([watched])
    os.makedirs(tmp_path / "staging" / "a" / "b")
    write(tmp_path / "staging" / "a" / "b" / "new.py")
    os.rename(tmp_path / "staging", watched / "staging")
    reported(w, watched / "staging" / "a" / "b" / "new.py")


def test_deleted_and_recreated_directory_is_watched_again(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "f.py")
    w = watcher([tmp_path])
    os.unlink(tmp_path / "sub" / "f.py")
    os.rmdir(tmp_path / "sub")
    reported(w, tmp_path / "sub" / "f.py", tmp_path / "sub")
    (tmp_path / "sub").mkdir()
    quiet(w)
    write(tmp_path / "sub" / "g.py")
    assert reported(w, tmp_path / "sub" / "g.py") == {str(tmp_path / "sub" / "g.py")}


def test_renamed_directory_reports_its_new_paths(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    (tmp_path / "old").mkdir()
    write(tmp_path / "old" / "f.py")
    w = watcher([tmp_path])
    os.rename(tmp_path / "old", tmp_path / "new")
    reported(w, tmp_path / "new")
    write(tmp_path / "new" / "f.py", "changed\n")
    seen = set(first_changes(w))
    # The file that changed is new/f.py; old/ does not exist any more.
    assert seen == {str(tmp_path / "new" / "f.py")}, seen


def test_directory_moved_out_of_the_tree_is_no_longer_watched(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    watched, elsewhere = tmp_path / "watched", tmp_path / "elsewhere"
    (watched / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    w = watcher([watched])
    os.rename(watched / "sub", elsewhere / "sub")
    reported(w, watched / "sub")
    write(elsewhere / "sub" / "f.py")  # outside every watched path
    assert quiet(w) == []


# --- ignores -------------------------------------------------------------------------------------


def assert_only_sentinel(w: Watcher, directory: Path) -> None:
    sentinel = directory / "sentinel.py"
    write(sentinel)
    seen = collect(w, [sentinel])
    assert set(seen) == {str(sentinel)}, seen


def test_default_ignores(tmp_path: Path, watcher: Callable[..., Watcher]) -> None:
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "pkg").mkdir()
    w = watcher([tmp_path])
    write(tmp_path / ".git" / "index")
    write(tmp_path / ".git" / "objects" / "ab")
    os.rename(tmp_path / ".git" / "index", tmp_path / ".git" / "index.old")
    write(tmp_path / "__pycache__" / "x.cpython-311.pyc")
    write(tmp_path / "x.pyc")
    write(tmp_path / "pkg" / "y.pyo")
    write(tmp_path / ".app.py.swp")
    write(tmp_path / ".app.py.swx")
    write(tmp_path / "4913")
    os.unlink(tmp_path / "4913")
    write(tmp_path / "x~")
    write(tmp_path / ".#app.py")
    os.unlink(tmp_path / "x.pyc")
    assert_only_sentinel(w, tmp_path)


def test_ignored_directories_created_after_start(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    w = watcher([tmp_path])
    for name in (".git", "__pycache__", "node_modules", ".venv", ".mypy_cache"):
        (tmp_path / name / "deeper").mkdir(parents=True)
    quiet(w)
    for name in (".git", "__pycache__", "node_modules", ".venv", ".mypy_cache"):
        write(tmp_path / name / "f.py")
        write(tmp_path / name / "deeper" / "g.py")
    assert_only_sentinel(w, tmp_path)


def test_ignored_directory_moved_in_is_not_reported(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    (tmp_path / "staging").mkdir()
    write(tmp_path / "staging" / "x.py")
    w = watcher([watched])
    os.rename(tmp_path / "staging", watched / "__pycache__")
    write(watched / "__pycache__" / "y.py")
    assert_only_sentinel(w, watched)


def test_ignores_apply_in_subdirectories(tmp_path: Path, watcher: Callable[..., Watcher]) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    w = watcher([tmp_path])
    write(tmp_path / "a" / "b" / "x.pyc")
    write(tmp_path / "a" / ".b.py.swp")
    (tmp_path / "a" / "b" / "__pycache__").mkdir()
    write(tmp_path / "a" / "b" / "__pycache__" / "m.pyc")
    assert_only_sentinel(w, tmp_path / "a" / "b")


def test_custom_ignores(tmp_path: Path, watcher: Callable[..., Watcher]) -> None:
    w = watcher([tmp_path], ignores=DEFAULT_IGNORES + ("*.log",))
    write(tmp_path / "server.log")
    write(tmp_path / "x.pyc")  # the defaults still apply
    assert_only_sentinel(w, tmp_path)
    write(tmp_path / "server.txt")
    assert reported(w, tmp_path / "server.txt") == {str(tmp_path / "server.txt")}


def test_custom_ignores_replace_the_defaults(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    w = watcher([tmp_path], ignores=("*.log",))
    write(tmp_path / "server.log")
    write(tmp_path / "x.pyc")
    write(tmp_path / "sentinel.py")
    seen = set(collect(w, [tmp_path / "x.pyc", tmp_path / "sentinel.py"]))
    assert seen == {str(tmp_path / "x.pyc"), str(tmp_path / "sentinel.py")}


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        (".git", True),
        ("__pycache__", True),
        ("x.pyc", True),
        ("x.pyo", True),
        (".app.py.swp", True),
        ("4913", True),
        ("x~", True),
        (".#app.py", True),
        ("node_modules", True),
        ("app.py", False),
        ("4914", False),
        ("pyc", False),
        ("git", False),
        (".gitignore", False),
        ("x.py.bak", False),
        ("X.PYC", False),  # patterns are case-sensitive
    ],
)
def test_ignored(name: str, ignored: bool, tmp_path: Path, watcher: Callable[..., Watcher]) -> None:
    assert watcher([tmp_path]).ignored(name) is ignored


# --- a single file -------------------------------------------------------------------------------


def test_watched_file_is_reported_and_siblings_are_not(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    target = tmp_path / "app.py"
    write(target)
    write(tmp_path / "other.py")
    w = watcher([target])
    write(tmp_path / "other.py", "changed\n")
    write(tmp_path / "new.py")
    atomic_save(tmp_path / "other.py")
    assert quiet(w) == []
    write(target, "changed\n")
    assert reported(w, target) == {str(target)}


def test_watched_file_survives_atomic_saves(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    target = tmp_path / "app.py"
    write(target)
    w = watcher([target])
    for round_ in range(3):
        atomic_save(target, f"round {round_}\n")
        assert reported(w, target) == {str(target)}, round_
    write(target, "plain write after the renames\n")
    assert reported(w, target) == {str(target)}


def test_watched_file_deleted_and_recreated(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    target = tmp_path / "app.py"
    write(target)
    w = watcher([target])
    os.unlink(target)
    assert reported(w, target) == {str(target)}
    write(target)
    assert reported(w, target) == {str(target)}


def test_two_files_in_one_directory(tmp_path: Path, watcher: Callable[..., Watcher]) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    for path in (a, b, c):
        write(path)
    w = watcher([a, b])
    write(c, "changed\n")
    write(a, "changed\n")
    write(b, "changed\n")
    assert reported(w, a, b) == {str(a), str(b)}


@pytest.mark.parametrize("file_first", [True, False])
def test_file_and_its_directory_watch_everything(
    file_first: bool, tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    target = tmp_path / "app.py"
    write(target)
    w = watcher([target, tmp_path] if file_first else [tmp_path, target])
    write(tmp_path / "sibling.py")
    assert reported(w, tmp_path / "sibling.py") == {str(tmp_path / "sibling.py")}


def test_file_in_a_subdirectory_of_a_watched_tree(
    tmp_path: Path, watcher: Callable[..., Watcher]
) -> None:
    (tmp_path / "sub").mkdir()
    target = tmp_path / "sub" / "app.py"
    write(target)
    w = watcher([tmp_path, target])
    write(tmp_path / "sub" / "sibling.py")
    assert reported(w, tmp_path / "sub" / "sibling.py") == {str(tmp_path / "sub" / "sibling.py")}


# --- errors --------------------------------------------------------------------------------------


def test_missing_path_is_a_watch_error(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    before = own_fds()
    with pytest.raises(WatchError) as info:
        Watcher([str(tmp_path), str(missing)])
    assert str(missing) in str(info.value)
    assert info.value.exit_status == 2
    assert WatchError.exit_status == 2
    assert own_fds() == before


def test_missing_relative_path_is_named_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WatchError, match="nope/app.py"):
        Watcher(["nope/app.py"])


# --- describe ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "text"),
    [
        ([], ""),
        (["a.py"], "a.py"),
        (["b.py", "a.py"], "a.py, b.py"),
        (["c", "b", "a"], "a, b, c"),
        (["a", "a", "b"], "a, b"),
        (["e", "d", "c", "b", "a"], "a, b, c and 2 more"),
        (["d", "c", "b", "a"], "a, b, c and 1 more"),
    ],
)
def test_describe(paths: list[str], text: str) -> None:
    assert describe(paths) == text


def test_describe_limit_and_iterables() -> None:
    assert describe(iter(["x", "y", "z"]), limit=1) == "x and 2 more"
    assert describe({"b", "a"}, limit=2) == "a, b"
    assert describe(["/w/b.py", "/w/a.py"]) == "/w/a.py, /w/b.py"
