"""A FHIR search's parameters: read strictly, and the filter they make."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.web.fhir_query import COUNT_MAX, QueryError, parse_query

OBSERVATION = {"patient": "reference", "code": "token", "date": "date"}


def _obs(code: str, system: str, when: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "code": {"coding": [{"system": system, "code": code}]},
        "effectiveDateTime": when,
    }


def test_a_search_reads_its_patient_codes_dates_page_and_moments() -> None:
    query = parse_query(
        [
            ("patient", "Patient/GENHOSP-7CMRN42"),
            ("code", "http://loinc.org|2823-3,2951-2"),
            ("date", "ge2026-12-01"),
            ("date", "lt2026-12-02"),
            ("_count", "5000"),
            ("_offset", "10"),
            ("_as-of", "2026-12-01T12:00"),
            ("_as-known-at", "2026-12-02"),
        ],
        OBSERVATION,
    )
    assert query.patient == "GENHOSP|MRN42"
    assert query.codes == (("http://loinc.org", "2823-3"), (None, "2951-2"))
    assert (query.count, query.offset) == (COUNT_MAX, 10)
    assert query.as_of == "2026-12-01T12:00:00.000000+00:00"
    assert query.known_at == "2026-12-02T00:00:00.000000+00:00"
    assert query.matches("Observation", _obs("2823-3", "http://loinc.org", "2026-12-01T23:59:59Z"))
    assert query.matches("Observation", _obs("2951-2", "http://example.org", "2026-12-01T08:00:00+02:00"))
    assert not query.matches("Observation", _obs("2823-3", "http://example.org", "2026-12-01T08:00:00Z"))
    assert not query.matches("Observation", _obs("2823-3", "http://loinc.org", "2026-12-02T00:00:00Z"))
    assert not query.matches("Observation", {"resourceType": "Observation", "code": {"text": "x"}})


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ([("cdoe", "2823-3")], "unknown search parameter 'cdoe'"),
        ([("code", "a"), ("code", "b")], "code is given twice"),
        ([("code", "http://loinc.org|")], "has no code"),
        ([("date", "12/01/2026")], "is not a FHIR date"),
        ([("date", "ge2026-13-01")], "date: '2026-13-01'"),
        ([("_count", "0")], "_count: '0' is not a whole number of at least 1"),
        ([("_offset", "-1")], "_offset: '-1'"),
        ([("_as-of", "yesterday")], "_as-of: 'yesterday' is not a time"),
        ([("patient", "Patient/a b")], "patient: 'Patient/a b' is not a Patient id"),
    ],
)
def test_a_parameter_it_cannot_honour_is_refused_by_name(params: list[tuple[str, str]], said: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(params, OBSERVATION)
    assert said in str(info.value)


_MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 -- hypothesis wants naive bounds; the zone is given below
    max_value=datetime(2040, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
_VALUES = st.sampled_from(
    ["2026", "2026-02", "2026-12", "2026-12-05", "2026-12-05T08:00:00Z", "2026-12-05T08:00:00+05:00"]
)


@given(_MOMENTS, _VALUES)
def test_the_date_prefixes_divide_time_as_fhir_says(moment: datetime, value: str) -> None:
    def holds(prefix: str) -> bool:
        query = parse_query([("date", prefix + value)], OBSERVATION)
        return query.matches("Observation", {"effectiveDateTime": moment.isoformat()})

    assert [holds("lt"), holds("eq"), holds("gt")].count(True) == 1
    assert holds("ne") == (not holds("eq"))
    assert holds("ge") == (holds("eq") or holds("gt"))
    assert holds("le") == (holds("eq") or holds("lt"))


def test_a_date_alone_is_its_whole_day_and_a_resource_without_a_time_never_matches() -> None:
    query = parse_query([("date", "2026-12-05")], OBSERVATION)
    start = datetime(2026, 12, 5, tzinfo=UTC)
    assert query.matches("Observation", {"effectiveDateTime": start.isoformat()})
    assert query.matches("Observation", {"effectiveDateTime": (start + timedelta(hours=23, minutes=59)).isoformat()})
    assert not query.matches("Observation", {"effectiveDateTime": (start + timedelta(days=1)).isoformat()})
    assert not query.matches("Observation", {"status": "final"})
