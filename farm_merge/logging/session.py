"""An ORM session that sees and changes one simulation's rows, in a database holding many.

AgentFarm hands its database handle functions that take a SQLAlchemy session and use
AgentFarm's own ORM models (``db._execute_in_transaction(lambda session: ...)``, and its
repositories through ``execute_with_retry``).  Those models key their tables by one
column (``agents.agent_id``, ``agent_actions.action_id``), and in an experiment database
those keys repeat from one simulation to the next: a plain session would read the other
simulations' rows, and its unit of work would update or delete them too (``UPDATE agents
... WHERE agent_id = ?`` matches every simulation's agent of that id; a cascade from one
agent deletes every simulation's actions numbered like its own).

:func:`simulation_session` gives a session that keeps to one :class:`Scope`:

* every SELECT the ORM emits (queries, ``Session.get``, lazy and eager loads) is limited
  to the scope's rows of every mapped class that has a scope column
  (``with_loader_criteria``);
* a new object gets the scope's ``simulation_id`` (or ``experiment_id``) when it has none,
  and one that names another is refused;
* every UPDATE and DELETE sent to a table with a scope column gets ``AND simulation_id =
  :ours`` (the unit of work's, by primary key, as well as bulk ones), so an object loaded
  here can only ever change its own row; an UPDATE or DELETE of a table without one is
  refused, and so is textual SQL, whose reach cannot be seen.

A row is in the scope if its ``simulation_id`` is the simulation's; in a table without
that column (``experiments``), if its ``experiment_id`` is the simulation's experiment.
Core statements on ``Table`` objects are limited for writes only; reads are limited for
ORM entities (AgentFarm's code reads through its models).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from sqlalchemy import Connection, Delete, Insert, Table, TextClause, Update, event, inspect
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.sql import visitors

from farm_merge.errors import OutOfScope


@dataclass(frozen=True)
class Scope:
    """The rows a session may see and change: one simulation's (and its experiment's)."""

    simulation_id: str
    experiment_id: str | None = None

    def owner_column(self, table: Any) -> tuple[str, str] | None:
        """``(column, value)`` that marks this scope's rows in ``table``; None if it has no such column."""
        columns = getattr(table, "c", None)
        if columns is None:
            return None
        if "simulation_id" in columns:
            return "simulation_id", self.simulation_id
        if "experiment_id" in columns and self.experiment_id is not None:
            return "experiment_id", self.experiment_id
        return None

    def describe(self) -> str:
        return f"simulation {self.simulation_id!r}"

    # --- reads ------------------------------------------------------------------------
    def limit_reads(self, state: ORMExecuteState) -> None:
        """``do_orm_execute``: every SELECT sees only this scope's rows of every mapped
        class of the registries it touches (so that relationships are limited too)."""
        if not state.is_select:
            return
        options = []
        for mapper in _registry_mappers(_mappers_in(state)):
            owner = self._attribute(mapper)
            if owner is not None:
                attribute, value = owner
                options.append(with_loader_criteria(mapper.class_, attribute == value, include_aliases=True))
        if options:
            state.statement = state.statement.options(*options)

    def _attribute(self, mapper: Mapper) -> tuple[Any, str] | None:
        owner = self.owner_column(mapper.local_table)
        if owner is None:
            return None
        column, value = owner
        for prop in mapper.column_attrs:
            if any(getattr(c, "name", None) == column for c in prop.columns):
                return getattr(mapper.class_, prop.key), value
        return None

    # --- new objects ------------------------------------------------------------------
    def tag_new(self, session: Session, flush_context: Any, instances: Any) -> None:
        """``before_flush``: new objects get the scope's id; none may name another or move a row out."""
        for obj in session.new:
            key = self._owner_key(obj)
            if key is None:
                continue
            attribute, value = key
            current = getattr(obj, attribute)
            if current is None:
                setattr(obj, attribute, value)
            elif current != value:
                raise OutOfScope(f"a new {type(obj).__name__} names {attribute} {current!r}; the session of "
                                 f"{self.describe()} writes only its own rows")
        for obj in session.dirty:
            key = self._owner_key(obj)
            if key is not None and inspect(obj).attrs[key[0]].history.has_changes():
                raise OutOfScope(f"{type(obj).__name__}.{key[0]} may not change in the session of {self.describe()}")

    def _owner_key(self, obj: Any) -> tuple[str, str] | None:
        mapper = inspect(obj).mapper
        owner = self._attribute(mapper)
        return None if owner is None else (owner[0].key, owner[1])

    # --- writes -----------------------------------------------------------------------
    def limit_writes(self, conn: Connection, statement: Any, multiparams: Any, params: Any,
                     execution_options: Any) -> tuple:
        """``before_execute`` (retval): UPDATE and DELETE limited to the scope; the rest checked."""
        if isinstance(statement, (str, TextClause)):
            raise OutOfScope(f"textual SQL cannot be limited to the rows of {self.describe()} in a database "
                             "that holds other simulations; use the ORM models")
        if isinstance(statement, (Update, Delete)):
            table = statement.table
            owner = self.owner_column(table) if isinstance(table, Table) else None
            if owner is None:
                name = getattr(table, "name", table)
                raise OutOfScope(f"the session of {self.describe()} changes only rows marked as its own; "
                                 f"table {name} has no simulation_id")
            column, value = owner
            statement = statement.where(table.c[column] == value)
        elif isinstance(statement, Insert):
            self._check_insert(statement, multiparams, params)
        return statement, multiparams, params

    def _check_insert(self, statement: Insert, multiparams: Any, params: Any) -> None:
        owner = self.owner_column(statement.table)
        if owner is None:
            return
        column, value = owner
        compiled = statement.compile().params
        sets = [dict(compiled, **m) for m in multiparams] if multiparams else [dict(compiled, **(params or {}))]
        for values in sets:
            if values.get(column) != value:
                raise OutOfScope(f"an INSERT into {statement.table.name} names {column} {values.get(column)!r}; "
                                 f"the session of {self.describe()} writes only its own rows")


def _mappers_in(state: ORMExecuteState) -> list[Mapper]:
    """The mappers a statement involves, at any depth (``Query.count()`` selects from a
    subquery of the entity; the statement's own entities would not name it)."""
    found = list(state.all_mappers)
    for element in visitors.iterate(state.statement):
        entity = getattr(element, "_annotations", {}).get("parententity")
        if entity is not None:
            found.append(entity.mapper)
    return found


def _registry_mappers(mappers: Any) -> list[Mapper]:
    """Every mapper of the registries ``mappers`` belong to (the classes a relationship may load)."""
    seen: dict[int, Mapper] = {}
    for mapper in mappers:
        for other in mapper.registry.mappers:
            seen.setdefault(id(other), other)
    return list(seen.values())


@contextmanager
def simulation_session(conn: Connection, scope: Scope) -> Iterator[Session]:
    """A session on ``conn`` (inside its transaction, which the caller commits) limited to
    ``scope``; flushed at the end of the block, then closed (what it loaded stays readable)."""
    session = Session(bind=conn, autoflush=False, expire_on_commit=False)
    event.listen(session, "do_orm_execute", scope.limit_reads)
    event.listen(session, "before_flush", scope.tag_new)
    event.listen(conn, "before_execute", scope.limit_writes, retval=True)
    try:
        yield session
        session.flush()
    finally:
        session.close()
        event.remove(conn, "before_execute", scope.limit_writes)
