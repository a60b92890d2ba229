"""IMU, GNSS and collision sensor of the built-in simulator; the semantic class table."""

import math
from dataclasses import replace

import numpy as np
import pytest

from drivestack.schema import SEMANTIC_CLASSES, EgoState, VehicleControl
from sim.builtin import BuiltinSimulator
from sim.scenario import Scenario
from sim.sensors.suite import SensorSuite
from sim.sensors.inertial import GRAVITY_MPS2, METRES_PER_DEG_LAT, Gnss, GnssConfig, Imu, ImuConfig, compass_rad


def ego(**kw) -> EgoState:
    return EgoState(**({"stamp_ns": 0, "x_m": 0.0, "y_m": 0.0, "yaw_rad": 0.0, "speed_mps": 0.0} | kw))


def test_imu_at_rest_and_in_a_steady_turn():
    imu = Imu(ImuConfig(), np.random.default_rng(0))
    rest = imu.read(ego())
    assert rest.accel_mps2 == (0.0, 0.0, GRAVITY_MPS2) and rest.gyro_radps == (0.0, 0.0, 0.0)
    turn = imu.read(ego(speed_mps=10.0, yaw_rate_radps=0.5, accel_mps2=-1.0))
    assert turn.accel_mps2[0] == -1.0
    assert turn.accel_mps2[1] == pytest.approx(10.0**2 / 20.0)  # v^2 / R, R = v / yaw rate, + = left
    assert turn.gyro_radps[2] == 0.5


@pytest.mark.parametrize("yaw, compass", [(0.0, math.pi / 2), (math.pi / 2, 0.0), (math.pi, 3 * math.pi / 2),
                                          (-math.pi / 2, math.pi)])
def test_compass_is_clockwise_from_north(yaw, compass):
    assert compass_rad(yaw) == pytest.approx(compass)


def test_noise_is_seeded_and_has_the_configured_spread():
    config = ImuConfig(accel_noise_stddev_mps2=0.2, gyro_noise_stddev_radps=0.01)
    a = [Imu(config, np.random.default_rng(3)).read(ego()) for _ in range(2)]
    assert a[0] == a[1]
    imu = Imu(config, np.random.default_rng(4))
    samples = np.array([imu.read(ego()).accel_mps2[0] for _ in range(4000)])
    assert samples.std() == pytest.approx(0.2, rel=0.1)
    gnss = Gnss(GnssConfig(horizontal_noise_stddev_m=2.0), np.random.default_rng(5),
                lambda x, y, z: (49.0 + y / METRES_PER_DEG_LAT, 8.0, z))
    lats = np.array([gnss.read(ego()).latitude_deg for _ in range(4000)])
    assert (lats - 49.0).std() * METRES_PER_DEG_LAT == pytest.approx(2.0, rel=0.1)
    with pytest.raises(ValueError, match="accel_noise_stddev_mps2=-1"):
        ImuConfig(accel_noise_stddev_mps2=-1)


def test_simulator_reports_gnss_from_the_geo_reference_and_imu_noise_leaves_traffic_alone():
    scenario = Scenario(name="s", town="grid_town", route_length_m=200.0, npc_vehicles=10, pedestrians=5, seed=1)
    noisy_sensors = SensorSuite(imu=ImuConfig(accel_noise_stddev_mps2=0.5),
                                gnss=GnssConfig(horizontal_noise_stddev_m=1.0))
    quiet, noisy = BuiltinSimulator(), BuiltinSimulator()
    obs_q, obs_n = quiet.reset(scenario), noisy.reset(replace(scenario, sensors=noisy_sensors))
    lat, lon, _ = quiet.road_map.geolocation(obs_q.ego.x_m, obs_q.ego.y_m)
    assert (obs_q.gnss.latitude_deg, obs_q.gnss.longitude_deg) == pytest.approx((lat, lon), abs=1e-12)
    for _ in range(100):
        obs_q, obs_n = quiet.step(VehicleControl(throttle=0.5)), noisy.step(VehicleControl(throttle=0.5))
    assert [a.x_m for a in obs_q.actors] == [a.x_m for a in obs_n.actors]
    assert obs_q.imu.accel_mps2 != obs_n.imu.accel_mps2
    assert obs_q.imu.stamp_ns == obs_q.stamp_ns


def test_collision_sensor_reports_each_contact_once():
    sim = BuiltinSimulator()
    obs = sim.reset(Scenario(name="c", town="grid_town", route_length_m=200.0, npc_vehicles=1, seed=2))
    # Park the NPC 12 m ahead of the ego, in its lane, and hold it there.
    sim.traffic.s_m[:] = 0.0
    x = obs.ego.x_m + 12.0 * math.cos(obs.ego.yaw_rad)
    y = obs.ego.y_m + 12.0 * math.sin(obs.ego.yaw_rad)
    reported = []
    for _ in range(200):
        sim.state.x_m[1], sim.state.y_m[1], sim.state.yaw_rad[1], sim.state.speed_mps[1] = x, y, obs.ego.yaw_rad, 0.0
        obs = sim.step(VehicleControl(throttle=0.6, steer=0.0))
        reported += obs.collisions
    assert reported == [1]


def test_semantic_table_is_a_subset_of_carlas_tags():
    import carla
    carla_names = {int(value): str(name) for value, name in carla.CityObjectLabel.values.items()}
    expected = {"unlabeled": "NONE", "road": "Roads", "sidewalk": "Sidewalks", "building": "Buildings",
                "fence": "Fences", "pole": "Poles", "traffic_light": "TrafficLight", "traffic_sign": "TrafficSigns",
                "vegetation": "Vegetation", "terrain": "Terrain", "sky": "Sky", "pedestrian": "Pedestrians",
                "car": "Car", "static": "Static", "road_line": "RoadLines"}
    assert {c.name: carla_names[c.class_id] for c in SEMANTIC_CLASSES} == expected


@pytest.mark.parametrize("town, seed, marking", [("multilane_town", 2, "Broken"), ("grid_town", 2, "Solid")])
def test_lane_invasion_sensor_reports_the_crossed_mark(town, seed, marking):
    """Drift left out of the start lane: into the next lane over a broken line on the
    multi-lane town, into the oncoming lane over the solid centre line on the grid."""
    sim = BuiltinSimulator()
    obs = sim.reset(Scenario(name="l", town=town, route_length_m=300.0, seed=seed))
    start_lane = sim.road_map.lanes[obs.ego_lane_segment_id]
    crossed = []
    for _ in range(100):
        obs = sim.step(VehicleControl(throttle=0.4, steer=0.08 if obs.ego.speed_mps > 2 else 0.0))
        crossed += obs.lane_invasions
    assert crossed == [marking] and start_lane.left_marking == marking
