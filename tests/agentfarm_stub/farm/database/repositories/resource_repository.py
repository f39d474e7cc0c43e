from farm.database.models import ResourceModel


class ResourceRepository:
    def __init__(self, session_manager):
        self.session_manager = session_manager

    def count(self):
        return self.session_manager.execute_with_retry(lambda session: session.query(ResourceModel).count())
