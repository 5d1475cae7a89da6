"""Small builders shared by the tests."""

from __future__ import annotations


def hl7(*segments: str, terminator: str = "\r") -> bytes:
    """An HL7 v2 message from segment lines."""
    return (terminator.join(segments) + terminator).encode("utf-8")


MSH_ORU = "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ORU^R01^ORU_R01|MSG0001|P|2.5.1"
MSH_ADT = "MSH|^~\\&|ADT|GENHOSP|VIGIL|GENHOSP|20261124101500||ADT^A01^ADT_A01|MSG0002|P|2.5.1"
PID = "PID|1||12345^^^OTHER^PI~MRN42^^^GENHOSP^MR||Doe^Jane^Q||19700101|F|||1 Main St^^Springfield^^01101"


def oru(*obx: str, msh: str = MSH_ORU, obr: str = "OBR|1|P100|F200|80048^BMP^CPT|||20261124100000") -> bytes:
    """An ORU^R01 with the given OBX lines."""
    return hl7(msh, PID, "ORC|RE|P100|F200", obr, *obx)
