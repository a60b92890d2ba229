"""The learned policy as an in-process agent: alone (planner in `policy` mode: NaN
checks and clamps) and under the modular stack's safety supervisor (`policy+safety`),
driving from sensors only with the shipped weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drivestack.agents import agent_factory, scenario_for_agent
from models.driving_policy import DEFAULT_POLICY_WEIGHTS, DrivingPolicy
from planning.inputs import DriveMode, PlannerInputs, PolicyProposal, VehicleModel
from planning.planner import ModularPlanner
from sim.builtin import BuiltinSimulator
from sim.scenario import load_scenario
from test_modular_agent import _guarded

SCENARIO = Path(__file__).parent / "data" / "scenarios" / "modular_short.yaml"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 cores are shared with the other test worker
    yield
    torch.set_num_threads(threads)


def _drive(name: str, steps: int):
    scenario = scenario_for_agent(name, load_scenario(str(SCENARIO)))
    sim = BuiltinSimulator()
    try:
        obs = sim.reset(scenario)
        agent = _guarded(agent_factory(name, scenario))(sim.road_map, sim.route, sim)
        for _ in range(steps):
            obs = sim.step(agent.run_step(obs))
    finally:
        sim.close()
    return scenario, agent, obs


@pytest.mark.parametrize("name, mode", [("policy", DriveMode.POLICY), ("policy+safety", DriveMode.POLICY_SAFETY)])
def test_policy_agents_drive_from_sensors_only(name, mode):
    scenario, agent, obs = _drive(name, 60)
    assert agent.name == name and agent.planner.mode == mode
    cameras = {c.name for c in scenario.sensors.cameras}
    assert "front" in cameras and (scenario.sensors.lidar is not None or name == "policy")
    out = agent.last_output
    assert not out.faults, out.faults  # the proposal arrived every frame, finite
    assert obs.ego.speed_mps > 0.5  # the shipped policy pulls away from the start


def test_the_supervisor_catches_and_counts_a_nan_proposal():
    sim = BuiltinSimulator()
    try:
        obs = sim.reset(load_scenario(str(SCENARIO)))
        planner = ModularPlanner(sim.road_map, sim.route, VehicleModel.of(sim.vehicle), sim.dt_s,
                                 mode=DriveMode.POLICY, required_inputs=("policy",))
    finally:
        sim.close()
    nan = PolicyProposal(obs.stamp_ns, float("nan"), 0.5, 0.0)
    out = planner.step(PlannerInputs(obs.stamp_ns, obs.ego, policy=nan))
    assert out.control.throttle == 0.0 and out.control.brake > 0.0
    assert any("NaN" in fault for fault in out.faults)
    assert sum(v for k, v in planner.counts.items() if "NaN" in k) == 1


def test_shipped_policy_answers_in_range_for_every_command():
    policy = DrivingPolicy.from_weights(DEFAULT_POLICY_WEIGHTS)
    image = np.full((160, 320, 3), 90, np.uint8)
    from models.policy_net import POLICY_COMMANDS
    for command in POLICY_COMMANDS:
        out = policy(image, 5.0, command)
        assert -1.0 <= out.steer <= 1.0 and 0.0 <= out.throttle <= 1.0 and 0.0 <= out.brake <= 1.0
