"""Controllers shared by the expert driver and NPC traffic (plain numpy, vectorised).

- Stanley lateral control at the front axle (Thrun et al. 2006), which tracks a lane
  centre through turns without cutting;
- IDM acceleration (Treiber, Hennecke, Helbing 2000) for car following;
- a PID on speed and the inverse of the bicycle's pedal model, which live in
  ``drivestack.vehicle_control`` (the planner inverts the same model) and are
  re-exported here.
"""

from __future__ import annotations

import math

import numpy as np

from drivestack.vehicle_control import SpeedPID, pedals_for_accel
from sim.numeric import clip, wrap
from sim.vehicle_dynamics import VehicleParams

__all__ = ["SpeedPID", "front_axle_xy", "idm_accel", "pedals_for_accel", "stanley_steer"]


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
