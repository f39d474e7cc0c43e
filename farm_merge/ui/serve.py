"""``farm-merge serve``: an experiment database in Datasette, read-only, on a local port.

What is served, and how it stays safe:

* **Read-only.**  Datasette opens the file with SQLite's ``mode=ro`` (it is given as a
  mutable file, not with ``--immutable``: immutable tells SQLite the file never changes,
  so it would take no locks and read a live sweep's pages half-written; ``mode=ro`` reads
  each request in a read transaction of its own and sees every commit), and when it stops
  the file is opened and closed once as farm-merge's readers open it, so that SQLite
  removes the ``-wal``/``-shm`` its read-only connections could not
  (:func:`farm_merge.storage.db.close_tidily`).  On read-only storage, where ``mode=ro``
  would need a ``-shm`` it cannot make, a WAL file with nothing in its ``-wal`` is served
  immutable, as :func:`farm_merge.storage.db.reader_params` reads it (nothing can write
  it there).  Its SQL page runs
  SELECT statements only, each stopped after :data:`SQL_TIME_LIMIT_S` (``--sql-time-limit``);
  no plugin but ours is loaded (whatever else the environment has installed: a plugin could
  write or reach the network); ours has no writing query and refuses anything but GET.  Responses are not cached, so a refresh
  shows what the loggers have committed since.
* **Loopback by default.**  Another ``--host`` is allowed, with a warning that anyone who
  can reach it can read every row.
* **A server database** (PostgreSQL) is served as a read-only SQLite snapshot taken on
  start with the export (``export --format sqlite``): Datasette reads SQLite only, and the
  snapshot keeps a server's load to one consistent read (``REPEATABLE READ``), whatever
  the page asks.  The page and the console say when it was taken; serving again takes a
  new one.  (A live view of a server database would need a second web stack beside
  Datasette; the sweeps that need it log into SQLite or query the server directly.)
* **Stopping.**  Ctrl-C or SIGTERM, at any moment (while it takes a snapshot too), stops
  the server after the requests in flight, removes what it set up (a snapshot's folder)
  and returns normally, printing ``stopped``: the command exits 0, where every other
  command interrupted exits 130 or 143 (:mod:`farm_merge.interrupts`), because a server
  has no end of its own and a signal is how it is meant to end (a supervisor's stop is
  then a success, as systemd counts one).  A port in use is one line, before anything
  starts.
"""

from __future__ import annotations

import errno
import importlib.resources
import ipaddress
import os
import signal
import socket
import tempfile
import threading
import webbrowser
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from farm_merge import interrupts
from farm_merge.errors import CannotListen, ConfigurationError, MissingDependency
from farm_merge.logging import liveness
from farm_merge.storage import db

#: Longest a query of the SQL page (or a page's own query) may run, in seconds: five times
#: what the slowest chart of the bench database takes, for a machine under load.
SQL_TIME_LIMIT_S = 5.0

#: Rows a query returns at most: a chart of every simulation needs up to ``TOTAL_POINTS``.
MAX_RETURNED_ROWS = 200_000

#: The packages the ``ui`` extra brings, by the name they are imported as.
NEEDED = ("datasette", "uvicorn", "datasette_dashboards")

HERE = Path(__file__).resolve().parent


def require_ui() -> None:
    """Raise :class:`MissingDependency` (naming the ``ui`` extra) unless Datasette and the
    Vega-Lite bundle can be imported."""
    for module in NEEDED:
        try:
            __import__(module)
        except ImportError as e:
            raise MissingDependency(module.replace("_", "-"), "ui", "farm-merge serve") from e


@dataclass
class Served:
    """The SQLite file Datasette reads and what the page says about it."""

    path: Path
    name: str  # the database as the user named it (a URL with its password masked)
    metrics: list[str]
    data_tables: list[str]
    list_sql: str
    note: str | None = None
    immutable: bool = False  # on read-only storage: nothing can change it (db.reader_params)


def _described(target: str | os.PathLike, path: Path, note: str | None, experiment_id: str | None = None) -> Served:
    from sqlalchemy.dialects import sqlite

    from farm_merge.query.tool import ExperimentQueryTool

    with ExperimentQueryTool(path, experiment_id) as tool:
        with tool.engine.connect() as conn:
            tables = tool.data_tables(conn)
        statement = tool.list_statement()
        list_sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
        immutable = db.reader_params(path).get("immutable") == "1"
        return Served(path, db.display(target), tool.metrics(), tables, list_sql, note, immutable)


@contextmanager
def served_database(target: str | os.PathLike, experiment_id: str | None = None) -> Iterator[Served]:
    """The SQLite file to serve for ``target``, checked as every query command checks it
    (no such file, not an experiment database, another schema revision: the same errors);
    a server database as a snapshot in a temporary folder, removed afterwards."""
    path = db.sqlite_path(target)
    if path is not None:
        if experiment_id is not None:
            raise ConfigurationError("experiment_id narrows the snapshot of a server database; "
                                     "a SQLite file is served whole")
        yield _described(target, path, None)
        return
    from farm_merge.query.tool import ExperimentQueryTool

    with tempfile.TemporaryDirectory(prefix="farm-merge-serve-") as folder:
        name = db.server_url(target).database or "experiment"
        snapshot = Path(folder) / f"{name}.db"
        with ExperimentQueryTool(target, experiment_id) as tool:
            tool.export(snapshot, format="sqlite")
        taken = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        scope = f" (experiment {experiment_id})" if experiment_id else ""
        note = (f"A read-only snapshot of {db.display(target)}{scope} taken {taken}: "
                "new rows show after farm-merge serve is started again.")
        snapshot.chmod(0o444)
        yield _described(target, snapshot, note)


def vega_bundle() -> Path:
    """The folder of Vega, Vega-Lite and vega-embed that datasette-dashboards ships (no
    network: the page loads them from this server)."""
    folder = importlib.resources.files("datasette_dashboards") / "static"
    return Path(str(folder))


def build_datasette(served: Served, *, stale_after_s: float = liveness.STALE_AFTER_S,
                    sql_time_limit_s: float = SQL_TIME_LIMIT_S):
    """The Datasette instance that serves ``served``: its canned queries, ``simulation_id``
    as a facet of every data table, our pages, and no other plugin."""
    require_ui()
    from datasette.app import Datasette
    from datasette.plugins import pm

    from farm_merge.ui import pages
    from farm_merge.ui.queries import experiment_queries

    for plugin, _ in list(pm.list_plugin_distinfo()):  # installed plugins, entry points: not ours to load
        pm.unregister(plugin)
    if not pm.is_registered(pages):
        pm.register(pages, name="farm_merge.ui.pages")
    name = served.path.stem
    metadata = {
        "title": f"farm-merge: {served.name}",
        "databases": {name: {
            "queries": experiment_queries(served.metrics, served.data_tables, served.list_sql),
            "tables": {t: {"facets": ["simulation_id"]} for t in served.data_tables},
        }},
        "plugins": {pages.PLUGIN: {"database": name, "stale_after_s": stale_after_s, "metrics": served.metrics,
                                   "data_tables": served.data_tables, "note": served.note}},
    }
    settings = {"sql_time_limit_ms": max(1, round(sql_time_limit_s * 1000)),
                "max_returned_rows": MAX_RETURNED_ROWS, "default_cache_ttl": 0, "allow_download": False}
    files = {"immutables": [str(served.path)]} if served.immutable else {"files": [str(served.path)]}
    ds = Datasette(**files, metadata=metadata, settings=settings, template_dir=str(HERE / "templates"),
                   static_mounts=[("-/farm-merge/static", str(HERE / "static")),
                                  ("-/farm-merge/vega", str(vega_bundle()))])
    if name not in ds.databases:
        raise RuntimeError(f"{served.name}: Datasette named it otherwise than {name!r}")  # a bug, said plainly
    return ds


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port`` (0: a free port), or a one-line error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise CannotListen(host, None, e.strerror) from e
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise CannotListen(host, port, e.strerror, in_use=True) from e
        raise CannotListen(host, port, e.strerror or str(e)) from e
    return sock


def is_loopback_address(address: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1)."""
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


class _Stop(KeyboardInterrupt):
    """SIGTERM in a library caller's main thread, turned into a stop as Ctrl-C is (a
    KeyboardInterrupt, so no ``except Exception`` on the way takes it for an error)."""


def _stop(signum, frame) -> None:
    raise _Stop


def _close(ds, served: Served) -> None:
    """Close Datasette's connections, then let SQLite tidy the file's ``-wal``/``-shm``."""
    for database in ds.databases.values():
        database.close()
    db.close_tidily(served.path)


def serve(target: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8001, open_browser: bool = False,
          stale_after_s: float = liveness.STALE_AFTER_S, sql_time_limit_s: float = SQL_TIME_LIMIT_S,
          experiment_id: str | None = None, say: Callable[[str], None] = print,
          warn: Callable[[str], None] = print) -> None:
    """Serve ``target`` (a path or URL) until Ctrl-C or SIGTERM, then return (see the module
    docstring); ``say`` gets the URL line (and a snapshot's note), ``warn`` the warnings."""
    require_ui()
    import uvicorn

    # Under the command line SIGTERM already raises a KeyboardInterrupt (farm_merge.interrupts);
    # a library caller's main thread gets the same here.
    own_handler = threading.current_thread() is threading.main_thread() and not interrupts.installed()
    previous = signal.signal(signal.SIGTERM, _stop) if own_handler else None
    try:
        with ExitStack() as stack:
            served = stack.enter_context(served_database(target, experiment_id))
            ds = build_datasette(served, stale_after_s=stale_after_s, sql_time_limit_s=sql_time_limit_s)
            stack.callback(_close, ds, served)
            sock = stack.enter_context(listen(host, port))
            url = url_of(sock)
            if not is_loopback_address(sock.getsockname()[0]):
                warn(f"warning: listening on {host}: anyone who can reach this address can read every row of "
                     f"{served.name}")
            say(f"serving {served.name} read-only at {url} (Ctrl-C to stop)")
            if served.note:
                say(served.note)
            if open_browser:
                threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
            server = uvicorn.Server(uvicorn.Config(ds.app(), log_level="warning", access_log=False, lifespan="on"))
            # uvicorn takes SIGINT and SIGTERM while it runs, shuts down gracefully, then raises
            # the signal again with the handlers it found: a KeyboardInterrupt here.
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # the normal end of a server, whenever it comes; the ExitStack removed what was set up
    finally:
        if own_handler:
            signal.signal(signal.SIGTERM, previous)
    warn("stopped")
