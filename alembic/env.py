"""Alembic environment for farm-merge's experiment schema.

Runs on the connection a caller passes in ``config.attributes["connection"]``
(farm-merge's own commands do), or else on the database named by ``-x db=PATH_OR_URL``
or ``sqlalchemy.url``.

``alembic -x db=FILE upgrade REV`` takes the same path as ``farm-merge upgrade FILE``
(:func:`farm_merge.consolidate.inplace.upgrading`): a lock on the file, a ``VACUUM INTO`` backup
(``-x backup=no`` skips it), one transaction, and a legacy AgentFarm run file or an
AgentFarm experiment file adopted first.  ``-x simulation_id=ID`` names a run file's
simulation (default: the id it records, else the file stem).
"""

from __future__ import annotations

import logging.config
import sys

from alembic import command, context

from farm_merge.consolidate import inplace
from farm_merge.errors import FarmMergeError
from farm_merge.storage import db, versions
from farm_merge.storage.schema import metadata
from farm_merge.storage.versions import VERSION_TABLE

config = context.config

# Only the `alembic` command line configures logging from alembic.ini; a program that
# runs the migrations through farm-merge keeps its own logging setup.
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
        on_version_apply=config.attributes.get("on_version_apply") or (),
    )
    with context.begin_transaction():
        context.run_migrations()


def _is_upgrade() -> bool:
    """Whether the `alembic` command line is running ``upgrade``."""
    cmd = getattr(config.cmd_opts, "cmd", None)
    return bool(cmd) and cmd[0] is command.upgrade


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    x = context.get_x_argument(as_dictionary=True)
    target = x.get("db") or config.get_main_option("sqlalchemy.url")
    if not target:
        raise SystemExit("name the database: alembic -x db=PATH_OR_URL upgrade head")
    if _is_upgrade():
        try:
            with inplace.upgrading(target, context.get_revision_argument(), simulation_id=x.get("simulation_id"),
                                   backup=x.get("backup", "yes").lower() not in ("no", "0", "false"),
                                   create=True, progress=_say) as job:
                if job.connection is not None:
                    config.attributes["simulation_id"] = job.simulation_id
                    _run(job.connection)
        except FarmMergeError as e:
            raise SystemExit(f"Error: {e}") from e
        for line in job.report.lines():
            _say(line)
        return
    path = db.sqlite_path(target)
    if path is not None:
        try:  # a loop of symbolic links, a directory, ...: one line, as for upgrade
            versions.check_path(path, db.display(target), create=True)
        except FarmMergeError as e:
            raise SystemExit(f"Error: {e}") from e
    if path is not None and (not path.exists() or path.stat().st_size == 0):
        path.parent.mkdir(parents=True, exist_ok=True)
        db.initialize_sqlite(path)
    engine = db.create_engine_for(target)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("farm-merge's migrations run online only: alembic -x db=PATH upgrade head")
run_migrations_online()
