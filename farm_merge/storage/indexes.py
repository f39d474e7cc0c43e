"""The data tables' secondary indexes, as a bulk load drops them and builds them again.

A first merge drops them, appends every row, and builds each once at the end, densely
packed; a kill in between leaves some missing, and the next merge (or upgrade) builds them.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import Connection, inspect

from farm_merge.storage import sqltext
from farm_merge.storage.schema import DATA_TABLES


def missing(connection: Connection) -> list:
    """The data tables' secondary indexes that the database lacks."""
    existing = {ix["name"] for t in DATA_TABLES for ix in inspect(connection).get_indexes(t)}
    return [ix for table in DATA_TABLES.values() for ix in table.indexes if ix.name not in existing]


def ensure(connection: Connection, on_index: Callable[[str], None] | None = None) -> list[str]:
    """Create any secondary index of a data table that is missing; return their names."""
    created = []
    for index in missing(connection):
        if on_index:
            on_index(index.name)
        index.create(connection)
        created.append(index.name)
    return created


def drop(connection: Connection) -> None:
    """Drop the data tables' secondary indexes (a bulk load rebuilds them at the end)."""
    for table in DATA_TABLES.values():
        for index in table.indexes:
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {sqltext.quote(index.name)}")

