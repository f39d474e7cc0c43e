from farm.database.utilities import OwnDatabase


class InMemorySimulationDatabase(OwnDatabase):
    def __init__(self, simulation_id=None):
        super().__init__(":memory:", simulation_id)
