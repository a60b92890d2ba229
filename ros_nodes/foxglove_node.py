"""foxglove: the live view as a ROS 2 node. It subscribes to the scenario's RGB cameras
(image and camera_info), the LiDAR, odometry and the route, and to the perception
outputs the suite can have (the front camera's overlay image, the LiDAR obstacles:
they come when the perception and lidar_obstacles nodes run), converts them with
ros_nodes.convert_* and hands the arrays to FoxgloveView, whose server sends them
from its own threads: a callback converts and returns, so the lockstep loop never
waits on a viewer. A message that does not convert is logged and skipped.

Parameters: ``host`` (default 127.0.0.1: this machine only), ``port`` (8765) and the
scenario parameters (they name the sensor suite, hence the topics).

Run: ``python -m ros_nodes.foxglove_node --ros-args -p port:=8765``, then in Foxglove
Open connection -> Foxglove WebSocket -> ws://127.0.0.1:8765.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rclpy.node import Node

from ros_nodes import topics
from ros_nodes.convert_perception import obstacles_of
from ros_nodes.convert_sensors import (MessageError, cloud_points, intrinsics_of, quaternion_yaw, rgb_array,
                                       stamp_ns_of)
from ros_nodes.convert_world import route_of
from ros_nodes.foxglove_view import (BASE_FRAME, DEFAULT_HOST, DEFAULT_PORT, LIDAR_FRAME, FoxgloveView,
                                     sensor_mounts)
from ros_nodes.graph import announce_ready, spin_main, subscribe
from ros_nodes.scenario_params import declare_scenario_parameters, scenario_from_params


class FoxgloveNode(Node):
    def __init__(self) -> None:
        super().__init__("foxglove")
        host = str(self.declare_parameter("host", DEFAULT_HOST).value)
        port = int(self.declare_parameter("port", DEFAULT_PORT).value)
        scenario = scenario_from_params(declare_scenario_parameters(self))
        # Only names, types and QoS are read from the table: the rate (dt) does not matter.
        table = {t.name: t for t in topics.topic_table(scenario.sensors, 0.05)}
        cameras = [c.name for c in scenario.sensors.cameras if "rgb" in c.kinds]
        perception = {t.name: t for t in topics.perception_topics(scenario.sensors, 0.05)}
        overlays = [c for c in cameras if topics.overlay_topic(c) in perception]
        obstacles = topics.OBSTACLES in perception
        try:
            self.view = FoxgloveView(host, port, cameras, lidar=topics.LIDAR in table, perception_cameras=overlays,
                                     obstacles=obstacles)
        except RuntimeError as exc:  # the SDK's FoxgloveError: port in use, bad host
            raise ValueError(f"cannot serve on {host}:{port}: {exc} (choose another with -p port:=N)") from None
        self.view.set_mounts(sensor_mounts(scenario.sensors))
        self.intrinsics: dict[str, object] = {}
        for camera in cameras:
            subscribe(self, table[topics.camera_image_topic(camera, "rgb")],
                      lambda msg, camera=camera: self._on_image(camera, msg))
            subscribe(self, table[topics.camera_info_topic(camera, "rgb")],
                      lambda msg, camera=camera: self._on_camera_info(camera, msg))
        if topics.LIDAR in table:
            subscribe(self, table[topics.LIDAR], self._on_cloud)
        for camera in overlays:
            subscribe(self, perception[topics.overlay_topic(camera)],
                      lambda msg, camera=camera: self._on_overlay(camera, msg))
        if obstacles:
            subscribe(self, perception[topics.OBSTACLES], self._on_obstacles)
        subscribe(self, table[topics.ODOMETRY], self._on_odometry)
        subscribe(self, table[topics.ROUTE], self._on_route)
        self._ready_pub = announce_ready(self)
        self.get_logger().info(f"Foxglove live view on {self.view.url} (cameras: {', '.join(cameras) or 'none'}; "
                               f"LiDAR: {'yes' if topics.LIDAR in table else 'no'}; perception overlays: "
                               f"{', '.join(overlays) or 'none'}; obstacles: {'yes' if obstacles else 'no'})")

    def _on_image(self, camera: str, msg) -> None:
        topic = topics.camera_image_topic(camera, "rgb")
        with self._skipping_bad(topic, msg):
            self.view.camera(camera, rgb_array(msg), self.intrinsics.get(camera), stamp_ns_of(msg.header.stamp),
                             msg.header.frame_id or None)

    def _on_camera_info(self, camera: str, msg) -> None:
        with self._skipping_bad(topics.camera_info_topic(camera, "rgb"), msg):
            self.intrinsics[camera] = intrinsics_of(msg)

    def _on_cloud(self, msg) -> None:
        with self._skipping_bad(topics.LIDAR, msg):
            self.view.lidar(cloud_points(msg), stamp_ns_of(msg.header.stamp), msg.header.frame_id or LIDAR_FRAME)

    def _on_overlay(self, camera: str, msg) -> None:
        with self._skipping_bad(topics.overlay_topic(camera), msg):
            self.view.perception_image(camera, rgb_array(msg), stamp_ns_of(msg.header.stamp),
                                       msg.header.frame_id or None)

    def _on_obstacles(self, msg) -> None:
        with self._skipping_bad(topics.OBSTACLES, msg):
            self.view.obstacles(obstacles_of(msg), stamp_ns_of(msg.header.stamp), msg.header.frame_id or BASE_FRAME)

    def _on_odometry(self, msg) -> None:
        with self._skipping_bad(topics.ODOMETRY, msg):
            position, yaw = msg.pose.pose.position, quaternion_yaw(msg.pose.pose.orientation)
            if not all(math.isfinite(v) for v in (position.x, position.y, position.z, yaw)):
                raise MessageError(f"Odometry pose has a NaN or infinite value: {position}")
            self.view.ego_pose(position.x, position.y, yaw, stamp_ns_of(msg.header.stamp), position.z)

    def _on_route(self, msg) -> None:
        with self._skipping_bad(topics.ROUTE, msg):
            route = route_of(msg)
            self.view.route([(w.x_m, w.y_m) for w in route.waypoints], stamp_ns_of(msg.header.stamp))

    @contextmanager
    def _skipping_bad(self, topic: str, msg) -> Iterator[None]:
        """One bad message is logged with its topic and stamp, not worth stopping the view for."""
        try:
            yield
        except MessageError as exc:
            self.get_logger().error(f"{topic} at t={stamp_ns_of(msg.header.stamp) * 1e-9:.2f} s: {exc}; skipped")

    def close(self) -> None:
        self.view.close()


def main(args: list[str] | None = None) -> int:
    return spin_main("foxglove", FoxgloveNode, args)


if __name__ == "__main__":
    sys.exit(main())
