"""Reading experiment databases: questions, views, exports, split.

* ``scope``: an experiment database opened for reading, narrowed to an experiment and
  simulations; the base of everything here.
* ``tool``: ``ExperimentQueryTool``, info / list / summary / compare, one statement each.
* ``frames``: its DataFrame methods (pandas, optional): the seed's, ``frame()``, ``parameters()``.
* ``groups``: parameters flattened to ``params.<dotted name>``; ``summary --by``, ``compare --by``.
* ``points``: where ``compare`` reads a metric (final, max, min, mean, a step).
* ``views`` and ``output``: what each command prints (aligned tables, CSV, JSON).
* ``plot``: the ``--plot`` chart (matplotlib, optional).
* ``export``: simulations to CSV files or a standalone SQLite experiment file.
* ``parquet``: simulations to Parquet datasets partitioned by ``simulation_id`` (pyarrow, optional).
* ``split``: simulations back to run files of their era.
* ``attached``: writing new SQLite files through ATTACH (in a staging folder:
  :mod:`farm_merge.storage.outputs`).
* ``fromserver``: simulations of a server database streamed into a new SQLite file.

May import: ``farm_merge.storage``, ``farm_merge.logging.liveness`` and the modules beside
``errors``; not ``consolidate``, ``samples`` or the command line.
"""
