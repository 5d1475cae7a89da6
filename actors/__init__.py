"""Actors: the runtime (mailboxes, tell/ask), OTP supervision, virtual patient actors, the record.

Imports only the pure floor of `engine` (a test checks it).
"""

from actors.actor import Actor, ActorClosed, Behavior, MailboxFull, Reply, ask
from actors.clock import loop_clock
from actors.held import HeldFacts
from actors.patients import Applied, PatientActors, PatientStatistics, Quarantine, RecordSource, apply_record
from actors.record import (
    MOMENT_RULE,
    EncounterView,
    Fact,
    MedicationView,
    OrderView,
    PatientRecord,
    RecordView,
    ResultView,
    parse_moment,
    time_key,
)
from actors.supervisor import ChildSpec, ChildStatus, Restart, Strategy, Supervisor, SupervisorGaveUp
from actors.turns import TurnGate

__all__ = [
    "MOMENT_RULE",
    "Actor",
    "ActorClosed",
    "Applied",
    "Behavior",
    "ChildSpec",
    "ChildStatus",
    "EncounterView",
    "Fact",
    "HeldFacts",
    "MailboxFull",
    "MedicationView",
    "OrderView",
    "PatientActors",
    "PatientRecord",
    "PatientStatistics",
    "Quarantine",
    "RecordSource",
    "RecordView",
    "Reply",
    "Restart",
    "ResultView",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
    "TurnGate",
    "apply_record",
    "ask",
    "loop_clock",
    "parse_moment",
    "time_key",
]
