"""lidar_obstacles: LiDAR obstacle detection (Open3D) as a ROS 2 node.

Subscribes to the LiDAR point cloud and publishes, per scan, the obstacles as upright
boxes in base_link, stamped with the scan's stamp. The sensor's mount comes from the
scenario's sensor suite (the launch arguments every node shares). Points with NaN or
inf are dropped by the detector; a cloud that cannot be decoded is logged and skipped.

Run: ``python -m ros_nodes.lidar_obstacles_node --ros-args -p scenario:=default -p sensors:=full``
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from ros_nodes import topics
from ros_nodes.convert_perception import obstacles_msg
from ros_nodes.convert_sensors import MessageError, cloud_points, stamp_ns_of
from ros_nodes.graph import Publishers, announce_ready, spin_main, subscribe
from ros_nodes.scenario_params import declare_scenario_parameters, scenario_from_params
from ros_nodes.topics import Qos, Topic


class LidarObstaclesNode(Node):
    def __init__(self) -> None:
        super().__init__("lidar_obstacles")
        from perception.lidar_obstacles import LidarObstacleDetector, SensorMount, config_for_lidar
        scenario = scenario_from_params(declare_scenario_parameters(self))
        lidar = scenario.sensors.lidar
        if lidar is None:
            raise ValueError(f"scenario {scenario.name} mounts no LiDAR (choose sensors:=full or camera_lidar)")
        self.mount = SensorMount(lidar.x_m, lidar.y_m, lidar.z_m, lidar.yaw_rad)
        self.detector = LidarObstacleDetector(config_for_lidar(lidar))
        self.pubs = Publishers(self, [topics.OBSTACLES_TOPIC])
        subscribe(self, Topic(topics.LIDAR, "sensor_msgs/msg/PointCloud2", Qos.SENSOR, None), self._on_cloud)
        self._ready_pub = announce_ready(self)

    def _on_cloud(self, msg) -> None:
        stamp = stamp_ns_of(msg.header.stamp)
        try:
            points = cloud_points(msg)
            obstacles = self.detector.detect(points, self.mount)
        except (MessageError, ValueError) as exc:
            self.get_logger().error(f"scan t={stamp * 1e-9:.2f} s skipped: {exc}")
            return
        self.pubs.publish(topics.OBSTACLES, obstacles_msg(obstacles, stamp))


def main(args: list[str] | None = None) -> int:
    return spin_main("lidar_obstacles", LidarObstaclesNode, args)


if __name__ == "__main__":
    sys.exit(main())
