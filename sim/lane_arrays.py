"""The lane graph packed into flat numpy arrays for vectorised lane following.

Every lane is resampled at a uniform spacing (close to 1 m) so that the sample index
of arc length ``s`` on lane ``k`` is ``offset[k] + s / spacing[k]``: looking up the
reference pose of many vehicles on many lanes is one gather, no Python loop.
"""

from __future__ import annotations

import numpy as np

from sim.road_map import RoadMap

# Lateral acceleration a turn may ask for (CARLA's own agents keep ~2 m/s^2 in towns).
COMFORT_LATERAL_ACCEL_MPS2 = 2.0


class LaneArrays:
    def __init__(self, road_map: RoadMap) -> None:
        lanes = road_map.lanes
        counts, spacings, pts, yaws = [], [], [], []
        for seg in lanes:
            n = max(int(round(seg.length_m)), 1) + 1
            s = np.linspace(0.0, seg.length_m, n)
            xy = np.column_stack([np.interp(s, seg.s_m, seg.points_xy[:, 0]),
                                  np.interp(s, seg.s_m, seg.points_xy[:, 1])])
            yaw = np.interp(s, seg.s_m, np.unwrap(seg.yaw_rad))
            counts.append(n)
            spacings.append(seg.length_m / (n - 1) if n > 1 else 1.0)
            pts.append(xy)
            yaws.append(yaw)
        self.count = np.array(counts)
        self.offset = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        self.spacing_m = np.array(spacings)
        self.length_m = np.array([seg.length_m for seg in lanes])
        self.points_xy = np.concatenate(pts)
        self.yaw_rad = np.concatenate(yaws)
        self.curvature_per_m = np.concatenate([_curvature(y, d) for y, d in zip(yaws, spacings)])
        self.speed_limit_mps = np.array([seg.speed_limit_mps for seg in lanes])
        self.width_m = np.array([seg.width_m for seg in lanes])
        self.in_junction = np.array([seg.in_junction for seg in lanes])
        max_curv = np.array([np.abs(_curvature(y, d)).max() for y, d in zip(yaws, spacings)])
        # Speed a lane can be driven at with comfortable lateral acceleration.
        self.turn_speed_mps = np.minimum(
            self.speed_limit_mps, np.sqrt(COMFORT_LATERAL_ACCEL_MPS2 / np.maximum(max_curv, 1e-6)))

    def reference(self, lane: np.ndarray, s_m: np.ndarray) -> tuple[np.ndarray, ...]:
        """Interpolated (x, y, yaw, curvature) at arc length ``s_m`` of ``lane`` (arrays)."""
        # minimum/maximum rather than clip: this runs several times per step for every NPC.
        count, offset = self.count[lane], self.offset[lane]
        u = np.minimum(np.maximum(s_m, 0.0), self.length_m[lane]) / self.spacing_m[lane]
        i0 = np.maximum(np.minimum(u.astype(np.int64), count - 2), 0)
        f = (u - i0)[..., None]
        g = offset + i0
        g1 = np.minimum(g + 1, offset + count - 1)
        xy = self.points_xy[g] * (1 - f) + self.points_xy[g1] * f
        yaw = self.yaw_rad[g] + f[..., 0] * (self.yaw_rad[g1] - self.yaw_rad[g])
        return xy[..., 0], xy[..., 1], yaw, self.curvature_per_m[g]


def _curvature(yaw: np.ndarray, spacing_m: float) -> np.ndarray:
    if len(yaw) < 3:
        return np.zeros(len(yaw))
    k = np.gradient(yaw, spacing_m)
    # A light moving average: lane samples carry the parser's small heading noise.
    kernel = np.ones(3) / 3.0
    return np.convolve(np.pad(k, 1, mode="edge"), kernel, mode="valid")
