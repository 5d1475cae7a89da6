"""The read side (CQRS): projections of the log into PostgreSQL, exactly once, never on the ACK path."""

from engine.projections.database import dsn_of
from engine.projections.definitions import PROJECTIONS, Record, projection_names
from engine.projections.runner import ProjectionRunner, ProjectionStatus

__all__ = ["PROJECTIONS", "ProjectionRunner", "ProjectionStatus", "Record", "dsn_of", "projection_names"]
