"""Camera images (RGB, depth, semantic, instance) of the built-in simulator, rendered
offscreen on the CPU with Panda3D's software rasteriser (p3tinydisplay).

The only module that imports Panda3D. One scene graph has two halves, each seen only
by its own cameras (camera masks); actors hang off pose nodes shared by both:

- RGB: textured, lit by a sun and an ambient light, a sky dome, vehicle and
  traffic-light lamps. Fog, the wet-road sheen, the ego's headlight beam and the
  sensor model run afterwards in numpy (:mod:`sim.render.postprocess`), because
  tinydisplay has no fog and only per-vertex lighting.
- labels: the same triangles, unlit and untextured, each vertex coloured with a
  24-bit *label code*. A code names one plane of one object (a wall of a building,
  a car's bonnet, the whole flat road), and a table maps it to a semantic class, an
  instance id and the plane's equation. One flat-colour pass thus gives all three
  label images: semantic and instance by table lookup, and depth as the exact
  intersection of each pixel's ray with its plane.

Why depth is not read from an interpolated value (a texgen ramp or colour ramp):
tinydisplay snaps vertices to whole pixels, so anything it interpolates is off by up
to half a pixel, which at 320x160 is 2-4 % of depth on the road 10-20 m ahead. The
plane lookup is exact at every pixel centre; at silhouettes, where the rasteriser
hands a pixel to a surface its centre ray just misses, the depth is clamped to that
surface's extent (an oriented box per code).

The lens is set so tinydisplay's pixel grid matches :class:`CameraConfig`: pixel
(u, v) covers [u, u + 1) x [v, v + 1) in ``CameraConfig.project`` coordinates (the
rasteriser's viewport maps NDC onto W - 0.5 pixels and truncates vertices, which the
film size and offset compensate).

tinydisplay's cost is mostly per vertex (~50 ns) and per draw call (~3 us), so the
town is cut into square cells (frustum culling) and each cell has a far version
(thin triangles dropped, grass and walls merged into rectangles, tree crowns as
small hulls) that LOD nodes switch to beyond ``LOD_SWITCH_M``, and a distant version
(crowns as smaller hulls, objects under ``DISTANT_MIN_SIZE_M`` dropped) beyond
``DISTANT_SWITCH_M``. Actors beyond ``ACTOR_LOD_SWITCH_M`` are drawn as their far model
(:func:`sim.render.actors.actor_far_mesh`). Labels follow the same switches, so they
always describe the rendered image; ground truth's visible fraction still compares with
the full model's silhouette, from which a far model's differs by about a pixel.

Lifecycle: ``CameraRenderer(cameras)``, ``set_world``, ``set_weather``, ``reset`` per
episode, ``render`` per step, ``close``. No ShowBase and no global state besides
Panda3D's configuration variables and one cull bin, set once per process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from panda3d.core import (
    AmbientLight,
    BitMask32,
    ColorBlendAttrib,
    CullBinEnums,
    CullBinManager,
    CullFaceAttrib,
    DirectionalLight,
    FrameBufferProperties,
    Geom,
    GeomEnums,
    GeomNode,
    GeomTriangles,
    GeomVertexArrayFormat,
    GeomVertexData,
    GeomVertexFormat,
    GraphicsEngine,
    GraphicsOutput,
    GraphicsPipe,
    GraphicsPipeSelection,
    LColor,
    LightAttrib,
    LODNode,
    LPoint3,
    LVector3,
    Mat4,
    NodePath,
    PandaNode,
    PerspectiveLens,
    RenderState,
    SamplerState,
    Texture,
    TextureAttrib,
    TransparencyAttrib,
    WindowProperties,
    loadPrcFileData,
)
from panda3d.core import Camera as PandaCamera

from drivestack.schema import (
    SEMANTIC_ID,
    ActorKind,
    ActorState,
    CameraImage,
    EgoState,
    TrafficLight,
    TrafficLightState,
    instance_id_of_actor,
    instance_id_of_light,
)
from sim.render.actors import actor_far_mesh, actor_mesh, actor_style, light_head_mesh, light_lamp_meshes
from sim.render.mesh import Mesh
from sim.render.postprocess import SKY_DEPTH_M, PixelGeometry, SensorModel, SensorNoise, apply_weather
from sim.render.weather import WeatherPreset, weather_preset
from sim.sensors.camera_model import CameraConfig

log = logging.getLogger(__name__)

NEAR_M = 0.1
FAR_M = SKY_DEPTH_M
CELL_M = 48.0  # static geometry is cut into square cells so off-screen ones are culled
# Beyond this distance (camera to cell centre, for a 160 px focal length; cameras scale
# it with theirs) a cell switches to its far version: thin things (road lines, poles,
# posts, trunks) dropped, tree crowns and grass coarsened. tinydisplay's cost is mostly
# per vertex, and most vertices in view are far away.
LOD_SWITCH_M = 48.0
LOD_REFERENCE_FOCAL_PX = 160.0
THIN_M = 0.5  # far cells drop triangles narrower than this (smallest altitude)
CROWN_HULL_POINTS = 8  # far tree crowns: hull of this many of their vertices
# Beyond this (same scaling) a cell switches to its distant version: crowns as hulls of
# fewer points, and objects smaller than DISTANT_MIN_SIZE_M (< ~3 px there) dropped.
DISTANT_SWITCH_M = 3.0 * LOD_SWITCH_M
DISTANT_CROWN_HULL_POINTS = 5
DISTANT_MIN_SIZE_M = 3.0
MAX_CODES_PER_ACTOR = 128  # label codes (planes) one actor's near and far models may use; ours use <= 80
# Beyond this (same scaling) actors are drawn as their far model (actors.actor_far_mesh)
# in both passes: a car there is ~7 px tall, and the full model costs ~4x the vertices.
ACTOR_LOD_SWITCH_M = 36.0
DEFAULT_EGO_HEIGHT_M = 1.5
SKY_ID = SEMANTIC_ID["sky"]
SCENE_CACHE_SIZE = 3  # static scenes kept for worlds seen recently
GROUND_CLASSES = tuple(SEMANTIC_ID[n] for n in ("road", "sidewalk", "terrain", "road_line"))
ROAD_CLASSES = (SEMANTIC_ID["road"], SEMANTIC_ID["road_line"])  # darken when wet
TWO_SIDED_CLASSES = (SEMANTIC_ID["fence"], SEMANTIC_ID["traffic_sign"], SEMANTIC_ID["vegetation"])
UNLIT_LAMP_FACTOR = 0.12
_GROUND_LUT = np.isin(np.arange(256), GROUND_CLASSES)
_DRAW_ORDER = {SEMANTIC_ID["building"]: 0, SEMANTIC_ID["sidewalk"]: 1, SEMANTIC_ID["road"]: 2,
               SEMANTIC_ID["road_line"]: 3, SEMANTIC_ID["terrain"]: 9}

_PRC = """
load-display p3tinydisplay
window-type offscreen
audio-library-name null
sync-video false
notify-level-display fatal
notify-level-x11display fatal
notify-level-tinydisplay warning
textures-power-2 none
"""
_prc_loaded = False

# Panda's camera looks along its +y with z up; REP 103 camera bodies look along +x.
# Columns: Panda camera axes (x right, y forward, z up) in the camera body frame.
_PANDA_FROM_BODY = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
# Columns: optical axes (x right, y down, z forward) in the camera body frame.
_OPTICAL_FROM_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


RGB_MASK, LABEL_MASK = BitMask32.bit(1), BitMask32.bit(2)  # which cameras see a node

# Panda's default opaque bin sorts by render state, breaking ties by pointer value:
# coplanar overlaps (road pieces reach under one another) would then resolve
# differently in two renderers. Drawing in scene-graph order is reproducible.
DRAW_BIN = "drivestack_scene_order"


def _load_prc() -> None:
    global _prc_loaded
    if not _prc_loaded:
        loadPrcFileData("drivestack-camera-renderer", _PRC)
        manager = CullBinManager.get_global_ptr()
        if manager.find_bin(DRAW_BIN) < 0:
            manager.add_bin(DRAW_BIN, CullBinEnums.BT_unsorted, 20)
        _prc_loaded = True


# -- label codes --------------------------------------------------------------------------


def encode_codes(codes: np.ndarray) -> np.ndarray:
    """24-bit label codes -> float RGBA vertex colours that tinydisplay writes back as
    exactly those bytes (it truncates 16-bit colour to 8 bits; +0.625 of a step lands
    in the middle of the byte's range, measured over all 256 values)."""
    codes = np.asarray(codes, dtype=np.int64)
    rgb = np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=-1)
    rgba = np.ones((*codes.shape, 4), dtype=np.float32)
    rgba[..., :3] = (rgb + 0.625) / 256.0
    return rgba


@dataclass
class _PlaneTable:
    """Per label code: the plane (unit normal . x = offset), the box bounding its
    triangles, semantic class and instance id; map frame.

    The box is oriented: ``box_lo``/``box_hi`` are corners in a frame turned by
    ``box_yaw`` about z (q = Rz(-yaw) p), aligned with a wall's face or an actor's
    body, so it bounds the surface tightly whatever its heading.
    """

    normal: np.ndarray  # (N, 3) float64
    offset: np.ndarray  # (N,)
    box_lo: np.ndarray  # (N, 3)
    box_hi: np.ndarray  # (N, 3)
    box_yaw: np.ndarray  # (N,)
    semantic: np.ndarray  # (N,) uint8
    instance: np.ndarray  # (N,) int32

    @staticmethod
    def empty(n: int) -> _PlaneTable:
        return _PlaneTable(np.zeros((n, 3)), np.zeros(n), np.zeros((n, 3)), np.zeros((n, 3)), np.zeros(n),
                           np.zeros(n, np.uint8), np.zeros(n, np.int32))


@dataclass
class _LabelGeometry:
    """Triangles re-indexed so every vertex carries one label code."""

    vertices: np.ndarray  # (V, 3)
    codes: np.ndarray  # (V,) code per vertex
    triangles: np.ndarray  # (T, 3)
    two_sided: np.ndarray  # (T,) bool
    table: _PlaneTable  # rows 0..G-1 for codes first_code..first_code+G-1


def _label_geometry(meshes: Sequence[Mesh], instances: Sequence[int | np.ndarray],
                    first_code: int | _CodeBook) -> _LabelGeometry:
    """Group the triangles of ``meshes`` by plane (and class and instance) and give
    each group a code: consecutive from ``first_code``, or the code book's code for
    that plane (shared with coplanar groups elsewhere). ``instances`` has one
    instance id per mesh, or an array of one per triangle."""
    vertices, triangles, semantic, instance = [], [], [], []
    offset = 0
    for mesh, inst in zip(meshes, instances):
        vertices.append(mesh.vertices.astype(np.float64))
        triangles.append(mesh.triangles.astype(np.int64) + offset)
        semantic.append(np.full(len(mesh.triangles), mesh.semantic_id, np.int64))
        instance.append(np.broadcast_to(np.asarray(inst, np.int64), (len(mesh.triangles),)))
        offset += len(mesh.vertices)
    if not triangles:
        return _LabelGeometry(np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros((0, 3), np.int64),
                              np.zeros(0, bool), _PlaneTable.empty(0))
    v = np.concatenate(vertices)
    t = np.concatenate(triangles)
    sem = np.concatenate(semantic)
    inst = np.concatenate(instance)
    p0, p1, p2 = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    normal = np.cross(p1 - p0, p2 - p0)
    length = np.linalg.norm(normal, axis=1)
    keep = length > 1e-12
    t, sem, inst, p0 = t[keep], sem[keep], inst[keep], p0[keep]
    normal = normal[keep] / length[keep, None]
    plane_offset = np.einsum("ij,ij->i", normal, p0)
    # Coplanar within 0.1 mm and 1e-4 rad: one group.
    key = np.column_stack([np.round(normal * 1e4), np.round(plane_offset * 1e4), sem, inst]).astype(np.int64)
    _, first, group = np.unique(key, axis=0, return_index=True, return_inverse=True)
    group = group.ravel()
    n_groups = len(first)
    # Vertices shared by two groups are split: each vertex gets exactly one code.
    pair = t * n_groups + group[:, None]
    unique_pair, new_index = np.unique(pair.ravel(), return_inverse=True)
    new_vertices = v[unique_pair // n_groups]
    table = _PlaneTable.empty(n_groups)
    table.normal[:] = normal[first]
    table.offset[:] = plane_offset[first]
    # Boxes turned with a wall's face (its horizontal normal); level for the rest.
    yaw = np.where(np.abs(table.normal[:, 2]) < 0.9, np.arctan2(table.normal[:, 1], table.normal[:, 0]), 0.0)
    table.box_yaw[:] = yaw
    corners = _turn(v[t], -yaw[group][:, None])  # (T, 3, 3) in each group's box frame
    table.box_lo[:] = np.inf
    table.box_hi[:] = -np.inf
    np.minimum.at(table.box_lo, group, corners.min(axis=1))
    np.maximum.at(table.box_hi, group, corners.max(axis=1))
    table.semantic[:] = sem[first]
    table.instance[:] = inst[first]
    if isinstance(first_code, _CodeBook):
        group_code = first_code.assign(key[first], table)
    else:
        group_code = first_code + np.arange(n_groups)
    codes = group_code[unique_pair % n_groups]
    two_sided = np.isin(sem, TWO_SIDED_CLASSES)
    return _LabelGeometry(new_vertices, codes, new_index.reshape(-1, 3), two_sided, table)


class _CodeBook:
    """Label codes of the static scene, one per plane (and class and instance) over
    the whole town: coplanar pieces in different cells share a code, and its depth
    clamp box covers all of them, so a pixel the rasteriser hands to the neighbouring
    piece of the same road still gets that road's exact depth. Code 0 is the sky."""

    def __init__(self) -> None:
        self._code_of: dict[bytes, int] = {}
        self._rows: list[_PlaneTable] = [_sky_row()]
        self._boxes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # codes, lo, hi
        self._count = 1

    def assign(self, keys: np.ndarray, rows: _PlaneTable) -> np.ndarray:
        codes = np.empty(len(keys), np.int64)
        fresh = []
        for i, key in enumerate(keys):
            raw = key.tobytes()
            code = self._code_of.get(raw)
            if code is None:
                code = self._code_of[raw] = self._count + len(fresh)
                fresh.append(i)
            codes[i] = code
        self._rows.append(_PlaneTable(*(getattr(rows, name)[fresh] for name in _TABLE_FIELDS)))
        self._count += len(fresh)
        self._boxes.append((codes, rows.box_lo, rows.box_hi))
        return codes

    def table(self) -> _PlaneTable:
        """Row ``code`` for every code; boxes span all pieces sharing the code."""
        table = _concat_tables(self._rows)
        for codes, lo, hi in self._boxes:
            np.minimum.at(table.box_lo, codes, lo)
            np.maximum.at(table.box_hi, codes, hi)
        return table


# -- Panda geometry from numpy --------------------------------------------------------------

_FORMATS: dict[tuple[bool, bool], GeomVertexFormat] = {}


def _vertex_format(normals: bool, uv: bool) -> GeomVertexFormat:
    key = (normals, uv)
    if key not in _FORMATS:
        array = GeomVertexArrayFormat()
        array.add_column("vertex", 3, Geom.NT_float32, Geom.C_point)
        if normals:
            array.add_column("normal", 3, Geom.NT_float32, Geom.C_normal)
        array.add_column("color", 4, Geom.NT_float32, Geom.C_color)
        if uv:
            array.add_column("texcoord", 2, Geom.NT_float32, Geom.C_texcoord)
        _FORMATS[key] = GeomVertexFormat.register_format(GeomVertexFormat(array))
    return _FORMATS[key]


def _make_geom(vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray,
               normals: np.ndarray | None = None, uv: np.ndarray | None = None, weld: bool = True) -> Geom:
    columns = [np.asarray(vertices, np.float32)]
    if normals is not None:
        columns.append(np.asarray(normals, np.float32))
    columns.append(np.asarray(colours, np.float32))
    if uv is not None:
        columns.append(np.asarray(uv, np.float32))
    data = np.ascontiguousarray(np.hstack(columns), dtype=np.float32)
    if weld:
        rows, triangles = _welded(data, triangles)
        data = data[rows]
    vdata = GeomVertexData("v", _vertex_format(normals is not None, uv is not None), Geom.UH_static)
    vdata.unclean_set_num_rows(len(data))
    np.frombuffer(memoryview(vdata.modify_array(0)).cast("B"), np.float32)[:] = data.ravel()
    prim = GeomTriangles(Geom.UH_static)
    prim.set_index_type(GeomEnums.NT_uint32)
    index = prim.modify_vertices()
    index.unclean_set_num_rows(triangles.size)
    np.frombuffer(memoryview(index).cast("B"), np.uint32)[:] = np.asarray(triangles, np.uint32).ravel()
    geom = Geom(vdata)
    geom.add_primitive(prim)
    return geom


def _welded(attributes: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices whose attributes (one row each) are identical, merged: the rows to
    keep and the triangles re-indexed into them. tinydisplay transforms every vertex
    of a geom each frame (~400 instructions apiece), and meshes built face by face
    (grass tiles, boxes) repeat most of theirs; the image does not change."""
    rows = np.ascontiguousarray(attributes)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()[np.asarray(triangles, np.int64)]


def _submesh(vertices: np.ndarray, triangles: np.ndarray, tri_subset: np.ndarray, *columns: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """The triangles ``tri_subset`` with only the vertices they use."""
    tris = triangles[tri_subset]
    used, inverse = np.unique(tris.ravel(), return_inverse=True)
    return vertices[used], inverse.reshape(-1, 3), [None if c is None else c[used] for c in columns]


def _state(texture: Texture | None = None, unlit: bool = False, two_sided: bool = False) -> RenderState:
    state = RenderState.make_empty()
    if texture is not None:
        state = state.add_attrib(TextureAttrib.make(texture))
    if unlit:
        state = state.add_attrib(LightAttrib.make_all_off())
    if two_sided:
        state = state.add_attrib(CullFaceAttrib.make(CullFaceAttrib.M_cull_none))
    return state


def _rgb_node(name: str, meshes: Sequence[Mesh]) -> NodePath:
    """Untextured meshes (actor models, lamps) as one node, one geom per render state
    (draw calls are what small models cost)."""
    node = GeomNode(name)
    groups: dict[tuple[bool, bool], list[Mesh]] = {}
    for mesh in meshes:
        groups.setdefault((mesh.emissive, mesh.semantic_id in TWO_SIDED_CLASSES), []).append(mesh)
    for (emissive, two_sided), group in groups.items():
        offsets = np.cumsum([0] + [len(m.vertices) for m in group[:-1]])
        node.add_geom(_make_geom(np.concatenate([m.vertices for m in group]),
                                 np.concatenate([m.triangles + o for m, o in zip(group, offsets)]),
                                 np.concatenate([m.colour for m in group]), np.concatenate([m.normals for m in group])),
                      _state(None, emissive, two_sided))
    return NodePath(node)


def _label_geom_node(name: str, label: _LabelGeometry) -> GeomNode:
    node = GeomNode(name)
    colours = encode_codes(label.codes)
    for two_sided in (False, True):
        part = np.flatnonzero(label.two_sided == two_sided)
        if len(part):
            v, t, (c,) = _submesh(label.vertices, label.triangles, part, colours)
            node.add_geom(_make_geom(v, t, c), _state(two_sided=two_sided))
    return node


def _texture(name: str, image: np.ndarray) -> Texture:
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"texture {name!r}: expected an (H, W, 3|4) uint8 array, got {image.shape}")
    h, w, channels = image.shape
    if h & (h - 1) or w & (w - 1):
        raise ValueError(f"texture {name!r}: {w}x{h} is not a power of two (tinydisplay takes no other)")
    texture = Texture(name)
    texture.setup_2d_texture(w, h, Texture.T_unsigned_byte, Texture.F_rgba8 if channels == 4 else Texture.F_rgb8)
    # Panda's rows run bottom-up; the arrays' top-down.
    layout = "RGBA" if channels == 4 else "RGB"
    texture.set_ram_image_as(np.ascontiguousarray(image[::-1]).tobytes(), layout)
    texture.set_wrap_u(SamplerState.WM_repeat)
    texture.set_wrap_v(SamplerState.WM_repeat)
    texture.set_minfilter(SamplerState.FT_linear_mipmap_nearest)
    texture.set_magfilter(SamplerState.FT_linear)
    return texture


# -- the static scene: cells, each with a near, a far and a distant version -------------


@dataclass
class _Part:
    """One cell's share of one world mesh (instance: an id, or one per triangle)."""

    mesh: Mesh
    instance: int | np.ndarray


def _split_into_cells(meshes: Sequence[Mesh], instances: Sequence[int | np.ndarray]
                      ) -> dict[tuple[int, int], list[_Part]]:
    cells: dict[tuple[int, int], list[_Part]] = {}
    for mesh, instance in zip(meshes, instances):
        if not len(mesh.triangles):
            continue
        centroid = mesh.vertices[mesh.triangles].mean(axis=1)[:, :2]
        key = np.floor(centroid / CELL_M).astype(np.int64)
        for cell in np.unique(key, axis=0):
            subset = np.flatnonzero((key == cell).all(axis=1))
            cells.setdefault((int(cell[0]), int(cell[1])), []).append(
                _Part(_mesh_subset(mesh, subset), instance if np.ndim(instance) == 0 else instance[subset]))
    return cells


def _mesh_subset(mesh: Mesh, triangles: np.ndarray, vertices_into: np.ndarray | None = None) -> Mesh:
    """The triangles ``triangles`` of ``mesh`` with only the vertices they use."""
    tris = mesh.triangles[triangles]
    used, inverse = np.unique(tris.ravel(), return_inverse=True)
    return Mesh(mesh.vertices[used], mesh.normals[used], mesh.uv[used], mesh.colour[used], inverse.reshape(-1, 3),
                mesh.semantic_id, mesh.texture, mesh.emissive)


def _components(mesh: Mesh) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected objects of a mesh (vertices welded by position, so a box whose faces
    have their own vertices is one object): count, object per vertex, per triangle."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    _, weld = np.unique(np.round(mesh.vertices * 1000.0).astype(np.int64), axis=0, return_inverse=True)
    weld = weld.ravel()
    t = weld[mesh.triangles]
    n = int(weld.max()) + 1
    edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, label = connected_components(graph, directed=False)
    return count, label[weld], label[t[:, 0]]


def _far_part(part: _Part, crown_points: int = CROWN_HULL_POINTS, min_size_m: float = 0.0) -> _Part | None:
    """The far version of a cell part: thin triangles (road lines, kerbs, poles,
    trunks) dropped, grass merged into rectangles, tree crowns reduced to the hull of
    ``crown_points`` vertices, rectangular walls and roofs as two triangles each, and
    objects whose largest side is under ``min_size_m`` dropped (not ground or crowns)."""
    mesh = part.mesh
    labelled = np.ndim(part.instance) != 0 or part.instance != 0
    if mesh.semantic_id == SEMANTIC_ID["terrain"] and _is_flat_ground(mesh) and not labelled:
        merged = _merge_ground(mesh)
        if merged is not None:
            return _Part(merged, 0)
    if labelled:
        return part  # labelled objects (light housings) stay as they are, however small
    p0, p1, p2 = (mesh.vertices[mesh.triangles[:, i]] for i in range(3))
    area2 = np.linalg.norm(np.cross(p1 - p0, p2 - p0), axis=1)
    longest = np.sqrt(np.max([((p1 - p0) ** 2).sum(1), ((p2 - p1) ** 2).sum(1), ((p0 - p2) ** 2).sum(1)], axis=0))
    kept = np.flatnonzero(area2 / np.maximum(longest, 1e-9) >= THIN_M)  # smallest altitude
    if not len(kept):
        return None
    mesh = _mesh_subset(mesh, kept)
    if mesh.semantic_id == SEMANTIC_ID["vegetation"] and mesh.texture is not None:
        mesh = _coarse_crowns(mesh, crown_points)
    elif min_size_m > 0.0 and mesh.semantic_id not in GROUND_CLASSES:
        mesh = _without_small_objects(mesh, min_size_m)
        if mesh is None:
            return None
    return _Part(_merge_rectangles(mesh), 0)


def _without_small_objects(mesh: Mesh, min_size_m: float) -> Mesh | None:
    """``mesh`` less its connected objects whose bounding box is under ``min_size_m``
    on every side (benches, bins, rooftop plant rooms seen from afar); None if none is left."""
    count, vertex_object, triangle_object = _components(mesh)
    lo = np.full((count, 3), np.inf)
    hi = np.full((count, 3), -np.inf)
    np.minimum.at(lo, vertex_object, mesh.vertices)
    np.maximum.at(hi, vertex_object, mesh.vertices)
    big = (hi - lo).max(axis=1) >= min_size_m
    kept = np.flatnonzero(big[triangle_object])
    if not len(kept):
        return None
    return mesh if len(kept) == len(mesh.triangles) else _mesh_subset(mesh, kept)


def _merge_rectangles(mesh: Mesh) -> Mesh:
    """Coplanar triangles that together tile a rectangle (a tessellated wall or roof)
    become that rectangle, when its texture mapping is affine and colour uniform."""
    v = mesh.vertices.astype(np.float64)
    t = mesh.triangles
    p0, p1, p2 = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    normal = np.cross(p1 - p0, p2 - p0)
    area = np.linalg.norm(normal, axis=1) / 2
    normal /= np.maximum(2 * area, 1e-12)[:, None]
    key = np.column_stack([np.round(normal * 1e3), np.round(np.einsum("ij,ij->i", normal, p0) * 1e2)]).astype(np.int64)
    _, group = np.unique(key, axis=0, return_inverse=True)
    group = group.ravel()
    keep = np.ones(len(t), bool)
    rectangles = []
    for g in np.flatnonzero(np.bincount(group) >= 4):
        members = np.flatnonzero(group == g)
        n = normal[members[0]]
        axis_u = np.cross(n, (0.0, 0.0, 1.0) if abs(n[2]) < 0.9 else (1.0, 0.0, 0.0))
        axis_u /= np.linalg.norm(axis_u)
        axis_v = np.cross(n, axis_u)
        index = np.unique(t[members].ravel())
        points = v[index]
        flat = np.column_stack([points @ axis_u, points @ axis_v])
        (cx, cy), (w, h), angle = cv2.minAreaRect(flat.astype(np.float32))
        if abs(w * h - area[members].sum()) > 0.005 * max(w * h, 1e-9):
            continue  # not a full rectangle
        colours = mesh.colour[index]
        if np.ptp(colours, axis=0).max() > 0.02:
            continue
        design = np.column_stack([points, np.ones(len(points))])
        uv_map, *_ = np.linalg.lstsq(design, mesh.uv[index], rcond=None)
        if np.abs(design @ uv_map - mesh.uv[index]).max() > 1e-3:
            continue
        corners2d = cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.float64)
        origin = points[0] - (points[0] @ axis_u) * axis_u - (points[0] @ axis_v) * axis_v
        corners = origin + corners2d[:, :1] * axis_u + corners2d[:, 1:] * axis_v
        quad = np.array([[0, 1, 2], [0, 2, 3]])
        if np.cross(corners[1] - corners[0], corners[2] - corners[0]) @ n < 0:
            quad = quad[:, ::-1]
        rectangles.append(Mesh(corners, np.tile(n, (4, 1)), np.column_stack([corners, np.ones(4)]) @ uv_map,
                               np.tile(colours.mean(axis=0), (4, 1)), quad, mesh.semantic_id, mesh.texture,
                               mesh.emissive))
        keep[members] = False
    if not rectangles:
        return mesh
    rest = [_mesh_subset(mesh, np.flatnonzero(keep))] if keep.any() else []
    return _concatenate(rest + rectangles)


def _is_flat_ground(mesh: Mesh) -> bool:
    z = mesh.vertices[:, 2]
    return len(mesh.triangles) >= 32 and float(z.max() - z.min()) < 1e-3 and mesh.texture is not None


def _merge_ground(mesh: Mesh, resolution_m: float = 1.6) -> Mesh | None:
    """A flat textured ground mesh (grass) as few rectangles: rasterised from its
    lowest corner (grid-aligned tiles stay exact), runs merged across rows. Texture
    coordinates follow the original's planar mapping, colours its nearest vertex."""
    xy = mesh.vertices[:, :2].astype(np.float64)
    design = np.column_stack([xy, np.ones(len(xy))])
    uv_map, *_ = np.linalg.lstsq(design, mesh.uv, rcond=None)
    if np.abs(design @ uv_map - mesh.uv).max() > 1e-3:
        return None  # not a planar mapping: keep the original
    origin = xy.min(axis=0)
    size = np.ceil((xy.max(axis=0) - origin) / resolution_m).astype(int) + 1
    raster = np.zeros((size[1], size[0]), np.uint8)
    shift = 4  # cv2 sub-pixel bits
    corners = np.round((xy[mesh.triangles] - origin) / resolution_m * (1 << shift)).astype(np.int32)
    # Sample at cell centres: shrink by half a cell so shared edges do not leak.
    cv2.fillPoly(raster, list(corners - (1 << (shift - 1))), 1, lineType=cv2.LINE_8, shift=shift)
    rects = []
    open_runs: dict[tuple[int, int], int] = {}
    for row in range(raster.shape[0] + 1):
        runs = set()
        if row < raster.shape[0]:
            line = np.concatenate([[0], raster[row], [0]])
            edges = np.flatnonzero(np.diff(line))
            runs = set(zip(edges[::2].tolist(), edges[1::2].tolist()))
        for run in list(open_runs):
            if run not in runs:
                rects.append((run[0], open_runs.pop(run), run[1], row))
        for run in runs:
            open_runs.setdefault(run, row)
    if not rects or len(rects) * 2 >= len(mesh.triangles):
        return None
    r = np.array(rects, dtype=np.float64)  # col0, row0, col1, row1 (exclusive)
    x0, y0 = origin[0] + r[:, 0] * resolution_m, origin[1] + r[:, 1] * resolution_m
    x1, y1 = origin[0] + r[:, 2] * resolution_m, origin[1] + r[:, 3] * resolution_m
    quad_xy = np.stack([np.column_stack([x0, y0]), np.column_stack([x1, y0]), np.column_stack([x1, y1]),
                        np.column_stack([x0, y1])], axis=1).reshape(-1, 2)
    n = len(quad_xy)
    vertices = np.column_stack([quad_xy, np.full(n, mesh.vertices[0, 2])])
    nearest = np.argmin(((quad_xy[:, None, :] - xy[None, ::max(1, len(xy) // 512), :]) ** 2).sum(-1), axis=1)
    colour = mesh.colour[::max(1, len(xy) // 512)][nearest]
    base = np.arange(0, n, 4)
    triangles = np.concatenate([np.column_stack([base, base + 1, base + 2]),
                                np.column_stack([base, base + 2, base + 3])])
    normal = np.tile(mesh.normals[0], (n, 1))
    uv = np.column_stack([quad_xy, np.ones(n)]) @ uv_map
    return Mesh(vertices, normal, uv, colour, triangles, mesh.semantic_id, mesh.texture, mesh.emissive)


def _coarse_crowns(mesh: Mesh, hull_points: int) -> Mesh:
    """Each tree crown (an object with many vertices) as the convex hull of a few of
    its vertices, picked farthest-first so the outline survives."""
    from scipy.spatial import ConvexHull, QhullError
    count, vertex_object, triangle_object = _components(mesh)
    keep_triangles = []
    new_parts = []
    for obj in range(count):
        members = np.flatnonzero(vertex_object == obj)
        if len(members) <= 2 * hull_points:
            keep_triangles.append(np.flatnonzero(triangle_object == obj))
            continue
        points = mesh.vertices[members]
        chosen = [int(np.argmax(((points - points.mean(axis=0)) ** 2).sum(1)))]
        distance = ((points - points[chosen[0]]) ** 2).sum(1)
        for _ in range(hull_points - 1):
            chosen.append(int(np.argmax(distance)))
            distance = np.minimum(distance, ((points - points[chosen[-1]]) ** 2).sum(1))
        try:
            hull = ConvexHull(points[chosen])
        except QhullError:
            keep_triangles.append(np.flatnonzero(triangle_object == obj))
            continue
        simplices = hull.simplices.copy()
        # Qhull's facets are unoriented: wind each counter-clockwise seen from outside.
        p = points[chosen]
        normal = np.cross(p[simplices[:, 1]] - p[simplices[:, 0]], p[simplices[:, 2]] - p[simplices[:, 0]])
        flip = np.einsum("ij,ij->i", normal, hull.equations[:, :3]) < 0
        simplices[flip] = simplices[flip][:, ::-1]
        new_parts.append((members[chosen], simplices))
    pieces = [_mesh_subset(mesh, np.concatenate(keep_triangles))] if keep_triangles else []
    for index, simplices in new_parts:
        pieces.append(Mesh(mesh.vertices[index], mesh.normals[index], mesh.uv[index], mesh.colour[index], simplices,
                           mesh.semantic_id, mesh.texture, mesh.emissive))
    return _concatenate(pieces)


def _concatenate(meshes: Sequence[Mesh]) -> Mesh:
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    first = meshes[0]
    return Mesh(np.concatenate([m.vertices for m in meshes]), np.concatenate([m.normals for m in meshes]),
                np.concatenate([m.uv for m in meshes]), np.concatenate([m.colour for m in meshes]),
                np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]),
                first.semantic_id, first.texture, first.emissive)


class _StaticScene:
    """The town in both halves of the scene graph, cut into cells with a near, a far
    and a distant version; the label table of its codes (row 0: the sky); the traffic-light
    lamps (per light id: red, yellow and green nodes, all housings of that light)."""

    def __init__(self, meshes: list[Mesh], heads: Sequence, textures: Mapping[str, Texture]) -> None:
        self.rgb = NodePath("static")
        self.label = NodePath("static")
        self.sunlit = _SunlitColours()
        instances, housed = _light_instances(meshes, heads)
        # A head the world gave no housing gets the renderer's own box.
        for i, head in enumerate(heads):
            if i not in housed:
                meshes.append(light_head_mesh(head))
                instances.append(instance_id_of_light(head.light_id))
        self._build_cells(meshes, instances, textures)
        self.lamps: dict[int, list[NodePath]] = {}
        self.lamp_states: dict[int, TrafficLightState] = {}
        lamps_root = self.rgb.attach_new_node("lamps")
        by_light: dict[int, list[list[Mesh]]] = {}
        for head in heads:
            for i, lamp in enumerate(light_lamp_meshes(head)):
                by_light.setdefault(head.light_id, [[], [], []])[i].append(lamp)
        for light_id, colours in by_light.items():
            self.lamps[light_id] = [_rgb_node(f"lamp_{light_id}_{i}", m) for i, m in enumerate(colours)]
            for node in self.lamps[light_id]:
                node.reparent_to(lamps_root)
                node.flatten_strong()

    def release(self) -> None:
        self.rgb.remove_node()
        self.label.remove_node()

    def _build_cells(self, meshes: Sequence[Mesh], instances: Sequence[int | np.ndarray],
                     textures: Mapping[str, Texture]) -> None:
        book = _CodeBook()
        cells = _split_into_cells(meshes, instances)
        self.cells = len(cells)
        for (cx, cy), parts in cells.items():
            # Occluders first, what lies beneath them last: the depth test then skips
            # most of the grass under roads and pavements instead of shading it.
            parts = sorted(parts, key=lambda p: _DRAW_ORDER.get(p.mesh.semantic_id, 5))
            far = [f for f in (_far_part(p) for p in parts) if f is not None]
            distant = [f for f in (_far_part(p, DISTANT_CROWN_HULL_POINTS, DISTANT_MIN_SIZE_M) for p in parts)
                       if f is not None]
            centre = ((cx + 0.5) * CELL_M, (cy + 0.5) * CELL_M, 0.0)
            rgb_lod, label_lod = LODNode(f"cell_{cx}_{cy}"), LODNode(f"cell_{cx}_{cy}")
            for lod in (rgb_lod, label_lod):  # one switch for both halves: labels describe the image
                lod.set_center(LPoint3(*centre))
                lod.add_switch(LOD_SWITCH_M, 0.0)
                lod.add_switch(DISTANT_SWITCH_M, LOD_SWITCH_M)
                lod.add_switch(1e6, DISTANT_SWITCH_M)
            rgb_path, label_path = self.rgb.attach_new_node(rgb_lod), self.label.attach_new_node(label_lod)
            for version in (parts, far, distant):
                rgb_path.attach_new_node(self._rgb_geoms(version, textures))
                label = _label_geometry([p.mesh for p in version], [p.instance for p in version], book)
                label_path.attach_new_node(_label_geom_node("cell", label))
        self.table = book.table()

    def _rgb_geoms(self, parts: Sequence[_Part], textures: Mapping[str, Texture]) -> GeomNode:
        """One geom per render state (texture, faces culled or not), in draw order:
        tinydisplay pays ~3 us per draw call, and a cell has dozens of meshes that
        share a few textures. Colours are written by :meth:`bake`."""
        node = GeomNode("cell")
        groups: dict[tuple, list[Mesh]] = {}
        for part in parts:  # sorted by draw order: groups keep occluders first
            mesh = part.mesh
            texture = mesh.texture if mesh.texture in textures else None
            if mesh.texture and texture is None:
                log.warning("no texture %r: drawn untextured", mesh.texture)
            key = (_DRAW_ORDER.get(mesh.semantic_id, 5), texture, mesh.semantic_id in TWO_SIDED_CLASSES)
            groups.setdefault(key, []).append(mesh)
        for (_, texture, two_sided), meshes in groups.items():
            offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
            triangles = np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)])
            # Everything the baked colour depends on, so welded vertices share it.
            lighting = np.concatenate([np.column_stack([m.vertices, m.colour, m.normals, m.uv,
                                                        np.full((len(m.vertices), 2), (m.emissive, m.semantic_id))])
                                       for m in meshes]).astype(np.float32)
            if texture is None:
                lighting[:, 10:12] = 0.0
            rows, triangles = _welded(lighting, triangles)
            lighting = lighting[rows]
            uv = lighting[:, 10:12] if texture is not None else None
            geom = _make_geom(lighting[:, :3], triangles, lighting[:, 3:7], uv=uv, weld=False)
            node.add_geom(geom, _state(textures[texture] if texture is not None else None, unlit=True,
                                       two_sided=two_sided))
            self.sunlit.add(geom.modify_vertex_data(), albedo=lighting[:, 3:6], normal=lighting[:, 7:10],
                            lit=lighting[:, 12] == 0, road=np.isin(lighting[:, 13], ROAD_CLASSES))
        return node

    def bake(self, preset: WeatherPreset) -> None:
        """Light the static geometry for ``preset`` (a no-op if it already is)."""
        self.sunlit.bake(preset)


class _SunlitColours:
    """The static RGB geometry's vertex colours with the sun and ambient light baked
    in, exactly as Panda 1.10's tinydisplay lights a vertex of colour c (which it
    applies twice: c * c * (ambient + sun * max(0, n . l)), then clamped); emissive
    meshes keep their colour. The sun stays put for an episode, so lighting is
    computed once per weather instead of per vertex every frame (a third of the RGB
    pass). Wet roads' darkening (``road_brightness``, a colour scale, so squared
    too) is baked in as well."""

    def __init__(self) -> None:
        self._geoms: list[tuple[GeomVertexData, int, int]] = []  # data, first row, rows
        self._albedo: list[np.ndarray] = []
        self._normal: list[np.ndarray] = []
        self._lit: list[np.ndarray] = []  # False: emissive
        self._road: list[np.ndarray] = []
        self._rows = 0
        self._packed: tuple[np.ndarray, ...] | None = None
        self._baked_for: tuple | None = None

    def add(self, vdata: GeomVertexData, albedo: np.ndarray, normal: np.ndarray, lit: np.ndarray,
            road: np.ndarray) -> None:
        """A geom's vertex data and, per row: colour, normal, lit (not emissive), road."""
        rows = len(albedo)
        if vdata.get_num_rows() != rows:
            raise ValueError(f"vertex data has {vdata.get_num_rows()} rows, lighting inputs {rows}")
        self._geoms.append((vdata, self._rows, rows))
        self._rows += rows
        self._albedo.append(albedo)
        self._normal.append(normal)
        self._lit.append(lit)
        self._road.append(road)
        self._packed, self._baked_for = None, None

    def bake(self, preset: WeatherPreset) -> None:
        key = (tuple(preset.sun_direction), preset.sun_rgb, preset.ambient_rgb, preset.road_brightness)
        if key == self._baked_for or not self._geoms:
            return
        if self._packed is None:
            self._packed = tuple(np.concatenate(a) for a in (self._albedo, self._normal, self._lit, self._road))
        albedo, normal, lit, road = self._packed
        # float32 like tinydisplay's lighting; the light arrives along -sun_direction.
        cosine = np.maximum(normal @ preset.sun_direction.astype(np.float32), np.float32(0.0))
        light = np.asarray(preset.ambient_rgb, np.float32) + cosine[:, None] * np.asarray(preset.sun_rgb, np.float32)
        scaled = albedo.copy()
        scaled[road] *= np.float32(preset.road_brightness)
        colour = scaled * light * scaled
        colour[~lit] = scaled[~lit]
        np.clip(colour, 0.0, 1.0, out=colour)
        for vdata, first, rows in self._geoms:
            array = vdata.modify_array(0)
            stride = array.get_array_format().get_stride() // 4
            data = np.frombuffer(memoryview(array).cast("B"), np.float32).reshape(rows, stride)
            data[:, 3:6] = colour[first:first + rows]  # columns: vertex, colour, [texcoord]
        self._baked_for = key


# -- the sky ----------------------------------------------------------------------------------


def _sky_dome(preset: WeatherPreset, radius_m: float = 0.9 * FAR_M) -> Geom:
    """A dome around the camera, coloured from the horizon to the zenith; below the
    horizon a haze skirt in case the town ends before the view does."""
    azimuths = np.linspace(0.0, 2.0 * math.pi, 25)
    elevations = np.radians([-30.0, -2.0, 0.0, 3.0, 8.0, 16.0, 30.0, 50.0, 90.0])
    az, el = np.meshgrid(azimuths, elevations)
    vertices = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3) * radius_m
    top, horizon = np.asarray(preset.sky_top_rgb), np.asarray(preset.sky_horizon_rgb)
    t = np.clip(el / (math.pi / 2), 0.0, 1.0) ** 0.55
    rgb = horizon * (1 - t[..., None]) + top * t[..., None]
    rgb[el < 0] = horizon * 0.92 + np.asarray(preset.fog_rgb) * 0.08
    colours = np.concatenate([rgb.reshape(-1, 3), np.ones((rgb.size // 3, 1))], axis=1)
    n_az = len(azimuths)
    rows, cols = np.meshgrid(np.arange(len(elevations) - 1), np.arange(n_az - 1), indexing="ij")
    a = (rows * n_az + cols).ravel()
    # Seen from inside: counter-clockwise from the centre.
    triangles = np.concatenate([np.stack([a, a + n_az, a + 1], 1), np.stack([a + 1, a + n_az, a + n_az + 1], 1)])
    return _make_geom(vertices, triangles, colours)


# -- per-camera views -----------------------------------------------------------------------


@dataclass
class _View:
    """One CameraConfig: its Panda cameras, buffers and precomputed pixel rays."""

    config: CameraConfig
    label_camera: NodePath
    label_texture: Texture
    label_buffer: GraphicsOutput
    rgb_camera: NodePath | None
    rgb_texture: Texture | None
    rgb_buffer: GraphicsOutput | None
    ray_x: np.ndarray  # (H, W) optical x / z of each pixel centre
    ray_y: np.ndarray
    sensor: SensorModel
    effects_rng: np.random.Generator
    pose: tuple[np.ndarray, np.ndarray] = field(default=(np.eye(3), np.zeros(3)))  # optical->map R, origin
    columns: np.ndarray | None = None  # per-code optical-frame plane data, reused


def _lens(config: CameraConfig) -> PerspectiveLens:
    """A lens whose tinydisplay pixel (u, v) covers [u, u+1) x [v, v+1) of
    CameraConfig.project's pixel coordinates.

    tinydisplay maps NDC [-1, 1] onto [0, W - 0.5] and truncates vertex positions to
    whole pixels. In focal-length pixel units the film is therefore W - 0.5 wide, and
    a quarter-pixel film offset puts NDC -1 at u = 0 (same vertically, v pointing down).
    """
    w, h = config.width_px, config.height_px
    lens = PerspectiveLens()
    lens.set_film_size(w - 0.5, h - 0.5)
    lens.set_focal_length(config.focal_px)
    lens.set_film_offset(-0.25, 0.25)
    lens.set_near_far(NEAR_M, FAR_M)
    return lens


def _pose_mat(rotation: np.ndarray, origin: np.ndarray) -> Mat4:
    """Panda's row-vector matrix of a node whose axes are ``rotation``'s columns."""
    m = np.eye(4)
    m[:3, :3] = rotation.T
    m[3, :3] = origin
    return Mat4(*m.ravel().tolist())


def _yaw(yaw_rad: float) -> np.ndarray:
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# -- actor pool -----------------------------------------------------------------------------


@dataclass
class _ActorSlot:
    """The scene nodes of one actor id, reused every frame it is seen."""

    index: int
    model_key: tuple
    pose: NodePath  # parent of both models, placed each frame


@dataclass
class _ActorModel:
    """One look and size of actor, shared by every slot showing it: a near and, where
    the look has one, a far version under an LOD switch (the label halves switch alike)."""

    rgb: NodePath
    lamps: list[NodePath]
    labels: list[_LabelGeometry]  # near (codes from 0), far (codes after near's); instance 0
    table: _PlaneTable  # rows of all codes of ``labels``


# -- the renderer ---------------------------------------------------------------------------


class CameraRenderer:
    """Renders the configured cameras of the ego each simulator step."""

    def __init__(self, cameras: Sequence[CameraConfig], seed: int = 0,
                 ego_height_m: float = DEFAULT_EGO_HEIGHT_M, noise: SensorNoise = SensorNoise()) -> None:
        if not cameras:
            raise ValueError("CameraRenderer needs at least one camera")
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        _load_prc()
        self.cameras = tuple(cameras)
        self.ego_height_m = float(ego_height_m)
        self.noise = noise
        self._pipe = GraphicsPipeSelection.get_global_ptr().make_module_pipe("p3tinydisplay")
        if self._pipe is None:
            raise RuntimeError("Panda3D's p3tinydisplay software renderer is not available")
        self._engine = GraphicsEngine()
        # One scene graph; camera masks keep each pass to its half. Actors hang off a
        # shared pose node, so moving one is a single transform for both passes.
        self._root = NodePath("scene")
        self._root.set_bin(DRAW_BIN, 0)
        self._rgb_root = self._root.attach_new_node("rgb")
        self._rgb_root.hide(LABEL_MASK)
        self._label_root = self._root.attach_new_node("label")
        self._label_root.hide(RGB_MASK)
        _label_overrides(self._label_root)
        self._actors_root = self._root.attach_new_node("actors")

        self._sun = DirectionalLight("sun")
        self._ambient = AmbientLight("ambient")
        self._sun_path = self._rgb_root.attach_new_node(self._sun)
        self._ambient_path = self._rgb_root.attach_new_node(self._ambient)
        for root in (self._rgb_root, self._actors_root):
            root.set_light(self._sun_path)
            root.set_light(self._ambient_path)
        self._sky = self._rgb_root.attach_new_node(GeomNode("sky"))
        # Drawn after the scene, where nothing else is (the dome lies inside the far
        # plane): filling the whole frame first and painting over it cost a pass.
        self._sky.set_bin("fixed", 0)
        self._sky.set_depth_write(False)
        self._sky.set_light_off(1)
        self._sky.set_two_sided(True)

        self._views = [self._make_view(i, c) for i, c in enumerate(self.cameras)]
        self._world_ref: object | None = None
        self._static: _StaticScene | None = None
        self._scene_cache: list[tuple[object, _StaticScene]] = []  # (world, scene), last used last
        self._textures: dict[str, Texture] = {}
        self._texture_arrays: dict[str, np.ndarray] = {}
        self._static_table = _sky_row()
        self._actor_base = 1
        self._slots: dict[int, _ActorSlot] = {}
        self._models: dict[tuple, _ActorModel] = {}
        self._visible: set[int] = set()  # actor ids shown in the last frame
        self._n_slots = 0
        # Every label code's row: the static scene's, then MAX_CODES_PER_ACTOR per
        # actor slot, those in the actor's body frame.
        self._table = self._static_table
        self._actor_pose = np.zeros((0, 3))  # x, y, yaw per slot
        self.preset: WeatherPreset = weather_preset("clear_noon")
        self.seed = 0
        self.reset(seed)
        self.set_weather(self.preset)

    # -- lifecycle ------------------------------------------------------------------------

    def reset(self, seed: int) -> None:
        """A new episode: noise streams and actor looks follow ``seed``; actors are dropped."""
        self.seed = int(seed)
        for i, view in enumerate(self._views):
            view.sensor.reseed(np.random.default_rng([self.seed, i, 1]))
            view.effects_rng = np.random.default_rng([self.seed, i, 2])
        self._clear_actors()

    def close(self) -> None:
        """Release the offscreen buffers; the renderer is unusable afterwards."""
        if self._engine is not None:
            self._engine.remove_all_windows()
            self._engine = None
        self._views = []
        for _, scene in self._scene_cache:
            scene.release()
        self._scene_cache, self._static, self._world_ref = [], None, None
        self._root.remove_node()

    def __enter__(self) -> CameraRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make_view(self, index: int, config: CameraConfig) -> _View:
        w, h = config.width_px, config.height_px
        lens = _lens(config)
        label_buffer, label_texture, label_camera = self._make_pass(f"{config.name}_label", index * 2, w, h,
                                                                    lens, LABEL_MASK, (0, 0, 0))
        rgb_buffer = rgb_texture = rgb_camera = None
        if "rgb" in config.kinds:
            rgb_buffer, rgb_texture, rgb_camera = self._make_pass(f"{config.name}_rgb", index * 2 + 1, w, h,
                                                                  lens, RGB_MASK, (0.5, 0.6, 0.7))
        u = (np.arange(w, dtype=np.float64) + 0.5 - w / 2.0) / config.focal_px
        v = (np.arange(h, dtype=np.float64) + 0.5 - h / 2.0) / config.focal_px
        ray_x, ray_y = np.meshgrid(u.astype(np.float32), v.astype(np.float32))
        return _View(config, label_camera, label_texture, label_buffer, rgb_camera, rgb_texture, rgb_buffer,
                     ray_x, ray_y, SensorModel(w, h, np.random.default_rng(0), self.noise),
                     np.random.default_rng(0))

    def _make_pass(self, name: str, sort: int, w: int, h: int, lens: PerspectiveLens, mask: BitMask32,
                   clear_rgb: tuple[float, float, float]) -> tuple[GraphicsOutput, Texture, NodePath]:
        properties = FrameBufferProperties()
        properties.set_rgb_color(True)
        properties.set_color_bits(24)
        properties.set_depth_bits(24)
        buffer = self._engine.make_output(self._pipe, name, sort, properties, WindowProperties.size(w, h),
                                          GraphicsPipe.BF_refuse_window)
        if buffer is None:
            raise RuntimeError(f"could not open a {w}x{h} offscreen buffer for camera pass {name}")
        texture = Texture(name)
        buffer.add_render_texture(texture, GraphicsOutput.RTM_copy_ram, GraphicsOutput.RTP_color)
        buffer.set_clear_color(LColor(*clear_rgb, 1.0))
        buffer.set_clear_color_active(True)
        camera_node = PandaCamera(name)
        camera_node.set_lens(lens)
        # LOD switches where detail shrinks below a pixel: farther for long lenses.
        camera_node.set_lod_scale(LOD_REFERENCE_FOCAL_PX / lens.get_focal_length())
        camera_node.set_camera_mask(mask)
        camera = self._root.attach_new_node(camera_node)
        region = buffer.make_display_region()
        region.set_camera(camera)
        return buffer, texture, camera

    # -- world and weather ----------------------------------------------------------------

    def set_world(self, world, textures: Mapping[str, np.ndarray]) -> None:
        """Show the static scene of ``world`` (duck-typed: ``meshes`` in the map frame,
        ``light_heads``). Scenes are built once per world object and kept for the
        last few worlds, so a reset to a town seen recently only swaps nodes (and
        refreshes textures, whose pixels may differ per episode)."""
        self._update_textures(textures)
        if world is self._world_ref:
            return
        if self._static is not None:
            self._static.rgb.detach_node()
            self._static.label.detach_node()
        cached = next((i for i, (w, _) in enumerate(self._scene_cache) if w is world), None)
        if cached is None:
            scene = _StaticScene(list(getattr(world, "meshes", ())), list(getattr(world, "light_heads", ())),
                                 self._textures)
            self._scene_cache.append((world, scene))
            if len(self._scene_cache) > SCENE_CACHE_SIZE:
                self._scene_cache.pop(0)[1].release()
            log.info("camera renderer: built a world of %d cells, %d label planes", scene.cells,
                     len(scene.table.offset))
        else:
            self._scene_cache.append(self._scene_cache.pop(cached))
        self._static = self._scene_cache[-1][1]
        self._static.rgb.reparent_to(self._rgb_root)
        self._static.label.reparent_to(self._label_root)
        self._static_table = self._static.table
        # Actor codes follow the static ones; actors get new geometry with new codes.
        self._actor_base = len(self._static_table.offset)
        self._world_ref = world
        self._clear_actors()
        self._static.bake(self.preset)
        for light_id in self._static.lamps:
            self._set_lamps(light_id, TrafficLightState.OFF)

    def _update_textures(self, textures: Mapping[str, np.ndarray]) -> None:
        for name, image in textures.items():
            previous = self._texture_arrays.get(name)
            if previous is image or (previous is not None and previous.shape == image.shape
                                     and np.array_equal(previous, image)):
                continue
            if name in self._textures:  # meshes keep their Texture; swap its pixels
                fresh = _texture(name, image)
                self._textures[name].set_ram_image(fresh.get_ram_image())
            else:
                self._textures[name] = _texture(name, image)
            self._texture_arrays[name] = image

    def set_weather(self, preset: WeatherPreset) -> None:
        self.preset = preset
        sun = preset.sun_direction
        self._sun.set_color(LColor(*preset.sun_rgb, 1.0))
        self._sun.set_direction(LVector3(*(-sun)))
        self._ambient.set_color(LColor(*preset.ambient_rgb, 1.0))
        self._sky.node().remove_all_geoms()
        self._sky.node().add_geom(_sky_dome(preset))
        for view in self._views:
            if view.rgb_buffer is not None:
                view.rgb_buffer.set_clear_color(LColor(*preset.sky_horizon_rgb, 1.0))
        if self._static is not None:
            self._static.bake(preset)
        for model in self._models.values():
            self._set_vehicle_lamps(model)

    # -- actors ---------------------------------------------------------------------------

    def _clear_actors(self) -> None:
        for slot in self._slots.values():
            slot.pose.remove_node()
        self._slots = {}
        self._visible = set()
        self._n_slots = 0
        self._actor_pose = np.zeros((0, 3))
        self._table = self._static_table

    def _slot_for(self, actor: ActorState) -> _ActorSlot:
        key = (actor.kind, round(actor.length_m, 4), round(actor.width_m, 4), round(actor.height_m, 4))
        slot = self._slots.get(actor.actor_id)
        if slot is not None and slot.model_key == key:
            return slot
        if slot is not None:  # same id, new size: rebuild in place
            slot.pose.remove_node()
            index = slot.index
        else:
            index = self._n_slots
            self._n_slots += 1
            rows = self._n_slots * MAX_CODES_PER_ACTOR
            self._table = _grown(self._table, len(self._static_table.offset) + rows)
            self._actor_pose = np.vstack([self._actor_pose, np.zeros((1, 3))])
        model = self._actor_model(actor)
        pose = self._actors_root.attach_new_node(f"actor_{actor.actor_id}")
        rgb = model.rgb.instance_to(pose)  # shared by every actor of this look and size
        rgb.hide(LABEL_MASK)
        first_code = self._actor_base + index * MAX_CODES_PER_ACTOR
        label_path = pose.attach_new_node(_actor_lod("label") if len(model.labels) > 1 else PandaNode("label"))
        for version in model.labels:
            label_path.attach_new_node(_label_geom_node("label", replace(version, codes=version.codes + first_code)))
        label_path.hide(RGB_MASK)
        _label_overrides(label_path)
        if actor.actor_id not in self._visible:  # _place_actors shows it
            pose.hide()
        slot = _ActorSlot(index, key, pose)
        self._slots[actor.actor_id] = slot
        # The actor's rows stay in its body frame; _depth moves the ones it needs.
        rows = first_code + np.arange(MAX_CODES_PER_ACTOR)
        fresh = _PlaneTable.empty(MAX_CODES_PER_ACTOR)
        used = len(model.table.offset)
        for name in _TABLE_FIELDS:
            getattr(fresh, name)[:used] = getattr(model.table, name)
            getattr(self._table, name)[rows] = getattr(fresh, name)
        self._table.instance[rows[:used]] = instance_id_of_actor(actor.actor_id)
        return slot

    def _actor_model(self, actor: ActorState) -> _ActorModel:
        """The RGB nodes and label geometry of an actor's look, built once per look and
        size (codes from 0, instance 0: each slot shifts and fills them)."""
        style = actor_style(actor.kind, actor.actor_id, self.seed)
        key = (style, round(actor.length_m, 4), round(actor.width_m, 4), round(actor.height_m, 4))
        model = self._models.get(key)
        if model is None:
            near, far = actor_mesh(actor, self.seed), actor_far_mesh(actor, self.seed)
            versions = [near] if far is near else [near, far]
            rgb = NodePath(_actor_lod("model") if len(versions) > 1 else PandaNode("model"))
            lamps, labels = [], []
            codes = 0
            for meshes in versions:
                version = rgb.attach_new_node("version")
                _rgb_node("body", [m for m in meshes if not m.emissive]).reparent_to(version)
                emissive = [m for m in meshes if m.emissive]
                if emissive:
                    lamps.append(_rgb_node("lamps", emissive))
                    lamps[-1].reparent_to(version)
                labels.append(_label_geometry(meshes, [0] * len(meshes), codes))
                codes += len(labels[-1].table.offset)
            if codes > MAX_CODES_PER_ACTOR:
                raise ValueError(f"actor models with {codes} planes; at most {MAX_CODES_PER_ACTOR}")
            model = self._models[key] = _ActorModel(rgb, lamps, labels, _concat_tables([v.table for v in labels]))
            self._set_vehicle_lamps(model)
        return model

    def _set_vehicle_lamps(self, model: _ActorModel) -> None:
        # Lamp lenses are pale by day; at night they are the brightest thing around.
        level = 1.0 if self.preset.headlights_on else 0.75
        for lamps in model.lamps:
            lamps.set_color_scale(level, level, level, 1.0)

    def _place_actors(self, actors: Sequence[ActorState]) -> None:
        seen = set()
        for actor in actors:
            slot = self._slot_for(actor)
            seen.add(actor.actor_id)
            slot.pose.set_pos_hpr(actor.x_m, actor.y_m, 0.0, math.degrees(actor.yaw_rad), 0.0, 0.0)
            self._actor_pose[slot.index] = (actor.x_m, actor.y_m, actor.yaw_rad)
        for actor_id in self._visible - seen:
            self._slots[actor_id].pose.hide()
        for actor_id in seen - self._visible:
            self._slots[actor_id].pose.show()
        self._visible = seen

    # -- traffic lights -------------------------------------------------------------------

    def _set_lamps(self, light_id: int, state: TrafficLightState) -> None:
        states = self._static.lamp_states
        if states.get(light_id) == state:
            return
        states[light_id] = state
        for i, node in enumerate(self._static.lamps[light_id]):
            if i == int(state):
                node.clear_color_scale()
            else:
                f = UNLIT_LAMP_FACTOR
                node.set_color_scale(f, f, f, 1.0)

    def _update_lights(self, lights: Sequence[TrafficLight]) -> None:
        if self._static is None:
            return
        states = {light.light_id: light.state for light in lights}
        for light_id in self._static.lamps:
            self._set_lamps(light_id, states.get(light_id, TrafficLightState.OFF))

    # -- rendering ------------------------------------------------------------------------

    def render(self, stamp_ns: int, ego: EgoState, actors: Sequence[ActorState],
               lights: Sequence[TrafficLight] = ()) -> tuple[CameraImage, ...]:
        """One image set per camera, with only the kinds each camera asks for.

        ``actors`` may include the ego (the sensor rig passes it with its height); if
        it does not, the ego is drawn from ``ego`` with the renderer's ego height.
        """
        if self._engine is None:
            raise RuntimeError("CameraRenderer.render after close()")
        everyone = list(actors)
        if not any(a.actor_id == ego.actor_id for a in everyone):
            everyone.append(ActorState(ego.actor_id, ActorKind.VEHICLE, ego.x_m, ego.y_m, ego.yaw_rad,
                                       ego.speed_mps, ego.length_m, ego.width_m, self.ego_height_m))
        self._place_actors(everyone)
        self._update_lights(lights)
        ego_rotation = _yaw(ego.yaw_rad)
        ego_origin = np.array([ego.x_m, ego.y_m, ego.z_m])
        for view in self._views:
            c = view.config
            body = ego_rotation @ c.mount_rotation()
            origin = ego_origin + ego_rotation @ np.array([c.x_m, c.y_m, c.z_m])
            view.pose = (body @ _OPTICAL_FROM_BODY, origin)
            mat = _pose_mat(body @ _PANDA_FROM_BODY, origin)
            view.label_camera.set_mat(mat)
            if view.rgb_camera is not None:
                view.rgb_camera.set_mat(mat)
        self._sky.set_pos(*self._views[0].pose[1])
        self._engine.render_frame()
        return tuple(self._read_view(view, stamp_ns, ego, self._table) for view in self._views)

    def _read_view(self, view: _View, stamp_ns: int, ego: EgoState, table: _PlaneTable) -> CameraImage:
        c = view.config
        h, w = c.height_px, c.width_px
        code = (_read_u32(view.label_texture, h, w) & 0xFFFFFF).astype(np.intp)
        rows = len(table.offset)
        if code.max(initial=0) >= rows:  # never expected: a colour no table row explains
            log.warning("camera %s: label code outside the table; treated as sky", c.name)
            code = np.where(code < rows, code, 0)
        semantic = np.take(table.semantic, code)
        depth = self._depth(view, table, code)
        instance = np.take(table.instance, code) if "instance" in c.kinds else None
        rgb = None
        if view.rgb_texture is not None:
            image = _read_rgb(view.rgb_texture, h, w)
            rotation, origin = view.pose
            rays = None
            if self.preset.wetness > 0 or self.preset.headlights_on:
                r = rotation.astype(np.float32)
                rays = np.stack([r[k, 0] * view.ray_x + r[k, 1] * view.ray_y + r[k, 2] for k in range(3)])
            pixels = PixelGeometry(depth, code == 0, np.take(_GROUND_LUT, semantic), rays, origin)
            apply_weather(image, pixels, self.preset, (ego.x_m, ego.y_m, ego.yaw_rad, ego.length_m),
                          view.effects_rng)
            rgb = view.sensor.finish(image, self.preset.exposure_gain)
        return CameraImage(c.name, int(stamp_ns), c.intrinsics, rgb=rgb,
                           depth_m=depth if "depth" in c.kinds else None,
                           semantic=semantic if "semantic" in c.kinds else None,
                           instance=instance)

    def _depth(self, view: _View, table: _PlaneTable, code: np.ndarray) -> np.ndarray:
        """Distance along the optical axis: each pixel's ray meets its plane."""
        rotation, origin = view.pose  # columns of rotation: optical x, y, z in the map frame
        n = len(table.offset)
        # Only the codes in this image (a few hundred of tens of thousands) go into
        # the optical frame: plane normal, offset, depth range of the plane's box.
        used = np.flatnonzero(np.bincount(code.ravel(), minlength=n))
        if view.columns is None or view.columns.shape[1] != n:
            view.columns = np.zeros((6, n), np.float32)
        rows = _PlaneTable(*(getattr(table, name)[used] for name in _TABLE_FIELDS))
        actor = used >= self._actor_base
        if actor.any():
            _body_to_map(rows, actor, self._actor_pose[(used[actor] - self._actor_base) // MAX_CODES_PER_ACTOR])
        normal = rows.normal
        centre = (rows.box_lo + rows.box_hi) / 2.0  # in each box's frame
        half = (rows.box_hi - rows.box_lo) / 2.0
        yaw = rows.box_yaw
        a = rotation[:, 2]  # the optical axis, then in each box's frame
        z_axis = np.column_stack([np.cos(yaw) * a[0] + np.sin(yaw) * a[1], np.cos(yaw) * a[1] - np.sin(yaw) * a[0],
                                  np.full(len(yaw), a[2])])
        centre_depth = np.einsum("ij,ij->i", centre, z_axis) - origin @ rotation[:, 2]
        reach = np.einsum("ij,ij->i", np.abs(half), np.abs(z_axis))
        columns = view.columns
        columns[:3, used] = (normal @ rotation).T
        columns[3, used] = rows.offset - normal @ origin
        columns[4, used] = np.maximum(centre_depth - reach, NEAR_M)
        columns[5, used] = np.minimum(centre_depth + reach, FAR_M)
        columns[:, 0] = (0.0, 0.0, 1.0, FAR_M, FAR_M, FAR_M)  # sky
        nx, ny, nz, offset, lo, hi = (np.take(column, code) for column in columns)
        denominator = nx * view.ray_x
        denominator += ny * view.ray_y
        denominator += nz
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = offset / denominator
        # Pixels the rasteriser gave to a surface their centre ray misses (its edges
        # are inclusive) stay within that surface's depth range; a ray that meets the
        # plane only behind the camera passed beyond a far edge (the horizon).
        missed = ~(depth > 0)
        depth[missed] = hi[missed]
        np.fmax(depth, lo, out=depth)
        np.fmin(depth, hi, out=depth)
        return depth


def _actor_lod(name: str) -> LODNode:
    """The switch between an actor's near and far model, about its body origin."""
    lod = LODNode(name)
    lod.add_switch(ACTOR_LOD_SWITCH_M, 0.0)
    lod.add_switch(1e6, ACTOR_LOD_SWITCH_M)
    return lod


def _label_overrides(node: NodePath) -> None:
    """Labels are exact colours: nothing below ``node`` may light, texture, scale or
    blend them."""
    node.set_light_off(1000)
    node.set_texture_off(1000)
    node.set_color_scale_off(1000)
    node.set_attrib(ColorBlendAttrib.make(ColorBlendAttrib.M_none), 1000)
    node.set_transparency(TransparencyAttrib.M_none, 1000)


def _light_instances(meshes: Sequence[Mesh], heads: Sequence) -> tuple[list[int | np.ndarray], set[int]]:
    """Instance ids of the world's triangles: a traffic_light triangle inside a light
    head's housing (with 5 cm to spare) gets that light's id, everything else 0.
    Also returns the indices of the heads some triangle fell into."""
    instances: list[int | np.ndarray] = []
    housed: set[int] = set()
    for mesh in meshes:
        if mesh.semantic_id != SEMANTIC_ID["traffic_light"] or not heads:
            instances.append(0)
            continue
        centroid = mesh.vertices[mesh.triangles].mean(axis=1)
        ids = np.zeros(len(centroid), np.int64)
        for i, head in enumerate(heads):
            c, s = math.cos(head.yaw_rad), math.sin(head.yaw_rad)
            dx, dy = centroid[:, 0] - head.x_m, centroid[:, 1] - head.y_m
            inside = ((np.abs(dx * c + dy * s) <= head.depth_m / 2 + 0.05)
                      & (np.abs(-dx * s + dy * c) <= head.width_m / 2 + 0.05)
                      & (np.abs(centroid[:, 2] - head.z_m) <= head.height_m / 2 + 0.05))
            if inside.any():
                ids[inside] = instance_id_of_light(head.light_id)
                housed.add(i)
        instances.append(ids)
    return instances, housed


def _turn(points: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """``points`` (..., 3) turned by ``yaw`` (broadcast against points[..., 0]) about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    x, y = points[..., 0], points[..., 1]
    return np.stack([c * x - s * y, s * x + c * y, points[..., 2]], axis=-1)


def _grown(table: _PlaneTable, rows: int) -> _PlaneTable:
    grown = _PlaneTable.empty(rows)
    old = len(table.offset)
    for name in _TABLE_FIELDS:
        getattr(grown, name)[:old] = getattr(table, name)
    return grown


def _body_to_map(rows: _PlaneTable, which: np.ndarray, pose: np.ndarray) -> None:
    """Move the actor rows ``which`` of ``rows`` (in place) from the actor's body frame
    into the map frame; ``pose`` holds (x, y, yaw) for each of them."""
    c, s = np.cos(pose[:, 2]), np.sin(pose[:, 2])
    tx, ty = pose[:, 0], pose[:, 1]
    n = rows.normal[which]
    normal = np.column_stack([c * n[:, 0] - s * n[:, 1], s * n[:, 0] + c * n[:, 1], n[:, 2]])
    rows.normal[which] = normal
    rows.offset[which] = rows.offset[which] + normal[:, 0] * tx + normal[:, 1] * ty
    # The box turns with the actor: its frame's yaw adds up, and the translation
    # enters in that frame.
    yaw = pose[:, 2] + rows.box_yaw[which]
    rows.box_yaw[which] = yaw
    shift = _turn(np.column_stack([tx, ty, np.zeros_like(tx)]), -yaw)
    rows.box_lo[which] = rows.box_lo[which] + shift
    rows.box_hi[which] = rows.box_hi[which] + shift


def _sky_row() -> _PlaneTable:
    row = _PlaneTable.empty(1)
    row.semantic[0] = SKY_ID
    row.normal[0] = (0.0, 0.0, 1.0)
    return row


_TABLE_FIELDS = ("normal", "offset", "box_lo", "box_hi", "box_yaw", "semantic", "instance")


def _concat_tables(tables: Sequence[_PlaneTable]) -> _PlaneTable:
    return _PlaneTable(*(np.concatenate([getattr(t, name) for t in tables]) for name in _TABLE_FIELDS))


def _read_u32(texture: Texture, h: int, w: int) -> np.ndarray:
    """The buffer's pixels as 0xAARRGGBB words, top row first."""
    data = np.frombuffer(memoryview(texture.get_ram_image()), np.uint32)
    return data.reshape(h, w)[::-1]


def _read_rgb(texture: Texture, h: int, w: int) -> np.ndarray:
    """(3, H, W) float32 RGB planes in [0, 1], top row first."""
    data = np.frombuffer(memoryview(texture.get_ram_image()), np.uint8).reshape(h, w, 4)
    blue, green, red, _ = cv2.split(data)
    planes = np.empty((3, h, w), np.float32)
    for plane, channel in zip(planes, (red, green, blue)):
        np.multiply(channel[::-1], np.float32(1.0 / 255.0), out=plane)
    return planes
