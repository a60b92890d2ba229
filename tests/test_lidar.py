"""Ray-cast LiDAR: config checks, geometry against closed forms, sweep, randomness, frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivestack.schema import SEMANTIC_ID, ActorKind, ActorState
import sim.sensors.lidar as lidar_module
from sim.sensors.lidar import (POINT_FIELDS, LidarConfig, OrientedBoxes, RayCastLidar,
                               mount_pose_world)

X, Y, Z, INTENSITY, TAG = range(len(POINT_FIELDS))
CAR, PEDESTRIAN, ROAD = SEMANTIC_ID["car"], SEMANTIC_ID["pedestrian"], SEMANTIC_ID["road"]
EGO_ID = 0
DT_S = 0.05


def _lidar(seed: int = 0, **overrides) -> RayCastLidar:
    return RayCastLidar(LidarConfig(**overrides), np.random.default_rng(seed))


def _car(actor_id: int, x: float, y: float, yaw: float = 0.0, **size) -> ActorState:
    return ActorState(actor_id, ActorKind.VEHICLE, x, y, yaw, 0.0, size.get("length", 4.5),
                      size.get("width", 1.9), size.get("height", 1.5))


def _to_world(points: np.ndarray, pose: tuple[float, float, float, float]) -> np.ndarray:
    x, y, z, yaw = pose
    c, s = math.cos(yaw), math.sin(yaw)
    p = points[:, :3].astype(float)
    return np.stack([x + c * p[:, 0] - s * p[:, 1], y + s * p[:, 0] + c * p[:, 1], z + p[:, 2]], 1)


def _signed_distance_to_box(world: np.ndarray, actor: ActorState) -> np.ndarray:
    """Signed distance to the actor's box surface (negative inside), from the box's frame."""
    c, s = math.cos(actor.yaw_rad), math.sin(actor.yaw_rad)
    dx, dy = world[:, 0] - actor.x_m, world[:, 1] - actor.y_m
    local = np.stack([c * dx + s * dy, -s * dx + c * dy, world[:, 2] - actor.height_m / 2], 1)
    excess = np.abs(local) - np.array([actor.length_m, actor.width_m, actor.height_m]) / 2
    outside = np.linalg.norm(np.maximum(excess, 0.0), axis=1)
    return outside + np.minimum(excess.max(axis=1), 0.0)


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(("overrides", "message"), [
    ({"channels": 0}, r"channels=0 is outside \[1, 128\]"),
    ({"channels": 129}, r"channels=129 is outside \[1, 128\]"),
    ({"lower_fov_deg": 10.0, "upper_fov_deg": -30.0}, r"lower_fov_deg=10.0 and upper_fov_deg=-30.0"),
    ({"upper_fov_deg": 91.0}, r"-90 <= lower < upper <= 90"),
    ({"range_m": -5.0}, r"range_m=-5.0 must be positive"),
    ({"range_m": math.nan}, r"range_m is nan; it must be a finite number"),
    ({"noise_stddev_m": math.inf}, r"noise_stddev_m is inf"),
    ({"points_per_second": 10}, r"points_per_second=10 is fewer than channels=32"),
    ({"dropoff_general_rate": 1.5}, r"dropoff_general_rate=1.5 is outside \[0, 1\]"),
    ({"horizontal_fov_deg": 0.0}, r"horizontal_fov_deg=0.0 is outside \(0, 360\]"),
    ({"channels": 32.0}, r"channels=32.0 must be an integer"),
])
def test_config_rejects_bad_values_naming_the_parameter(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        LidarConfig(**overrides)
    assert "\n" not in str(error.value)


def test_rays_per_channel_rounds_like_carla():
    assert LidarConfig().rays_per_channel(DT_S) == 88  # 56000 * 0.05 / 32 = 87.5, half away from zero
    assert LidarConfig(points_per_second=32).rays_per_channel(DT_S) == 0


# ---------------------------------------------------------------- geometry
def test_flat_ground_ranges_match_the_ray_plane_distance():
    config = LidarConfig()
    lidar = RayCastLidar(config, np.random.default_rng(0))
    pose = mount_pose_world(config, 3.0, -2.0, 0.4, ground_z_m=1.5)
    points = lidar.scan(pose, DT_S, [], EGO_ID, ground_z_m=1.5)

    elevations = np.radians(np.linspace(config.upper_fov_deg, config.lower_fov_deg, config.channels))
    downward = elevations[elevations < 0]
    expected_ranges = config.z_m / np.sin(-downward)
    assert len(points) == np.sum(expected_ranges <= config.range_m) * config.rays_per_channel(DT_S)

    ranges = np.linalg.norm(points[:, :3].astype(float), axis=1)
    point_elevation = np.arcsin(points[:, Z] / ranges)
    channel = np.argmin(np.abs(point_elevation[:, None] - downward[None, :]), axis=1)
    assert np.abs(point_elevation - downward[channel]).max() < 1e-5
    assert np.abs(ranges - expected_ranges[channel]).max() < 1e-3
    assert np.all(points[:, TAG] == ROAD)
    np.testing.assert_allclose(points[:, Z], -config.z_m, atol=1e-5)
    np.testing.assert_allclose(points[:, INTENSITY], np.exp(-config.atmosphere_attenuation_rate * ranges),
                               rtol=1e-5)


def test_box_points_lie_on_its_surface_and_never_inside():
    car = _car(7, 12.0, 1.5, yaw=0.35)
    lidar = _lidar(points_per_second=320_000)  # 500 rays per laser per step
    pose = mount_pose_world(lidar.config, 0.0, 0.0, 0.0)
    points = lidar.scan(pose, DT_S, [car, _car(EGO_ID, 0.0, 0.0)], EGO_ID)
    on_car = points[points[:, TAG] == CAR]
    assert len(on_car) > 50

    distance = _signed_distance_to_box(_to_world(on_car, pose), car)
    assert np.abs(distance).max() < 0.05
    everything = _signed_distance_to_box(_to_world(points, pose), car)
    assert everything.min() > -1e-4
    # The ego's own box (around the sensor) is excluded: nothing is hit at close range.
    assert np.linalg.norm(points[:, :3], axis=1).min() > 2.0


def test_cone_prefilter_loses_no_hit(monkeypatch):
    """Same points as testing every ray against every box, in a cluttered random scene."""
    rng = np.random.default_rng(3)
    count = 30
    distance, bearing = rng.uniform(0.5, 65.0, count), rng.uniform(-math.pi, math.pi, count)
    scattered = OrientedBoxes(distance * np.cos(bearing), distance * np.sin(bearing),
                              rng.uniform(-4, 4, count), rng.uniform(0.2, 8, count),
                              rng.uniform(0.2, 3, count), rng.uniform(0.3, 6, count),
                              rng.integers(2, 25, count),
                              base_z_m=rng.uniform(-1, 3, count), actor_id=np.arange(count))
    config = LidarConfig(channels=24, upper_fov_deg=30.0, lower_fov_deg=-60.0, horizontal_fov_deg=120.0,
                         rotation_frequency_hz=7.0)  # sweeps azimuths 60 down to 18 deg
    pose = (1.0, -2.0, 2.0, 2.2)
    view = pose[3] + math.radians(39.0)
    ahead, left = np.array([math.cos(view), math.sin(view)]), np.array([-math.sin(view), math.cos(view)])
    # A wall alongside, centred behind the sensor, whose bounding disc holds the sensor;
    # and a block centred past the range whose near face is within it.
    wall = np.array(pose[:2]) - 5.0 * ahead + 1.5 * left
    block = np.array(pose[:2]) + 58.0 * ahead
    awkward = OrientedBoxes(centre_x_m=[wall[0], block[0]], centre_y_m=[wall[1], block[1]], yaw_rad=view,
                            length_m=[30.0, 20.0], width_m=[0.5, 20.0], height_m=4.0,
                            semantic_tag=[SEMANTIC_ID["fence"], SEMANTIC_ID["building"]])
    boxes = OrientedBoxes.concatenate([scattered, awkward])

    def every_pair(rays, pose, boxes, range_m):
        grid = np.meshgrid(np.arange(len(boxes)), *(np.arange(n) for n in rays.shape), indexing="ij")
        return tuple(g.ravel() for g in grid)

    filtered = RayCastLidar(config, np.random.default_rng(0)).scan(pose, DT_S, boxes, -5)
    monkeypatch.setattr(lidar_module, "_candidate_pairs", every_pair)
    brute_force = RayCastLidar(config, np.random.default_rng(0)).scan(pose, DT_S, boxes, -5)
    assert {SEMANTIC_ID["fence"], SEMANTIC_ID["building"]} <= set(filtered[:, TAG].astype(int))
    np.testing.assert_array_equal(filtered, brute_force)


def test_excluded_actor_is_invisible():
    points = _lidar().scan((0.0, 0.0, 2.4, 0.0), DT_S, [_car(7, 12.0, 0.0)], exclude_actor_id=7)
    assert not np.any(points[:, TAG] == CAR)


def test_box_behind_another_is_occluded():
    front = _car(1, 10.0, 0.0, length=2.0, width=2.0, height=2.0)
    behind = ActorState(2, ActorKind.PEDESTRIAN, 20.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0)
    pose = (0.0, 0.0, 2.4, 0.0)
    dense = {"points_per_second": 320_000}
    alone = _lidar(**dense).scan(pose, DT_S, [behind], EGO_ID)
    assert np.sum(alone[:, TAG] == PEDESTRIAN) > 5
    both = _lidar(**dense).scan(pose, DT_S, [front, behind], EGO_ID)
    assert np.sum(both[:, TAG] == CAR) > 5
    assert not np.any(both[:, TAG] == PEDESTRIAN)


def test_nothing_beyond_range():
    config = LidarConfig(range_m=20.0)
    near, far = _car(1, 15.0, 0.0), _car(2, 0.0, 30.0)
    points = RayCastLidar(config, np.random.default_rng(0)).scan((0.0, 0.0, 2.4, 0.0), DT_S, [near, far],
                                                                  EGO_ID)
    ranges = np.linalg.norm(points[:, :3], axis=1)
    assert ranges.max() <= config.range_m + 1e-4
    world = _to_world(points, (0.0, 0.0, 2.4, 0.0))
    assert np.abs(_signed_distance_to_box(world, far)).min() > 1.0  # no point on the far car
    assert np.abs(_signed_distance_to_box(world, near)).min() < 1e-3
    # Lasers whose ground hit is farther than the range return nothing at all.
    ground_only = RayCastLidar(config, np.random.default_rng(0)).scan((0.0, 0.0, 2.4, 0.0), DT_S, [], EGO_ID)
    elevations = config.elevations_rad()
    downward = elevations[elevations < 0]
    reaching = np.sum(2.4 / np.sin(-downward) <= config.range_m)
    assert 0 < reaching < len(downward)
    assert len(ground_only) == reaching * config.rays_per_channel(DT_S)


def test_static_boxes_append_to_actor_boxes():
    building = OrientedBoxes(centre_x_m=[0.0], centre_y_m=[-15.0], yaw_rad=0.0, length_m=30.0,
                             width_m=5.0, height_m=10.0, semantic_tag=SEMANTIC_ID["building"])
    boxes = OrientedBoxes.concatenate([OrientedBoxes.from_actors([_car(1, 10.0, 0.0)]), building])
    assert len(boxes) == 2
    points = _lidar().scan((0.0, 0.0, 2.4, 0.0), DT_S, boxes, exclude_actor_id=-1)
    tags = set(np.unique(points[:, TAG]).astype(int))
    assert {CAR, ROAD, SEMANTIC_ID["building"]} <= tags


def test_ground_tag_callable_gets_world_positions():
    def sidewalk_left_of_y4(x, y):
        return np.where(y > 4.0, SEMANTIC_ID["sidewalk"], ROAD)

    pose = (5.0, 0.0, 2.4, math.pi / 2)  # facing +y: the sidewalk lies ahead
    points = _lidar().scan(pose, DT_S, [], EGO_ID, ground_tag=sidewalk_left_of_y4)
    world_y = _to_world(points, pose)[:, 1]
    sidewalk = points[:, TAG] == SEMANTIC_ID["sidewalk"]
    assert sidewalk.any() and (~sidewalk).any()
    assert np.all(world_y[sidewalk] > 4.0 - 1e-4) and np.all(world_y[~sidewalk] <= 4.0 + 1e-4)
    assert np.all(points[sidewalk, X] > 0)  # ahead in the sensor frame


# ---------------------------------------------------------------- sweep
def test_consecutive_scans_sweep_the_full_circle_in_one_rotation_period():
    config = LidarConfig(channels=2, upper_fov_deg=-10.0, lower_fov_deg=-20.0, points_per_second=2000,
                         rotation_frequency_hz=5.0)  # 90 deg and 50 rays per channel per step
    lidar = RayCastLidar(config, np.random.default_rng(0))
    per_channel = config.rays_per_channel(DT_S)
    steps = round(1 / (config.rotation_frequency_hz * DT_S))
    scans = [lidar.scan((0.0, 0.0, 2.4, 0.0), DT_S, [], EGO_ID) for _ in range(steps)]
    assert all(len(s) == config.channels * per_channel for s in scans)

    spacing = 360.0 / (steps * per_channel)
    previous_end = None
    for scan in scans:
        azimuth = np.degrees(np.arctan2(scan[:per_channel, Y], scan[:per_channel, X]))
        turned = -np.diff(np.unwrap(np.radians(azimuth)))  # clockwise seen from above
        np.testing.assert_allclose(np.degrees(turned), spacing, atol=1e-3)
        if previous_end is not None:  # picks up one spacing after the last ray
            gap = (previous_end - azimuth[0]) % 360.0
            assert gap == pytest.approx(spacing, abs=1e-3)
        previous_end = azimuth[-1]
    everything = np.concatenate([s[:per_channel] for s in scans])
    bins = np.floor((np.degrees(np.arctan2(everything[:, Y], everything[:, X])) + 180.0) / spacing + 0.5)
    assert len(np.unique(bins % (steps * per_channel))) == steps * per_channel

    assert min(lidar.sweep_angle_deg, 360.0 - lidar.sweep_angle_deg) < 1e-6  # back at the start
    lidar.scan((0.0, 0.0, 2.4, 0.0), DT_S, [], EGO_ID)
    lidar.reset()
    np.testing.assert_array_equal(lidar.scan((0.0, 0.0, 2.4, 0.0), DT_S, [], EGO_ID), scans[0])


def test_too_few_points_for_a_step_returns_nothing_and_holds_the_sweep():
    lidar = _lidar(points_per_second=32, rotation_frequency_hz=5.0)
    assert lidar.scan((0.0, 0.0, 2.4, 0.0), DT_S, [], EGO_ID).shape == (0, 5)
    assert lidar.sweep_angle_deg == 0.0


# ---------------------------------------------------------------- randomness
def test_dropoff_and_noise_are_deterministic_for_a_seed():
    scene = [_car(1, 10.0, 2.0)]
    pose = (0.0, 0.0, 2.4, 0.0)
    noisy = {"dropoff_general_rate": 0.3, "noise_stddev_m": 0.02}
    first = _lidar(seed=11, **noisy).scan(pose, DT_S, scene, EGO_ID)
    again = _lidar(seed=11, **noisy).scan(pose, DT_S, scene, EGO_ID)
    other = _lidar(seed=12, **noisy).scan(pose, DT_S, scene, EGO_ID)
    clean = _lidar().scan(pose, DT_S, scene, EGO_ID)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(first) / len(clean) == pytest.approx(0.7, abs=0.05)
    # Noise moves points along their rays: directions keep, ranges scatter by the stddev.
    ground = first[first[:, TAG] == ROAD].astype(float)
    ranges = np.linalg.norm(ground[:, :3], axis=1)
    elevation = np.arcsin(ground[:, Z] / ranges)
    residual = ranges - 2.4 / np.sin(-elevation)
    assert np.std(residual) == pytest.approx(0.02, rel=0.15)


# ---------------------------------------------------------------- frames
def test_sensor_frame_points_do_not_depend_on_the_vehicle_pose():
    config = LidarConfig(x_m=1.2, y_m=-0.3, yaw_rad=0.25)
    relative = (11.3, 2.7, 0.4)  # the car, in the ego's frame: x, y, yaw

    def scan_with_ego_at(x: float, y: float, yaw: float) -> np.ndarray:
        c, s = math.cos(yaw), math.sin(yaw)
        car = _car(3, x + c * relative[0] - s * relative[1], y + s * relative[0] + c * relative[1],
                   yaw + relative[2])
        lidar = RayCastLidar(config, np.random.default_rng(0))
        return lidar.scan(mount_pose_world(config, x, y, yaw), DT_S, [car, _car(EGO_ID, x, y, yaw)], EGO_ID)

    reference = scan_with_ego_at(0.0, 0.0, 0.0)
    turned = scan_with_ego_at(-40.0, 25.0, math.pi / 2)
    assert np.sum(reference[:, TAG] == CAR) > 20
    np.testing.assert_array_equal(turned[:, TAG], reference[:, TAG])
    np.testing.assert_allclose(turned[:, :4], reference[:, :4], atol=1e-4)
