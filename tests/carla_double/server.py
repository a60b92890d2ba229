"""FakeCarlaServer: an in-process stand-in for the CARLA simulator, for the backend's tests.

It owns the world state (episodes, actors, traffic managers) and the tick; clients made by
``client_factory`` reach it in-process. Sensor callbacks run on a delivery thread by
default, as CARLA runs them on the client's streaming threads: ``world.tick()`` returns the
frame id as soon as the frame is simulated, and its data may arrive after that. Pass
``sensor_thread=False`` to have ``tick()`` call every callback before it returns.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import carla
import numpy as np

from . import blueprints, motion, scene, sensors
from .actors import Actor
from .blueprints import BLUEPRINTS_BY_ID, atoi
from .client import Client, TrafficManager
from .state import (ActorRecord, ControllerRecord, Episode, LightRecord, SensorRecord, VehicleRecord, build_map,
                    road_speed_limits, sidewalk_points)
from .world import ActorBlueprint, WorldSnapshot, copy_settings, copy_weather

log = logging.getLogger(__name__)

# A server that has run for a while before the client connects: frame ids are not small.
INITIAL_FRAME = 2417
_TRAFFIC_LIGHT_TYPE = "1000001"
_OPENDRIVE_MAP_PATH = "/Game/Carla/Maps/OpenDriveMap"
_STOP = object()


def valid_opendrive(text: str) -> bool:
    """Enough structure for carla's parser (it crashes rather than raising on some bad files)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return False
    roads = root.findall("road")
    return root.tag == "OpenDRIVE" and bool(roads) and all(
        r.find("planView/geometry") is not None and r.find("lanes/laneSection") is not None for r in roads)


class _Delivery:
    """Runs sensor callbacks in order, on one worker thread or inline."""

    def __init__(self, threaded: bool, errors: list[BaseException]) -> None:
        self._threaded = threaded
        self._errors = errors
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, items: list[sensors.Delivery]) -> None:
        if not self._threaded:
            for item in items:
                _run(item, self._errors)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=_worker, args=(self._queue, self._errors),
                                            name="carla-double-sensors", daemon=True)
            self._thread.start()
        for item in items:
            self._queue.put(item)

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=5.0)
            self._thread = None


def _run(item: sensors.Delivery, errors: list[BaseException]) -> None:
    callback, data, sensor_id = item
    try:
        callback(data)
    except Exception as exc:  # CARLA logs a failing callback and keeps streaming
        log.exception("sensor %d callback raised", sensor_id)
        errors.append(exc)


def _worker(items: queue.Queue[Any], errors: list[BaseException]) -> None:
    while True:
        item = items.get()
        try:
            if item is _STOP:
                return
            _run(item, errors)
        finally:
            items.task_done()


class FakeCarlaServer:
    """A small deterministic CARLA server; ``maps`` maps '/Game/Carla/Maps/Name' paths to OpenDRIVE text.

    Test hooks (none of them is CARLA API): ``reachable`` (set False to make every RPC time
    out), ``connect_attempts``, ``clients_created``, ``tick_count``, ``warnings`` (LibCarla's
    warnings, e.g. sync mode without fixed_delta_seconds), ``callback_errors`` (exceptions
    raised by sensor callbacks), ``settings``, ``weather``, ``frame``, ``map_path``,
    ``live_actor_ids()``, ``map_actor_ids()``, ``traffic_manager(port)``, ``tm_synchronous(port)``,
    ``stall_sensor()`` / ``resume_sensor()``, ``flush_sensor_data()``,
    ``freeze_traffic_light()``, ``unreal_unique_id()``, ``close()``.
    """

    def __init__(self, maps: dict[str, str], version: str = "0.9.16", reachable: bool = True,
                 host: str = "127.0.0.1", port: int = 2000, sensor_thread: bool = True) -> None:
        if not maps:
            raise ValueError("a CARLA server needs at least one map")
        for path, text in maps.items():
            if not path.startswith("/Game/") or not valid_opendrive(text):
                raise ValueError(f"{path}: expected a '/Game/...' path and OpenDRIVE text")
        self.maps = dict(maps)
        self.version = version
        self.reachable = reachable
        self.host, self.port = host, port
        self.connect_attempts = 0
        self.clients_created = 0
        self.tick_count = 0
        self.warnings: list[str] = []
        self.callback_errors: list[BaseException] = []
        self._lock = threading.RLock()
        self._frame = INITIAL_FRAME
        self._next_actor_id = 1
        self._next_unique_id = 40_011
        self._episode_ids = random.Random(port)
        self._records: dict[int, ActorRecord] = {}
        self._traffic_managers: dict[int, TrafficManager] = {}
        self._stalled: set[str | int] = set()
        self._delivery = _Delivery(sensor_thread, self.callback_errors)
        weakref.finalize(self, self._delivery.close)
        first = next(iter(self.maps))
        self._episode = self._new_episode(first, self.maps[first], carla.WorldSettings())

    # -- test hooks ---------------------------------------------------------------

    @property
    def client_factory(self) -> Callable[..., Client]:
        """Callable (host, port) -> Client, to pass where the backend would call carla.Client."""
        return self._make_client

    @property
    def settings(self) -> carla.WorldSettings:
        return copy_settings(self._episode.settings)

    @property
    def weather(self) -> carla.WeatherParameters:
        return copy_weather(self._episode.weather)

    @property
    def frame(self) -> int:
        return self._frame

    @property
    def map_path(self) -> str:
        return self._episode.map_path

    def live_actor_ids(self) -> list[int]:
        """Alive actors that clients spawned (the map's spectator and traffic lights excluded)."""
        return sorted(i for i, r in self._episode.actors.items() if r.kind not in ("spectator", "traffic_light"))

    def map_actor_ids(self) -> list[int]:
        return sorted(i for i, r in self._episode.actors.items() if r.kind in ("spectator", "traffic_light"))

    def traffic_manager(self, port: int = 8000) -> TrafficManager | None:
        """The TM on ``port`` if a client created one; read ``_synchronous_mode``, ``_random_device_seed``."""
        return self._traffic_managers.get(port)

    def tm_synchronous(self, port: int = 8000) -> bool:
        """Whether the traffic manager on ``port`` exists and is in synchronous mode."""
        tm = self._traffic_managers.get(port)
        return tm is not None and tm._synchronous_mode

    def stall_sensor(self, which: str | int) -> None:
        """Stop delivering data of every sensor of type id ``which``, or of the actor ``which``."""
        self._stalled.add(which)

    def resume_sensor(self, which: str | int) -> None:
        self._stalled.discard(which)

    def flush_sensor_data(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued sensor callback has run; False on time-out."""
        return self._delivery.flush(timeout_s)

    def freeze_traffic_light(self, opendrive_id: str, state: carla.TrafficLightState | None) -> None:
        """Hold a light in ``state`` (None: back to its cycle) from the next tick on."""
        for record in self._episode.actors.values():
            if isinstance(record, LightRecord) and record.opendrive_id == opendrive_id:
                record.frozen_state = state
                return
        raise KeyError(f"no traffic light with OpenDRIVE id {opendrive_id!r}")

    def unreal_unique_id(self, actor_id: int) -> int:
        """The Unreal object id an instance camera encodes for ``actor_id`` (G = low byte, B = next)."""
        return self._records[actor_id].unique_id

    def close(self) -> None:
        self._delivery.close()

    def __enter__(self) -> FakeCarlaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the client handles call ----------------------------------------------

    def _make_client(self, host: str = "127.0.0.1", port: int = 2000, worker_threads: int = 0) -> Client:
        client = Client(host, port, worker_threads)
        client._server = self
        self.clients_created += 1
        return client

    def _record(self, actor_id: int) -> ActorRecord:
        return self._records[actor_id]

    def _load_world(self, map_name: str, reset_settings: bool) -> Episode:
        matches = [p for p in self.maps if map_name in (p, p.rsplit("/", 1)[-1])]
        if not matches:
            raise RuntimeError(f"Map '{map_name}' not found")
        return self._replace_episode(matches[0], self.maps[matches[0]], reset_settings)

    def _generate_opendrive_world(self, opendrive: str, reset_settings: bool) -> Episode:
        if not valid_opendrive(opendrive):
            raise RuntimeError("opendrive could not be correctly parsed")
        return self._replace_episode(_OPENDRIVE_MAP_PATH, opendrive, reset_settings)

    def _replace_episode(self, map_path: str, xodr: str, reset_settings: bool) -> Episode:
        with self._lock:
            for record in self._episode.actors.values():
                self._kill(record)
            self._episode.actors.clear()
            settings = carla.WorldSettings() if reset_settings else self._episode.settings
            self._episode = self._new_episode(map_path, xodr, settings)
            return self._episode

    def _new_episode(self, map_path: str, xodr: str, settings: carla.WorldSettings) -> Episode:
        carla_map = build_map(map_path.removeprefix("/Game/"), xodr)
        episode = Episode(self._episode_ids.getrandbits(48), map_path, carla_map, copy_settings(settings),
                          copy_weather(carla.WeatherParameters.ClearNoon), road_speed_limits(xodr),
                          sidewalk_points(carla_map))
        spectator = ActorRecord(self._new_actor_id(), "spectator", "spectator", {},
                                carla.Transform(carla.Location(z=20.0), carla.Rotation(pitch=-45.0)),
                                carla.BoundingBox(), episode.id, self._new_unique_id())
        self._add(episode, spectator)
        for light in self._traffic_lights(episode):
            self._add(episode, light)
        return episode

    def _traffic_lights(self, episode: Episode) -> list[LightRecord]:
        """One light per OpenDRIVE traffic-light signal, grouped by the junction it guards."""
        carla_map = episode.carla_map
        found: dict[str, tuple[carla.Landmark, frozenset[tuple[int, int]], object]] = {}
        for lm in carla_map.get_all_landmarks_of_type(_TRAFFIC_LIGHT_TYPE):
            if lm.id in found:
                continue
            lanes = {(lm.road_id, lane) for lo, hi in lm.get_lane_validities()
                     for lane in range(min(lo, hi), max(lo, hi) + 1) if lane != 0}
            junction: object = ("alone", lm.id)
            for _, lane in sorted(lanes):
                wp = carla_map.get_waypoint_xodr(lm.road_id, lane, lm.s)
                ahead = None if wp is None else (0.0, wp.junction_id) if wp.is_junction else \
                    motion.distance_to_junction(wp, 40)
                if ahead is not None:
                    junction = ahead[1]
                    break
            found[lm.id] = (lm, frozenset(lanes), junction)
        groups: dict[object, list[str]] = {}
        for light_id, (_, _, junction) in found.items():
            groups.setdefault(junction, []).append(light_id)
        lights = []
        for light_id, (lm, lanes, junction) in found.items():
            members = groups[junction]
            loc = lm.transform.location
            box = carla.BoundingBox(carla.Location(x=loc.x, y=loc.y, z=loc.z + lm.z_offset + 3.0 + lm.height / 2.0),
                                    carla.Vector3D(0.25, max(lm.width / 2.0, 0.15), lm.height / 2.0))
            box.rotation = carla.Rotation(yaw=lm.transform.rotation.yaw)
            pole = carla.BoundingBox(carla.Location(z=2.0), carla.Vector3D(0.15, 0.15, 2.0))
            lights.append(LightRecord(
                self._new_actor_id(), "traffic.traffic_light", "traffic_light", {}, scene.copy_transform(lm.transform),
                pole, episode.id, self._new_unique_id(), opendrive_id=light_id, light_boxes=(box,),
                controlled_lanes=lanes, group_size=len(members), group_index=members.index(light_id)))
        return lights

    def _new_actor_id(self) -> int:
        self._next_actor_id += 1
        return self._next_actor_id - 1

    def _new_unique_id(self) -> int:
        self._next_unique_id += 37  # Unreal hands out ids to many objects in between
        return self._next_unique_id

    def _add(self, episode: Episode, record: ActorRecord) -> None:
        episode.actors[record.id] = record
        self._records[record.id] = record

    def _kill(self, record: ActorRecord) -> None:
        record.alive = False
        if isinstance(record, SensorRecord):
            record.listener, record.callback = None, None

    def _apply_settings(self, settings: carla.WorldSettings) -> int:
        with self._lock:
            s = copy_settings(settings)
            if s.synchronous_mode and not s.fixed_delta_seconds:
                self._warn("synchronous mode enabled with variable delta seconds. It is highly recommended to set "
                           "'fixed_delta_seconds' when running on synchronous mode.")
            elif s.synchronous_mode and s.substepping and s.fixed_delta_seconds:
                if s.fixed_delta_seconds > s.max_substep_delta_time * s.max_substeps + 1e-9:
                    self._warn("synchronous mode and substepping are enabled but the values for the simulation are "
                               "not valid. The values should fulfil fixed_delta_seconds <= max_substep_delta_time "
                               "* max_substeps. Be aware that the simulation could have non-deterministic "
                               "behaviours.")
            self._episode.settings = s
            return self._frame

    def _warn(self, message: str) -> None:
        if message not in self.warnings:  # once is enough for a test to see it
            log.warning(message)
            self.warnings.append(message)

    def _snapshot(self) -> WorldSnapshot:
        ep = self._episode
        stamp = carla.Timestamp(frame=self._frame, elapsed_seconds=ep.elapsed_s, delta_seconds=ep.delta_s,
                                platform_timestamp=time.time())
        return WorldSnapshot(self._frame, stamp)

    def _spawn(self, blueprint: ActorBlueprint, transform: carla.Transform, attach_to: Actor | None) -> ActorRecord:
        spec = BLUEPRINTS_BY_ID[blueprint.id]
        with self._lock:
            episode = self._episode
            parent = None
            if attach_to is not None:
                parent = episode.actors.get(attach_to.id)
            world_tf = scene.compose(parent.transform, transform) if parent is not None else \
                scene.copy_transform(transform)
            box = carla.BoundingBox(carla.Location(*spec.box_location), carla.Vector3D(*spec.extent))
            if spec.kind in (blueprints.VEHICLE, blueprints.WALKER):
                new_box = scene.Box.of(0, 0, 0, world_tf, box, (0, 0, 0))
                for other in episode.actors.values():
                    if other.physical and scene.boxes_overlap(new_box, scene.Box.of(
                            0, 0, 0, other.transform, other.bounding_box, (0, 0, 0))):
                        raise RuntimeError("Spawn failed because of collision at spawn position")
            record = self._new_record(spec, blueprint, world_tf, box, episode.id)
            self._add(episode, record)
            if attach_to is not None:
                if parent is None:
                    # As CARLA: the actor is spawned, then attaching fails (and the actor stays).
                    raise RuntimeError("unable to attach actor: parent actor not found")
                record.parent_id, record.relative = parent.id, scene.copy_transform(transform)
            return record

    def _new_record(self, spec: blueprints.BlueprintSpec, blueprint: ActorBlueprint, transform: carla.Transform,
                    box: carla.BoundingBox, episode_id: int) -> ActorRecord:
        common = dict(id=self._new_actor_id(), type_id=spec.id, kind=spec.kind, attributes=dict(blueprint._values),
                      transform=transform, bounding_box=box, episode_id=episode_id, unique_id=self._new_unique_id(),
                      spec=spec)
        if spec.kind == blueprints.VEHICLE:
            return VehicleRecord(**common)
        if spec.kind == blueprints.CONTROLLER:
            return ControllerRecord(**common)
        if spec.kind == blueprints.SENSOR:
            seed = atoi(blueprint._values.get("noise_seed", "0"))
            return SensorRecord(**common, rng=np.random.default_rng(seed))
        return ActorRecord(**common)

    def _destroy(self, actor_id: int) -> str:
        with self._lock:
            record = self._episode.actors.pop(actor_id, None)
            if record is None:
                return "unable to destroy actor: not found"
            self._kill(record)
            return ""

    def _traffic_manager(self, port: int) -> TrafficManager:
        with self._lock:
            if port not in self._traffic_managers:
                self._traffic_managers[port] = TrafficManager(port, self)
            return self._traffic_managers[port]

    def _set_autopilot(self, record: VehicleRecord, enabled: bool, tm_port: int) -> None:
        with self._lock:
            self._traffic_manager(tm_port)
            record.autopilot, record.tm_port, record.waypoint = enabled, tm_port, None

    def _is_stalled(self, record: SensorRecord) -> bool:
        return record.type_id in self._stalled or record.id in self._stalled

    def _tick(self) -> int:
        with self._lock:
            episode = self._episode
            dt = episode.settings.fixed_delta_seconds or motion.DEFAULT_DT_S
            if episode.settings.synchronous_mode:
                for port in {r.tm_port for r in episode.alive("vehicle") if isinstance(r, VehicleRecord)
                             and r.autopilot}:
                    if not self._traffic_managers[port]._synchronous_mode:
                        self._warn(f"world in synchronous mode but traffic manager {port} is not: autopilot "
                                   f"vehicles would not follow the ticks deterministically")
            self._frame += 1
            episode.elapsed_s += dt
            episode.delta_s = dt
            rngs = {port: tm._rng for port, tm in self._traffic_managers.items()}
            contacts = motion.step(episode, dt, rngs)
            deliveries = sensors.produce(episode, self._frame, contacts, dt, self._is_stalled)
            self.tick_count += 1
            frame = self._frame
        self._delivery.submit(deliveries)
        return frame
