"""Low-poly actor models as plain numpy meshes: cars of several body styles and
pedestrians, in the actor's body frame (REP 103: x forward, y left, z up, origin at
the box centre on the ground).

Every model fills its ``ActorState`` box exactly: its extent is length x width x
height and some part touches each of the six faces, so the 3D box and the rendered
silhouette agree (wheels touch the ground and the body sides, bumper lamps the front
and rear, the roof the top). Shapes stay boxy on purpose: a detector trained on these
images is scored against box labels.

The look of an actor (body style, paint, clothing) is a pure function of
``(seed, actor_id)``, so the same scenario renders the same traffic every time, and
:func:`actor_mesh` is what ground truth uses for exact silhouettes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from drivestack.schema import SEMANTIC_ID, ActorKind, ActorState
from sim.render.mesh import Mesh

VEHICLE_SHAPES = ("sedan", "hatchback", "suv", "van", "pickup")  # also "pedestrian" and "static"

# Paint colours (linear-ish RGB in [0, 1]): common car colours, greys weighted up.
PAINT_RGB = (
    (0.85, 0.85, 0.86), (0.08, 0.08, 0.09), (0.45, 0.47, 0.50), (0.66, 0.67, 0.70),
    (0.55, 0.07, 0.07), (0.08, 0.17, 0.45), (0.12, 0.30, 0.16), (0.80, 0.62, 0.12),
    (0.35, 0.22, 0.12), (0.90, 0.40, 0.10), (0.20, 0.45, 0.65), (0.95, 0.95, 0.92),
)
SHIRT_RGB = ((0.75, 0.1, 0.1), (0.1, 0.25, 0.6), (0.9, 0.9, 0.88), (0.15, 0.15, 0.16),
             (0.2, 0.5, 0.25), (0.85, 0.7, 0.2), (0.5, 0.3, 0.55), (0.9, 0.5, 0.6))
TROUSERS_RGB = ((0.12, 0.14, 0.25), (0.2, 0.2, 0.21), (0.45, 0.38, 0.28), (0.05, 0.05, 0.05),
                (0.35, 0.4, 0.45))
SKIN_RGB = ((0.94, 0.78, 0.66), (0.80, 0.60, 0.45), (0.55, 0.38, 0.26), (0.36, 0.24, 0.16))
HAIR_RGB = ((0.08, 0.06, 0.05), (0.35, 0.22, 0.1), (0.75, 0.62, 0.35), (0.5, 0.5, 0.5))

STATIC_RGB = ((0.85, 0.45, 0.10), (0.55, 0.55, 0.52), (0.80, 0.78, 0.20))  # barriers, crates
GLASS_RGB = (0.22, 0.27, 0.32)  # tinted glass with a little sky in it
TYRE_RGB = (0.05, 0.05, 0.05)
RIM_RGB = (0.55, 0.56, 0.58)
TRIM_RGB = (0.10, 0.10, 0.11)
HEADLAMP_RGB = (0.95, 0.95, 0.90)
TAILLAMP_RGB = (0.85, 0.05, 0.05)

# A lamp sits this far proud of the body face behind it, so lamp and body never share
# a depth (no z-fighting) while the lamp itself stays on the box face.
_LAMP_PROUD_M = 0.006
_WHEEL_SEGMENTS = 10


@dataclass(frozen=True)
class ActorStyle:
    """How one actor looks: a body style and colour indices into the tables above."""

    shape: str  # one of VEHICLE_SHAPES, "pedestrian" or "static"
    colour_index: int
    extra_index: int = 0  # pedestrians: trousers + skin + hair indices packed; otherwise 0


def actor_style(kind: ActorKind, actor_id: int, seed: int) -> ActorStyle:
    """The look of ``actor_id`` in an episode seeded ``seed``: deterministic."""
    rng = np.random.default_rng([abs(int(seed)), abs(int(actor_id)), 0x5EED])
    if kind == ActorKind.STATIC:
        return ActorStyle("static", int(rng.integers(len(STATIC_RGB))))
    if kind == ActorKind.PEDESTRIAN:
        shirt, trousers, skin, hair = (int(rng.integers(len(t))) for t in (SHIRT_RGB, TROUSERS_RGB, SKIN_RGB, HAIR_RGB))
        return ActorStyle("pedestrian", shirt, trousers + len(TROUSERS_RGB) * (skin + len(SKIN_RGB) * hair))
    return ActorStyle(VEHICLE_SHAPES[int(rng.integers(len(VEHICLE_SHAPES)))], int(rng.integers(len(PAINT_RGB))))


def actor_mesh(actor: ActorState, seed: int) -> list[Mesh]:
    """The model of ``actor`` in its body frame, one mesh per material.

    Cached per (style, dimensions): the same list object comes back for equal inputs,
    so callers must not modify it.
    """
    style = actor_style(actor.kind, actor.actor_id, seed)
    dims = (round(float(actor.length_m), 4), round(float(actor.width_m), 4), round(float(actor.height_m), 4))
    return model_mesh(style, *dims)


@functools.lru_cache(maxsize=512)
def model_mesh(style: ActorStyle, length_m: float, width_m: float, height_m: float) -> list[Mesh]:
    """The meshes of a model of ``style`` filling a length x width x height box."""
    if not (length_m > 0 and width_m > 0 and height_m > 0):
        raise ValueError(f"actor box {length_m} x {width_m} x {height_m} m must have positive sides")
    if style.shape == "pedestrian":
        return _pedestrian(style, length_m, width_m, height_m)
    if style.shape == "static":
        return _static_obstacle(style, length_m, width_m, height_m)
    if style.shape not in VEHICLE_SHAPES:
        raise ValueError(f"unknown actor shape {style.shape!r} (known: {', '.join(VEHICLE_SHAPES)}, pedestrian, "
                         f"static)")
    return _vehicle(style, length_m, width_m, height_m)


def actor_far_mesh(actor: ActorState, seed: int) -> list[Mesh]:
    """The simplified model renderers draw for ``actor`` when it is far away (a few
    pixels tall): same box, semantic class and look, a tenth of the vertices. Cached
    like :func:`actor_mesh`; the same list as it where there is nothing to simplify."""
    style = actor_style(actor.kind, actor.actor_id, seed)
    dims = (round(float(actor.length_m), 4), round(float(actor.width_m), 4), round(float(actor.height_m), 4))
    return far_model_mesh(style, *dims)


@functools.lru_cache(maxsize=512)
def far_model_mesh(style: ActorStyle, length_m: float, width_m: float, height_m: float) -> list[Mesh]:
    """The far model of ``style``: vehicles as body, cabin, one dark block for the
    wheels and the lamps; pedestrians as legs, torso and head."""
    if style.shape in VEHICLE_SHAPES:
        return _vehicle(style, length_m, width_m, height_m, far=True)
    if style.shape == "pedestrian":
        return _pedestrian(style, length_m, width_m, height_m, far=True)
    return model_mesh(style, length_m, width_m, height_m)


# -- a tiny mesh builder ------------------------------------------------------------------


class _Builder:
    """Accumulates flat-shaded faces of one material."""

    def __init__(self, rgb: Sequence[float]) -> None:
        self.rgb = tuple(float(c) for c in rgb)
        self.vertices: list[np.ndarray] = []
        self.normals: list[np.ndarray] = []
        self.triangles: list[np.ndarray] = []
        self.count = 0

    def polygon(self, points: np.ndarray) -> None:
        """A planar convex polygon, counter-clockwise seen from outside (fan triangulated)."""
        points = np.asarray(points, dtype=np.float64)
        normal = np.zeros(3)
        for i in range(1, len(points) - 1):  # Newell-like: robust for any convex polygon
            normal += np.cross(points[i] - points[0], points[i + 1] - points[0])
        length = np.linalg.norm(normal)
        if length < 1e-12:
            return
        n = len(points)
        self.vertices.append(points)
        self.normals.append(np.repeat((normal / length)[None], n, axis=0))
        fan = np.stack([np.zeros(n - 2, int), np.arange(1, n - 1), np.arange(2, n)], axis=1)
        self.triangles.append(fan + self.count)
        self.count += n

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> None:
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        c = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                      [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]])
        for face in ((0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (2, 3, 7, 6), (1, 2, 6, 5), (3, 0, 4, 7)):
            self.polygon(c[list(face)])

    def tapered_prism(self, profile_xz: np.ndarray, half_width: Callable[[float], float],
                      faces: Sequence[_Builder] | None = None,
                      sides: _Builder | None = None) -> None:
        """Extrude a convex side profile (x, z), clockwise in the x-z plane (that is
        counter-clockwise seen from +y), across the car; each vertex sits at
        y = +-half_width(z), so a cabin can narrow to the roof and every face stays
        planar. ``faces[i]`` takes the strip from profile vertex i to i + 1 (default:
        this builder), ``sides`` the two side polygons."""
        profile = np.asarray(profile_xz, dtype=np.float64)
        edges = np.roll(profile, -1, axis=0) - profile
        turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
        if (turns > 1e-12).any():
            raise ValueError("tapered_prism: the profile must be convex and clockwise in x-z")
        hw = np.array([half_width(z) for z in profile[:, 1]])
        left = np.column_stack([profile[:, 0], hw, profile[:, 1]])
        right = np.column_stack([profile[:, 0], -hw, profile[:, 1]])
        (sides or self).polygon(left)
        (sides or self).polygon(right[::-1])
        n = len(profile)
        for i in range(n):
            j = (i + 1) % n
            builder = faces[i] if faces is not None else self
            builder.polygon(np.array([left[j], left[i], right[i], right[j]]))

    def cylinder_y(self, x: float, z: float, radius: float, y0: float, y1: float,
                   hub: _Builder | None = None, hub_side: float = 1.0) -> None:
        """A wheel: axis along y from y0 to y1 (y0 < y1). With ``hub``, a rim disc of
        0.6 radius sits on the cap at the ``hub_side`` end (+1: y1, -1: y0), the tyre's
        cap just inside it so the two never share a depth."""
        angles = np.linspace(0.0, 2.0 * math.pi, _WHEEL_SEGMENTS, endpoint=False) + math.pi / _WHEEL_SEGMENTS
        ring = np.column_stack([x + radius * np.cos(angles), z + radius * np.sin(angles)])
        inset = 0.004 if hub is not None else 0.0
        y_lo, y_hi = (y0, y1 - inset) if hub_side > 0 else (y0 + inset, y1)
        outer = np.column_stack([ring[:, 0], np.full(len(ring), y_hi), ring[:, 1]])
        inner = np.column_stack([ring[:, 0], np.full(len(ring), y_lo), ring[:, 1]])
        self.polygon(outer[::-1])
        self.polygon(inner)
        if hub is not None:
            rim = np.column_stack([x + 0.6 * radius * np.cos(angles), z + 0.6 * radius * np.sin(angles)])
            y_face = y1 if hub_side > 0 else y0
            disc = np.column_stack([rim[:, 0], np.full(len(rim), y_face), rim[:, 1]])
            hub.polygon(disc[::-1] if hub_side > 0 else disc)
        for i in range(len(ring)):
            j = (i + 1) % len(ring)
            self.polygon(np.array([inner[i], outer[i], outer[j], inner[j]]))

    def mesh(self, semantic_id: int, emissive: bool = False) -> Mesh | None:
        if not self.vertices:
            return None
        vertices = np.concatenate(self.vertices)
        colour = np.tile((*self.rgb, 1.0), (len(vertices), 1))
        return Mesh(vertices, np.concatenate(self.normals), np.zeros((len(vertices), 2)), colour,
                    np.concatenate(self.triangles), semantic_id, None, emissive)


def _meshes(builders: Sequence[tuple[_Builder, bool]], semantic_id: int) -> list[Mesh]:
    meshes = [b.mesh(semantic_id, emissive) for b, emissive in builders]
    return [m for m in meshes if m is not None]


# -- vehicles -------------------------------------------------------------------------------

# Side profiles as fractions: (cabin base rear, cabin base front, roof rear, roof front)
# of the length from the rear, beltline and bonnet heights of the height.
_PROFILES = {
    "sedan": dict(cabin=(0.17, 0.70, 0.27, 0.55), belt=0.55, bonnet=0.52, trunk=0.50, clearance=0.12),
    "hatchback": dict(cabin=(0.02, 0.68, 0.06, 0.50), belt=0.55, bonnet=0.50, trunk=0.55, clearance=0.12),
    "suv": dict(cabin=(0.01, 0.70, 0.03, 0.55), belt=0.58, bonnet=0.56, trunk=0.58, clearance=0.16),
    "van": dict(cabin=(0.0, 0.82, 0.0, 0.66), belt=0.50, bonnet=0.48, trunk=0.50, clearance=0.13),
    "pickup": dict(cabin=(0.42, 0.72, 0.45, 0.62), belt=0.55, bonnet=0.54, trunk=0.55, clearance=0.16),
}


def _vehicle(style: ActorStyle, length: float, width: float, height: float, far: bool = False) -> list[Mesh]:
    p = _PROFILES[style.shape]
    paint = _Builder(PAINT_RGB[style.colour_index % len(PAINT_RGB)])
    glass, trim = _Builder(GLASS_RGB), _Builder(TRIM_RGB)
    tyre, rim = _Builder(TYRE_RGB), _Builder(RIM_RGB)
    head, tail = _Builder(HEADLAMP_RGB), _Builder(TAILLAMP_RGB)
    half_l, half_w = length / 2.0, width / 2.0
    radius = min(0.34, 0.23 * height, 0.17 * length)
    clearance = min(p["clearance"] * height + 0.12, radius * 1.2)
    belt, bonnet, trunk = p["belt"] * height, p["bonnet"] * height, p["trunk"] * height
    # Body sides sit a little inside the wheels, whose outer faces touch the box sides.
    body_hw = half_w - 0.03
    bumper_x = half_l - _LAMP_PROUD_M
    # The cabin stays inside the bumpers so both profiles remain convex.
    x_at = lambda fraction: min(max(-half_l + fraction * length, -bumper_x + 0.07), bumper_x - 0.13)  # noqa: E731
    rear_base, front_base, rear_roof, front_roof = (x_at(f) for f in p["cabin"])
    if far:  # no chamfers: a few centimetres are a fraction of a pixel there
        lower = _dedupe_profile(np.array([(-bumper_x, clearance), (-bumper_x, trunk), (rear_base, belt),
                                          (front_base, belt), (bumper_x, bonnet), (bumper_x, clearance)]))
    else:
        lower = _dedupe_profile(np.array([
            (-bumper_x, clearance), (-bumper_x, trunk - 0.05), (-bumper_x + 0.06, trunk), (rear_base, belt),
            (front_base, belt), (bumper_x - 0.12, bonnet), (bumper_x, bonnet - 0.06), (bumper_x, clearance),
        ]))
    paint.tapered_prism(lower, lambda z: body_hw)

    # Cabin (greenhouse): glass all round, painted roof, narrower at the roof.
    cabin = np.array([(rear_base, belt), (rear_roof, height), (front_roof, height), (front_base, belt)])
    roof_hw = body_hw - 0.10 * width
    taper = lambda z: body_hw - 0.02 + (roof_hw - body_hw + 0.02) * (z - belt) / (height - belt)  # noqa: E731
    paint.tapered_prism(cabin, taper, faces=[glass, paint, glass, trim], sides=glass)
    if style.shape == "pickup" and not far:  # the bed's side rails and tailgate
        wall_top = trunk + 0.16
        paint.box((-bumper_x, body_hw - 0.05, trunk), (rear_base - 0.04, body_hw, wall_top))
        paint.box((-bumper_x, -body_hw, trunk), (rear_base - 0.04, -body_hw + 0.05, wall_top))
        paint.box((-bumper_x, -body_hw + 0.05, trunk), (-bumper_x + 0.05, body_hw - 0.05, wall_top))

    # Wheels: outer faces on the box sides, tyres on the ground. Short overhangs keep
    # the ground contact near the box's bottom corners, so the projected 3D box and
    # the silhouette agree closely even for a car just ahead (seen from above, the
    # box's rear bottom edge is the lowest thing in the image).
    overhang = min(radius + 0.2, 0.3 * length)
    wheel_x = (half_l - overhang, -half_l + overhang)
    if far:  # the wheels and the shade between them: one block's four sides
        x0, x1 = wheel_x[1] - radius, wheel_x[0] + radius
        c = np.array([[x0, -half_w, 0.0], [x1, -half_w, 0.0], [x1, half_w, 0.0], [x0, half_w, 0.0],
                      [x0, -half_w, clearance], [x1, -half_w, clearance], [x1, half_w, clearance],
                      [x0, half_w, clearance]])
        for face in ((0, 1, 5, 4), (2, 3, 7, 6), (1, 2, 6, 5), (3, 0, 4, 7)):
            tyre.polygon(c[list(face)])
    for x in wheel_x if not far else ():
        for side in (1.0, -1.0):
            y_in, y_out = sorted((side * (half_w - 0.22), side * half_w))
            # A vertex of the tyre polygon sits exactly at the bottom: it touches z = 0;
            # the rim disc sits on the box side.
            tyre.cylinder_y(x, radius, radius, y_in, y_out, hub=rim, hub_side=side)

    # Lamps on the front and rear faces (the bumper faces sit _LAMP_PROUD_M inside).
    lamp_z0, lamp_z1 = bonnet - 0.06 - 0.16, bonnet - 0.08
    for side in (1.0, -1.0):
        y_a, y_b = side * (half_w - 0.32), side * (half_w - 0.10)
        y0, y1 = min(y_a, y_b), max(y_a, y_b)
        head.polygon(np.array([(half_l, y0, lamp_z0), (half_l, y1, lamp_z0), (half_l, y1, lamp_z1),
                               (half_l, y0, lamp_z1)]))
        tz0, tz1 = trunk - 0.05 - 0.16, trunk - 0.07
        tail.polygon(np.array([(-half_l, y1, tz0), (-half_l, y0, tz0), (-half_l, y0, tz1),
                               (-half_l, y1, tz1)]))
    bumpers = ((bumper_x - 0.02, bumper_x + 0.003), (-bumper_x - 0.003, -bumper_x + 0.02))
    for x0, x1 in bumpers if not far else ():
        trim.box((x0, -body_hw + 0.05, clearance), (x1, body_hw - 0.05, clearance + 0.12))
    car = SEMANTIC_ID["car"]
    return _meshes([(paint, False), (glass, False), (trim, False), (tyre, False), (rim, False),
                    (head, True), (tail, True)], car)


def _dedupe_profile(profile: np.ndarray) -> np.ndarray:
    """Drop repeated consecutive vertices (a profile whose cabin starts at the bumper)."""
    keep = [0]
    for i in range(1, len(profile)):
        if np.hypot(*(profile[i] - profile[keep[-1]])) > 1e-6:
            keep.append(i)
    if len(keep) > 1 and np.hypot(*(profile[keep[-1]] - profile[keep[0]])) < 1e-6:
        keep.pop()
    return profile[keep]


# -- pedestrians ----------------------------------------------------------------------------


def _pedestrian(style: ActorStyle, length: float, width: float, height: float, far: bool = False) -> list[Mesh]:
    trousers_i = style.extra_index % len(TROUSERS_RGB)
    skin_i = (style.extra_index // len(TROUSERS_RGB)) % len(SKIN_RGB)
    hair_i = (style.extra_index // (len(TROUSERS_RGB) * len(SKIN_RGB))) % len(HAIR_RGB)
    shirt, legs = _Builder(SHIRT_RGB[style.colour_index % len(SHIRT_RGB)]), _Builder(TROUSERS_RGB[trousers_i])
    skin, hair, shoes = _Builder(SKIN_RGB[skin_i]), _Builder(HAIR_RGB[hair_i]), _Builder((0.07, 0.06, 0.06))
    hl, hw, h = length / 2.0, width / 2.0, height
    hip, shoulder, neck, crown = 0.48 * h, 0.80 * h, 0.84 * h, h
    if far:  # legs (stride included), torso with arms, head
        legs.box((-hl, -0.42 * hw, 0.0), (hl, 0.42 * hw, hip))
        shirt.box((-0.38 * hl, -hw, hip - 0.05), (0.38 * hl, hw, shoulder))
        skin.box((-0.32 * hl, -0.34 * hw, shoulder), (0.32 * hl, 0.34 * hw, crown))
        return _meshes([(shirt, False), (legs, False), (skin, False)], SEMANTIC_ID["pedestrian"])
    # Mid-stride: front foot touches the front face, back foot the back face.
    shoes.box((0.35 * hl, -0.42 * hw, 0.0), (hl, -0.05 * hw, 0.07))
    shoes.box((-hl, 0.05 * hw, 0.0), (-0.35 * hl, 0.42 * hw, 0.07))
    legs.box((0.10 * hl, -0.40 * hw, 0.07), (0.55 * hl, -0.05 * hw, hip))
    legs.box((-0.55 * hl, 0.05 * hw, 0.07), (-0.10 * hl, 0.40 * hw, hip))
    shirt.box((-0.38 * hl, -0.62 * hw, hip - 0.05), (0.38 * hl, 0.62 * hw, shoulder))
    # Arms hang beside the torso; their outer faces touch the box sides.
    shirt.box((-0.35 * hl, 0.64 * hw, 0.70 * h), (0.20 * hl, hw, shoulder))
    shirt.box((-0.20 * hl, -hw, 0.70 * h), (0.35 * hl, -0.64 * hw, shoulder))
    skin.box((-0.30 * hl, 0.66 * hw, 0.50 * h), (0.10 * hl, 0.98 * hw, 0.70 * h))
    skin.box((-0.10 * hl, -0.98 * hw, 0.50 * h), (0.30 * hl, -0.66 * hw, 0.70 * h))
    skin.box((-0.12 * hl, -0.15 * hw, shoulder), (0.12 * hl, 0.15 * hw, neck))
    skin.box((-0.30 * hl, -0.32 * hw, neck), (0.32 * hl, 0.32 * hw, crown - 0.045))
    hair.box((-0.34 * hl, -0.34 * hw, crown - 0.06), (0.26 * hl, 0.34 * hw, crown))
    return _meshes([(shirt, False), (legs, False), (skin, False), (hair, False), (shoes, False)],
                   SEMANTIC_ID["pedestrian"])


def _static_obstacle(style: ActorStyle, length: float, width: float, height: float) -> list[Mesh]:
    """A static actor (a road block, a crate): a box with a darker band, semantic static."""
    body, band = _Builder(STATIC_RGB[style.colour_index % len(STATIC_RGB)]), _Builder((0.12, 0.12, 0.12))
    hl, hw = length / 2.0, width / 2.0
    body.box((-hl, -hw, 0.0), (hl, hw, 0.45 * height))
    band.box((-hl, -hw, 0.45 * height), (hl, hw, 0.6 * height))
    body.box((-hl, -hw, 0.6 * height), (hl, hw, height))
    return _meshes([(body, False), (band, False)], SEMANTIC_ID["static"])


def model_extent(meshes: Sequence[Mesh]) -> tuple[np.ndarray, np.ndarray]:
    """The (min, max) corners of a model's vertices."""
    vertices = np.concatenate([m.vertices for m in meshes])
    return vertices.min(axis=0), vertices.max(axis=0)


# -- traffic-light heads --------------------------------------------------------------------

HOUSING_RGB = (0.10, 0.10, 0.09)
# Lamp colours top to bottom, as TrafficLightState indexes them: red, yellow, green.
LAMP_RGB = ((1.0, 0.10, 0.06), (1.0, 0.72, 0.05), (0.15, 1.0, 0.45))
_LAMP_SEGMENTS = 8


def light_head_mesh(head) -> Mesh:
    """The lamp housing of a traffic light as the world places it (``LightHead``-like:
    centre ``x_m, y_m, z_m``, ``yaw_rad`` the way the lamps face, ``width_m`` across,
    ``height_m``, ``depth_m`` along the facing), map frame, semantic traffic_light."""
    half = np.array([head.depth_m, head.width_m, head.height_m]) / 2.0
    box = _Builder(HOUSING_RGB)
    box.box(-half, half)
    mesh = box.mesh(SEMANTIC_ID["traffic_light"])
    rotation = _yaw_matrix(head.yaw_rad)
    vertices = mesh.vertices @ rotation.T + (head.x_m, head.y_m, head.z_m)
    return Mesh(vertices, mesh.normals @ rotation.T, mesh.uv, mesh.colour, mesh.triangles, mesh.semantic_id)


def light_lamp_meshes(head) -> list[Mesh]:
    """The three lamp discs (red top, yellow, green bottom) on the housing's front face,
    map frame, one mesh per colour in TrafficLightState order, full-bright colours (the
    renderer dims the unlit ones)."""
    radius = min(head.width_m * 0.36, head.height_m / 6.0 * 0.8)
    angles = np.linspace(0.0, 2.0 * math.pi, _LAMP_SEGMENTS, endpoint=False)
    rotation = _yaw_matrix(head.yaw_rad)
    front = head.depth_m / 2.0 + 0.005  # proud of the face: no depth fight with it
    meshes = []
    for i, rgb in enumerate(LAMP_RGB):
        z = (1 - i) * head.height_m / 3.0
        # Counter-clockwise seen from the front (+x of the head).
        disc = np.column_stack([np.full(len(angles), front), radius * np.cos(angles), z + radius * np.sin(angles)])
        builder = _Builder(rgb)
        builder.polygon(disc)
        mesh = builder.mesh(SEMANTIC_ID["traffic_light"], emissive=True)
        vertices = mesh.vertices @ rotation.T + (head.x_m, head.y_m, head.z_m)
        meshes.append(Mesh(vertices, mesh.normals @ rotation.T, mesh.uv, mesh.colour, mesh.triangles,
                           mesh.semantic_id, None, True))
    return meshes


def _yaw_matrix(yaw_rad: float) -> np.ndarray:
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
