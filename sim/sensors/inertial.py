"""IMU and GNSS of the built-in simulator, computed from the ego's kinematic state.

The kinematic bicycle gives the body-frame acceleration directly: longitudinal from
the speed change, lateral from the centripetal term v * yaw_rate; the accelerometer
adds the reaction to gravity as a real one does. Noise is Gaussian and drawn from the
sensor's own generator so that turning noise on does not change the traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivestack.schema import EgoState, GnssReading, ImuReading

GRAVITY_MPS2 = 9.81
# Metres per degree of latitude (mean Earth radius), for GNSS noise given in metres.
METRES_PER_DEG_LAT = 111_195.0


def _check(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"{owner}.{name}={value} must be a finite number >= 0")


@dataclass(frozen=True)
class ImuConfig:
    accel_noise_stddev_mps2: float = 0.0
    gyro_noise_stddev_radps: float = 0.0
    gyro_bias_radps: float = 0.0

    def __post_init__(self) -> None:
        _check("ImuConfig", accel_noise_stddev_mps2=self.accel_noise_stddev_mps2,
               gyro_noise_stddev_radps=self.gyro_noise_stddev_radps)
        if not math.isfinite(self.gyro_bias_radps):
            raise ValueError(f"ImuConfig.gyro_bias_radps={self.gyro_bias_radps} must be finite")


@dataclass(frozen=True)
class GnssConfig:
    horizontal_noise_stddev_m: float = 0.0
    altitude_noise_stddev_m: float = 0.0

    def __post_init__(self) -> None:
        _check("GnssConfig", horizontal_noise_stddev_m=self.horizontal_noise_stddev_m,
               altitude_noise_stddev_m=self.altitude_noise_stddev_m)


def compass_rad(yaw_rad: float) -> float:
    """Heading clockwise from north in [0, 2 pi); the map frame is ENU (y = north)."""
    return (math.pi / 2 - yaw_rad) % (2 * math.pi)


class Imu:
    def __init__(self, config: ImuConfig, rng: np.random.Generator) -> None:
        self.config, self.rng = config, rng

    def read(self, ego: EgoState) -> ImuReading:
        c = self.config
        accel = (ego.accel_mps2, ego.speed_mps * ego.yaw_rate_radps, GRAVITY_MPS2)
        gyro = (0.0, 0.0, ego.yaw_rate_radps + c.gyro_bias_radps)
        if c.accel_noise_stddev_mps2 > 0:
            accel = tuple(float(a) for a in accel + self.rng.normal(0.0, c.accel_noise_stddev_mps2, 3))
        if c.gyro_noise_stddev_radps > 0:
            gyro = tuple(float(g) for g in gyro + self.rng.normal(0.0, c.gyro_noise_stddev_radps, 3))
        return ImuReading(ego.stamp_ns, accel, gyro, compass_rad(ego.yaw_rad))


class Gnss:
    def __init__(self, config: GnssConfig, rng: np.random.Generator, geolocate) -> None:
        """``geolocate(x_m, y_m, z_m) -> (lat_deg, lon_deg, alt_m)``: the map's geo-reference."""
        self.config, self.rng, self.geolocate = config, rng, geolocate

    def read(self, ego: EgoState) -> GnssReading:
        c = self.config
        x, y, z = ego.x_m, ego.y_m, ego.z_m
        if c.horizontal_noise_stddev_m > 0:
            dx, dy = self.rng.normal(0.0, c.horizontal_noise_stddev_m, 2)
            x, y = x + dx, y + dy
        if c.altitude_noise_stddev_m > 0:
            z = z + self.rng.normal(0.0, c.altitude_noise_stddev_m)
        lat, lon, alt = self.geolocate(x, y, z)
        return GnssReading(ego.stamp_ns, lat, lon, alt)
