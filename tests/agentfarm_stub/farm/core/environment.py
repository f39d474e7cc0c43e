"""An environment that gets its database as AgentFarm's does, and logs a few agents' steps."""


class Environment:
    def __init__(self, width, height, db_path="simulation.db", config=None, simulation_id="sim", db_factory=None):
        self.simulation_id, self.config, self.time = simulation_id, config, 0
        if db_factory is not None:
            self.db = db_factory.setup_db(db_path, simulation_id, config.to_dict() if config else None)
        else:
            from farm.database.utilities import setup_db  # looked up at call time

            self.db = setup_db(db_path, simulation_id, config.to_dict() if config else None)
        self.agents = [f"agent_{i}" for i in range(config.agents if config else 2)]
        self.genomes = self._known_genomes()

    def _known_genomes(self):
        from farm.database.models import AgentModel

        if getattr(self.db, "own", False):
            return []
        return self.db._execute_in_transaction(
            lambda session: [r.genome_id for r in session.query(AgentModel.genome_id)])

    def add_agents(self):
        self.db.logger.log_agents_batch([
            {"agent_id": a, "birth_time": 0, "agent_type": "SystemAgent", "position": (0, 0),
             "initial_resources": 5, "starting_health": 100, "genome_id": f"{a}:1", "simulation_id": self.simulation_id}
            for a in self.agents])
        self.db.logger.flush_all_buffers()

    def update(self):
        states = [(a, 1, 2, 5.0, 100.0, 100.0, 0, 0, 0.0, self.time) for a in self.agents]
        self.db.logger.log_step(self.time, states, [], {"total_agents": len(self.agents)})
        for a in self.agents:
            self.db.logger.log_agent_action(step_number=self.time, agent_id=a, action_type="move", reward=0.5)
        self.time += 1
