"""Behaviour: what limits the speed along the route, and when to change lanes.

Each rule turns what the car perceives (tracks, light states) and the map into a
*stop point* on the route with the speed the obstacle moves along it: the planner
then keeps the lowest safe speed over all of them, as a constraint on the speed
profile. Rules: objects on the path (adaptive cruise behind a lead, stop for
pedestrians and stalled cars), red and yellow lights at the map's stop line, yielding
to crossing traffic at junction entries. Lane changes around a stalled car are a
small state machine that shifts the reference path onto the neighbour lane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivestack.config import load_params
from planning.inputs import Track
from planning.reference_path import ReferencePath

DEFAULT_PLANNER_PARAMS = Path(__file__).parent / "config" / "planner.yaml"
_STAND_TOLERANCE_M = 0.5


@dataclass(frozen=True)
class PlannerParams:
    speed_limit_fraction: float
    horizon_m: float
    response_time_s: float
    lateral_margin_m: float
    standstill_gap_vehicle_m: float
    standstill_gap_pedestrian_m: float
    time_gap_s: float
    prediction_horizon_s: float
    prediction_steps: int
    min_track_hits: int
    crossing_heading_rad: float
    moving_speed_mps: float
    stop_line_margin_m: float
    light_lookahead_m: float
    lamp_height_m: float
    light_gate_px: float
    light_memory_s: float
    contradiction_score: float
    yellow_max_stop_decel_mps2: float
    unknown_light_speed_mps: float
    junction_check_distance_m: float
    approaching_vehicle_distance_m: float
    approaching_vehicle_speed_mps: float
    committed_speed_mps: float
    stalled_speed_mps: float
    stalled_time_s: float
    lane_change_trigger_m: float
    lane_change_clear_behind_m: float
    lane_change_clear_ahead_m: float
    lane_change_duration_s: float
    lane_change_min_distance_m: float
    lane_return_after_m: float
    lane_change_junction_clearance_m: float
    lane_correction_gain: float
    lane_correction_max_m: float
    lane_width_tolerance_m: float
    lane_probe_near_m: float
    lane_probe_far_m: float

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PLANNER_PARAMS) -> PlannerParams:
        return load_params(cls, path)


@dataclass(frozen=True)
class StopPoint:
    """Stop (or follow) with the front bumper ``standstill_m`` before route arc length
    ``s_m``; the thing there moves along the route at ``speed_along_mps``."""

    s_m: float
    speed_along_mps: float
    standstill_m: float
    reason: str
    track_id: int = -1


def tracks_on_path(tracks: tuple[Track, ...], ref: ReferencePath, path_idx: np.ndarray, lateral_m: np.ndarray,
                   s_ego: float, ego_yaw_rad: float, ego_width_m: float, p: PlannerParams) -> list[StopPoint]:
    """Tracks whose box (or, for movers across the path, its extrapolation) reaches the
    corridor of the planned path ahead of the ego."""
    if not len(tracks) or len(path_idx) < 2:
        return []
    path = ref.offset_points(path_idx, lateral_m)
    path_s, path_yaw = ref.s[path_idx], ref.yaw[path_idx]
    times = np.linspace(0.0, p.prediction_horizon_s, max(p.prediction_steps, 1))
    # One vectorised pass drops the tracks that cannot reach the corridor in the horizon
    # (most of them: parked cars, people on sidewalks, walls).
    xy = np.array([(t.x_map_m, t.y_map_m) for t in tracks])
    reach = np.array([max(t.length_m, t.width_m) / 2 + (t.speed_mps * p.prediction_horizon_s
                                                       if t.label != "unknown" else 0.0) for t in tracks])
    nearest = np.hypot(path[None, :, 0] - xy[:, None, 0], path[None, :, 1] - xy[:, None, 1]).min(axis=1)
    candidates = np.flatnonzero(nearest <= ego_width_m / 2 + p.lateral_margin_m + reach)
    found = []
    for t in (tracks[i] for i in candidates):
        if t.hits < p.min_track_hits:
            continue
        # Only classified movers are extrapolated: an unclassified LiDAR box is mostly a
        # wall or fence, whose sparse LiDAR columns slide along it as the car drives
        # (and look like an object moving at a fixed bearing).
        moving = t.speed_mps > p.moving_speed_mps
        heading = math.atan2(t.vy_map_mps, t.vx_map_mps) if moving else 0.0
        # Nearest path point to the track now, to tell a lead from a crosser.
        d_now = np.hypot(path[:, 0] - t.x_map_m, path[:, 1] - t.y_map_m)
        k_now = int(np.argmin(d_now))
        crossing = moving and abs(math.remainder(heading - path_yaw[k_now], 2 * math.pi)) > p.crossing_heading_rad \
            and abs(math.remainder(heading - path_yaw[k_now] - math.pi, 2 * math.pi)) > p.crossing_heading_rad
        predicted = t.label != "unknown" and (crossing or (moving and t.label == "pedestrian"))
        samples = times if predicted else times[:1]
        px = t.x_map_m + t.vx_map_mps * samples * moving
        py = t.y_map_m + t.vy_map_mps * samples * moving
        d = np.hypot(path[None, :, 0] - px[:, None], path[None, :, 1] - py[:, None])
        i, k = np.unravel_index(np.argmin(d), d.shape)
        # The box's half extent across the path at that point (its yaw is in base_link).
        relative = t.yaw_rad + ego_yaw_rad - path_yaw[k]
        half = abs(t.length_m / 2 * math.sin(relative)) + abs(t.width_m / 2 * math.cos(relative))
        if d[i, k] > ego_width_m / 2 + half + p.lateral_margin_m:
            continue
        along = path_s[k] - s_ego
        if along <= 0.0:
            continue
        extent = abs(t.length_m / 2 * math.cos(relative)) + abs(t.width_m / 2 * math.sin(relative))
        if predicted or not moving:
            speed_along = 0.0
        else:
            speed_along = t.vx_map_mps * math.cos(path_yaw[k]) + t.vy_map_mps * math.sin(path_yaw[k])
        standstill = p.standstill_gap_pedestrian_m if t.label == "pedestrian" else p.standstill_gap_vehicle_m
        found.append(StopPoint(path_s[k] - extent, speed_along, standstill, f"{t.label} track {t.track_id}",
                               t.track_id))
    return found


def allowed_speed(stop: StopPoint, front_s: float, speed_mps: float, p: PlannerParams,
                  comfort_decel_mps2: float) -> tuple[float, float]:
    """(speed allowed now, deceleration feed-forward) for one stop point: the speed from
    which a comfortable brake still ends at the lead's speed with the time gap kept."""
    v_lead = max(stop.speed_along_mps, 0.0)
    preview = speed_mps * p.response_time_s
    gap = stop.s_m - front_s
    room = gap - stop.standstill_m - p.time_gap_s * v_lead - preview
    allowed = math.sqrt(v_lead ** 2 + 2 * comfort_decel_mps2 * max(room, 0.0)) if gap > stop.standstill_m else 0.0
    if v_lead < 0.5 and room < _STAND_TOLERANCE_M:
        allowed = 0.0  # close enough: stand rather than creep up the last centimetres
    accel = math.inf
    if speed_mps > v_lead and allowed < speed_mps + 0.5:
        accel = -(speed_mps ** 2 - v_lead ** 2) / (2 * max(room + preview, 0.1))
    return allowed, accel


class LaneChange:
    """KEEP -> CHANGE (onto the free neighbour lane beside a stalled car) -> back once past it."""

    def __init__(self, p: PlannerParams) -> None:
        self.p = p
        self.target_m = 0.0  # lateral offset of the lane we want, + = left
        self.offset_m = 0.0  # where the reference path is now
        self.passing_s: float | None = None  # arc length of the stalled car being passed
        self.side = ""
        self.stalled_since: dict[int, float] = {}

    @property
    def active(self) -> bool:
        return self.target_m != 0.0 or abs(self.offset_m) > 0.05

    def stalled(self, stops: list[StopPoint], tracks: dict[int, Track], time_s: float) -> StopPoint | None:
        """The nearest vehicle on the path that has stood still for ``stalled_time_s``."""
        still = {tid for tid, t in tracks.items() if t.label == "vehicle" and t.speed_mps < self.p.stalled_speed_mps}
        self.stalled_since = {tid: self.stalled_since.get(tid, time_s) for tid in still}
        candidates = [s for s in stops if s.track_id in still
                      and time_s - self.stalled_since[s.track_id] >= self.p.stalled_time_s]
        return min(candidates, key=lambda s: s.s_m) if candidates else None

    def update(self, ref: ReferencePath, s_ego: float, speed_mps: float, dt_s: float, stalled: StopPoint | None,
               tracks: tuple[Track, ...], ego_width_m: float) -> str:
        """Advance the state machine; returns the behaviour it is in ("" when keeping)."""
        p = self.p
        if self.target_m != 0.0 and self.passing_s is not None and s_ego - self.passing_s > p.lane_return_after_m:
            if self._lane_free(ref, s_ego, 0.0, tracks, ego_width_m, s_ego + p.lane_change_clear_ahead_m):
                self.target_m, self.passing_s = 0.0, None
        elif self.target_m == 0.0 and stalled is not None and stalled.s_m - s_ego < p.lane_change_trigger_m:
            entry = next((e.s_m for e in ref.junction_entries if e.s_m > s_ego), math.inf)
            if entry - stalled.s_m > p.lane_change_junction_clearance_m:
                for side, sign in (("left", 1.0), ("right", -1.0)):
                    width = self._neighbour_width(ref, s_ego, side)
                    if width and self._lane_free(ref, s_ego, sign * width, tracks, ego_width_m,
                                                 stalled.s_m + p.lane_change_clear_ahead_m):
                        self.target_m, self.side, self.passing_s = sign * width, side, stalled.s_m
                        break
        # Move the path sideways at a rate that spreads the change over its duration.
        distance = max(p.lane_change_min_distance_m, speed_mps * p.lane_change_duration_s)
        rate = 3.5 * max(speed_mps, 1.0) / distance  # m of offset per s
        step = rate * dt_s
        self.offset_m += float(np.clip(self.target_m - self.offset_m, -step, step))
        if self.target_m != 0.0:
            return f"change lane {self.side}" if abs(self.offset_m - self.target_m) > 0.1 else f"pass on the {self.side}"
        return "return to lane" if abs(self.offset_m) > 0.05 else ""

    def _neighbour_width(self, ref: ReferencePath, s_ego: float, side: str) -> float:
        lane = ref.lane_at(s_ego)
        if lane < 0:
            return 0.0
        this = ref.map.lanes[lane]
        other = this.left_neighbor if side == "left" else this.right_neighbor
        if other < 0 or this.in_junction:
            return 0.0
        return (this.width_m + ref.map.lanes[other].width_m) / 2

    def _lane_free(self, ref: ReferencePath, s_ego: float, lateral_m: float, tracks: tuple[Track, ...],
                   ego_width_m: float, until_s: float) -> bool:
        idx = ref.window(s_ego - self.p.lane_change_clear_behind_m, until_s)
        path = ref.offset_points(idx, lateral_m)
        for t in tracks:
            if t.hits < self.p.min_track_hits:
                continue
            d = np.hypot(path[:, 0] - t.x_map_m, path[:, 1] - t.y_map_m).min()
            if d < ego_width_m / 2 + t.width_m / 2 + self.p.lateral_margin_m:
                return False
        return True


def junction_stop(ref: ReferencePath, s_ego: float, front_s: float, speed_mps: float, tracks: tuple[Track, ...],
                  light_green: dict[int, bool], p: PlannerParams) -> StopPoint | None:
    """Stop at the next junction entry while crossing traffic has the way: a tracked car
    inside a connector that conflicts with ours, or, unless our light is green, one about
    to enter such a connector from its approach."""
    for entry in ref.junction_entries:
        gap = entry.s_m - front_s - 1.0
        if gap < -0.5 or gap > p.junction_check_distance_m:
            continue
        if gap < 1.0 and speed_mps > p.committed_speed_mps:
            return None  # committed: stopping now would leave us in the junction
        conflicts = ref.map.connector_conflicts.get(entry.connector, frozenset())
        feeders = {q for c in conflicts for q in ref.map.lanes[c].predecessors}
        green = light_green.get(entry.connector, False)
        centre = ref.map.lanes[entry.connector].points_xy.mean(axis=0)
        for t in tracks:
            if t.hits < p.min_track_hits or t.label == "pedestrian":
                continue
            if math.hypot(t.x_map_m - centre[0], t.y_map_m - centre[1]) > p.approaching_vehicle_distance_m + 30.0:
                continue  # too far from this junction to matter (saves a map query)
            moving = t.speed_mps > 0.5
            lane_query = ref.map.nearest_lane(t.x_map_m, t.y_map_m,
                                              math.atan2(t.vy_map_mps, t.vx_map_mps) if moving else None, 3.0)
            if lane_query is None:
                continue
            lane = lane_query.segment_id
            inside = lane in conflicts and (moving or _near_our_path(ref, entry, t))
            coming = (not green and lane in feeders and t.speed_mps > p.approaching_vehicle_speed_mps
                      and ref.map.lanes[lane].length_m - lane_query.s_m < p.approaching_vehicle_distance_m)
            if inside or coming:
                return StopPoint(entry.s_m - 1.0, 0.0, 0.0, f"yield at junction to {t.label} track {t.track_id}",
                                 t.track_id)
    return None


def _near_our_path(ref: ReferencePath, entry, t: Track) -> bool:
    """A standing car in a conflicting connector blocks us only if it is near our connector."""
    lane = ref.map.lanes[entry.connector]
    return bool(np.hypot(lane.points_xy[:, 0] - t.x_map_m, lane.points_xy[:, 1] - t.y_map_m).min() < 4.0)
