#!/usr/bin/env python3
"""The seed's query tool, kept in its own form: a thin wrapper over ``farm-merge``.

    python scripts/query_experiment.py experiments/exp_001.db --command info
    python scripts/query_experiment.py experiments/exp_001.db --command list
    python scripts/query_experiment.py experiments/exp_001.db --command summary [--simulation-id ID]
    python scripts/query_experiment.py experiments/exp_001.db --command compare --metric total_agents
    python scripts/query_experiment.py experiments/exp_001.db --command export --simulation-id sim_001 --output ./data

Each command runs the ``farm-merge`` command of the same name (``compare`` with
``--series``, the seed's table of the metric per step and simulation); the seed's
``final`` and ``agents-over-time`` map to ``summary`` and ``compare --series`` of
``total_agents``.  ``ExperimentQueryTool`` is importable from here, as in the seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a checkout without installing, as the seed's script did.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm_merge import ExperimentQueryTool  # noqa: E402,F401  (re-exported for the seed's import)
from farm_merge.cli import main as farm_merge_main  # noqa: E402

COMMANDS = ("info", "list", "summary", "compare", "final", "export", "agents-over-time")


def farm_merge_args(args: argparse.Namespace) -> list[str]:
    """The ``farm-merge`` command line for the seed's arguments."""
    sim = ["--simulation-id", args.simulation_id] if args.simulation_id else []
    if args.command in ("info", "list"):
        return [args.command, args.db_path]
    if args.command == "summary":
        return ["summary", args.db_path, *sim]
    if args.command == "compare":
        return ["compare", args.db_path, "--metric", args.metric, "--series"]
    if args.command == "agents-over-time":
        return ["compare", args.db_path, "--metric", "total_agents", "--series", *sim]
    if args.command == "final":
        if not args.simulation_id:
            raise SystemExit("Error: --simulation-id is required for the final command")
        return ["summary", args.db_path, *sim]
    if not args.simulation_id or not args.output:
        raise SystemExit("Error: --simulation-id and --output are required for the export command")
    return ["export", args.db_path, *sim, "--output", args.output]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Query and analyze experiment databases (seed form of farm-merge).")
    parser.add_argument("db_path", help="Path to the experiment database")
    parser.add_argument("--command", default="info", choices=COMMANDS, help="Command to run")
    parser.add_argument("--simulation-id", help="Specific simulation ID (for commands that support it)")
    parser.add_argument("--metric", default="total_agents", help="Metric to compare (for compare command)")
    parser.add_argument("--output", help="Output path (for export command)")
    args = parser.parse_args(argv)
    farm_merge_main(farm_merge_args(args))


if __name__ == "__main__":
    main()
