"""mission: the global route of the episode, planned on the HD map like a car's navigation.

Reads the map (``/carla/map``, latched) and the scenario (the launch arguments every
node shares), plans the route exactly as the simulator does
(``sim.builtin.plan_scenario_route`` with the scenario seed's generator, whose first
draws are the route's), and publishes it once, latched: ``/drivestack/route``
(drivestack_msgs/Route, what the planner and the recorder read) and
``/drivestack/mission/path`` (nav_msgs/Path, for viewers). A route that cannot be
planned is logged and published empty (no waypoints): the planner then brakes and says
why, instead of waiting for a route that will not come.

Run: ``python -m ros_nodes.mission_node --ros-args -p scenario:=default``
"""

from __future__ import annotations

import sys

import numpy as np
from rclpy.node import Node

from drivestack.schema import Route
from ros_nodes import topics
from ros_nodes.convert_planning import route_path_msg
from ros_nodes.convert_sensors import header, msg_class
from ros_nodes.convert_world import route_msg
from ros_nodes.graph import Publishers, announce_ready, spin_main, subscribe
from ros_nodes.scenario_params import declare_scenario_parameters, scenario_from_params
from ros_nodes.topics import Qos, Topic

ROUTE_STAMP_NS = 0  # the episode's first frame, as the bridge stamps the route it publishes


def mission_route(road_map, scenario) -> Route:
    """The simulator's route for ``scenario`` on ``road_map`` (``BuiltinSimulator.reset``
    plans it with the first draws of the scenario seed's generator)."""
    from sim.builtin import plan_scenario_route
    return plan_scenario_route(road_map, scenario, np.random.default_rng(scenario.seed))


class MissionNode(Node):
    def __init__(self) -> None:
        super().__init__("mission")
        self.scenario = scenario_from_params(declare_scenario_parameters(self))
        self.route: Route | None = None
        self.pubs = Publishers(self, [Topic(topics.ROUTE, "drivestack_msgs/msg/Route", Qos.LATCHED, None),
                                      next(t for t in topics.planning_topics(0.05) if t.name == topics.MISSION_PATH)])
        subscribe(self, Topic(topics.MAP, "std_msgs/msg/String", Qos.LATCHED, None), self._on_map)
        self._ready_pub = announce_ready(self)

    def _on_map(self, msg) -> None:
        if self.route is not None:
            return  # latched: one route per episode
        from sim.road_map import RoadMap
        try:
            self.route = mission_route(RoadMap("map", msg.data), self.scenario)
        except Exception as exc:  # MapError, NoRouteError, ScenarioError: say so on the route itself
            self.get_logger().error(f"no route for scenario {self.scenario.name}: {exc}")
            empty = msg_class("drivestack_msgs/msg/Route")(header=header(ROUTE_STAMP_NS, "map"), length_m=0.0,
                                                            waypoints=[])
            self.pubs.publish(topics.ROUTE, empty)
            self.pubs.publish(topics.MISSION_PATH, msg_class("nav_msgs/msg/Path")(header=empty.header, poses=[]))
            return
        self.pubs.publish(topics.ROUTE, route_msg(self.route, ROUTE_STAMP_NS))
        self.pubs.publish(topics.MISSION_PATH, route_path_msg(self.route, ROUTE_STAMP_NS))
        self.get_logger().info(f"route of {self.route.length_m:.0f} m ({len(self.route.waypoints)} waypoints) "
                               f"for {self.scenario.name} seed {self.scenario.seed}")


def main(args: list[str] | None = None) -> int:
    return spin_main("mission", MissionNode, args)


if __name__ == "__main__":
    sys.exit(main())
