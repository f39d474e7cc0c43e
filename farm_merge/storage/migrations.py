"""The schema's version history, driven through Alembic from code.

One helper builds the Alembic :class:`~alembic.config.Config` (absolute script location,
our own version table); every command reuses a connection passed to ``env.py`` in
``config.attributes``.  Opening a database and telling what it is needs none of this
(:mod:`farm_merge.storage.versions`): only creating and upgrading a schema loads Alembic.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection


def script_location() -> Path:
    """The migration scripts: inside the installed package, or at the checkout's root."""
    package = Path(__file__).resolve().parent.parent  # farm_merge/
    for candidate in (package / "_alembic", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"farm-merge's migration scripts are missing (looked beside {package})")


def alembic_ini() -> Path:
    """The ``alembic.ini`` shipped beside the migration scripts (its ``script_location`` is
    its own folder), so that ``alembic -c "$(farm-merge alembic-ini)" …`` works from any folder."""
    return script_location() / "alembic.ini"


def alembic_config(
    connection: Connection | None = None,
    *,
    url: str | None = None,
    simulation_id: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Config:
    """An Alembic config for our scripts; ``env.py`` runs on ``connection`` if given.

    ``simulation_id`` is the id 0002 gives rows that have none; ``on_step`` is called with
    each revision as soon as it is applied (inside the transaction: raising there rolls
    the whole upgrade back).
    """
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes["simulation_id"] = simulation_id
    if on_step is not None:
        config.attributes["on_version_apply"] = lambda *, step, **_: on_step(step.up_revision_id)
    return config


@functools.lru_cache(maxsize=1)
def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def create_schema(connection: Connection) -> None:
    """Build the schema at head on an empty database, in the caller's transaction."""
    command.upgrade(alembic_config(connection), "head")


def migrated_sqlite_statements() -> list[str]:
    """The ``sqlite_master`` statements a new SQLite database holds after every migration,
    in creation order: what :data:`farm_merge.storage.sqlite_head.STATEMENTS` must be."""
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            create_schema(conn)
            return [sql for (sql,) in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")]
    finally:
        engine.dispose()
