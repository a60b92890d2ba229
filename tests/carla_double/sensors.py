"""The double's sensors: each tick's measurements, encoded exactly as CARLA 0.9.16 encodes them.

Written from CARLA's documentation and source (Docs/ref_sensors.md, LibCarla and the Unreal
plugin), independently of drivestack's decoders, so that a decoding bug cannot cancel out:

* cameras: BGRA bytes, row-major from the top-left pixel; a pinhole with focal length
  ``f = width / (2 tan(fov / 2))`` whose ray for pixel (u, v) passes through
  (u + 0.5 - width / 2, v + 0.5 - height / 2) on the image plane. Depth is the planar depth
  along the optical axis, ``R + 256 G + 65536 B = round(depth / 1000 m * (2**24 - 1))``;
  semantic puts the CityObjectLabel in R (G = B = 0); instance puts the label in R and the
  hit object's *Unreal* unique id in G (low byte) and B (high byte) -- Tagger.cpp's
  ``GetActorLabelColor`` -- which is not the CARLA actor id (see
  ``FakeCarlaServer.unreal_unique_id``).
* semantic LiDAR: CARLA's scan pattern (``RayCastSemanticLidar``: channels from upper_fov
  down to lower_fov, ``points_per_second * dt / channels`` points per channel sweeping
  ``rotation_frequency * horizontal_fov * dt`` degrees), 24 bytes per hit (float32 x, y, z
  in the sensor's CARLA frame, float32 cos_inc_angle, uint32 object_idx = CARLA actor id or
  0, uint32 object_tag), channel after channel; misses are dropped.
* GNSS: the real ``carla.Map.transform_to_geolocation`` of the sensor's location.
* IMU: the parent's acceleration plus +9.81 m/s^2 up, and its angular velocity in rad/s,
  both in the sensor's frame; compass as ``AInertialMeasurementUnit::ComputeCompass``
  (radians clockwise from north, north being -y).
* collision: one event per contact per frame while the parent's move is blocked.
* lane invasion: an event when the parent's centre enters another lane of the same road
  section, with the real ``carla.LaneMarking`` objects between the two lanes.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import carla
import numpy as np

from . import scene
from .blueprints import atof, atoi, color
from .motion import Contact
from .sensor_data import (CollisionEvent, GnssMeasurement, Image, IMUMeasurement, LaneInvasionEvent,
                          SemanticLidarMeasurement)
from .state import Episode, SensorRecord

GRAVITY_MPS2 = 9.81
WALKER_COLOR = (190, 120, 90)
_LIGHT_DIR = np.array([0.4, -0.3, 1.0]) / np.linalg.norm([0.4, -0.3, 1.0])
LIDAR_POINT = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("cos_inc_angle", "<f4"),
                        ("object_idx", "<u4"), ("object_tag", "<u4")])
Delivery = tuple[Callable[[Any], None], Any, int]  # callback, data, sensor id


def scene_boxes(episode: Episode) -> list[scene.Box]:
    boxes = []
    for record in episode.actors.values():
        if not record.physical or record.spec is None:
            continue
        rgb = color(record.attributes["color"]) if "color" in record.attributes else WALKER_COLOR
        boxes.append(scene.Box.of(record.id, record.spec.semantic_tag, record.unique_id, record.transform,
                                  record.bounding_box, rgb))
    return boxes


def produce(episode: Episode, frame: int, contacts: Sequence[Contact], dt: float,
            stalled: Callable[[SensorRecord], bool]) -> list[Delivery]:
    """Every listening sensor's data for this frame (stalled sensors produce nothing)."""
    deliveries: list[Delivery] = []
    boxes: list[scene.Box] | None = None
    views: dict[tuple[float, ...], scene.RayHits] = {}
    pushes: dict[int, list[tuple[int, np.ndarray]]] = collections.defaultdict(list)
    for c in contacts:
        pushes[c.actor_id].append((c.other_id, c.impulse))
        pushes[c.other_id].append((c.actor_id, -c.impulse))
    t = episode.elapsed_s
    for record in sorted(episode.actors.values(), key=lambda r: r.id):
        if not isinstance(record, SensorRecord) or record.listener is None or record.callback is None:
            continue
        if stalled(record):
            continue
        kind = record.type_id
        data: list[Any] = []
        if kind == "sensor.other.collision":
            for other_id, impulse in pushes.get(record.parent_id or -1, []):
                other = record.listener._client._handle(other_id)
                data.append(CollisionEvent(frame, t, scene.copy_transform(record.transform), other,
                                           scene.vector(impulse)))
        elif kind == "sensor.other.lane_invasion":
            event = _lane_invasion(episode, record, frame)
            if event is not None:
                data.append(event)
        elif _due(record, t):
            if kind.startswith("sensor.camera."):
                boxes = scene_boxes(episode) if boxes is None else boxes
                data.append(_camera(record, boxes, frame, t, views))
            elif kind == "sensor.lidar.ray_cast_semantic":
                boxes = scene_boxes(episode) if boxes is None else boxes
                data.append(_lidar(record, boxes, frame, t, dt))
            elif kind == "sensor.other.gnss":
                data.append(_gnss(episode, record, frame, t))
            elif kind == "sensor.other.imu":
                data.append(_imu(record, frame, t))
        deliveries.extend((record.callback, item, record.id) for item in data)
    return deliveries


def _due(record: SensorRecord, t: float) -> bool:
    if t + 1e-9 < record.next_capture_s:
        return False
    record.next_capture_s = t + atof(record.attributes.get("sensor_tick", "0"))
    return True


@functools.lru_cache(maxsize=16)
def camera_rays(width: int, height: int, fov_deg: float) -> np.ndarray:
    """(height * width, 3) ray directions in the camera's CARLA frame, x = 1 (so t = planar depth)."""
    f = width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    u = (np.arange(width) + 0.5 - width / 2.0) / f
    v = (np.arange(height) + 0.5 - height / 2.0) / f
    uu, vv = np.meshgrid(u, v)
    rays = np.stack([np.ones_like(uu), uu, -vv], axis=-1).reshape(-1, 3)
    rays.setflags(write=False)
    return rays


def _camera(record: SensorRecord, boxes: list[scene.Box], frame: int, t: float,
            views: dict[tuple[float, ...], scene.RayHits]) -> Image:
    width, height = max(atoi(record.attributes["image_size_x"]), 1), max(atoi(record.attributes["image_size_y"]), 1)
    fov = atof(record.attributes["fov"])
    tf = record.transform
    # Cameras of a rig often share a pose and an image size: they see the same rays.
    key = (tf.location.x, tf.location.y, tf.location.z, tf.rotation.pitch, tf.rotation.yaw, tf.rotation.roll,
           width, height, fov)
    if key not in views:
        rot = scene.rotation(tf)
        views[key] = scene.cast_rays(scene.xyz(tf.location), camera_rays(width, height, fov) @ rot.T, boxes, math.inf)
    hits = views[key]
    bgra = np.empty((width * height, 4), dtype=np.uint8)
    bgra[:, 3] = 255
    kind = record.type_id.rsplit(".", 1)[1]
    if kind == "depth":
        depth = np.minimum(hits.t, scene.FAR_PLANE_M)
        code = np.rint(depth / scene.FAR_PLANE_M * (2**24 - 1)).astype(np.uint32)
        bgra[:, 2], bgra[:, 1], bgra[:, 0] = code & 0xFF, (code >> 8) & 0xFF, (code >> 16) & 0xFF
    elif kind == "semantic_segmentation":
        bgra[:, 2], bgra[:, 1], bgra[:, 0] = hits.tag, 0, 0
    elif kind == "instance_segmentation":
        uid = hits.unique_id
        bgra[:, 2], bgra[:, 1], bgra[:, 0] = hits.tag, uid & 0xFF, (uid >> 8) & 0xFF
    else:
        rgb = _shade(hits)
        bgra[:, 2], bgra[:, 1], bgra[:, 0] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return Image(frame, t, scene.copy_transform(record.transform), width, height, fov, bgra.tobytes())


def _shade(hits: scene.RayHits) -> np.ndarray:
    """Plausible colours: lit faces brighter, distant ground fading into haze."""
    lit = np.where(np.isfinite(hits.t), 0.45 + 0.55 * np.clip(hits.normal @ _LIGHT_DIR, 0.0, 1.0), 1.0)
    rgb = hits.color.astype(np.float64) * lit[:, None]
    haze = np.where(np.isfinite(hits.t), 1.0 - np.exp(-np.nan_to_num(hits.t, posinf=0.0) / 400.0), 0.0)
    rgb = rgb * (1.0 - haze[:, None]) + np.array(scene.SKY_COLOR) * haze[:, None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _lidar(record: SensorRecord, boxes: list[scene.Box], frame: int, t: float, dt: float
           ) -> SemanticLidarMeasurement:
    a = record.attributes
    channels = max(atoi(a["channels"]), 1)
    max_range, hfov = atof(a["range"]), atof(a["horizontal_fov"])
    upper, lower = atof(a["upper_fov"]), atof(a["lower_fov"])
    per_channel = int(math.floor(atoi(a["points_per_second"]) * dt / channels + 0.5))
    sweep = atof(a["rotation_frequency"]) * hfov * dt
    step = sweep / per_channel if per_channel else 0.0
    horizontal = np.radians(np.mod(record.lidar_angle_deg + step * np.arange(per_channel), hfov) - hfov / 2.0)
    record.lidar_angle_deg = math.fmod(record.lidar_angle_deg + sweep, hfov) if hfov else 0.0
    vertical = np.radians(upper - np.arange(channels) * ((upper - lower) / (channels - 1) if channels > 1 else 0.0))
    vv, hh = np.meshgrid(vertical, horizontal, indexing="ij")  # channel-major, as CARLA writes them
    local = np.stack([np.cos(vv) * np.cos(hh), np.cos(vv) * np.sin(hh), np.sin(vv)], axis=-1).reshape(-1, 3)
    rot = scene.rotation(record.transform)
    world_dirs = local @ rot.T
    hits = scene.cast_rays(scene.xyz(record.transform.location), world_dirs, boxes, max_range)
    keep = np.isfinite(hits.t)
    points = np.zeros(int(keep.sum()), dtype=LIDAR_POINT)
    xyz = local[keep] * hits.t[keep, None]
    points["x"], points["y"], points["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    points["cos_inc_angle"] = -np.einsum("ij,ij->i", world_dirs[keep], hits.normal[keep])
    points["object_idx"], points["object_tag"] = hits.actor_id[keep], hits.tag[keep]
    return SemanticLidarMeasurement(frame, t, scene.copy_transform(record.transform), channels, points.tobytes())


def _gnss(episode: Episode, record: SensorRecord, frame: int, t: float) -> GnssMeasurement:
    geo = episode.carla_map.transform_to_geolocation(record.transform.location)
    a, rng = record.attributes, record.rng
    assert rng is not None

    def noisy(value: float, q: str) -> float:
        stddev = atof(a[f"noise_{q}_stddev"])
        return value + atof(a[f"noise_{q}_bias"]) + (float(rng.normal(0.0, stddev)) if stddev > 0 else 0.0)

    return GnssMeasurement(frame, t, scene.copy_transform(record.transform), noisy(geo.latitude, "lat"),
                           noisy(geo.longitude, "lon"), noisy(geo.altitude, "alt"))


def _imu(record: SensorRecord, frame: int, t: float) -> IMUMeasurement:
    a, rng = record.attributes, record.rng
    assert rng is not None
    rot = scene.rotation(record.transform)
    accel = rot.T @ (record.acceleration + np.array([0.0, 0.0, GRAVITY_MPS2]))
    gyro = rot.T @ np.radians(record.angular_velocity_dps)
    for i, axis in enumerate("xyz"):
        accel_sd, gyro_sd = atof(a[f"noise_accel_stddev_{axis}"]), atof(a[f"noise_gyro_stddev_{axis}"])
        accel[i] += rng.normal(0.0, accel_sd) if accel_sd > 0 else 0.0
        gyro[i] += atof(a[f"noise_gyro_bias_{axis}"]) + (rng.normal(0.0, gyro_sd) if gyro_sd > 0 else 0.0)
    return IMUMeasurement(frame, t, scene.copy_transform(record.transform), scene.vector(accel),
                          scene.vector(gyro), compass(rot[:, 0]))


def compass(forward: np.ndarray) -> float:
    """AInertialMeasurementUnit::ComputeCompass: angle from north (-y), clockwise, in [0, 2 pi)."""
    norm = math.hypot(forward[0], forward[1])
    if norm < 1e-9:
        return 0.0
    fx, fy = forward[0] / norm, forward[1] / norm
    dot = -fy  # north is (0, -1, 0)
    if dot >= 1.0:
        return 0.0
    angle = math.acos(max(dot, -1.0))
    return 2.0 * math.pi - angle if fx < 0.0 else angle  # cross(north, forward).z = fx


def _lane_invasion(episode: Episode, record: SensorRecord, frame: int) -> LaneInvasionEvent | None:
    parent = episode.actors.get(record.parent_id or -1)
    if parent is None:
        return None
    wp = episode.carla_map.get_waypoint(parent.transform.location)
    previous, record.previous_waypoint = record.previous_waypoint, wp
    if previous is None or wp is None or (previous.road_id, previous.section_id) != (wp.road_id, wp.section_id) \
            or previous.lane_id == wp.lane_id:
        return None
    markings = [m for m in crossed_markings(previous, wp.lane_id) if m is not None]
    if not markings:
        return None
    return LaneInvasionEvent(frame, episode.elapsed_s, scene.copy_transform(record.transform), markings)


def crossed_markings(start: carla.Waypoint, target_lane_id: int) -> list[carla.LaneMarking | None]:
    """Markings between ``start``'s lane and the lane ``target_lane_id`` of the same section."""
    queue: collections.deque[tuple[carla.Waypoint, list[carla.LaneMarking | None]]] = collections.deque(
        [(start, [])])
    seen = {start.lane_id}
    while queue:
        wp, crossed = queue.popleft()
        if wp.lane_id == target_lane_id:
            return crossed
        for nxt, marking in ((wp.get_left_lane(), wp.left_lane_marking), (wp.get_right_lane(), wp.right_lane_marking)):
            if nxt is not None and nxt.lane_id not in seen and len(crossed) < 6:
                seen.add(nxt.lane_id)
                queue.append((nxt, crossed + [marking]))
    return []
