"""The building blocks of a run-file layout: a column, a table, an era's set of tables.

:mod:`farm_merge.storage.legacy` describes each of AgentFarm's eras with these;
:func:`new_table` parses a compact column list, :func:`changed_table` derives a later
version of a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping


@dataclass(frozen=True)
class LegacyColumn:
    name: str
    type: str  # the declared SQL type, as AgentFarm's create_all wrote it
    not_null: bool = False


@dataclass(frozen=True)
class LegacyTable:
    name: str
    columns: tuple[LegacyColumn, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    foreign_keys: tuple[tuple[str, str], ...] = ()  # (column, "table.column") it references

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> LegacyColumn:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def create_sql(self, schema: str | None = None) -> list[str]:
        """CREATE TABLE and CREATE INDEX statements for this layout (SQLite), in the
        attached database ``schema`` if given."""
        prefix = f"{schema}." if schema else ""
        cols = [f'{c.name} {c.type}{" NOT NULL" if c.not_null else ""}' for c in self.columns]
        cols.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        references = dict(self.foreign_keys)
        for c in self.columns:  # in column order, as SQLAlchemy's create_all wrote them
            if c.name in references:
                table, column = references[c.name].split(".")
                cols.append(f"FOREIGN KEY({c.name}) REFERENCES {table} ({column})")
        statements = [f"CREATE TABLE {prefix}{self.name} (\n\t" + ", \n\t".join(cols) + "\n)"]
        for index_name, index_cols in self.indexes:
            statements.append(f"CREATE INDEX {prefix}{index_name} ON {self.name} ({', '.join(index_cols)})")
        return statements


@dataclass(frozen=True)
class Era:
    """One layout of AgentFarm's per-run database."""

    name: str
    commit: str
    description: str
    tables: Mapping[str, LegacyTable] = field(hash=False)
    journal_mode: str = "wal"  # what AgentFarm's connections set ("delete": SQLite's default)

    def evolve(self, name: str, commit: str, description: str, *, journal_mode: str | None = None,
               **changes: LegacyTable | None) -> "Era":
        tables = dict(self.tables)
        for table_name, table in changes.items():
            if table is None:
                tables.pop(table_name, None)
            else:
                tables[table_name] = table
        return Era(name, commit, description, tables, journal_mode or self.journal_mode)

    @property
    def has_simulation_id(self) -> bool:
        return "simulation_id" in self.tables["agents"].column_names


def new_table(name: str, spec: str, *, pk: str, indexes: str = "", fks: str = "") -> LegacyTable:
    """Build a layout from ``"col TYPE, col TYPE!, ..."`` (``!`` = NOT NULL); ``fks`` is
    ``"col>table.col, ..."``."""
    columns = []
    for part in spec.split(","):
        col_name, col_type = part.split()
        not_null = col_type.endswith("!")
        columns.append(LegacyColumn(col_name, col_type.rstrip("!"), not_null))
    return LegacyTable(name, tuple(columns), tuple(pk.split(",")), _indexes(indexes), _fks(fks))


def _fks(spec: str) -> tuple[tuple[str, str], ...]:
    """Parse ``"col>table.col, col>table.col"``."""
    return tuple(tuple(p.strip().split(">")) for p in spec.split(",") if p.strip())


def _indexes(spec: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Parse ``"name(col, col); name(col)"``."""
    result = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        index_name, cols = part.split("(")
        result.append((index_name.strip(), tuple(c.strip() for c in cols.rstrip(")").split(","))))
    return tuple(result)


def changed_table(table: LegacyTable, *, add: str = "", drop: str = "", retype: str = "",
          pk: str | None = None, indexes: str | None = None, after: Mapping[str, str] | None = None,
          fks: str | None = None, add_fks: str = "") -> LegacyTable:
    """A later version of ``table``: columns added (at the end, or after a named column),
    dropped, or retyped; optionally a new key, index list or foreign keys (``fks``
    replaces them, ``add_fks`` adds to them; a dropped column's go with it)."""
    columns = [c for c in table.columns if c.name not in set(drop.replace(",", " ").split())]
    retypes = dict(p.split() for p in retype.split(",") if p.strip())
    columns = [replace(c, type=retypes[c.name].rstrip("!"), not_null=retypes[c.name].endswith("!"))
               if c.name in retypes else c for c in columns]
    if add:
        new = new_table(table.name, add, pk=table.primary_key[0]).columns
        for col in new:
            anchor = (after or {}).get(col.name)
            if anchor is None:
                columns.append(col)
            elif anchor == "^":
                columns.insert(0, col)
            else:
                columns.insert([c.name for c in columns].index(anchor) + 1, col)
    new_indexes = table.indexes if indexes is None else _indexes(indexes)
    names = {c.name for c in columns}
    references = [fk for fk in (table.foreign_keys if fks is None else _fks(fks)) + _fks(add_fks) if fk[0] in names]
    return LegacyTable(table.name, tuple(columns), tuple(pk.split(",")) if pk else table.primary_key, new_indexes,
                       tuple(references))
