"""One simulator observation -> the messages of its frame, topic by topic.

Plain Python (no rclpy): the bridge node publishes these, and the same list is what a
recorded frame holds, so tests can check a frame without starting a graph.
"""

from __future__ import annotations

from drivestack.schema import Observation
from ros_nodes import topics
from ros_nodes.convert_labels import boxes_2d_msg, boxes_3d_msg, lanes_msg
from ros_nodes.convert_sensors import (camera_info_msg, cloud_msg, float32_msg, image_msg, imu_msg, navsat_msg,
                                       odometry_msg)
from ros_nodes.convert_world import (actors_msg, collision_msgs, ego_state_msg, lane_invasion_msg,
                                     traffic_lights_msg)
from sim.sensors.suite import SensorSuite

_CAMERA_ARRAYS = {"rgb": "rgb", "depth": "depth_m", "semantic": "semantic", "instance": "instance"}


def observation_messages(obs: Observation, suite: SensorSuite) -> list[tuple[str, object]]:
    """(topic, message) pairs for every sensor and ground-truth topic of ``obs``."""
    t = obs.stamp_ns
    out: list[tuple[str, object]] = [
        (topics.ODOMETRY, odometry_msg(obs.ego, t)),
        (topics.SPEEDOMETER, float32_msg(obs.ego.speed_mps)),
        (topics.EGO_STATE, ego_state_msg(obs.ego, obs.ego_lane_segment_id)),
        (topics.ACTORS, actors_msg(obs.actors, t)),
        (topics.TRAFFIC_LIGHTS, traffic_lights_msg(obs.traffic_lights, t)),
    ]
    if obs.imu is not None:
        out.append((topics.IMU, imu_msg(obs.imu)))
    if obs.gnss is not None:
        out.append((topics.GNSS, navsat_msg(obs.gnss)))
    out.extend((topics.COLLISION, m) for m in collision_msgs(obs.collisions, t))
    if obs.lane_invasions:
        out.append((topics.LANE_INVASION, lane_invasion_msg(obs.lane_invasions, t)))
    if obs.lidar is not None:
        out.append((topics.LIDAR, cloud_msg(obs.lidar.points, t, obs.lidar.frame_id)))
    for config in suite.cameras:
        image = obs.camera(config.name)
        frame = topics.optical_frame(config.name)
        height, width = image.shape
        for kind in config.kinds:
            encoding = topics.CAMERA_PASSES[kind][1]
            pixels = getattr(image, _CAMERA_ARRAYS[kind])
            out.append((topics.camera_image_topic(config.name, kind), image_msg(pixels, encoding, t, frame)))
            out.append((topics.camera_info_topic(config.name, kind),
                        camera_info_msg(image.intrinsics, width, height, t, frame)))
    if obs.ground_truth is not None:
        gt = obs.ground_truth
        out.append((topics.BOXES_3D, boxes_3d_msg(gt.boxes_3d, t)))
        out.append((topics.LANES, lanes_msg(gt.lanes, t)))
        for config in suite.cameras:
            boxes = tuple(b for b in gt.boxes_2d if b.camera == config.name)
            out.append((topics.boxes_2d_topic(config.name),
                        boxes_2d_msg(boxes, t, topics.optical_frame(config.name))))
    return out
