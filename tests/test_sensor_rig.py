"""Cameras, LiDAR and labels through the simulator: what a driven episode records."""

import math
from dataclasses import replace

import numpy as np
import pytest

from drivestack.schema import SEMANTIC_CLASSES, SEMANTIC_ID, ObjectClass, instance_id_of_actor
from sim.builtin import BuiltinSimulator
from sim.episode import run_episode
from sim.expert import ExpertDriver
from sim.scenario import Scenario
from sim.sensors.camera_model import CameraConfig
from sim.sensors.lidar import LidarConfig, mount_pose_world
from sim.sensors.suite import SensorSuite, load_suite

# Four cameras looking all round, so one short drive shows the whole street.
ALL_ROUND = tuple(CameraConfig(name=name, width_px=160, height_px=96, fov_deg=100.0, x_m=0.0, z_m=1.8, yaw_rad=yaw)
                  for name, yaw in (("front", 0.0), ("left", math.pi / 2), ("rear", math.pi), ("right", -math.pi / 2)))
SUITE = SensorSuite(cameras=ALL_ROUND, lidar=LidarConfig(), ground_truth=True)


def expert(road_map, route, sim):
    return ExpertDriver(road_map, route, sim.vehicle, sim.dt_s)


def scenario(**overrides) -> Scenario:
    base = dict(name="rig", town="grid_town", route_length_m=250.0, npc_vehicles=12, pedestrians=25, seed=5,
                sensors=SUITE)
    return Scenario(**(base | overrides))


def drive(sim: BuiltinSimulator, sc: Scenario, steps: int):
    obs = sim.reset(sc)
    agent = expert(sim.road_map, sim.route, sim)
    frames = [obs]
    for _ in range(steps):
        obs = sim.step(agent.run_step(obs))
        frames.append(obs)
    return frames


@pytest.fixture(scope="module")
def episode():
    sim = BuiltinSimulator()
    frames = drive(sim, scenario(), 160)
    yield sim, frames
    sim.close()


def test_every_semantic_class_appears_in_some_frame(episode):
    _, frames = episode
    seen = set()
    for obs in frames[::4]:
        for image in obs.cameras:
            seen |= set(np.unique(image.semantic).tolist())
    # 'unlabeled' is what nothing in the town is; every other class of the table is drawn.
    expected = {c.class_id for c in SEMANTIC_CLASSES} - {SEMANTIC_ID["unlabeled"]}
    assert expected <= seen, f"never seen: {sorted(c.name for c in SEMANTIC_CLASSES if c.class_id in expected - seen)}"


def test_observations_carry_images_scan_and_labels(episode):
    sim, frames = episode
    obs = frames[-1]
    assert [c.name for c in obs.cameras] == ["front", "left", "rear", "right"]
    front = obs.camera("front")
    assert front.rgb.shape == (96, 160, 3) and front.depth_m.dtype == np.float32
    assert np.allclose(front.intrinsics, ALL_ROUND[0].intrinsics)
    assert obs.lidar.points.shape[1] == 5 and len(obs.lidar.points) > 1000
    truth = obs.ground_truth
    assert truth.lanes and {b.camera for b in truth.boxes_2d} <= {"front", "left", "rear", "right"}
    # Every labelled actor is a real actor of this frame, and visible ones show in the instance image.
    actor_ids = {instance_id_of_actor(a.actor_id) for a in obs.actors}
    for box in truth.boxes_2d:
        if box.object_class != ObjectClass.TRAFFIC_LIGHT:
            assert box.instance_id in actor_ids
        if box.visible_pixels > 0:
            image = obs.camera(box.camera)
            u0, v0 = int(box.u_min_px), int(box.v_min_px)
            window = image.instance[v0:int(math.ceil(box.v_max_px)), u0:int(math.ceil(box.u_max_px))]
            assert (window == box.instance_id).sum() == box.visible_pixels


def _distance_to_box_surfaces(points_xyz: np.ndarray, boxes) -> np.ndarray:
    """Distance of each point to the nearest surface of the given upright boxes."""
    best = np.full(len(points_xyz), np.inf)
    for i in range(len(boxes)):
        c, s = math.cos(boxes.yaw_rad[i]), math.sin(boxes.yaw_rad[i])
        dx, dy = points_xyz[:, 0] - boxes.centre_x_m[i], points_xyz[:, 1] - boxes.centre_y_m[i]
        local = np.abs(np.column_stack([dx * c + dy * s, -dx * s + dy * c,
                                        points_xyz[:, 2] - boxes.base_z_m[i] - boxes.height_m[i] / 2]))
        half = np.array([boxes.length_m[i], boxes.width_m[i], boxes.height_m[i]]) / 2
        outside = np.linalg.norm(np.maximum(local - half, 0.0), axis=1)
        to_nearest_face = (half - local).min(axis=1)  # for a point inside the box
        best = np.minimum(best, np.where(outside > 0, outside, to_nearest_face))
    return best


def test_lidar_points_lie_on_the_boxes_they_are_tagged_with(episode):
    sim, frames = episode
    static = sim.sensors.world.static_boxes
    checked = 0
    for obs in frames[-20:]:
        x, y, z, yaw = mount_pose_world(SUITE.lidar, obs.ego.x_m, obs.ego.y_m, obs.ego.yaw_rad)
        points = obs.lidar.points
        c, s = math.cos(yaw), math.sin(yaw)
        world = np.column_stack([x + points[:, 0] * c - points[:, 1] * s, y + points[:, 0] * s + points[:, 1] * c,
                                 z + points[:, 2]])
        for tag in ("building", "pole", "vegetation"):
            hit = points[:, 4] == SEMANTIC_ID[tag]
            if hit.any():
                boxes = static.select(static.semantic_tag == SEMANTIC_ID[tag])
                assert _distance_to_box_surfaces(world[hit], boxes).max() < 0.05
                checked += int(hit.sum())
        ground = np.isin(points[:, 4], [SEMANTIC_ID[n] for n in ("road", "road_line", "sidewalk", "terrain")])
        assert np.abs(world[ground, 2]).max() < 0.05  # ground returns lie on the ground plane
    assert checked > 100


def test_same_seed_same_images_byte_for_byte_and_sensors_leave_traffic_alone():
    small = SensorSuite(cameras=(CameraConfig(width_px=128, height_px=64),), lidar=LidarConfig(channels=8))
    sc = scenario(sensors=small, npc_vehicles=6, pedestrians=6)
    a, b = (drive(BuiltinSimulator(), sc, 30)[-1] for _ in range(2))
    for kind in ("rgb", "depth_m", "semantic", "instance"):
        assert getattr(a.cameras[0], kind).tobytes() == getattr(b.cameras[0], kind).tobytes()
    assert a.lidar.points.tobytes() == b.lidar.points.tobytes()
    with_sensors = run_episode(BuiltinSimulator(), replace(sc, route_length_m=80.0), expert)
    without = run_episode(BuiltinSimulator(), replace(sc, route_length_m=80.0, sensors=SensorSuite()), expert)
    assert with_sensors.result.trajectory_digest == without.result.trajectory_digest


def test_weather_changes_the_look_not_the_labels():
    suite = load_suite("full")
    noon, night = (drive(BuiltinSimulator(), scenario(sensors=suite, weather=w, npc_vehicles=4, pedestrians=0), 5)[-1]
                   for w in ("clear_noon", "night"))
    a, b = noon.camera("front"), night.camera("front")
    assert np.array_equal(a.semantic, b.semantic) and np.array_equal(a.instance, b.instance)
    assert np.array_equal(a.depth_m, b.depth_m)
    assert b.rgb.mean() < 0.6 * a.rgb.mean()
