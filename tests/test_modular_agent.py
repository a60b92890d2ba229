"""The modular agent in the in-process runner: it drives from sensors, map and route
only (the real camera net and LiDAR detector), never from the simulator's state."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivestack.agents import agent_factory, scenario_for_agent
from drivestack.schema import EpisodeStatus
from sim.builtin import BuiltinSimulator
from sim.episode import run_episode
from sim.scenario import load_scenario

SCENARIO = Path(__file__).parent / "data" / "scenarios" / "modular_short.yaml"
# What a real car has: the frame's time, odometry, the sensors.
SENSOR_FIELDS = {"stamp_ns", "ego", "cameras", "lidar", "imu", "gnss"}


class SensorsOnly:
    """An observation that fails the test on any access to privileged state."""

    def __init__(self, obs) -> None:
        self._obs = obs

    def __getattr__(self, name):
        if name in SENSOR_FIELDS:
            return getattr(self._obs, name)
        raise AssertionError(f"the modular agent read Observation.{name}: privileged simulator state")


def _guarded(make_agent):
    def make(road_map, route, sim):
        agent = make_agent(road_map, route, sim)
        run_step = agent.run_step
        agent.run_step = lambda obs: run_step(SensorsOnly(obs))
        return agent
    return make


def test_modular_agent_reads_no_ground_truth():
    scenario = scenario_for_agent("modular", load_scenario(str(SCENARIO)))
    sim = BuiltinSimulator()
    try:
        obs = sim.reset(scenario)
        agent = _guarded(agent_factory("modular", scenario))(sim.road_map, sim.route, sim)
        for _ in range(30):
            obs = sim.step(agent.run_step(obs))
    finally:
        sim.close()
    assert obs.ego.speed_mps > 1.0  # it drives
    assert not agent.last_output.faults


def test_scenario_for_modular_agent_adds_camera_and_lidar():
    scenario = scenario_for_agent("modular", load_scenario("default"))
    assert scenario.sensors.lidar is not None
    assert any(c.name == "front" and "rgb" in c.kinds for c in scenario.sensors.cameras)
    with pytest.raises(ValueError, match="unknown agent"):
        scenario_for_agent("nobody", scenario)


@pytest.mark.slow
def test_modular_agent_completes_a_short_route():
    scenario = scenario_for_agent("modular", load_scenario(str(SCENARIO)))
    sim = BuiltinSimulator()
    try:
        run = run_episode(sim, scenario, _guarded(agent_factory("modular", scenario)))
    finally:
        sim.close()
    result = run.result
    assert result.status == EpisodeStatus.COMPLETED, result
    assert not [i for i in result.infractions if i.kind.value.startswith("collisions")]


def _drivestack(*args: str):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "drivestack.cli", *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_drives_the_modular_agent_in_process(tmp_path):
    short = Path(__file__).parent / "data" / "scenarios" / "eval_short.yaml"  # 70 m, no sensors of its own
    done = _drivestack("drive", "--agent", "modular", "--scenario", str(short), "--out", str(tmp_path), "--json",
                       "--no-png")
    assert done.returncode == 0, done.stderr
    import json
    (route,) = json.loads(done.stdout)["routes"]
    assert route["route_completion_pct"] > 0.0


@pytest.mark.parametrize("args, message", [
    (["--mode", "policy", "--policy-weights", "missing.pt"], "no policy weights at missing.pt"),
    (["--perception-weights", "missing.pt"], "no perception weights at missing.pt"),
])
def test_cli_modular_agent_user_errors(tmp_path, args, message):
    done = _drivestack("drive", "--agent", "modular", "--out", str(tmp_path), *args)
    assert done.returncode == 2
    assert message in done.stderr
