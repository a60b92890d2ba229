"""CARLA's left-handed frame <-> REP 103, in one place.

CARLA (Unreal) uses x forward, y right, z up and clockwise yaw in degrees; REP 103
uses x forward, y left, z up and counter-clockwise yaw in radians. OpenDRIVE files are
right-handed, so their coordinates equal REP 103 ``map`` coordinates: CARLA mirrors y
when it loads them and we mirror it back here. Only this module and ``road_map`` (and
later the CARLA backend) see carla types.
"""

from __future__ import annotations

import math

import carla


def location_to_xyz(location: carla.Location) -> tuple[float, float, float]:
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
