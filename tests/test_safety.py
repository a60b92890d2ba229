"""The safety supervisor: faults, controlled stops, TTC braking, mode rules, clamping."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from drivestack.config import ConfigError, from_mapping, read_yaml
from drivestack.schema import EgoState, VehicleControl
from planning.inputs import DriveMode, ObstacleScan, LaneDetections, PlannerInputs, PolicyProposal, Track, \
    VehicleModel
from planning.safety import DEFAULT_SAFETY_PARAMS, SafetyParams, SafetySupervisor, SupervisorDecision
from sim.vehicle_dynamics import BicycleState, VehicleParams, step

VEHICLE_PARAMS = VehicleParams.load()
VEHICLE = VehicleModel.of(VEHICLE_PARAMS)
PARAMS = SafetyParams.load()
NOW_NS = 10_000_000_000
STRAIGHT = np.c_[np.linspace(-5.0, 60.0, 131), np.zeros(131)]
FRONT_M = VEHICLE.length_m / 2


def ego(speed_mps: float = 10.0, stamp_ns: int = NOW_NS, **kw) -> EgoState:
    return EgoState(stamp_ns, kw.pop("x_m", 0.0), kw.pop("y_m", 0.0), kw.pop("yaw_rad", 0.0), speed_mps, **kw)


def fresh_inputs(ego_state: EgoState | None = None, age_s: dict | None = None, **overrides) -> PlannerInputs:
    """Every input present and from this frame, unless ``age_s`` makes one older."""
    age_s = age_s or {}

    def stamp(name):
        return NOW_NS - int(age_s.get(name, 0.0) * 1e9)

    values = dict(ego=ego() if ego_state is None else ego_state,
                  lanes=LaneDetections(stamp("lanes"), ()), obstacles=ObstacleScan(stamp("obstacles"), ()),
                  policy=PolicyProposal(stamp("policy"), 0.0, 0.3, 0.0))
    values.update(overrides)
    return PlannerInputs(NOW_NS, **values)


def track(track_id: int = 4, x_m: float = 20.0, y_m: float = 0.0, vx_mps: float = 0.0, vy_mps: float = 0.0,
          label: str = "vehicle", length_m: float = 4.5, width_m: float = 1.9, yaw_rad: float = 0.0) -> Track:
    """A track with the ego at the map origin facing +x (base_link = map)."""
    return Track(track_id, label, x_m, y_m, vx_mps, vy_mps, length_m, width_m, yaw_rad, x_m, y_m, vx_mps, vy_mps,
                 0.2, 2.0, 10, ("lidar",))


def supervisor(mode=DriveMode.MODULAR, required=("lanes", "obstacles"), params=PARAMS) -> SafetySupervisor:
    return SafetySupervisor(VEHICLE, mode, required, params)


def brake_for(decel_mps2: float, speed_mps: float) -> float:
    resist = VEHICLE.rolling_resistance_mps2 + VEHICLE.drag_coefficient_per_m * speed_mps ** 2
    return (decel_mps2 - resist) / VEHICLE.max_brake_decel_mps2


CRUISE = (0.05, 0.3, 0.0)


def test_fresh_inputs_pass_the_proposal_through():
    decision = supervisor().supervise(fresh_inputs(), CRUISE, (), STRAIGHT)
    assert isinstance(decision, SupervisorDecision)
    assert decision.control == VehicleControl(throttle=0.3, steer=0.05, brake=0.0)
    assert decision.override == "" and decision.faults == () and decision.ttc_s == math.inf


def test_stale_input_gives_a_controlled_stop_with_the_reason():
    sup = supervisor()
    decision = sup.supervise(fresh_inputs(age_s={"obstacles": 0.35}), CRUISE, (), STRAIGHT)
    assert decision.faults == ("obstacles stale (0.35 s old)",)
    assert decision.override == "controlled stop: obstacles stale (0.35 s old)"
    assert decision.control.throttle == 0.0
    assert decision.control.steer == 0.05  # keeps steering along the path while stopping
    assert decision.control.brake == pytest.approx(brake_for(PARAMS.controlled_stop_decel_mps2, 10.0))
    assert sup.counts["fault: obstacles stale"] == 1 and sup.counts["override: controlled stop"] == 1
    # At the limit an input is still fresh.
    at_limit = sup.supervise(fresh_inputs(age_s={"obstacles": PARAMS.max_input_age_s}), CRUISE, (), STRAIGHT)
    assert at_limit.override == "" and at_limit.faults == ()


def test_controlled_stop_decelerates_the_bicycle_at_the_controlled_stop_rate():
    state = BicycleState.zeros(1)
    state.speed_mps[:] = 15.0
    sup = supervisor()
    measured = []
    for _ in range(40):
        inputs = fresh_inputs(ego(float(state.speed_mps[0])), age_s={"lanes": 1.0})
        control = sup.supervise(inputs, (0.0, 0.5, 0.0), (), STRAIGHT).control
        step(state, VEHICLE_PARAMS, np.array([control.throttle]), np.array([control.steer]),
             np.array([control.brake]), np.array([False]), 0.05)
        measured.append(state.accel_mps2[0])
    assert np.allclose(measured, -PARAMS.controlled_stop_decel_mps2)


def test_missing_required_input_and_missing_or_stale_ego():
    sup = supervisor()
    decision = sup.supervise(fresh_inputs(lanes=None), CRUISE, (), STRAIGHT)
    assert decision.faults == ("lanes missing",)
    assert decision.override.startswith("controlled stop") and decision.control.throttle == 0.0
    # Not required: not checked.
    assert supervisor(required=("obstacles",)).supervise(fresh_inputs(lanes=None), CRUISE, (), STRAIGHT).faults == ()
    stale_ego = sup.supervise(fresh_inputs(ego(stamp_ns=NOW_NS - 500_000_000)), CRUISE, (), STRAIGHT)
    assert stale_ego.faults == ("ego stale (0.50 s old)",)
    for inputs, fault in ((PlannerInputs(NOW_NS, None), "ego missing"),
                          (fresh_inputs(ego(speed_mps=math.nan)), "ego NaN"),
                          (fresh_inputs(ego(x_m=math.inf)), "ego NaN")):
        decision = sup.supervise(inputs, CRUISE, (), STRAIGHT)
        assert decision.control == VehicleControl(throttle=0.0, steer=0.0, brake=1.0)
        assert decision.faults == (fault,) and decision.override == f"{fault}: full brake"
    assert sup.counts["fault: ego NaN"] == 2 and sup.counts["override: full brake"] == 3


def test_nan_proposal_is_caught_and_counted_in_every_mode():
    for mode, name in ((DriveMode.POLICY, "policy"), (DriveMode.POLICY_SAFETY, "policy"),
                       (DriveMode.MODULAR, "planner")):
        sup = supervisor(mode)
        for proposal in ((math.nan, 0.5, 0.0), (0.1, math.inf, 0.0), (0.1, 0.0, -math.inf)):
            decision = sup.supervise(fresh_inputs(), proposal, (), STRAIGHT)
            assert decision.faults == (f"{name} output NaN",)
            assert decision.control.throttle == 0.0
            assert decision.control.brake == pytest.approx(brake_for(PARAMS.controlled_stop_decel_mps2, 10.0))
        assert decision.control.steer == 0.1  # a finite steer is kept
        assert sup.counts[f"fault: {name} output NaN"] == 3


def test_extra_faults_stop_the_car_and_are_reported():
    sup = supervisor()
    decision = sup.supervise(fresh_inputs(), CRUISE, (), STRAIGHT, ("obstacle 3: NaN x_m", "route empty"))
    assert decision.faults == ("obstacle 3: NaN x_m", "route empty")
    assert decision.override == "controlled stop: obstacle 3: NaN x_m, route empty"
    assert sup.counts["fault: obstacle #: NaN x_m"] == 1
    # The proposal braking harder than the controlled stop is kept.
    assert sup.supervise(fresh_inputs(), (0.0, 0.0, 0.9), (), STRAIGHT, ("route empty",)).control.brake == 0.9


def test_ttc_braking_on_a_closing_track():
    sup = supervisor()
    gap_m = 8.0  # at 10 m/s: TTC 0.8 s
    stopped_car = track(4, x_m=FRONT_M + gap_m + 4.5 / 2)
    decision = sup.supervise(fresh_inputs(), CRUISE, (stopped_car,), STRAIGHT)
    assert decision.override == "TTC 0.8 s to vehicle track 4"
    assert decision.ttc_s == pytest.approx(0.8)
    assert decision.control.throttle == 0.0 and decision.control.steer == 0.05
    assert decision.control.brake == pytest.approx(brake_for(PARAMS.emergency_decel_mps2, 10.0))
    assert sup.counts["override: TTC brake"] == 1
    # A slower car: the closing speed counts, 8 m at 10 - 6 m/s is 2 s.
    slower = track(5, x_m=FRONT_M + gap_m + 4.5 / 2, vx_mps=6.0)
    far = supervisor().supervise(fresh_inputs(), CRUISE, (slower,), STRAIGHT)
    assert far.override == "" and far.ttc_s == pytest.approx(2.0)
    # A pedestrian crossing into the lane a little off the path centre (inside the corridor).
    walker = track(7, x_m=FRONT_M + 5.0 + 0.3, y_m=1.2, vy_mps=-1.4, label="pedestrian", length_m=0.6,
                   width_m=0.6)
    assert supervisor().supervise(fresh_inputs(), CRUISE, (walker,), STRAIGHT).override == \
        "TTC 0.5 s to pedestrian track 7"


def test_no_ttc_braking_for_the_adjacent_lane_behind_beside_or_moving_away():
    sup = supervisor()
    ahead_x = FRONT_M + 5.0 + 2.25
    harmless = (track(1, x_m=ahead_x, y_m=3.5),  # stopped in the next lane
                track(2, x_m=ahead_x, y_m=-3.5),
                track(3, x_m=-8.0),  # behind, closing fast on us
                track(4, x_m=0.5, y_m=2.0, vx_mps=15.0),  # beside
                track(5, x_m=ahead_x, vx_mps=15.0),  # ahead, moving away faster than the ego
                track(6, x_m=ahead_x, vx_mps=10.0))  # same speed
    decision = sup.supervise(fresh_inputs(), CRUISE, harmless, STRAIGHT)
    assert decision.override == "" and decision.control.throttle == 0.3 and decision.ttc_s == math.inf
    assert sup.counts["override: TTC brake"] == 0


def test_ttc_follows_the_curved_path_not_the_heading():
    radius = 30.0
    angle = np.linspace(-0.2, 1.5, 200)
    left_turn = np.c_[radius * np.sin(angle), radius - radius * np.cos(angle)]
    on_curve = track(8, x_m=radius * math.sin(0.4), y_m=radius - radius * math.cos(0.4), yaw_rad=0.4)
    # Where the ego would be without turning: 2.2 m outside the curve.
    straight_on = track(9, x_m=radius * math.sin(0.4), y_m=0.0, label="pedestrian", length_m=0.6, width_m=0.6)
    gap_along_path_m = radius * 0.4 - FRONT_M - 4.5 / 2
    decision = supervisor().supervise(fresh_inputs(), CRUISE, (on_curve,), left_turn)
    assert decision.ttc_s == pytest.approx(gap_along_path_m / 10.0, rel=1e-3)
    assert decision.override == "TTC 0.8 s to vehicle track 8"
    assert supervisor().supervise(fresh_inputs(), CRUISE, (straight_on,), left_turn).override == ""
    # Without a path the corridor runs straight ahead.
    assert supervisor().supervise(fresh_inputs(), CRUISE, (straight_on,), np.zeros((0, 2))).override \
        .startswith("TTC")


def test_ttc_brake_is_held_until_the_ttc_recovers():
    sup = supervisor()

    def at_ttc(ttc_s):
        return sup.supervise(fresh_inputs(), CRUISE, (track(4, x_m=FRONT_M + 2.25 + 10.0 * ttc_s),), STRAIGHT)

    assert at_ttc(0.9).override.startswith("TTC")
    assert at_ttc(1.5).override == "TTC 1.5 s to vehicle track 4"  # braking raised it: keep braking
    assert at_ttc(2.5).override == ""
    assert at_ttc(1.5).override == ""  # not braking: 1.5 s is no reason to start


def test_policy_mode_lets_a_bad_ttc_through_but_catches_nan():
    danger = (track(4, x_m=FRONT_M + 2.25 + 3.0),)
    sup = supervisor(DriveMode.POLICY, required=("policy",))
    stale = fresh_inputs(age_s={"policy": 1.0, "obstacles": 1.0})
    decision = sup.supervise(stale, CRUISE, danger, STRAIGHT, ("obstacle 3: NaN x_m",))
    assert decision.control == VehicleControl(throttle=0.3, steer=0.05)
    assert decision.override == "" and decision.faults == ("obstacle 3: NaN x_m",)  # reported, not acted on
    nan = sup.supervise(stale, (math.nan, 0.3, 0.0), danger, STRAIGHT)
    assert nan.faults == ("policy output NaN",) and nan.override == "controlled stop: policy output NaN"
    assert nan.control.throttle == 0.0 and nan.control.steer == 0.0 and nan.control.brake > 0.0
    # policy+safety: the same proposal is overridden.
    guarded = supervisor(DriveMode.POLICY_SAFETY, required=("policy",)).supervise(fresh_inputs(), CRUISE, danger,
                                                                                 STRAIGHT)
    assert guarded.override.startswith("TTC 0.3 s")


def test_out_of_range_proposals_are_clamped_and_counted():
    sup = supervisor()
    decision = sup.supervise(fresh_inputs(), (1.7, 1.5, -0.2), (), STRAIGHT)
    assert decision.control == VehicleControl(throttle=1.0, steer=1.0, brake=0.0)
    assert decision.override == "" and sup.counts["clamped"] == 1
    assert sup.supervise(fresh_inputs(), (-3.0, 0.0, 2.0), (), STRAIGHT).control == VehicleControl(steer=-1.0,
                                                                                                    brake=1.0)


def test_never_raises_on_bad_input():
    sup = supervisor(DriveMode.POLICY_SAFETY, required=("lanes", "obstacles", "policy", "detections"))
    nan_track = track(4, x_m=math.nan)
    bad_stamp = fresh_inputs(obstacles=ObstacleScan(None, ()))  # type: ignore[arg-type]
    cases = [
        (None, CRUISE, (), STRAIGHT),
        (fresh_inputs(), None, (), STRAIGHT),
        (fresh_inputs(), ("a", None, 1), (), STRAIGHT),
        (fresh_inputs(), (0.0, 0.2), (), STRAIGHT),
        (fresh_inputs(), CRUISE, (nan_track,), STRAIGHT),
        (fresh_inputs(), CRUISE, None, None),
        (fresh_inputs(), CRUISE, (track(),), np.full((5, 2), np.nan)),
        (fresh_inputs(), CRUISE, (track(),), np.array([1.0, 2.0, 3.0])),
        (fresh_inputs(), CRUISE, (track(),), "not a path"),
        (bad_stamp, CRUISE, (), STRAIGHT),
    ]
    for inputs, proposal, tracks, path in cases:
        decision = sup.supervise(inputs, proposal, tracks, path, None)
        assert isinstance(decision.control, VehicleControl)
        assert decision.control.throttle == 0.0 or decision.override == ""
    assert "obstacles without a valid stamp" in sup.supervise(bad_stamp, CRUISE, (), STRAIGHT).faults
    assert not [key for key in sup.counts if "supervisor error" in key]  # handled, not by the last resort


def test_unknown_required_input_and_params_validation():
    with pytest.raises(ValueError, match="camera"):
        SafetySupervisor(VEHICLE, DriveMode.MODULAR, ("camera",))
    data = read_yaml(DEFAULT_SAFETY_PARAMS)
    assert data["max_input_age_s"] == 0.2
    with pytest.raises(ConfigError, match="missing"):
        from_mapping(SafetyParams, {k: v for k, v in data.items() if k != "ttc_brake_s"}, "safety.yaml")
    with pytest.raises(ValueError):
        dataclasses.replace(PARAMS, ttc_release_s=0.5)
    assert SafetySupervisor(VEHICLE, "policy+safety", ("policy",)).mode == DriveMode.POLICY_SAFETY
