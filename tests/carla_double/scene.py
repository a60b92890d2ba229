"""Geometry of the double's world, in CARLA's own frame, and the ray caster its sensors share.

Everything here is in CARLA's left-handed frame (x forward, y right, z up, angles in
degrees with yaw clockwise seen from above); nothing converts to drivestack's frame, so a
frame bug in the backend cannot be cancelled by the same bug here. Rotations come from the
real ``carla.Transform.get_matrix``.

The world the sensors see is a flat ground plane at z = 0 (tag Roads) under an empty sky
(tag Sky) plus one oriented box per vehicle and walker. Cameras and the semantic LiDAR cast
rays into that one scene, so their outputs agree by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import carla
import numpy as np

GROUND_TAG = int(carla.CityObjectLabel.Roads)
SKY_TAG = int(carla.CityObjectLabel.Sky)
# The Unreal object id of the road mesh, which an instance camera encodes like any other
# object's; the sky has no mesh, so it stays 0.
GROUND_UNIQUE_ID = 1207
GROUND_COLOR = (96, 96, 100)
SKY_COLOR = (135, 190, 235)
# Max depth a CARLA depth image encodes (its normalised 24-bit value times 1000 m).
FAR_PLANE_M = 1000.0


def matrix(transform: carla.Transform) -> np.ndarray:
    """4x4 local-to-world matrix of ``transform`` (CARLA's own)."""
    return np.array(transform.get_matrix(), dtype=np.float64)


def rotation(transform: carla.Transform) -> np.ndarray:
    """3x3 rotation whose columns are the local x, y and z axes in world coordinates."""
    return matrix(transform)[:3, :3]


def to_transform(m: np.ndarray) -> carla.Transform:
    """Inverse of :func:`matrix` (LibCarla's matrix layout: column 0 is the forward vector)."""
    pitch = math.degrees(math.atan2(m[2, 0], math.hypot(m[0, 0], m[1, 0])))
    yaw = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    roll = math.degrees(math.atan2(-m[2, 1], m[2, 2]))
    return carla.Transform(carla.Location(x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])),
                           carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))


def compose(parent: carla.Transform, child: carla.Transform) -> carla.Transform:
    """World transform of ``child`` given relative to ``parent``."""
    return to_transform(matrix(parent) @ matrix(child))


def copy_transform(t: carla.Transform) -> carla.Transform:
    return carla.Transform(copy_location(t.location),
                           carla.Rotation(pitch=t.rotation.pitch, yaw=t.rotation.yaw, roll=t.rotation.roll))


def copy_location(loc: carla.Location) -> carla.Location:
    return carla.Location(x=loc.x, y=loc.y, z=loc.z)


def copy_box(box: carla.BoundingBox) -> carla.BoundingBox:
    out = carla.BoundingBox(copy_location(box.location), carla.Vector3D(box.extent.x, box.extent.y, box.extent.z))
    out.rotation = carla.Rotation(pitch=box.rotation.pitch, yaw=box.rotation.yaw, roll=box.rotation.roll)
    return out


def xyz(v: carla.Location | carla.Vector3D) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def vector(v: np.ndarray) -> carla.Vector3D:
    return carla.Vector3D(float(v[0]), float(v[1]), float(v[2]))


@dataclass(frozen=True)
class Box:
    """An actor's bounding box in the world, with what sensors report when they hit it."""

    actor_id: int
    tag: int
    unique_id: int
    center: np.ndarray  # (3,) world
    rotation: np.ndarray  # (3, 3) box -> world
    extent: np.ndarray  # (3,) half sizes
    color: tuple[int, int, int]

    @classmethod
    def of(cls, actor_id: int, tag: int, unique_id: int, transform: carla.Transform, box: carla.BoundingBox,
           color: tuple[int, int, int]) -> Box:
        m = matrix(transform)
        center = m[:3, :3] @ xyz(box.location) + m[:3, 3]
        return cls(actor_id, tag, unique_id, center, m[:3, :3], xyz(box.extent), color)


def boxes_overlap(a: Box, b: Box) -> bool:
    """Do two upright boxes intersect? (separating axes in the ground plane, then heights)"""
    if abs(a.center[2] - b.center[2]) >= a.extent[2] + b.extent[2]:
        return False
    delta = (b.center - a.center)[:2]
    axes = [box.rotation[:2, i] for box in (a, b) for i in (0, 1)]
    for axis in axes:
        norm = np.linalg.norm(axis)
        if norm < 1e-9:
            continue
        axis = axis / norm
        reach = sum(box.extent[i] * abs(float(axis @ box.rotation[:2, i])) for box in (a, b) for i in (0, 1))
        if abs(float(axis @ delta)) >= reach:
            return False
    return True


@dataclass(frozen=True)
class RayHits:
    """Per ray: parameter t of the first hit (inf: sky) and the surface hit.

    ``surface`` indexes ``boxes``, then the ground (``len(boxes)``) and the sky
    (``len(boxes) + 1``); ``face`` is 2 * axis + (1 if the normal points along +axis) in the
    box's frame. Tags, ids, normals and colours derive from those.
    """

    t: np.ndarray
    surface: np.ndarray
    face: np.ndarray
    boxes: tuple[Box, ...]

    def _table(self, values: list, ground: object, sky: object, dtype: type) -> np.ndarray:
        return np.array(values + [ground, sky], dtype=dtype)[self.surface]

    @property
    def tag(self) -> np.ndarray:
        return self._table([b.tag for b in self.boxes], GROUND_TAG, SKY_TAG, np.uint8)

    @property
    def actor_id(self) -> np.ndarray:
        return self._table([b.actor_id for b in self.boxes], 0, 0, np.uint32)

    @property
    def unique_id(self) -> np.ndarray:
        return self._table([b.unique_id for b in self.boxes], GROUND_UNIQUE_ID, 0, np.uint32)

    @property
    def color(self) -> np.ndarray:
        table = np.array([b.color for b in self.boxes] + [GROUND_COLOR, SKY_COLOR], dtype=np.uint8).reshape(-1, 3)
        return table[self.surface]

    @property
    def normal(self) -> np.ndarray:
        """World surface normals, 0 for the sky."""
        per_face = np.zeros((len(self.boxes) + 2, 6, 3))
        for k, box in enumerate(self.boxes):
            for axis in range(3):
                per_face[k, 2 * axis] = -box.rotation[:, axis]
                per_face[k, 2 * axis + 1] = box.rotation[:, axis]
        per_face[-2, :] = (0.0, 0.0, 1.0)
        return per_face[self.surface, self.face]


def cast_rays(origin: np.ndarray, directions: np.ndarray, boxes: Sequence[Box], max_t: float) -> RayHits:
    """First hit of each ray ``origin + t * directions[i]`` with 0 < t <= max_t.

    Boxes that contain the origin are seen through (a camera inside its car sees out).
    """
    n = len(directions)
    boxes = tuple(boxes)
    surface = np.full(n, len(boxes) + 1, dtype=np.int32)  # the sky
    face = np.zeros(n, dtype=np.int8)
    t = np.full(n, np.inf)
    if origin[2] > 0.0:
        dz = directions[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_ground = np.where(dz < 0.0, -origin[2] / dz, np.inf)
        ground = np.isfinite(t_ground) & (t_ground <= max_t)
        t = np.where(ground, t_ground, t)
        surface[ground] = len(boxes)
    inv_norms = 1.0 / np.sqrt(np.einsum("ij,ij->i", directions, directions))
    for k, box in enumerate(boxes):
        candidates = _rays_near(origin, directions, inv_norms, box, max_t)
        if candidates is None or not len(candidates):
            continue
        local_origin = box.rotation.T @ (origin - box.center)
        local_dirs = directions[candidates] @ box.rotation
        # Exact zeros would give 0 * inf = nan in the slab test; a tiny value keeps the sign logic.
        local_dirs = np.where(np.abs(local_dirs) < 1e-12, 1e-12, local_dirs)
        t1 = (-box.extent - local_origin) / local_dirs
        t2 = (box.extent - local_origin) / local_dirs
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near = np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2])
        t_far = np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2])
        closer = (t_near <= t_far) & (t_near > 1e-6) & (t_near < t[candidates]) & (t_near <= max_t)
        if not closer.any():
            continue
        sub = np.flatnonzero(closer)
        idx = candidates[sub]
        axis = near[sub].argmax(axis=1)
        # The entry face faces the ray: its outward normal is along -sign(direction).
        positive = local_dirs[sub, axis] < 0.0
        t[idx] = t_near[sub]
        surface[idx] = k
        face[idx] = 2 * axis + positive
    return RayHits(t, surface, face, boxes)


def _rays_near(origin: np.ndarray, directions: np.ndarray, inv_norms: np.ndarray, box: Box, max_t: float
               ) -> np.ndarray | None:
    """Indices of the rays that pass within the box's bounding sphere (a cheap cone test)."""
    to_center = box.center - origin
    distance = float(np.linalg.norm(to_center))
    radius = float(np.linalg.norm(box.extent))
    if distance <= radius:
        return np.arange(len(directions))
    if distance - radius > max_t:
        return None
    cos_limit = math.sqrt(1.0 - (radius / distance) ** 2)
    return np.flatnonzero((directions @ (to_center / distance)) * inv_norms >= cos_limit - 1e-9)
