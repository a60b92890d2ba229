"""Sensor data <-> standard ROS 2 messages (sensor_msgs, nav_msgs, std_msgs).

Messages are the `rosbags` typestore's classes: the same objects are serialised for a
live topic (rclpy publishes the CDR bytes) and read back from a bag, so one conversion
serves nodes, the recorder and the datasets. Decoding accepts what other tools write
(bgr8/bgra8/mono8 images, jpeg/png CompressedImage, clouds with any field layout) and
raises :class:`MessageError` with the reason; the caller adds topic and timestamp.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from drivestack.schema import EgoState, GnssReading, ImuReading
from ros_nodes.typestore import typestore


class MessageError(ValueError):
    """A message that cannot be turned into the schema (bad encoding, size, NaN)."""


def msg_class(msgtype: str) -> type:
    return typestore().types[msgtype]


def time_msg(stamp_ns: int):
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return msg_class("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def stamp_ns_of(time) -> int:
    return int(time.sec) * 1_000_000_000 + int(time.nanosec)


def header(stamp_ns: int, frame_id: str):
    return msg_class("std_msgs/msg/Header")(stamp=time_msg(stamp_ns), frame_id=frame_id)


def yaw_quaternion(yaw_rad: float):
    return msg_class("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=math.sin(yaw_rad / 2), w=math.cos(yaw_rad / 2))


def quaternion_yaw(q) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def vector3(x: float, y: float, z: float):
    return msg_class("geometry_msgs/msg/Vector3")(x=float(x), y=float(y), z=float(z))


def point(x: float, y: float, z: float):
    return msg_class("geometry_msgs/msg/Point")(x=float(x), y=float(y), z=float(z))


# ---------------------------------------------------------------- images

# encoding -> (numpy dtype, channels); the subset of sensor_msgs/image_encodings in use.
IMAGE_ENCODINGS = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1), "32SC1": (np.int32, 1),
}


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    dtype, channels = IMAGE_ENCODINGS[encoding]
    array = np.ascontiguousarray(array, dtype=dtype)
    if array.ndim != (2 if channels == 1 else 3) or (channels > 1 and array.shape[2] != channels):
        raise MessageError(f"an image of shape {array.shape} cannot be encoded as {encoding}")
    height, width = array.shape[:2]
    return msg_class("sensor_msgs/msg/Image")(
        header=header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=width * channels * array.itemsize, data=array.view(np.uint8).reshape(-1))


def image_array(msg) -> np.ndarray:
    """The image's pixels (H, W) or (H, W, C) in its own encoding, validated."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise MessageError(f"unsupported image encoding {msg.encoding!r} "
                           f"(supported: {', '.join(IMAGE_ENCODINGS)})")
    dtype, channels = IMAGE_ENCODINGS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    row_bytes = msg.width * channels * itemsize
    if msg.height == 0 or msg.width == 0:
        raise MessageError(f"empty {msg.width}x{msg.height} image")
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise MessageError(f"{msg.encoding} image {msg.width}x{msg.height} with step {msg.step} needs "
                           f"{max(msg.step, row_bytes) * msg.height} bytes, has {len(msg.data)}")
    rows = np.asarray(msg.data, np.uint8)[: msg.step * msg.height].reshape(msg.height, msg.step)
    pixels = rows[:, :row_bytes].copy().view(dtype)
    if itemsize > 1 and bool(msg.is_bigendian) == np.little_endian:  # the data's byte order is not ours
        pixels = pixels.byteswap()
    return pixels.reshape(msg.height, msg.width) if channels == 1 else pixels.reshape(msg.height, msg.width,
                                                                                     channels)


def rgb_array(msg) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image from any colour or mono Image or CompressedImage."""
    if hasattr(msg, "format"):  # sensor_msgs/CompressedImage
        return _decode_compressed(msg)
    pixels = image_array(msg)
    conversions = {"rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
                   "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB, "8UC1": cv2.COLOR_GRAY2RGB}
    if msg.encoding not in conversions:
        raise MessageError(f"a {msg.encoding} image is not a colour or grey image")
    code = conversions[msg.encoding]
    return pixels if code is None else cv2.cvtColor(pixels, code)


def _decode_compressed(msg) -> np.ndarray:
    data = np.asarray(msg.data, np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if len(data) else None
    if decoded is None:
        raise MessageError(f"CompressedImage ({msg.format or 'no format'}, {len(data)} bytes) does not decode "
                           f"as jpeg or png")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def camera_info_msg(intrinsics: np.ndarray, width_px: int, height_px: int, stamp_ns: int, frame_id: str):
    k = np.asarray(intrinsics, np.float64)
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    roi = msg_class("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False)
    return msg_class("sensor_msgs/msg/CameraInfo")(
        header=header(stamp_ns, frame_id), height=height_px, width=width_px, distortion_model="plumb_bob",
        d=np.zeros(5), k=k.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=projection.reshape(-1),
        binning_x=0, binning_y=0, roi=roi)


def intrinsics_of(info) -> np.ndarray:
    k = np.asarray(info.k, np.float64).reshape(3, 3)
    if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise MessageError(f"CameraInfo K {k.reshape(-1).tolist()} is not a pinhole camera matrix")
    return k


# ---------------------------------------------------------------- point clouds

# PointField datatypes -> numpy (sensor_msgs/PointField constants).
_FIELD_DTYPES = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32,
                 7: np.float32, 8: np.float64}
_CLOUD_FIELDS = (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 12, 7), ("ObjTag", 16, 6))
_CLOUD_POINT_STEP = 20


def cloud_msg(points: np.ndarray, stamp_ns: int, frame_id: str):
    """A PointCloud2 of (N, 5) points: x, y, z, intensity (float32), ObjTag (uint32:
    the semantic class, as CARLA's semantic LiDAR names it)."""
    n = len(points)
    packed = np.empty(n, np.dtype({"names": ["xyzi", "tag"], "formats": [(np.float32, 4), np.uint32],
                                   "offsets": [0, 16], "itemsize": _CLOUD_POINT_STEP}))
    packed["xyzi"] = points[:, :4]
    packed["tag"] = points[:, 4]
    field = msg_class("sensor_msgs/msg/PointField")
    return msg_class("sensor_msgs/msg/PointCloud2")(
        header=header(stamp_ns, frame_id), height=1, width=n,
        fields=[field(name=name, offset=offset, datatype=datatype, count=1) for name, offset, datatype in _CLOUD_FIELDS],
        is_bigendian=False, point_step=_CLOUD_POINT_STEP, row_step=_CLOUD_POINT_STEP * n,
        data=packed.view(np.uint8).reshape(-1), is_dense=True)


def cloud_points(msg) -> np.ndarray:
    """(N, 5) float32 x, y, z, intensity, tag from any PointCloud2 with x, y, z;
    missing intensity or tag read as 0, points with a non-finite coordinate (ROS's
    "no return" in non-dense clouds) are dropped."""
    fields = {f.name: f for f in msg.fields}
    missing = [name for name in ("x", "y", "z") if name not in fields]
    if missing:
        raise MessageError(f"PointCloud2 without field(s) {', '.join(missing)} "
                           f"(has: {', '.join(fields) or 'none'})")
    n = int(msg.width) * int(msg.height)
    if len(msg.data) < n * msg.point_step:
        raise MessageError(f"PointCloud2 of {n} points x {msg.point_step} bytes has only {len(msg.data)} bytes")
    rows = np.asarray(msg.data, np.uint8)[: n * msg.point_step].reshape(n, msg.point_step)
    out = np.zeros((n, 5), np.float32)
    order = ">" if msg.is_bigendian else "<"
    for column, name in enumerate(("x", "y", "z", "intensity", "ObjTag")):
        f = fields.get(name) or (fields.get("tag") if name == "ObjTag" else None)
        if f is None:
            continue
        if f.datatype not in _FIELD_DTYPES:
            raise MessageError(f"PointCloud2 field {f.name} has unknown datatype {f.datatype}")
        dtype = np.dtype(_FIELD_DTYPES[f.datatype]).newbyteorder(order)
        if f.offset + dtype.itemsize > msg.point_step:
            raise MessageError(f"PointCloud2 field {f.name} at offset {f.offset} outside the {msg.point_step}-byte point")
        out[:, column] = rows[:, f.offset: f.offset + dtype.itemsize].copy().view(dtype).reshape(-1)
    return out[np.isfinite(out[:, :3]).all(axis=1)]


# ---------------------------------------------------------------- ego sensors

def odometry_msg(ego: EgoState, stamp_ns: int):
    """Ego pose in ``map`` and twist in ``base_link`` (REP 105)."""
    pose = msg_class("geometry_msgs/msg/Pose")(position=point(ego.x_m, ego.y_m, ego.z_m),
                                               orientation=yaw_quaternion(ego.yaw_rad))
    twist = msg_class("geometry_msgs/msg/Twist")(linear=vector3(ego.speed_mps, 0.0, 0.0),
                                                 angular=vector3(0.0, 0.0, ego.yaw_rate_radps))
    return msg_class("nav_msgs/msg/Odometry")(
        header=header(stamp_ns, "map"), child_frame_id="base_link",
        pose=msg_class("geometry_msgs/msg/PoseWithCovariance")(pose=pose, covariance=np.zeros(36)),
        twist=msg_class("geometry_msgs/msg/TwistWithCovariance")(twist=twist, covariance=np.zeros(36)))


def imu_msg(imu: ImuReading):
    """The IMU in ``base_link``; orientation is the heading (the compass) as an ENU yaw."""
    return msg_class("sensor_msgs/msg/Imu")(
        header=header(imu.stamp_ns, "base_link"), orientation=yaw_quaternion(math.pi / 2 - imu.compass_rad),
        orientation_covariance=np.zeros(9), angular_velocity=vector3(*imu.gyro_radps),
        angular_velocity_covariance=np.zeros(9), linear_acceleration=vector3(*imu.accel_mps2),
        linear_acceleration_covariance=np.zeros(9))


def imu_reading(msg) -> ImuReading:
    values = (msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z,
              msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z)
    _require_finite("Imu", values)
    compass = (math.pi / 2 - quaternion_yaw(msg.orientation)) % (2 * math.pi)
    return ImuReading(stamp_ns_of(msg.header.stamp), values[:3], values[3:], compass)


def navsat_msg(gnss: GnssReading):
    status = msg_class("sensor_msgs/msg/NavSatStatus")(status=0, service=1)  # STATUS_FIX, SERVICE_GPS
    return msg_class("sensor_msgs/msg/NavSatFix")(
        header=header(gnss.stamp_ns, "gnss"), status=status, latitude=gnss.latitude_deg,
        longitude=gnss.longitude_deg, altitude=gnss.altitude_m, position_covariance=np.zeros(9),
        position_covariance_type=0)


def gnss_reading(msg) -> GnssReading:
    _require_finite("NavSatFix", (msg.latitude, msg.longitude, msg.altitude))
    return GnssReading(stamp_ns_of(msg.header.stamp), msg.latitude, msg.longitude, msg.altitude)


def float32_msg(value: float):
    return msg_class("std_msgs/msg/Float32")(data=float(value))


def _require_finite(what: str, values) -> None:
    if not all(math.isfinite(v) for v in values):
        raise MessageError(f"{what} has a NaN or infinite value: {list(values)}")
