"""Ground-truth labels (schema Box2D, Box3D, LaneBoundary) <-> drivestack_msgs.

Boxes are vision_msgs-shaped Detection2D/3D (``id`` = instance id, one hypothesis with
the object class and score 1) wrapped with what only ground truth knows: visible
fraction, truncation, light state.
"""

from __future__ import annotations

import math

import numpy as np

from drivestack.schema import Box2D, Box3D, LaneBoundary, ObjectClass, TrafficLightState
from ros_nodes.convert_sensors import MessageError, header, msg_class, point, vector3, yaw_quaternion

LIGHT_NONE = -1


def _hypotheses(object_class: ObjectClass) -> list:
    hypothesis = msg_class("drivestack_msgs/msg/ObjectHypothesis")(class_id=object_class.value, score=1.0)
    pose = msg_class("geometry_msgs/msg/PoseWithCovariance")(
        pose=msg_class("geometry_msgs/msg/Pose")(position=point(0, 0, 0), orientation=yaw_quaternion(0.0)),
        covariance=np.zeros(36))
    return [msg_class("drivestack_msgs/msg/ObjectHypothesisWithPose")(hypothesis=hypothesis, pose=pose)]


def _light(state: TrafficLightState | None) -> int:
    return LIGHT_NONE if state is None else int(state)


def _light_state(value: int) -> TrafficLightState | None:
    return None if value == LIGHT_NONE else TrafficLightState(value)


def _object_class(detection) -> ObjectClass:
    if not detection.results:
        raise MessageError(f"detection {detection.id!r} has no class hypothesis")
    try:
        return ObjectClass(detection.results[0].hypothesis.class_id)
    except ValueError as exc:
        raise MessageError(f"detection {detection.id!r}: {exc}") from exc


def boxes_2d_msg(boxes: tuple[Box2D, ...], stamp_ns: int, frame_id: str):
    hdr = header(stamp_ns, frame_id)
    point2d, pose2d = msg_class("drivestack_msgs/msg/Point2D"), msg_class("drivestack_msgs/msg/Pose2D")
    labelled = msg_class("drivestack_msgs/msg/LabeledBox2D")
    out = []
    for b in boxes:
        bbox = msg_class("drivestack_msgs/msg/BoundingBox2D")(
            center=pose2d(position=point2d(x=(b.u_min_px + b.u_max_px) / 2, y=(b.v_min_px + b.v_max_px) / 2),
                          theta=0.0),
            size_x=b.u_max_px - b.u_min_px, size_y=b.v_max_px - b.v_min_px)
        detection = msg_class("drivestack_msgs/msg/Detection2D")(header=hdr, results=_hypotheses(b.object_class),
                                                                 bbox=bbox, id=str(b.instance_id))
        out.append(labelled(detection=detection, visible_fraction=b.visible_fraction, truncation=b.truncation,
                            # -1 (no instance pass to count them) does not fit the uint32: 0.
                            distance_m=b.distance_m, visible_pixels=max(b.visible_pixels, 0),
                            light_state=_light(b.light_state)))
    return msg_class("drivestack_msgs/msg/LabeledBox2DArray")(header=hdr, boxes=out)


def boxes_2d(msg, camera: str) -> tuple[Box2D, ...]:
    out = []
    for b in msg.boxes:
        box = b.detection.bbox
        cu, cv, su, sv = box.center.position.x, box.center.position.y, box.size_x, box.size_y
        if not all(math.isfinite(v) for v in (cu, cv, su, sv)) or su < 0 or sv < 0:
            raise MessageError(f"2D box {b.detection.id!r}: centre ({cu}, {cv}) size ({su}, {sv})")
        out.append(Box2D(camera, int(b.detection.id), _object_class(b.detection), cu - su / 2, cv - sv / 2,
                         cu + su / 2, cv + sv / 2, float(b.visible_fraction), float(b.truncation),
                         float(b.distance_m), int(b.visible_pixels), _light_state(b.light_state)))
    return tuple(out)


def boxes_3d_msg(boxes: tuple[Box3D, ...], stamp_ns: int):
    hdr = header(stamp_ns, "base_link")
    labelled = msg_class("drivestack_msgs/msg/LabeledBox3D")
    out = []
    for b in boxes:
        bbox = msg_class("drivestack_msgs/msg/BoundingBox3D")(
            center=msg_class("geometry_msgs/msg/Pose")(position=point(b.x_m, b.y_m, b.z_m),
                                                       orientation=yaw_quaternion(b.yaw_rad)),
            size=vector3(b.length_m, b.width_m, b.height_m))
        detection = msg_class("drivestack_msgs/msg/Detection3D")(header=hdr, results=_hypotheses(b.object_class),
                                                                 bbox=bbox, id=str(b.instance_id))
        out.append(labelled(detection=detection, yaw_rad=b.yaw_rad, speed_mps=b.speed_mps,
                            light_state=_light(b.light_state)))
    return msg_class("drivestack_msgs/msg/LabeledBox3DArray")(header=hdr, boxes=out)


def boxes_3d(msg) -> tuple[Box3D, ...]:
    out = []
    for b in msg.boxes:
        c, s = b.detection.bbox.center.position, b.detection.bbox.size
        values = (c.x, c.y, c.z, s.x, s.y, s.z, b.yaw_rad)
        if not all(math.isfinite(v) for v in values):
            raise MessageError(f"3D box {b.detection.id!r} has a NaN or infinite value: {values}")
        out.append(Box3D(int(b.detection.id), _object_class(b.detection), c.x, c.y, c.z, b.yaw_rad, s.x, s.y, s.z,
                         float(b.speed_mps), _light_state(b.light_state)))
    return tuple(out)


def lanes_msg(lanes: tuple[LaneBoundary, ...], stamp_ns: int):
    image_points = msg_class("drivestack_msgs/msg/LaneImagePoints")
    lane = msg_class("drivestack_msgs/msg/Lane")
    out = []
    for boundary in lanes:
        projections = [image_points(camera=name, u_px=np.ascontiguousarray(px[:, 0], np.float32),
                                    v_px=np.ascontiguousarray(px[:, 1], np.float32))
                       for name, px in sorted(boundary.image_px.items())]
        out.append(lane(position=boundary.position, marking=boundary.marking, score=1.0,
                        points=[point(*p) for p in boundary.points_m], image=projections))
    return msg_class("drivestack_msgs/msg/LaneArray")(header=header(stamp_ns, "base_link"), lanes=out)


def lane_boundaries(msg) -> tuple[LaneBoundary, ...]:
    out = []
    for lane in msg.lanes:
        points = np.array([(p.x, p.y, p.z) for p in lane.points], np.float64).reshape(-1, 3)
        if not np.isfinite(points).all():
            raise MessageError(f"lane {lane.position} has a NaN or infinite point")
        image = {}
        for projection in lane.image:
            if len(projection.u_px) != len(projection.v_px):
                raise MessageError(f"lane {lane.position} in {projection.camera}: {len(projection.u_px)} u "
                                   f"and {len(projection.v_px)} v values")
            image[projection.camera] = np.column_stack([projection.u_px, projection.v_px]).astype(np.float64)
        out.append(LaneBoundary(int(lane.position), lane.marking, points, image))
    return tuple(out)
