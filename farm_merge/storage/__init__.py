"""Storage, the bottom layer: what an experiment database is and how it is opened and written.

* ``db``: paths and URLs in, configured SQLAlchemy engines and sqlite3 connections out.
* ``files``: what a path names: a file's identity (device, inode), loops of symbolic links,
  why it cannot be written.
* ``sqltext``: SQL text from names a file chose (quoted identifiers, safe declared types,
  SQLite's column affinity).
* ``hashing``: a file's SHA-256 and the row checksum used by ``--verify``.
* ``failures``: why SQLite could not write (full disk, read-only file or folder) and the remedy.
* ``schema``: the SQLAlchemy models of the experiment schema (AgentFarm's class names).
* ``legacy``: the layouts of AgentFarm's own run files, era by era (the single source of
  truth for the merge, the in-place upgrade, split and the run-file logger).
* ``layout``: what a layout is made of: columns, keys, indexes, foreign keys, an era's journal mode.
* ``versions``: what a database is and which revision it is at, read without Alembic;
  opening one only at head (creating a new one through the migrations).
* ``migrations``: the Alembic history driven from code: creating and upgrading the schema
  (the revision scripts themselves are ``alembic/versions``, shipped as ``farm_merge._alembic``
  with the ``alembic.ini`` that ``farm-merge alembic-ini`` names).
* ``sqlite_head``: the schema at head as the migrations leave it in SQLite; a new file replays
  it (a test regenerates and compares it).
* ``indexes``: the data tables' secondary indexes, dropped and built again by a bulk load.
* ``catalog``: the catalogue rows every writer shares (the experiment's record) and the
  lock that serialises creating them.
* ``writer``: write transactions retried while another writer holds the lock or after a
  lost connection; executemany or COPY.
* ``postgres``: what PostgreSQL needs that SQLite does not (COPY, column types, its refusals).
* ``outputs``: the names of files made from ids and table names (kept inside the output
  folder), and the staging folder every writer puts its files in place from.

May import: ``farm_merge.errors``, ``farm_merge._version``, ``farm_merge.interrupts`` and each
other; nothing above.
"""
