"""Where along its route a vehicle is, tracked forward so that loops never jump."""

from __future__ import annotations

import numpy as np

from drivestack.schema import RoadOption, Route
from sim.geometry import cumulative_arc_length, project_onto_polyline

# How far ahead a junction turn is announced as the command (CIL's "turn at the next
# intersection"), in metres.
COMMAND_LOOKAHEAD_M = 20.0

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

    def command_ahead(self, s_m: float, lookahead_m: float = COMMAND_LOOKAHEAD_M) -> RoadOption:
        """The command a driver follows at arc length ``s_m``: the first junction turn
        or lane change within ``lookahead_m`` ahead, else LANEFOLLOW. Announcing the
        turn before the junction (as CARLA's leaderboard does with its sparse route)
        gives a learned policy the time to slow down and place itself."""
        lo = self.index_at(s_m)
        hi = self.index_at(s_m + lookahead_m)
        for waypoint in self.route.waypoints[lo:hi + 1]:
            if waypoint.option not in (RoadOption.LANEFOLLOW, RoadOption.VOID):
                return waypoint.option
        return RoadOption.LANEFOLLOW

    def index_at(self, s_m: float) -> int:
        return min(int(np.searchsorted(self.s_m, s_m)), len(self.xy) - 1)
