"""Pedestrians: walk the sidewalks, cross at the crosswalks of junction mouths.

Sidewalks run beside the outermost lane of each road (offset to its right), so any
OpenDRIVE map gets them. At a sidewalk end a pedestrian either turns back or crosses
the road mouth to the opposite sidewalk: on a red light for the traffic it walks in
front of (the crosswalk lies between the stop line and the junction), or, without a
light, when no car is near. A scenario can add a pedestrian who crosses in front of the
ego at a chosen point of its route.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from drivestack.schema import ActorKind, ActorState, Route, RouteWaypoint, TrafficLightState
from sim.lane_arrays import LaneArrays
from sim.road_map import RoadMap
from sim.route_progress import RouteProgress
from sim.scenario import PedestrianCrossing
from sim.traffic_lights import TrafficLightController

SIDEWALK_OFFSET_M = 1.4  # sidewalk centre beyond the lane's outer edge
CROSSWALK_FROM_END_M = 2.5  # crosswalk centre, measured back from the junction mouth
PEDESTRIAN_SIZE_M = 0.6
WALK_SPEED_RANGE_MPS = (1.1, 1.6)
MAX_WAIT_S = 40.0
CLEAR_RADIUS_M = 7.0  # no car this close to a crosswalk when a pedestrian steps onto it
UNSIGNALLED_CLEAR_RADIUS_M = 25.0


class Mode(enum.IntEnum):
    WALK = 0
    WAIT = 1
    CROSS = 2
    STAND = 3


@dataclass(frozen=True)
class Crosswalk:
    from_lane: int  # the sidewalk (outer lane) the crossing starts from, at its end
    to_lane: int  # the opposite sidewalk, entered at its start
    light_id: int  # light of ``from_lane``'s stop line, -1 if unsignalled
    p0: tuple[float, float]
    p1: tuple[float, float]


@dataclass
class _Walker:
    lane: int
    s_m: float
    direction: int  # +1 along the lane, -1 against it
    speed_mps: float
    mode: Mode = Mode.WALK
    wait_s: float = 0.0
    cross_from: tuple[float, float] = (0.0, 0.0)
    cross_to: tuple[float, float] = (0.0, 0.0)
    cross_progress_m: float = 0.0
    next_lane: int = -1
    next_s_m: float = 0.0
    next_direction: int = 1
    light_id: int = -1
    scripted: bool = False


class PedestrianManager:
    def __init__(self, road_map: RoadMap, lanes: LaneArrays, rng: np.random.Generator) -> None:
        self.map = road_map
        self.lanes = lanes
        self.rng = rng
        self.walkers: list[_Walker] = []
        self.sidewalk_lanes = np.array(
            [seg.segment_id for seg in road_map.lanes
             if not seg.in_junction and seg.right_neighbor < 0 and seg.length_m > 10.0], dtype=np.int64)
        self.crosswalks = self._find_crosswalks()
        self._crosswalk_at_end = {cw.from_lane: cw for cw in self.crosswalks}
        self._crosswalk_at_start = {cw.to_lane: cw for cw in self.crosswalks}
        self.xy = np.zeros((0, 2))
        self.yaw_rad = np.zeros(0)

    def _sidewalk_point(self, lane: int, s_m: float) -> tuple[float, float]:
        x, y, yaw, _ = self.lanes.reference(np.array([lane]), np.array([s_m]))
        offset = self.lanes.width_m[lane] / 2 + SIDEWALK_OFFSET_M
        return float(x[0] + offset * math.sin(yaw[0])), float(y[0] - offset * math.cos(yaw[0]))

    def _find_crosswalks(self) -> tuple[Crosswalk, ...]:
        """Pair each outer lane's end with the start of the opposite outer lane of its road."""
        found = []
        for a in self.sidewalk_lanes:
            seg_a = self.map.lanes[a]
            if not any(self.map.lanes[c].in_junction for c in seg_a.successors):
                continue
            end = seg_a.points_xy[-1]
            best, best_d = -1, 40.0
            for b in self.sidewalk_lanes:
                seg_b = self.map.lanes[b]
                if b == a or seg_b.road_id != seg_a.road_id or seg_b.lane_id * seg_a.lane_id > 0:
                    continue
                d = float(np.linalg.norm(seg_b.points_xy[0] - end))
                if d < best_d:
                    best, best_d = int(b), d
            if best < 0:
                continue
            light = self.map.light_of_segment(int(a))
            p0 = self._sidewalk_point(int(a), self.lanes.length_m[a] - CROSSWALK_FROM_END_M)
            p1 = self._sidewalk_point(best, CROSSWALK_FROM_END_M)
            found.append(Crosswalk(int(a), best, light, p0, p1))
        return tuple(found)

    # -- lifecycle ----------------------------------------------------------------------

    def spawn(self, count: int) -> None:
        if count and not len(self.sidewalk_lanes):
            raise ValueError(f"{self.map.name}: no sidewalk to place pedestrians on")
        weights = self.lanes.length_m[self.sidewalk_lanes]
        weights = weights / weights.sum()
        for _ in range(count):
            lane = int(self.rng.choice(self.sidewalk_lanes, p=weights))
            s = float(self.rng.uniform(3.0, self.lanes.length_m[lane] - 3.0))
            self.walkers.append(_Walker(lane, s, int(self.rng.choice([-1, 1])),
                                        float(self.rng.uniform(*WALK_SPEED_RANGE_MPS))))
        self._update_positions()

    def add_crossing(self, from_xy: tuple[float, float], to_xy: tuple[float, float], speed_mps: float) -> int:
        """A scripted pedestrian who walks straight from ``from_xy`` to ``to_xy`` and then
        stands there, off the carriageway."""
        w = _Walker(-1, 0.0, 1, speed_mps, Mode.CROSS, cross_from=from_xy, cross_to=to_xy, scripted=True)
        self.walkers.append(w)
        self._update_positions()
        return len(self.walkers) - 1

    def step(self, dt_s: float, lights: TrafficLightController, vehicles_xy: np.ndarray) -> None:
        for w in self.walkers:
            if w.mode == Mode.WALK:
                self._walk(w, dt_s)
            elif w.mode == Mode.WAIT:
                self._wait(w, dt_s, lights, vehicles_xy)
            elif w.mode == Mode.CROSS:
                self._cross(w, dt_s)
        self._update_positions()

    def _walk(self, w: _Walker, dt_s: float) -> None:
        w.s_m += w.direction * w.speed_mps * dt_s
        length = self.lanes.length_m[w.lane]
        at_end = w.direction > 0 and w.s_m >= length - CROSSWALK_FROM_END_M
        at_start = w.direction < 0 and w.s_m <= CROSSWALK_FROM_END_M
        if not (at_end or at_start):
            return
        w.s_m = min(max(w.s_m, CROSSWALK_FROM_END_M), length - CROSSWALK_FROM_END_M)
        crosswalk = self._crosswalk_at_end.get(w.lane) if at_end else self._crosswalk_at_start.get(w.lane)
        if crosswalk is None or self.rng.random() < 0.4:
            w.direction = -w.direction
            return
        if at_end:
            start, goal, lane, s = crosswalk.p0, crosswalk.p1, crosswalk.to_lane, CROSSWALK_FROM_END_M
        else:
            start, goal, lane = crosswalk.p1, crosswalk.p0, crosswalk.from_lane
            s = self.lanes.length_m[lane] - CROSSWALK_FROM_END_M
        w.mode, w.wait_s, w.cross_from, w.cross_to = Mode.WAIT, 0.0, start, goal
        w.next_lane, w.next_s_m, w.light_id = lane, s, crosswalk.light_id
        w.next_direction = 1 if at_end else -1

    def _wait(self, w: _Walker, dt_s: float, lights: TrafficLightController, vehicles_xy: np.ndarray) -> None:
        w.wait_s += dt_s
        if self._may_cross(w, lights, vehicles_xy):
            w.mode, w.cross_progress_m = Mode.CROSS, 0.0
        elif w.wait_s > MAX_WAIT_S:
            w.mode, w.direction = Mode.WALK, -w.direction

    def _may_cross(self, w: _Walker, lights: TrafficLightController, vehicles_xy: np.ndarray) -> bool:
        mid = np.array([(w.cross_from[0] + w.cross_to[0]) / 2, (w.cross_from[1] + w.cross_to[1]) / 2])
        d = np.linalg.norm(vehicles_xy - mid, axis=1) if len(vehicles_xy) else np.array([np.inf])
        if w.light_id < 0:
            return bool(d.min() > UNSIGNALLED_CLEAR_RADIUS_M)
        crossing_time_s = math.dist(w.cross_from, w.cross_to) / w.speed_mps + 2.0
        red = lights.state(w.light_id) == TrafficLightState.RED
        return red and lights.red_remaining_s(w.light_id) > crossing_time_s and bool(d.min() > CLEAR_RADIUS_M)

    def _cross(self, w: _Walker, dt_s: float) -> None:
        w.cross_progress_m += w.speed_mps * dt_s
        if w.cross_progress_m < math.dist(w.cross_from, w.cross_to):
            return
        if w.scripted:
            w.mode = Mode.STAND
            return
        w.mode, w.lane, w.s_m, w.direction = Mode.WALK, w.next_lane, w.next_s_m, w.next_direction

    def _update_positions(self) -> None:
        """Positions and headings of all pedestrians; sidewalk walkers in one lane lookup."""
        n = len(self.walkers)
        xy, yaw = np.zeros((n, 2)), np.zeros(n)
        walking = [i for i, w in enumerate(self.walkers) if w.mode == Mode.WALK and not w.scripted]
        if walking:
            lanes = np.array([self.walkers[i].lane for i in walking])
            x, y, lane_yaw, _ = self.lanes.reference(lanes, np.array([self.walkers[i].s_m for i in walking]))
            offset = self.lanes.width_m[lanes] / 2 + SIDEWALK_OFFSET_M
            xy[walking] = np.column_stack([x + offset * np.sin(lane_yaw), y - offset * np.cos(lane_yaw)])
            backwards = np.array([self.walkers[i].direction < 0 for i in walking])
            yaw[walking] = lane_yaw + np.where(backwards, math.pi, 0.0)
        on_sidewalk = set(walking)
        for i, w in enumerate(self.walkers):
            if i in on_sidewalk:
                continue
            if w.mode == Mode.WAIT:
                xy[i] = w.cross_from
                continue
            total = max(math.dist(w.cross_from, w.cross_to), 1e-6)
            f = min(w.cross_progress_m / total, 1.0)
            xy[i] = (w.cross_from[0] + f * (w.cross_to[0] - w.cross_from[0]),
                     w.cross_from[1] + f * (w.cross_to[1] - w.cross_from[1]))
            yaw[i] = math.atan2(w.cross_to[1] - w.cross_from[1], w.cross_to[0] - w.cross_from[0])
        self.xy = xy
        self.yaw_rad = np.arctan2(np.sin(yaw), np.cos(yaw))

    # -- views ---------------------------------------------------------------------------

    def on_road_xy(self) -> np.ndarray:
        """Positions of pedestrians on the carriageway (crossing), which cars must yield to."""
        idx = [i for i, w in enumerate(self.walkers) if w.mode == Mode.CROSS]
        return self.xy[idx] if idx else np.zeros((0, 2))

    def actor_states(self, first_id: int) -> list[ActorState]:
        xs, ys, yaws = self.xy[:, 0].tolist(), self.xy[:, 1].tolist(), self.yaw_rad.tolist()
        return [ActorState(first_id + i, ActorKind.PEDESTRIAN, xs[i], ys[i], yaws[i],
                           w.speed_mps if w.mode in (Mode.WALK, Mode.CROSS) else 0.0,
                           PEDESTRIAN_SIZE_M, PEDESTRIAN_SIZE_M, 1.8)
                for i, w in enumerate(self.walkers)]


def crossing_path(road_map: RoadMap, route: Route, progress: RouteProgress, crossing: PedestrianCrossing
                  ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where a scripted pedestrian crosses in front of the ego: from the kerb on the
    ego's right across the whole carriageway to the far kerb, at the first route point
    at or after ``crossing.route_distance_m`` outside a junction (a road, not a junction)."""
    waypoints = route.waypoints
    i = progress.index_at(crossing.route_distance_m)
    while i < len(waypoints) - 1 and _in_junction(road_map, waypoints[i]):
        i += 1
    wp = waypoints[i]
    nx, ny = -math.sin(wp.yaw_rad), math.cos(wp.yaw_rad)
    start_offset, goal_offset = -_kerb_offset_m(road_map, wp, -1), _kerb_offset_m(road_map, wp, +1)
    return ((wp.x_m + nx * start_offset, wp.y_m + ny * start_offset),
            (wp.x_m + nx * goal_offset, wp.y_m + ny * goal_offset))


def _in_junction(road_map: RoadMap, wp: RouteWaypoint) -> bool:
    return wp.lane_segment_id >= 0 and road_map.lanes[wp.lane_segment_id].in_junction


def _kerb_offset_m(road_map: RoadMap, wp: RouteWaypoint, side: int) -> float:
    """Distance from a route point, to the left (+1) or right (-1), where no lane is."""
    nx, ny = -math.sin(wp.yaw_rad) * side, math.cos(wp.yaw_rad) * side
    offset = 1.0
    while offset < 40.0:
        q = road_map.nearest_lane(wp.x_m + nx * offset, wp.y_m + ny * offset, max_distance_m=10.0)
        if q is None or abs(q.lateral_offset_m) > road_map.lanes[q.segment_id].width_m / 2 + 1.0:
            return offset
        offset += 0.5
    return offset
