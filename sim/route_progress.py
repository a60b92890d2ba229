"""Where along its route a vehicle is, tracked forward so that loops never jump."""

from __future__ import annotations

import numpy as np

from drivestack.schema import RoadOption, Route
from sim.geometry import cumulative_arc_length, project_onto_polyline

# The search window around the last match, in route points.
_BACK_POINTS, _AHEAD_POINTS = 5, 40


class RouteProgress:
    def __init__(self, route: Route) -> None:
        self.route = route
        self.xy = np.array([(w.x_m, w.y_m) for w in route.waypoints])
        self.s_m = cumulative_arc_length(self.xy)
        self.index = 0

    def update(self, x_m: float, y_m: float) -> float:
        """Arc length of ``(x_m, y_m)`` projected onto the route near the last match."""
        lo = max(self.index - _BACK_POINTS, 0)
        hi = min(self.index + _AHEAD_POINTS, len(self.xy))
        s_m, _, segment = project_onto_polyline(self.xy[lo:hi], self.s_m[lo:hi] - self.s_m[lo], (x_m, y_m))
        self.index = lo + segment
        return float(self.s_m[lo] + s_m)

    @property
    def command(self) -> RoadOption:
        """The route command valid at the last matched point."""
        return self.route.waypoints[self.index].option

    def index_at(self, s_m: float) -> int:
        return min(int(np.searchsorted(self.s_m, s_m)), len(self.xy) - 1)
