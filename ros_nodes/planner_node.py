"""planner: the modular planner (``planning.planner.ModularPlanner``) as a ROS 2 node.

Inputs, all from sensors, never ground truth: the map and the route (latched), the
odometry, the front camera's detections and lanes, the LiDAR obstacles, and in the
``policy`` modes a learned policy's proposed control. Outputs per frame, stamped with
the frame: the control, the planned path, a ``PlannerStatus`` (behaviour, stop
reason, supervisor override, faults, target speed) and debug markers.

Lockstep: frame T is planned once its odometry and every enabled input stamped T have
arrived, or ``input_wait_s`` (wall time) after its odometry with whatever is there (the
first frame allows ``first_frame_wait_s``, as the models warm up). An input that did not
come keeps its older stamp, so the planner's supervisor sees it stale, stops the car and
says so in the status. A malformed message is logged and the frame planned without it;
a route that cannot be driven (fewer than two waypoints, off the map) brakes every
frame with the reason in the status. Nothing that arrives stops the node.

Run: ``python -m ros_nodes.planner_node --ros-args -p scenario:=default -p sensors:=drive -p use_sim_time:=true``
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from drivestack.schema import EgoState, VehicleControl
from ros_nodes import topics
from ros_nodes.convert_planning import (camera_detections, ego_state_of, lane_detections, markers_msg, obstacle_scan,
                                        path_msg, planner_status_msg, policy_proposal, status_msg)
from ros_nodes.convert_sensors import MessageError, msg_class, stamp_ns_of
from ros_nodes.convert_world import control_msg, route_of
from ros_nodes.graph import Publishers, announce_ready, decode, qos_profile, rclpy_class, spin_main
from ros_nodes.scenario_params import declare_scenario_parameters, scenario_from_params
from ros_nodes.topics import Qos, Topic

log = logging.getLogger("planner")  # at shutdown /rosout may be gone

BRAKE = VehicleControl(throttle=0.0, steer=0.0, brake=1.0)
INPUT_KINDS = ("detections", "lanes", "obstacles", "policy")
_TIMER_PERIOD_S = 0.01  # how often waiting frames are checked against their deadline


@dataclass
class _Frame:
    """A frame's odometry (None when malformed) and when it arrived (monotonic s)."""

    ego: EgoState | None
    arrived_s: float
    faults: list[str] = field(default_factory=list)


def camera_model(scenario, camera: str):
    """The planner's view of a camera of the scenario's sensor suite (intrinsics, size,
    mount), or ValueError when the suite has no RGB camera of that name."""
    from drivestack.frames import CameraMount
    from planning.inputs import CameraModel
    config = next((c for c in scenario.sensors.cameras if c.name == camera and "rgb" in c.kinds), None)
    if config is None:
        raise ValueError(f"scenario {scenario.name} has no RGB camera {camera!r} for the detections (choose "
                         "sensors:=drive or full, or use_detections:=false)")
    mount = CameraMount(config.x_m, config.y_m, config.z_m, config.roll_rad, config.pitch_rad, config.yaw_rad)
    return CameraModel(camera, config.intrinsics, config.width_px, config.height_px, mount)


class PlannerNode(Node):
    def __init__(self) -> None:
        super().__init__("planner")
        from planning.inputs import DriveMode, VehicleModel
        from sim.vehicle_dynamics import VehicleParams
        mode = str(self.declare_parameter("mode", "modular").value)
        try:
            self.mode = DriveMode(mode)
        except ValueError:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(m.value for m in DriveMode)}") from None
        use = {kind: bool(self.declare_parameter(f"use_{kind}", True).value)
               for kind in ("detections", "lanes", "obstacles")}
        use["policy"] = self.mode != DriveMode.MODULAR
        self.enabled = tuple(kind for kind in INPUT_KINDS if use[kind])
        self.input_wait_s = float(self.declare_parameter("input_wait_s", 1.5).value)
        self.first_frame_wait_s = float(self.declare_parameter("first_frame_wait_s", 30.0).value)
        self.dt_s = float(self.declare_parameter("dt_s", 0.05).value)
        camera = str(self.declare_parameter("camera", "front").value)
        scenario = scenario_from_params(declare_scenario_parameters(self))
        self.camera = camera_model(scenario, camera) if use["detections"] else None
        params = VehicleParams.load()
        self.vehicle = VehicleModel.of(params)
        self.ego_size_m = (params.length_m, params.width_m)

        self.map_text: str | None = None
        self.route = None
        self.planner = None
        self.route_error = ""  # why there is no planner for this route ("" = there is one, or no route yet)
        self.frames: dict[int, _Frame] = {}
        self.inputs: dict[str, dict[int, object]] = {kind: {} for kind in self.enabled}  # stamp -> input or None
        self.input_faults: dict[str, dict[int, str]] = {kind: {} for kind in self.enabled}
        self.frames_planned = 0
        self._connect(camera)
        # Wall time: with use_sim_time the node's own timers would wait for /clock.
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(_TIMER_PERIOD_S, self._plan_ready, clock=self._steady)
        self._ready_pub = announce_ready(self)
        self.get_logger().info(f"mode {self.mode.value}, inputs: {', '.join(self.enabled) or 'odometry only'}")

    def _connect(self, camera: str) -> None:
        """Publishers of the outputs; subscriptions to sensors-only inputs (none privileged)."""
        self.pubs = Publishers(self, [Topic(topics.CONTROL, "drivestack_msgs/msg/VehicleControl", Qos.CONTROL, None),
                                      *(t for t in topics.planning_topics(self.dt_s) if t.name != topics.MISSION_PATH)])
        self._subscribe(Topic(topics.MAP, "std_msgs/msg/String", Qos.LATCHED, None), self._on_map)
        self._subscribe(Topic(topics.ROUTE, "drivestack_msgs/msg/Route", Qos.LATCHED, None), self._on_route)
        self._subscribe(Topic(topics.ODOMETRY, "nav_msgs/msg/Odometry", Qos.SENSOR, None), self._on_odometry)
        decoders = {"detections": (Topic(topics.detections_topic(camera), "drivestack_msgs/msg/Detection2DArray",
                                         Qos.SENSOR, None), lambda msg: camera_detections(msg, self.camera)),
                    "lanes": (Topic(topics.PERCEPTION_LANES, "drivestack_msgs/msg/LaneArray", Qos.SENSOR, None),
                              lane_detections),
                    "obstacles": (topics.OBSTACLES_TOPIC, obstacle_scan),
                    "policy": (topics.POLICY_CONTROL_TOPIC, policy_proposal)}
        for kind in self.enabled:
            topic, convert = decoders[kind]
            self._subscribe(topic, lambda msg, kind=kind, convert=convert: self._on_input(kind, convert, msg))

    def _subscribe(self, topic: Topic, callback) -> None:
        """A raw subscription whose bytes are decoded here: CDR that does not decode is
        logged and dropped (an exception in a callback would end the node)."""
        def on_data(data: bytes) -> None:
            try:
                msg = decode(data, topic.msgtype)
            except Exception as exc:  # rosbags raises several types on truncated or foreign CDR
                self.get_logger().error(f"{topic.name}: undecodable message dropped: {exc!r}",
                                        throttle_duration_sec=2.0)
                return
            callback(msg)
        self.create_subscription(rclpy_class(topic.msgtype), topic.name, on_data, qos_profile(topic.qos), raw=True)

    # -- map and route -------------------------------------------------------------------

    def _on_map(self, msg) -> None:
        self.map_text = msg.data
        self._build()

    def _on_route(self, msg) -> None:
        try:
            self.route, self.route_error = route_of(msg), ""
        except MessageError as exc:
            self.route, self.route_error = None, f"no route: {exc}"
            self.planner = None
            self.get_logger().error(f"{topics.ROUTE}: {exc}; braking every frame")
        self._build()

    def _build(self) -> None:
        if self.map_text is None or self.route is None:
            self._plan_ready()  # a bad route: answer the waiting frames with brakes
            return
        from planning.planner import ModularPlanner
        from sim.road_map import RoadMap
        try:
            road_map = RoadMap("map", self.map_text)
            self.planner = ModularPlanner(road_map, self.route, self.vehicle, self.dt_s, mode=self.mode,
                                          required_inputs=tuple(k for k in ("detections", "obstacles")
                                                                if k in self.enabled))
        except Exception as exc:  # a map or route the planner cannot use: brake, never die
            self.planner, self.route_error = None, f"route not drivable on this map: {exc}"
            self.get_logger().error(f"{self.route_error}; braking every frame")
        else:
            self.get_logger().info(f"planner ready: route of {self.route.length_m:.0f} m, "
                                   f"{len(self.route.waypoints)} waypoints")
        self._plan_ready()

    # -- frames --------------------------------------------------------------------------

    def _on_odometry(self, msg) -> None:
        stamp = stamp_ns_of(msg.header.stamp)
        frame = _Frame(None, time.monotonic())
        try:
            frame.ego = ego_state_of(msg, *self.ego_size_m)
        except MessageError as exc:
            frame.faults.append(f"odometry: {exc}")
            self.get_logger().error(f"odometry t={stamp * 1e-9:.2f} s: {exc}", throttle_duration_sec=2.0)
        self.frames[stamp] = frame
        self._plan_ready()

    def _on_input(self, kind: str, convert, msg) -> None:
        stamp = stamp_ns_of(msg.header.stamp)
        try:
            self.inputs[kind][stamp] = convert(msg)
        except Exception as exc:  # MessageError, or anything a malformed message trips in decoding
            self.inputs[kind][stamp] = None
            self.input_faults[kind][stamp] = f"{kind}: {exc}"
            self.get_logger().error(f"{kind} t={stamp * 1e-9:.2f} s dropped: {exc}", throttle_duration_sec=2.0)
        self._plan_ready()

    def _plan_ready(self) -> None:
        """Plan, oldest first, every frame whose inputs are all in, whose wait is over, or
        that a newer frame has overtaken (its inputs will not come sooner)."""
        if self.planner is None and not self.route_error:
            return  # map or route not here yet: frames wait (the bridge allows the start-up)
        now = time.monotonic()
        wait_s = self.input_wait_s if self.frames_planned else self.first_frame_wait_s
        stamps = sorted(self.frames)
        for k, stamp in enumerate(stamps):
            complete = all(stamp in self.inputs[kind] for kind in self.enabled)
            if complete or now - self.frames[stamp].arrived_s >= wait_s or k + 1 < len(stamps):
                self._answer(stamp, self.frames.pop(stamp))
            else:
                break

    def _answer(self, stamp: int, frame: _Frame) -> None:
        self.frames_planned += 1
        if self.planner is None:
            self._brake(stamp, self.route_error, frame.faults)
            return
        try:
            self._plan(stamp, frame)
        except Exception as exc:  # the planner promises not to raise; if it does, brake and go on
            self.get_logger().error(f"planning t={stamp * 1e-9:.2f} s failed: {exc!r}")
            self._brake(stamp, "planner error", [*frame.faults, f"planner: {exc!r}"])

    def _plan(self, stamp: int, frame: _Frame) -> None:
        from planning.inputs import PlannerInputs
        faults = list(frame.faults)
        chosen = {}
        for kind in self.enabled:
            chosen[kind], fault = self._input_for(kind, stamp)
            if fault:
                faults.append(fault)
        out = self.planner.step(PlannerInputs(stamp, frame.ego, **chosen))
        extra = tuple(faults)
        self.pubs.publish(topics.PLANNING_PATH, path_msg(out.path_xy_m, stamp))
        self.pubs.publish(topics.PLANNER_STATUS, planner_status_msg(out, extra))
        self.pubs.publish(topics.PLANNING_MARKERS, markers_msg(out, frame.ego, extra))
        self.pubs.publish(topics.CONTROL, control_msg(out.control, stamp))  # last: the bridge steps on it

    def _input_for(self, kind: str, stamp: int) -> tuple[object | None, str]:
        """The input of frame ``stamp``, else the newest older one (the supervisor sees its
        stamp), and the node's fault about it; inputs older than the one used are dropped."""
        received = self.inputs[kind]
        if stamp in received:
            fault = self.input_faults[kind].get(stamp, "")
            chosen = received[stamp]
        else:
            older = [s for s in received if s < stamp and received[s] is not None]
            chosen = received[max(older)] if older else None
            fault = f"{kind}: none for this frame within {self.input_wait_s:g} s"
        keep = [s for s in received if s > stamp or (chosen is not None and received[s] is chosen)]
        self.inputs[kind] = {s: received[s] for s in keep}
        self.input_faults[kind] = {s: f for s, f in self.input_faults[kind].items() if s > stamp}
        return chosen, fault

    def _brake(self, stamp: int, reason: str, faults: list[str]) -> None:
        for kind in self.enabled:  # what was waiting for this frame is spent
            self.inputs[kind] = {s: v for s, v in self.inputs[kind].items() if s > stamp}
            self.input_faults[kind] = {s: f for s, f in self.input_faults[kind].items() if s > stamp}
        self.pubs.publish(topics.PLANNING_PATH, path_msg([], stamp))
        self.pubs.publish(topics.PLANNER_STATUS, status_msg(stamp, self.mode.value, "stopped", reason,
                                                            faults=tuple(faults)))
        self.pubs.publish(topics.PLANNING_MARKERS, msg_class("visualization_msgs/msg/MarkerArray")(markers=[]))
        self.pubs.publish(topics.CONTROL, control_msg(BRAKE, stamp))

    def close(self) -> None:
        counts = dict(self.planner.counts) if self.planner is not None else {}
        log.info("%d frames planned; supervisor: %s", self.frames_planned, counts or "nothing to report")


def main(args: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    return spin_main("planner", PlannerNode, args)


if __name__ == "__main__":
    sys.exit(main())
