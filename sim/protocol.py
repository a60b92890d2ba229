"""The contract every simulator backend (built-in, CARLA) implements."""

from __future__ import annotations

from typing import Protocol

from drivestack.schema import Observation, Route, VehicleControl
from sim.road_map import RoadMap
from sim.scenario import Scenario
from sim.vehicle_dynamics import VehicleParams


class SimulatorError(RuntimeError):
    """The simulator failed or stopped answering; the episode cannot go on."""


class Simulator(Protocol):
    dt_s: float
    vehicle: VehicleParams  # the ego's parameters, for agents that model it
    # True when Observation.collisions comes from the simulator's own collision sensor
    # and the referee must score those events rather than test the boxes itself (CARLA).
    reports_collisions: bool

    def reset(self, scenario: Scenario) -> Observation:
        """Load the scenario's town, plan its route, spawn everything; the first observation."""

    def step(self, control: VehicleControl) -> Observation:
        """Apply ``control`` to the ego for one fixed step of ``dt_s`` seconds."""

    def close(self) -> None:
        """Release everything the backend holds."""

    @property
    def road_map(self) -> RoadMap: ...

    @property
    def route(self) -> Route: ...


class EpisodeMapAndRoute:
    """The ``road_map`` and ``route`` properties of a backend: what ``reset`` loaded into
    ``_map`` and ``_route``, or SimulatorError before the first reset."""

    _map: RoadMap | None = None
    _route: Route | None = None

    @property
    def road_map(self) -> RoadMap:
        if self._map is None:
            raise SimulatorError("reset() the simulator with a scenario first")
        return self._map

    @property
    def route(self) -> Route:
        if self._route is None:
            raise SimulatorError("reset() the simulator with a scenario first")
        return self._route
