"""CARLA sensor data decoders, blueprint specs and weather, on synthetic CARLA-encoded data.

The encoders here are written from CARLA's documentation (Docs/ref_sensors.md) and
sources (SemanticLidarData.h, ATagger::GetActorLabelColor, InertialMeasurementUnit.cpp),
independently of the decoders under test.
"""

import math
import struct
from types import SimpleNamespace

import carla
import numpy as np
import pytest

from drivestack.schema import SEMANTIC_ID, EgoState
from sim.carla_backend import blueprints, sensor_data
from sim.carla_backend.weather import carla_weather, headlights_on
from sim.render.weather import WEATHER_NAMES
from sim.road_map import RoadMap
from sim.sensors.camera_model import CameraConfig
from sim.sensors.inertial import GRAVITY_MPS2, GnssConfig, Imu, ImuConfig, compass_rad
from sim.sensors.lidar import LidarConfig
from sim.towns import town_path

W, H = 8, 6


def image(bgra: np.ndarray) -> SimpleNamespace:
    """A carla.Image look-alike: BGRA bytes, row-major."""
    h, w, _ = bgra.shape
    return SimpleNamespace(width=w, height=h, fov=90.0, frame=7, timestamp=0.35, raw_data=bytes(bgra.astype(np.uint8)))


def bgra_of(r, g, b) -> np.ndarray:
    r, g, b = (np.broadcast_to(np.asarray(c), (H, W)) for c in (r, g, b))
    return np.stack([b, g, r, np.full((H, W), 255)], axis=-1)


# -- cameras -----------------------------------------------------------------------------

def test_rgb_from_bgra():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3))
    out = sensor_data.decode_rgb(image(bgra_of(rgb[..., 0], rgb[..., 1], rgb[..., 2])))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def encode_depth(depth_m: np.ndarray) -> np.ndarray:
    # Docs: normalized = (R + G*256 + B*256*256) / (256*256*256 - 1); metres = 1000 * normalized.
    code = np.rint(depth_m / 1000.0 * (256**3 - 1)).astype(np.int64)
    return bgra_of(code % 256, (code // 256) % 256, code // 65536)


def test_depth_round_trip_within_quantisation():
    depth = np.random.default_rng(1).uniform(0.0, 1000.0, (H, W))
    depth[0, 0], depth[0, 1], depth[0, 2] = 0.0, 1000.0, 1.234567
    out = sensor_data.decode_depth_m(image(encode_depth(depth)))
    assert out.dtype == np.float32 and out.shape == (H, W)
    step = 1000.0 / (256**3 - 1)
    np.testing.assert_allclose(out, depth, atol=1.5 * step, rtol=0)
    assert out[0, 1] == pytest.approx(1000.0) and out[0, 0] == 0.0


def test_semantic_lookup_table():
    tags = np.arange(H * W).reshape(H, W) % 32
    out = sensor_data.decode_semantic(image(bgra_of(tags, 0, 0)))
    assert out.dtype == np.uint8
    lut = sensor_data.CARLA_TAG_TO_SEMANTIC
    for ours in SEMANTIC_ID.values():
        assert lut[ours] == ours  # our classes use CARLA's numbers
    named = {4: "building", 13: "pedestrian", 15: "car", 16: "car", 18: "car", 19: "car", 21: "static",
             22: "static", 23: "terrain", 25: "terrain", 26: "building", 27: "terrain", 28: "fence"}
    for tag, name in named.items():
        assert lut[tag] == SEMANTIC_ID[name]
    assert lut.shape == (256,) and (lut[29:] == 0).all()
    assert set(np.unique(lut)) <= set(SEMANTIC_ID.values())
    np.testing.assert_array_equal(out, lut[tags])


def encode_instance(tags: np.ndarray, uids: np.ndarray) -> np.ndarray:
    # ATagger::GetActorLabelColor: R = tag, G = id & 0xff, B = (id & 0xff00) >> 8.
    return bgra_of(tags, uids & 0xFF, (uids & 0xFF00) >> 8)


def test_instance_codes_and_ids():
    uids = np.zeros((H, W), np.int64)
    uids[1:3, 1:3] = 0x1234  # a car
    uids[4:, 5:] = 0x00FF  # a pedestrian
    uids[0, :] = 0x4321  # a building: Unreal ids are on every object, not only actors
    tags = np.where(uids == 0x1234, 14, np.where(uids == 0xFF, 12, 3))
    img = image(encode_instance(tags, uids))
    np.testing.assert_array_equal(sensor_data.instance_codes(img), uids)
    out = sensor_data.decode_instance(img, {0x1234: 8, 0xFF: 12, 0: 99})
    assert out.dtype == np.int32
    assert (out[1:3, 1:3] == 8).all() and (out[4:, 5:] == 12).all()
    assert (out[0] == 0).all() and out[3, 0] == 0  # unknown code and code 0 -> no instance
    assert (sensor_data.decode_instance(img, {}) == 0).all()
    with pytest.raises(ValueError, match="codes"):
        sensor_data.decode_instance(img, {70000: 1})


def test_match_instance_codes_votes_and_ignores_occluded_points():
    codes = np.zeros((H, W), np.int64)
    codes[:, :4], codes[:, 4:] = 0x1111, 0x2222
    depth = np.full((H, W), 10.0)
    uv = np.array([[0.5, 0.5], [1.5, 2.5], [2.5, 3.5], [5.5, 1.5], [6.5, 2.5], [7.2, 4.9], [-1.0, 2.0], [3.0, 1.0]])
    labels = np.array([31, 31, 31, 42, 42, 42, 77, 0])
    point_depth = np.full(len(uv), 10.2)
    point_depth[3] = 25.0  # seen by the LiDAR behind what the camera sees: no vote
    labels[3] = 31
    matched = sensor_data.match_instance_codes(codes, uv, labels, depth, point_depth)
    assert matched == {0x1111: 31, 0x2222: 42}
    # Without the depth check the occluded point votes, and 0x2222 is split 2 : 1.
    assert sensor_data.match_instance_codes(codes, uv, labels, min_share=0.7) == {0x1111: 31}


def test_camera_intrinsics_match_camera_config():
    config = CameraConfig(width_px=320, height_px=160, fov_deg=90.0)
    k = sensor_data.camera_intrinsics(320, 160, 90.0)
    np.testing.assert_allclose(k, config.intrinsics)
    assert k[0, 0] == pytest.approx(160.0) and k[0, 2] == 160.0 and k[1, 2] == 80.0


@pytest.mark.parametrize("decode", [sensor_data.decode_rgb, sensor_data.decode_depth_m, sensor_data.decode_semantic,
                                    sensor_data.instance_codes])
def test_image_size_errors_name_the_problem(decode):
    bad = SimpleNamespace(width=320, height=160, raw_data=bytes(1000))
    with pytest.raises(ValueError, match=r"camera image: raw_data of 1000 bytes, expected 204800 \(320x160"):
        decode(bad)
    with pytest.raises(ValueError, match="must be positive"):
        decode(SimpleNamespace(width=0, height=160, raw_data=b""))


# -- semantic LiDAR ------------------------------------------------------------------------

def semantic_lidar(points: list[tuple]) -> SimpleNamespace:
    # SemanticLidarDetection, #pragma pack(1): float x, y, z, cos_inc_angle; uint32 object_idx, object_tag.
    raw = b"".join(struct.pack("<ffffII", *p) for p in points)
    return SimpleNamespace(frame=3, timestamp=0.15, channels=32, raw_data=raw)


LIDAR_POINTS = [(10.0, 2.0, -1.0, 0.9, 0, 1), (3.0, -4.0, 0.0, 0.5, 57, 14), (0.0, 5.0, 1.0, 0.1, 58, 13),
                (1.0, 1.0, 1.0, 1.0, 0, 4), (2.0, 0.0, 0.0, 1.0, 0, 29), (2.0, 0.0, 0.0, 1.0, 0, 300)]


def test_semantic_lidar_flips_y_and_sets_intensity_and_tags():
    rate = 0.004
    points, ids = sensor_data.decode_semantic_lidar_with_ids(semantic_lidar(LIDAR_POINTS), rate)
    assert points.dtype == np.float32 and points.shape == (6, 5)
    expected_xyz = np.array([(x, -y, z) for x, y, z, *_ in LIDAR_POINTS])
    np.testing.assert_allclose(points[:, :3], expected_xyz)
    distance = np.linalg.norm(expected_xyz, axis=1)
    np.testing.assert_allclose(points[:, 3], np.exp(-rate * distance), rtol=1e-6)
    assert points[:, 4].tolist() == [1, 14, 12, 3, 0, 0]  # road, car, rider -> pedestrian, wall -> building
    assert ids.tolist() == [0, 57, 58, 0, 0, 0]
    np.testing.assert_array_equal(sensor_data.decode_semantic_lidar(semantic_lidar(LIDAR_POINTS), rate), points)
    empty = sensor_data.decode_semantic_lidar(semantic_lidar([]), rate)
    assert empty.shape == (0, 5) and empty.dtype == np.float32


def test_semantic_lidar_noise_along_the_ray_and_dropoff():
    measurement = semantic_lidar(LIDAR_POINTS * 200)
    clean = sensor_data.decode_semantic_lidar(measurement, 0.01)
    noisy = sensor_data.decode_semantic_lidar(measurement, 0.01, np.random.default_rng(0), noise_stddev_m=0.1)
    np.testing.assert_array_equal(noisy[:, 3:], clean[:, 3:])  # intensity from the true distance
    unit = clean[:, :3] / np.linalg.norm(clean[:, :3], axis=1, keepdims=True)
    np.testing.assert_allclose(noisy[:, :3] / np.linalg.norm(noisy[:, :3], axis=1, keepdims=True), unit, atol=1e-5)
    moved = np.linalg.norm(noisy[:, :3], axis=1) - np.linalg.norm(clean[:, :3], axis=1)
    assert 0.08 < moved.std() < 0.12
    kept = sensor_data.decode_semantic_lidar(measurement, 0.01, np.random.default_rng(0), dropoff_general_rate=0.5)
    assert 0.4 < len(kept) / len(clean) < 0.6
    with pytest.raises(ValueError, match="rng"):
        sensor_data.decode_semantic_lidar(measurement, 0.01, None, noise_stddev_m=0.1)


def test_semantic_lidar_size_error():
    with pytest.raises(ValueError, match="semantic lidar: raw_data of 25 bytes is not a whole number of 24-byte"):
        sensor_data.decode_semantic_lidar(SimpleNamespace(raw_data=bytes(25)), 0.004)


# -- IMU and GNSS --------------------------------------------------------------------------

def carla_compass(yaw_carla_deg: float) -> float:
    """AInertialMeasurementUnit::ComputeCompass: angle from north (CARLA -y), clockwise, [0, 2 pi)."""
    forward = np.array([math.cos(math.radians(yaw_carla_deg)), math.sin(math.radians(yaw_carla_deg))])
    north = np.array([0.0, -1.0])
    dot = float(np.clip(forward @ north, -1.0, 1.0))
    if dot >= 1.0:
        return 0.0
    compass = math.acos(dot)
    cross_z = north[0] * forward[1] - north[1] * forward[0]
    return 2 * math.pi - compass if cross_z < 0 else compass


def test_imu_matches_the_builtin_imu_in_a_left_turn():
    """A car at 10 m/s braking at 1 m/s^2 while turning left at 0.5 rad/s, heading 0.3 rad:
    CARLA measures the centripetal acceleration on its -y (left) and a negative yaw rate."""
    yaw = 0.3
    measurement = SimpleNamespace(accelerometer=carla.Vector3D(-1.0, -5.0, GRAVITY_MPS2),
                                  gyroscope=carla.Vector3D(0.0, 0.0, -0.5), compass=carla_compass(-math.degrees(yaw)),
                                  frame=1, timestamp=0.05)
    reading = sensor_data.imu_reading(measurement, 123)
    builtin = Imu(ImuConfig(), np.random.default_rng(0)).read(
        EgoState(stamp_ns=123, x_m=0.0, y_m=0.0, yaw_rad=yaw, speed_mps=10.0, yaw_rate_radps=0.5, accel_mps2=-1.0))
    assert reading.stamp_ns == 123
    assert reading.accel_mps2 == pytest.approx(builtin.accel_mps2, abs=1e-6)
    assert reading.gyro_radps == pytest.approx(builtin.gyro_radps)
    assert reading.compass_rad == pytest.approx(builtin.compass_rad)
    roll_rate = sensor_data.imu_reading(SimpleNamespace(accelerometer=carla.Vector3D(), compass=0.0,
                                                        gyroscope=carla.Vector3D(0.2, 0.3, 0.0)), 0)
    assert roll_rate.gyro_radps == pytest.approx((-0.2, 0.3, 0.0))  # an axial vector: (-x, y, -z)


@pytest.mark.parametrize("yaw_rad", [0.0, 0.4, math.pi / 2, 2.5, -math.pi / 2, -0.1])
def test_carla_compass_convention_is_ours(yaw_rad):
    assert carla_compass(-math.degrees(yaw_rad)) == pytest.approx(compass_rad(yaw_rad) % (2 * math.pi), abs=1e-9)


@pytest.fixture(scope="module")
def grid_map() -> RoadMap:
    return RoadMap.from_file(town_path("grid_town"))


def test_gnss_is_mirrored_back_to_the_builtin_geolocation(grid_map):
    carla_map = grid_map._carla_map
    for x_m, y_m in ((0.0, 0.0), (120.0, 35.0), (-40.0, -80.0)):
        # The server geolocates its own (left-handed) location with the map's projection.
        geo = carla_map.transform_to_geolocation(carla.Location(x=x_m, y=-y_m, z=0.0))
        measurement = SimpleNamespace(latitude=geo.latitude, longitude=geo.longitude, altitude=12.5, frame=1)
        reading = sensor_data.gnss_reading(measurement, 5, carla_map)
        lat, lon, _ = grid_map.geolocation(x_m, y_m)
        assert (reading.latitude_deg, reading.longitude_deg) == pytest.approx((lat, lon), abs=1e-9)
        assert reading.altitude_m == 12.5 and reading.stamp_ns == 5
        passed = sensor_data.gnss_reading(measurement, 5)
        assert (passed.latitude_deg, passed.longitude_deg) == (geo.latitude, geo.longitude)
    north = sensor_data.gnss_reading(SimpleNamespace(**_geo(carla_map, 0.0, -100.0)), 0, carla_map)
    assert north.latitude_deg > grid_map.geolocation(0.0, 0.0)[0]  # REP 103 +y is north


def _geo(carla_map, x: float, y_carla: float) -> dict:
    g = carla_map.transform_to_geolocation(carla.Location(x=x, y=y_carla, z=0.0))
    return {"latitude": g.latitude, "longitude": g.longitude, "altitude": 0.0}


# -- blueprints ----------------------------------------------------------------------------

def _all_numbers(attributes: dict[str, str]) -> None:
    for key, value in attributes.items():
        assert isinstance(value, str) and "e" not in value.lower(), (key, value)
        float(value)


def test_camera_specs_one_per_kind():
    config = CameraConfig(width_px=640, height_px=320, fov_deg=100.0, pitch_rad=math.radians(5.0),
                          kinds=("rgb", "semantic", "instance"))
    specs = blueprints.camera_sensor_specs(config)
    assert [(s.kind, s.blueprint_id) for s in specs] == [
        ("rgb", "sensor.camera.rgb"), ("semantic", "sensor.camera.semantic_segmentation"),
        ("instance", "sensor.camera.instance_segmentation")]
    for kind, blueprint_id, attributes, mount in specs:
        assert attributes == {"image_size_x": "640", "image_size_y": "320", "fov": "100.0", "sensor_tick": "0.0"}
        assert isinstance(mount, carla.Transform) and mount.rotation.pitch == pytest.approx(-5.0)
    depth = blueprints.camera_sensor_specs(CameraConfig(kinds=("depth",)), (0.1, 0.0, 0.0))[0]
    assert depth.blueprint_id == "sensor.camera.depth" and depth.transform.location.x == pytest.approx(1.6)


def test_lidar_spec():
    config = LidarConfig(channels=64, range_m=70.0, points_per_second=100000, rotation_frequency_hz=20.0,
                         upper_fov_deg=15.0, lower_fov_deg=-25.0, y_m=0.3, yaw_rad=0.1)
    blueprint_id, attributes, mount = blueprints.lidar_sensor_spec(config)
    assert blueprint_id == "sensor.lidar.ray_cast_semantic"
    assert attributes == {"channels": "64", "range": "70.0", "points_per_second": "100000",
                          "rotation_frequency": "20.0", "upper_fov": "15.0", "lower_fov": "-25.0",
                          "horizontal_fov": "360.0", "sensor_tick": "0.0"}
    assert mount.location.y == pytest.approx(-0.3) and mount.rotation.yaw == pytest.approx(-math.degrees(0.1))


def test_imu_spec_noise_and_bias_sign():
    blueprint_id, attributes, mount = blueprints.imu_sensor_spec(
        ImuConfig(accel_noise_stddev_mps2=0.05, gyro_noise_stddev_radps=0.01, gyro_bias_radps=0.002), seed=9)
    assert blueprint_id == "sensor.other.imu" and attributes["noise_seed"] == "9"
    assert all(attributes[f"noise_accel_stddev_{a}"] == "0.05" for a in "xyz")
    assert all(attributes[f"noise_gyro_stddev_{a}"] == "0.01" for a in "xyz")
    # Our bias is on the REP 103 yaw rate, CARLA's gyroscope z is its negative.
    assert attributes["noise_gyro_bias_z"] == "-0.002" and attributes["noise_gyro_bias_x"] == "0.0"
    assert attributes["sensor_tick"] == "0.0"
    _all_numbers(attributes)
    assert (mount.location.x, mount.location.y, mount.location.z) == (0.0, 0.0, 0.0)


def test_gnss_spec_metres_to_degrees(grid_map):
    latitude = grid_map.geolocation(0.0, 0.0)[0]
    blueprint_id, attributes, _ = blueprints.gnss_sensor_spec(
        GnssConfig(horizontal_noise_stddev_m=2.0, altitude_noise_stddev_m=3.0), 4, latitude)
    assert blueprint_id == "sensor.other.gnss" and attributes["noise_seed"] == "4"
    assert attributes["noise_alt_stddev"] == "3.0" and attributes["sensor_tick"] == "0.0"
    _all_numbers(attributes)
    # The degrees per metre of carla's own projection, measured over 100 m at the map origin.
    lat0, lon0, _ = grid_map.geolocation(0.0, 0.0)
    deg_per_m_lat = (grid_map.geolocation(0.0, 100.0)[0] - lat0) / 100.0
    deg_per_m_lon = (grid_map.geolocation(100.0, 0.0)[1] - lon0) / 100.0
    assert float(attributes["noise_lat_stddev"]) == pytest.approx(2.0 * deg_per_m_lat, rel=1e-4)
    assert float(attributes["noise_lon_stddev"]) == pytest.approx(2.0 * deg_per_m_lon, rel=1e-4)
    with pytest.raises(ValueError, match="latitude"):
        blueprints.gnss_sensor_spec(GnssConfig(), 0, float("nan"))


def test_event_sensor_specs():
    assert blueprints.collision_sensor_spec()[:2] == ("sensor.other.collision", {})
    assert blueprints.lane_invasion_sensor_spec()[:2] == ("sensor.other.lane_invasion", {})


# -- weather -------------------------------------------------------------------------------

def test_every_weather_name_maps_to_a_distinct_look():
    weathers = {name: carla_weather(name) for name in WEATHER_NAMES}
    assert all(isinstance(w, carla.WeatherParameters) for w in weathers.values())
    assert weathers["clear_noon"] == carla.WeatherParameters.ClearNoon
    assert weathers["night"].sun_altitude_angle < 0 < weathers["sunset"].sun_altitude_angle
    assert weathers["sunset"].sun_altitude_angle < weathers["clear_noon"].sun_altitude_angle
    assert weathers["fog"].fog_density >= 50 and weathers["fog"].fog_density == max(
        w.fog_density for w in weathers.values())
    assert weathers["rain"].precipitation >= 50 and weathers["rain"].wetness >= 80
    assert weathers["rain"].precipitation_deposits >= 50
    assert weathers["overcast"].cloudiness > weathers["clear_noon"].cloudiness
    looks = {tuple(round(getattr(w, f), 3) for f in ("cloudiness", "precipitation", "sun_altitude_angle",
                                                       "fog_density", "wetness")) for w in weathers.values()}
    assert len(looks) == len(WEATHER_NAMES)


def test_weather_objects_are_fresh_and_names_checked():
    carla_weather("fog").fog_density = 0.0
    assert carla_weather("fog").fog_density >= 50
    assert carla.WeatherParameters.CloudyNoon.fog_density < 10  # the shared preset is untouched
    with pytest.raises(ValueError, match="clear_noon, overcast, sunset, night, rain, fog"):
        carla_weather("drizzle")
    with pytest.raises(ValueError, match="unknown weather"):
        headlights_on("drizzle")
    assert [headlights_on(n) for n in WEATHER_NAMES] == [False, False, True, True, True, True]
