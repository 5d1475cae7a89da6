"""Lanes: classification into critical, standard and batch, and the scheduler that serves them.

Imports only the pure floor of `engine` (model, codecs), never the node.
"""

from lanes.classify import Classification, Classifier
from lanes.pacing import Pacer, PacingSettings, PacingStatistics
from lanes.percentiles import values_at_percentiles
from lanes.rules import ClassificationRules
from lanes.scheduler import LaneFull, LaneScheduler, LaneStatistics
from lanes.settings import LaneLimits, SchedulerSettings

__all__ = [
    "Classification",
    "ClassificationRules",
    "Classifier",
    "LaneFull",
    "LaneLimits",
    "LaneScheduler",
    "LaneStatistics",
    "Pacer",
    "PacingSettings",
    "PacingStatistics",
    "SchedulerSettings",
    "values_at_percentiles",
]
