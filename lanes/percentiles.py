"""Several percentiles of an HdrHistogram in one pass at C speed.

`HdrHistogram.get_value_at_percentile` walks the counts array in Python, from
the start, once per percentile: a status count asks fifteen of the lanes
alone (p50/p99/p99.9 of two histograms per lane, 23,552 buckets for an hour
at three significant digits), and on the loop that answers critical results
that was a 20-30 ms stall once a second while the web console polled. Here
the counts are summed once by `itertools.accumulate`, up to the largest
value recorded (HdrHistogram's own `_counts_index_for`: it has no public
name), and each percentile is a bisection with HdrHistogram's own rounding,
so the values are the same.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["values_at_percentiles"]


def values_at_percentiles(histogram: Any, percentiles: Sequence[float]) -> list[int]:
    """What `histogram.get_value_at_percentile(p)` gives for each p (0 for an empty histogram)."""
    if histogram.total_count == 0:
        return [0] * len(percentiles)
    last = min(histogram.counts_len - 1, histogram._counts_index_for(histogram.max_value))  # nothing beyond the max
    cumulative = list(itertools.accumulate(histogram.counts[: last + 1]))
    values = []
    for percentile in percentiles:
        index = bisect.bisect_left(cumulative, histogram.get_target_count_at_percentile(percentile))
        if index >= len(cumulative):
            values.append(0)
            continue
        value = histogram.get_value_from_index(index)
        rounded = histogram.get_highest_equivalent_value if percentile else histogram.get_lowest_equivalent_value
        values.append(int(rounded(value)))
    return values
