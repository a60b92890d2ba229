"""Controllers shared by the expert driver and NPC traffic (plain numpy, vectorised).

- Stanley lateral control at the front axle (Thrun et al. 2006), which tracks a lane
  centre through turns without cutting;
- IDM acceleration (Treiber, Hennecke, Helbing 2000) for car following;
- a PID on speed, and the inverse of the bicycle's pedal model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sim.numeric import clip, wrap
from sim.vehicle_dynamics import VehicleParams


def front_axle_xy(x: np.ndarray, y: np.ndarray, yaw: np.ndarray, vehicle: VehicleParams
                  ) -> tuple[np.ndarray, np.ndarray]:
    front = vehicle.wheelbase_m - vehicle.rear_axle_to_center_m
    return x + front * np.cos(yaw), y + front * np.sin(yaw)


def stanley_steer(front_x, front_y, yaw, speed_mps, ref_x, ref_y, ref_yaw,
                  vehicle: VehicleParams, gain_per_s: float, soft_speed_mps: float):
    """Normalised steer in [-1, 1] (+ = left) that brings the front axle onto the path.

    ``ref_*`` is the path point nearest to the front axle. The wheels are pointed along
    the path tangent plus a cross-track correction; on a curve the body then lags the
    tangent by exactly the steady-state wheel angle, so no curvature feed-forward is
    added (it would pull the car inside the turn until the correction cancelled it).
    """
    cross_track = -(front_x - ref_x) * np.sin(ref_yaw) + (front_y - ref_y) * np.cos(ref_yaw)
    delta = wrap(ref_yaw - yaw) - np.arctan(gain_per_s * cross_track / (np.abs(speed_mps) + soft_speed_mps))
    return clip(delta / vehicle.max_steer_angle_rad, -1.0, 1.0)


def idm_accel(v, v0, gap_m, lead_v, *, time_gap_s: float, min_gap_m: float, max_accel_mps2: float,
              comfort_decel_mps2: float, exponent: float, max_decel_mps2: float):
    """IDM acceleration; ``gap_m`` = inf means a free road."""
    a, b = max_accel_mps2, comfort_decel_mps2
    s_star = min_gap_m + np.maximum(0.0, v * time_gap_s + v * (v - lead_v) / (2 * math.sqrt(a * b)))
    interaction = np.where(np.isfinite(gap_m), (s_star / np.maximum(gap_m, 0.1)) ** 2, 0.0)
    accel = a * (1 - (v / np.maximum(v0, 0.1)) ** exponent - interaction)
    return clip(accel, -max_decel_mps2, a)


def pedals_for_accel(accel, v, vehicle: VehicleParams, hold_brake: float = 0.3):
    """(throttle, brake) that give ``accel`` at speed ``v`` under the bicycle's pedal model."""
    resist = vehicle.rolling_resistance_mps2 * (v > 1e-3) + vehicle.drag_coefficient_per_m * v * v
    throttle = clip((accel + resist) / vehicle.max_accel_mps2, 0.0, 1.0)
    brake = clip((-accel - resist) / vehicle.max_brake_decel_mps2, 0.0, 1.0)
    # Hold the car at a standstill rather than letting it creep.
    brake = np.where((accel <= 0) & (v < 0.3), np.maximum(brake, hold_brake), brake)
    return np.where(accel > 0, throttle, 0.0), np.where(accel > 0, 0.0, brake)


@dataclass
class SpeedPID:
    """PID on speed error giving an acceleration command (m/s^2), with anti-windup:
    the integral only collects near the target (conditional integration), so a long
    acceleration does not wind it up into an overshoot past the speed limit."""

    kp_per_s: float = 1.2
    ki_per_s2: float = 0.15
    kd: float = 0.0
    integral_limit_mps: float = 5.0
    integrate_band_mps: float = 1.0
    _integral: float = field(default=0.0, repr=False)
    _last_error: float | None = field(default=None, repr=False)

    def reset(self) -> None:
        self._integral, self._last_error = 0.0, None

    def __call__(self, error_mps: float, dt_s: float) -> float:
        if abs(error_mps) < self.integrate_band_mps:
            self._integral = min(max(self._integral + error_mps * dt_s, -self.integral_limit_mps),
                                 self.integral_limit_mps)
        derivative = 0.0 if self._last_error is None else (error_mps - self._last_error) / dt_s
        self._last_error = error_mps
        return self.kp_per_s * error_mps + self.ki_per_s2 * self._integral + self.kd * derivative
