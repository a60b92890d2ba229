"""Kinematic bicycle against closed-form results."""

import math

import numpy as np
import pytest

from drivestack.schema import VehicleControl
from sim.vehicle_dynamics import BicycleState, VehicleParams, step

DT_S = 0.05


@pytest.fixture(scope="module")
def params() -> VehicleParams:
    return VehicleParams.load()


def drive(params, state, throttle, steer, brake, steps, reverse=False):
    for _ in range(steps):
        step(state, params, np.array([throttle]), np.array([steer]), np.array([brake]),
             np.array([reverse]), DT_S)


@pytest.mark.parametrize("v0_mps", [5.0, 10.0, 20.0])
def test_straight_line_stopping_distance(params, v0_mps):
    state = BicycleState.zeros(1)
    state.speed_mps[:] = v0_mps
    drive(params, state, 0.0, 0.0, 1.0, int(10 / DT_S))
    assert state.speed_mps[0] == 0.0  # stops, never rolls backwards
    # Full brake plus rolling resistance (drag adds a little at speed).
    decel = params.max_brake_decel_mps2 + params.rolling_resistance_mps2
    analytic_m = v0_mps**2 / (2 * decel)
    # Semi-implicit Euler removes v*dt/2 of travel per stop at most.
    assert state.x_m[0] == pytest.approx(analytic_m, abs=v0_mps * DT_S)
    assert state.x_m[0] <= analytic_m
    assert state.y_m[0] == 0.0


@pytest.mark.parametrize("steer", [0.2, 0.5, 1.0, -0.6])
def test_turning_radius_matches_analytic_bicycle(params, steer):
    state = BicycleState.zeros(1)
    state.speed_mps[:] = 3.0
    drive(params, state, 0.0, steer, 0.0, 40)  # wheel angle settles (rate-limited)
    state.speed_mps[:] = 3.0
    xs, ys = [], []
    for _ in range(400):
        state.speed_mps[:] = 3.0  # hold speed: the radius is kinematic, speed-independent
        drive(params, state, 0.0, steer, 0.0, 1)
        xs.append(state.x_m[0])
        ys.append(state.y_m[0])
    pts = np.column_stack([xs, ys])
    # Least-squares circle fit (Kasa).
    a = np.column_stack([2 * pts, np.ones(len(pts))])
    b = (pts**2).sum(axis=1)
    cx, cy, c = np.linalg.lstsq(a, b, rcond=None)[0]
    radius = math.sqrt(c + cx**2 + cy**2)
    expected = params.turning_radius_m(steer * params.max_steer_angle_rad)
    assert radius == pytest.approx(expected, rel=0.01)
    # Positive steer turns left (counter-clockwise, REP 103).
    assert np.sign(state.yaw_rate_radps[0]) == np.sign(steer)


def test_steering_is_rate_limited(params):
    state = BicycleState.zeros(1)
    drive(params, state, 0.0, 1.0, 0.0, 1)
    assert state.steer_angle_rad[0] == pytest.approx(params.max_steer_rate_radps * DT_S)


def test_throttle_accelerates_and_reverse_goes_backwards(params):
    state = BicycleState.zeros(1)
    drive(params, state, 1.0, 0.0, 0.0, 20)
    assert state.speed_mps[0] == pytest.approx(1.0 * (params.max_accel_mps2 - params.rolling_resistance_mps2), rel=0.05)
    back = BicycleState.zeros(1)
    drive(params, back, 1.0, 0.0, 0.0, 200, reverse=True)
    assert back.speed_mps[0] == pytest.approx(-params.max_reverse_speed_mps)
    assert back.x_m[0] < 0


def test_control_rejects_nan_and_out_of_range_but_clamps_on_request():
    with pytest.raises(ValueError, match="steer is nan"):
        VehicleControl(steer=float("nan"))
    with pytest.raises(ValueError, match=r"throttle=1.5 is outside \[0.0, 1.0\]"):
        VehicleControl(throttle=1.5)
    with pytest.raises(ValueError, match="brake is inf"):
        VehicleControl.clamped(brake=float("inf"))
    assert VehicleControl.clamped(throttle=2.0, steer=-3.0) == VehicleControl(throttle=1.0, steer=-1.0)


def test_parameter_file_errors_name_the_key(tmp_path):
    from drivestack.config import ConfigError
    bad = tmp_path / "vehicle.yaml"
    text = (VehicleParams.load.__defaults__[0]).read_text()
    bad.write_text(text.replace("max_accel_mps2: 3.5", "max_accel_mps2: .nan"))
    with pytest.raises(ConfigError, match="max_accel_mps2"):
        VehicleParams.load(bad)
    bad.write_text(text + "\nmax_accel: 3\n")
    with pytest.raises(ConfigError, match="unknown key"):
        VehicleParams.load(bad)
