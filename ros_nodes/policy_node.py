"""policy: the learned driving policy (behaviour cloning) as a ROS 2 node.

Inputs, all from sensors, never ground truth: the front camera's RGB image, the
odometry (speed, and the position that picks the route command) and the route
(latched). For each camera frame, once the odometry of the same stamp is in, it runs
``planning.policy_proposer.make_proposer``'s proposer (the route command exactly as
the behaviour-cloning dataset computes it, then ``models.driving_policy.DrivingPolicy``,
throttle and brake from the waypoints' speed as the in-process agent has them) and
publishes the proposed control on ``/drivestack/policy/control``, stamped with the
frame; the planner arbitrates it (``mode:=policy`` or ``policy+safety``).

The proposal goes out as the net said it, NaN included: judging it is the planner's
safety supervisor's job, which catches and counts it. A frame it cannot use (an image
that is no colour image or not the size the policy takes, NaN odometry, a route that
does not decode) gets no proposal, so the planner sees the policy missing and stops;
each kind of problem is logged once as an error and all are counted at shutdown.
Nothing that arrives stops the node.

Run: ``python -m ros_nodes.policy_node --ros-args -p weights:=models/weights/policy_cilrs.pt -p use_sim_time:=true``
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rclpy.node import Node

from drivestack.schema import EgoState
from planning.inputs import VehicleModel
from ros_nodes import topics
from ros_nodes.convert_planning import ego_state_of, policy_proposal_msg
from ros_nodes.convert_sensors import MessageError, rgb_array, stamp_ns_of
from ros_nodes.convert_world import route_of
from ros_nodes.graph import Publishers, announce_ready, decode, qos_profile, rclpy_class, spin_main
from ros_nodes.scenario_params import declare_scenario_parameters, scenario_from_params
from ros_nodes.topics import Qos, Topic

log = logging.getLogger("policy")  # at shutdown /rosout may be gone

# Frames waiting for their partner (image or odometry) or for the route; older ones are
# dropped, so a stream without its partner cannot grow without bound.
MAX_PENDING_FRAMES = 50


def camera_size(scenario, camera: str) -> tuple[int, int]:
    """(width, height) in px of the scenario's RGB camera ``camera``, or ValueError."""
    config = next((c for c in scenario.sensors.cameras if c.name == camera and "rgb" in c.kinds), None)
    if config is None:
        raise ValueError(f"scenario {scenario.name} has no RGB camera {camera!r} for the policy (choose "
                         "sensors:=front_rgb, drive or full)")
    return config.width_px, config.height_px


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy")
        from drivestack.agents import load_driving_policy
        from models.engine import resolve_device
        weights = str(self.declare_parameter("weights", "").value)
        device = str(self.declare_parameter("device", "cpu").value)
        self.camera = str(self.declare_parameter("camera", "front").value)
        # One thread by default: the node shares the cores with the bridge and the other
        # nodes (as the perception node, whose measurements showed torch's pool spinning).
        import torch
        torch.set_num_threads(max(1, int(self.declare_parameter("threads", 1).value)))
        # Throttle and brake as the in-process agent makes them (planning.policy_proposer).
        self.longitudinal = str(self.declare_parameter("longitudinal", "waypoints").value)
        self.dt_s = float(self.declare_parameter("dt_s", 0.05).value)
        from sim.vehicle_dynamics import VehicleParams
        self.vehicle = VehicleModel.of(VehicleParams.load())
        scenario = scenario_from_params(declare_scenario_parameters(self))
        self.policy = load_driving_policy(Path(weights) if weights else None, resolve_device(device))
        (width, height), wanted = camera_size(scenario, self.camera), self.policy.image_size
        if (width, height) != wanted:
            raise ValueError(f"the policy takes {wanted[0]}x{wanted[1]} images, scenario {scenario.name}'s camera "
                             f"{self.camera!r} gives {width}x{height}")

        self.proposer = None  # PolicyProposer, once the route is in
        self.images: dict[int, np.ndarray] = {}
        self.odometry: dict[int, EgoState] = {}
        self.last_stamp = -1  # the newest frame answered: older ones are late
        self.problems: Counter = Counter()  # kind -> frames refused for it
        self.proposals = 0
        self.inference_ms: list[float] = []
        self.pubs = Publishers(self, [topics.POLICY_CONTROL_TOPIC])
        self._subscribe(Topic(topics.ROUTE, "drivestack_msgs/msg/Route", Qos.LATCHED, None), self._on_route)
        self._subscribe(Topic(topics.ODOMETRY, "nav_msgs/msg/Odometry", Qos.SENSOR, None), self._on_odometry)
        self._subscribe(Topic(topics.camera_image_topic(self.camera, "rgb"), "sensor_msgs/msg/Image", Qos.SENSOR,
                              None), self._on_image)
        self._ready_pub = announce_ready(self)
        self.get_logger().info(f"policy {weights or 'default weights'} on {device}, camera {self.camera}, "
                               f"images {self.policy.image_size[0]}x{self.policy.image_size[1]}")

    def _subscribe(self, topic: Topic, callback) -> None:
        """A raw subscription decoded here: CDR that does not decode is a refused frame,
        not an exception (which would end the node)."""
        def on_data(data: bytes) -> None:
            try:
                msg = decode(data, topic.msgtype)
            except Exception as exc:  # rosbags raises several types on truncated or foreign CDR
                self._refuse(None, f"{topic.name} undecodable", repr(exc))
                return
            callback(msg)
        self.create_subscription(rclpy_class(topic.msgtype), topic.name, on_data, qos_profile(topic.qos), raw=True)

    def _refuse(self, stamp: int | None, kind: str, detail: str) -> None:
        """No proposal for this frame: the first of each kind is an error in the log."""
        self.problems[kind] += 1
        if self.problems[kind] == 1:
            at = f" t={stamp * 1e-9:.2f} s" if stamp is not None else ""
            self.get_logger().error(f"no proposal{at}: {kind}: {detail} (further frames of this kind are counted, "
                                    "not logged)")

    # -- inputs --------------------------------------------------------------------------

    def _on_route(self, msg) -> None:
        from planning.policy_proposer import make_proposer
        self.last_stamp = -1  # a new route is a new episode: its clock may start again
        try:
            self.proposer = make_proposer(self.policy, route_of(msg), self.vehicle, self.dt_s, self.longitudinal)
        except Exception as exc:  # MessageError, or a route RouteProgress cannot follow (< 2 waypoints)
            self.proposer = None
            self._refuse(None, "route unusable", str(exc))
            return
        self.get_logger().info(f"route of {msg.length_m:.0f} m, {len(msg.waypoints)} waypoints")
        self._propose_ready()

    def _on_odometry(self, msg) -> None:
        stamp = stamp_ns_of(msg.header.stamp)
        try:
            self.odometry[stamp] = ego_state_of(msg)
        except MessageError as exc:
            self.images.pop(stamp, None)
            self._refuse(stamp, "odometry unusable", str(exc))
            return
        self._propose_ready()

    def _on_image(self, msg) -> None:
        stamp = stamp_ns_of(msg.header.stamp)
        try:
            image = rgb_array(msg)
        except MessageError as exc:
            self.odometry.pop(stamp, None)
            self._refuse(stamp, f"{msg.encoding} image", str(exc))
            return
        width, height = self.policy.image_size
        if image.shape[:2] != (height, width):
            self.odometry.pop(stamp, None)
            self._refuse(stamp, f"{image.shape[1]}x{image.shape[0]} image",
                         f"the policy takes {width}x{height} images from {self.camera}")
            return
        self.images[stamp] = image
        self._propose_ready()

    # -- frames --------------------------------------------------------------------------

    def _propose_ready(self) -> None:
        """Answer, oldest first, every frame whose image and odometry are both in."""
        for pending in (self.images, self.odometry):  # bounded: drop the oldest unpaired
            for stamp in sorted(pending)[:-MAX_PENDING_FRAMES]:
                del pending[stamp]
        if self.proposer is None:
            return
        for stamp in sorted(self.images.keys() & self.odometry.keys()):
            image, ego = self.images.pop(stamp), self.odometry.pop(stamp)
            if stamp <= self.last_stamp:
                self._refuse(stamp, "late frame", f"older than the last answered t={self.last_stamp * 1e-9:.2f} s")
                continue
            self.last_stamp = stamp
            self._propose(stamp, image, ego)
        for pending in (self.images, self.odometry):  # what is older than the answered frame will not pair
            for stamp in [s for s in pending if s < self.last_stamp]:
                del pending[stamp]

    def _propose(self, stamp: int, image: np.ndarray, ego: EgoState) -> None:
        started = time.perf_counter()
        try:
            proposal = self.proposer(stamp, image, ego)
        except Exception as exc:  # the net or the proposer failing is a missing proposal, not a dead node
            self._refuse(stamp, "policy error", repr(exc))
            return
        self.inference_ms.append((time.perf_counter() - started) * 1e3)
        self.pubs.publish(topics.POLICY_CONTROL, policy_proposal_msg(proposal))
        self.proposals += 1

    def close(self) -> None:
        timing = f", {np.mean(self.inference_ms):.1f} ms a frame" if self.inference_ms else ""
        refused = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.problems.items())) or "none"
        log.info("%d proposals%s; frames refused: %s", self.proposals, timing, refused)


def main(args: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    return spin_main("policy", PolicyNode, args)


if __name__ == "__main__":
    sys.exit(main())
