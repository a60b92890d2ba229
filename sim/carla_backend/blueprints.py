"""Our sensor configs -> CARLA blueprint ids, attributes and attach transforms (pure).

Every spec is ``(blueprint_id, attributes, transform)`` (cameras add the image kind in
front), attributes as the strings ``ActorBlueprint.set_attribute`` takes, transforms
relative to the vehicle actor. ``box_ground_centre_m`` is where our vehicle origin (the
box centre on the ground) lies in the actor's frame (``carla_frames.box_ground_centre``);
the default puts it at the actor origin. ``sensor_tick`` is 0: data every simulator tick.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import carla
import numpy as np

from sim import carla_frames
from sim.sensors.camera_model import CameraConfig
from sim.sensors.inertial import GnssConfig, ImuConfig
from sim.sensors.lidar import LidarConfig

CAMERA_BLUEPRINTS = {
    "rgb": "sensor.camera.rgb",
    "depth": "sensor.camera.depth",
    "semantic": "sensor.camera.semantic_segmentation",
    "instance": "sensor.camera.instance_segmentation",
}
LIDAR_BLUEPRINT = "sensor.lidar.ray_cast_semantic"
IMU_BLUEPRINT = "sensor.other.imu"
GNSS_BLUEPRINT = "sensor.other.gnss"
COLLISION_BLUEPRINT = "sensor.other.collision"
LANE_INVASION_BLUEPRINT = "sensor.other.lane_invasion"

# Metres per degree of latitude in CARLA 0.9.16's geolocation (LibCarla geom/GeoLocation.cpp:
# spherical transverse Mercator, R = 6378137 m, the WGS84 equatorial radius, scale k0 = 0.9996),
# so GNSS noise given in metres becomes the degrees CARLA adds; a degree of longitude is
# this times cos(latitude).
EARTH_RADIUS_EQUATORIAL_M = 6_378_137.0
TRANSVERSE_MERCATOR_SCALE = 0.9996
METRES_PER_DEG_LAT = TRANSVERSE_MERCATOR_SCALE * EARTH_RADIUS_EQUATORIAL_M * math.pi / 180.0

Xyz = tuple[float, float, float]
_ORIGIN: Xyz = (0.0, 0.0, 0.0)


class SensorSpec(NamedTuple):
    blueprint_id: str
    attributes: dict[str, str]
    transform: carla.Transform


class CameraSensorSpec(NamedTuple):
    kind: str  # rgb | depth | semantic | instance
    blueprint_id: str
    attributes: dict[str, str]
    transform: carla.Transform


def _number(value: float) -> str:
    # Positional: a GNSS stddev of 1e-6 degrees must not turn into exponent notation.
    return np.format_float_positional(float(value), trim="0")


def _at(box_ground_centre_m: Xyz) -> carla.Transform:
    # IMU and GNSS sit at our vehicle origin with base_link's axes: their readings need no lever arm.
    return carla_frames.pose_to_transform(carla_frames.Pose(*box_ground_centre_m))


def camera_sensor_specs(config: CameraConfig, box_ground_centre_m: Xyz = _ORIGIN) -> list[CameraSensorSpec]:
    """One CARLA camera per image kind the config renders, all on the same mount."""
    attributes = {"image_size_x": str(config.width_px), "image_size_y": str(config.height_px),
                  "fov": _number(config.fov_deg), "sensor_tick": "0.0"}
    mount = carla_frames.camera_mount_transform(config, box_ground_centre_m)
    return [CameraSensorSpec(kind, CAMERA_BLUEPRINTS[kind], dict(attributes), mount) for kind in config.kinds]


def lidar_sensor_spec(config: LidarConfig, box_ground_centre_m: Xyz = _ORIGIN) -> SensorSpec:
    """The semantic LiDAR: it has no attenuation, dropoff or noise attributes; the decoder
    (``sensor_data.decode_semantic_lidar``) applies ours."""
    attributes = {"channels": str(int(config.channels)), "range": _number(config.range_m),
                  "points_per_second": str(int(config.points_per_second)),
                  "rotation_frequency": _number(config.rotation_frequency_hz),
                  "upper_fov": _number(config.upper_fov_deg), "lower_fov": _number(config.lower_fov_deg),
                  "horizontal_fov": _number(config.horizontal_fov_deg), "sensor_tick": "0.0"}
    return SensorSpec(LIDAR_BLUEPRINT, attributes, carla_frames.lidar_mount_transform(config, box_ground_centre_m))


def imu_sensor_spec(config: ImuConfig, seed: int, box_ground_centre_m: Xyz = _ORIGIN) -> SensorSpec:
    """The IMU with our noise, at the vehicle origin with base_link's axes. Our gyro bias is
    on the yaw rate only (``sim.sensors.inertial.Imu``); REP 103 z is CARLA's -z."""
    attributes = {f"noise_accel_stddev_{axis}": _number(config.accel_noise_stddev_mps2) for axis in "xyz"}
    attributes |= {f"noise_gyro_stddev_{axis}": _number(config.gyro_noise_stddev_radps) for axis in "xyz"}
    attributes |= {"noise_gyro_bias_x": "0.0", "noise_gyro_bias_y": "0.0",
                   "noise_gyro_bias_z": _number(0.0 - config.gyro_bias_radps),
                   "noise_seed": str(int(seed)), "sensor_tick": "0.0"}
    return SensorSpec(IMU_BLUEPRINT, attributes, _at(box_ground_centre_m))


def gnss_sensor_spec(config: GnssConfig, seed: int, latitude_deg: float,
                     box_ground_centre_m: Xyz = _ORIGIN) -> SensorSpec:
    """The GNSS with our noise: metres -> the degrees CARLA adds, at the map's ``latitude_deg``."""
    if not (math.isfinite(latitude_deg) and abs(latitude_deg) < 89.0):
        raise ValueError(f"gnss: latitude_deg={latitude_deg} must be finite and within 89 deg of the equator")
    metres_per_deg_lon = METRES_PER_DEG_LAT * math.cos(math.radians(latitude_deg))
    attributes = {"noise_lat_stddev": _number(config.horizontal_noise_stddev_m / METRES_PER_DEG_LAT),
                  "noise_lon_stddev": _number(config.horizontal_noise_stddev_m / metres_per_deg_lon),
                  "noise_alt_stddev": _number(config.altitude_noise_stddev_m),
                  "noise_seed": str(int(seed)), "sensor_tick": "0.0"}
    return SensorSpec(GNSS_BLUEPRINT, attributes, _at(box_ground_centre_m))


def collision_sensor_spec() -> SensorSpec:
    # Neither event sensor has attributes (Docs/ref_sensors.md); both report for their parent.
    return SensorSpec(COLLISION_BLUEPRINT, {}, carla.Transform())


def lane_invasion_sensor_spec() -> SensorSpec:
    return SensorSpec(LANE_INVASION_BLUEPRINT, {}, carla.Transform())
