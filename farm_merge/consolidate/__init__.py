"""The merge: per-run files of any era into one experiment database, and in-place upgrades.

* ``sources``: finding source files (paths, folders, globs), opening them read-only,
  inspecting them (era, tables, row counts, sha256) before anything is written.
* ``plan``: which simulations a source holds and the id each gets in the target.
* ``report``: what happened to each source (``MergeReport``, ``SourceResult``).
* ``target``: what every back end does alike (catalogue, decisions, bulk-load indexes, ledger).
* ``sqlite`` and ``postgres``: the two targets, ATTACH + INSERT…SELECT and COPY.
* ``engine``: :func:`merge`, which drives the above.
* ``rerun``: re-runs: the sources the ledger holds with their present content, found by hashing only.
* ``records``: a source's own records as rows of our catalogue (shared with the upgrade).
* ``adopt`` and ``inplace``: a legacy run file, an AgentFarm experiment file or one of ours
  at an older revision brought to head in place (``farm-merge upgrade``).

May import: ``farm_merge.storage`` and the modules beside ``errors``; not ``logging``,
``query``, ``samples`` or the command line.
"""

from farm_merge._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "merge": "farm_merge.consolidate.engine",
    "MergeReport": "farm_merge.consolidate.report",
    "SourceResult": "farm_merge.consolidate.report",
})
