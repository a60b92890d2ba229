"""Perception outputs (schema ObjectDetection, Obstacle) <-> drivestack_msgs.

Detections are vision_msgs-shaped ``Detection2DArray`` (one hypothesis: the class name
and its score); LiDAR obstacles are ``ObstacleArray`` in base_link. Lanes use the
ground truth's ``LaneArray`` (ros_nodes.convert_labels), with the model's score.
"""

from __future__ import annotations

import math

import numpy as np

from drivestack.schema import ObjectDetection, Obstacle
from ros_nodes.convert_sensors import MessageError, header, msg_class, point, quaternion_yaw, vector3, yaw_quaternion


def detections_msg(detections: tuple[ObjectDetection, ...] | list[ObjectDetection], stamp_ns: int, frame_id: str):
    hdr = header(stamp_ns, frame_id)
    point2d, pose2d = msg_class("drivestack_msgs/msg/Point2D"), msg_class("drivestack_msgs/msg/Pose2D")
    pose = msg_class("geometry_msgs/msg/PoseWithCovariance")(
        pose=msg_class("geometry_msgs/msg/Pose")(position=point(0, 0, 0), orientation=yaw_quaternion(0.0)),
        covariance=np.zeros(36))
    out = []
    for k, d in enumerate(detections):
        hypothesis = msg_class("drivestack_msgs/msg/ObjectHypothesisWithPose")(
            hypothesis=msg_class("drivestack_msgs/msg/ObjectHypothesis")(class_id=d.label, score=d.score), pose=pose)
        bbox = msg_class("drivestack_msgs/msg/BoundingBox2D")(
            center=pose2d(position=point2d(x=(d.u_min_px + d.u_max_px) / 2, y=(d.v_min_px + d.v_max_px) / 2),
                          theta=0.0),
            size_x=d.u_max_px - d.u_min_px, size_y=d.v_max_px - d.v_min_px)
        out.append(msg_class("drivestack_msgs/msg/Detection2D")(header=hdr, results=[hypothesis], bbox=bbox,
                                                                id=str(k)))
    return msg_class("drivestack_msgs/msg/Detection2DArray")(header=hdr, detections=out)


def detections_of(msg, camera: str) -> tuple[ObjectDetection, ...]:
    out = []
    for d in msg.detections:
        if not d.results:
            raise MessageError(f"detection {d.id!r} has no class hypothesis")
        box = d.bbox
        cu, cv, su, sv = box.center.position.x, box.center.position.y, box.size_x, box.size_y
        if not all(math.isfinite(v) for v in (cu, cv, su, sv, d.results[0].hypothesis.score)) or su < 0 or sv < 0:
            raise MessageError(f"detection {d.id!r}: centre ({cu}, {cv}) size ({su}, {sv})")
        hyp = d.results[0].hypothesis
        out.append(ObjectDetection(camera, hyp.class_id, float(hyp.score), cu - su / 2, cv - sv / 2, cu + su / 2,
                                   cv + sv / 2))
    return tuple(out)


def obstacles_msg(obstacles: list[Obstacle] | tuple[Obstacle, ...], stamp_ns: int):
    make = msg_class("drivestack_msgs/msg/Obstacle")
    pose = msg_class("geometry_msgs/msg/Pose")
    out = [make(id=str(o.obstacle_id), class_id="", score=1.0,
                pose=pose(position=point(o.x_m, o.y_m, o.z_m), orientation=yaw_quaternion(o.yaw_rad)),
                size=vector3(o.length_m, o.width_m, o.height_m), velocity=vector3(0.0, 0.0, 0.0),
                point_count=o.point_count) for o in obstacles]
    return msg_class("drivestack_msgs/msg/ObstacleArray")(header=header(stamp_ns, "base_link"), obstacles=out)


def obstacles_of(msg) -> tuple[Obstacle, ...]:
    out = []
    for o in msg.obstacles:
        p, s = o.pose.position, o.size
        values = (p.x, p.y, p.z, s.x, s.y, s.z)
        if not all(math.isfinite(v) for v in values):
            raise MessageError(f"obstacle {o.id!r} has a NaN or infinite pose or size")
        out.append(Obstacle(int(o.id) if o.id.isdigit() else len(out), p.x, p.y, p.z,
                            quaternion_yaw(o.pose.orientation), s.x, s.y, s.z, int(o.point_count)))
    return tuple(out)
