"""Actors: the patient record (the fold), and next the runtime, supervision and patient actors.

Imports only the pure floor of `engine` (a test checks it).
"""

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

__all__ = [
    "EncounterView",
    "Fact",
    "MedicationView",
    "OrderView",
    "PatientRecord",
    "RecordView",
    "ResultView",
    "time_key",
]
