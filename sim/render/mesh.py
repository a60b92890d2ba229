"""Triangle meshes as plain numpy arrays: what the world builder and actor models
produce and the renderer uploads. Coordinates are metres in the map frame (REP 103,
z up) for static geometry and in the actor's body frame (x forward, origin at the box
centre on the ground) for actor models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Mesh:
    """Triangles of one material and one semantic class.

    ``uv`` are texture coordinates (already scaled: 1.0 = one texture repeat);
    ``colour`` is a per-vertex RGBA in [0, 1] that multiplies the texture (or is the
    colour, untextured). Triangles wind counter-clockwise seen from outside.
    ``emissive`` meshes ignore lighting (lamps, lit windows at night).
    """

    vertices: np.ndarray  # (N, 3) float32, metres
    normals: np.ndarray  # (N, 3) float32, unit length
    uv: np.ndarray  # (N, 2) float32
    colour: np.ndarray  # (N, 4) float32 in [0, 1]
    triangles: np.ndarray  # (M, 3) int32 indices into vertices
    semantic_id: int  # a class id of drivestack.schema.SEMANTIC_CLASSES
    texture: str | None = None  # a name of sim.render.textures, None = untextured
    emissive: bool = False

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        n = len(self.vertices)
        self.normals = np.ascontiguousarray(self.normals, dtype=np.float32).reshape(n, 3)
        self.uv = np.ascontiguousarray(self.uv, dtype=np.float32).reshape(n, 2)
        self.colour = np.ascontiguousarray(self.colour, dtype=np.float32).reshape(n, 4)
        self.triangles = np.ascontiguousarray(self.triangles, dtype=np.int32).reshape(-1, 3)
        if len(self.triangles) and (self.triangles.min() < 0 or self.triangles.max() >= n):
            raise ValueError("Mesh.triangles index outside the vertex array")
        if not np.isfinite(self.vertices).all():
            raise ValueError("Mesh.vertices has a non-finite value")

    @property
    def key(self) -> tuple[int, str | None, bool]:
        """Meshes with the same key can be merged into one draw call."""
        return self.semantic_id, self.texture, self.emissive


def merge(meshes: Sequence[Mesh]) -> list[Mesh]:
    """One mesh per (semantic class, texture, emissive): fewer, larger draw calls."""
    groups: dict[tuple[int, str | None, bool], list[Mesh]] = {}
    for mesh in meshes:
        if len(mesh.triangles):
            groups.setdefault(mesh.key, []).append(mesh)
    merged = []
    for (semantic_id, texture, emissive), parts in groups.items():
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        merged.append(Mesh(
            np.concatenate([p.vertices for p in parts]), np.concatenate([p.normals for p in parts]),
            np.concatenate([p.uv for p in parts]), np.concatenate([p.colour for p in parts]),
            np.concatenate([p.triangles + o for p, o in zip(parts, offsets)]),
            semantic_id, texture, emissive))
    return merged
