"""The read side (CQRS): projections of the log into PostgreSQL, exactly once, never on the ACK path."""

from engine.projections.database import CONNECTION_ERRORS, connect, dsn_of
from engine.projections.definitions import PROJECTIONS, Record, projection_names
from engine.projections.maintenance import read_state, reset_projection
from engine.projections.runner import ProjectionRunner, ProjectionStatus
from engine.projections.schema import migrate

__all__ = [
    "CONNECTION_ERRORS",
    "PROJECTIONS",
    "ProjectionRunner",
    "ProjectionStatus",
    "Record",
    "connect",
    "dsn_of",
    "migrate",
    "projection_names",
    "read_state",
    "reset_projection",
]
