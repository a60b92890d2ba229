"""agent: a driving agent of the in-process runner as a ROS 2 node.

It reads the map (``/carla/map``) and the route (``/drivestack/route``), both latched,
then answers every frame with a control stamped with that frame's time. The expert is
privileged: it reads the ground-truth ego state, actors and traffic lights, which the
bridge publishes with the simulator's exact float64 values, so its controls are
exactly those of the in-process runner.

Run: ``python -m ros_nodes.agent_node --ros-args -p agent:=expert``
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from drivestack.schema import Observation
from ros_nodes import topics
from ros_nodes.convert_sensors import MessageError, stamp_ns_of
from ros_nodes.convert_world import actor_states, control_msg, ego_state, route_of, traffic_lights
from ros_nodes.graph import Publishers, announce_ready, spin_main, subscribe
from ros_nodes.topics import Qos, Topic

AGENTS = ("expert",)
# The frame is complete when these three (same stamp) have arrived.
_FRAME_TOPICS = (topics.EGO_STATE, topics.ACTORS, topics.TRAFFIC_LIGHTS)


def _topic(name: str, msgtype: str, qos: Qos = Qos.SENSOR) -> Topic:
    return Topic(name, msgtype, qos, None)


class AgentNode(Node):
    def __init__(self) -> None:
        super().__init__("agent")
        self.agent_name = self.declare_parameter("agent", "expert").value
        self.dt_s = float(self.declare_parameter("dt_s", 0.05).value)
        if self.agent_name not in AGENTS:
            raise ValueError(f"unknown agent {self.agent_name!r} (known: {', '.join(AGENTS)})")
        self.map_text: str | None = None
        self.route = None
        self.agent = None
        self.frames: dict[int, dict[str, object]] = {}
        self.pubs = Publishers(self, [_topic(topics.CONTROL, "drivestack_msgs/msg/VehicleControl", Qos.CONTROL)])
        subscribe(self, _topic(topics.MAP, "std_msgs/msg/String", Qos.LATCHED), self._on_map)
        subscribe(self, _topic(topics.ROUTE, "drivestack_msgs/msg/Route", Qos.LATCHED), self._on_route)
        for name, msgtype in zip(_FRAME_TOPICS, ("drivestack_msgs/msg/EgoState", "drivestack_msgs/msg/ActorArray",
                                                 "drivestack_msgs/msg/TrafficLightArray")):
            subscribe(self, _topic(name, msgtype), lambda msg, name=name: self._on_frame_part(name, msg))
        # Ready = subscribed; frames that come before the map and route wait for them.
        self._ready_pub = announce_ready(self)

    def _on_map(self, msg) -> None:
        self.map_text = msg.data
        self._start()

    def _on_route(self, msg) -> None:
        self.route = route_of(msg)
        self._start()

    def _start(self) -> None:
        if self.agent is not None or self.map_text is None or self.route is None:
            return
        from sim.expert import ExpertDriver
        from sim.road_map import RoadMap
        from sim.vehicle_dynamics import VehicleParams
        self.agent = ExpertDriver(RoadMap("map", self.map_text), self.route, VehicleParams.load(), self.dt_s)
        self.get_logger().info(f"{self.agent_name} started: route of {self.route.length_m:.0f} m")
        # Frames that came before the map and route.
        for stamp in sorted(k for k, parts in self.frames.items() if len(parts) == len(_FRAME_TOPICS)):
            self._answer(stamp, self.frames.pop(stamp))

    def _on_frame_part(self, topic: str, msg) -> None:
        stamp = stamp_ns_of(msg.header.stamp)
        parts = self.frames.setdefault(stamp, {})
        parts[topic] = msg
        if len(parts) == len(_FRAME_TOPICS) and self.agent is not None:
            del self.frames[stamp]
            for older in [k for k in self.frames if k < stamp]:
                del self.frames[older]
            self._answer(stamp, parts)

    def _answer(self, stamp: int, parts: dict[str, object]) -> None:
        try:
            ego, lane = ego_state(parts[topics.EGO_STATE])
            obs = Observation(stamp, ego, actor_states(parts[topics.ACTORS]),
                              traffic_lights(parts[topics.TRAFFIC_LIGHTS]), lane)
        except MessageError as exc:
            # No control: the bridge's timeout brakes the car and counts the fault.
            self.get_logger().error(f"frame t={stamp * 1e-9:.2f} s: {exc}")
            return
        self.pubs.publish(topics.CONTROL, control_msg(self.agent.run_step(obs), stamp))


def main(args: list[str] | None = None) -> int:
    return spin_main("agent", AgentNode, args)


if __name__ == "__main__":
    sys.exit(main())
