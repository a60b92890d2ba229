"""CARLA's left-handed frame <-> REP 103, in one place.

CARLA (Unreal) uses x forward, y right, z up and clockwise yaw in degrees; REP 103
uses x forward, y left, z up and counter-clockwise yaw in radians. OpenDRIVE files are
right-handed, so their coordinates equal REP 103 ``map`` coordinates: CARLA mirrors y
when it loads them and we mirror it back here. Only this module converts; besides it,
only ``road_map`` and ``sim/carla_backend`` see carla types.

The conversions follow carla-simulator/ros-bridge (``carla_common/transforms.py``,
``carla_ros_bridge/imu.py``, ``lidar.py``): mirroring y turns a position or any other
ordinary (polar) vector into ``(x, -y, z)``, a rotation ``(roll, pitch, yaw)`` in
degrees into ``(roll, -pitch, -yaw)`` in radians, and an angular velocity (an axial
vector: it changes sign under a reflection) into ``(-x, y, -z)``, as imu.py converts
the gyroscope. ros-bridge's ``carla_velocity_to_ros_twist`` uses ``(x, -y, -z)`` for
actor angular velocities instead, as if they were Euler angle rates; they are not
(``FCarlaActor::GetActorAngularVelocity`` returns the physics body's angular velocity,
the same vector the IMU reads), so we follow imu.py. Both agree on the yaw rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import carla
import numpy as np

from drivestack.schema import VehicleControl

if TYPE_CHECKING:
    from sim.sensors.camera_model import CameraConfig
    from sim.sensors.lidar import LidarConfig

Xyz = tuple[float, float, float]


def location_to_xyz(location: carla.Location) -> Xyz:
    return float(location.x), -float(location.y), float(location.z)


def xyz_to_location(x_m: float, y_m: float, z_m: float = 0.0) -> carla.Location:
    return carla.Location(x=float(x_m), y=-float(y_m), z=float(z_m))


def yaw_deg_to_rad(yaw_deg: float) -> float:
    """CARLA yaw (degrees, clockwise seen from above) -> REP 103 yaw in (-pi, pi]."""
    return wrap_angle(-math.radians(yaw_deg))


def yaw_rad_to_deg(yaw_rad: float) -> float:
    return -math.degrees(yaw_rad)


def wrap_angle(angle_rad: float) -> float:
    return math.atan2(math.sin(angle_rad), math.cos(angle_rad))


@dataclass(frozen=True)
class Pose:
    """A pose in REP 103: position in metres, ``rotation_rpy(roll, pitch, yaw)`` orientation
    (pitch + = nose down), angles in (-pi, pi]."""

    x_m: float
    y_m: float
    z_m: float
    roll_rad: float = 0.0
    pitch_rad: float = 0.0
    yaw_rad: float = 0.0


def rotation_to_rpy(rotation: carla.Rotation) -> Xyz:
    """carla.Rotation (degrees) -> REP 103 (roll, pitch, yaw) in radians, each in (-pi, pi]."""
    return (wrap_angle(math.radians(rotation.roll)), wrap_angle(-math.radians(rotation.pitch)),
            wrap_angle(-math.radians(rotation.yaw)))


def rpy_to_rotation(roll_rad: float, pitch_rad: float, yaw_rad: float) -> carla.Rotation:
    return carla.Rotation(roll=math.degrees(roll_rad), pitch=-math.degrees(pitch_rad), yaw=-math.degrees(yaw_rad))


def transform_to_pose(transform: carla.Transform) -> Pose:
    return Pose(*location_to_xyz(transform.location), *rotation_to_rpy(transform.rotation))


def pose_to_transform(pose: Pose) -> carla.Transform:
    return carla.Transform(xyz_to_location(pose.x_m, pose.y_m, pose.z_m),
                           rpy_to_rotation(pose.roll_rad, pose.pitch_rad, pose.yaw_rad))


def vector_to_xyz(vector: carla.Vector3D) -> Xyz:
    """A polar vector (velocity m/s, acceleration m/s^2, force) -> REP 103."""
    return float(vector.x), -float(vector.y), float(vector.z)


def xyz_to_vector(x: float, y: float, z: float) -> carla.Vector3D:
    return carla.Vector3D(x=float(x), y=-float(y), z=float(z))


def axial_vector_to_xyz(vector: carla.Vector3D) -> Xyz:
    """An axial vector (angular velocity, same unit in and out) -> REP 103: a reflection
    flips it, hence ``(-x, y, -z)`` (ros-bridge imu.py)."""
    return -float(vector.x), float(vector.y), -float(vector.z)


def angular_velocity_to_radps(vector_degps: carla.Vector3D) -> Xyz:
    """``actor.get_angular_velocity()`` (deg/s, CARLA frame) -> rad/s in REP 103.

    A vehicle turning left has a negative yaw rate in CARLA and a positive one here."""
    wx, wy, wz = axial_vector_to_xyz(vector_degps)
    return math.radians(wx), math.radians(wy), math.radians(wz)


def points_to_rep103(points: np.ndarray) -> np.ndarray:
    """(N, 3+) points in a CARLA (sensor) frame -> a copy with y negated (ros-bridge lidar.py).
    Extra columns pass through; the dtype is kept."""
    out = np.array(points, copy=True)
    if out.ndim != 2 or out.shape[1] < 3:
        raise ValueError(f"points must be an (N, 3+) array, got shape {out.shape}")
    out[:, 1] *= -1
    return out


def points_from_rep103(points: np.ndarray) -> np.ndarray:
    # Mirroring is its own inverse.
    return points_to_rep103(points)


def box_ground_centre(bounding_box: carla.BoundingBox) -> Xyz:
    """Where drivestack's vehicle origin (the box centre on the ground) lies in the CARLA
    actor's frame, REP 103 axes: sensor mounts are given relative to it, CARLA attaches
    relative to the actor origin (which need not be the box centre)."""
    x, y, z = location_to_xyz(bounding_box.location)
    return x, y, z - float(bounding_box.extent.z)


def _mount(x_m: float, y_m: float, z_m: float, roll_rad: float, pitch_rad: float, yaw_rad: float,
           box_ground_centre_m: Xyz) -> carla.Transform:
    ox, oy, oz = box_ground_centre_m
    return pose_to_transform(Pose(x_m + ox, y_m + oy, z_m + oz, roll_rad, pitch_rad, yaw_rad))


def camera_mount_transform(config: CameraConfig, box_ground_centre_m: Xyz = (0.0, 0.0, 0.0)) -> carla.Transform:
    """The camera's attach transform relative to its vehicle. CARLA's camera looks along
    its +x with image u along +y and v along -z, which is our camera body frame mirrored:
    the optical frame needs no further rotation. A camera pitched down 10 deg here has
    CARLA pitch -10."""
    return _mount(config.x_m, config.y_m, config.z_m, config.roll_rad, config.pitch_rad, config.yaw_rad,
                  box_ground_centre_m)


def camera_mount_from_transform(transform: carla.Transform,
                                box_ground_centre_m: Xyz = (0.0, 0.0, 0.0)) -> tuple[float, ...]:
    """Inverse of :func:`camera_mount_transform`: ``(x_m, y_m, z_m, roll_rad, pitch_rad, yaw_rad)``."""
    pose = transform_to_pose(transform)
    ox, oy, oz = box_ground_centre_m
    return pose.x_m - ox, pose.y_m - oy, pose.z_m - oz, pose.roll_rad, pose.pitch_rad, pose.yaw_rad


def lidar_mount_transform(config: LidarConfig, box_ground_centre_m: Xyz = (0.0, 0.0, 0.0)) -> carla.Transform:
    """The LiDAR's attach transform; its points (CARLA sensor frame) mirrored by
    :func:`points_to_rep103` are then in our sensor frame (REP 103 turned by the mount yaw)."""
    return _mount(config.x_m, config.y_m, config.z_m, 0.0, 0.0, config.yaw_rad, box_ground_centre_m)


def control_to_carla(control: VehicleControl) -> carla.VehicleControl:
    """Our steer + = left; CARLA's + = right."""
    return carla.VehicleControl(throttle=float(control.throttle), steer=-float(control.steer),
                                brake=float(control.brake), hand_brake=bool(control.hand_brake),
                                reverse=bool(control.reverse))


def control_from_carla(control: carla.VehicleControl) -> VehicleControl:
    # CARLA stores float32 and clamps on apply; saturating its read-back is harmless.
    return VehicleControl.clamped(throttle=float(control.throttle), steer=-float(control.steer),
                                  brake=float(control.brake), hand_brake=bool(control.hand_brake),
                                  reverse=bool(control.reverse))
