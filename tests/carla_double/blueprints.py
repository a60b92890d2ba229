"""The double's blueprint library: ids, tags and attributes as CARLA 0.9.16 defines them.

Attribute ids, types and defaults follow CARLA's ``ActorBlueprintFunctionLibrary`` and the
sensor reference (Docs/ref_sensors.md); only the attributes a driving stack plausibly sets
are listed. Values are strings, parsed the way LibCarla's ``ActorAttribute::As<T>`` does
(``atoi``/``atof``: a malformed number reads as 0, it does not raise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import carla

VEHICLE, WALKER, CONTROLLER, SENSOR = "vehicle", "walker", "controller", "sensor"


@dataclass(frozen=True)
class AttributeSpec:
    id: str
    type: str  # "bool" | "int" | "float" | "str" | "color"
    default: str
    modifiable: bool = True


@dataclass(frozen=True)
class BlueprintSpec:
    id: str
    tags: tuple[str, ...]
    kind: str
    attributes: tuple[AttributeSpec, ...]
    # Physical actors only: half sizes and the box centre relative to the actor origin (m).
    extent: tuple[float, float, float] = (0.0, 0.0, 0.0)
    box_location: tuple[float, float, float] = (0.0, 0.0, 0.0)
    semantic_tag: int = 0


def _role(default: str) -> AttributeSpec:
    return AttributeSpec("role_name", "str", default)


def _vehicle(make: str, model: str, extent: tuple[float, float, float], color: str) -> BlueprintSpec:
    attributes = (
        _role("autopilot"),
        AttributeSpec("color", "color", color),
        AttributeSpec("sticky_control", "bool", "true"),
        AttributeSpec("terramechanics", "bool", "false"),
        AttributeSpec("number_of_wheels", "int", "4", modifiable=False),
        AttributeSpec("generation", "int", "2", modifiable=False),
        AttributeSpec("base_type", "str", "car", modifiable=False),
        AttributeSpec("has_lights", "bool", "true", modifiable=False),
        AttributeSpec("has_dynamic_doors", "bool", "true", modifiable=False),
        AttributeSpec("special_type", "str", "", modifiable=False),
    )
    # The origin of a CARLA vehicle sits at road level under the box centre.
    return BlueprintSpec(f"vehicle.{make}.{model}", ("vehicle", make, model), VEHICLE, attributes, extent,
                         (0.0, 0.0, extent[2]), int(carla.CityObjectLabel.Car))


def _walker(number: str, extent: tuple[float, float, float]) -> BlueprintSpec:
    attributes = (
        _role("pedestrian"),
        AttributeSpec("is_invincible", "bool", "true"),
        AttributeSpec("speed", "float", "1.4"),
        AttributeSpec("gender", "str", "female", modifiable=False),
        AttributeSpec("age", "str", "adult", modifiable=False),
        AttributeSpec("generation", "int", "2", modifiable=False),
    )
    # A walker's origin is its capsule centre, so the box is centred on it.
    return BlueprintSpec(f"walker.pedestrian.{number}", ("walker", "pedestrian", number), WALKER, attributes,
                         extent, (0.0, 0.0, 0.0), int(carla.CityObjectLabel.Pedestrians))


_SENSOR_ROLE = _role("front")
_TICK = AttributeSpec("sensor_tick", "float", "0.0")
_CAMERA_BASE = (
    _SENSOR_ROLE, AttributeSpec("image_size_x", "int", "800"), AttributeSpec("image_size_y", "int", "600"),
    AttributeSpec("fov", "float", "90.0"), _TICK,
    AttributeSpec("lens_circle_falloff", "float", "5.0"), AttributeSpec("lens_circle_multiplier", "float", "0.0"),
    AttributeSpec("lens_k", "float", "-1.0"), AttributeSpec("lens_kcube", "float", "0.0"),
    AttributeSpec("lens_x_size", "float", "0.08"), AttributeSpec("lens_y_size", "float", "0.08"),
)
_RGB_EXTRA = (
    AttributeSpec("bloom_intensity", "float", "0.675"), AttributeSpec("fstop", "float", "1.4"),
    AttributeSpec("iso", "float", "100.0"), AttributeSpec("gamma", "float", "2.2"),
    AttributeSpec("lens_flare_intensity", "float", "0.1"), AttributeSpec("shutter_speed", "float", "200.0"),
    AttributeSpec("motion_blur_intensity", "float", "0.45"), AttributeSpec("exposure_mode", "str", "histogram"),
    AttributeSpec("enable_postprocess_effects", "bool", "true"),
)
_LIDAR = (
    _SENSOR_ROLE, AttributeSpec("channels", "int", "32"), AttributeSpec("range", "float", "10.0"),
    AttributeSpec("points_per_second", "int", "56000"), AttributeSpec("rotation_frequency", "float", "10.0"),
    AttributeSpec("upper_fov", "float", "10.0"), AttributeSpec("lower_fov", "float", "-30.0"),
    AttributeSpec("horizontal_fov", "float", "360.0"), _TICK,
)
_GNSS = (_SENSOR_ROLE,) + tuple(AttributeSpec(f"noise_{q}_{p}", "float", "0.0")
                                for q in ("alt", "lat", "lon") for p in ("bias", "stddev")) + (
    AttributeSpec("noise_seed", "int", "0"), _TICK)
_IMU = (_SENSOR_ROLE,) + tuple(AttributeSpec(f"noise_{q}_{axis}", "float", "0.0")
                               for q in ("accel_stddev", "gyro_bias", "gyro_stddev") for axis in "xyz") + (
    AttributeSpec("noise_seed", "int", "0"), _TICK)


def _sensor(kind: str, name: str, attributes: tuple[AttributeSpec, ...]) -> BlueprintSpec:
    return BlueprintSpec(f"sensor.{kind}.{name}", ("sensor", kind, name), SENSOR, attributes)


BLUEPRINTS: tuple[BlueprintSpec, ...] = (
    _vehicle("lincoln", "mkz_2020", (2.45, 1.06, 0.76), "17,37,103"),
    _vehicle("tesla", "model3", (2.40, 1.08, 0.74), "200,20,20"),
    _vehicle("audi", "a2", (1.85, 1.00, 0.77), "30,120,60"),
    _walker("0001", (0.25, 0.25, 0.93)),
    _walker("0002", (0.24, 0.24, 0.90)),
    BlueprintSpec("controller.ai.walker", ("controller", "ai", "walker"), CONTROLLER, (_role(""),)),
    _sensor("camera", "rgb", _CAMERA_BASE + _RGB_EXTRA),
    _sensor("camera", "depth", _CAMERA_BASE),
    _sensor("camera", "semantic_segmentation", _CAMERA_BASE),
    _sensor("camera", "instance_segmentation", _CAMERA_BASE),
    _sensor("lidar", "ray_cast_semantic", _LIDAR),
    _sensor("other", "gnss", _GNSS),
    _sensor("other", "imu", _IMU),
    _sensor("other", "collision", (_SENSOR_ROLE,)),
    _sensor("other", "lane_invasion", (_SENSOR_ROLE,)),
)
BLUEPRINTS_BY_ID: dict[str, BlueprintSpec] = {spec.id: spec for spec in BLUEPRINTS}


def validated_value(spec: AttributeSpec, value: str) -> str:
    """``value`` as ``ActorAttribute::Set`` stores it, or the ValueError it raises."""
    if not spec.modifiable:
        raise ValueError(f"{spec.id}: read-only attribute")
    if spec.type == "bool":
        value = value.lower()
        if value not in ("true", "false"):
            raise ValueError(f"{spec.id}: invalid bool: {value}")
    elif spec.type == "color" and len(value.split(",")) != 3:
        raise ValueError(f"{spec.id}: colors must have 3 channels (R,G,B)")
    return value


def atoi(text: str) -> int:
    """C's atoi: the leading integer of ``text``, 0 when there is none."""
    match = re.match(r"\s*[+-]?\d+", text)
    return int(match.group()) if match else 0


def atof(text: str) -> float:
    """C's atof on the usual decimal forms."""
    match = re.match(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text)
    return float(match.group()) if match else 0.0


def color(text: str) -> tuple[int, int, int]:
    r, g, b = (min(max(atoi(part), 0), 255) for part in text.split(","))
    return r, g, b
