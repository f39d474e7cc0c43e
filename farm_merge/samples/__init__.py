"""Sample data for the demo, the tests and the benchmarks.

* ``runfiles``: realistic run files of every AgentFarm era, and AgentFarm experiment files.
* ``simulation``: a small seeded agent-based simulation that talks to its database only
  through AgentFarm's interface.
* ``runner``: a batch of sample simulations into one experiment (``scripts/run_experiment.py``).

May import: ``farm_merge.storage``, ``farm_merge.logging`` and the modules beside ``errors``;
not ``consolidate``, ``query`` or the command line.
"""

from farm_merge._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "RunFile": "farm_merge.samples.runfiles",
    "ExperimentFile": "farm_merge.samples.runfiles",
    "write_run_file": "farm_merge.samples.runfiles",
    "write_sample_runs": "farm_merge.samples.runfiles",
    "write_agentfarm_experiment": "farm_merge.samples.runfiles",
    "shape_for_megabytes": "farm_merge.samples.runfiles",
})
