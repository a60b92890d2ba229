"""The ROS 2 graph as real processes: bridge + agent in lockstep give the in-process
runner's trajectory bit for bit; faults are counted and braked, not fatal.

`tests/conftest.py` isolates the graph (own ROS_DOMAIN_ID, localhost discovery).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.builtin import BuiltinSimulator
from sim.episode import run_episode
from sim.expert import ExpertDriver
from sim.scenario import load_scenario

SCENARIO = """\
name: ros_short
town: grid_town
route_length_m: 120
npc_vehicles: 6
pedestrians: 4
seed: 11
"""


def node(module: str, *params: str) -> list[str]:
    args = [sys.executable, "-m", f"ros_nodes.{module}", "--ros-args"]
    for p in params:
        args += ["-p", p]
    return args


@pytest.fixture()
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "ros_short.yaml"
    path.write_text(SCENARIO)
    return path


def run_graph(tmp_path: Path, scenario_file: Path, *bridge_params: str, agent: bool = True,
              timeout_s: float = 240.0) -> tuple[dict, str]:
    """One episode through bridge (+ agent) processes. The control timeout is generous:
    a loaded test machine must not turn a slow answer into a fault (and a new trajectory)."""
    out = tmp_path / "bridge"
    agent_proc = subprocess.Popen(node("agent_node"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) if agent else None
    try:
        wait = ["wait_for_nodes:=['agent']"] if agent else []
        bridge = subprocess.run(node("sim_bridge_node", f"scenario:={scenario_file}", f"out:={out}",
                                     "startup_timeout_s:=60.0", "control_timeout_s:=30.0", *wait, *bridge_params),
                                capture_output=True, text=True, timeout=timeout_s)
    finally:
        if agent_proc is not None:
            agent_proc.terminate()
            try:  # a loaded machine (CI runs two test processes) can take long to tear rclpy down
                agent_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent_proc.kill()
                agent_proc.wait(timeout=10)
    assert bridge.returncode == 0, bridge.stdout + bridge.stderr
    return json.loads((out / "results.json").read_text())["routes"][0], bridge.stdout + bridge.stderr


def test_ros_graph_drives_the_in_process_trajectory(tmp_path, scenario_file):
    scenario = load_scenario(str(scenario_file))
    sim = BuiltinSimulator()
    expected = run_episode(sim, scenario, lambda m, r, s: ExpertDriver(m, r, s.vehicle, s.dt_s)).result
    sim.close()
    result, log = run_graph(tmp_path, scenario_file)
    assert result["extra"]["control_faults"] == 0, log
    assert result["status"] == expected.status.value
    assert result["trajectory_digest"] == expected.trajectory_digest, log
    assert result["driving_score"] == pytest.approx(expected.driving_score)


def test_autopilot_drives_inside_the_bridge(tmp_path, scenario_file):
    result, log = run_graph(tmp_path, scenario_file, "autopilot:=true", agent=False)
    assert result["route_completion_pct"] == pytest.approx(100.0) and result["extra"]["control_faults"] == 0


def test_missing_agent_is_a_clear_startup_error(tmp_path, scenario_file):
    bridge = subprocess.run(node("sim_bridge_node", f"scenario:={scenario_file}", "startup_timeout_s:=1.0",
                                 "wait_for_nodes:=['agent']"), capture_output=True, text=True, timeout=60)
    assert bridge.returncode == 1
    assert "node(s) agent not ready" in bridge.stdout + bridge.stderr


def test_unknown_scenario_exits_2(tmp_path):
    bridge = subprocess.run(node("sim_bridge_node", "scenario:=no_such_scenario"), capture_output=True, text=True,
                            timeout=60)
    assert bridge.returncode == 2 and "unknown scenario 'no_such_scenario'" in bridge.stderr


def test_an_agent_that_stops_answering_is_braked_then_aborted(tmp_path, scenario_file):
    """A NaN control and then silence: each is a counted fault; the bridge brakes, and
    after max_consecutive_faults it aborts the episode as the leaderboard's crash."""
    import rclpy
    from drivestack_msgs.msg import VehicleControl
    from ros_nodes import topics
    from ros_nodes.graph import qos_profile

    rclpy.init()
    talker = rclpy.create_node("silent_agent")
    pub = talker.create_publisher(VehicleControl, topics.CONTROL, qos_profile(topics.Qos.CONTROL))
    out = tmp_path / "bridge"
    bridge = subprocess.Popen(node("sim_bridge_node", f"scenario:={scenario_file}", f"out:={out}",
                                   "control_timeout_s:=0.05", "max_consecutive_faults:=5"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while pub.get_subscription_count() == 0 and bridge.poll() is None:
            rclpy.spin_once(talker, timeout_sec=0.1)
        pub.publish(VehicleControl(throttle=float("nan")))  # stamp 0: frame 0's answer
        log, _ = bridge.communicate(timeout=120)
    finally:
        bridge.kill()
        talker.destroy_node()
        rclpy.shutdown()
    assert bridge.returncode == 0, log
    assert "VehicleControl with a NaN" in log and "no control within 0.05 s" in log
    result = json.loads((out / "results.json").read_text())["routes"][0]
    assert result["status"] == "Failed - Agent crashed" and result["extra"]["control_faults"] == 6


def test_drive_ros_runs_the_launch_file_and_records_every_frame(tmp_path, scenario_file):
    """The CLI path: launch/drive.yaml with bridge, agent and recorder started together
    (the bridge waits for both), the table printed, and a bag missing no frame."""
    from ros_nodes.bag.info import bag_info
    out = tmp_path / "ros"
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--ros", "--scenario", str(scenario_file),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Driving score" in done.stdout and (out / "ros_short_seed11.png").exists()
    route = json.loads((out / "results.json").read_text())["routes"][0]
    frames = route["extra"]["frames_published"]
    counts = {t.name: t.count for t in bag_info(out / "bag").topics}
    for topic in ("/clock", "/carla/ego_vehicle/odometry", "/drivestack/ground_truth/actors",
                  "/carla/ego_vehicle/vehicle_control_cmd"):
        assert counts[topic] == frames, topic
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--ros", "--scenario", str(scenario_file),
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "exists" in done.stderr  # never overwrites a bag

    # The in-process runner records the same bag, message for message.
    in_process = tmp_path / "in_process.bag"
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--scenario", str(scenario_file),
                           "--out", str(tmp_path / "drive"), "--record", str(in_process)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ros_bag, local_bag = messages_by_topic(out / "bag"), messages_by_topic(in_process)
    assert ros_bag.keys() - {"/drivestack/episode/result"} == local_bag.keys()  # the result: in metadata
    from ros_nodes.topics import topic_table
    from sim.sensors.suite import SensorSuite
    stamped = {t.name for t in topic_table(SensorSuite(), 0.05) if t.stamped}
    for topic in local_bag:
        if topic == "/carla/ego_vehicle/vehicle_control_cmd":  # the agent node also answers the last frame
            assert ros_bag[topic][:len(local_bag[topic])] == local_bag[topic]
            assert len(ros_bag[topic]) - len(local_bag[topic]) <= 1
        elif topic in stamped:
            assert ros_bag[topic] == local_bag[topic], topic
        else:  # through ROS an unstamped message is logged at its arrival: compare values
            assert [v for _, v in ros_bag[topic]] == [v for _, v in local_bag[topic]], topic


def messages_by_topic(bag) -> dict[str, list[tuple[int, object]]]:
    """Decoded values per topic (CDR alignment padding is not part of a message)."""
    from ros_nodes.bag.reader import iter_messages
    out: dict[str, list] = {}
    for m in iter_messages(bag, deserialize=True):
        out.setdefault(m.topic, []).append((m.stamp_ns, plain(m.data)))
    return out


def plain(value: object) -> object:
    import dataclasses

    import numpy as np
    if dataclasses.is_dataclass(value):
        return tuple(plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, list):
        return tuple(plain(v) for v in value)
    return value
