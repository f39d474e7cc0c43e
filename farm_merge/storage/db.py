"""Opening experiment databases: a path or URL read once into a :class:`Location`, and from
it a configured SQLAlchemy engine or sqlite3 connection.

Every entry point (a public function, a command) turns the text it was given into one
:class:`Location` and hands that value down; the layers below read its fields instead of
asking again "file or URL?".

SQLite connections get what a database shared by a merge and many loggers needs: a
busy timeout, ``synchronous=NORMAL`` (durable against a killed process in WAL mode),
foreign keys off (references hold within a simulation, the engine never needs them),
``trusted_schema=OFF`` (an attached source's schema can't call functions with side
effects), and explicit ``BEGIN`` / ``BEGIN IMMEDIATE`` so that SQLAlchemy's
transactions are SQLite's transactions and ATTACH works outside them.

A server URL gets SQLAlchemy's engine for it; ``postgresql://`` means psycopg 3 (the
``postgres`` extra), and pooled connections are checked before use, since a server may
have dropped them while they sat in the pool.

Quoting SQL text lives in :mod:`farm_merge.storage.sqltext`, file and row checksums in
:mod:`farm_merge.storage.hashing`, why a write failed in :mod:`farm_merge.storage.failures`.

SQLAlchemy is imported where a URL is parsed or an engine made, not with this module: what
only opens a SQLite file with :func:`connect_sqlite` (``farm-merge current``) starts
without it.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union
from urllib.parse import quote as url_quote

from farm_merge.errors import DatabaseUnreadable, FarmMergeError, MissingDependency, UnsupportedDatabase
from farm_merge.storage.hashing import RowHash

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import URL
    from sqlalchemy.pool import Pool

#: Page size of new experiment databases: bulk merges run about a tenth faster than
#: with SQLite's default of 4096 (measured by the issue that introduced the engine).
PAGE_SIZE = 16384
BUSY_TIMEOUT_S = 60.0


SQLITE = "sqlite"
POSTGRESQL = "postgresql"


@dataclass(frozen=True)
class Location:
    """One database: its ``kind`` (``"sqlite"``, ``"postgresql"``, or the backend name of
    another server URL), the SQLite file (``path``, None for a server or an in-memory
    database), the server's SQLAlchemy ``url`` and the ``name`` to show in messages (a URL
    without its password)."""

    text: str
    kind: str
    name: str
    path: Path | None = None
    url: URL | None = None

    @classmethod
    def parse(cls, target: "Target") -> "Location":
        """``target`` (a path, a SQLAlchemy URL, or a :class:`Location` already) as a Location;
        :class:`FarmMergeError` for a URL that cannot be parsed."""
        if isinstance(target, Location):
            return target
        text = str(target)
        if "://" not in text:
            return cls(text, SQLITE, text, path=Path(target))
        from sqlalchemy.engine import make_url

        try:
            url = make_url(text)
        except Exception as e:  # sqlalchemy.exc.ArgumentError, or a ValueError from a bad port
            raise UnsupportedDatabase(masked(text), f"not a database URL ({e})") from e
        kind = url.get_backend_name()
        name = url.render_as_string(hide_password=True)
        if kind == SQLITE:
            path = Path(url.database) if url.database and url.database != ":memory:" else None
            return cls(text, SQLITE, name, path=path, url=url)
        return cls(text, kind, name, url=url)

    @property
    def is_url(self) -> bool:
        return self.url is not None

    @property
    def is_sqlite_file(self) -> bool:
        return self.path is not None

    @property
    def is_postgresql(self) -> bool:
        return self.kind == POSTGRESQL

    @property
    def database_name(self) -> str | None:
        """The file's stem, or the server database's name."""
        return self.path.stem if self.path is not None else self.url.database if self.url is not None else None

    def server_url(self) -> URL:
        """The SQLAlchemy URL to open a server database with; ``postgresql://`` is taken to
        mean psycopg 3.  :class:`MissingDependency` when that driver is not installed."""
        if self.url is None:
            raise UnsupportedDatabase(self.name, "a SQLite file, not a server database")
        url = self.url
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        if url.drivername == "postgresql+psycopg":
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise MissingDependency("psycopg", "postgres", "a PostgreSQL database") from None
        return url

    def engine(self, **options) -> Engine:
        """An engine on this database (options as :func:`create_engine_for`)."""
        return create_engine_for(self, **options)

    def reader(self) -> sqlite3.Connection:
        """A sqlite3 connection that only reads the file, on read-only storage too
        (:func:`reader_uri`)."""
        if self.path is None:
            raise UnsupportedDatabase(self.name, "not a SQLite file")
        return connect_sqlite(self.path, uri=reader_uri(self.path))

    def __str__(self) -> str:
        return self.name


#: What the public functions accept for a database.
Target = Union[str, "os.PathLike[str]", Location]


def masked(text: str) -> str:
    """A URL SQLAlchemy cannot parse, with whatever sits where a password would hidden."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", text)


def is_url(target: Target) -> bool:
    return target.is_url if isinstance(target, Location) else "://" in str(target)


def sqlite_path(target: Target) -> Path | None:
    """The file behind ``target`` if it is a SQLite path or ``sqlite:///`` URL, else None."""
    return Location.parse(target).path


def server_url(target: Target) -> URL:
    """The SQLAlchemy URL of a server database (:meth:`Location.server_url`)."""
    return Location.parse(target).server_url()


def is_postgresql(target: Target) -> bool:
    """True if ``target`` is a PostgreSQL URL."""
    return Location.parse(target).is_postgresql


def display(target: Target) -> str:
    """How to name ``target`` in a message (a URL without its password), even a URL that
    cannot be parsed (that is said where it is opened)."""
    try:
        return Location.parse(target).name
    except FarmMergeError:
        return masked(str(target))


def file_uri(path: Path, **params: str) -> str:
    """``file:`` URI for ``path`` with query parameters (``mode=ro``, ``immutable=1``)."""
    uri = "file:" + url_quote(str(path.resolve()), safe="/")
    if params:
        uri += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return uri


def reader_uri(path: Path) -> str:
    """The URI a reader opens ``path`` with (:func:`reader_params`)."""
    return file_uri(path, **reader_params(path))


def reader_params(path: Path) -> dict[str, str]:
    """How a reader opens ``path`` (the URI parameters): it writes nothing beside the file
    and works on read-only storage.

    A file it may write, in a folder it may write, is opened as every connection is (SQLite
    removes the ``-wal``/``-shm`` it makes when the last connection closes).  Otherwise
    ``mode=ro``; and a WAL database with nothing in a ``-wal`` also ``immutable=1``, since
    ``mode=ro`` alone needs a ``-shm`` it cannot create there (nothing can be writing it
    through storage that cannot be written).  A ``-wal`` holding changes without its
    ``-shm`` cannot be read where the ``-shm`` cannot be made: :class:`DatabaseUnreadable`.
    """
    folder = path.parent
    if os.access(path, os.W_OK) and os.access(folder, os.W_OK):
        return {"mode": "rwc"}
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    try:
        with open(path, "rb") as f:
            wal_mode = f.read(20)[18:19] == b"\x02"
        wal_changes = wal.exists() and wal.stat().st_size > 0
    except OSError:  # unreadable: let SQLite say why
        return {"mode": "ro"}
    if wal_mode and not wal_changes:
        return {"mode": "ro", "immutable": "1"}
    if wal_mode and not shm.exists() and not os.access(folder, os.W_OK):
        raise DatabaseUnreadable(str(path), "its -wal holds changes not yet in the database, and SQLite needs to "
                                            "create its -shm to read them, which this storage does not allow; copy "
                                            "it with its -wal to a writable folder")
    return {"mode": "ro"}


def close_tidily(path: Path) -> None:
    """Open ``path`` as a reader does and close it: where it may be written and no other
    connection has it open, SQLite then removes the ``-wal`` and ``-shm`` that read-only
    (``mode=ro``) connections leave behind (they may not remove them), as the last
    connection to close does.  Elsewhere nothing is opened."""
    if reader_params(path).get("mode") != "rwc" or not path.exists():
        return
    con = connect_sqlite(path, uri=reader_uri(path))
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchall()
    finally:
        con.close()


def connect_sqlite(path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S, readonly: bool = False,
                   cache_mib: int | None = None, uri: str | None = None) -> sqlite3.Connection:
    """A raw sqlite3 connection configured like the engine's (autocommit, URIs enabled);
    ``uri`` opens it another way (:func:`reader_uri`)."""
    uri = uri or file_uri(path, mode="ro" if readonly else "rwc")
    con = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    _configure(con, busy_timeout_s, cache_mib)
    return con


def _configure(con: sqlite3.Connection, busy_timeout_s: float, cache_mib: int | None = None) -> None:
    con.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    if cache_mib:
        con.execute(f"PRAGMA cache_size = -{int(cache_mib * 1024)}")
    con.execute("PRAGMA foreign_keys = OFF")
    con.execute("PRAGMA trusted_schema = OFF")
    con.execute("PRAGMA synchronous = NORMAL")
    con.create_aggregate("farm_merge_rowhash", -1, RowHash)


def create_engine_for(
    target: Target, *, busy_timeout_s: float = BUSY_TIMEOUT_S, null_pool: bool = False, readonly: bool = False,
    poolclass: type[Pool] | None = None, cache_mib: int | None = None, reader: bool = False,
) -> Engine:
    """An engine for a database path or SQLAlchemy URL.

    For SQLite, ``conn.execution_options(immediate=True)`` makes the transaction start
    with ``BEGIN IMMEDIATE`` (take the write lock up front, so a writer waits on the busy
    timeout instead of failing half-way).  ``poolclass`` overrides the pool (``null_pool``
    is short for NullPool); ``cache_mib`` sets each connection's page cache; ``reader``
    opens a SQLite file as :func:`reader_uri` says (for reading only, read-only storage too).
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import NoSuchModuleError
    from sqlalchemy.pool import NullPool, QueuePool

    location = Location.parse(target)
    path = location.path
    if path is None:
        pool = NullPool if null_pool else poolclass
        url = location.server_url()
        try:
            return create_engine(url, pool_pre_ping=True, **({"poolclass": pool} if pool else {}))
        except (ImportError, NoSuchModuleError) as e:  # a dialect or driver that is not installed
            raise UnsupportedDatabase(location.name, f"cannot open a {url.get_backend_name()} database here ({e}); "
                                                     "farm-merge works on SQLite files and PostgreSQL") from e
    # The "sqlite://" URL would make SQLAlchemy choose its in-memory pool, which hands every
    # connect() in a thread the same sqlite3 connection (a second one inside a first then
    # fails with "cannot start a transaction within a transaction"); a file wants QueuePool,
    # as SQLAlchemy gives a file URL.
    uri = reader_uri(path) if reader else None
    engine = create_engine(
        "sqlite://", creator=lambda: connect_sqlite(path, busy_timeout_s=busy_timeout_s, readonly=readonly,
                                                    cache_mib=cache_mib, uri=uri),
        poolclass=NullPool if null_pool else poolclass or QueuePool,
    )

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")

    return engine


def initialize_sqlite(path: Path, *, page_size: int = PAGE_SIZE, journal_mode: str = "wal") -> None:
    """Give a new, empty SQLite file its page size and journal mode (WAL unless told)
    before any table exists."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute(f"PRAGMA page_size = {int(page_size)}")
        con.execute(f"PRAGMA journal_mode = {journal_mode}")
    finally:
        con.close()
