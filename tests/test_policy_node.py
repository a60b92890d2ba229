"""The policy node as a real process, with the planner node it feeds.

The test publishes map, route and the frames (front RGB image, odometry, perception
outputs) with rclpy, as the bridge, mission and perception nodes would; a policy node
with untrained weights proposes, a planner in ``policy+safety`` mode arbitrates. The
weights make the steer NaN (throttle and brake stay finite): the node must pass NaN on
as the net said it and the planner's supervisor must catch and count it. A frame the
node cannot use gets no proposal and one error log per kind; the planner then stops for
the missing policy. The closed-loop episode through ``drivestack drive --ros --mode
policy+safety`` is slow and marked so.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from ros_nodes import topics
from ros_nodes.convert_planning import policy_proposal, policy_proposal_msg
from ros_nodes.convert_sensors import image_msg, msg_class, stamp_ns_of
from ros_nodes.convert_world import route_msg, vehicle_control
from ros_nodes.graph import decode, qos_profile, rclpy_class
from ros_nodes.topics import Qos, Topic
from sim.sensors.suite import load_suite
from test_planner_node import (ROOT, SCENARIO, SCENARIO_PARAMS, Harness, _node_process, _publish_frame, _stop,
                               _subscriptions_of, first_frame)

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

DT_NS = 50_000_000
INPUT_WAIT_S = 2.0  # generous: the machine may be busy, and a late proposal would read as missing
IMAGE_TOPIC = topics.camera_image_topic("front", "rgb")
ERROR_LEVEL = 40  # rcl_interfaces/msg/Log ERROR


def write_policy(path, *, nan_steer: bool = False):
    """Untrained policy weights in the training checkpoint format (the plumbing, not the
    driving, is tested); ``nan_steer``: every command branch's steer output NaN."""
    from models.engine import save_checkpoint
    from models.policy_net import POLICY_TASK, build_policy
    torch.manual_seed(0)
    net = build_policy()
    if nan_steer:
        with torch.no_grad():
            for branch in net.branches:
                branch[-1].bias[0] = math.nan  # [steer, throttle, brake]
    save_checkpoint(path, {"task": POLICY_TASK, "model_config": net.config(), "model": net.state_dict()})
    return path


@pytest.fixture(scope="module")
def nan_policy(tmp_path_factory):
    return write_policy(tmp_path_factory.mktemp("policy") / "nan_steer.pt", nan_steer=True)


class PolicyGraph:
    """The harness with the policy's output and /rosout watched, the node processes, and
    the simulator's first frame (image, odometry) with its route."""

    def __init__(self, harness: Harness, obs, route, processes: dict[str, subprocess.Popen]) -> None:
        from rcl_interfaces.msg import Log
        from ros_nodes.graph import Publishers
        self.harness, self.obs, self.route, self.processes = harness, obs, route, processes
        self.outputs: dict[str, str] = {}
        self.image = next(c for c in obs.cameras if c.name == "front").rgb
        self.images = Publishers(harness.node, [Topic(IMAGE_TOPIC, "sensor_msgs/msg/Image", Qos.SENSOR, None)])
        self.proposals: list = []
        harness.node.create_subscription(rclpy_class(topics.POLICY_CONTROL_TOPIC.msgtype), topics.POLICY_CONTROL,
                                         lambda data: self.proposals.append(decode(
                                             data, topics.POLICY_CONTROL_TOPIC.msgtype)),
                                         qos_profile(Qos.CONTROL), raw=True)
        self.logs: list = []
        harness.node.create_subscription(Log, "/rosout", self.logs.append, 100)

    def publish_image(self, stamp_ns: int, image=None, encoding: str = "rgb8") -> None:
        self.images.publish(IMAGE_TOPIC, image_msg(self.image if image is None else image, encoding, stamp_ns,
                                                   "front_optical"))

    def proposals_at(self, stamp_ns: int) -> list:
        return [m for m in self.proposals if stamp_ns_of(m.header.stamp) == stamp_ns]

    def errors(self, node: str) -> list[str]:
        return [m.msg for m in self.logs if m.name == node and m.level >= ERROR_LEVEL]

    def stop(self, name: str) -> str:
        if name not in self.outputs:
            self.outputs[name] = _stop(self.processes[name])
        return self.outputs[name]


@pytest.fixture(scope="class")
def graph(nan_policy):
    """A policy node (NaN-steer weights) and a planner in policy+safety mode, fed by
    the harness with the simulator's map and route (no mission node needed)."""
    obs, route, xodr = first_frame()
    harness = Harness()
    processes = {
        "policy": _node_process("policy_node", "policy", *SCENARIO_PARAMS, f"weights:={nan_policy}"),
        "planner": _node_process("planner_node", "planner", *SCENARIO_PARAMS, "mode:=policy+safety",
                                 f"input_wait_s:={INPUT_WAIT_S}", "first_frame_wait_s:=20.0"),
    }
    policy_graph = PolicyGraph(harness, obs, route, processes)
    try:
        harness.pubs.publish(topics.MAP, msg_class("std_msgs/msg/String")(data=xodr))
        harness.pubs.publish(topics.ROUTE, route_msg(route, 0))
        harness.spin_until(lambda: {"policy", "planner"} <= harness.ready.keys(), 60.0, "ready nodes")
        yield policy_graph
    finally:
        for name in processes:
            print(f"--- {name} node output ---\n{policy_graph.stop(name)[-4000:]}")  # shown when a test failed
        harness.close()


class TestPolicyNode:
    """One policy node and one planner serve these tests, in order (frames 0-3, then 10-13)."""

    def test_subscribes_to_sensors_only(self, graph):
        harness = graph.harness
        privileged = {t.name for t in topics.topic_table(load_suite("full"), 0.05) if t.privileged}
        privileged.add(topics.EXPERT_CONTROL)
        subscribed = set(harness.ready["policy"])
        assert {IMAGE_TOPIC, topics.ODOMETRY, topics.ROUTE} <= subscribed
        in_graph = harness.spin_until(lambda: _subscriptions_of(harness.node, "policy"), 20.0,
                                      "policy subscriptions in the graph")
        subscribed |= {name for name, _ in in_graph}
        assert not subscribed & privileged
        assert not [name for name in subscribed if name.startswith(topics.GROUND_TRUTH_NS)]
        assert topics.POLICY_CONTROL in set(harness.ready["planner"])

    def test_one_proposal_per_frame_stamped_with_it(self, graph, nan_policy):
        from drivestack.agents import load_driving_policy
        from planning.inputs import VehicleModel
        from planning.policy_proposer import make_proposer
        from sim.vehicle_dynamics import VehicleParams
        harness = graph.harness
        stamps = [k * DT_NS for k in range(4)]
        for k, stamp in enumerate(stamps):
            if k % 2:  # either may come first
                _publish_frame(harness, graph.obs, stamp)
                graph.publish_image(stamp)
            else:
                graph.publish_image(stamp)
                _publish_frame(harness, graph.obs, stamp)
            harness.answer(stamp, timeout_s=60.0)  # the planner's, which waits for the proposal
        harness.spin_until(lambda: len(graph.proposals) >= len(stamps), 10.0, "proposals")
        # The same frames through the in-process proposer: what the node says, float32 on the wire.
        proposer = make_proposer(load_driving_policy(nan_policy), graph.route, VehicleModel.of(VehicleParams.load()),
                                 DT_NS * 1e-9)
        for stamp in stamps:
            [msg] = graph.proposals_at(stamp)
            got, expected = policy_proposal(msg), proposer(stamp, graph.image, graph.obs.ego)
            assert math.isnan(got.steer) and math.isnan(expected.steer)  # passed on, not clamped
            assert got.throttle == pytest.approx(expected.throttle, abs=1e-5) and math.isfinite(got.throttle)
            assert got.brake == pytest.approx(expected.brake, abs=1e-5)

    def test_nan_proposal_is_caught_by_the_planner(self, graph):
        harness = graph.harness
        for stamp in [k * DT_NS for k in range(4)]:
            control, status = harness.answer(stamp)
            assert "policy output NaN" in status.faults, status.faults
            assert status.override.startswith("controlled stop") and "policy output NaN" in status.override
            assert status.mode == "policy+safety"
            assert vehicle_control(control).throttle == 0.0

    def test_unusable_image_gets_no_proposal_and_one_error_per_kind(self, graph):
        harness = graph.harness
        depth = np.full(graph.image.shape[:2], 5.0, np.float32)
        bad = {10: (depth, "32FC1"), 11: (depth, "32FC1"), 12: (graph.image[::2, ::2], "rgb8")}
        for k in (10, 11, 12, 13):
            stamp = k * DT_NS
            image, encoding = bad.get(k, (None, "rgb8"))
            graph.publish_image(stamp, image, encoding)
            _publish_frame(harness, graph.obs, stamp)
            control, status = harness.answer(stamp)
            if k in bad:  # the planner waited for the policy in vain and stopped
                assert any(f.startswith("policy: none for this frame") for f in status.faults), status.faults
                assert "controlled stop" in status.override
        harness.spin_until(lambda: graph.proposals_at(13 * DT_NS), 10.0, "the good frame's proposal")
        assert not [graph.proposals_at(k * DT_NS) for k in bad if graph.proposals_at(k * DT_NS)]
        errors = harness.spin_until(lambda: len(graph.errors("policy")) >= 2 and graph.errors("policy"), 10.0,
                                    "the policy node's error logs")
        assert len([e for e in errors if "32FC1" in e]) == 1, errors  # once per kind, not per frame
        assert len([e for e in errors if "160x80" in e and "320x160" in e]) == 1, errors
        assert graph.processes["policy"].poll() is None, "the policy node died"

    def test_planner_counts_the_nan_proposals(self, graph):
        """At shutdown the planner logs its supervisor's counters: one fault per frame it
        planned with a NaN proposal (a frame without one reuses the last, NaN too)."""
        caught = [s for s in graph.harness.received[topics.PLANNER_STATUS] if "policy output NaN" in s.faults]
        assert len(caught) >= 5  # frames 0-3 and 13 at least
        output = graph.stop("planner")
        found = re.search(r"'fault: policy output NaN': (\d+)", output)
        assert found and int(found.group(1)) == len(caught), output[-3000:]
        policy_log = graph.stop("policy")
        assert re.search(r"\b5 proposals.*frames refused: 160x80 image: 1, 32FC1 image: 2", policy_log), \
            policy_log[-3000:]


def test_proposal_message_round_trips_nan_and_the_steer_sign():
    from planning.inputs import PolicyProposal
    back = policy_proposal(policy_proposal_msg(PolicyProposal(7, 0.25, math.nan, 0.5)))
    assert (back.stamp_ns, back.steer, back.brake) == (7, 0.25, 0.5) and math.isnan(back.throttle)
    assert policy_proposal_msg(PolicyProposal(7, 0.25, 0.0, 0.0)).steer == -0.25  # CARLA's sign on the wire


def test_drive_launch_runs_the_policy_node_in_the_policy_modes():
    from ros_nodes.launcher import load_launch

    def nodes(**arguments):
        description = load_launch(ROOT / "launch" / "drive.yaml", arguments)
        return {n.label: {p.name: p.value for p in n.parameters} for n in description.nodes}
    guarded = nodes(agent="modular", mode="policy+safety", policy_weights="w.pt")
    assert set(guarded) == {"sim_bridge", "recorder", "perception", "lidar_obstacles", "mission", "planner", "policy"}
    assert guarded["sim_bridge"]["wait_for_nodes"] == ("planner", "policy", "recorder")
    assert guarded["policy"]["weights"] == "w.pt" and guarded["recorder"]["record_policy"] is True
    assert guarded["planner"]["use_detections"] is True and guarded["policy"]["sensors"] == "drive"
    alone = nodes(agent="modular", mode="policy")
    assert set(alone) == {"sim_bridge", "recorder", "mission", "planner", "policy"}
    assert {n["sensors"] for n in alone.values() if "sensors" in n} == {"front_rgb"}
    assert alone["planner"]["use_detections"] is False and alone["planner"]["use_obstacles"] is False
    assert alone["sim_bridge"]["perception"] is False and alone["sim_bridge"]["lidar_obstacles"] is False
    modular = nodes(agent="modular")
    assert "policy" not in modular and modular["recorder"]["record_policy"] is False
    assert modular["sim_bridge"]["wait_for_nodes"] == ("planner", "recorder")
    assert nodes()["sim_bridge"]["wait_for_nodes"] == ("agent", "recorder")


def test_drive_ros_refuses_missing_policy_weights_before_starting(tmp_path):
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--ros", "--agent", "modular", "--mode",
                           "policy+safety", "--scenario", str(SCENARIO), "--out", str(tmp_path / "out"),
                           "--policy-weights", str(tmp_path / "missing.pt")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0 and "no policy weights at" in done.stderr and "missing.pt" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()  # nothing started
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--ros", "--agent", "modular",
                           "--policy-weights", str(tmp_path / "missing.pt")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0 and "--policy-weights is for --mode policy" in done.stderr, done.stderr


@pytest.mark.slow
def test_drive_ros_policy_safety_runs_the_graph(tmp_path):
    """bridge, mission, perception, lidar_obstacles, policy, planner and recorder in
    lockstep: every frame gets a proposal, the planner never misses one, all in the bag.
    The weights are untrained: how it drives is not the question."""
    from ros_nodes.bag.info import bag_info
    from ros_nodes.bag.reader import iter_messages
    weights = write_policy(tmp_path / "policy.pt")
    out = tmp_path / "ros"
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--ros", "--agent", "modular", "--mode",
                           "policy+safety", "--scenario", str(SCENARIO), "--policy-weights", str(weights),
                           "--out", str(out), "--json"], capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    route = json.loads((out / "results.json").read_text())["routes"][0]
    frames = route["extra"]["frames_published"]
    counts = {t.name: t.count for t in bag_info(out / "bag").topics}
    assert frames - 1 <= counts.get(topics.POLICY_CONTROL, 0) <= frames, (counts, frames)
    assert route["extra"]["control_faults"] == 0, route
    statuses = [m.data for m in iter_messages(out / "bag", [topics.PLANNER_STATUS], deserialize=True)]
    assert len(statuses) >= frames - 1
    missed = [s for s in statuses if any(f.startswith("policy") for f in s.faults)]
    assert not missed, [list(s.faults) for s in missed[:5]]
