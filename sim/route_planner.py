"""Global route planner: A* over the lane graph, with CARLA's route commands.

The semantics follow CARLA's ``GlobalRoutePlanner.trace_route``: a route is a list of
waypoints every ``sampling_resolution_m`` carrying a ``RoadOption``; LANEFOLLOW along
roads, the junction's turn (LEFT/RIGHT/STRAIGHT) on its connector and on the approach
to it, CHANGELANELEFT/CHANGELANERIGHT where the route moves to a neighbouring lane.

The search runs on :class:`sim.road_map.RoadMap`'s lane graph with plain numpy: a node
is a lane segment entered at some arc length; edges are successors (cost: the distance
driven) and lane changes to same-direction neighbours (cost: ``lane_change_cost_m``
plus the distance driven during the change).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from drivestack.schema import RoadOption, Route, RouteWaypoint
from sim.carla_frames import wrap_angle
from sim.road_map import STRAIGHT_TURN_LIMIT_RAD, LaneSegment, RoadMap

log = logging.getLogger(__name__)

# Start and goal must lie this close to a lane centre line.
MAX_LANE_DISTANCE_M = 10.0
# Start lane choice: metres of distance worth a heading mismatch of (1 - cos) (as RoadMap).
HEADING_WEIGHT_M = 10.0
# CARLA's agents slow down for a turn before the junction: the approach carries the turn.
JUNCTION_APPROACH_M = 8.0
# Goal lanes considered, nearest first: any at most this much farther away than the
# nearest one (the opposite lane of a two-lane road, overlapping junction connectors).
GOAL_LANE_MARGIN_M = 4.0
# Lanes this close in distance to the goal are equally near (a lane's end and its
# successor's start): one search takes the cheapest of them.
GOAL_TIE_M = 0.05
# A lane change needs at least this much lane left; shorter ones would be a jump.
MIN_LANE_CHANGE_M = 6.0
RANDOM_START_ATTEMPTS = 100
_EPS_M = 1e-6


class NoRouteError(ValueError):
    """No drivable route exists between the requested points."""


@dataclass(frozen=True)
class _Drive:
    """Follow one lane from ``s_start_m`` to ``s_end_m``."""

    segment_id: int
    s_start_m: float
    s_end_m: float


@dataclass(frozen=True)
class _LaneChange:
    """Leave ``from_segment_id`` at ``from_s_m``; join ``to_segment_id`` at ``to_s_m``
    after ``travel_m`` of driving alongside (``to_s_start_m`` is the departure point
    projected onto the target lane)."""

    from_segment_id: int
    from_s_m: float
    travel_m: float
    to_segment_id: int
    to_s_start_m: float
    to_s_m: float
    option: RoadOption
    cost_m: float


@dataclass(frozen=True)
class _GoalLane:
    segment_id: int
    s_m: float
    distance_m: float


@dataclass(frozen=True)
class _Sample:
    x_m: float
    y_m: float
    yaw_rad: float
    segment_id: int
    leg_index: int
    distance_m: float  # along the route from its start


_FOLLOW = "follow"
_GOAL = "goal"


def route_lane_ids(route: Route) -> set[int]:
    """The lane segments the route's waypoints lie on."""
    return {wp.lane_segment_id for wp in route.waypoints if wp.lane_segment_id >= 0}


class RoutePlanner:
    """Plans routes on a :class:`RoadMap`; holds no state between calls."""

    def __init__(self, road_map: RoadMap, sampling_resolution_m: float = 2.0,
                 lane_change_cost_m: float = 10.0, lane_change_length_m: float = 15.0) -> None:
        if not (math.isfinite(sampling_resolution_m) and sampling_resolution_m > 0):
            raise ValueError(f"sampling_resolution_m={sampling_resolution_m}; it must be > 0")
        if not (math.isfinite(lane_change_cost_m) and lane_change_cost_m >= 0):
            raise ValueError(f"lane_change_cost_m={lane_change_cost_m}; it must be >= 0")
        if not (math.isfinite(lane_change_length_m) and lane_change_length_m > 0):
            raise ValueError(f"lane_change_length_m={lane_change_length_m}; it must be > 0")
        self.road_map = road_map
        self.sampling_resolution_m = float(sampling_resolution_m)
        self.lane_change_cost_m = float(lane_change_cost_m)
        self.lane_change_length_m = float(lane_change_length_m)
        self._lanes = road_map.lanes
        points = np.concatenate([lane.points_xy for lane in self._lanes])
        self._point_segment = np.concatenate(
            [np.full(len(lane.points_xy), lane.segment_id) for lane in self._lanes])
        self._tree = cKDTree(points)
        self._unwrapped_yaw = [np.unwrap(lane.yaw_rad) for lane in self._lanes]

    # -- public API -------------------------------------------------------------------

    route_lane_ids = staticmethod(route_lane_ids)

    def plan(self, start_xy_yaw: Sequence[float], goal_xy: Sequence[float]) -> Route:
        """Shortest route from a start pose to a goal point.

        Starts on the nearest lane heading the start's way, at the projected arc length;
        ends on the nearest reachable lane near the goal. Raises :class:`NoRouteError`.
        """
        x_m, y_m, yaw_rad = (float(v) for v in start_xy_yaw)
        goal_x_m, goal_y_m = (float(v) for v in goal_xy)
        start_segment, start_s = self._localize_start(x_m, y_m, yaw_rad)
        legs = None
        # The nearest lane to the goal; the next nearest only where it is unreachable.
        for tier, goals in enumerate(self._goal_lanes(goal_x_m, goal_y_m)):
            legs = self._search(start_segment, start_s, goals, (goal_x_m, goal_y_m))
            if legs is not None:
                if tier > 0:
                    log.debug("%s: the lanes nearest the goal (%.1f, %.1f) are unreachable; the route ends "
                              "%.1f m from it", self.road_map.name, goal_x_m, goal_y_m, goals[0].distance_m)
                break
        if legs is None:
            raise NoRouteError(f"no path from ({x_m:.1f}, {y_m:.1f}) to ({goal_x_m:.1f}, {goal_y_m:.1f})")
        return self._route_from_legs(legs)

    def random_route(self, rng: np.random.Generator, length_m: float) -> Route:
        """A random feasible route of at least ``length_m`` (a little more when it would
        end inside a junction), deterministic for a given ``rng`` state.

        Starts at a random position on a non-junction lane (uniform over lane length) and
        follows a random successor at every branch.
        """
        if not (math.isfinite(length_m) and length_m > 0):
            raise NoRouteError(f"route length {length_m} m: it must be a finite number > 0")
        roads = [lane for lane in self._lanes if not lane.in_junction and lane.successors]
        if not roads:
            raise NoRouteError(f"{self.road_map.name}: no lane outside junctions to start a route on")
        weights = np.array([lane.length_m for lane in roads])
        weights /= weights.sum()
        for _ in range(RANDOM_START_ATTEMPTS):
            lane = roads[int(rng.choice(len(roads), p=weights))]
            s_m = float(rng.uniform(0.0, lane.length_m))
            legs = self._random_walk(rng, lane, s_m, length_m)
            if legs is not None:
                return self._route_from_legs(legs)
        raise NoRouteError(f"{self.road_map.name}: no random walk of {length_m:.0f} m avoided dead ends "
                           f"in {RANDOM_START_ATTEMPTS} attempts")

    def allowed_lane_ids(self, route: Route) -> frozenset[int]:
        """The route's lanes plus every same-direction lane beside them (followed through
        neighbour links), as CARLA's outside-route-lanes test allows any lane of the
        route's roads that runs the route's way."""
        allowed: set[int] = set()
        pending = list(route_lane_ids(route))
        while pending:
            segment_id = pending.pop()
            if segment_id in allowed:
                continue
            allowed.add(segment_id)
            lane = self._lanes[segment_id]
            pending.extend(n for n in (lane.left_neighbor, lane.right_neighbor) if n >= 0)
        return frozenset(allowed)

    # -- localization -----------------------------------------------------------------

    def _localize_start(self, x_m: float, y_m: float, yaw_rad: float) -> tuple[int, float]:
        """The lane nearest the start that heads its way, weighted like
        ``RoadMap.nearest_lane(x, y, yaw)`` but over every lane in range: that method
        scores a fixed number of nearest points, which in a dense junction could all
        belong to crossing connectors."""
        near = self._lanes_near(x_m, y_m, MAX_LANE_DISTANCE_M)
        if not near:
            raise NoRouteError(f"no drivable lane within {MAX_LANE_DISTANCE_M:.0f} m of start ({x_m:.1f}, {y_m:.1f})")
        best = None
        for distance_m, segment_id, s_m in near:
            cos_heading = math.cos(wrap_angle(yaw_rad - self._lanes[segment_id].pose_at(s_m)[2]))
            cost_m = distance_m + HEADING_WEIGHT_M * (1.0 - cos_heading)
            if cos_heading > 0.0 and (best is None or cost_m < best[0]):
                best = (cost_m, segment_id, s_m)
        if best is None:
            raise NoRouteError(f"no lane heading {math.degrees(yaw_rad):.0f} deg within "
                               f"{MAX_LANE_DISTANCE_M:.0f} m of start ({x_m:.1f}, {y_m:.1f})")
        return best[1], best[2]

    def _goal_lanes(self, x_m: float, y_m: float) -> list[list[_GoalLane]]:
        """Candidate goal lanes in tiers of equal distance, nearest tier first."""
        near = self._lanes_near(x_m, y_m, MAX_LANE_DISTANCE_M)
        if not near:
            raise NoRouteError(f"no drivable lane within {MAX_LANE_DISTANCE_M:.0f} m of goal ({x_m:.1f}, {y_m:.1f})")
        tiers: list[list[_GoalLane]] = []
        for distance_m, segment_id, s_m in near:
            if distance_m > near[0][0] + GOAL_LANE_MARGIN_M:
                break
            if not tiers or distance_m > tiers[-1][0].distance_m + GOAL_TIE_M:
                tiers.append([])
            tiers[-1].append(_GoalLane(segment_id, s_m, distance_m))
        return tiers

    def _lanes_near(self, x_m: float, y_m: float, radius_m: float) -> list[tuple[float, int, float]]:
        """(distance to the centre line, segment, projected arc length), nearest first."""
        idx = np.asarray(self._tree.query_ball_point((x_m, y_m), r=radius_m + 1.0), dtype=np.int64)
        found = []
        for segment_id in np.unique(self._point_segment[idx]):
            lane = self._lanes[int(segment_id)]
            s_m = _project(lane, x_m, y_m)
            px, py, _ = lane.pose_at(s_m)
            distance_m = math.hypot(x_m - px, y_m - py)
            if distance_m <= radius_m:
                found.append((distance_m, lane.segment_id, s_m))
        found.sort()
        return found

    # -- search -----------------------------------------------------------------------

    def _search(self, start_segment: int, start_s: float, goals: list[_GoalLane],
                goal_xy: tuple[float, float]) -> list[_Drive | _LaneChange] | None:
        """A* over (segment, entry arc length) states; returns the legs or None."""
        goals_by_segment: dict[int, list[_GoalLane]] = {}
        for goal in goals:
            goals_by_segment.setdefault(goal.segment_id, []).append(goal)
        # Every goal lane is within `slack` of the goal point: the heuristic stays admissible.
        slack_m = max(goal.distance_m for goal in goals)
        gx, gy = goal_xy

        def heuristic(x_m: float, y_m: float) -> float:
            return max(0.0, math.hypot(x_m - gx, y_m - gy) - slack_m)

        # node: (segment, s on entry, cost so far, parent node, how it was reached)
        nodes: list[tuple[int, float, float, int, object]] = []
        heap: list[tuple[float, int]] = []

        def push(segment_id: int, s_m: float, cost_m: float, parent: int, how: object, estimate_m: float) -> None:
            nodes.append((segment_id, s_m, cost_m, parent, how))
            heapq.heappush(heap, (cost_m + estimate_m, len(nodes) - 1))

        x0, y0, _ = self._lanes[start_segment].pose_at(start_s)
        push(start_segment, start_s, 0.0, -1, None, heuristic(x0, y0))
        settled: dict[int, list[tuple[float, float]]] = {}
        while heap:
            _, node_id = heapq.heappop(heap)
            segment_id, s_m, cost_m, _, how = nodes[node_id]
            if how is _GOAL:
                return self._legs_to(nodes, node_id)
            # Entering a lane earlier for at most the extra distance is at least as good.
            if any(s0 <= s_m + _EPS_M and c0 + (s_m - s0) <= cost_m + _EPS_M
                   for s0, c0 in settled.get(segment_id, ())):
                continue
            settled.setdefault(segment_id, []).append((s_m, cost_m))
            lane = self._lanes[segment_id]
            for goal in goals_by_segment.get(segment_id, ()):
                if goal.s_m >= s_m - _EPS_M:
                    push(segment_id, max(goal.s_m, s_m), cost_m + max(goal.s_m - s_m, 0.0), node_id, _GOAL, 0.0)
            for successor in lane.successors:
                px, py = self._lanes[successor].points_xy[0]
                push(successor, 0.0, cost_m + lane.length_m - s_m, node_id, _FOLLOW, heuristic(px, py))
            for change in self._lane_changes(lane, s_m):
                px, py, _ = self._lanes[change.to_segment_id].pose_at(change.to_s_m)
                push(change.to_segment_id, change.to_s_m, cost_m + change.cost_m, node_id, change, heuristic(px, py))
        return None

    def _legs_to(self, nodes: list[tuple[int, float, float, int, object]], node_id: int
                 ) -> list[_Drive | _LaneChange]:
        chain = []
        while node_id >= 0:
            chain.append(nodes[node_id])
            node_id = nodes[node_id][3]
        chain.reverse()
        legs: list[_Drive | _LaneChange] = []
        for (segment_id, s_m, *_), (_, next_s, _, _, how) in zip(chain, chain[1:]):
            if isinstance(how, _LaneChange):
                legs.append(how)
            else:
                end_m = next_s if how is _GOAL else self._lanes[segment_id].length_m
                legs.append(_Drive(segment_id, s_m, end_m))
        return legs

    def _lane_changes(self, lane: LaneSegment, s_m: float) -> list[_LaneChange]:
        """Lane changes starting at ``s_m``, spread over ``lane_change_length_m``."""
        travel_m = min(self.lane_change_length_m, lane.length_m - s_m)
        if lane.in_junction or travel_m < MIN_LANE_CHANGE_M:
            return []
        changes = []
        x0, y0, _ = lane.pose_at(s_m)
        x1, y1, _ = lane.pose_at(s_m + travel_m)
        for target_id, option in ((lane.left_neighbor, RoadOption.CHANGELANELEFT),
                                  (lane.right_neighbor, RoadOption.CHANGELANERIGHT)):
            if target_id < 0:
                continue
            target = self._lanes[target_id]
            to_s = _project(target, x1, y1)
            tx, ty, _ = target.pose_at(to_s)
            # The neighbour link comes from the lane's middle; make sure it runs alongside here.
            if math.hypot(tx - x1, ty - y1) > 1.5 * (lane.width_m + target.width_m):
                continue
            changes.append(_LaneChange(lane.segment_id, s_m, travel_m, target_id, _project(target, x0, y0), to_s,
                                       option, self.lane_change_cost_m + math.hypot(tx - x0, ty - y0)))
        return changes

    def _random_walk(self, rng: np.random.Generator, lane: LaneSegment, s_m: float,
                     length_m: float) -> list[_Drive] | None:
        legs = []
        # The overshoot keeps the summed leg lengths >= length_m despite rounding.
        remaining_m = length_m + _EPS_M
        while lane.length_m - s_m < remaining_m or lane.in_junction:
            legs.append(_Drive(lane.segment_id, s_m, lane.length_m))
            remaining_m -= lane.length_m - s_m
            if not lane.successors:
                return None
            lane = self._lanes[lane.successors[int(rng.integers(len(lane.successors)))]]
            s_m = 0.0
            if remaining_m <= 0.0 and not lane.in_junction:
                return legs  # the length ran out inside a junction: end where the route leaves it
        legs.append(_Drive(lane.segment_id, s_m, s_m + remaining_m))
        return legs

    # -- waypoints ----------------------------------------------------------------------

    def _route_from_legs(self, legs: list[_Drive | _LaneChange]) -> Route:
        samples: list[_Sample] = []
        leg_start_m = []
        distance_m = 0.0
        for leg_index, leg in enumerate(legs):
            leg_start_m.append(distance_m)
            if isinstance(leg, _Drive):
                distance_m = self._sample_drive(leg, leg_index, distance_m, samples)
            else:
                distance_m = self._sample_lane_change(leg, leg_index, distance_m, samples)
        if len(samples) == 1:
            samples.append(samples[0])
        options = self._options(legs, leg_start_m, samples)
        waypoints = tuple(RouteWaypoint(p.x_m, p.y_m, p.yaw_rad, option, p.segment_id)
                          for p, option in zip(samples, options))
        return Route(waypoints=waypoints, length_m=distance_m)

    def _sample_drive(self, leg: _Drive, leg_index: int, distance_m: float, samples: list[_Sample]) -> float:
        lane = self._lanes[leg.segment_id]
        length_m = leg.s_end_m - leg.s_start_m
        if samples and length_m < _EPS_M:
            return distance_m
        n = max(1, math.ceil(length_m / self.sampling_resolution_m - 1e-9))
        # The first point of a leg is the last point of the previous one.
        along = length_m * np.arange(0 if not samples else 1, n + 1) / n
        xs, ys, yaws = self._poses_at(lane, leg.s_start_m + along)
        samples.extend(_Sample(float(x), float(y), float(yaw), leg.segment_id, leg_index, distance_m + float(d))
                       for x, y, yaw, d in zip(xs, ys, yaws, along))
        return distance_m + length_m

    def _sample_lane_change(self, leg: _LaneChange, leg_index: int, distance_m: float,
                            samples: list[_Sample]) -> float:
        """A smoothstep blend from the lane's centre to the neighbour's; the first half
        of the manoeuvre counts as the old lane, the second half as the new one."""
        source, target = self._lanes[leg.from_segment_id], self._lanes[leg.to_segment_id]
        n = max(2, math.ceil(leg.travel_m / self.sampling_resolution_m))
        fine = 8  # sub-steps per waypoint, for the arc length and the heading
        t = np.linspace(0.0, 1.0, n * fine + 1)
        weight = t * t * (3.0 - 2.0 * t)
        a = np.stack(self._poses_at(source, leg.from_s_m + leg.travel_m * t)[:2], axis=1)
        b = np.stack(self._poses_at(target, leg.to_s_start_m + (leg.to_s_m - leg.to_s_start_m) * t)[:2], axis=1)
        path = a + weight[:, None] * (b - a)
        steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
        along = np.concatenate([[0.0], np.cumsum(steps)])
        heading = np.gradient(path, axis=0)
        yaw = np.arctan2(heading[:, 1], heading[:, 0])
        first = 0 if not samples else 1
        for i in range(first, n + 1):
            j = i * fine
            segment_id = source.segment_id if t[j] <= 0.5 else target.segment_id
            samples.append(_Sample(float(path[j, 0]), float(path[j, 1]), float(yaw[j]), segment_id,
                                   leg_index, distance_m + float(along[j])))
        return distance_m + float(along[-1])

    def _poses_at(self, lane: LaneSegment, s_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised ``LaneSegment.pose_at``: (x, y, yaw) arrays at arc lengths ``s_m``."""
        s = np.clip(s_m, 0.0, lane.length_m)
        x = np.interp(s, lane.s_m, lane.points_xy[:, 0])
        y = np.interp(s, lane.s_m, lane.points_xy[:, 1])
        yaw = np.interp(s, lane.s_m, self._unwrapped_yaw[lane.segment_id])
        return x, y, np.arctan2(np.sin(yaw), np.cos(yaw))

    def _options(self, legs: list[_Drive | _LaneChange], leg_start_m: list[float],
                 samples: list[_Sample]) -> list[RoadOption]:
        leg_option = [RoadOption.LANEFOLLOW] * len(legs)
        approaches: list[tuple[float, RoadOption]] = []  # (where a connector run starts, its turn)
        i = 0
        while i < len(legs):
            leg = legs[i]
            if isinstance(leg, _LaneChange):
                leg_option[i] = leg.option
                i += 1
                continue
            j = i
            while j < len(legs) and self._is_connector(legs[j]):
                j += 1
            if j == i:
                i += 1
                continue
            turn = self._turn_of([legs[k].segment_id for k in range(i, j)])
            leg_option[i:j] = [turn] * (j - i)
            approaches.append((leg_start_m[i], turn))
            i = j
        options = [leg_option[p.leg_index] for p in samples]
        for k in range(1, len(samples)):
            # CARLA also flags the waypoint where the lane change starts, unless that is
            # the end of a junction, which keeps its turn.
            starts_change = samples[k].leg_index != samples[k - 1].leg_index and \
                isinstance(legs[samples[k].leg_index], _LaneChange)
            if starts_change and options[k - 1] == RoadOption.LANEFOLLOW:
                options[k - 1] = leg_option[samples[k].leg_index]
        distances = np.array([p.distance_m for p in samples])  # non-decreasing
        for entry_m, turn in approaches:
            first = int(np.searchsorted(distances, entry_m - JUNCTION_APPROACH_M, side="left"))
            last = int(np.searchsorted(distances, entry_m + _EPS_M, side="right"))
            for k in range(first, last):
                if options[k] == RoadOption.LANEFOLLOW:
                    options[k] = turn
        return options

    def _is_connector(self, leg: _Drive | _LaneChange) -> bool:
        return isinstance(leg, _Drive) and self._lanes[leg.segment_id].in_junction

    def _turn_of(self, segment_ids: list[int]) -> RoadOption:
        """The turn of a run of junction connectors, as one manoeuvre (CARLA looks past
        tiny intersection edges the same way)."""
        if len(segment_ids) == 1:
            return self._lanes[segment_ids[0]].turn
        change = wrap_angle(float(self._lanes[segment_ids[-1]].yaw_rad[-1] - self._lanes[segment_ids[0]].yaw_rad[0]))
        if abs(change) < STRAIGHT_TURN_LIMIT_RAD:
            return RoadOption.STRAIGHT
        return RoadOption.LEFT if change > 0 else RoadOption.RIGHT


def _project(lane: LaneSegment, x_m: float, y_m: float) -> float:
    """Arc length of the point of ``lane`` closest to (x, y)."""
    j = int(np.argmin(np.hypot(lane.points_xy[:, 0] - x_m, lane.points_xy[:, 1] - y_m)))
    dx, dy = x_m - lane.points_xy[j, 0], y_m - lane.points_xy[j, 1]
    along = dx * math.cos(lane.yaw_rad[j]) + dy * math.sin(lane.yaw_rad[j])
    return float(min(max(lane.s_m[j] + along, 0.0), lane.length_m))
