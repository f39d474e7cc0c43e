"""Logging new runs straight into an experiment database, through AgentFarm's interface.

* ``rows``: the rows the logger buffers, table by table, and the checks on what it is given.
* ``logger``: ``ExperimentDataLogger``, AgentFarm's ``DataLogger`` calls, buffered and
  flushed in one transaction per flush.
* ``refusals``: a flush the database refused for one row: which row (it raises ``errors.RowRejected``).
* ``recorder``: what a simulator calls on its database besides the logger.
* ``session``: an ORM session that sees and changes one simulation's rows (AgentFarm's
  session functions).
* ``experiment``: ``ExperimentDatabase``, ``SimulationContext``, ``ExperimentManager``.
* ``runfile``: ``SimulationDatabase``, a per-run file in AgentFarm's layout, same logger.
* ``factory``: ``DatabaseFactory`` and the environment variables that choose between them.
* ``liveness``: when a simulation logging live is taken for dead.

(The name is this package's; Python's own ``logging`` is unaffected: imports are absolute.)

May import: ``farm_merge.storage`` and the modules beside ``errors``; not ``consolidate``,
``query``, ``samples`` or the command line.
"""
