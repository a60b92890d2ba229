"""The CARLA backend against the server test double (tests/carla_double, checked against
the installed carla API by tests/test_carla_double_api.py): lockstep set-up, sensors,
scoring, cleanup, and every bad input of the issue with its message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import carla
import numpy as np
import pytest

from drivestack.schema import ActorKind, EpisodeStatus, InfractionKind, ObjectClass, VehicleControl
from sim.carla_backend import (
    CarlaConnectionError, CarlaEndpoint, CarlaSensorTimeout, CarlaTownError, CarlaVersionError)
from sim.carla_backend.connection import check_versions
from sim import carla_frames
from sim.carla_backend.simulator import NPC_BLUEPRINTS, CarlaSimulator
from sim.carla_backend.weather import carla_weather
from sim.carla_backend.world_state import ActorIds, LAYOUT_ID, collided_ids
from sim.episode import Referee, run_episode
from sim.expert import ExpertDriver
from sim.scenario import Scenario, scenario_from_dict
from sim.towns import town_path
from tests.carla_double import FakeCarlaServer

REPO = Path(__file__).resolve().parent.parent
SERVER_TOWN = "/Game/Carla/Maps/Town10HD_Opt"  # the double serves grid_town's OpenDRIVE under this name
SMALL_CAMERA = {"name": "front", "width_px": 96, "height_px": 64, "fov_deg": 90.0, "x_m": 1.5, "z_m": 1.6,
                "kinds": ["rgb", "depth", "semantic", "instance"]}


def scenario(**overrides) -> Scenario:
    data = {"name": "carla_short", "town": "grid_town", "route_length_m": 100, "npc_vehicles": 4, "pedestrians": 2,
            "seed": 11, "sensors": {"cameras": [SMALL_CAMERA], "lidar": {"channels": 16, "points_per_second": 20000},
                                    "ground_truth": True}}
    data.update(overrides)
    return scenario_from_dict(data, "test")


@pytest.fixture()
def server():
    with FakeCarlaServer({SERVER_TOWN: town_path("grid_town").read_text()}) as s:
        yield s


def connect(server: FakeCarlaServer, **endpoint) -> CarlaSimulator:
    return CarlaSimulator(CarlaEndpoint(**endpoint), client_factory=server.client_factory, sensor_timeout_s=2.0)


def test_reset_puts_the_server_in_lockstep_with_the_scenarios_sensors(server):
    sim = connect(server)
    sc = scenario(weather="rain")
    obs = sim.reset(sc)
    settings = server.settings
    assert settings.synchronous_mode and settings.fixed_delta_seconds == pytest.approx(0.05)
    tm = server.traffic_manager(8000)
    assert server.tm_synchronous(8000) and tm._random_device_seed == sc.seed
    assert server.weather.precipitation == pytest.approx(carla_weather("rain").precipitation)
    start = sim.route.waypoints[0]
    assert np.hypot(obs.ego.x_m - start.x_m, obs.ego.y_m - start.y_m) < 0.3
    assert abs(obs.ego.yaw_rad - start.yaw_rad) < 0.01
    image = obs.camera("front")
    assert image.rgb.shape == (64, 96, 3) and image.rgb.dtype == np.uint8
    assert image.depth_m.dtype == np.float32 and image.semantic.dtype == np.uint8 and image.instance.dtype == np.int32
    np.testing.assert_allclose(image.intrinsics, sc.sensors.cameras[0].intrinsics)
    assert obs.lidar.points.dtype == np.float32 and obs.lidar.points.shape[1] == 5 and len(obs.lidar.points) > 100
    assert obs.imu.accel_mps2[2] == pytest.approx(9.81, abs=0.3) and obs.gnss is not None
    assert obs.stamp_ns == 0 and len([a for a in obs.actors if a.kind == ActorKind.VEHICLE]) == 4
    assert len([a for a in obs.actors if a.kind == ActorKind.PEDESTRIAN]) == 2
    assert len(obs.traffic_lights) == len(sim.road_map.signals) > 0
    moved = sim.step(VehicleControl(throttle=0.8))
    for _ in range(20):
        moved = sim.step(VehicleControl(throttle=0.8))
    assert moved.stamp_ns == 21 * 50_000_000
    assert moved.ego.speed_mps > 1.0 and moved.ego.x_m - obs.ego.x_m > 1.0  # the route starts heading +x
    sim.close()


def test_close_destroys_every_actor_and_restores_the_settings(server):
    sim = connect(server)
    before = server.settings
    sim.reset(scenario())
    assert len(server.live_actor_ids()) > 10
    sim.close()
    sim.close()  # idempotent
    assert server.live_actor_ids() == []
    assert server.settings.synchronous_mode == before.synchronous_mode is False
    assert not server.tm_synchronous(8000)


def test_no_actor_leaks_over_100_resets(server):
    sim = connect(server)
    light = scenario(sensors={}, npc_vehicles=3, pedestrians=1)
    counts = set()
    for k in range(100):
        sim.reset(light.with_seed(k))
        counts.add(len(server.live_actor_ids()))
    assert len(counts) == 1  # ego, sensors, NPCs, walkers and their controllers, every time
    sim.close()
    assert server.live_actor_ids() == []


def test_the_expert_drives_a_scored_episode_on_carla(server):
    sim = connect(server)
    sc = scenario(sensors={}, npc_vehicles=0, pedestrians=0)
    run = run_episode(sim, sc, lambda m, r, s: ExpertDriver(m, r, s.vehicle, s.dt_s))
    sim.close()
    assert run.result.status == EpisodeStatus.COMPLETED, run.result
    assert run.result.driving_score > 90.0


def test_carlas_autopilot_drives_the_route_and_reports_its_controls(server):
    """``--agent autopilot``: the Traffic Manager drives the ego along the route (set_path);
    the agent answers each frame with the control the Traffic Manager applied."""
    from drivestack.agents import agent_factory
    sim = connect(server)
    sc = scenario(sensors={}, npc_vehicles=0, pedestrians=0)
    controls = []

    class Recorder:
        def start(self, road_map, route): ...
        def observe(self, obs): ...
        def act(self, stamp_ns, control): controls.append(control)
        def finish(self, result): ...

    run = run_episode(sim, sc, agent_factory("autopilot", sc), observers=[Recorder()])
    sim.close()
    assert run.result.status == EpisodeStatus.COMPLETED and run.result.route_completion_pct == 100.0
    assert max(c.throttle for c in controls) > 0.2
    assert all(isinstance(c, VehicleControl) for c in controls)


def test_ctrl_c_in_an_episode_leaves_the_server_clean(server):
    sc = scenario(sensors={}, npc_vehicles=2, pedestrians=1)

    class Interrupted(ExpertDriver):
        def run_step(self, obs):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with connect(server) as sim:
            run_episode(sim, sc, lambda m, r, s: Interrupted(m, r, s.vehicle, s.dt_s))
    assert server.live_actor_ids() == [] and not server.settings.synchronous_mode


def test_collisions_are_carlas_events_counted_once_per_contact():
    class Other:
        def __init__(self, actor_id):
            self.id = actor_id

    class Event:
        def __init__(self, other):
            self.other_actor = other

    ids = ActorIds()
    ids.add(500, ActorKind.VEHICLE)  # the ego
    car = ids.add(501, ActorKind.VEHICLE)
    new, touching = collided_ids([Event(Other(501)), Event(Other(501))], ids, frozenset())
    assert new == (car,)
    new, touching = collided_ids([Event(Other(501)), Event(Other(9999))], ids, touching)  # still grinding; a wall
    assert new == (LAYOUT_ID,)
    new, _ = collided_ids([], ids, touching)
    assert new == ()


def test_the_referee_scores_the_simulators_collision_events(server):
    """A car driven into the NPC queue ahead: CARLA's collision sensor fires, the score counts it."""
    sim = connect(server)
    sc = scenario(sensors={}, npc_vehicles=0, pedestrians=0)
    obs = sim.reset(sc)
    park_car_ahead(sim, obs, 15.0)  # then drive into it at full throttle
    referee = Referee(sim, sc, obs)
    hits = []
    for _ in range(120):
        obs = sim.step(VehicleControl(throttle=1.0))
        hits += obs.collisions
        referee.update(obs)
        if referee.done:
            break
    sim.close()
    assert hits and set(hits) == {len(sim._ids.by_carla) - 1}
    kinds = [e.kind for e in referee.monitor.events]
    assert kinds.count(InfractionKind.COLLISION_VEHICLE) == 1


def park_car_ahead(sim: CarlaSimulator, obs, distance_m: float) -> None:
    """A car standing ``distance_m`` straight ahead of the ego, known to the backend as an NPC."""
    ahead = carla.Transform(carla_frames.xyz_to_location(obs.ego.x_m + distance_m * np.cos(obs.ego.yaw_rad),
                                                         obs.ego.y_m + distance_m * np.sin(obs.ego.yaw_rad), 0.3),
                            carla.Rotation(yaw=carla_frames.yaw_rad_to_deg(obs.ego.yaw_rad)))
    car = sim._world.spawn_actor(sim._world.get_blueprint_library().find(NPC_BLUEPRINTS[0]), ahead)
    sim._actors.append(car)
    sim._others.append((sim._ids.add(car.id, ActorKind.VEHICLE), ActorKind.VEHICLE, car))


def test_labels_on_carla_match_the_actors(server):
    """3D boxes where the actors are; 2D boxes seen in the instance image (Unreal's object
    codes matched to our instance ids)."""
    sim = connect(server)
    obs = sim.reset(scenario(npc_vehicles=0, pedestrians=0, seed=3))
    park_car_ahead(sim, obs, 12.0)
    obs = sim.step(VehicleControl())
    seen = [b for b in obs.ground_truth.boxes_2d if b.object_class == ObjectClass.VEHICLE]
    assert len(seen) == 1
    box = seen[0]
    instance = obs.camera("front").instance
    mask = instance == box.instance_id
    rows, cols = np.nonzero(mask)
    assert box.visible_fraction > 0.3 and mask.sum() == box.visible_pixels > 30  # the ego's bonnet hides some
    assert cols.min() >= box.u_min_px - 1 and cols.max() <= box.u_max_px + 1
    actor = next(a for a in obs.actors if 1 + a.actor_id == box.instance_id)
    box3d = next(b for b in obs.ground_truth.boxes_3d if b.instance_id == box.instance_id)
    dx, dy = actor.x_m - obs.ego.x_m, actor.y_m - obs.ego.y_m
    c, s = np.cos(obs.ego.yaw_rad), np.sin(obs.ego.yaw_rad)
    assert box3d.x_m == pytest.approx(c * dx + s * dy, abs=0.3)
    assert box3d.y_m == pytest.approx(-s * dx + c * dy, abs=0.3)
    assert obs.ground_truth.lanes  # from the map's lanes
    sim.close()


# -- bad input: each gets a clear error, and the server is left clean ------------------------


def test_an_unreachable_server_names_host_and_port_after_the_retries(server, monkeypatch):
    monkeypatch.setattr("sim.carla_backend.connection.time.sleep", lambda s: None)
    server.reachable = False
    with pytest.raises(CarlaConnectionError, match=r"127\.0\.0\.1:2000 \(3 tries, 0\.2 s each"):
        connect(server, timeout_s=0.2)
    server.reachable = True
    with pytest.raises(CarlaConnectionError, match=r"127\.0\.0\.1:2001"):
        connect(server, port=2001, retries=1)


def test_a_server_of_another_version_is_refused_naming_both():
    with FakeCarlaServer({SERVER_TOWN: town_path("grid_town").read_text()}, version="0.9.15") as old:
        with pytest.raises(CarlaVersionError, match=r"client package is 0\.9\.16 but the server at "
                                                    r"127\.0\.0\.1:2000 runs 0\.9\.15"):
            connect(old)
    check_versions("0.9.15", "0.9.15-dirty", "h:1")  # a server build's suffix is not a mismatch
    with pytest.raises(CarlaVersionError, match=r"CARLA 0\.9\.14 at h:1 is not supported"):
        check_versions("0.9.14", "0.9.14", "h:1")


def test_a_town_the_server_lacks_lists_the_ones_it_has(server):
    sim = connect(server)
    with pytest.raises(CarlaTownError, match=r"'Town99' is not on the CARLA server at 127\.0\.0\.1:2000 "
                                             r"\(it has: Town10HD_Opt\)"):
        sim.reset(scenario(town="Town99"))
    assert server.live_actor_ids() == []
    obs = sim.reset(scenario(town="Town10HD_Opt", sensors={}))  # a CARLA town by name; its OpenDRIVE is the map
    assert server.map_path == SERVER_TOWN and obs.ego_lane_segment_id >= 0
    sim.close()


def test_a_sensor_that_stops_delivering_is_named_and_the_actors_cleaned(server):
    sim = connect(server)
    sim.reset(scenario())
    server.stall_sensor("sensor.lidar.ray_cast_semantic")
    with pytest.raises(CarlaSensorTimeout, match=r"sensor lidar \(sensor\.lidar\.ray_cast_semantic\) sent no data "
                                                 r"for frame \d+ within 2 s \(CARLA at 127\.0\.0\.1:2000\)"):
        sim.step(VehicleControl())
    sim.close()
    assert server.live_actor_ids() == [] and not server.settings.synchronous_mode


def test_a_server_that_stops_answering_mid_episode_ends_it_as_a_simulation_error(server):
    sim = connect(server, timeout_s=0.2)
    sc = scenario(sensors={}, npc_vehicles=0, pedestrians=0)

    class StopsServer(ExpertDriver):
        steps = 0

        def run_step(self, obs):
            StopsServer.steps += 1
            if StopsServer.steps == 10:
                server.reachable = False
            return super().run_step(obs)

    run = run_episode(sim, sc, lambda m, r, s: StopsServer(m, r, s.vehicle, s.dt_s))
    assert run.result.status == EpisodeStatus.SIMULATION_ERROR
    sim.close()  # logs that it could not clean the unreachable server; never hangs or raises
    server.reachable = True
    assert server.live_actor_ids()  # what the dead connection could not destroy: say so, see the log


def test_sigterm_destroys_the_actors_and_restores_the_settings(tmp_path):
    """SIGTERM's default action skips finally and atexit; the backend turns it into SystemExit."""
    script = tmp_path / "victim.py"
    script.write_text(textwrap.dedent(f"""
        import atexit, os, signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from sim.towns import town_path
        from tests.carla_double import FakeCarlaServer
        server = FakeCarlaServer({{{SERVER_TOWN!r}: town_path("grid_town").read_text()}})
        # Registered before the backend's own handler, so it runs after it (atexit is LIFO).
        atexit.register(lambda: print("after:", len(server.live_actor_ids()), server.settings.synchronous_mode,
                                      flush=True))
        from sim.carla_backend import CarlaEndpoint, CarlaSimulator
        from sim.scenario import resolve_scenario
        sim = CarlaSimulator(CarlaEndpoint(), client_factory=server.client_factory)
        sim.reset(resolve_scenario("default", sensors="front_rgb", npc_vehicles=3, pedestrians=1))
        print("spawned:", len(server.live_actor_ids()), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 128 + signal.SIGTERM, done.stdout + done.stderr
    assert "spawned:" in done.stdout and "after: 0 False" in done.stdout, done.stdout + done.stderr


# -- the CLI and the ROS 2 bridge ------------------------------------------------------------


def test_the_autopilot_agent_needs_carla():
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--agent", "autopilot", "--scenario",
                           "default"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "--agent autopilot is CARLA's Traffic Manager" in done.stderr


def test_drive_sim_carla_with_no_server_names_host_and_port():
    """The real carla client against a port where nothing listens."""
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--sim", "carla", "--host", "127.0.0.1",
                           "--port", "1", "--carla-timeout-s", "0.3", "--scenario", "default", "--out", "/tmp/unused"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert "no CARLA server answered at 127.0.0.1:1 (3 tries" in done.stderr.replace("\n", " ")


def test_drive_sim_carla_records_bags_the_later_tools_read_unchanged(server, tmp_path, monkeypatch):
    """``drive --sim carla --record``: the same topics as on the built-in simulator, every
    frame, and the behaviour-cloning and perception datasets load the bag as they are."""
    from typer.testing import CliRunner

    from drivestack.cli import app
    from models.perception_data import load_labels
    from models.policy_data import load_frames
    from ros_nodes.bag.info import bag_info
    sc_file = tmp_path / "carla_short.yaml"
    sc_file.write_text(json.dumps({"name": "carla_short", "town": "grid_town", "route_length_m": 60,
                                   "npc_vehicles": 2, "pedestrians": 0, "seed": 5,
                                   "sensors": {"cameras": [SMALL_CAMERA], "ground_truth": True,
                                               "lidar": {"channels": 16, "points_per_second": 20000}}}))
    bags = {}
    for sim_name in ("builtin", "carla"):
        if sim_name == "carla":
            monkeypatch.setattr(carla, "Client", server.client_factory)
        out, bag = tmp_path / sim_name, tmp_path / f"{sim_name}.bag"
        done = CliRunner().invoke(app, ["drive", "--sim", sim_name, "--scenario", str(sc_file), "--out", str(out),
                                        "--record", str(bag), "--no-png"])
        assert done.exit_code == 0, done.output
        route = json.loads((out / "results.json").read_text())["routes"][0]
        assert route["status"] == "Completed", route
        bags[sim_name] = {t.name: t.count for t in bag_info(bag).topics}
    events = {"/carla/ego_vehicle/lane_invasion", "/carla/ego_vehicle/collision"}  # only when they happen
    assert bags["carla"].keys() - events == bags["builtin"].keys() - events
    frames = bags["carla"]["/clock"]
    for topic in ("/carla/ego_vehicle/rgb_front/image", "/carla/ego_vehicle/lidar", "/carla/ego_vehicle/odometry",
                  "/drivestack/ground_truth/actors", "/drivestack/ground_truth/boxes_3d"):
        assert bags["carla"][topic] == frames, topic
    assert server.live_actor_ids() == []

    _, policy_frames = load_frames(tmp_path / "carla.bag")
    # Every frame with 2 s of future for its 4 waypoints, 0.5 s apart; the expert's throttle as label.
    assert len(policy_frames) == frames - 40 and policy_frames.controls[:, 1].max() > 0.1
    _, labels = load_labels(tmp_path / "carla.bag", "front")
    assert len(labels.stamps_ns) == frames and len(labels.boxes) > 0  # the parked NPCs' 2D boxes


@pytest.mark.parametrize("launch_file", ["drive.yaml", "collect.yaml"])
def test_the_launch_files_hand_sim_carla_and_the_address_to_the_bridge(launch_file):
    from ros_nodes.launcher import LaunchError, load_launch
    description = load_launch(REPO / "launch" / launch_file, {"sim": "carla", "carla_host": "10.0.0.5",
                                                             "carla_port": "2010", "carla_timeout_s": "4.5"})
    bridge = next({p.name: p.value for p in n.parameters} for n in description.nodes if n.label == "sim_bridge")
    assert (bridge["sim"], bridge["carla_host"], bridge["carla_port"], bridge["carla_tm_port"],
            bridge["carla_timeout_s"]) == ("carla", "10.0.0.5", 2010, 8000, 4.5)
    with pytest.raises(LaunchError, match="sim"):
        load_launch(REPO / "launch" / launch_file, {"sim": "unreal"})


@pytest.mark.parametrize("driver", ["agent", "autopilot"])
def test_the_ros_bridge_drives_carla_and_records_the_bag(tmp_path, driver):
    """sim:=carla: the bridge (with the double in its process), the expert (the agent node,
    or autopilot:=true inside the bridge) and the recorder as real processes; the bag
    holds every frame, the control included."""
    from ros_nodes.bag.info import bag_info
    sc_file = tmp_path / "carla_ros.yaml"
    sc_file.write_text(json.dumps({"name": "carla_ros", "town": "grid_town", "route_length_m": 60, "npc_vehicles": 2,
                                   "pedestrians": 0, "seed": 5, "sensors": {}}))
    out = tmp_path / "out"

    def node(module: str, *params: str) -> list[str]:
        return [sys.executable, "-m", module, "--ros-args", *[x for p in params for x in ("-p", p)]]

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    commands = [node("ros_nodes.recorder_node", f"out:={out / 'bag'}", f"scenario:={sc_file}")]
    if driver == "agent":
        commands.append(node("ros_nodes.agent_node"))
    helpers = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for c in commands]
    waits = "['agent', 'recorder']" if driver == "agent" else "['recorder']"
    try:
        bridge = subprocess.run(node("tests.carla_double.serve_bridge", "sim:=carla", f"scenario:={sc_file}",
                                     f"out:={out}", "startup_timeout_s:=60.0", "control_timeout_s:=30.0",
                                     f"wait_for_nodes:={waits}", f"autopilot:={str(driver == 'autopilot').lower()}"),
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for proc in helpers:
            proc.send_signal(signal.SIGINT)
        for proc in helpers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert bridge.returncode == 0, bridge.stdout + bridge.stderr
    assert "destroyed actors left: 0" in bridge.stdout + bridge.stderr
    route = json.loads((out / "results.json").read_text())["routes"][0]
    assert route["status"] == "Completed" and route["extra"]["control_faults"] == 0
    counts = {t.name: t.count for t in bag_info(out / "bag").topics}
    frames = route["extra"]["frames_published"]
    assert counts["/clock"] == counts["/carla/ego_vehicle/odometry"] == frames
    # The agent also answers the last frame; the autopilot drives every frame but the last.
    assert counts["/carla/ego_vehicle/vehicle_control_cmd"] == (frames if driver == "agent" else frames - 1)
