"""Weather and time-of-day presets for the camera renderer, as plain data.

A preset sets only how the RGB image looks (sun, sky, fog, wet road, headlights,
exposure); labels (depth, semantic, instance) never depend on it. Colours are RGB in
[0, 1]; light colours may exceed 1 for a bright sun. Angles follow REP 103 in the map
frame: the sun's azimuth counts counter-clockwise from +x, elevation up from the
horizon.

``randomize=True`` jitters a preset for domain randomisation (sun position, colours,
fog, exposure; half of the time any sky hue and sun colour temperature) from the
caller's generator, so an episode's look follows its seed.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, fields, replace

import numpy as np

RGB = tuple[float, float, float]
WEATHER_NAMES = ("clear_noon", "overcast", "sunset", "night", "rain", "fog")


@dataclass(frozen=True)
class WeatherPreset:
    name: str
    sun_azimuth_rad: float
    sun_elevation_rad: float  # of the light that shades the scene (the moon at night)
    sun_rgb: RGB
    ambient_rgb: RGB
    sky_top_rgb: RGB
    sky_horizon_rgb: RGB
    fog_density_per_m: float  # exponential fog: visibility ~ 3 / density
    fog_rgb: RGB
    wetness: float  # 0 dry .. 1 soaked: darker road with a sky-coloured sheen
    headlights_on: bool
    exposure_gain: float  # the camera's gain on the rendered image
    rain_streaks: float = 0.0  # 0 .. 1, share of the image crossed by rain streaks
    road_brightness: float = 1.0  # multiplies road-surface colours (wet asphalt is darker)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"WeatherPreset {self.name}: {f.name}={value} must be finite")
        if self.fog_density_per_m < 0 or not 0 <= self.wetness <= 1 or self.exposure_gain <= 0:
            raise ValueError(f"WeatherPreset {self.name}: fog density >= 0, wetness in [0, 1] and "
                             f"exposure_gain > 0 required")

    @property
    def sun_direction(self) -> np.ndarray:
        """Unit vector from the scene towards the sun, map frame."""
        ce = math.cos(self.sun_elevation_rad)
        return np.array([ce * math.cos(self.sun_azimuth_rad), ce * math.sin(self.sun_azimuth_rad),
                         math.sin(self.sun_elevation_rad)])


_PRESETS = {
    "clear_noon": WeatherPreset(
        "clear_noon", sun_azimuth_rad=2.2, sun_elevation_rad=math.radians(55), sun_rgb=(1.0, 0.97, 0.9),
        ambient_rgb=(0.42, 0.44, 0.48), sky_top_rgb=(0.22, 0.42, 0.80), sky_horizon_rgb=(0.66, 0.78, 0.92),
        fog_density_per_m=0.0015, fog_rgb=(0.66, 0.76, 0.88), wetness=0.0, headlights_on=False,
        exposure_gain=1.0),
    "overcast": WeatherPreset(
        "overcast", sun_azimuth_rad=2.0, sun_elevation_rad=math.radians(50), sun_rgb=(0.38, 0.38, 0.40),
        ambient_rgb=(0.62, 0.62, 0.64), sky_top_rgb=(0.58, 0.60, 0.63), sky_horizon_rgb=(0.76, 0.77, 0.79),
        fog_density_per_m=0.004, fog_rgb=(0.74, 0.75, 0.77), wetness=0.15, headlights_on=False,
        exposure_gain=1.08, road_brightness=0.92),
    "sunset": WeatherPreset(
        "sunset", sun_azimuth_rad=-0.35, sun_elevation_rad=math.radians(7), sun_rgb=(1.25, 0.62, 0.28),
        ambient_rgb=(0.30, 0.25, 0.30), sky_top_rgb=(0.20, 0.24, 0.48), sky_horizon_rgb=(0.98, 0.58, 0.34),
        fog_density_per_m=0.003, fog_rgb=(0.85, 0.58, 0.42), wetness=0.0, headlights_on=True,
        exposure_gain=1.15),
    "night": WeatherPreset(
        "night", sun_azimuth_rad=1.0, sun_elevation_rad=math.radians(40), sun_rgb=(0.07, 0.08, 0.12),
        ambient_rgb=(0.06, 0.065, 0.09), sky_top_rgb=(0.01, 0.012, 0.03), sky_horizon_rgb=(0.05, 0.055, 0.09),
        fog_density_per_m=0.002, fog_rgb=(0.03, 0.035, 0.05), wetness=0.0, headlights_on=True,
        exposure_gain=1.5),
    "rain": WeatherPreset(
        "rain", sun_azimuth_rad=2.0, sun_elevation_rad=math.radians(45), sun_rgb=(0.30, 0.30, 0.32),
        ambient_rgb=(0.46, 0.47, 0.50), sky_top_rgb=(0.40, 0.42, 0.46), sky_horizon_rgb=(0.60, 0.62, 0.65),
        fog_density_per_m=0.012, fog_rgb=(0.56, 0.58, 0.61), wetness=1.0, headlights_on=True,
        exposure_gain=1.12, rain_streaks=0.5, road_brightness=0.6),
    "fog": WeatherPreset(
        "fog", sun_azimuth_rad=2.0, sun_elevation_rad=math.radians(40), sun_rgb=(0.25, 0.25, 0.26),
        ambient_rgb=(0.64, 0.64, 0.66), sky_top_rgb=(0.70, 0.71, 0.73), sky_horizon_rgb=(0.74, 0.75, 0.77),
        fog_density_per_m=0.045, fog_rgb=(0.73, 0.74, 0.76), wetness=0.3, headlights_on=True,
        exposure_gain=1.0, road_brightness=0.9),
}


def weather_preset(name: str, rng: np.random.Generator | None = None, randomize: bool = False) -> WeatherPreset:
    """The preset ``name`` (one of WEATHER_NAMES), jittered from ``rng`` if ``randomize``."""
    try:
        preset = _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown weather {name!r} (one of {', '.join(WEATHER_NAMES)})") from None
    if not randomize:
        return preset
    return _jitter(preset, rng if rng is not None else np.random.default_rng())


def _jitter(p: WeatherPreset, rng: np.random.Generator) -> WeatherPreset:
    """Domain randomisation (Tobin et al. 2017): small jitter of every colour, plus, half of
    the time, a sky of any hue and a sun of any colour temperature, so that a model
    trained on a few presets does not tie "sky" or "road" to one palette."""
    def colour(rgb: RGB, spread: float = 0.08) -> RGB:
        scale = np.exp(rng.normal(0.0, spread, 3))
        return tuple(float(c) for c in np.clip(np.asarray(rgb) * scale, 0.0, 2.0))

    # Daytime sun can come from anywhere; a sunset stays low and a night stays dark.
    elevation_sd = {"sunset": math.radians(2), "night": math.radians(5)}.get(p.name, math.radians(10))
    elevation = float(np.clip(p.sun_elevation_rad + rng.normal(0.0, elevation_sd), math.radians(3), math.radians(80)))
    sky_top, sky_horizon, sun = colour(p.sky_top_rgb, 0.06), colour(p.sky_horizon_rgb, 0.05), colour(p.sun_rgb)
    if rng.random() < SKY_AND_SUN_RECOLOUR_PROBABILITY:
        horizon_weight, top_weight = rng.uniform(0.2, 0.8), rng.uniform(0.0, 0.6)
        sky_horizon = _mix(sky_horizon, _hue_like(sky_horizon, float(rng.uniform(0.0, 360.0)), rng), horizon_weight)
        sky_top = _mix(sky_top, _hue_like(sky_top, float(rng.uniform(0.0, 360.0)), rng), top_weight)
        warmth = float(rng.uniform(-1.0, 1.0))  # -1 bluish daylight .. +1 orange low sun
        sun = tuple(float(c) for c in np.clip(np.asarray(sun) * np.exp(warmth * _WARM_LOG_TINT), 0.0, 2.0))
    return replace(
        p,
        sun_azimuth_rad=float(rng.uniform(-math.pi, math.pi)),
        sun_elevation_rad=elevation,
        sun_rgb=sun, ambient_rgb=colour(p.ambient_rgb),
        sky_top_rgb=sky_top, sky_horizon_rgb=sky_horizon,
        fog_density_per_m=float(p.fog_density_per_m * math.exp(rng.normal(0.0, 0.25))),
        fog_rgb=colour(p.fog_rgb, 0.04),
        exposure_gain=float(p.exposure_gain * math.exp(rng.normal(0.0, 0.08))),
        road_brightness=float(np.clip(p.road_brightness * math.exp(rng.normal(0.0, 0.06)), 0.3, 1.2)),
    )


SKY_AND_SUN_RECOLOUR_PROBABILITY = 0.5
# Log-gains of a colour-temperature shift: warmer light has more red and less blue
# (+1: an orange low sun, -1: a bluish overcast daylight; chosen by eye, not fitted).
_WARM_LOG_TINT = np.array([0.25, -0.15, -0.75])


def _hue_like(rgb: RGB, hue_deg: float, rng: np.random.Generator) -> RGB:
    """A colour of hue ``hue_deg`` with ``rgb``'s brightness and a random saturation."""
    value = max(max(rgb), 0.02)
    return tuple(float(c) for c in colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, float(rng.uniform(0.25, 0.7)), value))


def _mix(a: RGB, b: RGB, weight: float) -> RGB:
    return tuple(float((1.0 - weight) * x + weight * y) for x, y in zip(a, b))
