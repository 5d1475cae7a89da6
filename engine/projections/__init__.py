"""The read side (CQRS): projections of the log into PostgreSQL, exactly once, never on the ACK path."""

from engine.projections.database import CONNECTION_ERRORS, connect, dsn_of
from engine.projections.definitions import PROJECTIONS, Record, projection_names
from engine.projections.maintenance import read_state, reset_projection
from engine.projections.runner import ProjectionRunner, ProjectionStatus
from engine.projections.schema import migrate
from engine.projections.worklist import critical_worklist

__all__ = [
    "CONNECTION_ERRORS",
    "PROJECTIONS",
    "ProjectionRunner",
    "ProjectionStatus",
    "Record",
    "connect",
    "critical_worklist",
    "dsn_of",
    "migrate",
    "projection_names",
    "read_state",
    "reset_projection",
]
