"""``run_simulation``: builds its own Environment (no db_factory), swaps in an in-memory
database when the configuration asks for one, and records the run's end."""

import os
from datetime import datetime, timezone

from farm.core.environment import Environment


def run_simulation(num_steps, config, path=None, save_config=True, seed=None, simulation_id="sim"):
    db_path = f"{path}/simulation_{simulation_id}.db" if path is not None else None
    if config.database.use_in_memory_db:
        from farm.database.database import InMemorySimulationDatabase

        environment = Environment(config.width, config.width, db_path="", config=config, simulation_id=simulation_id)
        environment.db.close()
        environment.db = InMemorySimulationDatabase(simulation_id)
    else:
        environment = Environment(config.width, config.width, db_path=db_path or "simulation.db", config=config,
                                  simulation_id=simulation_id)
    environment.db.save_configuration(config.to_dict())
    environment.add_agents()
    for _ in range(num_steps):
        environment.update()
    environment.db.logger.flush_all_buffers()
    environment.db.update_simulation_record(simulation_id, status="completed", end_time=datetime.now(timezone.utc),
                                            results_summary={"total_steps": environment.time})
    if config.database.persist_db_on_completion and db_path is not None:
        environment.db.update_simulation_record(simulation_id, simulation_db_path=os.path.abspath(db_path))
    environment.db.close()
    return environment
