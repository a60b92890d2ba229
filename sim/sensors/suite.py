"""The sensors mounted on the ego, as a scenario declares them.

A scenario's ``sensors`` key is either the name of a shipped suite
(``sim/config/sensors/<name>.yaml``) or a mapping::

    sensors:
      cameras:
        - {name: front, width_px: 320, height_px: 160, fov_deg: 90, x_m: 1.5, z_m: 1.6,
           kinds: [rgb, depth, semantic, instance]}
      lidar: {channels: 32, range_m: 50, points_per_second: 56000}
      imu: {accel_noise_stddev_mps2: 0.05}
      gnss: {horizontal_noise_stddev_m: 0.5}
      ground_truth: true
      randomize: false

Everything is checked here, when the scenario loads, so a bad parameter fails before
any rendering starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from drivestack.config import ConfigError, read_yaml
from sim.sensors.camera_model import CameraConfig
from sim.sensors.inertial import GnssConfig, ImuConfig
from sim.sensors.lidar import LidarConfig

SENSOR_SUITE_DIR = Path(__file__).resolve().parent.parent / "config" / "sensors"
_KEYS = {"cameras", "lidar", "imu", "gnss", "ground_truth", "randomize"}


class SensorConfigError(ValueError):
    pass


@dataclass(frozen=True)
class SensorSuite:
    cameras: tuple[CameraConfig, ...] = ()
    lidar: LidarConfig | None = None
    imu: ImuConfig = ImuConfig()
    gnss: GnssConfig = GnssConfig()
    # Labels (2D/3D boxes, lanes) in every observation; they need the world's geometry.
    ground_truth: bool = False
    # Domain randomisation: textures, colours and lighting drawn per episode from its seed.
    randomize: bool = False

    def __post_init__(self) -> None:
        names = [c.name for c in self.cameras]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise SensorConfigError(f"camera name(s) {', '.join(duplicated)} used more than once")

    @property
    def renders(self) -> bool:
        return bool(self.cameras)

    def with_camera(self, camera: CameraConfig) -> SensorSuite:
        """This suite plus ``camera``, unless one of that name is already mounted."""
        if any(c.name == camera.name for c in self.cameras):
            return self
        return SensorSuite((*self.cameras, camera), self.lidar, self.imu, self.gnss, self.ground_truth,
                           self.randomize)


def _section(cls: type, data: Any, what: str) -> Any:
    """Build a config dataclass from a mapping, naming the offending key on error."""
    if not isinstance(data, dict):
        raise SensorConfigError(f"{what} must be a mapping of parameters")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SensorConfigError(f"{what}: unknown parameter(s) {', '.join(unknown)} "
                                f"(known: {', '.join(sorted(known))})")
    values = {}
    for key, value in data.items():
        if key == "kinds":
            if not isinstance(value, (list, tuple)) or not all(isinstance(k, str) for k in value):
                raise SensorConfigError(f"{what}: kinds must be a list of names")
            value = tuple(value)
        elif key == "name":
            value = str(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SensorConfigError(f"{what}: {key}={value!r} is not a number")
        elif isinstance(value, float) and not math.isfinite(value):
            raise SensorConfigError(f"{what}: {key}={value} must be finite")
        values[key] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SensorConfigError(f"{what}: {exc}") from None


def suite_from_dict(data: Any) -> SensorSuite:
    if isinstance(data, str):
        return load_suite(data)
    if not isinstance(data, dict):
        raise SensorConfigError("sensors must be a suite name or a mapping")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise SensorConfigError(f"sensors: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    cameras = data.get("cameras") or []
    if not isinstance(cameras, list):
        raise SensorConfigError("sensors.cameras must be a list")
    for flag in ("ground_truth", "randomize"):
        if not isinstance(data.get(flag, False), bool):
            raise SensorConfigError(f"sensors.{flag} must be true or false")
    return SensorSuite(
        cameras=tuple(_section(CameraConfig, c, f"sensors.cameras[{i}]") for i, c in enumerate(cameras)),
        lidar=_section(LidarConfig, data["lidar"], "sensors.lidar") if data.get("lidar") is not None else None,
        imu=_section(ImuConfig, data.get("imu") or {}, "sensors.imu"),
        gnss=_section(GnssConfig, data.get("gnss") or {}, "sensors.gnss"),
        ground_truth=data.get("ground_truth", False),
        randomize=data.get("randomize", False))


def load_suite(name: str) -> SensorSuite:
    """A shipped suite by name (``sim/config/sensors/<name>.yaml``)."""
    path = SENSOR_SUITE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SENSOR_SUITE_DIR.glob("*.yaml")))
        raise SensorConfigError(f"unknown sensor suite {name!r} (known: {known})")
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise SensorConfigError(str(exc)) from None
    return suite_from_dict(data)
