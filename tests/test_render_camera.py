"""The camera renderer: label exactness (depth, semantic, instance), agreement with
the pinhole model, actor models filling their boxes, weather looks and determinism.

One renderer per scene is shared by the module (building the town's scene graph is
the slow part); a flat synthetic world checks geometry against closed-form answers.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivestack.schema import (
    SEMANTIC_CLASSES,
    SEMANTIC_ID,
    ActorKind,
    ActorState,
    EgoState,
    TrafficLight,
    TrafficLightState,
    instance_id_of_actor,
    instance_id_of_light,
)
from sim.render.actors import VEHICLE_SHAPES, ActorStyle, actor_mesh, actor_style, model_extent, model_mesh
from sim.render.mesh import Mesh
from sim.render.panda_renderer import CameraRenderer, encode_codes
from sim.render.postprocess import SensorModel
from sim.render.weather import WEATHER_NAMES, weather_preset
from sim.sensors.camera_model import CameraConfig

ARTIFACT = Path(__file__).resolve().parent.parent / "out" / "test_artifacts" / "camera_frame.png"
FRONT = CameraConfig(name="front", width_px=320, height_px=160, fov_deg=90.0, x_m=1.5, z_m=1.6)
# A second, oddly mounted camera: every transform of the mount is exercised.
TILTED = CameraConfig(name="tilted", width_px=256, height_px=144, fov_deg=70.0, x_m=0.4, y_m=0.3, z_m=1.4,
                      roll_rad=0.03, pitch_rad=0.06, yaw_rad=0.12)


# -- scenes -------------------------------------------------------------------------------


def _ground(half_size_m: float = 1500.0, tile_m: float = 50.0, semantic_id: int = SEMANTIC_ID["road"]) -> Mesh:
    xs = np.arange(-half_size_m, half_size_m + 1e-9, tile_m)
    x, y = np.meshgrid(xs, xs)
    vertices = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)])
    n = len(xs)
    a = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]).ravel()
    triangles = np.concatenate([np.column_stack([a, a + 1, a + n + 1]), np.column_stack([a, a + n + 1, a + n])])
    return Mesh(vertices, np.tile([0.0, 0.0, 1.0], (len(vertices), 1)), vertices[:, :2] / 8.0,
                np.tile([0.5, 0.5, 0.5, 1.0], (len(vertices), 1)), triangles, semantic_id)


@dataclass
class _FlatWorld:
    meshes: list
    light_heads: list


@pytest.fixture(scope="module")
def flat_renderer():
    renderer = CameraRenderer([FRONT, TILTED], seed=3)
    renderer.set_world(_FlatWorld([_ground()], []), {})
    yield renderer
    renderer.close()


@dataclass
class _TownScene:
    world: object
    ego: EgoState
    actors: list
    lights: list
    head: object  # a light head in view


def _lane_pose(lane, s_m: float) -> tuple[float, float, float]:
    i = int(np.clip(np.searchsorted(lane.s_m, s_m), 0, len(lane.s_m) - 1))
    return float(lane.points_xy[i, 0]), float(lane.points_xy[i, 1]), float(lane.yaw_rad[i])


@pytest.fixture(scope="module")
def town():
    from sim.builtin import load_town
    from sim.render.world import build_world
    road_map, _ = load_town("grid_town")
    world = build_world(road_map)
    group = road_map.signals[0]
    lane = road_map.lanes[group.stop_lines[0].segment_id]
    x, y, yaw = _lane_pose(lane, lane.length_m - 28.0)
    ego = EgoState(0, x, y, yaw, 5.0)
    ax, ay, ayaw = _lane_pose(lane, lane.length_m - 15.0)
    actors = [ActorState(1, ActorKind.VEHICLE, ax, ay, ayaw, 3.0, 4.3, 1.8, 1.5),
              ActorState(2, ActorKind.PEDESTRIAN, x + 14 * math.cos(yaw) + 6.2 * math.sin(yaw),
                         y + 14 * math.sin(yaw) - 6.2 * math.cos(yaw), yaw + 1.5, 1.0, 0.6, 0.6, 1.75)]
    lights = [TrafficLight(g.light_id, g.x_m, g.y_m, TrafficLightState.RED, g.junction_id) for g in road_map.signals]
    head = next(h for h in world.light_heads if h.light_id == group.light_id)
    return _TownScene(world, ego, actors, lights, head)


@pytest.fixture(scope="module")
def town_renderer(town):
    from sim.render.textures import make_textures
    renderer = CameraRenderer([FRONT], seed=5)
    renderer.set_world(town.world, make_textures(0, False))
    yield renderer
    renderer.close()


def _box_corners_in_ego(ego: EgoState, actor: ActorState) -> np.ndarray:
    corners = []
    for sx, sy, sz in itertools.product((1, -1), (1, -1), (0, 1)):
        bx, by = sx * actor.length_m / 2, sy * actor.width_m / 2
        c, s = math.cos(actor.yaw_rad), math.sin(actor.yaw_rad)
        corners.append((actor.x_m + c * bx - s * by, actor.y_m + s * bx + c * by, sz * actor.height_m))
    corners = np.array(corners)
    return _map_to_ego(ego, corners)


def _map_to_ego(ego: EgoState, points: np.ndarray) -> np.ndarray:
    c, s = math.cos(ego.yaw_rad), math.sin(ego.yaw_rad)
    dx, dy = points[:, 0] - ego.x_m, points[:, 1] - ego.y_m
    return np.column_stack([c * dx + s * dy, -s * dx + c * dy, points[:, 2] - ego.z_m])


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# -- label exactness ------------------------------------------------------------------------


def test_label_codes_survive_the_rasteriser_exactly():
    """Every byte value in every channel, and random 24-bit codes, come back from
    tinydisplay as written (it truncates its 16-bit colour to 8 bits)."""
    from panda3d.core import GeomNode, NodePath

    from sim.render.panda_renderer import _make_geom, _read_u32
    rng = np.random.default_rng(0)
    codes = np.concatenate([np.arange(256) * 65793, rng.integers(0, 1 << 24, 256)])  # 65793: byte in all channels
    side = 32  # quads per row; each quad 4 x 4 pixels, centred in the view
    camera = CameraConfig(name="codes", width_px=4 * side, height_px=4 * (len(codes) // side), fov_deg=90.0,
                          x_m=0.0, z_m=0.0, kinds=("semantic",))
    renderer = CameraRenderer([camera], seed=0)
    try:
        # A wall of quads 1 m ahead, one per code, laid out on the pixel grid.
        f, w, h = camera.focal_px, camera.width_px, camera.height_px
        corners = np.array([(0, 0), (4, 0), (4, 4), (0, 4)], float)
        vertices, colours, triangles = [], [], []
        for k, code in enumerate(codes):
            row, col = divmod(k, side)
            px = corners + (4 * col, 4 * row)
            # pixel (u, v) -> point on the plane x = 1 m in the ego frame (y left, z up)
            vertices.append(np.column_stack([np.ones(4), -(px[:, 0] - w / 2) / f, -(px[:, 1] - h / 2) / f]))
            colours.append(np.repeat(encode_codes(np.array([code])), 4, axis=0))
            triangles.append(np.array([[0, 2, 1], [0, 3, 2]]) + 4 * k)
        node = GeomNode("codes")
        node.add_geom(_make_geom(np.concatenate(vertices), np.concatenate(triangles), np.concatenate(colours)))
        NodePath(node).reparent_to(renderer._label_root)
        renderer.render(0, EgoState(0, 0.0, 0.0, 0.0, 0.0), [ActorState(0, ActorKind.VEHICLE, -50, 0, 0, 0, 4, 2, 1.5)])
        read = _read_u32(renderer._views[0].label_texture, h, w) & 0xFFFFFF
        assert np.array_equal(read[2::4, 2::4].ravel(), codes)
    finally:
        renderer.close()


def test_ground_depth_is_the_ray_plane_distance(flat_renderer):
    ego = EgoState(0, 0.0, 0.0, 0.4, 0.0)
    parked_far_away = ActorState(0, ActorKind.VEHICLE, 900.0, 900.0, 0.0, 0.0, 4.5, 1.9, 1.5)
    for camera, image in zip(flat_renderer.cameras, flat_renderer.render(0, ego, [parked_far_away])):
        h, w = camera.height_px, camera.width_px
        v, u = np.mgrid[0:h, 0:w] + 0.5
        optical = np.stack([(u - w / 2) / camera.focal_px, (v - h / 2) / camera.focal_px, np.ones_like(u)], -1)
        body = optical @ np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # optical -> body
        ray_z = body @ camera.mount_rotation()[2]
        with np.errstate(divide="ignore"):
            truth = np.where(ray_z < 0, -camera.z_m / ray_z, np.inf)
        truth = np.minimum(truth, 1000.0)
        ground = image.semantic == SEMANTIC_ID["road"]
        assert ground.sum() > 0.3 * h * w
        error = np.abs(image.depth_m - truth) / truth
        assert error[ground].max() < 0.02  # every ground pixel
        assert np.percentile(error[ground], 99) < 1e-4  # exact up to float32
        assert np.all(image.depth_m[image.semantic == SEMANTIC_ID["sky"]] == 1000.0)
        assert image.depth_m.dtype == np.float32 and image.depth_m.shape == (h, w)


@pytest.mark.parametrize("distance_m, lateral_m", [(12.0, 0.0), (16.0, -1.5)])
def test_car_box_projects_onto_its_instance_pixels(flat_renderer, distance_m, lateral_m):
    ego = EgoState(0, 10.0, -4.0, 0.3, 0.0)
    c, s = math.cos(ego.yaw_rad), math.sin(ego.yaw_rad)
    car = ActorState(7, ActorKind.VEHICLE, ego.x_m + c * distance_m - s * lateral_m,
                     ego.y_m + s * distance_m + c * lateral_m, ego.yaw_rad, 0.0, 4.3, 1.8, 1.5)
    # The ego is parked far away: the tilted camera sits inside the ego's box.
    parked = ActorState(0, ActorKind.VEHICLE, 900.0, 900.0, 0.0, 0.0, 4.5, 1.9, 1.5)
    images = flat_renderer.render(0, ego, [car, parked])
    for camera, image in zip(flat_renderer.cameras, images):
        rows, cols = np.nonzero(image.instance == instance_id_of_actor(car.actor_id))
        assert len(rows) > 50
        assert set(np.unique(image.semantic[rows, cols])) == {SEMANTIC_ID["car"]}
        pixels = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)  # pixel edges
        uv, depth = camera.project(_box_corners_in_ego(ego, car))
        assert (depth > 0).all()
        box = (uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max())
        assert _iou(box, pixels) > 0.9, (camera.name, box, pixels)
        # The silhouette's extreme vertices land on the extreme pixels: pixel (u, v)
        # covers [u, u + 1) x [v, v + 1) of CameraConfig.project's coordinates.
        model = np.concatenate([m.vertices for m in actor_mesh(car, flat_renderer.seed)]).astype(float)
        cy, sy = math.cos(car.yaw_rad), math.sin(car.yaw_rad)
        world = np.column_stack([car.x_m + cy * model[:, 0] - sy * model[:, 1],
                                 car.y_m + sy * model[:, 0] + cy * model[:, 1], model[:, 2]])
        uv_model, _ = camera.project(_map_to_ego(ego, world))
        expected = (np.floor(uv_model[:, 0].min()), np.floor(uv_model[:, 1].min()),
                    np.floor(uv_model[:, 0].max()) + 1, np.floor(uv_model[:, 1].max()) + 1)
        assert np.abs(np.subtract(pixels, expected)).max() <= 1, (camera.name, pixels, expected)
        # Depth on the car's rear face: the face's distance along the optical axis.
        rear = car.length_m / 2
        assert image.depth_m[rows, cols].min() == pytest.approx(
            camera.project(_map_to_ego(ego, np.array([[car.x_m - c * rear, car.y_m - s * rear, 0.8]])))[1][0],
            abs=0.35)


def test_ego_is_drawn_with_instance_one_and_gone_actors_disappear(flat_renderer):
    behind = CameraConfig(name="rear", width_px=160, height_px=90, fov_deg=60.0, x_m=-9.0, z_m=2.0, yaw_rad=0.0,
                          kinds=("instance",))
    renderer = CameraRenderer([behind], seed=0)
    try:
        renderer.set_world(_FlatWorld([_ground(200.0, 20.0)], []), {})
        ego = EgoState(0, 0.0, 0.0, 0.0, 0.0)
        image = renderer.render(0, ego, [])[0]
        assert image.rgb is None and image.depth_m is None and image.semantic is None
        assert np.count_nonzero(image.instance == 1) > 100  # the ego, from behind
        walker = ActorState(4, ActorKind.PEDESTRIAN, -4.0, 0.0, 0.0, 0.0, 0.6, 0.6, 1.8)
        assert np.count_nonzero(renderer.render(1, ego, [walker])[0].instance == 5) > 10
        assert np.count_nonzero(renderer.render(2, ego, [])[0].instance == 5) == 0
    finally:
        renderer.close()


# -- the town -----------------------------------------------------------------------------


def test_town_frame_has_known_classes_and_writes_the_artifact(town, town_renderer):
    town_renderer.set_weather(weather_preset("clear_noon"))
    image = town_renderer.render(0, town.ego, town.actors, town.lights)[0]
    assert image.rgb.shape == (160, 320, 3) and image.rgb.dtype == np.uint8
    assert image.instance.dtype == np.int32 and image.semantic.dtype == np.uint8
    known = {c.class_id for c in SEMANTIC_CLASSES}
    present = set(np.unique(image.semantic).tolist())
    assert present <= known
    assert {SEMANTIC_ID[n] for n in ("road", "sky", "car", "building", "sidewalk")} <= present
    assert instance_id_of_actor(1) in np.unique(image.instance)
    assert np.allclose(image.intrinsics, FRONT.intrinsics)
    _write_artifact(image)


def _write_artifact(image) -> None:
    depth = np.clip(np.log(np.maximum(image.depth_m, 1.0)) / np.log(1000.0) * 255, 0, 255).astype(np.uint8)
    depth_rgb = cv2.applyColorMap(depth, cv2.COLORMAP_TURBO)[..., ::-1]
    palette = np.zeros((256, 3), np.uint8)
    for c in SEMANTIC_CLASSES:
        palette[c.class_id] = c.colour_rgb
    strip = np.concatenate([image.rgb, depth_rgb, palette[image.semantic]], axis=1)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    big = cv2.resize(strip, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    assert cv2.imwrite(str(ARTIFACT), big[..., ::-1])


def _looking_at_head(town) -> EgoState:
    head = town.head
    facing = np.array([math.cos(head.yaw_rad), math.sin(head.yaw_rad)])
    x, y = np.array([head.x_m, head.y_m]) + 11.0 * facing - 1.5 * facing  # camera 11 m in front
    return EgoState(0, float(x), float(y), head.yaw_rad + math.pi, 0.0)


def test_traffic_light_lamps_follow_the_state_labels_do_not(town, town_renderer):
    town_renderer.set_weather(weather_preset("clear_noon"))
    ego = _looking_at_head(town)
    light_id = town.head.light_id
    images = {}
    for state in (TrafficLightState.RED, TrafficLightState.GREEN, TrafficLightState.OFF):
        lights = [replace(light, state=state) if light.light_id == light_id else light for light in town.lights]
        images[state] = town_renderer.render(0, ego, [], lights)[0]
    red, green, off = images[TrafficLightState.RED], images[TrafficLightState.GREEN], images[TrafficLightState.OFF]
    housing = red.instance == instance_id_of_light(light_id)
    assert housing.sum() > 20
    assert set(np.unique(red.semantic[housing])) == {SEMANTIC_ID["traffic_light"]}
    for other in (green, off):
        assert np.array_equal(other.semantic, red.semantic) and np.array_equal(other.instance, red.instance)
        assert np.array_equal(other.depth_m, red.depth_m)
    rgb = {k: v.rgb[housing].astype(float) for k, v in images.items()}
    # The lit lamp's colour dominates: redder when red, greener when green, dark when off.
    assert rgb[TrafficLightState.RED][:, 0].max() > rgb[TrafficLightState.GREEN][:, 0].max() + 60
    assert rgb[TrafficLightState.GREEN][:, 1].max() > rgb[TrafficLightState.RED][:, 1].max() + 60
    assert rgb[TrafficLightState.OFF].max() < rgb[TrafficLightState.RED].max() - 60


def test_labels_are_identical_across_weathers_while_rgb_differs(town, town_renderer):
    frames = {}
    for name in WEATHER_NAMES:
        town_renderer.set_weather(weather_preset(name))
        frames[name] = town_renderer.render(0, town.ego, town.actors, town.lights)[0]
    reference = frames["clear_noon"]
    for name, image in frames.items():
        assert np.array_equal(image.depth_m, reference.depth_m), name
        assert np.array_equal(image.semantic, reference.semantic), name
        assert np.array_equal(image.instance, reference.instance), name
    for a, b in itertools.combinations(WEATHER_NAMES, 2):
        difference = np.abs(frames[a].rgb.astype(int) - frames[b].rgb.astype(int)).mean()
        assert difference > 3.0, (a, b, difference)
    brightness = {name: image.rgb.mean() for name, image in frames.items()}
    assert brightness["night"] < 0.5 * brightness["clear_noon"]


def test_same_seed_gives_byte_identical_images(town):
    from sim.render.textures import make_textures
    renderers = [CameraRenderer([FRONT], seed=11) for _ in range(2)]
    try:
        runs = []
        for renderer in renderers:
            renderer.set_world(town.world, make_textures(0, False))
            renderer.set_weather(weather_preset("rain"))  # noise, rain streaks, wet road
            runs.append([renderer.render(k, town.ego, town.actors, town.lights)[0] for k in range(2)])
        for first, second in zip(*runs):
            assert first.rgb.tobytes() == second.rgb.tobytes()
            assert first.depth_m.tobytes() == second.depth_m.tobytes()
        assert runs[0][0].rgb.tobytes() != runs[0][1].rgb.tobytes()  # fresh noise each frame
        renderers[1].reset(seed=12)
        other = renderers[1].render(0, town.ego, town.actors, town.lights)[0]
        assert other.rgb.tobytes() != runs[0][0].rgb.tobytes()
    finally:
        for renderer in renderers:
            renderer.close()
    with pytest.raises(RuntimeError, match="after close"):
        renderers[0].render(0, town.ego, [], [])


def test_set_world_keeps_recent_scenes(town):
    from sim.render.textures import make_textures
    flat = _FlatWorld([_ground(100.0, 20.0)], [])
    renderer = CameraRenderer([replace(FRONT, kinds=("semantic",))], seed=0)
    try:
        textures = make_textures(0, False)
        renderer.set_world(town.world, textures)
        town_scene = renderer._static
        renderer.set_world(flat, textures)
        assert renderer._static is not town_scene
        sky_only = renderer.render(0, town.ego, [], town.lights)[0]
        assert set(np.unique(sky_only.semantic).tolist()) <= {SEMANTIC_ID["road"], SEMANTIC_ID["sky"],
                                                               SEMANTIC_ID["car"]}
        renderer.set_world(town.world, textures)  # back to the town: nothing rebuilt
        assert renderer._static is town_scene
        assert SEMANTIC_ID["building"] in renderer.render(0, town.ego, [], town.lights)[0].semantic
    finally:
        renderer.close()


# -- actor models, weather, sensor --------------------------------------------------------


@pytest.mark.parametrize("shape, dims", [
    *((shape, dims) for shape in VEHICLE_SHAPES for dims in ((4.3, 1.8, 1.5), (5.2, 2.1, 2.0))),
    ("pedestrian", (0.6, 0.6, 1.75)), ("pedestrian", (0.6, 0.6, 1.2)), ("static", (1.0, 2.5, 1.1)),
])
def test_every_model_fills_its_box_exactly(shape, dims):
    meshes = model_mesh(ActorStyle(shape, 2, 7), *dims)
    lo, hi = model_extent(meshes)
    length, width, height = dims
    assert lo == pytest.approx([-length / 2, -width / 2, 0.0], abs=1e-6)
    assert hi == pytest.approx([length / 2, width / 2, height], abs=1e-6)
    for mesh in meshes:
        assert mesh.semantic_id == SEMANTIC_ID[{"pedestrian": "pedestrian", "static": "static"}.get(shape, "car")]
        # Outward winding: each face normal agrees with the vertex normals given.
        v = mesh.vertices[mesh.triangles]
        face = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        assert (np.einsum("ij,ij->i", face, mesh.normals[mesh.triangles].sum(axis=1)) > 0).all()


def test_actor_looks_are_deterministic_and_varied():
    styles = {actor_style(ActorKind.VEHICLE, i, 4) for i in range(40)}
    assert actor_style(ActorKind.VEHICLE, 9, 4) == actor_style(ActorKind.VEHICLE, 9, 4)
    assert len({s.shape for s in styles}) == len(VEHICLE_SHAPES) and len({s.colour_index for s in styles}) > 5
    car = ActorState(3, ActorKind.VEHICLE, 0.0, 0.0, 0.0, 0.0, 4.3, 1.8, 1.5)
    assert actor_mesh(car, 1) is actor_mesh(replace(car, x_m=50.0), 1)  # cached per look and size


def test_weather_presets_match_the_scenarios_and_randomise_reproducibly():
    from sim.scenario import WEATHER_PRESETS
    assert WEATHER_NAMES == WEATHER_PRESETS
    base = weather_preset("overcast")
    a = weather_preset("overcast", np.random.default_rng(1), randomize=True)
    b = weather_preset("overcast", np.random.default_rng(1), randomize=True)
    assert a == b and a != base
    assert weather_preset("night").headlights_on and not weather_preset("clear_noon").headlights_on
    with pytest.raises(ValueError, match="unknown weather"):
        weather_preset("snow")


def test_sensor_noise_is_seeded():
    image = np.full((3, 20, 30), 0.4, np.float32)
    outputs = [SensorModel(30, 20, np.random.default_rng(5)).finish(image, 1.2) for _ in range(2)]
    assert outputs[0].shape == (20, 30, 3) and outputs[0].dtype == np.uint8
    assert np.array_equal(outputs[0], outputs[1])
    assert outputs[0].std() > 0.5  # noisy, and darker in the corners (vignetting)
    assert outputs[0][:2, :2].mean() < outputs[0][9:11, 14:16].mean()
