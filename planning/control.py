"""The planner's controllers: pure pursuit steering, a speed PID with feed-forward,
the speed profile along the planned path and the pedal inversion.

Pure numpy, no simulator: the vehicle comes in as a :class:`VehicleModel` and the
pedals are found by inverting its linear pedal model (``drivestack.vehicle_control``,
the same inversion the simulator's expert uses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivestack.config import load_params
from drivestack.schema import EgoState, VehicleControl
from drivestack.vehicle_control import SpeedPID, pedals_for_accel
from planning.inputs import VehicleModel

DEFAULT_CONTROL_PARAMS = Path(__file__).parent / "config" / "control.yaml"
_STOPPED_MPS = 0.05  # a target or speed below this is a standstill


@dataclass(frozen=True)
class ControlParams:
    lookahead_gain_s: float
    lookahead_min_m: float
    lookahead_max_m: float
    speed_kp_per_s: float
    speed_ki_per_s2: float
    speed_kd: float
    integral_limit_mps: float
    integrate_band_mps: float
    comfort_accel_mps2: float
    comfort_decel_mps2: float
    emergency_decel_mps2: float
    comfort_lateral_accel_mps2: float

    def __post_init__(self) -> None:
        positive = ("lookahead_min_m", "comfort_accel_mps2", "comfort_decel_mps2", "emergency_decel_mps2",
                    "comfort_lateral_accel_mps2")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("lookahead_gain_s", "speed_kp_per_s", "speed_ki_per_s2", "speed_kd", "integral_limit_mps",
                     "integrate_band_mps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.lookahead_max_m < self.lookahead_min_m:
            raise ValueError("lookahead_max_m must be >= lookahead_min_m")
        if self.emergency_decel_mps2 < self.comfort_decel_mps2:
            raise ValueError("emergency_decel_mps2 must be >= comfort_decel_mps2")

    @classmethod
    def load(cls, path: str | Path = DEFAULT_CONTROL_PARAMS) -> ControlParams:
        return load_params(cls, path)


# -- lateral ------------------------------------------------------------------------------

def _clean_path(path_xy_m) -> np.ndarray:
    """The path's finite points without repeats (zero-length segments), as (N, 2)."""
    path = np.asarray(path_xy_m, dtype=float)
    path = path[:, :2] if path.ndim == 2 and path.shape[1] >= 2 else np.zeros((0, 2))
    path = path[np.isfinite(path).all(axis=1)]
    if len(path) > 1:
        keep = np.concatenate(([True], np.hypot(*np.diff(path, axis=0).T) > 1e-9))
        path = path[keep]
    return path


def lookahead_distance_m(speed_mps: float, params: ControlParams) -> float:
    v = abs(speed_mps) if math.isfinite(speed_mps) else 0.0
    return min(max(params.lookahead_gain_s * v + params.lookahead_min_m, params.lookahead_min_m),
               params.lookahead_max_m)


def _circle_exit(start: np.ndarray, end: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Where the segment start -> end (start inside the circle) leaves it; the segment's
    line is followed past ``end`` when it is still inside."""
    d, f = end - start, start - centre
    a, b, c = d @ d, 2.0 * (f @ d), f @ f - radius * radius
    u = (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)
    return start + u * d


def _project(path: np.ndarray, point: np.ndarray) -> tuple[int, float, np.ndarray]:
    """Nearest point of the polyline: (segment index, parameter in [0, 1], the point)."""
    starts, seg = path[:-1], np.diff(path, axis=0)
    t = np.clip(((point - starts) * seg).sum(axis=1) / (seg * seg).sum(axis=1), 0.0, 1.0)
    closest = starts + t[:, None] * seg
    k = int(np.argmin(((closest - point) ** 2).sum(axis=1)))
    return k, float(t[k]), closest[k]


def _along_path(path: np.ndarray, k: int, start: np.ndarray, distance_m: float) -> np.ndarray:
    """The point ``distance_m`` along the polyline from ``start`` on segment ``k``
    (the last segment extended when the path ends first)."""
    points = np.vstack((start, path[k + 1:]))
    lengths = np.hypot(*np.diff(points, axis=0).T)
    cumulative = np.concatenate(([0.0], np.cumsum(lengths)))
    j = min(int(np.searchsorted(cumulative, distance_m)), len(points) - 1)
    j = max(j, 1)
    direction = (path[-1] - path[-2]) if j == len(points) - 1 and distance_m > cumulative[-1] \
        else points[j] - points[j - 1]
    direction = direction / max(np.hypot(*direction), 1e-12)
    return points[j - 1] + direction * (distance_m - cumulative[j - 1])


def lookahead_point(path_xy_m: np.ndarray, rear_xy_m: np.ndarray, lookahead_m: float) -> np.ndarray | None:
    """The path point at ``lookahead_m`` from the rear axle, searching forward from the
    path point nearest to it; the last segment is extended when the path is shorter.
    ``None`` for a path of fewer than two (distinct, finite) points."""
    path = _clean_path(path_xy_m)
    if len(path) < 2:
        return None
    k, _, nearest = _project(path, rear_xy_m)
    if np.hypot(*(nearest - rear_xy_m)) >= lookahead_m:
        # Farther off the path than the lookahead: aim at the path one lookahead ahead
        # of the nearest point, which turns the car back onto it and along it.
        return _along_path(path, k, nearest, lookahead_m)
    ahead = path[k + 1:]
    outside = np.flatnonzero(np.hypot(*(ahead - rear_xy_m).T) >= lookahead_m)
    if len(outside) == 0:
        return _extend_last(path, rear_xy_m, lookahead_m)
    j = k + 1 + int(outside[0])
    start = nearest if j == k + 1 else path[j - 1]
    return _circle_exit(start, path[j], rear_xy_m, lookahead_m)


def _extend_last(path: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Where the last segment's line, followed past the path's end (inside the circle),
    leaves the circle."""
    direction = path[-1] - path[-2]
    return _circle_exit(path[-1], path[-1] + direction / np.hypot(*direction), centre, radius)


def pure_pursuit_steer(path_xy_m: np.ndarray, ego: EgoState, speed_mps: float, vehicle: VehicleModel,
                       params: ControlParams) -> float:
    """Normalised steer in [-1, 1] (+ = left, REP 103) that brings the rear axle onto
    the path (``map`` frame, (N, 2)) by pure pursuit (Coulter 1992).

    The arc from the rear axle through the lookahead point has curvature
    ``2 sin(alpha) / L_d``; the wheel angle ``atan(wheelbase x curvature)``. A path of
    fewer than two points gives 0: the caller must treat that as a fault.
    """
    ego_pose = np.array([ego.x_m, ego.y_m, ego.yaw_rad], dtype=float)
    if not np.isfinite(ego_pose).all():
        return 0.0
    heading = np.array([math.cos(ego.yaw_rad), math.sin(ego.yaw_rad)])
    rear = ego_pose[:2] - vehicle.rear_axle_to_center_m * heading
    target = lookahead_point(path_xy_m, rear, lookahead_distance_m(speed_mps, params))
    if target is None:
        return 0.0
    offset = target - rear
    forward, left = offset @ heading, offset @ np.array([-heading[1], heading[0]])
    distance = math.hypot(forward, left)
    if distance < 1e-6:
        return 0.0
    alpha = math.atan2(left, forward)
    if abs(alpha) > math.pi / 2:
        # The target is behind: 2 sin(alpha) / L_d shrinks towards 0 there; turn hard instead.
        return math.copysign(1.0, alpha)
    wheel_angle = math.atan(vehicle.wheelbase_m * 2.0 * math.sin(alpha) / distance)
    return min(max(wheel_angle / vehicle.max_steer_angle_rad, -1.0), 1.0)


# -- longitudinal -----------------------------------------------------------------------

class LongitudinalController:
    """Speed PID plus the speed profile's feed-forward acceleration, limited to the
    comfort band unless in an emergency.

    Anti-windup twice over: the PID integrates only near the target (conditional
    integration), and not while the output is saturated in the direction the error
    pushes (clamping), so a long launch or stop leaves no integral to overshoot with.
    The target is a limit: above it, or when it is a stop, the command never
    accelerates; standing at a zero target resets the PID and holds.
    """

    def __init__(self, params: ControlParams | None = None) -> None:
        self.params = params or ControlParams.load()
        p = self.params
        self._pid = SpeedPID(p.speed_kp_per_s, p.speed_ki_per_s2, p.speed_kd, p.integral_limit_mps,
                             p.integrate_band_mps)
        self._saturated = 0  # -1 / +1: the last output was cut at the low / high limit

    def reset(self) -> None:
        self._pid.reset()
        self._saturated = 0

    def command(self, target_speed_mps: float, speed_mps: float, dt_s: float,
                feedforward_accel_mps2: float = 0.0, emergency: bool = False) -> float:
        """Acceleration (m/s^2) in [-comfort_decel, comfort_accel], or down to
        -emergency_decel when ``emergency``. A non-finite input gives the comfort
        deceleration (and leaves the PID's state alone)."""
        p = self.params
        values = (target_speed_mps, speed_mps, dt_s, feedforward_accel_mps2)
        if not all(math.isfinite(v) for v in values):
            return -p.comfort_decel_mps2
        low, high = -(p.emergency_decel_mps2 if emergency else p.comfort_decel_mps2), p.comfort_accel_mps2
        if target_speed_mps <= _STOPPED_MPS and abs(speed_mps) <= _STOPPED_MPS:
            # Standing where it must stand: nothing left to integrate; hold the brake
            # (an integral kept from the approach would creep the car off).
            self.reset()
            return min(feedforward_accel_mps2, 0.0)
        error = target_speed_mps - speed_mps
        integrate = self._saturated == 0 or (error > 0) != (self._saturated > 0)
        raw = self._pid(error, max(dt_s, 1e-3), integrate) + feedforward_accel_mps2
        accel = min(max(raw, low), high)
        self._saturated = 1 if raw > high else -1 if raw < low else 0
        if error < 0 or target_speed_mps <= _STOPPED_MPS:
            accel = min(accel, 0.0)
        return accel


def speed_profile(s_m: np.ndarray, curvature_1pm: np.ndarray, speed_limit_mps, v0_mps: float,
                  params: ControlParams, stop_at_s_m: float = math.inf) -> np.ndarray:
    """The speed to plan at each path point (``s_m`` increasing along the path, from
    the ego: negative behind it).

    The cap ``min(limit, sqrt(a_lat / |kappa|))``, zero from ``stop_at_s_m`` on; a
    backward pass so every slow-down starts in time at ``comfort_decel``, and a forward
    pass from ``v0_mps`` at the ego (s = 0) accelerating at ``comfort_accel``. Points
    behind the ego get at most ``v0_mps``. A non-finite curvature counts as straight,
    a non-finite limit as 0.
    """
    s = np.asarray(s_m, dtype=float)
    if s.size == 0:
        return np.zeros(0)
    p = params
    kappa = np.abs(np.nan_to_num(np.asarray(curvature_1pm, dtype=float), nan=0.0, posinf=0.0, neginf=0.0))
    limit = np.broadcast_to(np.asarray(speed_limit_mps, dtype=float), s.shape)
    limit = np.where(np.isfinite(limit), np.maximum(limit, 0.0), 0.0)
    with np.errstate(divide="ignore"):
        cap = np.minimum(limit, np.sqrt(p.comfort_lateral_accel_mps2 / kappa))
    if not math.isnan(stop_at_s_m):
        cap = np.minimum(cap, np.sqrt(2.0 * p.comfort_decel_mps2 * np.maximum(stop_at_s_m - s, 0.0)))
    # Both passes in closed form (min-plus): braking at b, the speed at s_i is bounded
    # by every later cap, v_i^2 <= min_{j >= i} (cap_j^2 + 2 b s_j) - 2 b s_i; the
    # forward pass likewise with the earlier points and (0, v0).
    s = np.maximum.accumulate(s)  # a path doubling back on itself counts as standing still
    two_b, two_a = 2.0 * p.comfort_decel_mps2, 2.0 * p.comfort_accel_mps2
    braking = np.minimum.accumulate((cap ** 2 + two_b * s)[::-1])[::-1] - two_b * s
    v2 = np.minimum(cap ** 2, np.maximum(braking, 0.0))
    v0 = max(v0_mps, 0.0) if math.isfinite(v0_mps) else 0.0
    ahead = s > 0.0
    reach = np.minimum.accumulate(np.where(ahead, v2 - two_a * s, np.inf))
    v2 = np.where(ahead, np.minimum(v2, np.minimum(reach, v0 ** 2) + two_a * s), np.minimum(v2, v0 ** 2))
    v = np.sqrt(np.maximum(v2, 0.0))
    return v


def controls_from_accel(accel_mps2: float, steer: float, speed_mps: float, vehicle: VehicleModel,
                        hold_brake: float = 0.3) -> VehicleControl:
    """Throttle and brake that give ``accel_mps2`` at ``speed_mps`` under the vehicle's
    pedal model (``hold_brake`` held below 0.3 m/s when not accelerating, so the
    car does not creep), with ``steer``; clamped into range.
    Raises ``ValueError`` on NaN/inf (a :class:`VehicleControl` cannot hold them)."""
    throttle, brake = pedals_for_accel(np.float64(accel_mps2), np.float64(speed_mps), vehicle, hold_brake)
    return VehicleControl.clamped(throttle=float(throttle), steer=float(steer), brake=float(brake))
