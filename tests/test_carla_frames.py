"""CARLA <-> REP 103 conversions, checked against carla's own value types and transform maths."""

import math

import carla
import numpy as np
import pytest

from drivestack.frames import rotation_rpy
from drivestack.schema import VehicleControl
from sim import carla_frames as cf
from sim.sensors.camera_model import CameraConfig
from sim.sensors.lidar import LidarConfig


def _close_angles(a: float, b: float, tol: float = 1e-5) -> bool:
    return abs(cf.wrap_angle(a - b)) < tol


def test_location_round_trip_flips_y():
    assert cf.location_to_xyz(carla.Location(1.0, 2.0, 3.0)) == (1.0, -2.0, 3.0)
    loc = cf.xyz_to_location(4.5, -6.25, 0.5)
    assert (loc.x, loc.y, loc.z) == (4.5, 6.25, 0.5)
    assert cf.location_to_xyz(cf.xyz_to_location(4.5, -6.25, 0.5)) == pytest.approx((4.5, -6.25, 0.5))


@pytest.mark.parametrize("roll, pitch, yaw", [(0.0, 0.0, 0.0), (10.0, -20.0, 30.0), (-35.0, 15.0, 179.0),
                                              (5.0, 5.0, 270.0), (0.0, 0.0, -190.0)])
def test_rotation_signs_and_round_trip(roll, pitch, yaw):
    rotation = carla.Rotation(pitch=pitch, yaw=yaw, roll=roll)
    pose = cf.transform_to_pose(carla.Transform(carla.Location(1, 2, 3), rotation))
    assert _close_angles(pose.roll_rad, math.radians(roll))
    assert _close_angles(pose.pitch_rad, -math.radians(pitch))
    assert _close_angles(pose.yaw_rad, -math.radians(yaw))
    for angle in (pose.roll_rad, pose.pitch_rad, pose.yaw_rad):
        assert -math.pi < angle <= math.pi  # wrapped: CARLA yaw 270 is REP 103 +90
    back = cf.transform_to_pose(cf.pose_to_transform(pose))
    assert (back.x_m, back.y_m, back.z_m) == pytest.approx((1.0, -2.0, 3.0))
    for a, b in ((back.roll_rad, pose.roll_rad), (back.pitch_rad, pose.pitch_rad), (back.yaw_rad, pose.yaw_rad)):
        assert _close_angles(a, b)


def test_yaw_wrap_and_existing_helpers_agree():
    assert cf.transform_to_pose(carla.Transform(carla.Location(), carla.Rotation(yaw=270.0))).yaw_rad == \
        pytest.approx(math.pi / 2)
    assert cf.yaw_deg_to_rad(-90.0) == pytest.approx(math.pi / 2)  # CARLA -90 = facing -y = REP 103 left


@pytest.mark.parametrize("seed", range(5))
def test_carla_transform_matches_rep103_composition(seed):
    """carla.Transform.transform (LibCarla's own maths) of a local point, converted, equals
    converting the pose and the point and composing with rotation_rpy: guards handedness."""
    rng = np.random.default_rng(seed)
    loc, point = rng.uniform(-50, 50, 3), rng.uniform(-5, 5, 3)
    pitch, yaw, roll = rng.uniform(-60, 60), rng.uniform(-180, 360), rng.uniform(-60, 60)
    transform = carla.Transform(carla.Location(*loc), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))
    world_carla = transform.transform(carla.Location(*point))
    expected = cf.location_to_xyz(world_carla)

    pose = cf.transform_to_pose(transform)
    local = np.array(cf.location_to_xyz(carla.Location(*point)))
    composed = rotation_rpy(pose.roll_rad, pose.pitch_rad, pose.yaw_rad) @ local + (pose.x_m, pose.y_m, pose.z_m)
    np.testing.assert_allclose(composed, expected, atol=1e-4)


def test_velocity_and_acceleration_flip_y():
    assert cf.vector_to_xyz(carla.Vector3D(3.0, 4.0, -1.0)) == (3.0, -4.0, -1.0)
    v = cf.xyz_to_vector(3.0, -4.0, -1.0)
    assert cf.vector_to_xyz(v) == pytest.approx((3.0, -4.0, -1.0))


def test_left_turn_has_positive_yaw_rate():
    # Turning left in CARLA: yaw decreasing, angular velocity z negative (deg/s).
    assert cf.angular_velocity_to_radps(carla.Vector3D(0.0, 0.0, -30.0))[2] == pytest.approx(math.radians(30.0))
    wx, wy, wz = cf.angular_velocity_to_radps(carla.Vector3D(10.0, 20.0, 30.0))
    assert (wx, wy, wz) == pytest.approx((-math.radians(10.0), math.radians(20.0), -math.radians(30.0)))


def _matrix(rotation: carla.Rotation) -> np.ndarray:
    return np.array(carla.Transform(carla.Location(), rotation).get_matrix())[:3, :3]


@pytest.mark.parametrize("axis", ["roll", "pitch", "yaw"])
def test_angular_velocity_is_an_axial_vector(axis):
    """Differentiate CARLA's own rotation matrices: the body rate omega (R' = [omega]x R, the
    physics engine's convention in its coordinates) converted by axial_vector_to_xyz must
    equal the rate of the converted REP 103 angles."""
    dt, rate_deg = 1e-3, 20.0
    start = dict(pitch=0.0, yaw=0.0, roll=0.0)
    after = dict(start, **{axis: rate_deg * dt})
    r0, r1 = _matrix(carla.Rotation(**start)), _matrix(carla.Rotation(**after))
    skew = (r1 @ r0.T - r1.T @ r0) / (2 * dt)
    omega_carla = carla.Vector3D(skew[2, 1], skew[0, 2], skew[1, 0])  # rad/s, CARLA axes
    converted = np.array(cf.axial_vector_to_xyz(omega_carla))
    p0 = cf.transform_to_pose(carla.Transform(carla.Location(), carla.Rotation(**start)))
    p1 = cf.transform_to_pose(carla.Transform(carla.Location(), carla.Rotation(**after)))
    rep_rates = np.array([p1.roll_rad - p0.roll_rad, p1.pitch_rad - p0.pitch_rad, p1.yaw_rad - p0.yaw_rad]) / dt
    np.testing.assert_allclose(converted, rep_rates, atol=2e-3)


def test_lidar_points_flip_y_and_back():
    points = np.array([[1.0, 2.0, 3.0, 0.5], [-4.0, -5.0, 6.0, 0.25]], np.float32)
    rep = cf.points_to_rep103(points)
    assert rep.dtype == np.float32
    np.testing.assert_array_equal(rep, [[1.0, -2.0, 3.0, 0.5], [-4.0, 5.0, 6.0, 0.25]])
    np.testing.assert_array_equal(cf.points_from_rep103(rep), points)
    np.testing.assert_array_equal(points[0], [1.0, 2.0, 3.0, 0.5])  # input untouched
    with pytest.raises(ValueError, match="shape"):
        cf.points_to_rep103(np.zeros((4, 2)))


def test_camera_pitched_down_has_negative_carla_pitch():
    config = CameraConfig(x_m=1.2, y_m=0.3, z_m=1.5, pitch_rad=math.radians(10.0))
    t = cf.camera_mount_transform(config)
    assert t.rotation.pitch == pytest.approx(-10.0)
    assert (t.location.x, t.location.y, t.location.z) == pytest.approx((1.2, -0.3, 1.5))


def test_camera_mount_round_trip_with_box_offset():
    config = CameraConfig(x_m=1.5, y_m=-0.4, z_m=1.6, roll_rad=0.05, pitch_rad=0.1, yaw_rad=-0.7)
    offset = (0.2, -0.05, -0.01)
    t = cf.camera_mount_transform(config, offset)
    assert t.location.x == pytest.approx(1.7) and t.location.y == pytest.approx(0.45)
    mount = cf.camera_mount_from_transform(t, offset)
    assert mount == pytest.approx((1.5, -0.4, 1.6, 0.05, 0.1, -0.7), abs=1e-5)


def test_camera_optical_axes_match_carla_camera_axes():
    """CARLA renders along the sensor's +x with u along +y, v along -z; our optical frame
    (z forward, x right, y down) on the same mount must point the same way in the world."""
    config = CameraConfig(roll_rad=0.1, pitch_rad=0.2, yaw_rad=0.3)
    t = cf.camera_mount_transform(config)
    optical_in_base = config.mount_rotation() @ np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]).T
    for carla_axis, optical_column in (((1, 0, 0), 2), ((0, 1, 0), 0), ((0, 0, -1), 1)):
        tip = t.transform(carla.Location(*carla_axis))
        direction = np.array(cf.location_to_xyz(tip)) - cf.location_to_xyz(t.location)
        np.testing.assert_allclose(direction, optical_in_base[:, optical_column], atol=1e-5)


def test_lidar_mount_and_box_ground_centre():
    t = cf.lidar_mount_transform(LidarConfig(x_m=0.5, y_m=0.2, z_m=2.4, yaw_rad=math.radians(30.0)))
    assert (t.location.x, t.location.y, t.location.z) == pytest.approx((0.5, -0.2, 2.4))
    assert t.rotation.yaw == pytest.approx(-30.0) and t.rotation.pitch == 0.0 and t.rotation.roll == 0.0
    box = carla.BoundingBox(carla.Location(0.1, 0.2, 0.7), carla.Vector3D(2.4, 1.0, 0.75))
    assert cf.box_ground_centre(box) == pytest.approx((0.1, -0.2, -0.05))


def test_control_steer_sign_and_round_trip():
    ours = VehicleControl(throttle=0.4, steer=0.25, brake=0.0, hand_brake=False, reverse=True)
    theirs = cf.control_to_carla(ours)
    assert isinstance(theirs, carla.VehicleControl)
    assert theirs.steer == pytest.approx(-0.25) and theirs.throttle == pytest.approx(0.4) and theirs.reverse
    back = cf.control_from_carla(theirs)
    assert back.steer == pytest.approx(0.25) and back.throttle == pytest.approx(0.4)
    assert back.reverse and not back.hand_brake
    assert cf.control_from_carla(carla.VehicleControl(steer=1.0, brake=1.0, hand_brake=True)) == \
        VehicleControl(steer=-1.0, brake=1.0, hand_brake=True)
