"""Our weather names (``sim.render.weather.WEATHER_NAMES``) -> carla.WeatherParameters.

Each starts from CARLA's own preset closest to the built-in renderer's look and changes
only what the name promises (a low sun at sunset, a soaked road in the rain, dense fog).
Whether the ego drives with headlights is the built-in preset's choice, so both
backends agree.
"""

from __future__ import annotations

from collections.abc import Callable

import carla

from sim.render.weather import WEATHER_NAMES, weather_preset


_FIELDS = ("cloudiness", "precipitation", "precipitation_deposits", "wind_intensity", "sun_azimuth_angle",
           "sun_altitude_angle", "fog_density", "fog_distance", "fog_falloff", "wetness", "scattering_intensity",
           "mie_scattering_scale", "rayleigh_scattering_scale", "dust_storm")


def _with(preset: carla.WeatherParameters, **changes: float) -> carla.WeatherParameters:
    """A new WeatherParameters: ``preset`` (a shared class attribute, never modified) with ``changes``."""
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown weather parameters {sorted(unknown)}")
    return carla.WeatherParameters(**({name: float(getattr(preset, name)) for name in _FIELDS} | changes))


W = carla.WeatherParameters
_BUILDERS: dict[str, Callable[[], carla.WeatherParameters]] = {
    "clear_noon": lambda: _with(W.ClearNoon),
    # Overcast: a fully covered sky (CloudyNoon has 60 % cloud) and a damp road.
    "overcast": lambda: _with(W.CloudyNoon, cloudiness=90.0, wetness=15.0),
    # The built-in sunset has its sun 7 deg up, lower than ClearSunset's 15.
    "sunset": lambda: _with(W.ClearSunset, sun_altitude_angle=7.0),
    "night": lambda: _with(W.ClearNight),
    # Steady rain on a soaked road with puddles (MidRainyNoon leaves wetness at 0).
    "rain": lambda: _with(W.MidRainyNoon, precipitation_deposits=80.0, wetness=100.0),
    # CARLA has no fog preset: a grey sky and dense fog from 10 m on, visibility a few tens of metres.
    "fog": lambda: _with(W.CloudyNoon, cloudiness=90.0, fog_density=70.0, fog_distance=10.0, fog_falloff=1.0,
                         wetness=30.0),
}
assert set(_BUILDERS) == set(WEATHER_NAMES)


def _check(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown weather {name!r} (one of {', '.join(WEATHER_NAMES)})")


def carla_weather(name: str) -> carla.WeatherParameters:
    """A fresh carla.WeatherParameters for one of WEATHER_NAMES."""
    _check(name)
    return _BUILDERS[name]()


def headlights_on(name: str) -> bool:
    """Headlights as the built-in preset has them (sunset, night, rain, fog)."""
    _check(name)
    return weather_preset(name).headlights_on
