"""Kinematic bicycle for every vehicle of the built-in simulator, vectorised over vehicles.

State per vehicle: box-centre pose (x, y, yaw) in ``map``, signed speed along the
heading and front-wheel angle. The centre-of-gravity form (Rajamani, Vehicle Dynamics
and Control, 2.2) keeps the box centre as the reference point:
``beta = atan(l_r / L * tan(delta))``, ``yaw_rate = v cos(beta) tan(delta) / L``.
Steering is rate-limited towards ``steer * max_steer_angle_rad``; throttle and brake
map linearly to acceleration and deceleration, with rolling resistance and drag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivestack.config import load_params
from sim.numeric import clip

DEFAULT_VEHICLE_PARAMS = Path(__file__).parent / "config" / "vehicle_compact.yaml"


@dataclass(frozen=True)
class VehicleParams:
    length_m: float
    width_m: float
    height_m: float
    wheelbase_m: float
    rear_axle_to_center_m: float
    max_steer_angle_rad: float
    max_steer_rate_radps: float
    max_accel_mps2: float
    max_brake_decel_mps2: float
    rolling_resistance_mps2: float
    drag_coefficient_per_m: float
    max_speed_mps: float
    max_reverse_speed_mps: float

    def __post_init__(self) -> None:
        positive = ("length_m", "width_m", "wheelbase_m", "max_steer_angle_rad", "max_steer_rate_radps",
                    "max_accel_mps2", "max_brake_decel_mps2", "max_speed_mps")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if not 0 < self.rear_axle_to_center_m < self.wheelbase_m:
            raise ValueError("rear_axle_to_center_m must lie between the axles")

    @classmethod
    def load(cls, path: str | Path = DEFAULT_VEHICLE_PARAMS) -> VehicleParams:
        return load_params(cls, path)

    def turning_radius_m(self, steer_angle_rad: float) -> float:
        """Radius of the circle the box centre drives at a constant wheel angle."""
        tan_d = np.tan(abs(steer_angle_rad))
        if tan_d == 0:
            return float("inf")
        lr, wb = self.rear_axle_to_center_m, self.wheelbase_m
        return float(np.sqrt(lr**2 + (wb / tan_d) ** 2))


@dataclass
class BicycleState:
    """Arrays of shape (n,), one entry per vehicle; mutated in place by :func:`step`."""

    x_m: np.ndarray
    y_m: np.ndarray
    yaw_rad: np.ndarray
    speed_mps: np.ndarray
    steer_angle_rad: np.ndarray
    yaw_rate_radps: np.ndarray
    accel_mps2: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> BicycleState:
        return cls(*(np.zeros(n) for _ in range(7)))

    def __len__(self) -> int:
        return len(self.x_m)


def step(state: BicycleState, params: VehicleParams, throttle: np.ndarray, steer: np.ndarray,
         brake: np.ndarray, reverse: np.ndarray, dt_s: float) -> None:
    """Advance every vehicle by ``dt_s`` (semi-implicit Euler: speed first, then pose)."""
    target = steer * params.max_steer_angle_rad
    max_delta = params.max_steer_rate_radps * dt_s
    state.steer_angle_rad += clip(target - state.steer_angle_rad, -max_delta, max_delta)

    v = state.speed_mps
    direction = np.where(reverse, -1.0, 1.0)
    drive = direction * throttle * params.max_accel_mps2
    # Brake and resistances oppose motion and can bring the car to rest, not reverse it.
    resist = brake * params.max_brake_decel_mps2 + params.rolling_resistance_mps2 * (np.abs(v) > 1e-3) \
        + params.drag_coefficient_per_m * v * v
    v_drive = v + drive * dt_s
    sign = np.sign(v_drive)
    v_new = np.where(np.abs(v_drive) <= resist * dt_s, 0.0, v_drive - sign * resist * dt_s)
    v_new = clip(v_new, -params.max_reverse_speed_mps, params.max_speed_mps)
    state.accel_mps2[:] = (v_new - v) / dt_s
    state.speed_mps[:] = v_new

    lr, wb = params.rear_axle_to_center_m, params.wheelbase_m
    tan_d = np.tan(state.steer_angle_rad)
    beta = np.arctan(lr / wb * tan_d)
    state.yaw_rate_radps[:] = v_new * np.cos(beta) * tan_d / wb
    heading = state.yaw_rad + beta
    state.x_m += v_new * np.cos(heading) * dt_s
    state.y_m += v_new * np.sin(heading) * dt_s
    state.yaw_rad[:] = np.arctan2(np.sin(state.yaw_rad + state.yaw_rate_radps * dt_s),
                                  np.cos(state.yaw_rad + state.yaw_rate_radps * dt_s))
