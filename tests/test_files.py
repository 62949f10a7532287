"""Files zocket writes by name never write through a name someone else planted.

The attack: another local user plants a symlink where a root zocket will
write (its pid file, its status file, a temporary file beside them, a Unix
socket's path) and so makes zocket overwrite, chmod or chown a file of the
attacker's choice.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from support import wait_for, write_responder, zocket_argv, zocket_env
from zocket.files import remove_if_ours, write_atomically
from zocket.listeners import ListenError, UnixPermissions


def test_write_atomically_does_not_follow_a_planted_temporary_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "status.json"
    # Every name a writer could pick from the pid: the one zocket used to use among them.
    for name in (f"status.json.{os.getpid()}.tmp", f".status.json.{os.getpid()}.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_atomically(str(target), "{}\n")
    assert victim.read_text() == "precious\n"
    assert target.read_text() == "{}\n"
    assert not target.is_symlink()


def test_write_atomically_replaces_a_symlink_at_the_target_instead_of_following_it(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "zocket.pid"
    target.symlink_to(victim)
    write_atomically(str(target), "42\n")
    assert victim.read_text() == "precious\n"
    assert target.read_text() == "42\n" and not target.is_symlink()


def test_write_atomically_gives_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    old = os.umask(0o027)
    try:
        write_atomically(str(target), "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_remove_if_ours_leaves_a_file_put_there_since(tmp_path: Path) -> None:
    target = tmp_path / "zocket.pid"
    identity = write_atomically(str(target), "1\n")
    os.link(target, tmp_path / "kept")  # alive, so that its inode number cannot be reused
    (tmp_path / "other").write_text("someone else's\n")
    os.replace(tmp_path / "other", target)
    remove_if_ours(str(target), identity)
    assert target.read_text() == "someone else's\n"
    identity = write_atomically(str(target), "2\n")
    remove_if_ours(str(target), identity)
    assert not target.exists()


def test_unix_permissions_refuse_a_symlink_instead_of_changing_its_target(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    link = tmp_path / "app.sock"
    link.symlink_to(victim)
    with pytest.raises(ListenError, match="replaced by something else"):
        UnixPermissions(mode=0o666, uid=os.getuid(), gid=os.getgid()).apply(str(link))
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


PLANT_AND_EXEC = r"""
# The attacker knows the pid: a shell that execs zocket keeps it.
ln -s "$1" "$2.$$.tmp"
ln -s "$1" "$3.$$.tmp"
shift 3
exec "$@"
"""


def test_a_zocket_started_after_symlinks_were_planted_leaves_their_target_alone(
    tmp_path: Path,
) -> None:
    """The reproduction from the report: symlinks at ``PATH.<pid>.tmp`` before zocket starts."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    status = tmp_path / "status.json"
    pid_file = tmp_path / "zocket.pid"
    argv = zocket_argv([
        "--port", "0", "--status-file", status, "--pid-file", pid_file,
        "--", sys.executable, write_responder(tmp_path),
    ])
    proc = subprocess.Popen(
        ["sh", "-c", PLANT_AND_EXEC, "sh", str(victim), str(status), str(pid_file), *argv],
        env=zocket_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: status.exists() and pid_file.exists(), 20,
                 message="the status and pid files")
        assert pid_file.read_text() == f"{proc.pid}\n"
        assert status.read_text().startswith("{")
        assert victim.read_text() == "precious\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert victim.read_text() == "precious\n", err
    assert not status.exists() and not pid_file.exists(), err
