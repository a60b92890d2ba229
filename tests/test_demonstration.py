"""Demonstrations for behaviour cloning: CIL noise injection with the expert's labels
recorded, the DAgger driver, and the policy's route command."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from drivestack.schema import EgoState, Observation, RoadOption, VehicleControl
from models.bag_index import MessageSource, open_index
from planning.policy_proposer import PolicyProposer
from ros_nodes import topics
from ros_nodes.collect import Driver, collect
from sim.builtin import BuiltinSimulator
from sim.demonstration import ControlNoise, NoiseParams
from sim.route_progress import RouteProgress
from sim.scenario import load_scenario
from sim.sensors.suite import load_suite

SHORT = "tests/data/scenarios/eval_short.yaml"
DT_S = 0.05


def _obs(speed_mps: float) -> Observation:
    return Observation(0, EgoState(0, 0.0, 0.0, 0.0, speed_mps=speed_mps), (), ())


def _run_noise(params: NoiseParams, seed: int, steps: int, speed_mps: float = 8.0):
    noise = ControlNoise(params, DT_S, seed)
    label = VehicleControl(throttle=0.4, steer=0.05, brake=0.0)
    return noise, [noise(_obs(speed_mps), label) for _ in range(steps)], label


def test_noise_is_seeded_short_triangular_spans_and_never_touches_the_label():
    params = NoiseParams(steer_spans_per_s=0.5, brake_spans_per_s=0.0)
    noise, executed, label = _run_noise(params, seed=7, steps=4000)
    again = _run_noise(params, seed=7, steps=4000)[1]
    assert executed == again  # same seed, same perturbation
    assert executed != _run_noise(params, seed=8, steps=4000)[1]
    offsets = np.array([c.steer - label.steer for c in executed])
    perturbed = np.abs(offsets) > 1e-9
    assert 0.05 < perturbed.mean() < 0.6 and noise.active_steps == perturbed.sum()
    assert np.abs(offsets).max() <= params.steer_peak[1] + 1e-9
    # Spans are separate and each rises then falls (a triangle), never longer than allowed.
    edges = np.flatnonzero(np.diff(perturbed.astype(int)))
    spans = [offsets[a + 1:b + 1] for a, b in zip(edges[::2], edges[1::2])]
    assert len(spans) > 5
    for span in spans:
        assert len(span) * DT_S <= params.steer_duration_s[1] + DT_S
        peak = int(np.argmax(np.abs(span)))
        assert np.all(np.diff(np.abs(span[:peak + 1])) >= -1e-9) and np.all(np.diff(np.abs(span[peak:])) <= 1e-9)
    assert all(c.throttle == label.throttle and c.brake == label.brake for c in executed)


def test_brake_taps_cut_the_throttle_and_no_steering_impulse_at_a_crawl():
    params = NoiseParams(steer_spans_per_s=2.0, brake_spans_per_s=0.5)
    _, executed, label = _run_noise(params, seed=1, steps=2000, speed_mps=0.5)
    assert all(c.steer == label.steer for c in executed)  # below min_speed_mps
    taps = [c for c in executed if c.brake > 0]
    assert taps and all(c.throttle == 0.0 and params.brake[0] <= c.brake <= params.brake[1] for c in taps)


def test_noise_params_and_driver_reject_nonsense():
    with pytest.raises(ValueError, match="low <= high"):
        NoiseParams(steer_peak=(0.4, 0.1))
    with pytest.raises(ValueError, match="finite"):
        NoiseParams(steer_spans_per_s=float("nan"))
    with pytest.raises(ValueError, match="beta"):
        Driver(policy_weights="p.pt", beta=1.5)
    with pytest.raises(ValueError, match="noise injection is for the expert"):
        Driver(noise=NoiseParams(), policy_weights="p.pt")


def test_noisy_collection_records_the_executed_control_and_the_expert_label(tmp_path):
    scenario = replace(load_scenario(SHORT), sensors=load_suite("front_rgb"))
    params = NoiseParams(steer_spans_per_s=1.0, brake_spans_per_s=0.2)
    summary = collect([scenario], tmp_path, workers=1, driver=Driver(noise=params))
    assert not summary.failed, summary.failed
    record = summary.done[0]
    assert record.extra["driver"] == "expert with noise injection" and record.extra["noise_frames"] > 0
    index = open_index(tmp_path / record.bag)
    source = MessageSource(index)
    rows = index.frames(topics.CONTROL, [topics.EXPERT_CONTROL])
    assert len(rows) == len(index.rows(topics.CONTROL)) == record.frames - 1  # one label per executed control
    executed = np.array([[source.message(int(r[0])).steer, source.message(int(r[0])).brake] for r in rows])
    labels = np.array([[source.message(int(r[1])).steer, source.message(int(r[1])).brake] for r in rows])
    differs = np.abs(executed - labels).max(axis=1) > 1e-6
    assert differs.sum() == record.extra["noise_frames"]
    assert 0 < differs.mean() < 0.8
    # Steering impulses are among the perturbations, and the expert answers them: while
    # the executed steer is pushed one way, the label leans the other way on average.
    offset = executed[:, 0] - labels[:, 0]
    impulses = np.abs(offset) > 0.05
    assert impulses.any()
    drift = labels[:, 0] - np.median(labels[~differs, 0])
    assert np.mean(np.sign(offset[impulses]) * drift[impulses]) < 0.0
    # A plain expert collection has no label topic: the executed control is the label.
    plain = collect([scenario.with_seed(5)], tmp_path / "plain", workers=1)
    plain_topics = {t for t, _ in open_index(tmp_path / "plain" / plain.done[0].bag).topics.values()}
    assert topics.EXPERT_CONTROL not in plain_topics


def test_collect_cli_rejects_contradicting_options(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "drivestack.cli", "collect", "--episodes", "1", "--out",
                               str(tmp_path / "c"), *args], capture_output=True, text=True, timeout=120)
    bad = run("--agent", "policy", "--noise")
    assert bad.returncode != 0 and "--noise is for --agent expert" in bad.stderr
    bad = run("--agent", "policy", "--policy-weights", str(tmp_path / "none.pt"))
    assert bad.returncode != 0 and "no such file" in bad.stderr
    bad = run("--beta", "0.3")
    assert bad.returncode != 0 and "--beta are for --agent policy" in bad.stderr


def test_route_command_announces_the_turn_before_the_junction():
    sim = BuiltinSimulator()
    try:
        sim.reset(replace(load_scenario("default"), npc_vehicles=0, pedestrians=0))
        route = sim.route
    finally:
        sim.close()
    progress = RouteProgress(route)
    options = [w.option for w in route.waypoints]
    first_turn = next(i for i, o in enumerate(options) if o not in (RoadOption.LANEFOLLOW, RoadOption.VOID))
    s_turn = progress.s_m[first_turn]
    before = [k for k in range(first_turn) if 0 < s_turn - progress.s_m[k] < 15.0]
    far = [k for k in range(first_turn) if s_turn - progress.s_m[k] > 25.0]
    commands = {}
    for k in range(first_turn + 1):
        w = route.waypoints[k]
        commands[k] = progress.command_ahead(progress.update(w.x_m, w.y_m))
    assert all(commands[k] == options[first_turn] for k in before)
    assert all(commands[k] == RoadOption.LANEFOLLOW for k in far)


def test_policy_proposer_passes_image_speed_and_command_and_keeps_nan():
    sim = BuiltinSimulator()
    try:
        obs = sim.reset(replace(load_scenario("default"), npc_vehicles=0, pedestrians=0))
        route = sim.route
    finally:
        sim.close()
    seen = []

    class Answer:
        steer, throttle, brake = float("nan"), 0.5, 0.0

    def policy(image, speed_mps, command):
        seen.append((image.shape, speed_mps, command))
        return Answer()

    proposer = PolicyProposer(policy, route)
    image = np.zeros((160, 320, 3), np.uint8)
    proposal = proposer(obs.stamp_ns, image, obs.ego)
    assert seen == [((160, 320, 3), obs.ego.speed_mps, proposer.command)]
    assert proposer.command == RouteProgress(route).command_ahead(0.0)
    assert proposal.stamp_ns == obs.stamp_ns and np.isnan(proposal.steer) and proposal.throttle == 0.5


def _speed_control():
    from planning.inputs import VehicleModel
    from planning.policy_proposer import WaypointSpeedControl
    from sim.vehicle_dynamics import VehicleParams
    return WaypointSpeedControl(VehicleModel.of(VehicleParams.load()), DT_S, waypoint_dt_s=0.5)


def test_waypoint_speed_control_tracks_the_waypoints_and_launches_when_the_policy_does_not_brake():
    from planning.policy_proposer import LAUNCH_SPEED_MPS, STAND_BELOW_MPS
    control = _speed_control()
    ahead = np.array([[4.0, 0.0], [8.0, 0.0], [12.0, 0.0], [16.0, 0.0]])  # 8 m/s
    throttle, brake = control(ahead, 5.0, brake=0.0)
    assert control.target_speed_mps == pytest.approx(8.0) and throttle > 0.0 and brake == 0.0
    throttle, brake = control(ahead, 10.0, brake=0.0)
    assert throttle == 0.0  # above the target: never accelerates
    # Standing: waypoints near zero and the branch brakes -> stand; it stops braking -> launch.
    still = np.full((4, 2), 0.5 * STAND_BELOW_MPS * 0.5)
    throttle, brake = _speed_control()(still, 0.0, brake=0.9)
    assert throttle == 0.0 and brake > 0.0
    control = _speed_control()
    throttle, brake = control(still, 0.0, brake=0.1)
    assert control.target_speed_mps == LAUNCH_SPEED_MPS and throttle > 0.0 and brake == 0.0
    # NaN anywhere stays NaN, for the supervisor to catch and count.
    assert all(np.isnan(v) for v in control(np.full((4, 2), np.nan), 3.0, brake=0.0))
    assert all(np.isnan(v) for v in control(ahead, 3.0, brake=float("nan")))
