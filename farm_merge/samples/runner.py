"""Run a batch of sample simulations into one experiment database (``scripts/run_experiment.py``).

Simulation ``i`` of a run is the sample simulation (:mod:`farm_merge.samples.simulation`) with seed
``seed + i``, filed as ``sim_<seed + i>``.  With ``workers > 1`` the simulations run in
that many processes at once, all logging into the same database.  Running the same
command again skips the simulations already completed with the same parameters, so an
interrupted sweep is finished by running it again.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Callable

from sqlalchemy import select

from farm_merge.errors import ConfigurationError
from farm_merge.logging.experiment import ExperimentDatabase, ExperimentManager, default_experiment_path, describe_error
from farm_merge.logging.rows import SIMULATIONS, DataLoggingConfig
from farm_merge.samples.simulation import SampleConfig, run_sample_simulation
from farm_merge.storage.db import display

COMPLETED, FAILED, SKIPPED = "completed", "failed", "skipped"


@dataclass
class SimulationOutcome:
    """What happened to one simulation of the batch."""

    simulation_id: str
    status: str
    seconds: float = 0.0
    rows: int = 0
    summary: dict = field(default_factory=dict)
    reason: str | None = None


def plan(num_simulations: int, *, steps: int, agents: int, seed: int) -> list[tuple[str, SampleConfig]]:
    """The simulations of a batch: ids and configurations."""
    return [(f"sim_{seed + i:04d}", SampleConfig(steps=steps, agents=agents, seed=seed + i))
            for i in range(num_simulations)]


def run_experiment(
    experiment_id: str,
    *,
    db_path: str | os.PathLike | None = None,
    num_simulations: int = 1,
    steps: int = 100,
    agents: int = 30,
    name: str | None = None,
    description: str | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: bool | None = None,
    on_done: Callable[[SimulationOutcome], None] | None = None,
    logging_config: DataLoggingConfig | None = None,
) -> list[SimulationOutcome]:
    """Run ``num_simulations`` sample simulations into the experiment database; return
    one outcome per simulation, in order.  ``on_done`` is called as each one ends;
    ``progress`` shows bars on stderr (None: only on a terminal)."""
    if num_simulations < 1 or steps < 1 or agents < 1 or workers < 1:
        raise ConfigurationError("num_simulations, steps, agents and workers must be at least 1")
    path = str(db_path) if db_path is not None else str(default_experiment_path(experiment_id))
    batch = plan(num_simulations, steps=steps, agents=agents, seed=seed)
    report = on_done or (lambda outcome: None)
    outcomes: dict[str, SimulationOutcome] = {}

    with ExperimentDatabase(path, experiment_id, name, description) as database:
        known = {row.simulation_id: row for row in _known(database, [sim for sim, _ in batch])}
    todo = []
    for sim, config in batch:
        row = known.get(sim)
        if row is None:
            todo.append((sim, config))
            continue
        if row.status == COMPLETED and json.loads(row.parameters or "{}") == asdict(config):
            outcome = SimulationOutcome(sim, SKIPPED, reason="already completed with the same parameters")
        else:
            outcome = SimulationOutcome(sim, FAILED, reason=f"already in {display(path)} (status {row.status}) "
                                                          "with other parameters or unfinished; choose another --seed")
        outcomes[sim] = outcome
        report(outcome)

    if workers == 1:
        for outcome in _run_here(experiment_id, path, todo, progress, logging_config):
            outcomes[outcome.simulation_id] = outcome
            report(outcome)
    elif todo:
        for outcome in _run_in_processes(experiment_id, path, todo, workers, progress, logging_config):
            outcomes[outcome.simulation_id] = outcome
            report(outcome)
    with ExperimentDatabase(path, experiment_id) as database:
        database.settle_experiment_status()
    return [outcomes[sim] for sim, _ in batch]


def _known(database: ExperimentDatabase, ids: list[str]):
    with database.engine.connect() as conn:
        return conn.execute(select(SIMULATIONS.c.simulation_id, SIMULATIONS.c.status, SIMULATIONS.c.parameters)
                            .where(SIMULATIONS.c.simulation_id.in_(ids))).all()


def _bar(progress: bool | None, **kwargs):
    from tqdm import tqdm

    disable = {True: False, None: None, False: True}[progress]  # None: only on a terminal
    return tqdm(file=sys.stderr, disable=disable, leave=False, dynamic_ncols=True, **kwargs)


def _run_here(experiment_id: str, path: str, todo: list[tuple[str, SampleConfig]], progress: bool | None,
              logging_config: DataLoggingConfig | None):
    """One simulation after the other in this process, a progress bar over each one's steps."""
    if not todo:
        return
    with ExperimentManager(experiment_id, db_path=path, logging_config=logging_config) as manager:
        for sim, config in todo:
            with _bar(progress, total=config.steps, desc=sim, unit="step") as bar:
                yield _simulate(manager, sim, config, on_step=lambda step: bar.update(1))


def _simulate(manager: ExperimentManager, sim: str, config: SampleConfig,
              on_step: Callable[[int], None] | None = None) -> SimulationOutcome:
    started = time.monotonic()
    context = manager.create_simulation(sim, parameters=asdict(config))
    try:
        summary = run_sample_simulation(context, config, on_step=on_step)
    except Exception as e:  # one failed simulation must not stop the sweep
        manager.fail_simulation(sim, e)
        return SimulationOutcome(sim, FAILED, time.monotonic() - started, reason=describe_error(e))
    manager.complete_simulation(sim, summary)
    return SimulationOutcome(sim, COMPLETED, time.monotonic() - started, sum(context.logger.rows_written.values()),
                             summary)


def _run_one(experiment_id: str, path: str, sim: str, config: SampleConfig,
             logging_config: DataLoggingConfig | None) -> SimulationOutcome:
    """One simulation in a worker process, with its own connection to the database."""
    with ExperimentManager(experiment_id, db_path=path, logging_config=logging_config) as manager:
        return _simulate(manager, sim, config)


def _run_in_processes(experiment_id: str, path: str, todo: list[tuple[str, SampleConfig]], workers: int,
                      progress: bool | None, logging_config: DataLoggingConfig | None):
    """The simulations in ``workers`` processes at once, a progress bar over simulations."""
    # spawn, not fork: a child must not inherit the parent's open files and threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool, \
            _bar(progress, total=len(todo), desc=experiment_id, unit="sim") as bar:
        futures = {pool.submit(_run_one, experiment_id, path, sim, config, logging_config): sim
                   for sim, config in todo}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as e:  # the worker process itself died
                outcome = SimulationOutcome(futures[future], FAILED, reason=describe_error(e))
            bar.update(1)
            yield outcome
