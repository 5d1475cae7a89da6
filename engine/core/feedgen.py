"""A realistic generated HL7 v2 feed, for the demo, benchmarks and tests.

Deterministic for a seed. The mix is a hospital's: admissions (some through
the emergency department), routine lab results, a few STAT critical results
and their corrections, orders, pharmacy, and a billing flood that outnumbers
everything else. Names and identifiers are synthetic.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import final

import msgspec

__all__ = ["FeedMix", "generate_feed"]

_FAMILY = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Haddad", "Novak", "Quispe", "Brennan", "Achterberg", "Santos")
_GIVEN = ("Amara", "Bjorn", "Chloe", "Dai", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas")
_UNITS = ("ED", "ICU", "MED1", "SURG2", "ONC3")
_PANEL = (
    ("2823-3", "Potassium", "mmol/L", "3.5-5.1", 3.6, 5.0),
    ("2951-2", "Sodium", "mmol/L", "136-145", 137.0, 144.0),
    ("2075-0", "Chloride", "mmol/L", "98-107", 99.0, 106.0),
    ("2345-7", "Glucose", "mg/dL", "70-99", 72.0, 98.0),
    ("2160-0", "Creatinine", "mg/dL", "0.6-1.3", 0.7, 1.2),
)
_DRUGS = (("00409-4888", "Heparin 5000 unit/mL", "5000", "U"), ("0006-0734", "Cefazolin 1 g", "1", "g"))
_CHARGES = (
    ("80048", "Basic metabolic panel", "45.00"),
    ("85025", "CBC with differential", "32.50"),
    ("99284", "ED visit level 4", "412.00"),
)
_START = datetime(2026, 11, 24, 7, 0, 0, tzinfo=UTC)


@final
class FeedMix(msgspec.Struct, frozen=True):
    """Relative weights of each kind of message in the feed."""

    admissions: float = 6.0
    routine_results: float = 18.0
    stat_results: float = 2.0
    corrections: float = 0.5
    orders: float = 8.0
    pharmacy: float = 5.0
    billing: float = 60.0


def generate_feed(
    count: int, seed: int = 1, mix: FeedMix | None = None, patients: int = 200, id_prefix: str = ""
) -> list[bytes]:
    """`count` HL7 v2 messages (CR-terminated), deterministic for `seed`.

    MSH-10 is the message's index behind `id_prefix`: feeds made with other
    seeds and the same prefix reuse control ids (as senders do in the wild),
    which Vigil stores as the different messages they are; give each feed its
    own prefix for distinct ids.
    """
    gen = _Generator(random.Random(seed), patients, id_prefix)  # noqa: S311 -- synthetic data, not security
    mix = mix if mix is not None else FeedMix()
    kinds = list(msgspec.structs.asdict(mix))
    weights = [getattr(mix, name) for name in kinds]
    return [getattr(gen, name)(i) for i, name in enumerate(gen.rng.choices(kinds, weights, k=count))]


class _Generator:
    def __init__(self, rng: random.Random, patients: int, id_prefix: str = "") -> None:
        self.rng = rng
        self.patients = max(1, patients)
        self.id_prefix = id_prefix

    def _ts(self, i: int) -> str:
        return (_START + timedelta(seconds=i * 3)).strftime("%Y%m%d%H%M%S")

    def _msh(self, i: int, app: str, mtype: str, structure: str) -> str:
        control = f"{self.id_prefix}{app}{i:08d}"
        return f"MSH|^~\\&|{app}|GENHOSP|VIGIL|GENHOSP|{self._ts(i)}||{mtype}^{structure}|{control}|P|2.5.1"

    def _pid(self) -> str:
        n = self.rng.randrange(self.patients)
        family, given = _FAMILY[n % len(_FAMILY)], _GIVEN[(n // len(_FAMILY)) % len(_GIVEN)]
        dob = f"19{40 + n % 60:02d}{1 + n % 12:02d}{1 + n % 28:02d}"
        address = f"{n} Harbour Rd^^Port Vigil^^{9000 + n % 900}"
        return f"PID|1||MRN{n:06d}^^^GENHOSP^MR||{family}^{given}||{dob}|{'FM'[n % 2]}|||{address}"

    def admissions(self, i: int) -> bytes:
        emergency = self.rng.random() < 0.3
        unit = "ED" if emergency else self.rng.choice(_UNITS[1:])
        lines = [
            self._msh(i, "ADT", "ADT^A01", "ADT_A01"),
            f"EVN|A01|{self._ts(i)}",
            self._pid(),
            f"PV1|1|{'E' if emergency else 'I'}|{unit}^{self.rng.randint(1, 40)}^1^GENHOSP|{'E' if emergency else 'R'}"
            f"|||1234^Meyer^Ada||||||||||||V{i:07d}" + "|" * 25 + self._ts(i),
        ]
        return _encode(lines)

    def _results(self, i: int, *, critical: bool, correction: bool) -> bytes:
        order = f"L{i:07d}"
        status = "C" if correction else "F"
        lines = [
            self._msh(i, "LAB", "ORU^R01", "ORU_R01"),
            self._pid(),
            f"ORC|RE|{order}|{order}F",
            f"OBR|1|{order}|{order}F|80048^Basic metabolic panel^CPT|||{self._ts(i)}" + "|" * 18 + status,
        ]
        for n, (code, name, units, ref, low, high) in enumerate(_PANEL, start=1):
            value, flag = round(self.rng.uniform(low, high), 1), "N"
            if critical and code == "2823-3":
                value, flag = 6.9, "HH"
            lines.append(f"OBX|{n}|NM|{code}^{name}^LN||{value}|{units}|{ref}|{flag}|||{status}|||{self._ts(i)}")
        return _encode(lines)

    def routine_results(self, i: int) -> bytes:
        return self._results(i, critical=False, correction=False)

    def stat_results(self, i: int) -> bytes:
        return self._results(i, critical=True, correction=False)

    def corrections(self, i: int) -> bytes:
        return self._results(i, critical=False, correction=True)

    def orders(self, i: int) -> bytes:
        stat = self.rng.random() < 0.1
        order = f"O{i:07d}"
        lines = [
            self._msh(i, "CPOE", "ORM^O01", "ORM_O01"),
            self._pid(),
            f"ORC|NW|{order}|||||||{self._ts(i)}",
            f"OBR|1|{order}||85025^CBC with differential^CPT",
            f"TQ1|1||||||||{'S' if stat else 'R'}",
        ]
        return _encode(lines)

    def pharmacy(self, i: int) -> bytes:
        code, name, dose, units = self.rng.choice(_DRUGS)
        lines = [
            self._msh(i, "PHARM", "RDE^O11", "RDE_O11"),
            self._pid(),
            f"ORC|NW|RX{i:07d}|||||||{self._ts(i)}",
            f"RXE|^^^{self._ts(i)}^^R|{code}^{name}^NDC|{dose}||{units}",
        ]
        return _encode(lines)

    def billing(self, i: int) -> bytes:
        code, name, amount = self.rng.choice(_CHARGES)
        lines = [
            self._msh(i, "BILL", "DFT^P03", "DFT_P03"),
            f"EVN|P03|{self._ts(i)}",
            self._pid(),
            f"FT1|1|T{i:08d}||{self._ts(i)}||CG|{code}^{name}^CPT|||1|{amount}",
        ]
        return _encode(lines)


def _encode(lines: list[str]) -> bytes:
    return ("\r".join(lines) + "\r").encode("ascii")
