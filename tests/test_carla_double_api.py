"""The CARLA test double stays true to the real carla 0.9.16 API and to the backend's contract.

API: every public member of every double class must exist on the real class of the same
name, be a property where CARLA's is a property and a method where CARLA's is a
Boost.Python function, and take the parameters CARLA's docstring names, in order, with
the same optional ones (and the same simple default values). The double may leave out
trailing optional parameters, never add or rename one. Boost.Python's unnamed ``argN``
parameters can only be passed by position, so the double must make them positional-only.

Contract: the double offers exactly the calls the backend (sim/carla_backend) makes
(CONTRACT below); adding a call means adding it here and to the double.

Behaviour: a few fast end-to-end checks of the simulated server.
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import re
import threading
from dataclasses import dataclass

import carla
import numpy as np
import pytest

import tests.carla_double as double
from sim.towns import town_path
from tests.carla_double import FakeCarlaServer

# -- the backend's contract ------------------------------------------------------------

_ACTOR = {"id", "type_id", "attributes", "is_alive", "parent", "bounding_box", "get_transform", "get_location",
          "get_velocity", "get_angular_velocity", "get_acceleration", "destroy"}
_SENSOR_DATA = {"frame", "timestamp", "transform"}  # carla.SensorData: every measurement has them
CONTRACT: dict[str, set[str]] = {
    "Client": {"__init__", "set_timeout", "get_client_version", "get_server_version", "get_available_maps",
               "get_world", "load_world", "generate_opendrive_world", "get_trafficmanager", "apply_batch_sync"},
    "World": {"id", "get_map", "get_settings", "apply_settings", "tick", "get_snapshot", "get_blueprint_library",
              "spawn_actor", "try_spawn_actor", "get_actors", "get_actor", "set_weather", "get_weather",
              "set_pedestrians_seed", "get_random_location_from_navigation"},
    "WorldSnapshot": {"frame", "timestamp"},
    "ActorList": {"filter", "__iter__", "__len__"},
    # filter() returns a BlueprintLibrary in CARLA (not a list): iterable and sized.
    "BlueprintLibrary": {"find", "filter", "__iter__", "__len__"},
    "ActorBlueprint": {"id", "tags", "has_attribute", "set_attribute"},
    "Actor": _ACTOR,
    "Vehicle": _ACTOR | {"apply_control", "get_control", "set_autopilot", "set_light_state"},
    "Walker": _ACTOR,
    "WalkerAIController": _ACTOR | {"start", "go_to_location", "set_max_speed", "stop"},
    "TrafficLight": _ACTOR | {"get_state", "get_opendrive_id", "get_light_boxes"},
    "Sensor": _ACTOR | {"listen", "stop", "is_listening"},
    "TrafficManager": {"get_port", "set_synchronous_mode", "set_random_device_seed", "set_path"},
    "Map": {"get_spawn_points"},  # a real carla.Map subclass: everything else is carla's own
    "Response": {"actor_id", "error"},
    "SensorData": _SENSOR_DATA,
    "Image": _SENSOR_DATA | {"width", "height", "fov", "raw_data"},
    "SemanticLidarMeasurement": _SENSOR_DATA | {"channels", "raw_data"},
    "GnssMeasurement": _SENSOR_DATA | {"latitude", "longitude", "altitude"},
    "IMUMeasurement": _SENSOR_DATA | {"accelerometer", "gyroscope", "compass"},
    "CollisionEvent": _SENSOR_DATA | {"other_actor", "normal_impulse"},
    "LaneInvasionEvent": _SENSOR_DATA | {"crossed_lane_markings"},
}
PAIRS: list[tuple[type, type]] = [
    (getattr(double, name), getattr(carla, name)) for name in CONTRACT if name not in ("Response",)
] + [(double.command.Response, carla.command.Response)]

# -- reading CARLA's Boost.Python signatures ------------------------------------------------

_PARAM = re.compile(r"\((?P<type>[^()]*)\)(?P<name>\w+)(?:=(?P<default>'(?:[^'\\]|\\.)*'|<[^<>]*>|[^\s,\[\]]+))?")
_PROTOCOL = {"__init__", "__iter__", "__len__", "__getitem__", "__contains__", "__call__", "__bool__", "__eq__",
             "__ne__", "__hash__"}


@dataclass(frozen=True)
class RealParam:
    name: str
    optional: bool
    default: str | None


def boost_overloads(function: object, name: str) -> list[list[RealParam]]:
    """Each overload's parameters, from lines like
    ``spawn_actor( (World)arg1, (ActorBlueprint)blueprint [, (Actor)attach_to=None ...]) -> Actor :``
    (the first parameter, ``self``, is dropped)."""
    overloads = []
    for line in (getattr(function, "__doc__", None) or "").splitlines():
        line = line.strip()
        if not line.startswith(name + "(") or ") ->" not in line:
            continue
        body = line[len(name) + 1:line.rindex(") ->")]
        params = [RealParam(m["name"], "[" in body[:m.start()], m["default"]) for m in _PARAM.finditer(body)]
        overloads.append(params[1:])
    return overloads


def _is_boost_function(member: object) -> bool:
    return type(member).__name__ == "function" and type(member).__module__ == "Boost.Python"


def _constructible(real_cls: type) -> bool:
    return _is_boost_function(inspect.getattr_static(real_cls, "__init__"))


def public_members(cls: type) -> dict[str, object]:
    """Members the double defines (its own classes only), public names and protocol dunders."""
    members: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__.split(".")[0] in ("carla", "Boost"):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") or name in _PROTOCOL:
                members[name] = value
    return members


def _literal(text: str) -> tuple[bool, object]:
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False, None


def _parameter_problems(where: str, params: list[inspect.Parameter], real: list[RealParam]) -> list[str]:
    kinds = inspect.Parameter
    problems = [f"{where}: parameter {p.name!r} is {p.kind.description}; CARLA's parameters are positional"
                for p in params if p.kind in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD, kinds.KEYWORD_ONLY)]
    if len(params) > len(real):
        problems.append(f"{where}: adds {[p.name for p in params[len(real):]]}, which carla does not take")
    for p, r in zip(params, real):
        unnamed = re.fullmatch(r"arg\d+", r.name) is not None
        if unnamed and p.kind is not kinds.POSITIONAL_ONLY:
            problems.append(f"{where}: {p.name!r} must be positional-only (carla's {r.name} has no keyword name)")
        elif not unnamed and p.name != r.name:
            problems.append(f"{where}: parameter {p.name!r} is called {r.name!r} in carla")
        elif not unnamed and p.kind is kinds.POSITIONAL_ONLY:
            problems.append(f"{where}: {p.name!r} is positional-only, carla also takes it by keyword")
        has_default = p.default is not inspect.Parameter.empty
        if r.optional != has_default:
            problems.append(f"{where}: {p.name!r} is {'optional' if r.optional else 'required'} in carla")
        elif r.optional and r.default is not None:
            simple, value = _literal(r.default)
            if simple and (type(value), value) != (type(p.default), p.default):
                problems.append(f"{where}: {p.name!r} defaults to {p.default!r}, carla's to {r.default}")
    problems += [f"{where}: leaves out carla's required parameter {r.name!r}" for r in real[len(params):]
                 if not r.optional]
    return problems


def api_mismatches(double_cls: type, real_cls: type) -> list[str]:
    """Every way ``double_cls`` differs from ``real_cls`` (empty when it is a faithful subset)."""
    problems = []
    if double_cls.__name__ != real_cls.__name__:
        problems.append(f"{double_cls.__name__} is named {real_cls.__name__} in carla")
    for name, member in public_members(double_cls).items():
        where = f"{double_cls.__name__}.{name}"
        if name == "__init__" and not _constructible(real_cls):
            continue  # carla cannot build it from Python: the double's constructor is its own business
        try:
            real = inspect.getattr_static(real_cls, name)
        except AttributeError:
            problems.append(f"{where}: carla.{real_cls.__name__} has no {name!r}")
            continue
        if isinstance(real, property):
            if not isinstance(member, property):
                problems.append(f"{where}: a property in carla, not a method")
            continue
        if not _is_boost_function(real):
            problems.append(f"{where}: carla's {name!r} is a {type(real).__name__}, not a method or property")
            continue
        if not inspect.isfunction(member):
            problems.append(f"{where}: a method in carla, not a {type(member).__name__}")
            continue
        params = list(inspect.signature(member).parameters.values())[1:]
        candidates = [_parameter_problems(where, params, overload) for overload in boost_overloads(real, name)]
        if not candidates:
            problems.append(f"{where}: no signature found in carla's docstring")
        elif all(candidates):
            problems += min(candidates, key=len)
    return problems


# -- API and contract ------------------------------------------------------------------------


def test_parser_reads_boost_signatures() -> None:
    [spawn] = boost_overloads(carla.World.spawn_actor, "spawn_actor")
    assert [(p.name, p.optional, p.default) for p in spawn[:3]] == [
        ("blueprint", False, None), ("transform", False, None), ("attach_to", True, "None")]
    assert [p.name for p in boost_overloads(carla.Client.__init__, "__init__")[0]] == ["host", "port", "worker_threads"]
    assert len(boost_overloads(carla.World.get_actors, "get_actors")) == 2


@pytest.mark.parametrize("double_cls, real_cls", PAIRS, ids=[d.__name__ for d, _ in PAIRS])
def test_double_matches_real_api(double_cls: type, real_cls: type) -> None:
    assert api_mismatches(double_cls, real_cls) == []


@pytest.mark.parametrize("double_cls, real_cls", PAIRS, ids=[d.__name__ for d, _ in PAIRS])
def test_double_offers_exactly_the_contract(double_cls: type, real_cls: type) -> None:
    offered = set(public_members(double_cls))
    if not _constructible(real_cls):
        offered.discard("__init__")
    assert offered == CONTRACT[double_cls.__name__]


def test_checker_catches_drift() -> None:
    """A throwaway class with typical mistakes: each one must be reported."""

    class Vehicle:
        def apply_controll(self, control):  # misspelled
            pass

        def set_autopilot(self, enabled=True, port=8000):  # carla calls it tm_port
            pass

        def set_light_state(self, light_state, blink=False):  # carla takes no 'blink'
            pass

        def get_control(self, frame):  # carla's takes nothing
            pass

        def is_alive(self):  # a property in carla
            return True

        @property
        def get_velocity(self):  # a method in carla
            return None

    class World:
        def tick(self, seconds):  # optional in carla
            pass

        def apply_settings(self, settings, seconds=1.0):  # carla's default is 0.0
            pass

        def set_weather(self, weather):  # carla's parameter is unnamed: positional-only
            pass

    problems = "\n".join(api_mismatches(Vehicle, carla.Vehicle) + api_mismatches(World, carla.World))
    for expected in ("has no 'apply_controll'", "'port' is called 'tm_port'", "adds ['blink']",
                     "Vehicle.get_control: adds ['frame']", "is_alive: a property in carla",
                     "get_velocity: a method in carla", "'seconds' is optional in carla",
                     "defaults to 1.0, carla's to 0.0", "'weather' must be positional-only"):
        assert expected in problems
    assert len(problems.splitlines()) == 9

    class Sensor:
        pass

    class Misnamed(Sensor):
        pass

    assert api_mismatches(Misnamed, carla.Sensor) == ["Misnamed is named Sensor in carla"]


# -- behaviour ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _xodr(town: str) -> str:
    return town_path(town).read_text()


def _server(**kwargs: object) -> FakeCarlaServer:
    maps = {f"/Game/Carla/Maps/{town}": _xodr(town) for town in ("grid_town", "multilane_town")}
    return FakeCarlaServer(maps, **kwargs)


def _sync_world(server: FakeCarlaServer, dt: float = 0.05) -> tuple[double.Client, double.World]:
    client = server.client_factory("127.0.0.1", 2000)
    world = client.get_world()
    settings = world.get_settings()
    settings.synchronous_mode, settings.fixed_delta_seconds = True, dt
    world.apply_settings(settings)
    return client, world


def _depth_m(image: double.Image) -> np.ndarray:
    bgra = np.frombuffer(image.raw_data, dtype=np.uint8).reshape(image.height, image.width, 4).astype(np.float64)
    return (bgra[..., 2] + bgra[..., 1] * 256.0 + bgra[..., 0] * 65536.0) / (256.0**3 - 1.0) * 1000.0


def test_unreachable_server_times_out_with_carlas_message() -> None:
    server = _server(reachable=False)
    client = server.client_factory("127.0.0.1", 2000)
    with pytest.raises(RuntimeError) as err:
        client.get_server_version()
    assert str(err.value) == ("time-out of 5000ms while waiting for the simulator, make sure the simulator is ready "
                              "and connected to 127.0.0.1:2000")
    client.set_timeout(2.5)
    with pytest.raises(RuntimeError, match=r"^time-out of 2500ms .* connected to 127\.0\.0\.1:2000$"):
        client.get_world()
    assert server.connect_attempts == 2
    server.reachable = True
    assert client.get_server_version() == "0.9.16" and client.get_client_version() == "0.9.16"
    assert server.connect_attempts == 3
    client.get_world()
    assert server.connect_attempts == 3  # connected: later calls are no longer connection attempts
    with pytest.raises(RuntimeError, match="connected to localhost:2001$"):
        server.client_factory("localhost", 2001).get_world()
    with pytest.raises(RuntimeError, match="time-out"):
        double.Client("127.0.0.1", 2000).get_world()  # not made by a server: nothing answers


def test_tick_advances_frames_and_every_sensor_delivers_once_per_frame() -> None:
    server = _server()
    client, world = _sync_world(server)
    lib = world.get_blueprint_library()
    ego = world.spawn_actor(lib.find("vehicle.lincoln.mkz_2020"), world.get_map().get_spawn_points()[0])
    received: dict[str, list[double.SensorData]] = {}
    threads: set[int] = set()
    for type_id in ("sensor.camera.rgb", "sensor.lidar.ray_cast_semantic", "sensor.other.gnss", "sensor.other.imu"):
        bp = lib.find(type_id)
        if bp.has_attribute("image_size_x"):
            bp.set_attribute("image_size_x", "32")
            bp.set_attribute("image_size_y", "24")
        sensor = world.spawn_actor(bp, carla.Transform(carla.Location(z=2.0)), attach_to=ego)

        def keep(data: double.SensorData, type_id: str = type_id) -> None:
            threads.add(threading.get_ident())
            received.setdefault(type_id, []).append(data)

        sensor.listen(keep)
        assert sensor.is_listening()
    frames = [world.tick() for _ in range(4)]
    assert frames == list(range(frames[0], frames[0] + 4)) and frames[0] > 1
    snapshot = world.get_snapshot()
    assert snapshot.frame == frames[-1] and snapshot.timestamp.elapsed_seconds == pytest.approx(0.2)
    assert server.flush_sensor_data()
    assert threads and threading.get_ident() not in threads  # delivered on another thread, as CARLA does
    for type_id, items in received.items():
        assert [d.frame for d in items] == frames, type_id
        assert [d.timestamp for d in items] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    imu, gnss = received["sensor.other.imu"][-1], received["sensor.other.gnss"][-1]
    assert imu.accelerometer.z == pytest.approx(9.81) and abs(imu.gyroscope.z) < 1e-9
    geo = world.get_map().transform_to_geolocation(gnss.transform.location)
    assert (gnss.latitude, gnss.longitude) == pytest.approx((geo.latitude, geo.longitude))
    assert server.callback_errors == [] and server.warnings == []
    for obj in [ego, world, client, *received["sensor.camera.rgb"]]:
        assert all(k.startswith("_") for k in vars(obj)), obj  # no public state outside the checked API
    server.close()


def test_batch_destroy_cleans_up_and_a_vehicle_takes_nothing_with_it() -> None:
    server = _server(sensor_thread=False)
    client, world = _sync_world(server)
    lib = world.get_blueprint_library()
    points = world.get_map().get_spawn_points()
    cars = [world.spawn_actor(lib.find("vehicle.audi.a2"), p) for p in points[:3]]
    camera = world.spawn_actor(lib.find("sensor.camera.depth"), carla.Transform(), attach_to=cars[0])
    assert cars[1].id == cars[0].id + 1 and camera.parent.id == cars[0].id
    assert cars[0].destroy() and not cars[0].destroy()
    assert camera.is_alive and camera.id in server.live_actor_ids() and camera.parent is None
    with pytest.raises(RuntimeError, match="destroyed actor"):
        cars[0].get_transform()
    ids = server.live_actor_ids()
    commands = [carla.command.DestroyActor(i) for i in ids] + [carla.command.DestroyActor(10**6)]
    responses = client.apply_batch_sync(commands)
    assert [(r.actor_id, r.error) for r in responses] == [(i, "") for i in ids] + [
        (0, "unable to destroy actor: not found")]
    assert server.live_actor_ids() == []
    assert {a.type_id for a in world.get_actors()} == {"spectator", "traffic.traffic_light"}
    assert not cars[1].is_alive and cars[1].get_transform().location == carla.Location()  # gone from snapshots
    assert cars[1].destroy() is False


def test_stalled_sensor_stops_delivering_until_resumed() -> None:
    server = _server(sensor_thread=False)
    _, world = _sync_world(server)
    imu = world.spawn_actor(world.get_blueprint_library().find("sensor.other.imu"), carla.Transform())
    got: list[double.IMUMeasurement] = []
    imu.listen(got.append)
    world.tick()
    server.stall_sensor("sensor.other.imu")
    world.tick()
    world.tick()
    assert len(got) == 1
    server.resume_sensor("sensor.other.imu")
    frame = world.tick()
    assert [d.frame for d in got][-1] == frame and len(got) == 2
    imu.stop()
    world.tick()
    assert len(got) == 2 and not imu.is_listening()


@pytest.mark.parametrize("pitch_deg", [0.0, -20.0])
def test_depth_of_the_ground_is_the_analytic_ray_plane_distance(pitch_deg: float) -> None:
    server = _server(sensor_thread=False)
    _, world = _sync_world(server)
    lib = world.get_blueprint_library()
    width, height, fov, z = 64, 48, 90.0, 2.0
    images: dict[str, double.Image] = {}
    for kind in ("depth", "semantic_segmentation"):
        bp = lib.find(f"sensor.camera.{kind}")
        for key, value in (("image_size_x", width), ("image_size_y", height), ("fov", fov)):
            bp.set_attribute(key, str(value))
        camera = world.spawn_actor(bp, carla.Transform(carla.Location(x=3.0, y=-2.0, z=z),
                                                       carla.Rotation(pitch=pitch_deg, yaw=30.0)))
        camera.listen(lambda image, kind=kind: images.__setitem__(kind, image))
    world.tick()
    depth = _depth_m(images["depth"])
    f = width / (2.0 * math.tan(math.radians(fov) / 2.0))
    v = (np.arange(height) + 0.5 - height / 2.0) / f  # image-plane coordinate, down
    # World height change along the ray (1, u, -v) of a camera pitched by p (nose up +):
    rise = math.sin(math.radians(pitch_deg)) - math.cos(math.radians(pitch_deg)) * v
    expected = np.where(rise < 0.0, z / -np.where(rise < 0.0, rise, -1.0), 1000.0)
    expected = np.minimum(expected, 1000.0)[:, None].repeat(width, axis=1)
    # ~3 steps of the 24-bit code, plus carla's float32 rotation where rays graze the ground.
    assert (np.abs(depth - expected) <= 2e-4 + 1e-5 * expected).all()
    tags = np.frombuffer(images["semantic_segmentation"].raw_data, np.uint8).reshape(height, width, 4)[..., 2]
    assert set(np.unique(tags[expected < 1000.0])) == {int(carla.CityObjectLabel.Roads)}
    assert set(np.unique(tags[expected >= 1000.0])) == {int(carla.CityObjectLabel.Sky)}


def test_cameras_and_lidar_see_a_car_ahead_with_carlas_encodings() -> None:
    server = _server(sensor_thread=False)
    _, world = _sync_world(server)
    lib = world.get_blueprint_library()
    car = world.spawn_actor(lib.find("vehicle.tesla.model3"), carla.Transform(carla.Location(x=10.0), carla.Rotation()))
    mount = carla.Transform(carla.Location(z=1.0))
    data: dict[str, object] = {}
    for type_id in ("sensor.camera.instance_segmentation", "sensor.camera.depth", "sensor.lidar.ray_cast_semantic"):
        bp = lib.find(type_id)
        if bp.has_attribute("image_size_x"):
            bp.set_attribute("image_size_x", "40")
            bp.set_attribute("image_size_y", "30")
        else:
            bp.set_attribute("range", "30")
        world.spawn_actor(bp, mount).listen(lambda d, t=type_id: data.__setitem__(t, d))
    world.tick()
    instance = np.frombuffer(data["sensor.camera.instance_segmentation"].raw_data, np.uint8).reshape(30, 40, 4)
    centre = instance[15, 20]
    unreal_id = server.unreal_unique_id(car.id)
    assert centre[2] == int(carla.CityObjectLabel.Car)
    assert (centre[1], centre[0]) == (unreal_id & 0xFF, (unreal_id >> 8) & 0xFF)  # not the CARLA actor id
    rear_x = 10.0 - car.bounding_box.extent.x
    assert _depth_m(data["sensor.camera.depth"])[15, 20] == pytest.approx(rear_x, abs=1e-3)
    points = np.frombuffer(data["sensor.lidar.ray_cast_semantic"].raw_data, dtype=[
        ("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("cos", "<f4"), ("idx", "<u4"), ("tag", "<u4")])
    on_car = points[points["idx"] == car.id]
    assert len(on_car) and (on_car["tag"] == int(carla.CityObjectLabel.Car)).all()
    assert on_car["x"].min() == pytest.approx(rear_x, abs=1e-3) and (points["tag"][points["idx"] == 0] == 1).all()


def test_load_world_resets_the_episode_like_carla() -> None:
    server = _server(sensor_thread=False)
    client, world = _sync_world(server)
    old_car = world.spawn_actor(world.get_blueprint_library().find("vehicle.audi.a2"),
                                world.get_map().get_spawn_points()[0])
    with pytest.raises(RuntimeError, match="^Map 'Town99' not found$"):
        client.load_world("Town99")
    new_world = client.load_world("multilane_town")
    assert new_world.get_map().name == "Carla/Maps/multilane_town" and new_world.id != world.id
    assert not new_world.get_settings().synchronous_mode  # reset_settings=True by default
    assert server.live_actor_ids() == []
    with pytest.raises(RuntimeError, match="expired episode"):
        old_car.get_transform()
    with pytest.raises(RuntimeError, match="expired episode"):
        world.tick()
    assert client.load_world("/Game/Carla/Maps/grid_town").get_map().name == "Carla/Maps/grid_town"
    generated = client.generate_opendrive_world(_xodr("holdout_town"), carla.OpendriveGenerationParameters())
    assert generated.get_map().to_opendrive() == _xodr("holdout_town")
    with pytest.raises(RuntimeError, match="opendrive could not be correctly parsed"):
        client.generate_opendrive_world("<nope/>")


def test_spawning_and_blueprints_follow_carlas_rules() -> None:
    server = _server(sensor_thread=False)
    _, world = _sync_world(server)
    lib = world.get_blueprint_library()
    assert {bp.id for bp in lib.filter("vehicle.*")} == {"vehicle.lincoln.mkz_2020", "vehicle.tesla.model3",
                                                         "vehicle.audi.a2"}
    assert len(lib.filter("walker.pedestrian.*")) >= 2 and len(lib.filter("model3")) == 1
    with pytest.raises(IndexError, match="blueprint 'vehicle.nope' not found"):
        lib.find("vehicle.nope")
    bp = lib.find("vehicle.tesla.model3")
    with pytest.raises(IndexError, match="attribute 'colour' not found"):
        bp.set_attribute("colour", "1,2,3")
    with pytest.raises(ValueError, match="read-only"):
        bp.set_attribute("number_of_wheels", "3")
    with pytest.raises(TypeError):
        bp.set_attribute("role_name", 7)
    bp.set_attribute("role_name", "hero")
    assert lib.find("vehicle.tesla.model3") is not bp  # find() returns a copy, as CARLA's binding does
    spot = world.get_map().get_spawn_points()[0]
    hero = world.spawn_actor(bp, spot)
    assert hero.attributes["role_name"] == "hero" and isinstance(hero, double.Vehicle)
    with pytest.raises(RuntimeError, match="^Spawn failed because of collision at spawn position$"):
        world.spawn_actor(lib.find("vehicle.audi.a2"), spot)
    assert world.try_spawn_actor(lib.find("walker.pedestrian.0001"), spot) is None
    assert world.get_actor(hero.id).id == hero.id and world.get_actor(10**6) is None
    assert len(world.get_actors().filter("vehicle.*")) == 1


def test_traffic_lights_autopilot_walkers_collisions_and_lane_invasions() -> None:
    server = _server(sensor_thread=False)
    client, world = _sync_world(server, dt=0.1)
    carla_map = world.get_map()
    landmarks = {lm.id for lm in carla_map.get_all_landmarks_of_type("1000001")}
    lights = list(world.get_actors().filter("traffic.traffic_light"))
    assert {light.get_opendrive_id() for light in lights} == landmarks
    assert all(len(light.get_light_boxes()) == 1 for light in lights)
    tm = client.get_trafficmanager(8000)
    tm.set_synchronous_mode(True)
    tm.set_random_device_seed(3)
    lib = world.get_blueprint_library()
    points = carla_map.get_spawn_points()
    bot = world.spawn_actor(lib.find("vehicle.audi.a2"), points[3])
    bot.set_autopilot(True, 8000)
    ego = world.spawn_actor(lib.find("vehicle.lincoln.mkz_2020"), points[0])
    events: dict[str, list[double.SensorData]] = {"collision": [], "lane_invasion": []}
    for kind, got in events.items():
        world.spawn_actor(lib.find(f"sensor.other.{kind}"), carla.Transform(), attach_to=ego).listen(got.append)
    walker = world.spawn_actor(lib.find("walker.pedestrian.0002"), carla.Transform(carla.Location(x=-40.0, y=-40.0)))
    controller = world.spawn_actor(lib.find("controller.ai.walker"), carla.Transform(), attach_to=walker)
    controller.start()
    controller.set_max_speed(2.0)
    controller.go_to_location(carla.Location(x=-40.0, y=-30.0))
    ego.apply_control(carla.VehicleControl(throttle=0.5, steer=-0.3))  # left, across the lanes
    states = []
    for _ in range(120):  # 12 s: past the first green phase (10 s)
        world.tick()
        states.append({light.get_state() for light in lights})
    assert carla.TrafficLightState.Yellow in set().union(*states)
    assert server.tm_synchronous(8000) and server.warnings == []
    assert bot.get_velocity().length() > 1.0
    lane_centre = carla_map.get_waypoint(bot.get_location()).transform.location
    assert lane_centre.distance(bot.get_location()) < 0.05
    assert walker.get_location().distance(carla.Location(x=-40.0, y=-30.0, z=walker.get_location().z)) < 1e-6
    first_crossing = events["lane_invasion"][0].crossed_lane_markings[0]
    start_lane = carla_map.get_waypoint(points[0].location)  # steering left crosses its left marking first
    assert (first_crossing.type, first_crossing.color) == (start_lane.left_lane_marking.type,
                                                           start_lane.left_lane_marking.color)
    assert ego.get_control().steer == pytest.approx(-0.3)
    ahead = ego.get_transform()
    forward = ahead.get_forward_vector()
    world.spawn_actor(lib.find("vehicle.tesla.model3"), carla.Transform(
        carla.Location(x=ahead.location.x + 8 * forward.x, y=ahead.location.y + 8 * forward.y, z=0.3), ahead.rotation))
    ego.apply_control(carla.VehicleControl(throttle=1.0))
    for _ in range(15):
        world.tick()
    assert events["collision"] and events["collision"][0].other_actor.type_id == "vehicle.tesla.model3"
    assert ego.get_velocity().length() == 0.0
