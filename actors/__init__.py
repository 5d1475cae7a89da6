"""Actors: the runtime (mailboxes, tell/ask), OTP supervision, virtual patient actors, the record.

Imports only the pure floor of `engine` (a test checks it).
"""

from actors.actor import Actor, ActorClosed, Behavior, MailboxFull, Reply, ask
from actors.patients import Applied, PatientActors, PatientStatistics, Quarantine, RecordSource, apply_record
from actors.record import (
    EncounterView,
    Fact,
    MedicationView,
    OrderView,
    PatientRecord,
    RecordView,
    ResultView,
    time_key,
)
from actors.supervisor import ChildSpec, Restart, Strategy, Supervisor, SupervisorGaveUp
from actors.turns import TurnGate

__all__ = [
    "Actor",
    "ActorClosed",
    "Applied",
    "Behavior",
    "ChildSpec",
    "EncounterView",
    "Fact",
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
    "time_key",
]
