#!/usr/bin/env python3
"""Run several simulations into one experiment database.

Each simulation is farm-merge's built-in sample simulation (agents move, gather,
reproduce and die; seeded, deterministic), logging through the centralized logger
exactly as a simulator using DatabaseFactory / ExperimentManager would:

  python scripts/run_experiment.py --experiment-id my_experiment --num-simulations 10 \\
      --steps 1000 --name "Learning Rate Sweep" [--workers 4] [--seed 0] [--db-path PATH]

Simulation i is filed as sim_<seed+i>.  Run it again to finish an interrupted sweep:
simulations already completed with the same parameters are skipped.
"""

from __future__ import annotations

import sys

import click

from farm_merge.cli import reports_errors
from farm_merge.logging.experiment import default_experiment_path
from farm_merge.samples.runner import COMPLETED, FAILED, SKIPPED, SimulationOutcome, run_experiment
from farm_merge.storage.db import display


def describe(outcome: SimulationOutcome) -> str:
    if outcome.status == COMPLETED:
        s = outcome.summary
        return (f"{outcome.simulation_id}  completed  {s['steps']} steps, {s['final_population']} agents at the end, "
                f"{outcome.rows:,} rows in {outcome.seconds:.1f}s")
    return f"{outcome.simulation_id}  {outcome.status}  {outcome.reason}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--experiment-id", required=True, help="Experiment the simulations belong to.")
@click.option("--num-simulations", default=1, show_default=True, type=click.IntRange(min=1),
              help="How many simulations to run.")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=1), help="Steps per simulation.")
@click.option("--agents", default=30, show_default=True, type=click.IntRange(min=1), help="Initial agents per simulation.")
@click.option("--name", help="Human-readable experiment name.")
@click.option("--description", help="What the experiment is about.")
@click.option("--db-path", help="Experiment database (path or SQLAlchemy URL) [default: experiments/<experiment-id>.db].")
@click.option("--seed", default=0, show_default=True, help="Seed of the first simulation; simulation i uses seed+i.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Simulations running at once, each in its own process, all logging into the one database.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@reports_errors
def main(experiment_id, num_simulations, steps, agents, name, description, db_path, seed, workers, quiet) -> None:
    """Run sample simulations into one experiment database."""
    outcomes = run_experiment(
        experiment_id, db_path=db_path, num_simulations=num_simulations, steps=steps, agents=agents, name=name,
        description=description, seed=seed, workers=workers, progress=False if quiet else None,
        on_done=lambda outcome: click.echo(describe(outcome)),
    )
    counts = {status: sum(o.status == status for o in outcomes) for status in (COMPLETED, SKIPPED, FAILED)}
    target = display(db_path) if db_path else default_experiment_path(experiment_id)
    click.echo(f"experiment {experiment_id}: {counts[COMPLETED]} completed, {counts[SKIPPED]} skipped, "
               f"{counts[FAILED]} failed in {target}")
    sys.exit(1 if counts[FAILED] else 0)


if __name__ == "__main__":
    main()
