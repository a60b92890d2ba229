"""CARLA sensor data -> drivestack arrays and readings (numpy, vectorised).

The decoders take anything with the attributes of CARLA's data objects (``carla.Image``,
``SemanticLidarMeasurement``, ``IMUMeasurement``, ``GnssMeasurement``), so they run on
synthetic buffers in tests. Encodings (CARLA 0.9.14+, ``Docs/ref_sensors.md`` and the
LibCarla / Unreal sources):

- images: ``raw_data`` is BGRA, 4 bytes a pixel, row-major;
- depth: ``(R + G 256 + B 256^2) / (256^3 - 1) * 1000`` m, the distance along the optical axis;
- semantic: the ``CityObjectLabel`` tag in R;
- instance: the tag in R and ``G + 256 B`` = the low 16 bits of the Unreal object's
  ``GetUniqueID()`` (``ATagger::GetActorLabelColor``), for every tagged object, actor or
  not. That is NOT the CARLA actor id, and the client cannot ask for it: the mapping
  from these codes to actors has to be learnt (:func:`match_instance_codes` does it
  from semantic LiDAR hits, which do carry CARLA actor ids);
- semantic LiDAR: 24-byte packed points ``float32 x, y, z, cos_inc_angle, uint32
  object_idx, uint32 object_tag`` (``SemanticLidarData.h``), in the sensor frame with
  CARLA axes, metres; ``object_idx`` is the CARLA actor id (0 for the map's meshes).

Frame conversions go through :mod:`sim.carla_frames`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import carla
import numpy as np

from drivestack.schema import SEMANTIC_ID, GnssReading, ImuReading
from sim import carla_frames
from sim.sensors.camera_model import CameraConfig

BYTES_PER_PIXEL = 4  # BGRA
DEPTH_FAR_M = 1000.0
DEPTH_SCALE = DEPTH_FAR_M / (256**3 - 1)  # metres per unit of the 24-bit code

SEMANTIC_LIDAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("cos_inc_angle", "<f4"),
                                 ("object_idx", "<u4"), ("object_tag", "<u4")])
assert SEMANTIC_LIDAR_DTYPE.itemsize == 24  # SemanticLidarDetection is #pragma pack(1)

INSTANCE_CODE_COUNT = 1 << 16  # G + 256 B


def _semantic_lut() -> np.ndarray:
    """CARLA CityObjectLabel (0.9.14+) -> SEMANTIC_CLASSES id. Our classes are CARLA's
    numbering, so they map to themselves; the rest fold into the nearest class a driving
    stack cares about; anything else (29+, e.g. the UE5 branch's Rock) is unlabeled."""
    ours = {c: c for c in SEMANTIC_ID.values()}
    folded = {
        4: "building",  # Wall
        13: "pedestrian",  # Rider: a person on a vehicle
        15: "car", 16: "car", 17: "car", 18: "car", 19: "car",  # Truck, Bus, Train, Motorcycle, Bicycle
        21: "static", 22: "static",  # Dynamic (movable props), Other
        23: "terrain",  # Water: flat, not drivable
        25: "terrain",  # Ground: flat ground-level areas that are not road
        26: "building",  # Bridge structure
        27: "terrain",  # RailTrack: CARLA defines it as not drivable by cars
        28: "fence",  # GuardRail
    }
    lut = np.zeros(256, np.uint8)
    for tag, class_id in ours.items():
        lut[tag] = class_id
    for tag, name in folded.items():
        lut[tag] = SEMANTIC_ID[name]
    lut.flags.writeable = False
    return lut


CARLA_TAG_TO_SEMANTIC: np.ndarray = _semantic_lut()


def _bgra(image: Any, sensor: str) -> np.ndarray:
    """(H, W, 4) uint8 view of an image's BGRA buffer, after checking its size."""
    width, height = int(image.width), int(image.height)
    if width <= 0 or height <= 0:
        raise ValueError(f"{sensor} image: size {width}x{height} must be positive")
    raw = np.frombuffer(image.raw_data, dtype=np.uint8)
    expected = width * height * BYTES_PER_PIXEL
    if raw.size != expected:
        raise ValueError(f"{sensor} image: raw_data of {raw.size} bytes, expected {expected} "
                         f"({width}x{height} BGRA pixels of {BYTES_PER_PIXEL} bytes)")
    return raw.reshape(height, width, BYTES_PER_PIXEL)


def decode_rgb(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    return np.ascontiguousarray(_bgra(image, "rgb camera")[:, :, 2::-1])


def decode_depth_m(image: Any) -> np.ndarray:
    """(H, W) float32 metres along the optical axis; 1000 m for the sky."""
    bgra = _bgra(image, "depth camera").astype(np.uint32)
    code = bgra[:, :, 2] + (bgra[:, :, 1] << 8) + (bgra[:, :, 0] << 16)
    return (code * DEPTH_SCALE).astype(np.float32)


def decode_semantic(image: Any) -> np.ndarray:
    """(H, W) uint8 SEMANTIC_CLASSES ids from the tag in R."""
    return CARLA_TAG_TO_SEMANTIC[_bgra(image, "semantic camera")[:, :, 2]]


def instance_codes(image: Any) -> np.ndarray:
    """(H, W) int32 ``G + 256 B`` of an instance-segmentation image (the Unreal object id's low 16 bits)."""
    bgra = _bgra(image, "instance camera")
    return bgra[:, :, 1].astype(np.int32) | (bgra[:, :, 0].astype(np.int32) << 8)


def decode_instance(image: Any, instance_of_code: Mapping[int, int]) -> np.ndarray:
    """(H, W) int32 drivestack instance ids; codes missing from ``instance_of_code``
    (``G + 256 B`` -> instance id, see :func:`match_instance_codes`) and code 0 give 0."""
    lut = np.zeros(INSTANCE_CODE_COUNT, np.int32)
    if instance_of_code:
        codes = np.fromiter(instance_of_code.keys(), np.int64, len(instance_of_code))
        if codes.min() < 0 or codes.max() >= INSTANCE_CODE_COUNT:
            raise ValueError(f"instance camera: codes must be in [0, {INSTANCE_CODE_COUNT}), got "
                             f"{codes.min()}..{codes.max()}")
        lut[codes] = np.fromiter(instance_of_code.values(), np.int64, len(instance_of_code))
    lut[0] = 0
    return lut[instance_codes(image)]


def match_instance_codes(codes: np.ndarray, uv_px: np.ndarray, labels: np.ndarray,
                         depth_m: np.ndarray | None = None, point_depth_m: np.ndarray | None = None,
                         depth_tolerance_m: float = 0.5, min_share: float = 0.5) -> dict[int, int]:
    """Learn ``instance code -> label`` from labelled points seen in the image.

    ``uv_px`` (N, 2) are pixel coordinates (u right, v down) of points whose label is
    known, e.g. semantic LiDAR hits projected into the camera with ``object_idx`` as the
    label (0 = unknown, ignored). With ``depth_m`` (the depth image) and ``point_depth_m``
    (each point's depth along the optical axis) a point votes only where the camera sees
    that very surface, so points the camera sees occluded do not vote. A code gets the
    label holding at least ``min_share`` of its votes. Unreal's ids live as long as their
    objects, so the result can be accumulated over frames.
    """
    codes = np.asarray(codes)
    height, width = codes.shape
    uv = np.asarray(uv_px, np.float64).reshape(-1, 2)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(labels) != len(uv):
        raise ValueError(f"match_instance_codes: {len(uv)} pixels but {len(labels)} labels")
    with np.errstate(invalid="ignore"):
        col, row = np.floor(uv[:, 0]), np.floor(uv[:, 1])
        keep = (labels != 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    col, row = col[keep].astype(np.intp), row[keep].astype(np.intp)
    labels = labels[keep]
    if depth_m is not None and point_depth_m is not None:
        error = np.abs(np.asarray(depth_m)[row, col] - np.asarray(point_depth_m, np.float64).reshape(-1)[keep])
        seen = error <= depth_tolerance_m
        row, col, labels = row[seen], col[seen], labels[seen]
    point_codes = codes[row, col].astype(np.int64)
    voted = point_codes != 0
    pairs, votes = np.unique(np.stack([point_codes[voted], labels[voted]]), axis=1, return_counts=True)
    result: dict[int, int] = {}
    for code in np.unique(pairs[0]):
        mine = pairs[0] == code
        best = np.argmax(votes[mine])
        if votes[mine][best] >= min_share * votes[mine].sum():
            result[int(code)] = int(pairs[1][mine][best])
    return result


def read_semantic_lidar(measurement: Any) -> np.ndarray:
    """The raw points of a semantic LiDAR measurement as a structured array
    (:data:`SEMANTIC_LIDAR_DTYPE`, CARLA axes)."""
    raw = np.frombuffer(measurement.raw_data, dtype=np.uint8)
    if raw.size % SEMANTIC_LIDAR_DTYPE.itemsize:
        raise ValueError(f"semantic lidar: raw_data of {raw.size} bytes is not a whole number of "
                         f"{SEMANTIC_LIDAR_DTYPE.itemsize}-byte points")
    return raw.view(SEMANTIC_LIDAR_DTYPE)


def decode_semantic_lidar_with_ids(measurement: Any, attenuation_rate: float, rng: np.random.Generator | None = None,
                                   noise_stddev_m: float = 0.0,
                                   dropoff_general_rate: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`decode_semantic_lidar`, plus the (N,) uint32 CARLA actor id of each point (0 = none)."""
    if not 0.0 <= attenuation_rate or not 0.0 <= dropoff_general_rate <= 1.0 or not noise_stddev_m >= 0.0:
        raise ValueError(f"semantic lidar: attenuation_rate={attenuation_rate} and noise_stddev_m={noise_stddev_m} "
                         f"must be >= 0 and dropoff_general_rate={dropoff_general_rate} in [0, 1]")
    if rng is None and (noise_stddev_m > 0.0 or dropoff_general_rate > 0.0):
        raise ValueError("semantic lidar: noise or dropoff needs a random generator (rng)")
    records = read_semantic_lidar(measurement)
    if dropoff_general_rate > 0.0:
        # CARLA drops rays before tracing; dropping hits at random thins the cloud the same way.
        records = records[rng.random(len(records)) >= dropoff_general_rate]
    xyz = np.stack([records["x"], records["y"], records["z"]], axis=1).astype(np.float64)
    distance = np.linalg.norm(xyz, axis=1)
    # The semantic LiDAR has no intensity, dropoff or noise attributes: apply ours here, in
    # the built-in LiDAR's order (intensity from the true distance, then noise along the ray).
    intensity = np.exp(-attenuation_rate * distance)
    if noise_stddev_m > 0.0:
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(distance > 0, (distance + rng.normal(0.0, noise_stddev_m, len(distance))) / distance, 1.0)
        xyz *= scale[:, None]
    points = np.empty((len(records), 5), np.float32)
    points[:, :3] = carla_frames.points_to_rep103(xyz)
    points[:, 3] = intensity
    # A uint32 tag past 255 clips to 255 (CARLA's "Any"), which is unlabeled like every unknown tag.
    points[:, 4] = CARLA_TAG_TO_SEMANTIC[np.minimum(records["object_tag"], 255)]
    return points, records["object_idx"].copy()


def decode_semantic_lidar(measurement: Any, attenuation_rate: float, rng: np.random.Generator | None = None,
                          noise_stddev_m: float = 0.0, dropoff_general_rate: float = 0.0) -> np.ndarray:
    """(N, 5) float32 x, y, z (sensor frame, REP 103), intensity ``exp(-rate * distance)``,
    SEMANTIC_CLASSES tag: the layout of :class:`drivestack.schema.LidarScan`."""
    return decode_semantic_lidar_with_ids(measurement, attenuation_rate, rng, noise_stddev_m, dropoff_general_rate)[0]


def imu_reading(measurement: Any, stamp_ns: int) -> ImuReading:
    """CARLA IMU (sensor frame, CARLA axes) -> ImuReading in REP 103, as ros-bridge imu.py:
    accelerometer ``(x, -y, z)``, gyroscope ``(-x, y, -z)``. The compass passes through:
    CARLA's (``AInertialMeasurementUnit::ComputeCompass``, north = CARLA -y, clockwise,
    [0, 2 pi)) is ours (``sim.sensors.inertial.compass_rad``, north = map +y)."""
    return ImuReading(int(stamp_ns), carla_frames.vector_to_xyz(measurement.accelerometer),
                      carla_frames.axial_vector_to_xyz(measurement.gyroscope), float(measurement.compass))


def gnss_reading(measurement: Any, stamp_ns: int, carla_map: carla.Map | None = None) -> GnssReading:
    """CARLA GNSS -> GnssReading.

    CARLA 0.9.16 geolocates its own y (which points south) as northing, so its latitude
    grows southwards, while the built-in simulator (``RoadMap.geolocation``) and the IMU
    compass have north at map +y. Given the map, the fix is mirrored back exactly: the
    map's inverse projection gives the CARLA position the reading stands for (noise
    included), and geolocating its REP 103 y as ``RoadMap.geolocation`` does gives the
    reading the built-in simulator would report there. Without a map the reading passes
    through unchanged.
    """
    latitude, longitude, altitude = float(measurement.latitude), float(measurement.longitude), \
        float(measurement.altitude)
    if carla_map is not None:
        location = carla_map.geolocation_to_transform(carla.GeoLocation(latitude, longitude, 0.0))
        geo = carla_map.transform_to_geolocation(carla.Location(x=location.x, y=-location.y, z=0.0))
        latitude, longitude = float(geo.latitude), float(geo.longitude)
    return GnssReading(int(stamp_ns), latitude, longitude, altitude)


def camera_intrinsics(width_px: int, height_px: int, fov_deg: float) -> np.ndarray:
    """The 3x3 K of a CARLA camera (horizontal fov, square pixels, centred principal point),
    the same as :attr:`CameraConfig.intrinsics`."""
    return CameraConfig(width_px=int(width_px), height_px=int(height_px), fov_deg=float(fov_deg)).intrinsics
