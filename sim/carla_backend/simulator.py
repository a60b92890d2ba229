"""The ``Simulator`` protocol on a CARLA server (0.9.15 / 0.9.16).

Lockstep as on the built-in simulator: synchronous mode with ``fixed_delta_seconds =
dt_s``, the Traffic Manager in synchronous mode with the scenario's seed, and every
sensor's data of a tick collected before the observation is returned. The same
scenario file drives both backends: a shipped town or a ``.xodr`` is generated on the
server from the same OpenDRIVE (``generate_opendrive_world``), a CARLA town name
(``Town10HD_Opt``) is loaded as is; the route, the sensors (``sim.sensors.suite``), the
weather names and the labels are the same, and every conversion to REP 103 goes through
``sim.carla_frames``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import carla
import numpy as np

from drivestack.schema import ActorKind, Box3D, CameraImage, LidarScan, Observation, Route, VehicleControl
from sim import carla_frames, towns
from sim.builtin import DEFAULT_DT_S, load_town, plan_scenario_route
from sim.carla_backend import cleanup
from sim.carla_backend.blueprints import (
    camera_sensor_specs, gnss_sensor_spec, imu_sensor_spec, lidar_sensor_spec)
from sim.carla_backend.connection import CarlaEndpoint, ClientFactory, connect
from sim.carla_backend.errors import CarlaConnectionError, CarlaError, CarlaSensorTimeout, CarlaTownError
from sim.carla_backend.ground_truth import box_samples, carla_boxes_3d, carla_ground_truth
from sim.carla_backend.sensor_data import (
    decode_depth_m, decode_instance, decode_rgb, decode_semantic, decode_semantic_lidar, gnss_reading, imu_reading,
    instance_codes, match_instance_codes)
from sim.carla_backend.weather import carla_weather, headlights_on
from sim.carla_backend.world_state import ActorIds, actor_states, collided_ids, ego_state, light_state, traffic_lights
from sim.pedestrians import crossing_path
from sim.protocol import EpisodeMapAndRoute, SimulatorError
from sim.road_map import RoadMap
from sim.route_progress import RouteProgress
from sim.scenario import Scenario, ScenarioError
from sim.sensors.camera_model import CameraConfig
from sim.vehicle_dynamics import VehicleParams

log = logging.getLogger(__name__)

EGO_BLUEPRINT = "vehicle.lincoln.mkz_2020"  # the CARLA leaderboard's ego
# Ordinary cars for NPC traffic (no trucks, bikes or emergency vehicles): the same
# mix of sizes the built-in traffic has; the ones the server lacks are skipped.
NPC_BLUEPRINTS = ("vehicle.audi.a2", "vehicle.citroen.c3", "vehicle.lincoln.mkz_2020", "vehicle.mini.cooper_s",
                  "vehicle.nissan.micra", "vehicle.tesla.model3", "vehicle.toyota.prius")
SPAWN_LIFT_M = 0.3  # spawn above the road so the wheels do not start inside it
NPC_SPACING_M = 12.0  # between NPC spawn points sampled from the lane graph
KEEP_CLEAR_M = 15.0  # no NPC this close to the ego's start
WALK_SPEED_RANGE_MPS = (1.1, 1.6)


@dataclass
class _Stream:
    """One sensor's data, collected tick by tick from CARLA's callback thread."""

    name: str
    actor: Any
    data: queue.Queue

    def frame(self, frame: int, timeout_s: float, address: str) -> Any:
        """The data of ``frame``, dropping older ones; CarlaSensorTimeout after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                item = self.data.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise CarlaSensorTimeout(
                    f"sensor {self.name} ({self.actor.type_id}) sent no data for frame {frame} within {timeout_s:g} s "
                    f"(CARLA at {address}); the server may be overloaded or the sensor broken") from None
            if item.frame == frame:
                return item
            if item.frame > frame:
                raise CarlaSensorTimeout(f"sensor {self.name} ({self.actor.type_id}) skipped frame {frame} "
                                         f"(sent {item.frame}) (CARLA at {address})")

    def events(self, frame: int) -> list[Any]:
        """Event sensors (collision, lane invasion) send only when something happens."""
        out = []
        while True:
            try:
                item = self.data.get_nowait()
            except queue.Empty:
                return out
            if item.frame <= frame:
                out.append(item)
            else:  # a later frame's event (cannot happen in lockstep); keep it for then
                self.data.put(item)
                return out


class CarlaSimulator(EpisodeMapAndRoute):
    """Connects on construction (so a wrong host, port or version fails at once)."""

    reports_collisions = True  # CARLA's collision sensor, with walls and props the boxes do not know

    def __init__(self, endpoint: CarlaEndpoint = CarlaEndpoint(), dt_s: float = DEFAULT_DT_S,
                 vehicle_params: VehicleParams | None = None, client_factory: ClientFactory | None = None,
                 sensor_timeout_s: float | None = None) -> None:
        if not (math.isfinite(dt_s) and 0 < dt_s <= 0.5):
            raise ValueError(f"dt_s={dt_s} must be in (0, 0.5] seconds")
        self.dt_s = dt_s
        self.endpoint = endpoint
        self.vehicle = vehicle_params or VehicleParams.load()
        self.sensor_timeout_s = sensor_timeout_s or endpoint.timeout_s
        self._client = connect(endpoint, client_factory)
        self._world = self._call(self._client.get_world, "get the world")
        # What the server ran with before us, restored on close (asynchronous, usually).
        self._original_settings = self._world.get_settings()
        self._loaded_key: tuple[str, str] | None = None
        self._actors: list[Any] = []  # everything spawned this episode, in spawn order
        self._map: RoadMap | None = None
        self._route: Route | None = None
        self._closed = False
        cleanup.register(self)

    # -- protocol ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.endpoint.address

    def reset(self, scenario: Scenario) -> Observation:
        if self._closed:
            raise SimulatorError("this CARLA backend is closed")
        self._destroy_episode()
        self.scenario = scenario
        try:
            return self._reset(scenario)
        except BaseException:
            self._destroy_episode()  # nothing half-spawned stays on the server
            raise

    def step(self, control: VehicleControl) -> Observation:
        if self._map is None or not self._actors:
            raise SimulatorError("reset() the simulator with a scenario first")
        if not isinstance(control, VehicleControl):
            raise TypeError(f"step() takes a VehicleControl, got {type(control).__name__}")
        if not self._autopilot:  # else the Traffic Manager drives (engage_autopilot)
            self._ego.apply_control(carla_frames.control_to_carla(control))
        frame = self._tick()
        if self._autopilot:
            control = self.applied_control
        self._steer_angle_rad = control.steer * self.vehicle.max_steer_angle_rad
        self.step_count += 1
        self._trigger_crossings()
        return self._observe(frame)

    def engage_autopilot(self) -> None:
        """CARLA's Traffic Manager drives the ego along the episode's route, for data
        collection; from now on ``step`` ignores the control it is given and
        ``applied_control`` is what the Traffic Manager applied."""
        if self._map is None or not self._actors:
            raise SimulatorError("reset() the simulator with a scenario first")
        tm = self._traffic_manager()
        self._ego.set_autopilot(True, tm.get_port())
        tm.set_path(self._ego, self._route_locations())
        self._autopilot = True

    @property
    def applied_control(self) -> VehicleControl:
        """The control in effect on the ego during the last tick (the one that produced
        the latest observation), in drivestack's conventions."""
        return carla_frames.control_from_carla(self._ego.get_control())

    def _route_locations(self, spacing_m: float = 5.0) -> list[carla.Location]:
        points, last = [], None
        for wp in self._route.waypoints:
            if last is None or math.dist(last, (wp.x_m, wp.y_m)) >= spacing_m:
                points.append(self._ground_transform(wp.x_m, wp.y_m, wp.yaw_rad, 0.0).location)
                last = (wp.x_m, wp.y_m)
        return points

    def close(self) -> None:
        """Destroy what we spawned and give the server back its settings; idempotent."""
        if self._closed:
            return
        self._closed = True
        cleanup.unregister(self)
        errors = []
        try:
            self._destroy_episode()
        except RuntimeError as exc:
            errors.append(f"destroying actors: {exc}")
        try:
            self._traffic_manager().set_synchronous_mode(False)
            self._client.get_world().apply_settings(self._original_settings)
        except RuntimeError as exc:
            errors.append(f"restoring the world settings: {exc}")
        self._map = self._route = None
        if errors:
            log.error("CARLA at %s was not left clean: %s", self.address, "; ".join(errors))

    def __enter__(self) -> CarlaSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- episode set-up --------------------------------------------------------------------

    def _reset(self, scenario: Scenario) -> Observation:
        self._world, self._map = self._load_world(scenario.town)
        self._carla_map = self._world.get_map()
        settings = self._world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = self.dt_s
        self._world.apply_settings(settings)
        tm = self._traffic_manager()
        tm.set_synchronous_mode(True)
        tm.set_random_device_seed(scenario.seed)
        self._world.set_pedestrians_seed(scenario.seed)
        self._world.set_weather(carla_weather(scenario.weather))
        rng = np.random.default_rng(scenario.seed)
        self._route = plan_scenario_route(self._map, scenario, rng)
        self._progress = RouteProgress(self._route)
        self._route_lanes = [w.lane_segment_id for w in self._route.waypoints if w.lane_segment_id >= 0]
        self._pending_crossings = sorted(scenario.pedestrian_crossings, key=lambda c: c.route_distance_m)
        self._ids = ActorIds()
        self._others: list[tuple[int, ActorKind, Any]] = []
        self._walker_controllers: list[tuple[Any, float]] = []
        library = self._world.get_blueprint_library()
        self._spawn_ego(library, scenario.weather)
        self._spawn_sensors(library, scenario)
        self._spawn_npcs(library, scenario.npc_vehicles, rng)
        self._spawn_walkers(library, scenario.pedestrians, rng)
        # Lights neither move nor change ids: ask the server once per episode, not per frame.
        self._lights = [(tl, tl.get_opendrive_id()) for tl in self._world.get_actors().filter("traffic.traffic_light*")]
        light_ids = {g.opendrive_id: g.light_id for g in self._map.signals}
        self._light_boxes = [(light_ids[opendrive_id], box) for tl, opendrive_id in self._lights
                             if opendrive_id in light_ids for box in tl.get_light_boxes()]
        self._settle()  # walker controllers need a tick before start()
        for controller, speed_mps in self._walker_controllers:
            controller.start()
            controller.go_to_location(self._world.get_random_location_from_navigation())
            controller.set_max_speed(speed_mps)
        self.step_count = 0
        self._autopilot = False
        self._contacts: frozenset[int] = frozenset()
        self._steer_angle_rad = 0.0
        self._instance_of_code: dict[str, dict[int, int]] = {}  # per camera: Unreal object code -> instance id
        return self._observe(self._tick())

    def _load_world(self, town: str) -> tuple[Any, RoadMap]:
        """Our OpenDRIVE towns are generated on the server; CARLA's own are loaded by name."""
        if town in towns.TOWNS or town.endswith(".xodr"):
            road_map, _ = load_town(town)
            key = ("xodr", hashlib.sha256(road_map.xodr_text.encode()).hexdigest())
            if key != self._loaded_key:
                log.info("generating %s on the CARLA server at %s", road_map.name, self.address)
                parameters = carla.OpendriveGenerationParameters(
                    vertex_distance=2.0, max_road_length=50.0, wall_height=0.0, additional_width=0.6,
                    smooth_junctions=True, enable_mesh_visibility=True, enable_pedestrian_navigation=True)
                self._world = self._call(lambda: self._client.generate_opendrive_world(road_map.xodr_text, parameters),
                                         f"generate {road_map.name}")
                self._loaded_key = key
            return self._world, road_map
        available = self._call(self._client.get_available_maps, "list its maps")
        matches = [m for m in available if m == town or m.rsplit("/", 1)[-1] == town]
        if not matches:
            names = ", ".join(sorted(m.rsplit("/", 1)[-1] for m in available)) or "none"
            raise CarlaTownError(f"town {town!r} is not on the CARLA server at {self.address} (it has: {names}); "
                                 f"or use a shipped town ({', '.join(towns.TOWNS)}) or a .xodr file, which the "
                                 f"server generates")
        key = ("map", matches[0])
        if key != self._loaded_key:
            log.info("loading %s on the CARLA server at %s", matches[0], self.address)
            self._world = self._call(lambda: self._client.load_world(matches[0]), f"load {matches[0]}")
            self._loaded_key = key
            self._server_map = RoadMap(town, self._world.get_map().to_opendrive())
        return self._world, self._server_map

    def _traffic_manager(self) -> Any:
        return self._client.get_trafficmanager(self.endpoint.traffic_manager_port)

    def _spawn(self, blueprint: Any, transform: carla.Transform, attach_to: Any = None) -> Any:
        actor = self._world.spawn_actor(blueprint, transform, attach_to)
        self._actors.append(actor)
        return actor

    def _ground_transform(self, x_m: float, y_m: float, yaw_rad: float, lift_m: float = SPAWN_LIFT_M
                          ) -> carla.Transform:
        location = carla_frames.xyz_to_location(x_m, y_m, 0.0)
        waypoint = self._carla_map.get_waypoint(location)
        z_m = (waypoint.transform.location.z if waypoint is not None else 0.0) + lift_m
        return carla.Transform(carla_frames.xyz_to_location(x_m, y_m, z_m),
                               carla.Rotation(yaw=carla_frames.yaw_rad_to_deg(yaw_rad)))

    def _spawn_ego(self, library: Any, weather: str) -> None:
        blueprint = library.find(EGO_BLUEPRINT)
        if blueprint.has_attribute("role_name"):
            blueprint.set_attribute("role_name", "hero")
        start = self._route.waypoints[0]
        try:
            self._ego = self._spawn(blueprint, self._ground_transform(start.x_m, start.y_m, start.yaw_rad))
        except RuntimeError as exc:
            raise ScenarioError(f"scenario {self.scenario.name}: the ego cannot be spawned at its start "
                                f"({start.x_m:.1f}, {start.y_m:.1f}) on the CARLA server: {exc}") from None
        self._ids.add(self._ego.id, ActorKind.VEHICLE)
        if headlights_on(weather):
            self._ego.set_light_state(carla.VehicleLightState(carla.VehicleLightState.Position
                                                              | carla.VehicleLightState.LowBeam))
        extent = self._ego.bounding_box.extent
        self.vehicle = replace(self.vehicle, length_m=2.0 * extent.x, width_m=2.0 * extent.y,
                               height_m=2.0 * extent.z)

    def _spawn_sensors(self, library: Any, scenario: Scenario) -> None:
        """The scenario's sensors, from the same config as the built-in simulator's."""
        suite = scenario.sensors
        centre = carla_frames.box_ground_centre(self._ego.bounding_box)  # our mounts are relative to it
        self._streams: dict[str, _Stream] = {}
        self._events: dict[str, _Stream] = {}
        self._cameras: tuple[CameraConfig, ...] = suite.cameras
        for camera in suite.cameras:
            for kind, blueprint_id, attributes, mount in camera_sensor_specs(camera, centre):
                self._listen(self._streams, f"{camera.name}.{kind}", library, blueprint_id, attributes, mount)
        if suite.lidar is not None:
            self._listen(self._streams, "lidar", library, *lidar_sensor_spec(suite.lidar, centre))
        latitude_deg = self._map.geolocation(0.0, 0.0)[0]
        self._listen(self._streams, "imu", library, *imu_sensor_spec(suite.imu, scenario.seed, centre))
        self._listen(self._streams, "gnss", library, *gnss_sensor_spec(suite.gnss, scenario.seed, latitude_deg, centre))
        self._listen(self._events, "collision", library, "sensor.other.collision", {}, carla.Transform())
        self._listen(self._events, "lane_invasion", library, "sensor.other.lane_invasion", {}, carla.Transform())
        self._lidar_rng = np.random.default_rng([scenario.seed, 3])  # the built-in LiDAR's stream

    def _listen(self, streams: dict[str, _Stream], name: str, library: Any, blueprint_id: str,
                attributes: dict[str, str], mount: carla.Transform) -> None:
        blueprint = library.find(blueprint_id)
        for key, value in attributes.items():
            blueprint.set_attribute(key, value)
        sensor = self._spawn(blueprint, mount, self._ego)
        stream = _Stream(name, sensor, queue.Queue())
        sensor.listen(stream.data.put)
        streams[name] = stream

    def _spawn_points(self, rng: np.random.Generator) -> list[carla.Transform]:
        """The server's spawn points, or (generated towns have none) points on the lane graph."""
        points = list(self._carla_map.get_spawn_points())
        start = self._route.waypoints[0]
        if not points:
            for lane in self._map.lanes:
                if lane.in_junction or lane.length_m < 2 * NPC_SPACING_M:
                    continue
                stations = np.arange(NPC_SPACING_M / 2, lane.length_m - NPC_SPACING_M / 2, NPC_SPACING_M)
                for i in np.searchsorted(lane.s_m, stations).tolist():
                    x, y = lane.points_xy[i]
                    points.append(self._ground_transform(float(x), float(y), float(lane.yaw_rad[i])))
        far = [p for p in points
               if math.dist(carla_frames.location_to_xyz(p.location)[:2], (start.x_m, start.y_m)) > KEEP_CLEAR_M]
        return [far[i] for i in rng.permutation(len(far))]

    def _spawn_npcs(self, library: Any, count: int, rng: np.random.Generator) -> None:
        if count == 0:
            return
        blueprints = sorted((b for b in library.filter("vehicle.*") if b.id in NPC_BLUEPRINTS), key=lambda b: b.id)
        if not blueprints:
            raise CarlaError(f"the CARLA server at {self.address} has none of the NPC cars {', '.join(NPC_BLUEPRINTS)}")
        port = self._traffic_manager().get_port()
        spawned = 0
        for transform in self._spawn_points(rng):
            if spawned == count:
                break
            actor = self._world.try_spawn_actor(blueprints[int(rng.integers(len(blueprints)))], transform)
            if actor is None:  # occupied: try the next point
                continue
            self._actors.append(actor)
            actor.set_autopilot(True, port)
            self._others.append((self._ids.add(actor.id, ActorKind.VEHICLE), ActorKind.VEHICLE, actor))
            spawned += 1
        if spawned < count:
            raise ScenarioError(f"scenario {self.scenario.name}: only {spawned} of {count} NPC vehicles fit on "
                                f"{self._map.name} on the CARLA server")

    def _spawn_walkers(self, library: Any, count: int, rng: np.random.Generator) -> None:
        if count == 0 and not self._pending_crossings:
            return
        self._walker_blueprints = sorted(library.filter("walker.pedestrian.*"), key=lambda b: b.id)
        self._controller_blueprint = library.find("controller.ai.walker")
        if not self._walker_blueprints:
            raise CarlaError(f"the CARLA server at {self.address} has no walker.pedestrian.* blueprints")
        for _ in range(count):
            location = self._world.get_random_location_from_navigation()
            if location is None:
                raise ScenarioError(f"scenario {self.scenario.name}: {self._map.name} has no pedestrian navigation "
                                    f"on the CARLA server; set pedestrians: 0")
            self._spawn_walker(carla.Transform(location + carla.Location(z=1.0)), rng)

    def _spawn_walker(self, transform: carla.Transform, rng: np.random.Generator) -> Any:
        blueprint = self._walker_blueprints[int(rng.integers(len(self._walker_blueprints)))]
        walker = self._world.try_spawn_actor(blueprint, transform)
        if walker is None:
            return None
        self._actors.append(walker)
        self._others.append((self._ids.add(walker.id, ActorKind.PEDESTRIAN), ActorKind.PEDESTRIAN, walker))
        controller = self._spawn(self._controller_blueprint, carla.Transform(), walker)
        self._walker_controllers.append((controller, float(rng.uniform(*WALK_SPEED_RANGE_MPS))))
        return controller

    def _trigger_crossings(self) -> None:
        """A scenario's scripted crossing: a walker from the right kerb to the far one."""
        if not self._pending_crossings:
            return
        ego = self._ego_pose
        progress = self._progress.update(ego[0], ego[1])
        crossing = self._pending_crossings[0]
        if progress < crossing.route_distance_m - crossing.trigger_distance_m:
            return
        self._pending_crossings.pop(0)
        (x0, y0), (x1, y1) = crossing_path(self._map, self._route, self._progress, crossing)
        controller = self._spawn_walker(self._ground_transform(x0, y0, math.atan2(y1 - y0, x1 - x0), 1.0),
                                        np.random.default_rng([self.scenario.seed, 2]))
        if controller is None:
            log.warning("the scripted pedestrian of %s could not be spawned at (%.1f, %.1f)", self.scenario.name,
                        x0, y0)
            return
        self._walker_controllers.pop()
        controller.start()
        controller.go_to_location(carla_frames.xyz_to_location(x1, y1, 0.0))
        controller.set_max_speed(crossing.speed_mps)

    def _destroy_episode(self) -> None:
        if not self._actors:
            return
        # Controllers and sensors first (they hang on walkers and the ego), then the rest.
        order = sorted(self._actors, key=lambda a: 0 if a.type_id.startswith(("controller.", "sensor.")) else 1)
        for actor in order:
            if actor.type_id.startswith("controller."):
                actor.stop()
        errors = cleanup.destroy_actors(self._client, order)
        self._actors = []
        if errors:
            log.warning("CARLA at %s: %s", self.address, "; ".join(errors))

    # -- ticking and observing ---------------------------------------------------------------

    def _call(self, fn: Any, what: str) -> Any:
        try:
            return fn()
        except RuntimeError as exc:
            raise CarlaConnectionError(f"the CARLA server at {self.address} did not {what}: {exc}") from None

    def _tick(self) -> int:
        return self._call(lambda: self._world.tick(self.endpoint.timeout_s), "tick (it stopped answering)")

    def _settle(self) -> None:
        """One tick for the spawns to take effect; its data (a new sensor's first frame may
        come late) is dropped, the next observation waits for its own frame."""
        self._tick()
        for stream in (*self._streams.values(), *self._events.values()):
            stream.events(sys.maxsize)

    @property
    def stamp_ns(self) -> int:
        return self.step_count * int(round(self.dt_s * 1e9))

    def _observe(self, frame: int) -> Observation:
        data = {name: stream.frame(frame, self.sensor_timeout_s, self.address)
                for name, stream in self._streams.items()}
        stamp_ns = self.stamp_ns
        ego = ego_state(self._ego, stamp_ns, self._steer_angle_rad)
        self._ego_pose = (ego.x_m, ego.y_m, ego.yaw_rad)
        actors = actor_states(self._others, self._map)
        lights = traffic_lights(self._map, {opendrive_id: light_state(tl.get_state())
                                            for tl, opendrive_id in self._lights})
        q = self._map.nearest_lane(ego.x_m, ego.y_m, ego.yaw_rad, max_distance_m=4.0)
        on_lane = q is not None and abs(q.lateral_offset_m) < self._map.lanes[q.segment_id].width_m / 2 + 0.5
        ego_lane = q.segment_id if on_lane else -1
        collisions, self._contacts = collided_ids(self._events["collision"].events(frame), self._ids, self._contacts)
        invasions = tuple(str(m.type) for event in self._events["lane_invasion"].events(frame)
                          for m in event.crossed_lane_markings)
        needs_boxes = self.scenario.sensors.ground_truth or any("instance" in c.kinds for c in self._cameras)
        boxes = self._boxes(ego, actors, lights) if needs_boxes else None
        images = tuple(self._camera_image(camera, data, stamp_ns, boxes) for camera in self._cameras)
        scan = None
        if "lidar" in data:
            config = self.scenario.sensors.lidar
            points = decode_semantic_lidar(data["lidar"], config.atmosphere_attenuation_rate, self._lidar_rng,
                                           config.noise_stddev_m)
            scan = LidarScan(stamp_ns, points)
        truth = None
        if self.scenario.sensors.ground_truth:
            truth = carla_ground_truth(ego=ego, boxes=boxes, ego_lane_segment_id=ego_lane, road_map=self._map,
                                       cameras=self._cameras, images=images, lane_sequence=self._route_lanes)
        return Observation(stamp_ns, ego, actors, lights, ego_lane, imu=imu_reading(data["imu"], stamp_ns),
                           gnss=gnss_reading(data["gnss"], stamp_ns, self._carla_map), collisions=collisions,
                           lane_invasions=invasions,
                           cameras=images, lidar=scan, ground_truth=truth)

    def _boxes(self, ego, actors, lights) -> tuple[Box3D, ...]:
        others = [(actor_id, kind, a.get_transform(), a.bounding_box) for actor_id, kind, a in self._others]
        return carla_boxes_3d(ego, self._ego.get_transform(), others, {a.actor_id: a.speed_mps for a in actors},
                              lights, self._light_boxes)

    def _camera_image(self, camera: CameraConfig, data: dict[str, Any], stamp_ns: int,
                      boxes: tuple[Box3D, ...] | None) -> CameraImage:
        def get(kind: str) -> Any:
            return data.get(f"{camera.name}.{kind}")

        rgb, depth, semantic, instance = get("rgb"), get("depth"), get("semantic"), get("instance")
        depth_m = decode_depth_m(depth) if depth is not None else None
        ids = None
        if instance is not None:
            codes = instance_codes(instance)
            # Which Unreal object code is which labelled object: box points the camera sees vote.
            points, labels = box_samples(boxes or ())
            uv, point_depth = camera.project(points)
            front = point_depth > 0.1
            known = self._instance_of_code.setdefault(camera.name, {})
            known.update(match_instance_codes(codes, uv[front], labels[front], depth_m,
                                              point_depth[front] if depth_m is not None else None))
            ids = decode_instance(instance, known)
        return CameraImage(camera.name, stamp_ns, camera.intrinsics,
                           rgb=decode_rgb(rgb) if rgb is not None else None, depth_m=depth_m,
                           semantic=decode_semantic(semantic) if semantic is not None else None, instance=ids)
