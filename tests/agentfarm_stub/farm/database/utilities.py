"""The stand-in's own database, what ``Environment`` gets when nothing replaces ``setup_db``."""


class _Logger:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class OwnDatabase:
    """Takes every call and keeps nothing: the sign that farm-merge was not used."""

    own = True

    def __init__(self, db_path, simulation_id):
        self.db_path, self.simulation_id, self.logger = db_path, simulation_id, _Logger()

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def setup_db(db_path, simulation_id, parameters=None):
    return None if db_path is None else OwnDatabase(db_path, simulation_id)
