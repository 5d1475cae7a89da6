"""Small builders shared by the tests: HL7 v2 messages, envelopes, a log configuration."""

from __future__ import annotations

from engine.core.model import Envelope, Kind, Lane, Unrecognized
from engine.infra.config import WalConfig


def hl7(*segments: str, terminator: str = "\r") -> bytes:
    """An HL7 v2 message from segment lines."""
    return (terminator.join(segments) + terminator).encode("utf-8")


MSH_ORU = "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|MSG0001|P|2.5.1"
MSH_ADT = "MSH|^~\\&|ADT|GENHOSP|VIGIL|GENHOSP|20261124101500||ADT^A01^ADT_A01|MSG0002|P|2.5.1"
PID = "PID|1||12345^^^OTHER^PI~MRN42^^^GENHOSP^MR||Doe^Jane^Q||19700101|F|||1 Main St^^Springfield^^01101"


def oru(*obx: str, msh: str = MSH_ORU, obr: str = "OBR|1|P100|F200|80048^BMP^CPT|||20261124100000") -> bytes:
    """An ORU^R01 with the given OBX lines."""
    return hl7(msh, PID, "ORC|RE|P100|F200", obr, *obx)


# A log that rolls segments, checkpoints and indexes often, so a small test exercises them.
SMALL = WalConfig(segment_bytes_max=64 * 1024, checkpoint_records_interval=50, sparse_index_records_interval=4)


def envelope(i: int, lane: Lane = Lane.STANDARD, patient: str | None = None, size: int = 200) -> Envelope:
    """A small envelope with a unique id (message i) and `size` bytes of payload."""
    return Envelope(
        message_id=f"hl7:APP|FAC|{i}",
        kind=Kind.HL7V2,
        message_type="ORU^R01",
        patient=patient if patient is not None else f"H|P{i % 7}",
        lane=lane,
        lane_reason="test",
        received_at="2026-11-24T10:00:00Z",
        source="test",
        raw=(f"MSH|^~\\&|APP|FAC|||2026||ORU^R01|{i}|P|2.5.1\r".encode() + b"x" * size),
        events=(Unrecognized("ORU^R01", f"n{i}"),),
    )
