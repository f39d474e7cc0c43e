"""Alembic environment for farm-merge's experiment schema.

Runs on the connection a caller passes in ``config.attributes["connection"]``
(farm-merge's own commands do), or else on the database named by ``-x db=PATH_OR_URL``
or ``sqlalchemy.url``.  ``-x simulation_id=ID`` names the simulation that the rows of
a per-run file belong to when it is upgraded in place.
"""

from __future__ import annotations

import logging.config

from alembic import context

from farm_merge import db
from farm_merge.migrations import VERSION_TABLE
from farm_merge.schema import metadata

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
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    target = context.get_x_argument(as_dictionary=True).get("db") or config.get_main_option("sqlalchemy.url")
    if not target:
        raise SystemExit("name the database: alembic -x db=PATH_OR_URL upgrade head")
    path = db.sqlite_path(target)
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
