"""The inverse of the vehicle's pedal model and a speed PID (numpy only).

Shared by the simulator's expert and NPC traffic (``sim``) and the planner's
controllers (``planning``), so both invert the same pedal model: throttle and brake map
linearly to acceleration and deceleration, less rolling resistance and drag
(``sim.vehicle_dynamics``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class PedalModel(Protocol):
    """The vehicle attributes the pedal inversion reads (``sim.vehicle_dynamics.VehicleParams``,
    ``planning.inputs.VehicleModel``)."""

    max_accel_mps2: float
    max_brake_decel_mps2: float
    rolling_resistance_mps2: float
    drag_coefficient_per_m: float


def _clip(x, low, high):
    # np.minimum/np.maximum rather than np.clip: the same operations as sim.numeric.clip,
    # so the simulator's trajectories stay bit-identical.
    return np.minimum(np.maximum(x, low), high)


def pedals_for_accel(accel, v, vehicle: PedalModel, hold_brake: float = 0.3):
    """(throttle, brake) that give ``accel`` at speed ``v`` under the bicycle's pedal model."""
    resist = vehicle.rolling_resistance_mps2 * (v > 1e-3) + vehicle.drag_coefficient_per_m * v * v
    throttle = _clip((accel + resist) / vehicle.max_accel_mps2, 0.0, 1.0)
    brake = _clip((-accel - resist) / vehicle.max_brake_decel_mps2, 0.0, 1.0)
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

    def __call__(self, error_mps: float, dt_s: float, integrate: bool = True) -> float:
        """``integrate=False`` holds the integral this step (a caller's anti-windup
        while its output is saturated)."""
        if integrate and abs(error_mps) < self.integrate_band_mps:
            self._integral = min(max(self._integral + error_mps * dt_s, -self.integral_limit_mps),
                                 self.integral_limit_mps)
        derivative = 0.0 if self._last_error is None else (error_mps - self._last_error) / dt_s
        self._last_error = error_mps
        return self.kp_per_s * error_mps + self.ki_per_s2 * self._integral + self.kd * derivative
