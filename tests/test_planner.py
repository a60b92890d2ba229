"""ModularPlanner on bad input: a safe stop with the reason, never an exception."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from drivestack.frames import body_to_image
from drivestack.schema import EgoState, ObjectDetection, Obstacle
from planning.inputs import CameraDetections, ObstacleScan, PlannerInputs, VehicleModel
from planning.planner import ModularPlanner
from sim.builtin import load_town
from sim.vehicle_dynamics import VehicleParams
from tests.maneuvers import CAMERA, _route, _setting

DT_NS = 50_000_000


@pytest.fixture(scope="module")
def world():
    road_map, _ = load_town("grid_town")
    xy, ids, _ = _setting(road_map, "junction")  # 60 m before a signalled stop line
    return road_map, _route(xy, ids), xy


def _planner(world) -> ModularPlanner:
    road_map, route, _ = world
    return ModularPlanner(road_map, route, VehicleModel.of(VehicleParams.load()), 0.05)


def _ego(world, k: int, speed_mps: float = 3.0) -> EgoState:
    _, route, xy = world
    first = route.waypoints[0]
    return EgoState(k * DT_NS, float(xy[0, 0]), float(xy[0, 1]), first.yaw_rad, speed_mps)


def _inputs(world, k: int, obstacles=(), detections=(), obstacles_stamp_k=None, ego=None) -> PlannerInputs:
    stamp = k * DT_NS
    scan_stamp = (k if obstacles_stamp_k is None else obstacles_stamp_k) * DT_NS
    return PlannerInputs(stamp, ego or _ego(world, k), CameraDetections(stamp, CAMERA, tuple(detections)), None,
                         ObstacleScan(scan_stamp, tuple(obstacles)))


def test_clear_road_drives_on(world):
    planner = _planner(world)
    out = planner.step(_inputs(world, 0))
    assert out.control.throttle > 0.0 and not out.override and not out.faults
    assert len(out.path_xy_m) > 10 and out.path_speed_mps.max() > 0.0


def test_stale_obstacles_bring_a_controlled_stop_with_the_reason(world):
    planner = _planner(world)
    planner.step(_inputs(world, 0))
    out = planner.step(_inputs(world, 10, obstacles_stamp_k=0))  # LiDAR 0.5 s old
    assert out.control.throttle == 0.0 and out.control.brake > 0.0
    assert any("obstacles stale" in f for f in out.faults), out.faults
    assert out.override


def test_missing_perception_stops(world):
    planner = _planner(world)
    out = planner.step(PlannerInputs(0, _ego(world, 0)))
    assert out.control.brake > 0.0 and any("missing" in f for f in out.faults)


@pytest.mark.parametrize("bad", [
    Obstacle(0, float("nan"), 0.0, 0.8, 0.0, 4.5, 1.9, 1.5, 40),
    Obstacle(0, 20.0, 0.0, 0.8, 0.0, -4.5, 1.9, 1.5, 40),
    ObjectDetection("front", "vehicle", 0.9, 100.0, 80.0, 90.0, 100.0),  # negative width
    ObjectDetection("front", "pedestrian", float("nan"), 100.0, 80.0, 110.0, 100.0),
])
def test_nan_or_negative_detections_are_reported_and_stop_the_car(world, bad):
    planner = _planner(world)
    inputs = _inputs(world, 0, obstacles=[bad] if isinstance(bad, Obstacle) else (),
                     detections=[bad] if isinstance(bad, ObjectDetection) else ())
    out = planner.step(inputs)
    assert out.faults and out.control.throttle == 0.0 and out.control.brake > 0.0


def test_nan_odometry_brakes_fully(world):
    planner = _planner(world)
    ego = dataclasses.replace(_ego(world, 0), x_m=float("nan"))
    out = planner.step(_inputs(world, 0, ego=ego))
    assert out.control.brake == 1.0 and out.faults


def test_contradicting_light_states_stop_the_car(world):
    planner = _planner(world)
    # Red and green, both confident, on the spot where the map puts the signal ahead.
    line = planner.ref.stop_lines[0]
    ego = _ego(world, 0)
    c, s = np.cos(ego.yaw_rad), np.sin(ego.yaw_rad)
    dx, dy = line.light_xy_m[0] - ego.x_m, line.light_xy_m[1] - ego.y_m
    body = np.array([[dx * c + dy * s, -dx * s + dy * c, 3.0]])
    (u, v), = body_to_image(body, CAMERA.intrinsics, CAMERA.mount)[0]
    boxes = [ObjectDetection("front", f"traffic_light_{colour}", 0.9, u - 2, v - 5, u + 2, v + 5)
             for colour in ("red", "green")]
    out = planner.step(_inputs(world, 0, detections=boxes))
    assert any("contradicting light states" in f for f in out.faults), out.faults
    assert out.control.throttle == 0.0
