"""The experiment database in a web page: ``farm-merge serve``, built on Datasette.

* ``queries``: the SQL behind each page (Datasette canned queries, so every chart and
  table is also JSON and CSV), series thinned in SQL, grouping by a parameter.
* ``pages``: the Datasette plugin: the experiment page, a page per simulation, the SQL
  functions the queries call (a simulation's shown status, from ``logging.liveness``).
* ``serve``: the Datasette instance (read-only, time-limited, only our plugin loaded) and
  the server (a bound socket, Ctrl-C, a server database served as a SQLite snapshot).

Datasette and the Vega-Lite bundle come with the ``ui`` extra; nothing here is imported
by the rest of the package.

May import: ``farm_merge.storage``, ``farm_merge.query``, ``farm_merge.logging.liveness``
and the modules beside ``errors``; not ``consolidate``, ``samples`` or the command line.
"""
