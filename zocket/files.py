"""Files zocket writes or removes by name: the pid file, the status file.

zocket often runs as root in a directory others can write to (/run, /tmp, a
shared deploy directory), so no name it writes through may be one that
someone else could have planted first. A new file is therefore created under
a random name with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (``mkstemp``): a symlink
or file already there makes the create fail instead of being followed. The
finished file is then renamed over the target, and rename(2) replaces a
symlink at the target rather than writing through it. Readers see the old
file or the new one, never half of one.

Removal checks that the name still holds the file zocket wrote, so that a
file put there since is left alone.
"""

from __future__ import annotations

import os
import tempfile

#: (st_dev, st_ino) of a file zocket wrote: what removal checks against.
Identity = tuple[int, int]


def write_atomically(path: str, text: str) -> Identity:
    """Replace ``path`` with a file holding ``text``; returns the new file's identity.

    The file gets the mode a plain ``open(path, "w")`` would give it
    (0666 less the umask), since readers such as monitoring agents expect
    the status file to be readable.
    """
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(text)
            f.flush()
            st = os.fstat(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return (st.st_dev, st.st_ino)


def remove_if_ours(path: str, identity: Identity | None) -> None:
    """Remove ``path`` if it is still the file zocket wrote there; never raise."""
    if identity is None:
        return
    try:
        st = os.lstat(path)
    except OSError:
        return
    if (st.st_dev, st.st_ino) == identity:
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _umask() -> int:
    """The process umask, read without setting it (os.umask would race other threads)."""
    # Bytes: under --user the interpreter's own files (its codecs) may be unreadable now.
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    return 0o022
