"""A configuration whose ``to_dict()`` is flat with dotted keys, as AgentFarm's is."""

from dataclasses import dataclass, field


@dataclass
class DatabaseConfig:
    use_in_memory_db: bool = False
    persist_db_on_completion: bool = False


@dataclass
class SimulationConfig:
    width: int = 10
    agents: int = 3
    seed: int = 0
    database: DatabaseConfig = field(default_factory=DatabaseConfig)

    def to_dict(self) -> dict:
        out = {"width": self.width, "agents": self.agents, "seed": self.seed}
        out.update({f"database.{k}": v for k, v in vars(self.database).items()})
        return out
