"""Sensor measurements as the double delivers them: CARLA's data classes, read-only.

Each class carries only the members the backend's contract reads (the API test holds them to
that list and to the real classes' names). ``raw_data`` is a read-only ``memoryview``, as
CARLA's binding returns (``PyMemoryView_FromMemory``), not ``bytes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import carla

if TYPE_CHECKING:
    from .actors import Actor


class SensorData:
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform) -> None:
        self._frame = frame
        self._timestamp = timestamp
        self._transform = transform

    @property
    def frame(self) -> int:
        return self._frame

    @property
    def timestamp(self) -> float:
        """Simulation seconds since the episode started."""
        return self._timestamp

    @property
    def transform(self) -> carla.Transform:
        """The sensor's world transform when it measured."""
        return self._transform


class Image(SensorData):
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform, width: int, height: int,
                 fov: float, bgra: bytes) -> None:
        super().__init__(frame, timestamp, transform)
        self._width, self._height, self._fov, self._raw = width, height, fov, bgra

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @property
    def fov(self) -> float:
        return self._fov

    @property
    def raw_data(self) -> memoryview:
        """BGRA, 4 bytes per pixel, row-major from the top-left pixel."""
        return memoryview(self._raw)


class SemanticLidarMeasurement(SensorData):
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform, channels: int,
                 raw: bytes) -> None:
        super().__init__(frame, timestamp, transform)
        self._channels, self._raw = channels, raw

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def raw_data(self) -> memoryview:
        """Per point: float32 x, y, z, cos_inc_angle, uint32 object_idx, uint32 object_tag."""
        return memoryview(self._raw)


class GnssMeasurement(SensorData):
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform, latitude: float,
                 longitude: float, altitude: float) -> None:
        super().__init__(frame, timestamp, transform)
        self._latitude, self._longitude, self._altitude = latitude, longitude, altitude

    @property
    def latitude(self) -> float:
        return self._latitude

    @property
    def longitude(self) -> float:
        return self._longitude

    @property
    def altitude(self) -> float:
        return self._altitude


class IMUMeasurement(SensorData):
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform, accelerometer: carla.Vector3D,
                 gyroscope: carla.Vector3D, compass: float) -> None:
        super().__init__(frame, timestamp, transform)
        self._accelerometer, self._gyroscope, self._compass = accelerometer, gyroscope, compass

    @property
    def accelerometer(self) -> carla.Vector3D:
        return self._accelerometer

    @property
    def gyroscope(self) -> carla.Vector3D:
        return self._gyroscope

    @property
    def compass(self) -> float:
        return self._compass


class CollisionEvent(SensorData):
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform, other_actor: Actor,
                 normal_impulse: carla.Vector3D) -> None:
        super().__init__(frame, timestamp, transform)
        self._other_actor, self._normal_impulse = other_actor, normal_impulse

    @property
    def other_actor(self) -> Actor:
        return self._other_actor

    @property
    def normal_impulse(self) -> carla.Vector3D:
        return self._normal_impulse


class LaneInvasionEvent(SensorData):
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform,
                 crossed_lane_markings: list[carla.LaneMarking]) -> None:
        super().__init__(frame, timestamp, transform)
        self._crossed = crossed_lane_markings

    @property
    def crossed_lane_markings(self) -> list[carla.LaneMarking]:
        return list(self._crossed)
