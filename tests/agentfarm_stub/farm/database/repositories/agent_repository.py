from farm.database.models import AgentModel


class AgentRepository:
    def __init__(self, session_manager):
        self.session_manager = session_manager

    def get_agent_by_id(self, agent_id):
        return self.session_manager.execute_with_retry(lambda session: session.get(AgentModel, agent_id))

    def agent_ids(self):
        return self.session_manager.execute_with_retry(
            lambda session: sorted(a.agent_id for a in session.query(AgentModel)))
