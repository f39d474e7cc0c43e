"""ORM models keyed by one column, as AgentFarm's are."""

from sqlalchemy import Column, ForeignKey, Integer, String
from sqlalchemy.orm import declarative_base, relationship

Base = declarative_base()


class AgentModel(Base):
    __tablename__ = "agents"
    agent_id = Column(String(64), primary_key=True)
    simulation_id = Column(String(64))
    genome_id = Column(String(64))
    actions = relationship("ActionModel", back_populates="agent", cascade="all, delete-orphan")


class ActionModel(Base):
    __tablename__ = "agent_actions"
    action_id = Column(Integer, primary_key=True)
    simulation_id = Column(String(64))
    agent_id = Column(String(64), ForeignKey("agents.agent_id"))
    action_type = Column(String(20))
    agent = relationship("AgentModel", back_populates="actions")


class ResourceModel(Base):
    __tablename__ = "resource_states"
    id = Column(Integer, primary_key=True)
    simulation_id = Column(String(64))
    resource_id = Column(String(64))
    amount = Column(Integer)
