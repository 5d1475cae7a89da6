"""HL7 v2 tables to FHIR R4 codes, following HL7's v2-to-FHIR implementation guide's vocabulary maps.

A v2 code with no FHIR counterpart maps to None (or FHIR's `unknown` where
the element is required): a guess would put a wrong fact in another system.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ADMINISTRATION_STATUS",
    "ALLERGY_CATEGORY",
    "ALLERGY_CRITICALITY",
    "CODE_SYSTEMS",
    "ENCOUNTER_CLASS",
    "GENDER",
    "INTERPRETATION_SYSTEM",
    "NAME_USE",
    "OBSERVATION_STATUS",
    "ORDER_CONTROL_STATUS",
    "ORDER_STATUS",
    "PRIORITY",
    "REPORT_STATUS",
    "V2_TABLE",
    "code_system",
]

# Table 0396 (coding system) to the FHIR system URI, for the systems hospitals send most.
CODE_SYSTEMS: Final = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNM3": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "SNOMEDCT": "http://snomed.info/sct",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://terminology.hl7.org/CodeSystem/MVX",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "UCUM": "http://unitsofmeasure.org",
    "NCI": "http://ncimeta.nci.nih.gov",
}
V2_TABLE: Final = "http://terminology.hl7.org/CodeSystem/v2-"


def code_system(name: str) -> str | None:
    """A v2 coding system name (CWE-3) as a FHIR system URI; None for a local or unknown one.

    `HL70078` is HL7's own table 0078; a local name (`L`, `99ABC`) has no
    URI anyone else would recognise, so the code goes without a system.
    """
    name = name.strip()
    upper = name.upper().replace("-", "").replace(" ", "")
    if upper.startswith("HL7") and upper[3:].isdigit():
        return V2_TABLE + upper[3:].zfill(4)
    return CODE_SYSTEMS.get(upper)


# Table 0001 -> AdministrativeGender.
GENDER: Final = {"F": "female", "M": "male", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}

# Table 0200 (name type) -> HumanName.use.
NAME_USE: Final = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "T": "temp", "A": "anonymous"}

# Table 0004 (patient class) -> Encounter.class in v3 ActCode.
ENCOUNTER_CLASS: Final = {
    "E": ("EMER", "emergency"),
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "P": ("PRENC", "pre-admission"),
    "R": ("AMB", "ambulatory"),
    "B": ("IMP", "inpatient encounter"),
}

# Table 0085 (observation result status) -> Observation.status.
OBSERVATION_STATUS: Final = {
    "C": "corrected",
    "D": "entered-in-error",
    "F": "final",
    "I": "registered",
    "N": "cancelled",
    "O": "registered",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "U": "final",
    "W": "entered-in-error",
    "X": "cancelled",
}

# Table 0123 (result status) -> DiagnosticReport.status.
REPORT_STATUS: Final = {
    "A": "partial",
    "C": "corrected",
    "F": "final",
    "I": "registered",
    "O": "registered",
    "P": "preliminary",
    "R": "preliminary",
    "S": "registered",
    "X": "cancelled",
}

# Table 0078 (interpretation codes) are, code for code, v3 ObservationInterpretation.
INTERPRETATION_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

# Table 0038 (order status, ORC-5) -> request status.
ORDER_STATUS: Final = {
    "A": "active",
    "CA": "revoked",
    "CM": "completed",
    "DC": "revoked",
    "ER": "entered-in-error",
    "HD": "on-hold",
    "IP": "active",
    "SC": "active",
}

# Table 0119 (order control, ORC-1) -> request status, when ORC-5 is empty.
ORDER_CONTROL_STATUS: Final = {
    "NW": "active",
    "XO": "active",
    "RP": "active",
    "RL": "active",
    "SC": "active",
    "CA": "revoked",
    "OC": "revoked",
    "CR": "revoked",
    "DC": "revoked",
    "OD": "revoked",
    "DR": "revoked",
    "HD": "on-hold",
    "OH": "on-hold",
}

# Table 0485 (priority) -> request priority.
PRIORITY: Final = {"S": "stat", "A": "asap", "R": "routine", "P": "urgent", "C": "urgent", "T": "urgent"}

# Table 0322 (completion status, RXA-20) -> MedicationAdministration.status.
ADMINISTRATION_STATUS: Final = {"CP": "completed", "PA": "completed", "RE": "not-done", "NA": "not-done"}

# Table 0127 (allergen type) -> AllergyIntolerance.category.
ALLERGY_CATEGORY: Final = {
    "DA": "medication",
    "FA": "food",
    "EA": "environment",
    "AA": "environment",
    "PA": "environment",
    "LA": "environment",
    "PLANT": "environment",
    "DRUG": "medication",
    "FOOD": "food",
}

# Table 0128 (allergy severity) -> AllergyIntolerance.criticality.
ALLERGY_CRITICALITY: Final = {"SV": "high", "MO": "low", "MI": "low", "U": "unable-to-assess"}
