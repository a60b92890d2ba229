"""Ground-truth labels: 3D boxes in the ego frame, 2D boxes with truncation and
occlusion, lane boundaries from the map."""

import math
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from drivestack.schema import (
    ActorKind,
    ActorState,
    CameraImage,
    EgoState,
    ObjectClass,
    TrafficLight,
    TrafficLightState,
    instance_id_of_actor,
    instance_id_of_light,
)
from sim.builtin import load_town
from sim.sensors.camera_model import CameraConfig
from sim.sensors.ground_truth import box_corners, boxes_2d, boxes_3d, frame_ground_truth, lane_boundaries

CAMERA = CameraConfig(name="front", width_px=320, height_px=160, fov_deg=90.0, x_m=1.5, z_m=1.6)


@dataclass(frozen=True)
class Head:
    light_id: int
    x_m: float
    y_m: float
    z_m: float
    yaw_rad: float
    width_m: float = 0.4
    height_m: float = 1.0
    depth_m: float = 0.3


def car(actor_id: int, x_m: float, y_m: float, yaw_rad: float = 0.0) -> ActorState:
    return ActorState(actor_id, ActorKind.VEHICLE, x_m, y_m, yaw_rad, 5.0, 4.5, 1.9, 1.5)


def ego_at(x_m=0.0, y_m=0.0, yaw_rad=0.0) -> EgoState:
    return EgoState(0, x_m, y_m, yaw_rad, 0.0)


def test_car_straight_ahead_projects_to_a_centred_untruncated_box():
    (box,) = boxes_2d(CAMERA, boxes_3d(ego_at(), [car(3, 15.0, 0.0)]))
    assert box.instance_id == instance_id_of_actor(3) and box.object_class is ObjectClass.VEHICLE
    assert (box.u_min_px + box.u_max_px) / 2 == pytest.approx(160.0)
    assert box.truncation == 0.0
    # No instance pass: visibility is geometric only.
    assert box.visible_pixels == -1 and box.visible_fraction == 1.0
    # Centre 13.5 m ahead of the camera, 0.85 m below it.
    assert box.distance_m == pytest.approx(math.hypot(13.5, 0.85))
    # The nearest face (13.5 - 2.25 m away, 1.9 m wide) fixes the width in pixels.
    assert box.u_max_px - box.u_min_px == pytest.approx(160.0 * 1.9 / 11.25)


def test_car_beside_the_camera_is_truncated_and_one_behind_is_dropped():
    beside, behind, away = car(1, 1.5, -2.6), car(2, -12.0, 0.0), car(3, 15.0, 40.0)
    boxes = boxes_2d(CAMERA, boxes_3d(ego_at(), [beside, behind, away]))
    assert [b.instance_id for b in boxes] == [instance_id_of_actor(1)]
    (box,) = boxes
    # Half of it is in front of the camera, all of that to the right: cut at the border.
    assert box.u_max_px == 320.0 and box.u_min_px > 160.0 and box.v_max_px == 160.0
    assert 0.5 < box.truncation < 1.0
    assert box.visible_fraction == pytest.approx(1.0 - box.truncation)


def test_half_occluded_car_has_visible_fraction_one_half():
    target, blocker = 7, 9
    box3 = boxes_3d(ego_at(), [car(target, 20.0, 0.0)])
    uv, _ = CAMERA.project(box_corners(box3)[0])
    instance = np.zeros((160, 320), dtype=np.int32)
    hull = cv2.convexHull(uv.astype(np.float32)).reshape(-1, 2)
    cv2.fillConvexPoly(instance, np.round((hull - 0.5) * 4).astype(np.int32), instance_id_of_actor(target), shift=2)
    # Something nearer hides the left half.
    instance[:, :160][instance[:, :160] == instance_id_of_actor(target)] = instance_id_of_actor(blocker)
    (box,) = boxes_2d(CAMERA, box3, instance)
    assert box.visible_fraction == pytest.approx(0.5, abs=0.05)
    assert box.visible_pixels == np.count_nonzero(instance == instance_id_of_actor(target))
    # Fully hidden: kept (it is in the image), with nothing visible.
    instance[instance == instance_id_of_actor(target)] = instance_id_of_actor(blocker)
    (box,) = boxes_2d(CAMERA, box3, instance)
    assert box.visible_fraction == 0.0 and box.visible_pixels == 0


def cuboid_triangles(length_m: float, width_m: float, height_m: float) -> np.ndarray:
    """A closed box mesh (12 triangles) in the body frame, origin at its bottom centre."""
    corners = np.array([(sx * length_m / 2, sy * width_m / 2, z) for sx in (-1, 1) for sy in (-1, 1)
                        for z in (0.0, height_m)])
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return np.array([corners[[a, b, c]] for a, b, c, d in faces] + [corners[[a, c, d]] for a, b, c, d in faces])


def test_model_triangles_give_the_expected_silhouette():
    box3 = boxes_3d(ego_at(), [car(4, 20.0, 0.0)])
    # The renderer draws a model as long and tall as the box but half as wide.
    model = cuboid_triangles(4.5, 0.95, 1.5)
    model_uv, _ = CAMERA.project(box_corners(boxes_3d(ego_at(), [
        ActorState(4, ActorKind.VEHICLE, 20.0, 0.0, 0.0, 0.0, 4.5, 0.95, 1.5)]))[0])
    instance = np.zeros((160, 320), dtype=np.int32)
    hull = cv2.convexHull(model_uv.astype(np.float32)).reshape(-1, 2)
    cv2.fillConvexPoly(instance, np.round((hull - 0.5) * 4).astype(np.int32), instance_id_of_actor(4), shift=2)
    (with_box,) = boxes_2d(CAMERA, box3, instance)
    (with_model,) = boxes_2d(CAMERA, box3, instance, silhouettes={instance_id_of_actor(4): model})
    (with_callable,) = boxes_2d(CAMERA, box3, instance, silhouettes=lambda box: model)
    assert with_box.visible_fraction < 0.7  # the box is fuller than the car
    # Front and back faces overlap in the image: the silhouette is their union.
    assert with_model.visible_fraction == pytest.approx(1.0, abs=0.02)
    assert with_callable.visible_fraction == with_model.visible_fraction


def test_model_straddling_the_near_plane_is_clipped():
    # Half of a car alongside the camera is behind it: its triangles must be cut at the
    # near plane, and a model equal to its box must give the box's own silhouette.
    beside = boxes_3d(ego_at(), [car(1, 1.5, -2.6)])
    instance = np.zeros((160, 320), np.int32)
    instance[130:160, 300:320] = instance_id_of_actor(1)
    (with_box,) = boxes_2d(CAMERA, beside, instance)
    (with_model,) = boxes_2d(CAMERA, beside, instance, silhouettes=lambda box: cuboid_triangles(4.5, 1.9, 1.5))
    assert with_box.visible_pixels == with_model.visible_pixels == 600
    assert 0.0 < with_model.visible_fraction < 0.5
    assert with_model.visible_fraction == pytest.approx(with_box.visible_fraction, rel=0.02)


def test_3d_boxes_follow_the_ego_heading():
    # The ego faces north (+y): north is ahead, west is to its left.
    ego = ego_at(10.0, 5.0, math.pi / 2)
    ahead = car(1, 10.0, 25.0, yaw_rad=math.pi / 2)
    left = car(2, 0.0, 5.0, yaw_rad=math.pi)
    far = car(3, 10.0, 200.0)
    walker = ActorState(4, ActorKind.PEDESTRIAN, 13.0, 5.0, 0.0, 1.0, 0.5, 0.5, 1.8)
    lights = (TrafficLight(6, 0.0, 0.0, TrafficLightState.RED, 0),)
    heads = (Head(6, 10.0, 35.0, 4.5, -math.pi / 2),)
    boxes = {b.instance_id: b for b in boxes_3d(ego, [ahead, left, far, walker], lights, heads)}
    assert set(boxes) == {instance_id_of_actor(1), instance_id_of_actor(2), instance_id_of_actor(4),
                          instance_id_of_light(6)}
    a, b = boxes[instance_id_of_actor(1)], boxes[instance_id_of_actor(2)]
    assert (a.x_m, a.y_m, a.yaw_rad) == pytest.approx((20.0, 0.0, 0.0), abs=1e-9)
    assert (b.x_m, b.y_m, b.yaw_rad) == pytest.approx((0.0, 10.0, math.pi / 2), abs=1e-9)
    assert a.z_m == pytest.approx(0.75) and a.speed_mps == 5.0
    w = boxes[instance_id_of_actor(4)]
    assert (w.x_m, w.y_m, w.object_class) == (pytest.approx(0.0, abs=1e-9), pytest.approx(-3.0), ObjectClass.PEDESTRIAN)
    light = boxes[instance_id_of_light(6)]
    assert light.object_class is ObjectClass.TRAFFIC_LIGHT and light.light_state is TrafficLightState.RED
    # It faces the ego: back towards it.
    assert (light.x_m, light.y_m, light.z_m) == pytest.approx((30.0, 0.0, 4.5), abs=1e-9)
    assert abs(light.yaw_rad) == pytest.approx(math.pi)
    assert (light.length_m, light.width_m) == (0.3, 0.4)


def test_traffic_light_box_carries_its_state_into_the_image():
    heads = (Head(2, 30.0, 0.0, 4.0, math.pi),)
    lights = (TrafficLight(2, 30.0, 0.0, TrafficLightState.GREEN, 0),)
    (box,) = boxes_2d(CAMERA, boxes_3d(ego_at(), [], lights, heads))
    assert box.light_state is TrafficLightState.GREEN and box.v_max_px < 80.0  # above the horizon


@pytest.fixture(scope="module")
def grid_town():
    return load_town("grid_town")[0]


def test_lane_boundaries_of_a_straight_road(grid_town):
    # Lane 20 runs north along x = 1.75 from y = 12 to y = 88.
    lane = grid_town.lanes[20]
    assert lane.points_xy[0] == pytest.approx((1.75, 12.0)) and lane.points_xy[-1] == pytest.approx((1.75, 88.0))
    ego = ego_at(1.75, 40.0, math.pi / 2)
    by_position = {b.position: b for b in lane_boundaries(grid_town, ego, 20, [CAMERA])}
    assert {-1, +1} <= set(by_position)
    left, right = by_position[-1], by_position[+1]
    for boundary, side in ((left, +1), (right, -1)):
        straight = boundary.points_m[boundary.points_m[:, 0] < 45.0]
        assert straight[:, 0].min() == pytest.approx(-10.0)
        assert straight[:, 1] == pytest.approx(np.full(len(straight), side * lane.width_m / 2))
        assert boundary.marking == (lane.left_marking if side > 0 else lane.right_marking)
        assert np.abs(boundary.points_m[:, 2]).max() == 0.0
        px = boundary.image_px["front"]
        assert len(px) > 10 and (px[:, 1] > 80.0).all() and (px[:, 1] < 160.0).all()
    # Left boundary on the left of the image, right one on the right, near the bottom.
    assert left.image_px["front"][:, 0].min() < 160.0 < right.image_px["front"][:, 0].max()
    # It runs on past the lane's end into the junction.
    assert left.points_m[:, 0].max() > 55.0


def test_markings_and_neighbour_edges_propagate():
    multilane = load_town("multilane_town")[0]
    lane = multilane.lanes[29]  # inner lane of a two-lane carriageway, eastbound along y = -1.75
    assert lane.right_neighbor == 28
    ego = ego_at(100.0, -1.75, 0.0)
    by_position = {b.position: b for b in lane_boundaries(multilane, ego, 29)}
    assert set(by_position) == {-2, -1, +1, +2}
    assert by_position[-1].marking == lane.left_marking
    assert by_position[+1].marking == lane.right_marking
    assert by_position[+2].marking == multilane.lanes[28].right_marking
    assert by_position[+2].points_m[:, 1] == pytest.approx(np.full(len(by_position[+2].points_m), -5.25))
    # Across the centre line: the oncoming lane's far edge.
    assert by_position[-2].points_m[:, 1] == pytest.approx(np.full(len(by_position[-2].points_m), 5.25))
    assert by_position[-1].image_px == {}


def test_route_lane_sequence_picks_the_branch(grid_town):
    ego = ego_at(1.75, 80.0, math.pi / 2)
    choices = grid_town.lanes[20].successors
    ends = []
    for successor in choices:
        (left,) = [b for b in lane_boundaries(grid_town, ego, 20, lane_sequence=[20, successor]) if b.position == -1]
        ends.append(left.points_m[-1, 1])
    assert len(set(np.round(ends, 1))) == len(choices)


def test_ego_off_the_map_has_no_lanes(grid_town):
    assert lane_boundaries(grid_town, ego_at(500.0, 500.0), -1, [CAMERA]) == ()


def test_frame_ground_truth_uses_each_cameras_instance_image(grid_town):
    ego = ego_at(1.75, 40.0, math.pi / 2)
    actors = [car(1, 1.75, 60.0, math.pi / 2)]
    rear = CameraConfig(name="rear", x_m=-2.0, yaw_rad=math.pi)
    instance = np.zeros((160, 320), dtype=np.int32)
    images = (CameraImage("front", 0, CAMERA.intrinsics, instance=instance),)
    truth = frame_ground_truth(ego=ego, actors=actors, lights=(), ego_lane_segment_id=20, road_map=grid_town,
                               cameras=[CAMERA, rear], images=images)
    assert len(truth.boxes_3d) == 1
    (box,) = truth.boxes_2d  # the rear camera cannot see it
    assert box.camera == "front" and box.visible_pixels == 0 and box.visible_fraction == 0.0
    assert {b.position for b in truth.lanes} >= {-1, +1}
    assert set(truth.lanes[0].image_px) == {"front", "rear"}


def test_labels_of_a_driven_episode_are_consistent():
    from sim.builtin import BuiltinSimulator
    from sim.expert import ExpertDriver
    from sim.scenario import Scenario

    sim = BuiltinSimulator()
    obs = sim.reset(Scenario(name="t", town="grid_town", route_length_m=200.0, npc_vehicles=12, pedestrians=10,
                             seed=2))
    expert = ExpertDriver(sim.road_map, sim.route, sim.vehicle, sim.dt_s)
    route_lanes = [w.lane_segment_id for w in sim.route.waypoints]
    seen_2d = 0
    for step in range(240):
        obs = sim.step(expert.run_step(obs))
        if step % 20:
            continue
        truth = frame_ground_truth(ego=obs.ego, actors=obs.actors, lights=obs.traffic_lights,
                                   ego_lane_segment_id=obs.ego_lane_segment_id, road_map=sim.road_map,
                                   cameras=[CAMERA], lane_sequence=route_lanes)
        assert all(math.hypot(b.x_m, b.y_m) <= 80.0 for b in truth.boxes_3d)
        for box in truth.boxes_2d:
            assert 0.0 <= box.u_min_px < box.u_max_px <= 320.0 and 0.0 <= box.v_min_px < box.v_max_px <= 160.0
            assert 0.0 <= box.truncation < 1.0 and box.visible_fraction == pytest.approx(1.0 - box.truncation)
        seen_2d += len(truth.boxes_2d)
        if obs.ego_lane_segment_id >= 0:
            # The ego drives between its lane's edges.
            by_position = {b.position: b.points_m for b in truth.lanes}
            at_ego = {p: pts[np.argmin(np.abs(pts[:, 0])), 1] for p, pts in by_position.items()}
            assert at_ego[+1] < 0.0 < at_ego[-1]
    assert seen_2d > 0
