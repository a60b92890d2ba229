"""The modular planner: perception outputs + HD map + route -> control, each step.

    odometry, LiDAR obstacles, camera detections -> tracker (KF + Hungarian)
    route + map -> reference path; detected lanes correct its lateral offset
    tracks, light states, junctions -> stop points -> target speed (behaviour)
    stalled car ahead and a free neighbour lane -> lane change (path offset)
    pure pursuit + speed PID with comfort limits -> proposed control
    safety supervisor (TTC, stale or missing inputs, NaN, clamps) -> control

In ``policy`` and ``policy+safety`` modes the learned policy's proposal replaces the
modular one and the supervisor decides what reaches the car. Nothing here reads the
simulator: the inputs are the schema's dataclasses (``planning.inputs``).
"""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np

from drivestack.schema import Route, VehicleControl
from planning.behaviour import LaneChange, PlannerParams, StopPoint, allowed_speed, junction_stop, tracks_on_path
from planning.control import ControlParams, LongitudinalController, controls_from_accel, pure_pursuit_steer, \
    speed_profile
from planning.inputs import DriveMode, PlannerInputs, PlannerOutput, Track, VehicleModel
from planning.reference_path import ReferencePath
from planning.safety import SafetySupervisor
from planning.tracking import MultiObjectTracker
from planning.traffic_lights import GREEN, RED, UNKNOWN, YELLOW, LightStateEstimator

_BEHIND_M = 5.0  # path kept behind the ego (pure pursuit starts from the rear axle)


def _finite_ego(ego) -> bool:
    return ego is not None and all(math.isfinite(v) for v in (ego.x_m, ego.y_m, ego.yaw_rad, ego.speed_mps))


class ModularPlanner:
    def __init__(self, road_map, route: Route, vehicle: VehicleModel, dt_s: float, *,
                 mode: DriveMode = DriveMode.MODULAR, required_inputs: tuple[str, ...] = ("detections", "obstacles"),
                 params: PlannerParams | None = None, control_params: ControlParams | None = None) -> None:
        self.p = params or PlannerParams.load()
        self.cp = control_params or ControlParams.load()
        self.vehicle, self.dt_s, self.mode = vehicle, dt_s, DriveMode(mode)
        self.ref = ReferencePath(road_map, route)
        self.tracker = MultiObjectTracker()
        self.lights = LightStateEstimator(self.p.lamp_height_m, self.p.light_gate_px, self.p.light_memory_s,
                                          self.p.contradiction_score)
        self.lane_change = LaneChange(self.p)
        self.longitudinal = LongitudinalController(self.cp)
        if self.mode != DriveMode.MODULAR and "policy" not in required_inputs:
            required_inputs = (*required_inputs, "policy")
        self.supervisor = SafetySupervisor(vehicle, self.mode, tuple(required_inputs))
        self.lane_bias_m = 0.0
        self._emergency = False
        self._ego_yaw = 0.0
        self.counts: Counter = self.supervisor.counts
        self._last_stamp_ns: int | None = None

    # -- one step ------------------------------------------------------------------------

    def step(self, inputs: PlannerInputs) -> PlannerOutput:
        started = time.perf_counter()
        ego = inputs.ego
        faults: list[str] = []
        tracks: tuple[Track, ...] = ()
        path_xy, path_speed = np.zeros((0, 2)), np.zeros(0)
        target, behaviour, reason = 0.0, "stopped", ""
        proposal = (0.0, 0.0, 1.0)
        self._emergency = False
        if _finite_ego(ego):
            dt = self.dt_s if self._last_stamp_ns is None else max((inputs.stamp_ns - self._last_stamp_ns) * 1e-9, 0.0)
            self._last_stamp_ns = inputs.stamp_ns
            update = self.tracker.update(inputs.stamp_ns, ego, inputs.obstacles, inputs.detections)
            tracks, faults = update.tracks, list(update.faults)
            s_ego, lateral = self.ref.locate(ego.x_m, ego.y_m)
            self._ego_yaw = ego.yaw_rad
            self._correct_lateral(inputs, s_ego, lateral)
            idx = self.ref.window(s_ego - _BEHIND_M, s_ego + self.p.horizon_m)
            offsets = self._path_offsets(idx, s_ego, ego.speed_mps)
            stops, light_faults = self._stop_points(inputs, ego, s_ego, idx, offsets, tracks)
            faults += light_faults
            behaviour = self.lane_change.update(self.ref, s_ego, ego.speed_mps, dt,
                                                self.lane_change.stalled(stops, {t.track_id: t for t in tracks},
                                                                         inputs.stamp_ns * 1e-9),
                                                tracks, self.vehicle.width_m) or "follow route"
            if self.lane_change.active:  # the path moved: what is on it now
                offsets = self._path_offsets(idx, s_ego, ego.speed_mps)
                stops, _ = self._stop_points(inputs, ego, s_ego, idx, offsets, tracks)
            path_xy = self.ref.offset_points(idx, offsets + self.lane_bias_m)
            target, accel_cap, reason = self._target_speed(stops, s_ego, ego.speed_mps)
            if reason and target < ego.speed_mps + 0.5:
                behaviour = f"stop: {reason}" if target < 0.1 else f"slow: {reason}"
            path_speed = speed_profile(self.ref.s[idx] - s_ego, self.ref.curvature[idx],
                                       self.ref.speed_limit[idx] * self.p.speed_limit_fraction, ego.speed_mps,
                                       self.cp, stop_at_s_m=self._stop_distance(stops, s_ego))
            proposal = self._modular_control(path_xy, ego, target, accel_cap)
            if s_ego >= self.ref.length_m - 0.5:
                behaviour, reason = "route end", "route end"
        if self.mode != DriveMode.MODULAR and inputs.policy is not None:
            proposal = (inputs.policy.steer, inputs.policy.throttle, inputs.policy.brake)
        decision = self.supervisor.supervise(inputs, proposal, tracks, path_xy, tuple(faults))
        return PlannerOutput(inputs.stamp_ns, decision.control, self.mode, path_xy, path_speed, float(target),
                             behaviour, reason if target < (ego.speed_mps + 0.5 if _finite_ego(ego) else 1.0) else "",
                             decision.override, tracks, decision.faults,
                             self._emergency or decision.override.startswith("TTC"),
                             (time.perf_counter() - started) * 1e3)

    # -- path ----------------------------------------------------------------------------

    def _path_offsets(self, idx: np.ndarray, s_ego: float, speed_mps: float) -> np.ndarray:
        """Lateral offset of each path point: from where the path is now towards the
        lane-change target over the change distance."""
        lc = self.lane_change
        distance = max(self.p.lane_change_min_distance_m, speed_mps * self.p.lane_change_duration_s)
        ramp = np.clip((self.ref.s[idx] - s_ego) / distance, 0.0, 1.0)
        return lc.offset_m + (lc.target_m - lc.offset_m) * ramp

    def _correct_lateral(self, inputs: PlannerInputs, s_ego: float, lateral_map_m: float) -> None:
        """Shift the path by the difference between where the map puts us in the lane and
        where the detected boundaries do (low-passed, bounded): a localisation error of
        the odometry then does not push the car onto a marking."""
        if inputs.lanes is None or self.lane_change.active:
            return
        p, sides = self.p, {}
        for lane in inputs.lanes.lanes:
            pts = lane.points_m
            if lane.position in (-1, 1) and len(pts):
                near = (pts[:, 0] > p.lane_probe_near_m) & (pts[:, 0] < p.lane_probe_far_m) & np.isfinite(pts[:, 1])
                if near.sum() >= 2:
                    sides[lane.position] = float(np.median(pts[near, 1]))
        segment = self.ref.lane_at(s_ego)
        if len(sides) < 2 or segment < 0 or self.ref.map.lanes[segment].in_junction:
            return
        width = sides[-1] - sides[1]
        if abs(width - self.ref.map.lanes[segment].width_m) > p.lane_width_tolerance_m:
            return
        offset_vision = -(sides[-1] + sides[1]) / 2  # + = ego left of the detected centre
        error = float(np.clip(lateral_map_m - offset_vision, -p.lane_correction_max_m, p.lane_correction_max_m))
        self.lane_bias_m += p.lane_correction_gain * (error - self.lane_bias_m)

    # -- speed ---------------------------------------------------------------------------

    def _track_stops(self, tracks, idx, offsets, s_ego) -> list[StopPoint]:
        return tracks_on_path(tracks, self.ref, idx, offsets + self.lane_bias_m, s_ego, self._ego_yaw,
                              self.vehicle.width_m, self.p)

    def _stop_points(self, inputs: PlannerInputs, ego, s_ego: float, idx: np.ndarray, offsets: np.ndarray,
                     tracks: tuple[Track, ...]) -> tuple[list[StopPoint], list[str]]:
        front = s_ego + self.vehicle.length_m / 2
        stops = self._track_stops(tracks, idx, offsets, s_ego)
        ahead = [line for line in self.ref.stop_lines if -self.p.stop_line_margin_m < line.s_m - front
                 < self.p.light_lookahead_m]
        faults = self.lights.update(ego, inputs.detections, [(line.light_id, line.light_xy_m) for line in ahead])
        green_connectors = {}
        for line in ahead:
            state = self.lights.state(line.light_id, inputs.stamp_ns)
            gap = line.s_m - front - self.p.stop_line_margin_m
            entry = next((e for e in self.ref.junction_entries if 0.0 <= e.s_m - line.s_m < 8.0), None)
            if entry is not None:
                green_connectors[entry.connector] = state == GREEN
            if state == YELLOW:
                needed = ego.speed_mps ** 2 / (2 * self.p.yellow_max_stop_decel_mps2)
                state = RED if gap > needed else GREEN
            if state == RED:
                stops.append(StopPoint(line.s_m - self.p.stop_line_margin_m, 0.0, 0.0, f"red light {line.light_id}"))
            elif state == UNKNOWN and gap > 0.0:
                # Not seen yet: approach slowly enough to stop once it is.
                stops.append(StopPoint(line.s_m + self.p.unknown_light_speed_mps ** 2 / (2 * self.cp.comfort_decel_mps2),
                                       0.0, 0.0, f"light {line.light_id} not seen yet"))
        junction = junction_stop(self.ref, s_ego, front, ego.speed_mps, tracks, green_connectors, self.p)
        if junction is not None:
            stops.append(junction)
        return self._keep_junction_clear(stops, s_ego), faults

    def _keep_junction_clear(self, stops: list[StopPoint], s_ego: float) -> list[StopPoint]:
        """A car that would make us stop inside a junction makes us stop before it."""
        out = []
        for stop in stops:
            entry = next((e for e in self.ref.junction_entries if e.s_m > s_ego + self.vehicle.length_m / 2), None)
            if entry is not None and stop.track_id >= 0 and stop.speed_along_mps < 1.0:
                exit_s = entry.s_m + self.ref.map.lanes[entry.connector].length_m
                if entry.s_m < stop.s_m - stop.standstill_m - self.vehicle.length_m < exit_s + 2.0:
                    stop = StopPoint(entry.s_m - 1.0, 0.0, 0.0, f"no room after the junction ({stop.reason})",
                                     stop.track_id)
            out.append(stop)
        return out

    def _target_speed(self, stops: list[StopPoint], s_ego: float, speed_mps: float) -> tuple[float, float, str]:
        preview = s_ego + speed_mps * self.p.response_time_s
        k = min(int(np.searchsorted(self.ref.s, preview)), len(self.ref.s) - 1)
        curvature = float(np.abs(self.ref.curvature[max(k - 2, 0):k + 3]).max())
        target = min(float(self.ref.speed_limit[k]) * self.p.speed_limit_fraction,
                     math.sqrt(self.cp.comfort_lateral_accel_mps2 / max(curvature, 1e-6)))
        accel_cap, reason = math.inf, ""
        front = s_ego + self.vehicle.length_m / 2
        for stop in stops:
            allowed, accel = allowed_speed(stop, front, speed_mps, self.p, self.cp.comfort_decel_mps2)
            if allowed < target:
                target, reason = allowed, stop.reason
            accel_cap = min(accel_cap, accel)
        return target, accel_cap, reason

    def _stop_distance(self, stops: list[StopPoint], s_ego: float) -> float:
        """Path distance (from the ego) where the car must stand, for the published profile."""
        standing = [s.s_m - s.standstill_m - self.vehicle.length_m / 2 - s_ego for s in stops
                    if s.speed_along_mps < 0.5]
        return max(min(standing), 0.0) if standing else math.inf

    def _modular_control(self, path_xy: np.ndarray, ego, target: float, accel_cap: float
                         ) -> tuple[float, float, float]:
        steer = pure_pursuit_steer(path_xy, ego, ego.speed_mps, self.vehicle, self.cp)
        if target <= 0.05 and ego.speed_mps < 0.5:
            # Stand: brake the last few tenths of a metre per second gently, then hold.
            self.longitudinal.reset()
            stop = controls_from_accel(-min(self.cp.comfort_decel_mps2, ego.speed_mps / self.dt_s), steer,
                                       ego.speed_mps, self.vehicle)
            return stop.steer, 0.0, stop.brake
        needed = min(accel_cap, 0.0)
        emergency = needed < -self.cp.comfort_decel_mps2 - 1e-6
        self._emergency = emergency
        accel = self.longitudinal.command(target, ego.speed_mps, self.dt_s, emergency=emergency)
        accel = min(accel, accel_cap) if math.isfinite(accel_cap) else accel
        accel = max(accel, -(self.cp.emergency_decel_mps2 if emergency else self.cp.comfort_decel_mps2))
        if ego.speed_mps > target:
            accel = min(accel, 0.0)  # the target is a limit: never throttle above it
        control: VehicleControl = controls_from_accel(accel, steer, ego.speed_mps, self.vehicle)
        return control.steer, control.throttle, control.brake
