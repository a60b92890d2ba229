"""Sensor suites in scenarios: shipped suites load, bad parameters fail at scenario load."""

import pytest

from sim.scenario import ScenarioError, load_scenario
from sim.sensors.suite import SensorSuite, load_suite

BASE = "town: grid_town\nroute_length_m: 100\n"
CAMERA = "{name: front, width_px: 320, height_px: 160, fov_deg: 90}"


def test_shipped_suites_load():
    full = load_suite("full")
    assert [c.name for c in full.cameras] == ["front"]
    assert set(full.cameras[0].kinds) == {"rgb", "depth", "semantic", "instance"}
    assert full.lidar is not None and full.lidar.channels == 32 and full.ground_truth
    assert load_suite("front_rgb").cameras[0].kinds == ("rgb",)


def test_a_scenario_names_a_suite_or_spells_one_out(tmp_path):
    by_name = tmp_path / "named.yaml"
    by_name.write_text(BASE + "sensors: full\n")
    assert load_scenario(str(by_name)).sensors == load_suite("full")
    inline = tmp_path / "inline.yaml"
    inline.write_text(BASE + f"sensors:\n  cameras: [{CAMERA}]\n  lidar: {{channels: 16}}\n"
                      "  imu: {accel_noise_stddev_mps2: 0.1}\n")
    sensors = load_scenario(str(inline)).sensors
    assert sensors.cameras[0].width_px == 320 and sensors.lidar.channels == 16
    assert sensors.imu.accel_noise_stddev_mps2 == 0.1 and not sensors.ground_truth
    plain = tmp_path / "plain.yaml"
    plain.write_text(BASE)
    assert load_scenario(str(plain)).sensors == SensorSuite()


@pytest.mark.parametrize("sensors, message", [
    ("  cameras: [{name: c, width_px: 0}]\n", r"cameras\[0\]: camera c: width_px=0 must be a whole number"),
    ("  cameras: [{name: c, width_px: 320.5}]\n", "width_px=320.5 must be a whole number"),
    ("  cameras: [{name: c, fov_deg: 0}]\n", r"fov_deg=0 must be in \(0, 180\)"),
    ("  cameras: [{name: c, fov_deg: 180}]\n", r"fov_deg=180 must be in \(0, 180\)"),
    ("  cameras: [{name: c, fov_deg: .nan}]\n", "fov_deg=nan must be finite"),
    ("  cameras: [{name: c, kinds: [rgb, thermal]}]\n", "kinds .* must be a non-empty subset"),
    ("  cameras: [{name: c, zoom: 2}]\n", "unknown parameter"),
    (f"  cameras: [{CAMERA}, {CAMERA}]\n", "camera name.* front used more than once"),
    ("  lidar: {channels: 129}\n", r"channels=129 is outside \[1, 128\]"),
    ("  lidar: {channels: 0}\n", r"channels=0 is outside \[1, 128\]"),
    ("  lidar: {range_m: -5}\n", "range_m=-5 must be positive"),
    ("  lidar: {upper_fov_deg: -40}\n", "lower_fov_deg"),
    ("  imu: {accel_noise_stddev_mps2: -1}\n", "accel_noise_stddev_mps2=-1"),
    ("  radar: {}\n", "unknown key"),
    ("  ground_truth: maybe\n", "ground_truth must be true or false"),
])
def test_bad_sensor_parameters_fail_at_scenario_load(tmp_path, sensors, message):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + "sensors:\n" + sensors)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(str(path))


def test_unknown_suite_names_the_known_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + "sensors: everything\n")
    with pytest.raises(ScenarioError, match=r"unknown sensor suite 'everything' \(known: .*full"):
        load_scenario(str(path))
