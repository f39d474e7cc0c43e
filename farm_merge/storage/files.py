"""What a path names: the file behind it, which file that is, and why it cannot be written.

One file can go by many names: a symbolic link, a hard link, a bind mount, ``dir/../x``.
Resolving names tells only some of them apart (a hard link or a bind mount resolves to a
path of its own), so a file is recognised by its identity, the device and inode it lives
on (:func:`identity`).  A name can also lead nowhere: a symbolic link loop, which
:func:`real_path` follows as far as it goes instead of raising (``Path.resolve`` raises
``RuntimeError`` on one).

:func:`unwritable` tells why this process cannot write a SQLite database (or create it)
at a path, each cause with its own remedy: not a regular file, a read-only file system, a
file or folder this user may not write.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: What a name that loops is called in a one-line reason.
LOOP = "a loop of symbolic links that never reaches a file"


def real_path(path: str | os.PathLike) -> Path:
    """``path`` absolute, with every symbolic link followed as far as it leads (a loop is
    left where it loops: this never raises)."""
    return Path(os.path.realpath(path))


def identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """The device and inode of the file behind ``path``, the same under every name it has;
    None if there is none (missing, a loop, unreadable folder)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def os_reason(error: OSError) -> str:
    """One line for an error the operating system gave about a path."""
    if error.errno == errno.ELOOP:
        return LOOP
    return error.strerror or str(error)


def kind_of(mode: int) -> str | None:
    """What a file that is not a regular file is (a directory, a character device, ...);
    None for a regular file."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def user_name() -> str:
    """Who this process writes as, for a message about permissions."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):
        return f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "this user"


def unwritable(path: str | os.PathLike) -> tuple[str, str] | None:
    """Why this process cannot write the SQLite database at ``path`` (or create it there),
    and what would let it: ``(reason, hint)``; None if nothing in the way is found.

    SQLite writes its ``-wal``/``-shm`` (or ``-journal``) files beside a database, so the
    folder must be writable too, not only the file.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        return os_reason(e), "give the path of a database file and run the same command again"
    if st is not None and (kind := kind_of(st.st_mode)) is not None:
        return (f"it is {kind}, not a regular file",
                "give the path of a database file (a new one is created there) and run the same command again")
    folder = real_path(path).parent
    while not folder.exists() and folder != folder.parent:  # the folders a new target needs are made
        folder = folder.parent
    user = user_name()
    if _read_only_file_system(folder):
        return (f"{folder} is on a read-only file system",
                "merge into a database on writable storage (or remount it read-write) and run the same command again")
    if st is not None and not os.access(path, os.W_OK):
        return (f"{user} may not write to {path}",
                f"give {user} write permission on it (or merge into another database) and run the same command again")
    if not os.access(folder, os.W_OK | os.X_OK):
        beside = " (SQLite keeps its -wal and -shm files beside the database)" if st is not None else ""
        return (f"{user} may not create files in {folder}{beside}",
                f"give {user} write permission on {folder} (or merge into a database in a folder {user} can "
                "write) and run the same command again")
    return None


def _read_only_file_system(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs on this platform
        return False
