"""The planner's controllers on the simulator's real kinematic bicycle: pure pursuit,
the speed PID with the pedal inversion, the speed profile."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from drivestack.config import ConfigError, from_mapping, read_yaml
from drivestack.schema import EgoState
from planning.control import (DEFAULT_CONTROL_PARAMS, ControlParams, LongitudinalController, controls_from_accel,
                              lookahead_distance_m, pure_pursuit_steer, speed_profile)
from planning.inputs import VehicleModel
from sim.vehicle_dynamics import BicycleState, VehicleParams, step

DT_S = 0.05
PARAMS = ControlParams.load()
VEHICLE_PARAMS = VehicleParams.load()
VEHICLE = VehicleModel.of(VEHICLE_PARAMS)


def ego_of(state: BicycleState) -> EgoState:
    return EgoState(0, float(state.x_m[0]), float(state.y_m[0]), float(state.yaw_rad[0]), float(state.speed_mps[0]))


def apply(state: BicycleState, control) -> None:
    step(state, VEHICLE_PARAMS, np.array([control.throttle]), np.array([control.steer]), np.array([control.brake]),
         np.array([False]), DT_S)


def drive_path(path: np.ndarray, x: float, y: float, yaw: float, speed_mps: float, seconds: float):
    """Pure pursuit and the speed PID on the bicycle; the box centre after each step."""
    state = BicycleState.zeros(1)
    state.x_m[:], state.y_m[:], state.yaw_rad[:], state.speed_mps[:] = x, y, yaw, speed_mps
    longitudinal = LongitudinalController(PARAMS)
    centres = []
    for _ in range(int(seconds / DT_S)):
        ego = ego_of(state)
        steer = pure_pursuit_steer(path, ego, ego.speed_mps, VEHICLE, PARAMS)
        accel = longitudinal.command(speed_mps, ego.speed_mps, DT_S)
        apply(state, controls_from_accel(accel, steer, ego.speed_mps, VEHICLE))
        centres.append((state.x_m[0], state.y_m[0]))
    return np.array(centres)


# -- pure pursuit ----------------------------------------------------------------------

@pytest.mark.parametrize("speed_mps", [3.0, 8.0, 15.0])
def test_pure_pursuit_converges_onto_a_straight_path_from_1m_offset(speed_mps):
    xs = np.arange(-10.0, 400.0, 1.0)
    path = np.c_[xs, np.zeros_like(xs)]
    lateral = drive_path(path, 0.0, 1.0, 0.0, speed_mps, 20.0)[:, 1]
    settle = int(6.0 / DT_S)
    assert np.abs(lateral[settle:]).max() < 0.05
    assert lateral.min() > -0.15  # crosses over by at most a few centimetres, no weaving
    assert abs(lateral[-1]) < 0.01


@pytest.mark.parametrize("speed_mps", [5.0, 7.5])
def test_pure_pursuit_tracks_a_30m_radius_circle(speed_mps):
    radius = 30.0
    angle = np.linspace(-0.3, 2 * math.pi - 0.4, 1000)  # one lap: the path must not overlap itself
    path = np.c_[radius * np.sin(angle), radius - radius * np.cos(angle)]  # a left turn from the origin
    centres = drive_path(path, 0.0, 0.0, 0.0, speed_mps, 20.0)
    error = np.hypot(centres[:, 0], centres[:, 1] - radius) - radius
    assert np.abs(error).max() < 0.3
    assert np.abs(error[-int(5.0 / DT_S):]).max() < 0.1  # settled on the circle, not just near it
    assert np.hypot(*(centres[-1] - centres[0])) > 10.0  # it did drive around


def test_pure_pursuit_steers_left_towards_a_path_on_the_left():
    ego = EgoState(0, 0.0, 0.0, 0.0, 5.0)
    path = np.array([[0.0, 2.0], [50.0, 2.0]])
    assert 0.0 < pure_pursuit_steer(path, ego, 5.0, VEHICLE, PARAMS) <= 1.0
    assert pure_pursuit_steer(path * [1, -1], ego, 5.0, VEHICLE, PARAMS) < 0.0
    # The same geometry turned by 90 degrees gives the same steer.
    turned = EgoState(0, 0.0, 0.0, math.pi / 2, 5.0)
    assert pure_pursuit_steer(path[:, ::-1] * [-1, 1], turned, 5.0, VEHICLE, PARAMS) == pytest.approx(
        pure_pursuit_steer(path, ego, 5.0, VEHICLE, PARAMS))


def test_pure_pursuit_matches_the_arc_through_the_lookahead_point():
    speed = 8.0
    lookahead = lookahead_distance_m(speed, PARAMS)
    assert lookahead == pytest.approx(PARAMS.lookahead_gain_s * speed + PARAMS.lookahead_min_m)
    rear_x = -VEHICLE.rear_axle_to_center_m
    # A straight path 1 m to the left: the lookahead point is (rear_x + sqrt(Ld^2 - 1), 1).
    path = np.c_[np.linspace(-20, 60, 161), np.ones(161)]
    alpha = math.asin(1.0 / lookahead)
    expected = math.atan(VEHICLE.wheelbase_m * 2 * math.sin(alpha) / lookahead) / VEHICLE.max_steer_angle_rad
    steer = pure_pursuit_steer(path, EgoState(0, 0.0, 0.0, 0.0, speed), speed, VEHICLE, PARAMS)
    assert steer == pytest.approx(expected, rel=1e-9)
    assert rear_x < 0


def test_pure_pursuit_extrapolates_a_short_path_and_rejects_an_empty_one():
    ego = EgoState(0, 0.0, 0.0, 0.0, 10.0)
    long_path = np.c_[np.linspace(0, 100, 201), np.full(201, 1.0)]
    short_path = long_path[:3]  # 1 m long, well inside the 9 m lookahead
    assert pure_pursuit_steer(short_path, ego, 10.0, VEHICLE, PARAMS) == pytest.approx(
        pure_pursuit_steer(long_path, ego, 10.0, VEHICLE, PARAMS))
    for degenerate in (np.zeros((0, 2)), np.array([[5.0, 1.0]]), np.array([[5.0, 1.0], [5.0, 1.0]]),
                       np.full((4, 2), np.nan)):
        assert pure_pursuit_steer(degenerate, ego, 10.0, VEHICLE, PARAMS) == 0.0
    with_nan = long_path.copy()
    with_nan[50] = np.nan
    assert math.isfinite(pure_pursuit_steer(with_nan, ego, 10.0, VEHICLE, PARAMS))
    # Farther off the path than the lookahead: turn towards it.
    assert pure_pursuit_steer(long_path + [0, 30], ego, 10.0, VEHICLE, PARAMS) > 0.1
    assert pure_pursuit_steer(long_path - [0, 30], ego, 10.0, VEHICLE, PARAMS) < -0.1
    # The path behind the car: full lock towards its side, not a near-zero steer.
    behind = np.array([[-30.0, 0.5], [-60.0, 0.5]])
    assert pure_pursuit_steer(behind, ego, 10.0, VEHICLE, PARAMS) == 1.0


# -- longitudinal ----------------------------------------------------------------------

def drive_speed(v0: float, limit: float, stop_x: float, seconds: float):
    """The speed profile, read slightly ahead with its slope as feed-forward, through
    the PID and the pedal inversion on the bicycle: (x, speed, measured accel) per step."""
    xs = np.arange(-5.0, 500.0, 0.5)
    state = BicycleState.zeros(1)
    state.speed_mps[:] = v0
    longitudinal = LongitudinalController(PARAMS)
    log = []
    for _ in range(int(seconds / DT_S)):
        x, v = float(state.x_m[0]), float(state.speed_mps[0])
        s = xs - x
        profile = speed_profile(s, np.zeros_like(s), limit, v, PARAMS, stop_at_s_m=stop_x - x)
        preview = max(0.3 * v, 0.5)
        target = float(np.interp(preview, s, profile))
        feedforward = (float(np.interp(preview + 1.0, s, profile)) ** 2 - target ** 2) / 2.0
        accel = longitudinal.command(target, v, DT_S, feedforward)
        apply(state, controls_from_accel(accel, 0.0, v, VEHICLE))
        log.append((state.x_m[0], state.speed_mps[0], state.accel_mps2[0]))
    return np.array(log)


def test_speed_pid_reaches_and_holds_the_target_speed():
    log = drive_speed(0.0, 12.0, math.inf, 30.0)
    speed, accel = log[:, 1], log[:, 2]
    assert np.abs(speed[int(12.0 / DT_S):] - 12.0).max() < 0.1
    assert speed.max() < 12.1  # no windup overshoot after the long launch
    assert accel.max() <= PARAMS.comfort_accel_mps2 + 1e-9
    assert accel.min() >= -PARAMS.comfort_decel_mps2 - 1e-9


@pytest.mark.parametrize("v0_mps", [8.0, 12.0, 15.0])
def test_speed_pid_stops_at_the_stop_point_within_comfort_decel(v0_mps):
    stop_x = 80.0
    log = drive_speed(v0_mps, 15.0, stop_x, 40.0)
    assert abs(log[-1, 0] - stop_x) < 0.5
    assert log[-1, 1] == 0.0
    assert log[:, 0].max() < stop_x + 0.5  # never past it and back
    assert log[:, 2].min() >= -3.0 - 1e-9  # the comfort limit, measured on the bicycle
    stopped = np.flatnonzero(log[:, 1] == 0.0)[0]
    assert (log[stopped:, 1] == 0.0).all()  # held: no creeping off


def test_longitudinal_limits_and_emergency():
    longitudinal = LongitudinalController(PARAMS)
    assert longitudinal.command(0.0, 20.0, DT_S) == -PARAMS.comfort_decel_mps2
    assert longitudinal.command(0.0, 20.0, DT_S, emergency=True) == -PARAMS.emergency_decel_mps2
    assert longitudinal.command(0.0, 20.0, DT_S, feedforward_accel_mps2=-50.0, emergency=True) \
        == -PARAMS.emergency_decel_mps2
    assert longitudinal.command(30.0, 0.0, DT_S) == PARAMS.comfort_accel_mps2
    assert longitudinal.command(30.0, 0.0, DT_S, emergency=True) == PARAMS.comfort_accel_mps2
    assert longitudinal.command(10.0, 10.5, DT_S, feedforward_accel_mps2=1.0) <= 0.0  # above the target
    assert longitudinal.command(math.nan, 10.0, DT_S) == -PARAMS.comfort_decel_mps2
    longitudinal.reset()
    assert longitudinal.command(10.0, 10.0, DT_S) == 0.0


def test_controls_from_accel_inverts_the_pedal_model():
    for speed, accel in ((5.0, 1.5), (15.0, -2.0), (25.0, 0.8), (10.0, -7.0)):
        state = BicycleState.zeros(1)
        state.speed_mps[:] = speed
        control = controls_from_accel(accel, 0.2, speed, VEHICLE)
        assert control.steer == 0.2
        assert (control.throttle == 0.0) or (control.brake == 0.0)
        apply(state, control)
        assert state.accel_mps2[0] == pytest.approx(accel, abs=1e-9)
    held = controls_from_accel(0.0, 0.0, 0.0, VEHICLE)
    assert held.throttle == 0.0 and held.brake >= 0.3  # standstill: the brake holds
    assert controls_from_accel(-100.0, 5.0, 10.0, VEHICLE).brake == 1.0  # clamped
    assert controls_from_accel(-100.0, 5.0, 10.0, VEHICLE).steer == 1.0


def test_pedals_for_accel_moved_to_drivestack_and_still_importable_from_sim():
    import drivestack.vehicle_control as shared
    import sim.control

    assert sim.control.pedals_for_accel is shared.pedals_for_accel
    assert sim.control.SpeedPID is shared.SpeedPID


# -- speed profile ---------------------------------------------------------------------

def test_speed_profile_respects_limit_curvature_and_comfort():
    s = np.arange(-5.0, 250.0, 0.5)
    curvature = np.where((s > 40) & (s < 60), 1 / 20.0, 0.0)  # a 20 m radius bend
    limit = np.where(s > 200, 8.0, 14.0)
    v0 = 10.0
    v = speed_profile(s, curvature, limit, v0, PARAMS)
    assert (v <= limit + 1e-9).all()
    bend = curvature > 0
    assert (v[bend] <= math.sqrt(PARAMS.comfort_lateral_accel_mps2 * 20.0) + 1e-9).all()
    assert v[bend].max() == pytest.approx(math.sqrt(2.0 * 20.0))
    dv2 = np.diff(v ** 2)
    ds = np.diff(s)
    assert (dv2 >= -2 * PARAMS.comfort_decel_mps2 * ds - 1e-9).all()  # braking in time
    assert (dv2 <= 2 * PARAMS.comfort_accel_mps2 * ds + 1e-9).all()
    assert (v[s <= 0] <= v0).all()
    assert v[np.searchsorted(s, 0.0)] == pytest.approx(v0)
    assert v.max() == pytest.approx(14.0)  # reaches the limit between the bends


def test_speed_profile_stops_at_the_stop_point():
    s = np.arange(-5.0, 60.0, 0.5)
    v = speed_profile(s, np.zeros_like(s), 15.0, 12.0, PARAMS, stop_at_s_m=40.0)
    assert (v[s >= 40.0] == 0.0).all()
    assert (v[s < 40.0] > 0.0).all()
    expected = np.sqrt(2 * PARAMS.comfort_decel_mps2 * np.maximum(40.0 - s, 0.0))
    near = (s > 20) & (s < 40)
    assert v[near] == pytest.approx(expected[near])
    already = speed_profile(s, np.zeros_like(s), 15.0, 12.0, PARAMS, stop_at_s_m=0.0)
    assert (already[s >= 0] == 0.0).all()
    assert speed_profile(np.zeros(0), np.zeros(0), 10.0, 5.0, PARAMS).shape == (0,)
    assert np.isfinite(speed_profile(s, np.full_like(s, np.nan), np.nan, math.nan, PARAMS)).all()


# -- parameters ------------------------------------------------------------------------

def test_control_params_are_validated():
    data = read_yaml(DEFAULT_CONTROL_PARAMS)
    assert all(any(unit in key for unit in ("_s", "_m", "_mps", "_per_s", "kd")) for key in data)
    with pytest.raises(ConfigError, match="missing"):
        from_mapping(ControlParams, {k: v for k, v in data.items() if k != "lookahead_min_m"}, "control.yaml")
    with pytest.raises(ConfigError, match="comfort_decel_mps2"):
        from_mapping(ControlParams, {**data, "comfort_decel_mps2": -1.0}, "control.yaml")
    with pytest.raises(ValueError):
        dataclasses.replace(PARAMS, lookahead_max_m=1.0)
