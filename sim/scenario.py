"""Scenarios and routes as data: YAML files, validated on load.

A scenario names a town (a shipped town or a path to any ``.xodr``), the route (start
pose and goal, via waypoints, or a seeded random route of a given length), traffic
counts, weather, seed and the sensors on the ego (``sim.sensors.suite``).
``sim/scenarios/*.yaml`` are the shipped ones; those with
``benchmark: true`` form the benchmark suite, and ``suite()`` splits it into the
training towns' routes (``train``) and the held-out town's (``holdout``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drivestack.config import ConfigError, read_yaml
from sim.sensors.suite import SensorConfigError, SensorSuite, suite_from_dict

SCENARIO_DIR = Path(__file__).parent / "scenarios"
WEATHER_PRESETS = ("clear_noon", "overcast", "sunset", "night", "rain", "fog")


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class PedestrianCrossing:
    """A pedestrian steps onto the road ``route_distance_m`` along the ego's route
    when the ego is ``trigger_distance_m`` before that point, and crosses it."""

    route_distance_m: float
    trigger_distance_m: float = 25.0
    speed_mps: float = 1.4

    def __post_init__(self) -> None:
        for name in ("route_distance_m", "trigger_distance_m", "speed_mps"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ScenarioError(f"pedestrian crossing {name}={value} must be a finite number >= 0")
        if self.speed_mps <= 0:
            raise ScenarioError("pedestrian crossing speed_mps must be > 0")


@dataclass(frozen=True)
class Scenario:
    name: str
    town: str
    start: tuple[float, float, float] | None = None  # x_m, y_m, yaw_rad
    goal: tuple[float, float] | None = None
    waypoints: tuple[tuple[float, float], ...] = ()
    route_length_m: float | None = None  # random route when no start/goal is given
    npc_vehicles: int = 0
    pedestrians: int = 0
    weather: str = "clear_noon"
    seed: int = 0
    split: str = "train"
    benchmark: bool = False
    pedestrian_crossings: tuple[PedestrianCrossing, ...] = ()
    description: str = ""
    sensors: SensorSuite = SensorSuite()

    def __post_init__(self) -> None:
        if self.start is None and (self.goal is not None or self.waypoints):
            raise ScenarioError(f"scenario {self.name}: goal or waypoints given without start")
        if self.start is None and self.route_length_m is None:
            raise ScenarioError(f"scenario {self.name}: give start and goal, or route_length_m for a random route")
        if self.start is not None and self.goal is None:
            raise ScenarioError(f"scenario {self.name}: start given without goal")
        if self.start is not None and self.route_length_m is not None:
            raise ScenarioError(f"scenario {self.name}: give start and goal, or route_length_m, not both")
        if self.route_length_m is not None and not (math.isfinite(self.route_length_m) and self.route_length_m > 0):
            raise ScenarioError(f"scenario {self.name}: route_length_m={self.route_length_m} must be a finite number > 0")
        if self.npc_vehicles < 0 or self.pedestrians < 0:
            raise ScenarioError(f"scenario {self.name}: traffic counts must be >= 0")
        if self.weather not in WEATHER_PRESETS:
            raise ScenarioError(f"scenario {self.name}: unknown weather {self.weather!r} "
                                f"(one of {', '.join(WEATHER_PRESETS)})")
        if self.split not in ("train", "test"):
            raise ScenarioError(f"scenario {self.name}: split must be 'train' or 'test'")

    def with_seed(self, seed: int) -> Scenario:
        return replace(self, seed=seed)


def _floats(value: Any, n: int, what: str, source: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ScenarioError(f"{source}: {what} must be a list of {n} numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ScenarioError(f"{source}: {what} has a non-finite or non-numeric value {v!r}")
        out.append(float(v))
    return tuple(out)


def _number(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{source}: {what}={value!r} is not a number")
    return float(value)


def _whole(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScenarioError(f"{source}: {what}={value!r} must be a whole number >= 0")
    return value


_KEYS = {"name", "town", "start", "goal", "waypoints", "route_length_m", "npc_vehicles", "pedestrians",
         "weather", "seed", "split", "benchmark", "pedestrian_crossings", "description", "sensors"}


def scenario_from_dict(data: Any, source: str) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario file must be a mapping")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ScenarioError(f"{source}: unknown key(s) {', '.join(unknown)}")
    if "town" not in data:
        raise ScenarioError(f"{source}: missing key 'town'")
    start = data.get("start")
    crossings = []
    for c in data.get("pedestrian_crossings") or ():
        if not isinstance(c, dict) or "route_distance_m" not in c:
            raise ScenarioError(f"{source}: each pedestrian_crossings entry needs route_distance_m")
        try:
            crossings.append(PedestrianCrossing(**{k: _number(v, k, "pedestrian crossing") for k, v in c.items()}))
        except (TypeError, ScenarioError) as exc:
            raise ScenarioError(f"{source}: pedestrian_crossings: {exc}") from None
    try:
        sensors = suite_from_dict(data["sensors"]) if data.get("sensors") is not None else SensorSuite()
    except SensorConfigError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    try:
        return Scenario(
            name=str(data.get("name", Path(source).stem)),
            town=str(data["town"]),
            start=_floats(start, 3, "start [x_m, y_m, yaw_rad]", source) if start is not None else None,
            goal=_floats(data["goal"], 2, "goal [x_m, y_m]", source) if data.get("goal") is not None else None,
            waypoints=tuple(_floats(w, 2, "waypoint", source) for w in data.get("waypoints") or ()),
            route_length_m=(_number(data["route_length_m"], "route_length_m", source)
                            if data.get("route_length_m") is not None else None),
            npc_vehicles=_whole(data.get("npc_vehicles", 0), "npc_vehicles", source),
            pedestrians=_whole(data.get("pedestrians", 0), "pedestrians", source),
            weather=str(data.get("weather", "clear_noon")),
            seed=_whole(data.get("seed", 0), "seed", source),
            split=str(data.get("split", "train")),
            benchmark=bool(data.get("benchmark", False)),
            pedestrian_crossings=tuple(crossings),
            description=str(data.get("description", "")),
            sensors=sensors,
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ScenarioError):
            raise
        raise ScenarioError(f"{source}: {exc}") from None


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
            raise ScenarioError(f"unknown scenario {name_or_path!r} (known: {known})")
    try:
        scenario = scenario_from_dict(read_yaml(path), str(path))
    except ConfigError as exc:
        raise ScenarioError(str(exc)) from None
    town = Path(scenario.town)
    if town.suffix == ".xodr" and not town.is_absolute() and (path.parent / town).exists():
        scenario = replace(scenario, town=str(path.parent / town))  # relative to the file
    return scenario


def shipped_scenarios() -> list[Scenario]:
    return [load_scenario(str(p)) for p in sorted(SCENARIO_DIR.glob("*.yaml"))]


def benchmark_suite() -> list[Scenario]:
    return [s for s in shipped_scenarios() if s.benchmark]


# The benchmark's routes, whole or by split: the training towns, or the held-out town.
SUITES = {"benchmark": lambda s: True, "train": lambda s: s.split == "train", "holdout": lambda s: s.split == "test"}


def suite(name: str) -> list[Scenario]:
    """The scenarios of a suite (``benchmark``, ``train``, ``holdout``), or the one
    scenario a shipped name or a YAML path names."""
    if name in SUITES:
        return [s for s in benchmark_suite() if SUITES[name](s)]
    if Path(name).suffix in (".yaml", ".yml") or (SCENARIO_DIR / f"{name}.yaml").exists():
        return [load_scenario(name)]
    known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
    raise ScenarioError(f"unknown suite {name!r} (suites: {', '.join(SUITES)}; or a scenario: {known}; "
                        f"or a YAML file)")


def resolve_scenario(name_or_path: str, seed: int | None = None, sensors: str | None = None,
                     weather: str | None = None, npc_vehicles: int | None = None,
                     pedestrians: int | None = None) -> Scenario:
    """A scenario with command-line style overrides (None = keep the scenario's);
    ``sensors`` names a shipped suite. Every node of a graph resolves the same one."""
    from sim.sensors.suite import load_suite
    scenario = load_scenario(name_or_path)
    if weather is not None and weather not in WEATHER_PRESETS:
        raise ScenarioError(f"unknown weather {weather!r} (one of {', '.join(WEATHER_PRESETS)})")
    overrides: dict[str, Any] = {k: v for k, v in (("npc_vehicles", npc_vehicles), ("pedestrians", pedestrians),
                                                   ("weather", weather)) if v is not None}
    if sensors is not None:
        try:
            overrides["sensors"] = load_suite(sensors)
        except SensorConfigError as exc:
            raise ScenarioError(str(exc)) from None
    scenario = replace(scenario, **overrides)
    return scenario if seed is None else scenario.with_seed(seed)
