"""World-level handles: World, WorldSnapshot, ActorList, BlueprintLibrary, ActorBlueprint."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import TYPE_CHECKING

import carla

from . import blueprints
from .actors import EXPIRED_EPISODE, Actor, _require
from .blueprints import BlueprintSpec
from .state import Episode

if TYPE_CHECKING:
    from .client import Client
    from .server import FakeCarlaServer


class ActorBlueprint:
    def __init__(self, spec: BlueprintSpec, values: dict[str, str] | None = None) -> None:
        self._spec = spec
        self._values = dict(values) if values is not None else {a.id: a.default for a in spec.attributes}

    def _copy(self) -> ActorBlueprint:
        return ActorBlueprint(self._spec, self._values)

    @property
    def id(self) -> str:
        return self._spec.id

    @property
    def tags(self) -> list[str]:
        return list(self._spec.tags)

    def has_attribute(self, attribute_id: str, /) -> bool:
        _require(attribute_id, str, "ActorBlueprint.has_attribute")
        return attribute_id in self._values

    def set_attribute(self, attribute_id: str, value: str, /) -> None:
        _require(attribute_id, str, "ActorBlueprint.set_attribute")
        _require(value, str, "ActorBlueprint.set_attribute")
        spec = next((a for a in self._spec.attributes if a.id == attribute_id), None)
        if spec is None:
            raise IndexError(f"attribute '{attribute_id}' not found")
        self._values[attribute_id] = blueprints.validated_value(spec, value)

    def _matches(self, pattern: str) -> bool:
        return fnmatch.fnmatchcase(self.id, pattern) or any(fnmatch.fnmatchcase(t, pattern) for t in self._spec.tags)


class BlueprintLibrary:
    def __init__(self, items: list[ActorBlueprint]) -> None:
        self._items = items

    def find(self, id: str) -> ActorBlueprint:
        _require(id, str, "BlueprintLibrary.find")
        for bp in self._items:
            if bp.id == id:
                return bp._copy()  # the binding returns by value
        raise IndexError(f"blueprint '{id}' not found")

    def filter(self, wildcard_pattern: str) -> BlueprintLibrary:
        _require(wildcard_pattern, str, "BlueprintLibrary.filter")
        return BlueprintLibrary([bp._copy() for bp in self._items if bp._matches(wildcard_pattern)])

    def __iter__(self) -> Iterator[ActorBlueprint]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


class ActorList:
    def __init__(self, actors: list[Actor]) -> None:
        self._actors = actors

    def filter(self, wildcard_pattern: str) -> ActorList:
        _require(wildcard_pattern, str, "ActorList.filter")
        return ActorList([a for a in self._actors if fnmatch.fnmatchcase(a.type_id, wildcard_pattern)])

    def __iter__(self) -> Iterator[Actor]:
        return iter(list(self._actors))

    def __len__(self) -> int:
        return len(self._actors)


class WorldSnapshot:
    def __init__(self, frame: int, timestamp: carla.Timestamp) -> None:
        self._frame, self._timestamp = frame, timestamp

    @property
    def frame(self) -> int:
        return self._frame

    @property
    def timestamp(self) -> carla.Timestamp:
        return self._timestamp


def copy_settings(s: carla.WorldSettings) -> carla.WorldSettings:
    out = carla.WorldSettings()
    for name in ("synchronous_mode", "no_rendering_mode", "fixed_delta_seconds", "substepping",
                 "max_substep_delta_time", "max_substeps", "max_culling_distance", "deterministic_ragdolls",
                 "tile_stream_distance", "actor_active_distance", "spectator_as_ego"):
        setattr(out, name, getattr(s, name))
    return out


def copy_weather(w: carla.WeatherParameters) -> carla.WeatherParameters:
    out = carla.WeatherParameters()
    for name, member in vars(carla.WeatherParameters).items():
        if isinstance(member, property):
            setattr(out, name, getattr(w, name))
    return out


class World:
    def __init__(self, client: Client, episode: Episode) -> None:
        self._client = client
        self._episode = episode

    def _server(self) -> FakeCarlaServer:
        """The server behind an RPC; LibCarla checks the episode before sending."""
        server = self._client._rpc()
        if server._episode is not self._episode:
            raise RuntimeError(EXPIRED_EPISODE)
        return server

    @property
    def id(self) -> int:
        return self._episode.id

    def get_map(self) -> carla.Map:
        return self._server()._episode.carla_map

    def get_settings(self) -> carla.WorldSettings:
        return copy_settings(self._server()._episode.settings)

    def apply_settings(self, settings: carla.WorldSettings, seconds: float = 0.0) -> int:
        _require(settings, carla.WorldSettings, "World.apply_settings")
        return self._server()._apply_settings(settings)

    def tick(self, seconds: float = 0.0) -> int:
        return self._server()._tick()

    def get_snapshot(self) -> WorldSnapshot:
        return self._server()._snapshot()

    def get_blueprint_library(self) -> BlueprintLibrary:
        self._server()
        return BlueprintLibrary([ActorBlueprint(spec) for spec in blueprints.BLUEPRINTS])

    def spawn_actor(self, blueprint: ActorBlueprint, transform: carla.Transform, attach_to: Actor | None = None
                    ) -> Actor:
        _require(blueprint, ActorBlueprint, "World.spawn_actor")
        _require(transform, carla.Transform, "World.spawn_actor")
        if attach_to is not None:
            _require(attach_to, Actor, "World.spawn_actor")
        record = self._server()._spawn(blueprint, transform, attach_to)
        return self._client._handle(record.id)

    def try_spawn_actor(self, blueprint: ActorBlueprint, transform: carla.Transform,
                        attach_to: Actor | None = None) -> Actor | None:
        try:
            return self.spawn_actor(blueprint, transform, attach_to)
        except RuntimeError:  # LibCarla catches std::exception here, time-outs included
            return None

    def get_actors(self) -> ActorList:
        server = self._server()
        return ActorList([self._client._handle(actor_id) for actor_id in sorted(server._episode.actors)])

    def get_actor(self, actor_id: int) -> Actor | None:
        _require(actor_id, int, "World.get_actor")
        server = self._server()
        return self._client._handle(actor_id) if actor_id in server._episode.actors else None

    def set_weather(self, weather: carla.WeatherParameters, /) -> None:
        _require(weather, carla.WeatherParameters, "World.set_weather")
        self._server()._episode.weather = copy_weather(weather)

    def get_weather(self) -> carla.WeatherParameters:
        return copy_weather(self._server()._episode.weather)

    def set_pedestrians_seed(self, seed: int) -> None:
        _require(seed, int, "World.set_pedestrians_seed")
        self._server()._episode.pedestrian_rng.seed(seed)

    def get_random_location_from_navigation(self) -> carla.Location | None:
        episode = self._server()._episode
        if not episode.navigation:
            return None
        loc = episode.pedestrian_rng.choice(episode.navigation)
        return carla.Location(x=loc.x, y=loc.y, z=loc.z)
