"""The static town for the cameras and the LiDAR: what it contains, where it puts it
(pedestrians on sidewalks, buildings off the streets, paint on the lane edges, no
holes in junctions), determinism, and the procedural textures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from drivestack.schema import SEMANTIC_ID
from sim.builtin import load_town
from sim.pedestrians import Mode, PedestrianManager
from sim.render import textures
from sim.render.world import KERB_HEIGHT_M, MARKING_Z_M, SIDEWALK_WIDTH_M, World, _build, build_world
from sim.sensors.lidar import POINT_FIELDS, LidarConfig, RayCastLidar
from sim.traffic_lights import TrafficLightController

ROAD, ROAD_LINE, SIDEWALK = SEMANTIC_ID["road"], SEMANTIC_ID["road_line"], SEMANTIC_ID["sidewalk"]
TERRAIN, BUILDING = SEMANTIC_ID["terrain"], SEMANTIC_ID["building"]
STATIC_CLASSES = ("road", "road_line", "sidewalk", "building", "fence", "pole", "traffic_light", "traffic_sign",
                  "vegetation", "terrain", "static")


@pytest.fixture(scope="module")
def grid():
    road_map, lanes = load_town("grid_town")
    return road_map, lanes, build_world(road_map)


@pytest.fixture(scope="module")
def multilane():
    road_map, _ = load_town("multilane_town")
    return road_map, build_world(road_map)


def _meshes(world: World, name: str):
    return [m for m in world.meshes if m.semantic_id == SEMANTIC_ID[name]]


def _inside_any(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Which (N, 2) points lie in at least one of the (M, 3, 2) triangles."""
    inside = np.zeros(len(points), bool)
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-12
    a, b, c, det = a[ok], b[ok], c[ok], det[ok]
    for start in range(0, len(points), 256):
        p = points[start:start + 256, None, :]
        u = ((b[:, 1] - c[:, 1]) * (p[..., 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (p[..., 1] - c[:, 1])) / det
        v = ((c[:, 1] - a[:, 1]) * (p[..., 0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (p[..., 1] - c[:, 1])) / det
        inside[start:start + 256] = ((u >= -1e-6) & (v >= -1e-6) & (u + v <= 1 + 1e-6)).any(axis=1)
    return inside


def _flat_triangles(world: World, name: str, z_m: float) -> np.ndarray:
    """(M, 3, 2) footprints of the class's horizontal triangles at height ``z_m``."""
    parts = []
    for mesh in _meshes(world, name):
        tri = mesh.vertices[mesh.triangles].astype(float)
        flat = np.all(np.abs(tri[:, :, 2] - z_m) < 1e-3, axis=1)
        parts.append(tri[flat][:, :, :2])
    return np.concatenate(parts)


def test_every_static_class_has_triangles(grid):
    _, _, world = grid
    counts = world.triangle_counts()
    for name in STATIC_CLASSES:
        assert counts.get(name, 0) > 0, name
    assert sum(counts.values()) < 300_000
    for mesh in world.meshes:
        if mesh.texture is not None:
            assert mesh.texture in world.textures
        assert np.allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-3)


def test_road_is_tessellated_into_small_pieces(grid, multilane):
    for world in (grid[2], multilane[1]):
        for name in ("road", "road_line", "sidewalk"):
            for mesh in _meshes(world, name):
                tri = mesh.vertices[mesh.triangles].astype(float)
                edges = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2)
                assert edges.max() < 5.5, (name, edges.max())


def test_junctions_have_no_holes(grid):
    road_map, _, world = grid
    road = _flat_triangles(world, "road", 0.0)
    for junction in road_map.junctions.values():
        cx, cy = junction.center_xy
        xs, ys = np.meshgrid(np.arange(cx - 25, cx + 25, 0.5), np.arange(cy - 25, cy + 25, 0.5))
        points = np.column_stack([xs.ravel(), ys.ravel()])
        points = points[np.isin(world.ground_tag(points[:, 0], points[:, 1]), (ROAD, ROAD_LINE))]
        near = np.all(np.abs(road.mean(axis=1) - [cx, cy]) < 30, axis=1)
        assert _inside_any(points, road[near]).all()


def test_ground_tag_is_road_at_lane_centres(grid):
    road_map, _, world = grid
    centres = np.concatenate([lane.points_xy for lane in road_map.lanes])
    tags = world.ground_tag(centres[:, 0], centres[:, 1])
    assert np.isin(tags, (ROAD, ROAD_LINE)).all()
    assert (tags == ROAD).mean() > 0.95
    road = _flat_triangles(world, "road", 0.0)
    assert _inside_any(centres[::7], road).all()
    assert world.ground_tag(np.array([1e4]), np.array([-1e4]))[0] == TERRAIN


def test_pedestrians_stay_on_sidewalks_and_cross_on_the_road(grid):
    road_map, lanes, world = grid
    rng = np.random.default_rng(4)
    pedestrians = PedestrianManager(road_map, lanes, rng)
    lights = TrafficLightController(road_map, rng)
    pedestrians.spawn(80)
    sidewalk_top = _flat_triangles(world, "sidewalk", KERB_HEIGHT_M)
    crossings, dt = 0, 0.2
    for step in range(900):
        lights.update(step * dt)
        pedestrians.step(dt, lights, np.zeros((0, 2)))
        tags = world.ground_tag(pedestrians.xy[:, 0], pedestrians.xy[:, 1])
        crossing = np.array([w.mode == Mode.CROSS for w in pedestrians.walkers])
        assert (tags[~crossing] == SIDEWALK).all()
        assert np.isin(tags[crossing], (SIDEWALK, ROAD, ROAD_LINE)).all()
        crossings += int(crossing.sum())
        if step % 150 == 0:  # the raised sidewalk mesh itself is under them
            assert _inside_any(pedestrians.xy[~crossing], sidewalk_top).all()
    assert crossings > 0


def test_crosswalk_stripes_lie_under_the_crossings(grid):
    road_map, lanes, world = grid
    crosswalks = PedestrianManager(road_map, lanes, np.random.default_rng(0)).crosswalks
    assert crosswalks
    for cw in crosswalks:
        t = np.linspace(0.3, 0.7, 41)[:, None]
        points = np.array(cw.p0) * (1 - t) + np.array(cw.p1) * t
        tags = world.ground_tag(points[:, 0], points[:, 1])
        assert 0.3 < (tags == ROAD_LINE).mean() < 0.8  # stripes and gaps
        ends = world.ground_tag(np.array([cw.p0[0], cw.p1[0]]), np.array([cw.p0[1], cw.p1[1]]))
        assert (ends == SIDEWALK).all()


def _boundary_points(lane, side: float, s_from: float, s_to: float, inset_m: float) -> np.ndarray:
    """Points ``inset_m`` inside a lane boundary, every 0.25 m."""
    s = np.arange(s_from, s_to, 0.25)
    x = np.interp(s, lane.s_m, lane.points_xy[:, 0])
    y = np.interp(s, lane.s_m, lane.points_xy[:, 1])
    yaw = np.interp(s, lane.s_m, np.unwrap(lane.yaw_rad))
    offset = side * (lane.width_m / 2 - inset_m)
    return np.column_stack([x - offset * np.sin(yaw), y + offset * np.cos(yaw)])


def _labelled_paint(world, points: np.ndarray) -> np.ndarray:
    """Paint in the ground labels at the points, to within one 0.2 m label cell."""
    steps = (-0.2, 0.0, 0.2)
    return np.any([world.ground_tag(points[:, 0] + dx, points[:, 1] + dy) == ROAD_LINE
                   for dx in steps for dy in steps], axis=0)


@pytest.mark.parametrize("town", ["grid", "multilane"])
def test_lane_markings_follow_the_marking_types(town, grid, multilane):
    road_map, world = (grid[0], grid[2]) if town == "grid" else multilane
    paint = _flat_triangles(world, "road_line", MARKING_Z_M)
    seen = set()
    for lane in road_map.lanes:
        if lane.in_junction or lane.length_m < 40:
            continue
        mid = lane.length_m / 2
        for side, marking in ((1.0, lane.left_marking), (-1.0, lane.right_marking)):
            # Paint within 0.15 m inside the boundary (a line straddles it, or lies
            # just inside it at a kerb).
            painted = np.any([_inside_any(_boundary_points(lane, side, mid - 9.0, mid + 9.0, inset), paint)
                              for inset in (0.0, 0.05, 0.1, 0.15)], axis=0)
            points = _boundary_points(lane, side, mid - 9.0, mid + 9.0, 0.07)
            seen.add(marking)
            if marking == "Solid":
                assert painted.all(), (lane.segment_id, side)
            elif marking == "Broken":
                # 3 m of paint every 9 m: a third of the boundary, in two dashes here.
                assert 0.3 < painted.mean() < 0.4, (lane.segment_id, side, painted.mean())
            assert (_labelled_paint(world, points) >= painted).all()  # the LiDAR's labels agree
        # Between the lines the lane is bare asphalt.
        centre = _boundary_points(lane, 0.0, mid - 9.0, mid + 9.0, 0.0)
        assert not _inside_any(centre, paint).any()
        assert (world.ground_tag(centre[:, 0], centre[:, 1]) == ROAD).all()
    assert {"Solid"} <= seen if town == "grid" else {"Solid", "Broken"} <= seen


def test_stop_lines_are_painted(grid):
    road_map, _, world = grid
    for group in road_map.signals:
        for stop in group.stop_lines:
            mid = (np.array(stop.p0) + np.array(stop.p1)) / 2
            assert world.ground_tag(mid[:1], mid[1:])[0] == ROAD_LINE


def test_buildings_stay_off_roads_and_sidewalks(grid, multilane):
    for road_map, world in ((grid[0], grid[2]), multilane):
        centres = np.concatenate([np.column_stack([np.interp(s, lane.s_m, lane.points_xy[:, 0]),
                                                   np.interp(s, lane.s_m, lane.points_xy[:, 1])])
                                  for lane in road_map.lanes for s in [np.arange(0, lane.length_m, 0.25)]])
        tree = cKDTree(centres)
        boxes = world.static_boxes
        is_building = (boxes.semantic_tag == BUILDING) & (boxes.base_z_m == 0)
        assert is_building.sum() > 50
        f = np.linspace(-0.5, 0.5, 7)
        fl, fw = np.meshgrid(f, f)
        for i in np.flatnonzero(is_building):
            c, s = math.cos(boxes.yaw_rad[i]), math.sin(boxes.yaw_rad[i])
            along, across = fl.ravel() * boxes.length_m[i], fw.ravel() * boxes.width_m[i]
            x = boxes.centre_x_m[i] + c * along - s * across
            y = boxes.centre_y_m[i] + s * along + c * across
            distance, _ = tree.query(np.column_stack([x, y]))
            assert distance.min() > 3.5 / 2 + SIDEWALK_WIDTH_M
            assert (world.ground_tag(x, y) == TERRAIN).all()


def test_one_light_head_per_signal_on_its_pole(grid):
    road_map, _, world = grid
    heads = {h.light_id: h for h in world.light_heads}
    assert sorted(heads) == sorted(g.light_id for g in road_map.signals)
    housings = np.concatenate([m.vertices for m in _meshes(world, "traffic_light")])
    boxes = world.static_boxes
    for group in road_map.signals:
        head = heads[group.light_id]
        assert math.hypot(head.x_m - group.x_m, head.y_m - group.y_m) < 0.5
        assert math.cos(head.yaw_rad - group.yaw_rad) > 0.999
        assert 2.5 < head.z_m < 3.5 and head.height_m > head.width_m > 0 and head.depth_m > 0
        near = np.linalg.norm(housings[:, :2] - [head.x_m, head.y_m], axis=1) < 0.4
        assert near.any()
        z = housings[near, 2]
        assert math.isclose(z.min(), head.z_m - head.height_m / 2, abs_tol=1e-3)
        assert math.isclose(z.max(), head.z_m + head.height_m / 2, abs_tol=1e-3)
    assert (boxes.semantic_tag == SEMANTIC_ID["traffic_light"]).sum() == len(road_map.signals)


def test_lidar_sees_the_town(grid):
    road_map, _, world = grid
    lane = next(lane for lane in road_map.lanes if not lane.in_junction)
    x, y, yaw = lane.pose_at(lane.length_m / 2)
    lidar = RayCastLidar(LidarConfig(range_m=60.0), np.random.default_rng(0))
    points = np.concatenate([lidar.scan((x, y, 2.4, yaw), 0.05, world.static_boxes, exclude_actor_id=0,
                                        ground_tag=world.ground_tag) for _ in range(1)])
    tags = set(points[:, POINT_FIELDS.index("semantic_tag")].astype(int).tolist())
    assert {ROAD, SIDEWALK, BUILDING} <= tags


def test_same_seed_same_world_and_cached(grid):
    road_map, _, world = grid
    again = _build(road_map, 0, False)
    assert len(again.meshes) == len(world.meshes)
    for a, b in zip(world.meshes, again.meshes):
        assert a.key == b.key
        for name in ("vertices", "normals", "uv", "colour", "triangles"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
    assert np.array_equal(world.ground_tag.labels, again.ground_tag.labels)
    assert np.array_equal(world.static_boxes.height_m, again.static_boxes.height_m)
    assert world.light_heads == again.light_heads
    assert build_world(road_map) is world
    assert not world.meshes[0].vertices.flags.writeable


def test_randomize_changes_the_look_not_the_streets(grid):
    road_map, _, world = grid
    varied = build_world(road_map, seed=3, randomize=True)
    assert varied is not world
    heights = np.sort(world.static_boxes.height_m[world.static_boxes.semantic_tag == BUILDING])
    varied_heights = np.sort(varied.static_boxes.height_m[varied.static_boxes.semantic_tag == BUILDING])
    assert len(heights) != len(varied_heights) or not np.allclose(heights, varied_heights)
    # The street layout (road, sidewalk and paint labels) is the map's, whatever the seed.
    paved = np.isin(world.ground_tag.labels, (ROAD, SIDEWALK))
    varied_paved = np.isin(varied.ground_tag.labels, (ROAD, SIDEWALK))
    assert (paved == varied_paved).mean() > 0.999
    assert not np.array_equal(world.textures[textures.ASPHALT], varied.textures[textures.ASPHALT])


def test_textures_are_tileable_power_of_two_rgb():
    first = textures.make_textures(0)
    assert set(first) == set(textures.TEXTURE_NAMES)
    for name, image in first.items():
        size = image.shape[0]
        assert image.dtype == np.uint8 and image.shape == (size, size, 3), name
        assert size & (size - 1) == 0 and size >= 64, name
        assert image.std() > 3.0, name  # grain, not a flat colour
    for name in (textures.ASPHALT, textures.GRASS, textures.SIDEWALK, textures.FACADE_BRICK):
        image = first[name].astype(float)
        # Across the wrap-around seams the texture changes no more than inside it: as
        # much as between typical neighbours for noise, as at a joint for slabs and bricks.
        structured = name in (textures.SIDEWALK, textures.FACADE_BRICK)
        for axis in (0, 1):
            steps = np.abs(np.diff(image, axis=axis)).mean(axis=(1 - axis, 2))
            seam = np.abs(np.take(image, 0, axis=axis) - np.take(image, -1, axis=axis)).mean()
            assert seam <= (1.05 * steps.max() if structured else 1.3 * steps.mean()), (name, axis)
    assert all(np.array_equal(first[k], textures.make_textures(0)[k]) for k in first)
    other = textures.make_textures(1)
    assert not np.array_equal(first[textures.ASPHALT], other[textures.ASPHALT])
    varied = textures.make_textures(1, randomize=True)
    assert not np.array_equal(other[textures.FACADE_PLASTER], varied[textures.FACADE_PLASTER])
    for layout in textures.FACADE_LAYOUTS.values():
        assert layout.bays >= 1 and layout.floors >= 1
