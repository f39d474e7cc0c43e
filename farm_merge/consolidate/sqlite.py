"""The merge into a SQLite experiment database: each source ATTACHed read-only and copied
with ``INSERT INTO main.t (simulation_id, cols…) SELECT :sim, cols… FROM src.t``, every table
in one transaction (rows never pass through Python)."""

from __future__ import annotations

from sqlalchemy import Text

from farm_merge.consolidate.plan import Plan
from farm_merge.consolidate.report import SourceResult
from farm_merge.consolidate.sources import SourceInfo, SourceTable
from farm_merge.consolidate.target import MergeTarget
from farm_merge.errors import SourceError
from farm_merge.storage import failures, hashing, sqltext
from farm_merge.storage.legacy import DATA_TABLE_KEYS
from farm_merge.storage.schema import DATA_TABLES
from farm_merge.storage.sqltext import affinity


class SqliteTarget(MergeTarget):
    """An experiment database on SQLite: each source ATTACHed and copied with INSERT…SELECT."""

    fold_case = True
    schema = "main."

    def __enter__(self) -> "SqliteTarget":
        super().__enter__()
        self.raw = self.conn.connection.driver_connection
        return self

    def column_type(self, declared: str) -> str:
        return sqltext.safe_type(declared)

    # --- one source ----------------------------------------------------------------
    def _open_source(self, info: SourceInfo) -> None:
        try:
            self.raw.execute("ATTACH DATABASE ? AS src", (info.uri,))
        except Exception as e:
            raise SourceError(str(info.path), f"cannot attach: {e}") from e

    def _close_source(self, source: None) -> None:
        if not self.conn.invalidated:  # an interrupt inside a statement closed the connection
            self.raw.execute("DETACH DATABASE src")

    def _decide_again(self, plan: Plan, *, replace: bool) -> SourceResult | None:
        # Decided before; another merge into this target may have taken the simulation
        # since.  Under the write lock the answer holds until this commits.
        return self._decide(plan, replace=replace)

    def _target_failure(self, error: Exception, plan: Plan) -> BaseException | None:
        # A full disk or a lock held too long is the target's problem: the merge stops.
        return error if failures.write_failure(error) or failures.is_locked(error) else None

    def _copy(self, source: None, info: SourceInfo, theirs: str | None, ours: str, *, single: bool,
              verify: bool) -> tuple[dict[str, int], dict[str, str]]:
        counts = {}
        for table in info.tables.values():
            columns = [c for c in table.columns if c != "simulation_id"]
            expected = table.rows if single else info.rows_expected(table.name, theirs)
            q = sqltext.quote(table.name)
            col_sql = "".join(f", {sqltext.quote(c)}" for c in columns)
            where, mine = ("", ()) if single else info.rows_of(table.name, theirs)
            params = (ours, *mine)
            if info.active:
                # A writer may have committed since the inspection; this transaction reads
                # the source in one snapshot (BEGIN IMMEDIATE opened it), so count that.
                expected = self.conn.exec_driver_sql(f"SELECT count(*) FROM src.{q}{where}", params[1:]).scalar()
            # The simulation is new (or its rows were just deleted by --replace), so the rows
            # this INSERT wrote are all the target holds for it.
            got = self.conn.exec_driver_sql(
                f"INSERT INTO main.{q} (simulation_id{col_sql}) SELECT ?{col_sql} FROM src.{q}{where}"
                f"{_key_order(info, table)}", params
            ).rowcount
            if got != expected:
                raise SourceError(str(info.path), f"verification failed: {table.name} has {got} rows for "
                                                  f"{ours!r} in the target, the source has {expected}")
            counts[table.name] = got
        return counts, self._verify_checksums(info, theirs, ours, single=single) if verify else {}

    def _verify_checksums(self, info: SourceInfo, theirs: str | None, ours: str, *, single: bool) -> dict[str, str]:
        checksums = {}
        for table in info.tables.values():
            columns = [c for c in table.columns if c != "simulation_id"]
            expr = ", ".join(hashing.hash_expr(sqltext.quote(c)) for c in columns) or "1"
            q = sqltext.quote(table.name)
            where, params = ("", ()) if single else info.rows_of(table.name, theirs)
            source = self.conn.exec_driver_sql(
                f"SELECT farm_merge_rowhash({expr}) FROM src.{q}{where}", params).scalar()
            merged = self.conn.exec_driver_sql(
                f"SELECT farm_merge_rowhash({expr}) FROM main.{q} WHERE simulation_id = ?", (ours,)).scalar()
            if source != merged:
                raise SourceError(str(info.path), f"verification failed: content checksum of {table.name} differs "
                                                  f"(source {source}, target {merged})")
            checksums[table.name] = merged
        return checksums



#: Sources from this size on are read in the target's key order.  A small source's rows land
#: in a key range the page cache holds, in whatever order they come; a large one's rows,
#: written in step order, would land all over a key range many times the cache (text keys
#: such as ``agent-step`` ids do not grow with the step), and each insert would read and
#: write pages at random: a 2 GB run file merged in 194 s in the order of its rows, 77 s
#: sorted, while 5 MB files take the same time either way.
SORTED_FROM_BYTES = 64 << 20


def _key_order(info: SourceInfo, table: SourceTable) -> str:
    """`` ORDER BY`` the key, for a large source's table whose key is TEXT in the target and
    in the source, and is the source's own primary key: SQLite then walks the source's key
    index (memory stays flat; a sort of the whole table would hold hundreds of MB), and that
    order (text, byte by byte) is the target's.  Otherwise nothing."""
    key = DATA_TABLE_KEYS.get(table.name)
    if info.size < SORTED_FROM_BYTES or not key or table.primary_key != key:
        return ""
    columns = DATA_TABLES[table.name].c
    if not all(isinstance(columns[k].type, Text) and affinity(table.columns[k]) == "TEXT" for k in key):
        return ""
    return " ORDER BY " + ", ".join(sqltext.quote(k) for k in key)
