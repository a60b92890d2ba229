"""Labels on CARLA: 3D boxes from the server's actor bounding boxes, then the built-in
simulator's own 2D projection (checked against the instance image) and lane boundaries
(from the map's lanes), so both backends label a frame the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence

import carla
import numpy as np

from drivestack.schema import (
    ActorKind, Box3D, CameraImage, EgoState, GroundTruth, ObjectClass, TrafficLight, instance_id_of_actor,
    instance_id_of_light)
from sim import carla_frames
from sim.road_map import RoadMap
from sim.sensors.camera_model import CameraConfig
from sim.sensors.ground_truth import boxes_2d, lane_boundaries, map_to_ego

MAX_DISTANCE_M = 80.0  # as the built-in labels
_CLASS = {ActorKind.VEHICLE: ObjectClass.VEHICLE, ActorKind.PEDESTRIAN: ObjectClass.PEDESTRIAN}


def _box(instance_id: int, object_class: ObjectClass, ego: EgoState, ego_ground_z_m: float,
         centre: carla.Location, yaw_deg: float, extent: carla.Vector3D, speed_mps: float = 0.0,
         light_state=None) -> Box3D | None:
    x_m, y_m, z_m = carla_frames.location_to_xyz(centre)
    x, y = map_to_ego(ego, x_m, y_m)
    if math.hypot(x, y) > MAX_DISTANCE_M:
        return None
    yaw = carla_frames.wrap_angle(carla_frames.yaw_deg_to_rad(yaw_deg) - ego.yaw_rad)
    return Box3D(instance_id, object_class, float(x), float(y), z_m - ego_ground_z_m, yaw, 2.0 * extent.x,
                 2.0 * extent.y, 2.0 * extent.z, speed_mps, light_state)


def carla_boxes_3d(ego: EgoState, ego_transform: carla.Transform,
                   others: Sequence[tuple[int, ActorKind, carla.Transform, carla.BoundingBox]],
                   speeds: dict[int, float], lights: Sequence[TrafficLight],
                   light_boxes: Sequence[tuple[int, carla.BoundingBox]]) -> tuple[Box3D, ...]:
    """Vehicles, pedestrians and lamp housings within 80 m, in ``base_link``.

    An actor's box is its ``bounding_box`` (relative to the actor) placed with its
    transform; a traffic light's housings come in world coordinates
    (``TrafficLight.get_light_boxes``).
    """
    ground_z = ego_transform.location.z
    boxes = []
    for actor_id, kind, transform, bbox in others:
        object_class = _CLASS.get(kind)
        if object_class is None:
            continue
        centre = transform.transform(bbox.location)
        box = _box(instance_id_of_actor(actor_id), object_class, ego, ground_z, centre,
                   transform.rotation.yaw + bbox.rotation.yaw, bbox.extent, speeds.get(actor_id, 0.0))
        if box is not None:
            boxes.append(box)
    state_by_light = {light.light_id: light.state for light in lights}
    for light_id, bbox in light_boxes:
        box = _box(instance_id_of_light(light_id), ObjectClass.TRAFFIC_LIGHT, ego, ground_z, bbox.location,
                   bbox.rotation.yaw, bbox.extent, light_state=state_by_light.get(light_id))
        if box is not None:
            boxes.append(box)
    return tuple(boxes)


def carla_ground_truth(*, ego: EgoState, boxes: Sequence[Box3D], ego_lane_segment_id: int, road_map: RoadMap,
                       cameras: Sequence[CameraConfig], images: Sequence[CameraImage],
                       lane_sequence: Sequence[int]) -> GroundTruth:
    """The frame's labels from its 3D boxes (``carla_boxes_3d``) and decoded images."""
    instance_by_camera = {image.name: image.instance for image in images}
    boxes_in_images = tuple(box for camera in cameras
                            for box in boxes_2d(camera, boxes, instance_by_camera.get(camera.name)))
    lanes = lane_boundaries(road_map, ego, ego_lane_segment_id, cameras, lane_sequence=lane_sequence)
    return GroundTruth(tuple(boxes), boxes_in_images, lanes)


def box_samples(boxes: Sequence[Box3D], per_axis: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A grid of points inside each box (ego frame) and the box's instance id per point.

    CARLA's instance image holds Unreal's object codes, not actor ids; projected into
    the camera, these points tell which code is which box (``match_instance_codes``).
    """
    if not boxes:
        return np.zeros((0, 3)), np.zeros(0, np.int64)
    grid = (np.stack(np.meshgrid(*[np.linspace(-0.4, 0.4, per_axis)] * 3, indexing="ij"), -1).reshape(-1, 3))
    corners = []
    for box in boxes:
        c, s = math.cos(box.yaw_rad), math.sin(box.yaw_rad)
        local = grid * (box.length_m, box.width_m, box.height_m)
        corners.append(np.column_stack([box.x_m + c * local[:, 0] - s * local[:, 1],
                                        box.y_m + s * local[:, 0] + c * local[:, 1], box.z_m + local[:, 2]]))
    labels = np.repeat([b.instance_id for b in boxes], len(grid))
    return np.concatenate(corners), labels
