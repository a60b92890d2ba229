"""The mission and planner nodes as real processes.

A module-wide mini graph: this test publishes the map (as the bridge would) and the
frames' odometry and perception outputs with rclpy; the mission node plans the route,
the planner drives from it. The planner reads no ground truth, the mission's route is
the simulator's, and bad input (NaN detections, NaN odometry, a route of one waypoint)
is answered with a braking control and a status saying why, never a dead node. The
closed-loop episode through ``drivestack drive --ros --agent modular`` is slow (camera
net and LiDAR detector on the CPU) and marked so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor

from ros_nodes import topics
from ros_nodes.convert_labels import lanes_msg
from ros_nodes.convert_perception import detections_msg, obstacles_msg
from ros_nodes.convert_planning import path_points
from ros_nodes.convert_sensors import header, msg_class, odometry_msg, stamp_ns_of
from ros_nodes.convert_world import route_of, vehicle_control
from ros_nodes.graph import Publishers, READY, decode, qos_profile, rclpy_class
from ros_nodes.topics import Qos, Topic
from sim.builtin import BuiltinSimulator
from sim.scenario import resolve_scenario
from sim.sensors.suite import load_suite

# rosidl_generator_py (imported by every rosidl message's type support) pulls in an old
# lark that imports the deprecated sre_parse / sre_constants.
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "data" / "scenarios" / "planner_node_short.yaml"
SCENARIO_PARAMS = (f"scenario:={SCENARIO}", "sensors:=drive")
DT_NS = 50_000_000
INPUT_WAIT_S = 0.5


def test_conversions_round_trip_and_reject_nan():
    from dataclasses import replace

    from drivestack.schema import EgoState, VehicleControl
    from planning.inputs import DriveMode, PlannerOutput, Track
    from ros_nodes.convert_planning import ego_state_of, markers_msg, planner_status_msg, policy_proposal
    from ros_nodes.convert_sensors import MessageError
    from ros_nodes.convert_world import control_msg
    from ros_nodes.graph import encode
    ego = EgoState(7, 10.0, -2.0, 0.5, 4.0, yaw_rate_radps=0.1)
    back = ego_state_of(decode(encode(odometry_msg(ego, 7), "nav_msgs/msg/Odometry"), "nav_msgs/msg/Odometry"),
                        4.5, 1.9)
    assert (back.stamp_ns, back.x_m, back.y_m, back.speed_mps, back.yaw_rate_radps) == (7, 10.0, -2.0, 4.0, 0.1)
    assert abs(back.yaw_rad - 0.5) < 1e-12
    with pytest.raises(MessageError, match="NaN"):
        ego_state_of(odometry_msg(replace(ego, y_m=float("nan")), 7))
    proposal = policy_proposal(control_msg(VehicleControl(throttle=0.5, steer=0.25, brake=0.0), 7))
    assert (proposal.stamp_ns, proposal.steer, proposal.throttle) == (7, 0.25, 0.5)  # REP 103 steer again
    track = Track(3, "pedestrian", 8.0, 1.0, 0.0, 1.0, 0.6, 0.6, 0.0, 14.0, 2.0, -0.5, 0.9, 0.2, 1.0, 5, ("lidar",))
    out = PlannerOutput(7, VehicleControl(brake=1.0), DriveMode.MODULAR, np.array([[0.0, 0.0], [1.0, 0.5]]),
                        np.zeros(2), 0.0, "stop: pedestrian 3", "pedestrian 3", "", (track,), ("lanes stale",))
    status = decode(encode(planner_status_msg(out, ("detections: bad",)), "drivestack_msgs/msg/PlannerStatus"),
                    "drivestack_msgs/msg/PlannerStatus")
    assert list(status.faults) == ["detections: bad", "lanes stale"] and status.stop_reason == "pedestrian 3"
    markers = decode(encode(markers_msg(out, ego), "visualization_msgs/msg/MarkerArray"),
                     "visualization_msgs/msg/MarkerArray").markers
    assert [(m.ns, m.id) for m in markers] == [("", 0), ("tracks", 3), ("track_ids", 3), ("path", 0),
                                               ("behaviour", 0)]
    assert "pedestrian" in markers[2].text and "stop: pedestrian 3" in markers[-1].text


def test_drive_launch_runs_the_modular_graph_on_agent_modular():
    from ros_nodes.launcher import load_launch

    def nodes(**arguments):
        description = load_launch(ROOT / "launch" / "drive.yaml", arguments)
        return {n.label: {p.name: p.value for p in n.parameters} for n in description.nodes}
    expert = nodes()
    assert set(expert) == {"sim_bridge", "agent", "recorder"}
    assert expert["sim_bridge"]["wait_for_nodes"] == ("agent", "recorder") and expert["sim_bridge"]["publish_route"]
    modular = nodes(agent="modular")  # the policy modes: tests/test_policy_node.py
    assert set(modular) == {"sim_bridge", "recorder", "perception", "lidar_obstacles", "mission", "planner"}
    bridge = modular["sim_bridge"]
    assert bridge["wait_for_nodes"] == ("planner", "recorder") and bridge["publish_route"] is False
    assert bridge["perception"] is True and bridge["lidar_obstacles"] is True
    assert {n["sensors"] for n in modular.values() if "sensors" in n} == {"drive"}
    assert modular["planner"]["mode"] == "modular" and modular["recorder"]["record_planning"] is True
    assert nodes(agent="modular", sensors="full")["planner"]["sensors"] == "full"


def _node_process(module: str, name: str, *params: str) -> subprocess.Popen:
    args = [sys.executable, "-m", f"ros_nodes.{module}", "--ros-args", "-r", f"__node:={name}"]
    for p in (*params, "use_sim_time:=false"):
        args += ["-p", p]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    return out


def _subscriptions_of(node, name: str) -> list:
    """The node's subscriptions as graph discovery sees them; [] until it has discovered
    the node (a loaded machine can take a moment after the node announced itself)."""
    from rclpy.node import NodeNameNonExistentError  # rclpy re-exports the binding's error
    try:
        return node.get_subscriber_names_and_types_by_node(name, "/")
    except NodeNameNonExistentError:
        return []


class Harness:
    """This test's end of the graph: publishes map, frames and inputs; collects what the
    mission and planner publish, by topic and stamp."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)  # own context: other tests may use the default one
        self.node = rclpy.create_node("planner_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.pubs = Publishers(self.node, [
            Topic(topics.MAP, "std_msgs/msg/String", Qos.LATCHED, None),
            Topic(topics.ROUTE, "drivestack_msgs/msg/Route", Qos.LATCHED, None),
            Topic(topics.ODOMETRY, "nav_msgs/msg/Odometry", Qos.SENSOR, None),
            *topics.camera_perception_topics("front"), topics.OBSTACLES_TOPIC])
        self.received: dict[str, list] = {}
        self.ready: dict[str, list[str]] = {}
        watched = [Topic(topics.ROUTE, "drivestack_msgs/msg/Route", Qos.LATCHED, None),
                   Topic(topics.CONTROL, "drivestack_msgs/msg/VehicleControl", Qos.CONTROL, None),
                   *topics.planning_topics(0.05)]
        for topic in watched:
            self.received[topic.name] = []
            self.node.create_subscription(
                rclpy_class(topic.msgtype), topic.name,
                lambda data, t=topic: self.received[t.name].append(decode(data, t.msgtype)),
                qos_profile(topic.qos), raw=True)
        from std_msgs.msg import String
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, READY, self._on_ready, qos)

    def _on_ready(self, msg) -> None:
        announcement = json.loads(msg.data)
        self.ready[announcement["node"]] = announcement["subscribed"]

    def spin_until(self, done, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = done()
            if value:
                return value
            self.executor.spin_once(timeout_sec=0.05)
        raise AssertionError(f"no {what} within {timeout_s} s")

    def answer(self, stamp_ns: int, timeout_s: float = 60.0) -> tuple[object, object]:
        """The planner's control and status for the frame ``stamp_ns``."""
        def found():
            control = next((m for m in self.received[topics.CONTROL] if stamp_ns_of(m.header.stamp) == stamp_ns),
                           None)
            status = next((m for m in self.received[topics.PLANNER_STATUS]
                           if stamp_ns_of(m.header.stamp) == stamp_ns), None)
            return (control, status) if control is not None and status is not None else None
        return self.spin_until(found, timeout_s, f"control and status for t={stamp_ns}")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def first_frame():
    """The test scenario's first observation, its route and the town's OpenDRIVE text."""
    sim = BuiltinSimulator()
    try:
        obs = sim.reset(resolve_scenario(str(SCENARIO), sensors="drive"))
        return obs, sim.route, sim.road_map.xodr_text
    finally:
        sim.close()


@pytest.fixture(scope="class")
def graph():
    """The harness, a mission and a planner node, and the simulator's first observation
    (class-scoped: gone before the closed-loop test starts a graph of its own)."""
    obs, route, xodr = first_frame()
    harness = Harness()
    mission = _node_process("mission_node", "mission", *SCENARIO_PARAMS)
    planner = _node_process("planner_node", "planner", *SCENARIO_PARAMS, f"input_wait_s:={INPUT_WAIT_S}",
                            "first_frame_wait_s:=20.0")
    try:
        harness.pubs.publish(topics.MAP, msg_class("std_msgs/msg/String")(data=xodr))
        harness.spin_until(lambda: {"mission", "planner"} <= harness.ready.keys(), 60.0, "ready nodes")
        yield harness, route, obs, planner
    finally:
        for name, proc in (("mission", mission), ("planner", planner)):
            print(f"--- {name} node output ---\n{_stop(proc)[-4000:]}")  # shown when a test failed
        harness.close()


def _publish_frame(harness: Harness, obs, stamp_ns: int, *, detections=None, nan_detection: bool = False,
                   odometry: bool = True, inputs: bool = True, nan_odometry: bool = False) -> None:
    from dataclasses import replace

    from drivestack.schema import ObjectDetection
    if odometry:
        ego = replace(obs.ego, x_m=float("nan")) if nan_odometry else obs.ego
        harness.pubs.publish(topics.ODOMETRY, odometry_msg(ego, stamp_ns))
    if not inputs:
        return
    found = list(detections or [])
    if nan_detection:
        found.append(ObjectDetection("front", "vehicle", 0.9, float("nan"), 40.0, 80.0, 90.0))
    harness.pubs.publish(topics.detections_topic("front"), detections_msg(found, stamp_ns, "front_optical"))
    harness.pubs.publish(topics.PERCEPTION_LANES, lanes_msg((), stamp_ns))
    harness.pubs.publish(topics.OBSTACLES, obstacles_msg((), stamp_ns))


class TestPlannerAndMission:
    """One mission and one planner node serve these tests."""

    def test_planner_subscribes_to_no_ground_truth(self, graph):
        harness, _, _, _ = graph
        privileged = {t.name for t in topics.topic_table(load_suite("full"), 0.05) if t.privileged}
        assert privileged  # the check means something
        subscribed = set(harness.ready["planner"])
        assert {topics.ODOMETRY, topics.MAP, topics.ROUTE, topics.detections_topic("front"), topics.PERCEPTION_LANES,
                topics.OBSTACLES} <= subscribed
        in_graph = harness.spin_until(lambda: _subscriptions_of(harness.node, "planner"), 20.0,
                                      "planner subscriptions in the graph")
        subscribed |= {name for name, _ in in_graph}
        assert not subscribed & privileged
        assert not [name for name in subscribed if name.startswith(topics.GROUND_TRUTH_NS)]
        assert topics.POLICY_CONTROL not in subscribed  # mode modular: no policy input

    def test_mission_route_is_the_simulators(self, graph):
        harness, route, _, _ = graph
        msg = harness.spin_until(lambda: harness.received[topics.ROUTE], 60.0, "route")[-1]
        assert route_of(msg) == route
        path = harness.spin_until(lambda: harness.received[topics.MISSION_PATH], 10.0, "mission path")[-1]
        assert np.array_equal(path_points(path), [(w.x_m, w.y_m) for w in route.waypoints])

    def test_bad_input_is_a_fault_not_a_crash(self, graph):
        harness, _, obs, planner = graph
        harness.spin_until(lambda: harness.received[topics.ROUTE], 60.0, "route")
        # A clean frame: planned, no node fault.
        _publish_frame(harness, obs, 0)
        control, status = harness.answer(0)
        assert not [f for f in status.faults if f.startswith("detections")], status.faults
        assert status.mode == "modular" and status.behaviour

        # NaN in a detection: the message is dropped, the frame planned without it, and the
        # supervisor, missing a required input, stops the car and says why.
        _publish_frame(harness, obs, DT_NS, nan_detection=True)
        control, status = harness.answer(DT_NS)
        assert any(f.startswith("detections:") and "nan" in f.lower() for f in status.faults), status.faults
        assert "controlled stop" in status.override
        assert vehicle_control(control).throttle == 0.0

        # No perception outputs at all: planned after input_wait_s with the older ones.
        started = time.monotonic()
        _publish_frame(harness, obs, 2 * DT_NS, inputs=False)
        control, status = harness.answer(2 * DT_NS)
        assert time.monotonic() - started >= INPUT_WAIT_S * 0.9
        assert any("none for this frame" in f for f in status.faults), status.faults

        # NaN odometry: full brake.
        _publish_frame(harness, obs, 3 * DT_NS, nan_odometry=True)
        control, status = harness.answer(3 * DT_NS)
        assert vehicle_control(control).brake == 1.0 and any(f.startswith("odometry") for f in status.faults)

        # Bytes that are no Detection2DArray at all: dropped, the frame planned without them.
        raw = harness.node.create_publisher(rclpy_class("drivestack_msgs/msg/Detection2DArray"),
                                            topics.detections_topic("front"), qos_profile(Qos.SENSOR))
        _publish_frame(harness, obs, 4 * DT_NS, inputs=False)
        raw.publish(b"\x00\x01\x00\x00\xff\xff\xff\x7f garbage")
        control, status = harness.answer(4 * DT_NS)
        assert any(f.startswith("detections") for f in status.faults), status.faults

        # The route replaced by one that cannot be driven: brake every frame, with the reason.
        from drivestack.schema import RoadOption
        waypoint = msg_class("drivestack_msgs/msg/RouteWaypoint")(
            x_m=0.0, y_m=0.0, yaw_rad=0.0, option=int(RoadOption.LANEFOLLOW), lane_segment_id=-1)
        harness.pubs.publish(topics.ROUTE, msg_class("drivestack_msgs/msg/Route")(
            header=header(0, "map"), length_m=0.0, waypoints=[waypoint]))
        harness.spin_until(lambda: len(harness.received[topics.ROUTE]) >= 2, 10.0, "the bad route")
        time.sleep(0.5)  # the planner's reader gets it too
        for k in (5, 6):
            _publish_frame(harness, obs, k * DT_NS)
            control, status = harness.answer(k * DT_NS, timeout_s=20.0)
            assert vehicle_control(control).brake == 1.0 and status.stop_reason.startswith("no route"), status
        assert planner.poll() is None, "the planner died"


@pytest.mark.slow
def test_drive_ros_modular_completes_a_short_route(tmp_path):
    """The whole graph: bridge, mission, perception, lidar_obstacles, planner and recorder,
    in lockstep; every frame gets a control, a path and a status, all in the bag."""
    from ros_nodes.bag.info import bag_info
    out = tmp_path / "ros"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--ros", "--agent", "modular",
                           "--scenario", str(SCENARIO), "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=1500, cwd=ROOT)
    elapsed_s = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    route = json.loads((out / "results.json").read_text())["routes"][0]
    frames = route["extra"]["frames_published"]
    counts = {t.name: t.count for t in bag_info(out / "bag").topics}
    for topic in (topics.CONTROL, topics.PLANNING_PATH, topics.PLANNER_STATUS):
        assert frames - 1 <= counts.get(topic, 0) <= frames, (topic, counts.get(topic), frames)
    assert counts[topics.ROUTE] == 1 and counts[topics.MISSION_PATH] == 1
    assert route["extra"]["control_faults"] == 0, route
    print(f"modular episode through ROS: {frames} frames in {elapsed_s:.0f} s, status {route['status']}, "
          f"RC {route['route_completion_pct']:.1f} %")
    assert route["route_completion_pct"] > 50.0, route
