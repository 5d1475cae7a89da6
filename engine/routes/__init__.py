"""Routes: delivering accepted messages onward to downstream systems, critical first, nothing lost."""

from engine.infra.route_config import RouteConfig, parse_destination
from engine.routes.ledger import Refusal
from engine.routes.route import LaneDelivery, Route, RouteStatistics
from engine.routes.route_set import Routes

__all__ = ["LaneDelivery", "Refusal", "Route", "RouteConfig", "RouteStatistics", "Routes", "parse_destination"]
