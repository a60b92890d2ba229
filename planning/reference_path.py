"""The route as the planner uses it: a polyline with arc length, heading, curvature,
speed limits and the map features along it (stop lines, junction entries).

Built once per route from the HD map (a ``sim.road_map.RoadMap`` or anything with the
same ``lanes`` / ``signals`` / ``connector_conflicts`` attributes: the planner never
imports the simulator) and the global planner's ``(waypoint, RoadOption)`` list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivestack.schema import Route

_SEARCH_BACK_M, _SEARCH_AHEAD_M = 5.0, 40.0  # where the ego can be since the last step


@dataclass(frozen=True)
class RouteStopLine:
    s_m: float  # arc length along the route
    light_id: int
    light_xy_m: tuple[float, float]  # the signal's pole, for finding it in the image


@dataclass(frozen=True)
class JunctionEntry:
    s_m: float  # where the route leaves its lane for the connector
    connector: int
    junction_id: int
    signalled: bool  # the approach has a stop line with a light


class ReferencePath:
    def __init__(self, road_map, route: Route, default_speed_limit_mps: float = 8.0) -> None:
        self.map = road_map
        wps = route.waypoints
        xy = np.array([(w.x_m, w.y_m) for w in wps], np.float64)
        # Consecutive duplicates (a lane's last point = its successor's first) break the
        # arc-length parametrisation.
        keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-6])
        self.xy = xy[keep]
        self.lane_ids = np.array([w.lane_segment_id for w in wps])[keep]
        self.options = np.array([int(w.option) for w in wps])[keep]
        self.s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.xy, axis=0), axis=1))])
        if len(self.xy) < 2:
            raise ValueError("the route has fewer than two distinct points")
        d = np.gradient(self.xy, axis=0)
        self.yaw = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
        self.curvature = np.gradient(self.yaw, self.s) if len(self.s) > 2 else np.zeros(len(self.s))
        lanes = road_map.lanes
        self.speed_limit = np.array([lanes[k].speed_limit_mps if 0 <= k < len(lanes) else default_speed_limit_mps
                                     for k in self.lane_ids])
        self.stop_lines = self._stop_lines()
        self.junction_entries = self._junction_entries()
        self._index = 0

    @property
    def length_m(self) -> float:
        return float(self.s[-1])

    def _stop_lines(self) -> list[RouteStopLine]:
        found = []
        for group in getattr(self.map, "signals", ()):
            for line in group.stop_lines:
                mid = np.array([(line.p0[0] + line.p1[0]) / 2, (line.p0[1] + line.p1[1]) / 2])
                on_lane = np.flatnonzero(self.lane_ids == line.segment_id)
                # A looping route passes a stop line once per visit: one entry per run.
                for run in np.split(on_lane, np.flatnonzero(np.diff(on_lane) > 1) + 1):
                    if len(run):
                        dist = np.linalg.norm(self.xy[run] - mid, axis=1)
                        if dist.min() < 3.0:
                            found.append(RouteStopLine(float(self.s[run[np.argmin(dist)]]), group.light_id,
                                                       (float(group.x_m), float(group.y_m))))
        return sorted(found, key=lambda line: line.s_m)

    def _junction_entries(self) -> list[JunctionEntry]:
        lanes, entries = self.map.lanes, []
        signalled_lanes = {line.segment_id for g in getattr(self.map, "signals", ()) for line in g.stop_lines}
        for i in range(1, len(self.lane_ids)):
            k, before = int(self.lane_ids[i]), int(self.lane_ids[i - 1])
            if k >= 0 and k != before and lanes[k].in_junction and not (before >= 0 and lanes[before].in_junction):
                entries.append(JunctionEntry(float(self.s[i - 1]), k, lanes[k].junction_id, before in signalled_lanes))
        return entries

    # -- the ego on the route ------------------------------------------------------------

    def locate(self, x_m: float, y_m: float) -> tuple[float, float]:
        """(arc length, signed lateral offset, + = left of the route) of a point, searched
        near the previous answer so a looping route is followed in order."""
        lo = int(np.searchsorted(self.s, self.s[self._index] - _SEARCH_BACK_M))
        hi = min(int(np.searchsorted(self.s, self.s[self._index] + _SEARCH_AHEAD_M)) + 2, len(self.xy))
        a, b = self.xy[lo:hi - 1], self.xy[lo + 1:hi]
        ab = b - a
        t = np.clip(((x_m - a[:, 0]) * ab[:, 0] + (y_m - a[:, 1]) * ab[:, 1]) / np.maximum((ab * ab).sum(1), 1e-12),
                    0.0, 1.0)
        foot = a + t[:, None] * ab
        dist = np.hypot(foot[:, 0] - x_m, foot[:, 1] - y_m)
        j = int(np.argmin(dist))
        self._index = lo + j
        s = float(self.s[lo + j] + t[j] * math.hypot(*ab[j]))
        lateral = float(-(x_m - foot[j, 0]) * ab[j, 1] + (y_m - foot[j, 1]) * ab[j, 0]) / max(math.hypot(*ab[j]), 1e-9)
        return s, lateral

    def reset_search(self) -> None:
        self._index = 0

    def window(self, s_from_m: float, s_to_m: float) -> np.ndarray:
        """Indices of the route points between two arc lengths (at least two)."""
        lo = max(int(np.searchsorted(self.s, s_from_m)) - 1, 0)
        hi = min(int(np.searchsorted(self.s, s_to_m)) + 1, len(self.s))
        if hi - lo < 2:
            lo, hi = max(len(self.s) - 2, 0), len(self.s)
        return np.arange(lo, hi)

    def pose_at(self, s_m: float) -> tuple[float, float, float]:
        s = float(np.clip(s_m, 0.0, self.s[-1]))
        return (float(np.interp(s, self.s, self.xy[:, 0])), float(np.interp(s, self.s, self.xy[:, 1])),
                float(np.interp(s, self.s, self.yaw)))

    def offset_points(self, idx: np.ndarray, lateral_m: np.ndarray | float) -> np.ndarray:
        """Route points shifted sideways (+ = left), e.g. onto the neighbour lane."""
        normal = np.column_stack([-np.sin(self.yaw[idx]), np.cos(self.yaw[idx])])
        return self.xy[idx] + normal * np.asarray(lateral_m, np.float64).reshape(-1, 1)

    def lane_at(self, s_m: float) -> int:
        return int(self.lane_ids[min(int(np.searchsorted(self.s, s_m, side="right")) - 1, len(self.s) - 1)])
