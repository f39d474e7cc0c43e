"""Files a command writes from ids and names, kept inside the folder the user named.

Every writer (``split``, ``export`` in each format, ``--plot``, the demo's sample runs) names
its files with :func:`file_name` or :func:`run_file_names` and writes them through a
:class:`Staging`; a new writer does the same.

**Names.**  A simulation id or a table name (text from the data, so possibly hostile)
becomes a file name by %-escaping, as in URLs (the UTF-8 bytes), every character except
ASCII letters and digits and ``-_.+=@,()`` and the space.  So ``/``, ``\\``, ``:``, NUL,
``%``, ``~``, control characters and every non-ASCII character are escaped, and
``urllib.parse.unquote`` gives the text back.  Also escaped: a leading ``.`` (``.``,
``..``, hidden files) or ``-`` (read as an option by shell tools), a trailing ``.`` or
space (Windows drops them), and the first letter of a name Windows keeps for a device
(``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0``–``COM9``, ``LPT0``–``LPT9``, with any
extension): files written here are often copied to other systems.  As every non-ASCII
character is escaped, two spellings of one accented letter (NFC and NFD) give two names, which
a file system that normalises Unicode (macOS) still tells apart.

**Long names.**  A name longer than the file system allows (``NAME_MAX``, 255 bytes on most)
less :data:`SUFFIX_ROOM` bytes (room for ``.partial``, ``-journal``, ``-wal``, ``-shm``
beside it) keeps its first bytes and ends with ``~`` and the first 16 hex digits of the
SHA-256 of the whole text (its UTF-8), then the suffix.  An escaped name holds no raw ``~``,
so a shortened name is never one that escaping alone made, and two texts keep two names.

**Names that differ only in case.**  Those of one command's files (``Sim_1.db`` and
``sim_1.db``: one file on macOS's and Windows's file systems) each get the ``~hash``
ending; so does a file whose name another id uses as a folder.

**Partition folders.**  A Parquet dataset's folder per simulation, ``simulation_id=<id>``
(the Hive layout), is :func:`partition_name`: the id escaped as above and ``=`` too (DuckDB
takes a folder name's last ``=`` for the one after the key); pyarrow's Hive partitioning
(``segment_encoding='uri'``), DuckDB and pandas decode it back to the id.  Readers take the
id from that name alone, so it is never shortened or hashed: the caller refuses an id it
cannot carry (:func:`partition_name`'s docstring says which).

**Folders.**  ``split`` keeps an id's ``/`` as folders (``batch1/run_3`` →
``batch1/run_3.db``), so that ``--id-template '{relpath}'`` merges them back: each part is
named as above; an id with an empty, ``.`` or ``..`` part, or whose path would exceed
:data:`PATH_LIMIT` bytes, becomes one escaped name instead.

**Writing.**  A :class:`Staging` has the files written into a new hidden folder inside the
output folder (``.farm-merge-….partial``, short names, so no staging suffix can make a name
too long) and moves them into place together when all are done (a folder of files, such as
a Parquet dataset, may be staged as one: :meth:`Staging.add_folder`), with SIGINT/SIGTERM held for
those few renames: an interrupted command leaves neither a half-written file nor a set that
looks complete; the staging folder is removed (only SIGKILL, which nothing can hold, can
still stop it between two renames, and leaves the staging folder behind).  Nothing is
written through a symbolic link
inside the output folder: a link where a folder of the path would be is refused, and a link
where a file would go is an existing file (``--overwrite`` replaces the link itself, never
what it points to).  The output folder itself is the user's to name, link or not.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Iterable

from farm_merge import interrupts
from farm_merge.errors import OutputExists, OutputRefused, OutputWriteFailed

#: Characters a name keeps as they are; every other one is %-escaped.
SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "-_.+=@,() ")

#: Bytes kept free below the file system's name limit, for suffixes other programs add.
SUFFIX_ROOM = len(".partial-journal")

#: The name limit assumed where the file system does not say (ext4, APFS, NTFS, XFS, ...).
NAME_MAX = 255

#: An id's path below the output folder longer than this becomes one name.
PATH_LIMIT = 1024

HASH_DIGITS = 16

_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))})


def _escape_char(char: str) -> str:
    return "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))


def text_hash(text: str) -> str:
    """The first :data:`HASH_DIGITS` hex digits of the SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_DIGITS]


def _pieces(text: str) -> list[str]:
    """``text`` escaped, one piece per character."""
    out = [c if c in SAFE_CHARS else _escape_char(c) for c in text]
    if out and out[0] in (".", "-"):
        out[0] = _escape_char(out[0])
    return out


def _escape(text: str) -> str:
    return "".join(_pieces(text))


def _portable(name: str) -> str:
    """Escape what Windows would drop or take for a device (on an already escaped name)."""
    if name and name[-1] in ". ":
        name = name[:-1] + _escape_char(name[-1])
    base = name.split(".", 1)[0].rstrip(" ")
    if base.upper() in _RESERVED:
        name = _escape_char(name[0]) + name[1:]
    return name


def _limit(limit: int | None) -> int:
    return limit if limit is not None else NAME_MAX - SUFFIX_ROOM


def _shortened(text: str, hash_of: str, suffix: str, limit: int) -> str:
    """``text``'s escaped name cut to fit ``limit`` (between characters) with ``~`` and the hash of ``hash_of``."""
    room = max(0, limit - len(suffix) - 1 - HASH_DIGITS)
    prefix, used = [], 0
    for piece in _pieces(text):
        if used + len(piece) > room:
            break
        prefix.append(piece)
        used += len(piece)
    return _portable(f"{''.join(prefix)}~{text_hash(hash_of)}{suffix}")


def file_name(text: str, suffix: str = "", *, hashed: bool = False, limit: int | None = None) -> str:
    """One file or folder name for ``text`` (an id, a table name), ending in ``suffix``;
    see the module docstring.  ``hashed`` forces the ``~hash`` ending; ``limit`` is the
    longest name in bytes (default: :data:`NAME_MAX` less :data:`SUFFIX_ROOM`)."""
    limit = _limit(limit)
    name = _portable(_escape(text) + suffix)
    if not hashed and text and len(name.encode()) <= limit:
        return name
    return _shortened(text, text, suffix, limit)


def name_limit(folder: str | os.PathLike, room: int = SUFFIX_ROOM) -> int:
    """The longest name :func:`file_name` makes for ``folder``: its file system's limit
    (the nearest existing folder's), less ``room`` (:data:`SUFFIX_ROOM`: for a file, which
    other programs may give a suffix; 0 for a folder no suffix is ever added to)."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        limit = os.pathconf(path, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or it does not say
        limit = NAME_MAX
    return min(limit if limit and limit > 0 else NAME_MAX, NAME_MAX) - room


def run_file_name(simulation_id: str, suffix: str = ".db", *, hashed: bool = False, limit: int | None = None) -> str:
    """A simulation's run file below the output folder: ``<id>.db``, an id's ``/`` making
    folders (a relative POSIX path; see the module docstring)."""
    limit = _limit(limit)
    parts = simulation_id.split("/")
    if len(parts) > 1 and not any(p in ("", ".", "..") for p in parts):
        folders = [file_name(p, limit=limit) for p in parts[:-1]]  # ids sharing a folder share its name
        last = _portable(_escape(parts[-1]) + suffix)
        if hashed or len(last.encode()) > limit:
            last = _shortened(parts[-1], simulation_id, suffix, limit)  # the whole id's hash: unique
        relative = "/".join([*folders, last])
        if len(relative.encode()) <= PATH_LIMIT:
            return relative
    return file_name(simulation_id, suffix, hashed=hashed, limit=limit)


#: The value Hive's layout writes for a null: pyarrow and Spark read a folder of it (escaped or not) as null.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def partition_name(key: str, value: str) -> str:
    """The Hive partition folder of ``value`` under ``key``: ``key=<value escaped>``, the
    value escaped as :func:`file_name` escapes it and ``=`` too, never shortened (see the
    module docstring).  ``urllib.parse.unquote`` of the part after the first ``=`` gives
    ``value`` back; the folder reads back as ``value`` unless the name is longer than the
    file system allows (:func:`name_limit` with ``room=0``), ``value`` is :data:`HIVE_NULL`,
    or another value's folder differs from it only in case (one folder on macOS and Windows):
    the caller checks those."""
    escaped = "".join("%3D" if piece == "=" else piece for piece in _pieces(value))
    return f"{key}={_portable(escaped)}"


def distinct_names(texts: Iterable[str], suffix: str = "", *, folders: bool = False,
                   limit: int | None = None) -> dict[str, str]:
    """Names for a command's files, one per text, that stay apart on a file system that
    ignores case: the names of a group that differ only in case (and a file's name that
    another text's path uses as a folder) each get the ``~hash`` ending."""
    make = run_file_name if folders else file_name
    names = {t: make(t, suffix, limit=limit) for t in dict.fromkeys(texts)}
    groups: dict[str, list[str]] = {}
    for text, name in names.items():
        groups.setdefault(name.lower(), []).append(text)
    in_use_as_folder = {"/".join(name.lower().split("/")[:i]) for name in names.values()
                        for i in range(1, name.count("/") + 1)}
    for key, members in groups.items():
        if len(members) > 1 or key in in_use_as_folder:
            for text in members:
                names[text] = make(text, suffix, hashed=True, limit=limit)
    return names


def run_file_names(simulation_ids: Iterable[str], folder: str | os.PathLike | None = None) -> dict[str, str]:
    """Each simulation's run file below ``folder`` (relative POSIX paths; see the module docstring)."""
    return distinct_names(simulation_ids, ".db", folders=True,
                          limit=name_limit(folder) if folder is not None else None)


class Staging:
    """Files written into ``folder`` whole and together, or not at all (see the module docstring).

    ``add(name)`` names a file to write (a name relative to ``folder``, ``/`` between folders)
    and returns the path to write it at; when the block ends without an error, every file
    written is moved to its name; on an error or an interrupt nothing is.  Files that are
    there already are refused when added, unless ``overwrite``; ``protect`` (the database
    being read) is never written over.
    """

    def __init__(self, folder: str | os.PathLike, *, overwrite: bool = False, protect: Path | None = None):
        self.folder = Path(folder)
        self.overwrite = overwrite
        self.protect = protect.resolve() if protect is not None else None
        self.files: dict[Path, Path] = {}  # final path -> staging path
        self._dir: Path | None = None

    def __enter__(self) -> "Staging":
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputRefused(str(self.folder), "is a file, not a folder")
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            if kind is None:
                self.commit()
        except OSError as e:
            raise _write_error(self.folder, e) from e
        finally:
            self.discard()
        if isinstance(error, OSError):  # writing failed (no space, a name too long, ...): one line
            raise _write_error(self.folder, error) from error

    def check(self, names: Iterable[str]) -> list[Path]:
        """The final paths of ``names``, refused as :meth:`add` would (nothing is created)."""
        paths = [self._final(name) for name in names]
        existing = [p for p in paths if os.path.lexists(p)]
        if existing and not self.overwrite:
            raise OutputExists(str(existing[0]), len(existing) - 1)
        return paths

    def add(self, name: str) -> Path:
        """Where to write the file that will be ``folder/name``."""
        final = self.check([name])[0]
        if final in self.files:
            raise RuntimeError(f"{final} would be written twice")  # a bug in the caller's names
        staged = self._staging_dir() / f"{len(self.files):05d}{_suffix_of(final.name)}"
        self.files[final] = staged
        return staged

    def add_folder(self, name: str) -> Path:
        """Where to build the folder that will be ``folder/name`` (the caller creates it and
        what it holds), moved into place whole; with ``overwrite`` an existing one is replaced
        whole, never merged with (a dataset's old partitions would read as part of the new)."""
        final = self._final(name)
        if self.protect is not None and self.protect.is_relative_to(final.resolve()):
            raise OutputRefused(str(final), "holds the experiment database itself; choose another output")
        return self.add(name)

    def scratch(self, name: str) -> Path:
        """A path in the staging folder for a file that is not an output (removed with it)."""
        return self._staging_dir() / f"scratch-{name}"

    def _staging_dir(self) -> Path:
        if self._dir is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix=".farm-merge-", suffix=".partial", dir=self.folder))
        return self._dir

    def _final(self, name: str) -> Path:
        parts = name.split("/")
        if any(p in ("", ".", "..") or "\0" in p for p in parts) or os.path.isabs(name):
            raise RuntimeError(f"{name!r} is not a name inside {self.folder}")  # a bug: names come from file_name
        final = self.folder.joinpath(*parts)
        self._check_folders(final, create=False)
        if self.protect is not None and final.resolve() == self.protect:
            raise OutputRefused(str(final), "is the experiment database itself; choose another output")
        return final

    def _check_folders(self, final: Path, *, create: bool) -> None:
        """Every folder between ``self.folder`` and ``final`` is a real folder (never a link), made if missing."""
        path = self.folder
        for part in final.relative_to(self.folder).parts[:-1]:
            path = path / part
            if path.is_symlink():
                raise OutputRefused(str(path), "is a symbolic link; farm-merge writes nothing through a link "
                                               "inside its output folder")
            if path.exists() and not path.is_dir():
                raise OutputRefused(str(path), "is a file, not a folder")
            if create and not path.exists():
                path.mkdir()

    def commit(self) -> None:
        """Move every file written into place (SIGINT/SIGTERM held meanwhile)."""
        written = [(final, staged) for final, staged in self.files.items() if staged.exists()]
        folders = {final for final, staged in written if staged.is_dir()}
        with interrupts.deferred():
            for i, (final, staged) in enumerate(written):
                self._check_folders(final, create=True)
                if final in folders:
                    _move_folder(staged, final, self.overwrite, self._staging_dir() / f"replaced-{i:05d}")
                else:
                    _move(staged, final, self.overwrite)
            self.files.clear()
        if written:
            where = written[0][0] if len(written) == 1 else self.folder
            kind = "folder" if len(folders) == len(written) else "file"
            interrupts.note(f"{where} ({len(written)} {kind}{'s' if len(written) != 1 else ''}) written whole")

    def discard(self) -> None:
        """Remove the staging folder and whatever is in it."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _move_folder(staged: Path, final: Path, overwrite: bool, replaced: Path) -> None:
    """Rename the folder ``staged`` to ``final``; with ``overwrite`` what is at ``final`` (a
    folder, a file, a link: the link itself) is first moved to ``replaced``, in the staging
    folder, and goes with it."""
    if os.path.lexists(final):
        if not overwrite:
            raise OutputExists(str(final))
        os.rename(final, replaced)
    # No rename without replacing exists here for folders; one that appeared since the check
    # is refused by rename unless it is empty (then it held nothing to lose).
    os.rename(staged, final)


def _write_error(folder: Path, error: OSError) -> OutputWriteFailed:
    where = error.filename if error.filename and ".farm-merge-" not in str(error.filename) else folder
    return OutputWriteFailed(str(where), str(error.strerror or error))


def _suffix_of(name: str) -> str:
    suffix = Path(name).suffix
    return suffix if len(suffix) <= 16 and all(c in SAFE_CHARS for c in suffix) else ""


def _move(staged: Path, final: Path, overwrite: bool) -> None:
    """Rename ``staged`` to ``final``; without ``overwrite`` never over a file that appeared meanwhile."""
    if overwrite:
        os.replace(staged, final)  # replaces a link at ``final`` itself, not what it points to
        return
    try:
        os.link(staged, final)  # fails if ``final`` exists: no check-then-rename race
    except FileExistsError:
        raise OutputExists(str(final)) from None
    except OSError:  # a file system without hard links
        if os.path.lexists(final):
            raise OutputExists(str(final)) from None
        os.rename(staged, final)
        return
    os.unlink(staged)

