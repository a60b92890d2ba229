"""A rotating ray-cast LiDAR, modelled on CARLA's ``sensor.lidar.ray_cast``.

Pure numpy, vectorised over rays and boxes. The attributes and their semantics are
CARLA's (``FLidarDescription``, ``ARayCastSemanticLidar::SimulateLidar``):

- ``channels`` lasers at elevations spread evenly from ``upper_fov_deg`` down to
  ``lower_fov_deg`` (one laser: ``upper_fov_deg``);
- each step every laser fires ``round(points_per_second * dt / channels)`` rays (half
  away from zero), evenly over the window the head turns through in that step,
  ``rotation_frequency_hz * horizontal_fov_deg * dt`` degrees; the next step starts
  where this one stopped;
- the head turns clockwise seen from above (like CARLA and real spinning LiDARs) and
  the sweep angle ``a`` in [0, horizontal_fov) maps to the azimuth
  ``horizontal_fov / 2 - a`` (REP 103, counter-clockwise from x): a full turn starts
  behind the sensor;
- a ray returns the nearest hit within ``range_m``; a miss returns nothing;
- intensity is ``exp(-atmosphere_attenuation_rate * distance)``, computed before the
  noise; ``dropoff_general_rate`` drops that fraction of rays at random before
  tracing; ``noise_stddev_m`` moves each point along its ray by Gaussian noise.

CARLA's intensity-based dropoff (``dropoff_intensity_limit``,
``dropoff_zero_intensity``) is not modelled. Unlike CARLA's ``ray_cast`` (x, y, z,
intensity) the points also carry the semantic tag of what they hit, as CARLA's
``ray_cast_semantic`` does.

The scene is the ground plane plus upright oriented boxes (:class:`OrientedBoxes`):
actors from their ``ActorState``, and static geometry (buildings, poles) appended as
more boxes. Frames: the map frame is the world frame; points come out in the sensor
frame (REP 103 axes turned by the mount yaw, origin at the sensor).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from drivestack.schema import SEMANTIC_ID, ActorKind, ActorState

logger = logging.getLogger(__name__)

# Columns of the (N, 5) float32 point array ``RayCastLidar.scan`` returns.
POINT_FIELDS = ("x_m", "y_m", "z_m", "intensity", "semantic_tag")

# Semantic tag of each actor kind (CARLA's numbering, the schema's table).
KIND_SEMANTIC_TAG = {
    ActorKind.VEHICLE: SEMANTIC_ID["car"],
    ActorKind.PEDESTRIAN: SEMANTIC_ID["pedestrian"],
    ActorKind.STATIC: SEMANTIC_ID["static"],
}

# Actor id of static geometry; ``exclude_actor_id`` never removes it.
STATIC_ACTOR_ID = -1

GroundTag = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Direction components closer to zero than this are nudged to it so the slab test never
# divides by zero; 1e-12 of a metre over the range of a LiDAR is no error at all.
_MIN_DIRECTION = 1e-12
# The angular prefilter is widened by this much so rounding never loses a grazing hit.
_PREFILTER_MARGIN_RAD = 1e-9


@dataclass(frozen=True)
class LidarConfig:
    """Attributes of ``sensor.lidar.ray_cast`` (CARLA's names, units in ours) and the mount.

    The mount pose is relative to the vehicle's box centre on the ground; the sensor
    frame is REP 103 turned by ``yaw_rad``. CARLA's defaults differ in places (10 Hz
    rotation, 0.45 general dropoff); 20 Hz is one full turn per 20 Hz simulator step.
    """

    channels: int = 32
    range_m: float = 50.0
    points_per_second: int = 56000
    rotation_frequency_hz: float = 20.0
    upper_fov_deg: float = 10.0
    lower_fov_deg: float = -30.0
    horizontal_fov_deg: float = 360.0
    atmosphere_attenuation_rate: float = 0.004
    dropoff_general_rate: float = 0.0
    noise_stddev_m: float = 0.0
    x_m: float = 0.0
    y_m: float = 0.0
    z_m: float = 2.4
    yaw_rad: float = 0.0

    def __post_init__(self) -> None:
        for name in ("channels", "points_per_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"LidarConfig.{name}={value!r} must be an integer")
        for spec in fields(self):
            value = getattr(self, spec.name)
            if not math.isfinite(value):
                raise ValueError(f"LidarConfig.{spec.name} is {value}; it must be a finite number")
        if not 1 <= self.channels <= 128:
            raise ValueError(f"LidarConfig.channels={self.channels} is outside [1, 128]")
        if self.range_m <= 0:
            raise ValueError(f"LidarConfig.range_m={self.range_m} must be positive")
        if self.points_per_second < self.channels:
            raise ValueError(f"LidarConfig.points_per_second={self.points_per_second} is fewer "
                             f"than channels={self.channels}")
        if self.rotation_frequency_hz <= 0:
            raise ValueError(f"LidarConfig.rotation_frequency_hz={self.rotation_frequency_hz} "
                             "must be positive")
        if not -90 <= self.lower_fov_deg < self.upper_fov_deg <= 90:
            raise ValueError(f"LidarConfig.lower_fov_deg={self.lower_fov_deg} and upper_fov_deg="
                             f"{self.upper_fov_deg} must satisfy -90 <= lower < upper <= 90")
        if not 0 < self.horizontal_fov_deg <= 360:
            raise ValueError(f"LidarConfig.horizontal_fov_deg={self.horizontal_fov_deg} is "
                             "outside (0, 360]")
        for name in ("atmosphere_attenuation_rate", "dropoff_general_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"LidarConfig.{name}={value} is outside [0, 1]")
        if self.noise_stddev_m < 0:
            raise ValueError(f"LidarConfig.noise_stddev_m={self.noise_stddev_m} is negative")

    def rays_per_channel(self, dt_s: float) -> int:
        """Rays each laser fires in a step of ``dt_s`` (CARLA rounds half away from zero)."""
        return int(math.floor(self.points_per_second * dt_s / self.channels + 0.5))

    def elevations_rad(self) -> np.ndarray:
        """Laser elevations, top laser first (CARLA's channel order)."""
        if self.channels == 1:
            return np.radians([self.upper_fov_deg])
        return np.radians(np.linspace(self.upper_fov_deg, self.lower_fov_deg, self.channels))


def mount_pose_world(config: LidarConfig, vehicle_x_m: float, vehicle_y_m: float,
                     vehicle_yaw_rad: float, ground_z_m: float = 0.0) -> tuple[float, float, float, float]:
    """The sensor's world pose ``(x, y, z, yaw)`` on a vehicle whose box centre is given."""
    cos_yaw, sin_yaw = math.cos(vehicle_yaw_rad), math.sin(vehicle_yaw_rad)
    return (vehicle_x_m + config.x_m * cos_yaw - config.y_m * sin_yaw,
            vehicle_y_m + config.x_m * sin_yaw + config.y_m * cos_yaw,
            ground_z_m + config.z_m,
            vehicle_yaw_rad + config.yaw_rad)


def _as_1d(value, dtype) -> np.ndarray:
    return np.atleast_1d(np.asarray(value, dtype=dtype))


@dataclass(frozen=True)
class OrientedBoxes:
    """Upright boxes the rays can hit, one per element of equally long 1-D arrays.

    A box has its footprint centre at ``(centre_x_m, centre_y_m)``, spans z in
    ``[base_z_m, base_z_m + height_m]``, and its length runs along ``yaw_rad``.
    Scalars broadcast, so static geometry can be given with one tag for all boxes;
    ``actor_id`` is ``STATIC_ACTOR_ID`` unless the box is an actor's.
    """

    centre_x_m: np.ndarray
    centre_y_m: np.ndarray
    yaw_rad: np.ndarray
    length_m: np.ndarray
    width_m: np.ndarray
    height_m: np.ndarray
    semantic_tag: np.ndarray
    base_z_m: np.ndarray = field(default_factory=lambda: np.zeros(1))
    actor_id: np.ndarray = field(default_factory=lambda: np.full(1, STATIC_ACTOR_ID))

    def __post_init__(self) -> None:
        float_names = ("centre_x_m", "centre_y_m", "yaw_rad", "length_m", "width_m", "height_m",
                       "base_z_m")
        arrays = [_as_1d(getattr(self, name), float) for name in float_names]
        arrays += [_as_1d(self.semantic_tag, np.int64), _as_1d(self.actor_id, np.int64)]
        try:
            arrays = np.broadcast_arrays(*arrays)
        except ValueError as error:
            raise ValueError(f"OrientedBoxes: array lengths do not match ({error})") from None
        for name, array in zip((*float_names, "semantic_tag", "actor_id"), arrays):
            if array.ndim != 1:
                raise ValueError(f"OrientedBoxes.{name} must be 1-D, got shape {array.shape}")
            if not np.isfinite(array).all():
                raise ValueError(f"OrientedBoxes.{name} has a non-finite value")
            object.__setattr__(self, name, np.ascontiguousarray(array))
        for name in ("length_m", "width_m", "height_m"):
            if (getattr(self, name) < 0).any():
                raise ValueError(f"OrientedBoxes.{name} has a negative value")

    def __len__(self) -> int:
        return len(self.centre_x_m)

    @classmethod
    def empty(cls) -> OrientedBoxes:
        none = np.zeros(0)
        return cls(none, none, none, none, none, none, np.zeros(0, np.int64), none,
                   np.zeros(0, np.int64))

    @classmethod
    def from_actors(cls, actors: Sequence[ActorState], ground_z_m: float = 0.0) -> OrientedBoxes:
        """Boxes of actors standing on the ground, tagged by ``KIND_SEMANTIC_TAG``."""
        if not actors:
            return cls.empty()
        columns = np.array([(a.x_m, a.y_m, a.yaw_rad, a.length_m, a.width_m, a.height_m)
                            for a in actors], dtype=float)
        return cls(*columns.T,
                   semantic_tag=[KIND_SEMANTIC_TAG[a.kind] for a in actors],
                   base_z_m=np.full(len(actors), float(ground_z_m)),
                   actor_id=[a.actor_id for a in actors])

    @classmethod
    def concatenate(cls, parts: Sequence[OrientedBoxes]) -> OrientedBoxes:
        """One set of boxes from several, e.g. the actors plus a map's static geometry."""
        if not parts:
            return cls.empty()
        return cls(**{spec.name: np.concatenate([getattr(p, spec.name) for p in parts])
                      for spec in fields(cls)})

    def select(self, mask: np.ndarray) -> OrientedBoxes:
        return OrientedBoxes(**{spec.name: getattr(self, spec.name)[mask] for spec in fields(self)})


@dataclass(frozen=True)
class _Rays:
    """One step's rays as a (channel, column) grid, directions in the sensor frame."""

    cos_elevation: np.ndarray  # (C,)
    sin_elevation: np.ndarray  # (C,)
    elevation_rad: np.ndarray  # (C,)
    azimuth_rad: np.ndarray  # (P,), REP 103 in the sensor frame
    cos_azimuth: np.ndarray  # (P,)
    sin_azimuth: np.ndarray  # (P,)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.cos_elevation), len(self.cos_azimuth)


class RayCastLidar:
    """A spinning LiDAR whose sweep carries on from one :meth:`scan` to the next.

    ``rng`` draws the dropoff and the range noise, in that order, so a seed fixes both.
    """

    def __init__(self, config: LidarConfig, rng: np.random.Generator) -> None:
        self.config = config
        self._rng = rng
        elevation = config.elevations_rad()
        self._elevation_rad = elevation
        self._cos_elevation = np.cos(elevation)
        self._sin_elevation = np.sin(elevation)
        self._sweep_angle_deg = 0.0

    @property
    def sweep_angle_deg(self) -> float:
        """Where the next scan starts, in [0, horizontal_fov_deg) (CARLA's horizontal angle)."""
        return self._sweep_angle_deg

    def reset(self) -> None:
        """Restart the sweep (the random generator is the caller's and is left alone)."""
        self._sweep_angle_deg = 0.0

    def scan(self, sensor_pose_world: Sequence[float], dt_s: float,
             boxes: OrientedBoxes | Sequence[ActorState], exclude_actor_id: int,
             ground_z_m: float = 0.0, ground_tag: GroundTag | None = None) -> np.ndarray:
        """Points of one step: float32 ``(N, 5)``, columns ``POINT_FIELDS``, sensor frame.

        ``sensor_pose_world`` is ``(x, y, z, yaw)`` (see :func:`mount_pose_world`).
        ``boxes`` are upright boxes or actor states (on ``ground_z_m``); the one of
        ``exclude_actor_id`` (the ego) is left out, static geometry never is, and a box
        containing the sensor is invisible to it. ``ground_tag(x, y)`` gives the
        semantic tag of ground hits at those world positions (default: road). Points
        come channel by channel, top laser first, each in sweep order.
        """
        pose = tuple(float(v) for v in sensor_pose_world)
        if len(pose) != 4 or not all(math.isfinite(v) for v in pose):
            raise ValueError(f"sensor_pose_world={sensor_pose_world!r} must be 4 finite numbers")
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise ValueError(f"dt_s={dt_s} must be a positive finite number")
        rays = self._next_rays(dt_s)
        if rays is None:
            return np.zeros((0, len(POINT_FIELDS)), np.float32)
        if not isinstance(boxes, OrientedBoxes):
            boxes = OrientedBoxes.from_actors(boxes, ground_z_m)
        boxes = boxes.select((boxes.actor_id != exclude_actor_id) | (boxes.actor_id == STATIC_ACTOR_ID))

        distance = np.repeat(_ground_distance(rays, pose[2], ground_z_m)[:, None], rays.shape[1], 1)
        tag = np.full(rays.shape, -1, np.int64)  # -1: the ground, tagged below
        ray_index, box_distance, box_tag = _nearest_box_hits(rays, pose, boxes, self.config.range_m)
        closer = box_distance < distance.flat[ray_index]
        distance.flat[ray_index[closer]] = box_distance[closer]
        tag.flat[ray_index[closer]] = box_tag[closer]

        kept = distance <= self.config.range_m  # inf (no hit) fails too
        if self.config.dropoff_general_rate > 0:
            kept &= self._rng.random(rays.shape) >= self.config.dropoff_general_rate
        return self._points(rays, pose, distance, tag, kept, ground_tag)

    def _next_rays(self, dt_s: float) -> _Rays | None:
        """This step's ray grid; advances the sweep."""
        config = self.config
        per_channel = config.rays_per_channel(dt_s)
        if per_channel <= 0:
            # CARLA skips the step, sweep angle included.
            logger.warning("LiDAR: no rays this step (points_per_second %d, dt %.4g s, %d channels)",
                           config.points_per_second, dt_s, config.channels)
            return None
        fov = config.horizontal_fov_deg
        start = self._sweep_angle_deg
        tick = config.rotation_frequency_hz * fov * dt_s
        sweep = np.fmod(start + (tick / per_channel) * np.arange(per_channel), fov)
        self._sweep_angle_deg = math.fmod(start + tick, fov)
        azimuth = np.radians(fov / 2 - sweep)
        return _Rays(self._cos_elevation, self._sin_elevation, self._elevation_rad, azimuth,
                     np.cos(azimuth), np.sin(azimuth))

    def _points(self, rays: _Rays, pose: tuple[float, ...], distance: np.ndarray, tag: np.ndarray,
                kept: np.ndarray, ground_tag: GroundTag | None) -> np.ndarray:
        channel, column = np.nonzero(kept)
        distance, tag = distance[channel, column], tag[channel, column]
        dir_x = rays.cos_elevation[channel] * rays.cos_azimuth[column]
        dir_y = rays.cos_elevation[channel] * rays.sin_azimuth[column]
        dir_z = rays.sin_elevation[channel]
        on_ground = tag < 0
        if on_ground.any():
            tag[on_ground] = _ground_tags(ground_tag, pose, distance[on_ground],
                                          dir_x[on_ground], dir_y[on_ground])
        intensity = np.exp(-self.config.atmosphere_attenuation_rate * distance)
        if self.config.noise_stddev_m > 0:
            distance = distance + self._rng.normal(0.0, self.config.noise_stddev_m, len(distance))
        points = np.empty((len(distance), len(POINT_FIELDS)), np.float32)
        points[:, 0] = distance * dir_x
        points[:, 1] = distance * dir_y
        points[:, 2] = distance * dir_z
        points[:, 3] = intensity
        points[:, 4] = tag
        return points


def _ground_distance(rays: _Rays, sensor_z_m: float, ground_z_m: float) -> np.ndarray:
    """Distance along each channel's rays to the plane z = ground_z_m (inf: no hit)."""
    height = ground_z_m - sensor_z_m
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = height / rays.sin_elevation
    return np.where(np.isfinite(distance) & (distance > 0), distance, np.inf)


def _ground_tags(ground_tag: GroundTag | None, pose: tuple[float, ...], distance: np.ndarray,
                 dir_x: np.ndarray, dir_y: np.ndarray) -> np.ndarray:
    if ground_tag is None:
        return np.full(len(distance), SEMANTIC_ID["road"])
    x, y, _, yaw = pose
    cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
    world_x = x + distance * (dir_x * cos_yaw - dir_y * sin_yaw)
    world_y = y + distance * (dir_x * sin_yaw + dir_y * cos_yaw)
    tags = np.asarray(ground_tag(world_x, world_y))
    if tags.shape != distance.shape:
        raise ValueError(f"ground_tag returned shape {tags.shape}, expected {distance.shape}")
    return tags


def _candidate_pairs(rays: _Rays, pose: tuple[float, ...], boxes: OrientedBoxes,
                     range_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(box, channel, column) triples whose ray may hit the box: a conservative cone test.

    A box's footprint lies in the disc of radius r around its centre, so seen from a
    sensor at horizontal distance d > r its azimuth is within asin(r / d) of the
    centre's, and its elevation between the extremes of its bottom and top at
    horizontal distances d - r and d + r.
    """
    x, y, z, yaw = pose
    half_height = boxes.height_m / 2
    offset_x, offset_y = boxes.centre_x_m - x, boxes.centre_y_m - y
    distance_xy = np.hypot(offset_x, offset_y)
    radius_xy = np.hypot(boxes.length_m, boxes.width_m) / 2
    offset_z = boxes.base_z_m + half_height - z
    # Out-of-range boxes (most of a town's static geometry) leave before the per-ray tests.
    near = np.flatnonzero(np.hypot(distance_xy, offset_z) - np.hypot(radius_xy, half_height) <= range_m)
    offset_x, offset_y, distance_xy, radius_xy = offset_x[near], offset_y[near], distance_xy[near], radius_xy[near]
    base_z, height = boxes.base_z_m[near], boxes.height_m[near]
    around = distance_xy <= radius_xy  # the sensor is inside the footprint's disc
    with np.errstate(divide="ignore", invalid="ignore"):
        half_angle = np.where(around, math.pi, np.arcsin(np.minimum(radius_xy / distance_xy, 1.0)))
    centre_azimuth = np.arctan2(offset_y, offset_x) - yaw
    azimuth_gap = (rays.azimuth_rad[None, :] - centre_azimuth[:, None] + math.pi) % (2 * math.pi) - math.pi
    azimuth_ok = np.abs(azimuth_gap) <= (half_angle + _PREFILTER_MARGIN_RAD)[:, None]

    near_xy = np.where(around, 0.0, distance_xy - radius_xy)
    far_xy = distance_xy + radius_xy
    bottom, top = base_z - z, base_z + height - z
    lowest = np.arctan2(bottom, np.where(bottom < 0, near_xy, far_xy)) - _PREFILTER_MARGIN_RAD
    highest = np.arctan2(top, np.where(top > 0, near_xy, far_xy)) + _PREFILTER_MARGIN_RAD
    elevation = rays.elevation_rad[None, :]
    elevation_ok = (elevation >= lowest[:, None]) & (elevation <= highest[:, None])

    # Each box's (channel, column) pairs are the product of its channels and its columns;
    # built from the two small masks rather than a boxes x channels x columns one.
    channel_box, channel = np.nonzero(elevation_ok)
    column_box, column = np.nonzero(azimuth_ok)
    columns_per_box = np.bincount(column_box, minlength=len(near))
    first_column = np.cumsum(columns_per_box) - columns_per_box
    repeats = columns_per_box[channel_box]
    entry = np.repeat(np.arange(len(channel)), repeats)
    within = np.arange(len(entry)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    box = channel_box[entry]
    return near[box], channel[entry], column[first_column[box] + within]


def _nearest_box_hits(rays: _Rays, pose: tuple[float, ...], boxes: OrientedBoxes,
                      range_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat ray index, distance and tag of the nearest box hit of each ray that hits one.

    Slab method in each box's frame: the ray enters the box at the latest of its three
    slab entries and leaves at the earliest exit.
    """
    nothing = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
    if len(boxes) == 0:
        return nothing
    box, channel, column = _candidate_pairs(rays, pose, boxes, range_m)
    if len(box) == 0:
        return nothing
    x, y, z, yaw = pose
    # Box frame relative to the sensor frame, per box (cheap), then per pair (gathers).
    box_cos, box_sin = np.cos(boxes.yaw_rad), np.sin(boxes.yaw_rad)
    rel_yaw = boxes.yaw_rad - yaw
    rel_cos, rel_sin = np.cos(rel_yaw)[box], np.sin(rel_yaw)[box]
    from_centre_x, from_centre_y = x - boxes.centre_x_m, y - boxes.centre_y_m
    origin = (from_centre_x * box_cos + from_centre_y * box_sin,
              -from_centre_x * box_sin + from_centre_y * box_cos,
              z - boxes.base_z_m - boxes.height_m / 2)
    half_size = (boxes.length_m / 2, boxes.width_m / 2, boxes.height_m / 2)

    sensor_x = rays.cos_elevation[channel] * rays.cos_azimuth[column]
    sensor_y = rays.cos_elevation[channel] * rays.sin_azimuth[column]
    direction = (sensor_x * rel_cos + sensor_y * rel_sin,
                 -sensor_x * rel_sin + sensor_y * rel_cos,
                 rays.sin_elevation[channel])

    enter = np.full(len(box), -np.inf)
    leave = np.full(len(box), np.inf)
    for axis in range(3):
        d = direction[axis]
        d = np.where(np.abs(d) < _MIN_DIRECTION, _MIN_DIRECTION, d)
        o, h = origin[axis][box], half_size[axis][box]
        t_low, t_high = (-h - o) / d, (h - o) / d
        np.maximum(enter, np.minimum(t_low, t_high), out=enter)
        np.minimum(leave, np.maximum(t_low, t_high), out=leave)
    hit = (enter <= leave) & (enter > 0) & (enter <= range_m)

    ray_index = (channel * rays.shape[1] + column)[hit]
    distance, tag = enter[hit], boxes.semantic_tag[box[hit]]
    order = np.lexsort((distance, ray_index))
    ray_index, distance, tag = ray_index[order], distance[order], tag[order]
    first = np.ones(len(ray_index), bool)
    first[1:] = ray_index[1:] != ray_index[:-1]
    return ray_index[first], distance[first], tag[first]
