"""The privileged expert: drives a route with the true world state.

Like CARLA's BasicAgent and the autopilots used to collect behaviour-cloning data: a
Stanley lateral controller on the route polyline, and a speed PID whose target is the
lowest of (a) the route's speed profile (limits, curvature, the route end), (b) the
speed that still stops or follows behind every obstacle on the route corridor:
vehicles, pedestrians (extrapolated), red and yellow lights at their stop lines, and
the junction entry while a conflicting connector is in use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter1d

from drivestack.config import load_params
from drivestack.schema import (ActorKind, Observation, Route, TrafficLightState, VehicleControl)
from sim.control import SpeedPID, front_axle_xy, pedals_for_accel, stanley_steer
from sim.geometry import project_onto_polyline
from sim.road_map import RoadMap
from sim.vehicle_dynamics import VehicleParams

DEFAULT_EXPERT_PARAMS = Path(__file__).parent / "config" / "expert.yaml"
_WINDOW_BACK, _WINDOW_AHEAD = 5, 40  # route-index window for progress tracking


@dataclass(frozen=True)
class ExpertParams:
    speed_limit_fraction: float
    comfort_lateral_accel_mps2: float
    comfort_decel_mps2: float
    emergency_decel_mps2: float
    standstill_gap_vehicle_m: float
    standstill_gap_pedestrian_m: float
    stop_line_margin_m: float
    time_gap_s: float
    lookahead_m: float
    lateral_margin_m: float
    prediction_horizon_s: float
    yellow_max_stop_decel_mps2: float
    junction_check_distance_m: float
    approaching_vehicle_distance_m: float
    approaching_vehicle_speed_mps: float
    stanley_gain_per_s: float
    stanley_soft_speed_mps: float
    pid_kp_per_s: float
    pid_ki_per_s2: float
    response_time_s: float

    @classmethod
    def load(cls, path: str | Path = DEFAULT_EXPERT_PARAMS) -> ExpertParams:
        return load_params(cls, path)


@dataclass(frozen=True)
class _Obstacle:
    gap_m: float  # front bumper to where we must stop behind it (before standstill gap)
    speed_along_mps: float
    standstill_m: float
    reason: str


class ExpertDriver:
    name = "expert"

    def __init__(self, road_map: RoadMap, route: Route, vehicle: VehicleParams, dt_s: float,
                 params: ExpertParams | None = None) -> None:
        self.map, self.route, self.vehicle, self.dt_s = road_map, route, vehicle, dt_s
        self.p = params or ExpertParams.load()
        wps = route.waypoints
        self.xy = np.array([(w.x_m, w.y_m) for w in wps])
        self.yaw = np.unwrap(np.array([w.yaw_rad for w in wps]))
        self.s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.xy, axis=0), axis=1))])
        self.lane_ids = np.array([w.lane_segment_id for w in wps])
        self.curvature = np.gradient(self.yaw, self.s, edge_order=1) if len(self.s) > 2 else np.zeros(len(self.s))
        self.speed_profile = self._speed_profile()
        self.stop_lines = self._route_stop_lines()
        self.junction_entries = self._junction_entries()
        self.pid = SpeedPID(self.p.pid_kp_per_s, self.p.pid_ki_per_s2)
        self.index = 0
        self.last_reason = ""

    # -- precomputation along the route ----------------------------------------------

    def _speed_profile(self) -> np.ndarray:
        """Limits and curvature, braked for in time. The route end is not a stop: like a
        leaderboard route, the episode ends once the ego reaches it."""
        limits = np.array([self.map.lanes[k].speed_limit_mps if k >= 0 else 8.0 for k in self.lane_ids])
        kappa = np.abs(self.curvature)
        # Curvature peaks over +-2 samples so a turn is entered already slow.
        kappa = maximum_filter1d(kappa, size=5, mode="nearest")
        v = np.minimum(limits * self.p.speed_limit_fraction,
                       np.sqrt(self.p.comfort_lateral_accel_mps2 / np.maximum(kappa, 1e-6)))
        b = self.p.comfort_decel_mps2
        for i in range(len(v) - 2, -1, -1):  # backward pass: brake in time for what comes
            v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2 * b * (self.s[i + 1] - self.s[i])))
        return v

    def _route_stop_lines(self) -> list[tuple[float, int]]:
        """(route arc length of the stop line, light id) for every signalled approach."""
        found = []
        for light in self.map.signals:
            for sl in light.stop_lines:
                on_route = np.flatnonzero(self.lane_ids == sl.segment_id)
                mid = np.array([(sl.p0[0] + sl.p1[0]) / 2, (sl.p0[1] + sl.p1[1]) / 2])
                # A looping route can pass the same stop line more than once.
                for run in np.split(on_route, np.flatnonzero(np.diff(on_route) > 1) + 1):
                    if not len(run):
                        continue
                    d = np.linalg.norm(self.xy[run] - mid, axis=1)
                    if d.min() < 3.0:
                        found.append((float(self.s[run[np.argmin(d)]]), light.light_id))
        return sorted(found)

    def _junction_entries(self) -> list[tuple[float, int, int]]:
        """(route arc length where the route enters a junction connector, connector id,
        the lane the route leaves the junction on or -1)."""
        entries = []
        for i in range(1, len(self.lane_ids)):
            k = self.lane_ids[i]
            if k >= 0 and self.map.lanes[k].in_junction and self.lane_ids[i - 1] != k:
                after = [j for j in self.lane_ids[i:] if j >= 0 and not self.map.lanes[j].in_junction]
                entries.append((float(self.s[i - 1]), int(k), int(after[0]) if after else -1))
        return entries

    # -- driving ---------------------------------------------------------------------

    def run_step(self, obs: Observation) -> VehicleControl:
        ego = obs.ego
        self.index, s_ego = self._track(ego.x_m, ego.y_m)
        steer = self._steer(ego.x_m, ego.y_m, ego.yaw_rad, ego.speed_mps)
        target, stop_accel, reason = self._target_speed(obs, s_ego)
        self.last_reason = reason
        if target <= 0.05 and ego.speed_mps < 0.5:
            self.pid.reset()
            return VehicleControl.clamped(throttle=0.0, steer=float(steer), brake=1.0)
        # The PID tracks the target; the stopping feed-forward removes its lag before a line.
        accel = max(min(self.pid(target - ego.speed_mps, self.dt_s), stop_accel), -self.p.emergency_decel_mps2)
        if ego.speed_mps > target:
            accel = min(accel, 0.0)  # never throttle above the target: it is a speed limit
        throttle, brake = pedals_for_accel(np.array(accel), np.array(ego.speed_mps), self.vehicle)
        return VehicleControl.clamped(throttle=float(throttle), steer=float(steer), brake=float(brake))

    def _track(self, x: float, y: float) -> tuple[int, float]:
        """(segment index, continuous arc length) of the ego on the route, searched near the last."""
        lo = max(self.index - _WINDOW_BACK, 0)
        hi = min(self.index + _WINDOW_AHEAD, len(self.xy))
        s_m, _, segment = project_onto_polyline(self.xy[lo:hi], self.s[lo:hi] - self.s[lo], (x, y))
        return lo + segment, float(self.s[lo] + s_m)

    def _steer(self, x: float, y: float, yaw: float, speed: float) -> float:
        fx, fy = front_axle_xy(np.array(x), np.array(y), np.array(yaw), self.vehicle)
        lo = max(self.index - 2, 0)
        hi = min(self.index + 10, len(self.xy))
        seg = np.hypot(self.xy[lo:hi, 0] - fx, self.xy[lo:hi, 1] - fy)
        i = lo + int(np.argmin(seg))
        # Interpolate between the two route points around the front axle.
        j = min(i + 1, len(self.xy) - 1)
        d = self.xy[j] - self.xy[i]
        f = float(np.clip(((fx - self.xy[i, 0]) * d[0] + (fy - self.xy[i, 1]) * d[1]) / max(d @ d, 1e-9), 0, 1))
        ref = self.xy[i] + f * d
        ref_yaw = self.yaw[i] + f * (self.yaw[j] - self.yaw[i])
        return float(stanley_steer(fx, fy, yaw, speed, ref[0], ref[1], ref_yaw, self.vehicle,
                                   self.p.stanley_gain_per_s, self.p.stanley_soft_speed_mps))

    def _target_speed(self, obs: Observation, s_ego: float) -> tuple[float, float, str]:
        """(target speed, acceleration cap from stopping constraints, what limits us)."""
        v = obs.ego.speed_mps
        preview = v * self.p.response_time_s
        target = float(np.interp(s_ego + preview, self.s, self.speed_profile))
        stop_accel, reason = math.inf, "route"
        for obstacle in self._obstacles(obs, s_ego):
            v_lead = max(obstacle.speed_along_mps, 0.0)
            room = obstacle.gap_m - obstacle.standstill_m - self.p.time_gap_s * v_lead - preview
            allowed = math.sqrt(v_lead**2 + 2 * self.p.comfort_decel_mps2 * max(room, 0.0))
            if obstacle.gap_m < obstacle.standstill_m:
                allowed = 0.0
            if allowed < target:
                target, reason = allowed, obstacle.reason
            if v > v_lead and allowed < v + 0.5:
                # Constant deceleration that ends at the lead's speed exactly at the room left.
                needed = -(v * v - v_lead * v_lead) / (2 * max(room + preview, 0.1))
                stop_accel = min(stop_accel, needed)
        return target, stop_accel, reason

    def _obstacles(self, obs: Observation, s_ego: float) -> list[_Obstacle]:
        return self._actor_obstacles(obs, s_ego) + self._light_obstacles(obs, s_ego) \
            + self._junction_obstacles(obs, s_ego)

    def _actor_obstacles(self, obs: Observation, s_ego: float) -> list[_Obstacle]:
        ego = obs.ego
        near = [a for a in obs.actors if abs(a.x_m - ego.x_m) < self.p.lookahead_m
                and abs(a.y_m - ego.y_m) < self.p.lookahead_m]
        if not near:
            return []
        hi = int(np.searchsorted(self.s, s_ego + self.p.lookahead_m)) + 1
        path = self.xy[self.index:hi]
        path_s = self.s[self.index:hi]
        if len(path) < 2:
            return []
        horizon = np.linspace(0.0, self.p.prediction_horizon_s, 5)
        found = []
        for a in near:
            moving_across = a.kind == ActorKind.PEDESTRIAN or (a.lane_segment_id >= 0 and
                                                              self.map.lanes[a.lane_segment_id].in_junction)
            times = horizon if moving_across else horizon[:1]
            px = a.x_m + a.speed_mps * math.cos(a.yaw_rad) * times
            py = a.y_m + a.speed_mps * math.sin(a.yaw_rad) * times
            d = np.hypot(path[None, :, 0] - px[:, None], path[None, :, 1] - py[:, None])
            k = np.unravel_index(np.argmin(d), d.shape)
            half_extent = max(a.width_m, a.length_m) / 2 if moving_across else a.width_m / 2
            if d[k] > ego.width_m / 2 + half_extent + self.p.lateral_margin_m:
                continue
            along = path_s[k[1]] - s_ego
            heading = self.yaw[self.index + k[1]]
            speed_along = a.speed_mps * math.cos(a.yaw_rad - heading) if not moving_across else 0.0
            extent = a.length_m / 2 if not moving_across else half_extent
            gap = along - ego.length_m / 2 - extent
            if along <= 0.0:
                continue
            is_ped = a.kind == ActorKind.PEDESTRIAN
            found.append(_Obstacle(gap, speed_along,
                                   self.p.standstill_gap_pedestrian_m if is_ped else self.p.standstill_gap_vehicle_m,
                                   f"{a.kind.value} {a.actor_id}"))
        return found

    def _light_obstacles(self, obs: Observation, s_ego: float) -> list[_Obstacle]:
        states = {tl.light_id: tl.state for tl in obs.traffic_lights}
        front = s_ego + obs.ego.length_m / 2
        found = []
        for s_line, light_id in self.stop_lines:
            gap = s_line - front - self.p.stop_line_margin_m
            if gap < -self.p.stop_line_margin_m or gap > self.p.lookahead_m:
                continue  # already over the line, or far away
            state = states.get(light_id, TrafficLightState.GREEN)
            if state == TrafficLightState.YELLOW:
                needed = obs.ego.speed_mps**2 / (2 * self.p.yellow_max_stop_decel_mps2)
                state = TrafficLightState.RED if gap > needed else TrafficLightState.GREEN
            if state == TrafficLightState.RED:
                found.append(_Obstacle(gap, 0.0, 0.0, f"red light {light_id}"))
        return found

    def _junction_obstacles(self, obs: Observation, s_ego: float) -> list[_Obstacle]:
        front = s_ego + obs.ego.length_m / 2
        for s_entry, connector, exit_lane in self.junction_entries:
            gap = s_entry - front - 1.0
            if gap < -0.5 or gap > self.p.junction_check_distance_m:
                continue
            if gap < 1.0 and obs.ego.speed_mps > 2.0:
                continue  # committed: stopping now would leave us in the junction
            if self._connector_blocked(obs, connector):
                return [_Obstacle(gap, 0.0, 0.0, f"yield at junction (connector {connector})")]
            if self._exit_blocked(obs, exit_lane):
                return [_Obstacle(gap, 0.0, 0.0, f"no room after the junction (lane {exit_lane})")]
        return []

    def _exit_blocked(self, obs: Observation, exit_lane: int) -> bool:
        """A queue reaches back to the junction: entering would stop us inside it."""
        if exit_lane < 0:
            return False
        start = self.map.lanes[exit_lane].points_xy[0]
        room = obs.ego.length_m + self.p.standstill_gap_vehicle_m
        return any(a.lane_segment_id == exit_lane and a.speed_mps < self.p.approaching_vehicle_speed_mps
                   and math.hypot(a.x_m - start[0], a.y_m - start[1]) < room + a.length_m / 2
                   for a in obs.actors)

    def _connector_blocked(self, obs: Observation, connector: int) -> bool:
        conflicts = self.map.connector_conflicts.get(connector, frozenset())
        feeders = {p for c in conflicts for p in self.map.lanes[c].predecessors}
        for a in obs.actors:
            k = a.lane_segment_id
            if k in conflicts:
                return True
            if k in feeders and a.speed_mps > self.p.approaching_vehicle_speed_mps:
                lane = self.map.lanes[k]
                q = self.map.nearest_lane(a.x_m, a.y_m, a.yaw_rad)
                if q is not None and q.segment_id == k and lane.length_m - q.s_m < self.p.approaching_vehicle_distance_m:
                    # A car about to enter a conflicting connector, unless its light is red.
                    if not self._red_for(obs, k):
                        return True
        return False

    def _red_for(self, obs: Observation, lane: int) -> bool:
        light_id = self.map.light_of_segment(lane)
        return any(t.light_id == light_id and t.state == TrafficLightState.RED for t in obs.traffic_lights)
