"""Actors: the runtime (mailboxes, tell/ask), OTP supervision, and the patient record.

Imports only the pure floor of `engine` (a test checks it).
"""

from actors.actor import Actor, ActorClosed, Behavior, MailboxFull, Reply, ask
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

__all__ = [
    "Actor",
    "ActorClosed",
    "Behavior",
    "ChildSpec",
    "EncounterView",
    "Fact",
    "MailboxFull",
    "MedicationView",
    "OrderView",
    "PatientRecord",
    "RecordView",
    "Reply",
    "Restart",
    "ResultView",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
    "ask",
    "time_key",
]
