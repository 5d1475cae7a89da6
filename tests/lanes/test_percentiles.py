"""values_at_percentiles gives exactly HdrHistogram's own answers, in one pass."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from lanes.percentiles import values_at_percentiles

_PERCENTILES = (0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(min_value=1, max_value=3_600_000_000), max_size=300),
    digits=st.sampled_from([2, 3]),
)
def test_the_same_values_as_hdrhistogram_walking_its_counts(values: list[int], digits: int) -> None:
    histogram = HdrHistogram(1, 3_600_000_000, digits)
    for value in values:
        histogram.record_value(value)
    expected = [histogram.get_value_at_percentile(p) for p in _PERCENTILES]
    assert values_at_percentiles(histogram, _PERCENTILES) == expected


def test_an_empty_histogram_answers_zero() -> None:
    assert values_at_percentiles(HdrHistogram(1, 1000, 3), (50.0, 99.0)) == [0, 0]
