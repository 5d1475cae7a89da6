"""Alerts (node floor): rules on what the node reports, judged by a part of its own, said once per change."""

from engine.alerts.rules import ActiveAlert, Alert, AlertBoard, Observation, RouteAge, judge
from engine.alerts.senders_seen import SendersSeen
from engine.alerts.watch import AlertStatistics, AlertWatch
from engine.alerts.webhook import Webhook

__all__ = [
    "ActiveAlert",
    "Alert",
    "AlertBoard",
    "AlertStatistics",
    "AlertWatch",
    "Observation",
    "RouteAge",
    "SendersSeen",
    "Webhook",
    "judge",
]
