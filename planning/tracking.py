"""Multi-object tracking with camera/LiDAR fusion: what the planner knows of other road users.

One constant-velocity Kalman filter per track, state ``[x, y, vx, vy]`` in ``map``
(REP 105): measurements arrive in ``base_link`` and are moved to ``map`` with the ego's
pose at their stamp, so a parked car stays still while the ego drives and turns.

Each update:

1. LiDAR obstacles are the position measurements. Camera boxes (``vehicle`` and
   ``pedestrian``) are matched to the same frame's obstacles by IoU with the obstacles'
   3D boxes projected into the image (Hungarian); a match gives the obstacle's track a
   class vote, nothing else.
2. A camera box with no LiDAR match is a measurement of its own: the bottom centre of
   the box meets the flat ground (``image_to_ground``), pushed back by half the class's
   footprint; its covariance comes from the pixel error of the box bottom, so it grows
   with the square of the range. This is what lets a camera-only car drive. It is
   dropped if it gates with a track LiDAR measured this frame (no double counting).
3. Association is Hungarian on the Mahalanobis distance with a chi-square gate;
   unmatched measurements start tentative tracks, reported once confirmed.

Bad input never raises: it is dropped and named in :attr:`TrackerUpdate.faults`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from drivestack.config import load_params
from drivestack.frames import body_to_image, image_to_ground
from drivestack.schema import EgoState, ObjectDetection, Obstacle
from planning.inputs import CameraDetections, CameraModel, ObstacleScan, Track

DEFAULT_TRACKING_PARAMS = Path(__file__).parent / "config" / "tracking.yaml"
TRACKED_LABELS = ("vehicle", "pedestrian")
UNKNOWN_LABEL = "unknown"
_NEAR_PLANE_M = 0.1  # box corners closer to the camera plane than this do not project usefully
_HEADING_MIN_SPEED_MPS = 1.0  # below this a camera-only track's velocity says nothing about its heading
_INFEASIBLE = 1e9  # assignment cost of a pair outside the gate
_OBSTACLE_FIELDS = ("x_m", "y_m", "z_m", "yaw_rad", "length_m", "width_m", "height_m")
_NS = 1e-9
# Unit box corners (x, y, z) around the centre, scaled by length, width, height.
_UNIT_CORNERS = np.array([[sx, sy, sz] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5) for sz in (-0.5, 0.5)])


@dataclass(frozen=True)
class TrackerParams:
    accel_noise_psd_m2ps3: float
    initial_velocity_std_mps: float
    lidar_position_std_m: float
    camera_pixel_std_px: float
    camera_min_position_std_m: float
    association_gate_probability: float
    camera_min_iou: float
    fusion_max_stamp_gap_s: float
    max_input_age_s: float
    confirm_hits: int
    tentative_max_coast_s: float
    confirmed_max_coast_s: float
    sources_window_s: float
    box_smoothing_factor: float
    ego_pose_history_s: float
    vehicle_prior_length_m: float
    vehicle_prior_width_m: float
    pedestrian_prior_length_m: float
    pedestrian_prior_width_m: float
    max_speed_mps: float
    small_object_max_speed_mps: float
    small_object_max_size_m: float

    def __post_init__(self) -> None:
        if isinstance(self.confirm_hits, bool) or not isinstance(self.confirm_hits, int) or self.confirm_hits < 1:
            raise ValueError(f"confirm_hits={self.confirm_hits!r} must be an integer >= 1")
        if not 0.0 < self.association_gate_probability < 1.0:
            raise ValueError(f"association_gate_probability={self.association_gate_probability} must be in (0, 1)")
        for name in ("camera_min_iou", "box_smoothing_factor"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in (0, 1]")
        for name, value in vars(self).items():
            if isinstance(value, float) and not value > 0.0:
                raise ValueError(f"{name}={value} must be positive")

    @classmethod
    def load(cls, path: str | Path = DEFAULT_TRACKING_PARAMS) -> TrackerParams:
        return load_params(cls, path)

    @property
    def gate_mahalanobis_sq(self) -> float:
        """Chi-square quantile with 2 degrees of freedom (closed form)."""
        return -2.0 * math.log(1.0 - self.association_gate_probability)

    def speed_limit_mps(self, size_m: np.ndarray) -> np.ndarray:
        """The fastest an object whose footprint's longer side is ``size_m`` can move."""
        return np.where(size_m <= self.small_object_max_size_m, self.small_object_max_speed_mps, self.max_speed_mps)

    def prior_size_m(self, label: str) -> tuple[float, float]:
        if label == "pedestrian":
            return self.pedestrian_prior_length_m, self.pedestrian_prior_width_m
        return self.vehicle_prior_length_m, self.vehicle_prior_width_m


@dataclass(frozen=True)
class TrackerUpdate:
    tracks: tuple[Track, ...]  # confirmed tracks only
    faults: tuple[str, ...]  # inputs dropped this update and why


@dataclass
class _TrackInfo:
    """What a track carries besides its filter state (which lives in the tracker's arrays)."""

    track_id: int
    born_ns: int
    last_update_ns: int
    hits: int = 1
    confirmed: bool = False
    last_lidar_ns: int | None = None
    last_camera_ns: int | None = None
    votes: dict[str, float] = field(default_factory=dict)
    length_m: float = 0.0
    width_m: float = 0.0
    yaw_map_rad: float = 0.0  # box direction, (-pi/2, pi/2] after wrapping
    has_lidar_box: bool = False

    @property
    def label(self) -> str:
        return max(self.votes, key=self.votes.__getitem__) if self.votes else UNKNOWN_LABEL


@dataclass
class _Measurements:
    """A batch of position measurements in map from one sensor, all taken at one stamp."""

    sensor: str  # "lidar" or "camera"
    age_s: float  # update stamp minus measurement stamp
    z: np.ndarray  # (M, 2) map
    cov: np.ndarray  # (M, 2, 2) map
    labels: list[tuple[str, float] | None]  # class vote (label, score) per measurement
    boxes: list[tuple[float, float, float] | None]  # (length, width, yaw in map) per LiDAR measurement

    def take(self, keep: np.ndarray) -> _Measurements:
        idx = keep.nonzero()[0]
        return _Measurements(self.sensor, self.age_s, self.z[idx], self.cov[idx],
                             [self.labels[i] for i in idx], [self.boxes[i] for i in idx])


def _wrap_half_pi(angle: float) -> float:
    """Into (-pi/2, pi/2]: a box has no front."""
    wrapped = math.remainder(angle, math.pi)
    return math.pi / 2 if wrapped <= -math.pi / 2 else wrapped


def _rotation(yaw_rad: float) -> np.ndarray:
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return np.array([[c, -s], [s, c]])


def _inv2(m: np.ndarray) -> np.ndarray:
    """Inverse of a stack of 2x2 matrices (closed form: far faster than np.linalg.inv on small stacks)."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    out = np.empty_like(m)
    out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1] = d / det, -b / det, -c / det, a / det
    return out


def _mahalanobis_sq(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """y^T S^-1 y for stacks of 2-vectors and 2x2 matrices (closed form)."""
    a, b, c, d = s[..., 0, 0], s[..., 0, 1], s[..., 1, 0], s[..., 1, 1]
    det = a * d - b * c
    y0, y1 = y[..., 0], y[..., 1]
    return (d * y0 * y0 - (b + c) * y0 * y1 + a * y1 * y1) / det


def _assign(d2: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment on squared Mahalanobis distances; pairs outside the gate never match."""
    if d2.size == 0:
        return np.empty(0, int), np.empty(0, int)
    cost = np.where(d2 <= gate, d2, _INFEASIBLE)
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] < _INFEASIBLE
    return rows[ok], cols[ok]


def _finite_fault(owner: str, **values: float) -> str | None:
    for name, value in values.items():
        if not math.isfinite(value):
            return f"{owner}: {'NaN' if math.isnan(value) else 'inf'} {name}"
    return None


def _obstacle_fault(o: Obstacle) -> str | None:
    owner = f"obstacle {o.obstacle_id}"
    try:
        fault = _finite_fault(owner, x_m=o.x_m, y_m=o.y_m, z_m=o.z_m, yaw_rad=o.yaw_rad,
                              length_m=o.length_m, width_m=o.width_m, height_m=o.height_m)
    except TypeError:
        return f"{owner}: non-numeric field"
    if fault:
        return fault
    # Zero is a real measurement (a wall seen as one row of points); negative is not.
    for name in ("length_m", "width_m", "height_m"):
        value = getattr(o, name)
        if value < 0.0:
            return f"{owner}: negative {name} ({value:g})"
    return None


def _detection_fault(d: ObjectDetection) -> str | None:
    owner = f"detection {d.label}"
    try:
        fault = _finite_fault(owner, score=d.score, u_min_px=d.u_min_px, v_min_px=d.v_min_px,
                              u_max_px=d.u_max_px, v_max_px=d.v_max_px)
    except TypeError:
        return f"{owner}: non-numeric field"
    if fault:
        return fault
    if d.u_max_px < d.u_min_px or d.v_max_px < d.v_min_px:
        return f"{owner}: negative box size"
    if d.score < 0.0:
        return f"{owner}: negative score ({d.score:g})"
    return None


def _camera_fault(camera: CameraModel) -> str | None:
    k = np.asarray(camera.intrinsics, np.float64)
    mount = camera.mount
    if k.shape != (3, 3) or not np.isfinite(k).all() or not (k[0, 0] > 0 and k[1, 1] > 0):
        return f"camera {camera.name}: invalid intrinsics"
    if not all(math.isfinite(v) for v in (mount.x_m, mount.y_m, mount.z_m, mount.roll_rad, mount.pitch_rad,
                                          mount.yaw_rad)) or not mount.z_m > 0.0:
        return f"camera {camera.name}: invalid mount"
    if not (camera.width_px > 0 and camera.height_px > 0):
        return f"camera {camera.name}: invalid image size"
    return None


def obstacle_geometry(obstacles: Sequence[Obstacle]) -> np.ndarray:
    """(N, 7) ``x, y, z, yaw, length, width, height`` of the obstacles."""
    return np.array([[getattr(o, name) for name in _OBSTACLE_FIELDS] for o in obstacles], np.float64).reshape(-1, 7)


def project_boxes(obstacles: Sequence[Obstacle] | np.ndarray, camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """Image boxes (N, 4) ``u_min, v_min, u_max, v_max`` of the obstacles' 3D boxes (or
    of their :func:`obstacle_geometry`), from the corners in front of the camera,
    clipped to the image; and (N,) whether each is visible at all (some corner in
    front and a non-empty box inside the image)."""
    geometry = obstacles if isinstance(obstacles, np.ndarray) else obstacle_geometry(obstacles)
    n = len(geometry)
    if n == 0:
        return np.empty((0, 4)), np.empty(0, bool)
    # Corners = unit corners scaled by the size, turned by the yaw, moved to the centre: one (N, 3, 3) transform.
    c, si = np.cos(geometry[:, 3]), np.sin(geometry[:, 3])
    transform = np.zeros((n, 3, 3))
    transform[:, 0, 0], transform[:, 0, 1] = c * geometry[:, 4], -si * geometry[:, 5]
    transform[:, 1, 0], transform[:, 1, 1] = si * geometry[:, 4], c * geometry[:, 5]
    transform[:, 2, 2] = geometry[:, 6]
    corners = _UNIT_CORNERS @ transform.transpose(0, 2, 1) + geometry[:, None, :3]  # (N, 8, 3)
    uv, depth = body_to_image(corners.reshape(-1, 3), camera.intrinsics, camera.mount)
    uv, front = uv.reshape(n, 8, 2), (depth > _NEAR_PLANE_M).reshape(n, 8, 1)
    size = (camera.width_px, camera.height_px, camera.width_px, camera.height_px)
    boxes = np.concatenate([np.where(front, uv, np.inf).min(axis=1), np.where(front, uv, -np.inf).max(axis=1)], axis=1)
    boxes = np.minimum(np.maximum(boxes, 0.0), size)
    return boxes, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of ``u_min, v_min, u_max, v_max`` boxes; boxes in ``a``
    must have a positive area."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(width, 0.0) * np.maximum(height, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


class MultiObjectTracker:
    """Tracks in ``map`` from LiDAR obstacles and camera detections; see the module docstring.

    Call :meth:`update` once per planner step with the step's stamp and ego state; an
    input not newer than the last one used from the same sensor is not used again (a
    scan repeated at a lower sensor rate is not counted twice)."""

    def __init__(self, params: TrackerParams | None = None) -> None:
        self.params = params or TrackerParams.load()
        self.reset()

    def reset(self) -> None:
        self._x = np.empty((0, 4))
        self._P = np.empty((0, 4, 4))
        self._info: list[_TrackInfo] = []
        self._time_ns: int | None = None
        self._next_id = 1
        self._poses: deque[tuple[int, float, float, float]] = deque()
        self._last_used_ns: dict[str, int] = {}
        self._reported: tuple[Track, ...] = ()
        self._cached_transition: tuple[int, np.ndarray, np.ndarray] = (-1, np.eye(4), np.zeros((4, 4)))

    # ----------------------------------------------------------------- update
    def update(self, stamp_ns: int, ego: EgoState, obstacles: ObstacleScan | None,
               detections: CameraDetections | None) -> TrackerUpdate:
        faults: list[str] = []
        pose = self._ego_pose(ego, faults)
        if pose is None:
            return TrackerUpdate(self._reported, tuple(faults))
        if self._time_ns is not None and stamp_ns < self._time_ns:
            faults.append(f"stamp went backwards ({stamp_ns} ns < {self._time_ns} ns): tracks reset")
            self.reset()
        self._remember_pose(ego.stamp_ns, pose)
        self._predict(stamp_ns)

        lidar_obstacles, geometry = self._fresh_obstacles(stamp_ns, obstacles, faults)
        camera_boxes = self._fresh_detections(stamp_ns, detections, faults)
        votes: dict[int, tuple[str, float]] = {}
        if lidar_obstacles and camera_boxes and abs(obstacles.stamp_ns - detections.stamp_ns) * _NS \
                <= self.params.fusion_max_stamp_gap_s:
            votes, camera_boxes = self._fuse_by_iou(geometry, camera_boxes, detections.camera)

        lidar_updated = np.zeros(len(self._info), bool)
        if lidar_obstacles:
            measured = self._lidar_measurements(stamp_ns, obstacles.stamp_ns, geometry, votes)
            lidar_updated = self._associate(stamp_ns, measured, lidar_updated)
        if camera_boxes:
            measured = self._camera_measurements(stamp_ns, detections, camera_boxes)
            if measured is not None:
                self._associate(stamp_ns, measured, lidar_updated)

        self._delete_stale(stamp_ns)
        self._reported = self._report(stamp_ns, pose)
        return TrackerUpdate(self._reported, tuple(faults))

    # ------------------------------------------------------------- ego, time
    @staticmethod
    def _ego_pose(ego: EgoState | None, faults: list[str]) -> tuple[float, float, float] | None:
        if ego is None:
            faults.append("ego: missing, tracks not updated")
            return None
        try:
            pose = (float(ego.x_m), float(ego.y_m), float(ego.yaw_rad))
        except (TypeError, ValueError):
            faults.append("ego: non-numeric pose, tracks not updated")
            return None
        if not all(math.isfinite(v) for v in pose):
            faults.append("ego: NaN pose, tracks not updated")
            return None
        return pose

    def _remember_pose(self, stamp_ns: int, pose: tuple[float, float, float]) -> None:
        self._poses.append((stamp_ns, *pose))
        horizon_ns = stamp_ns - self.params.ego_pose_history_s / _NS
        while len(self._poses) > 1 and self._poses[0][0] < horizon_ns:
            self._poses.popleft()

    def _pose_at(self, stamp_ns: int) -> tuple[float, float, float]:
        """The ego's pose at ``stamp_ns``: the nearest remembered one."""
        best = self._poses[-1]
        if best[0] != stamp_ns:  # a delayed input: search back (the history is in stamp order)
            for pose in reversed(self._poses):
                if abs(pose[0] - stamp_ns) > abs(best[0] - stamp_ns):
                    break
                best = pose
        return best[1], best[2], best[3]

    def _predict(self, stamp_ns: int) -> None:
        if self._time_ns is not None and stamp_ns > self._time_ns and len(self._info):
            f, noise = self._transition(stamp_ns - self._time_ns)
            self._x = self._x @ f.T
            self._P = f @ self._P @ f.T + noise
        self._time_ns = stamp_ns if self._time_ns is None else max(self._time_ns, stamp_ns)

    def _transition(self, dt_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Constant-velocity transition and white-acceleration noise over ``dt_ns`` (cached:
        the step is nearly always the same)."""
        if self._cached_transition[0] != dt_ns:
            dt, q = dt_ns * _NS, self.params.accel_noise_psd_m2ps3
            f = np.eye(4)
            f[0, 2] = f[1, 3] = dt
            qpp, qpv, qvv = q * dt**3 / 3.0, q * dt**2 / 2.0, q * dt
            noise = np.array([[qpp, 0, qpv, 0], [0, qpp, 0, qpv], [qpv, 0, qvv, 0], [0, qpv, 0, qvv]])
            self._cached_transition = (dt_ns, f, noise)
        return self._cached_transition[1], self._cached_transition[2]

    def _is_fresh(self, sensor: str, stamp_ns: int, input_ns: int, faults: list[str]) -> bool:
        if input_ns <= self._last_used_ns.get(sensor, -1):
            return False  # already used: the sensor has not produced a new frame
        age_s = (stamp_ns - input_ns) * _NS
        if age_s > self.params.max_input_age_s:
            faults.append(f"{sensor}: input {age_s:.2f} s old, not used")
            return False
        self._last_used_ns[sensor] = input_ns
        return True

    # ----------------------------------------------------------------- inputs
    def _fresh_obstacles(self, stamp_ns: int, scan: ObstacleScan | None,
                         faults: list[str]) -> tuple[list[Obstacle], np.ndarray]:
        """The scan's valid obstacles and their :func:`obstacle_geometry`; faults for the rest."""
        if scan is None or not scan.obstacles or not self._is_fresh("lidar", stamp_ns, scan.stamp_ns, faults):
            return [], np.empty((0, 7))
        good, rows = [], []
        for o in scan.obstacles:
            fault = _obstacle_fault(o)
            if fault is None:
                good.append(o)
                rows.append((o.x_m, o.y_m, o.z_m, o.yaw_rad, o.length_m, o.width_m, o.height_m))
            else:
                faults.append(fault)
        return good, np.array(rows, np.float64).reshape(-1, 7)

    def _fresh_detections(self, stamp_ns: int, detections: CameraDetections | None,
                          faults: list[str]) -> list[ObjectDetection]:
        if detections is None or not self._is_fresh("camera", stamp_ns, detections.stamp_ns, faults):
            return []
        tracked = [d for d in detections.detections if d.label in TRACKED_LABELS]
        if not tracked:
            return []
        fault = _camera_fault(detections.camera)
        if fault:
            faults.append(f"{fault}: {len(tracked)} detection(s) not used")
            return []
        good = []
        for d in tracked:
            fault = _detection_fault(d)
            if fault is None:
                if d.u_max_px > d.u_min_px and d.v_max_px > d.v_min_px:  # a zero-area box says nothing
                    good.append(d)
            else:
                faults.append(fault)
        return good

    def _fuse_by_iou(self, geometry: np.ndarray, boxes: list[ObjectDetection],
                     camera: CameraModel) -> tuple[dict[int, tuple[str, float]], list[ObjectDetection]]:
        """Class votes for obstacles (by index) whose projected box matches a camera box;
        the camera boxes left unmatched."""
        projected, visible = project_boxes(geometry, camera)
        columns = visible.nonzero()[0]
        if len(columns) == 0:
            return {}, boxes
        image_boxes = np.array([(d.u_min_px, d.v_min_px, d.u_max_px, d.v_max_px) for d in boxes])
        iou = box_iou(image_boxes, projected[columns])
        rows, cols = linear_sum_assignment(-iou)
        ok = iou[rows, cols] >= self.params.camera_min_iou
        votes = {int(columns[c]): (boxes[r].label, boxes[r].score) for r, c in zip(rows[ok], cols[ok])}
        matched = set(rows[ok].tolist())
        return votes, [d for i, d in enumerate(boxes) if i not in matched]

    def _lidar_measurements(self, stamp_ns: int, scan_ns: int, geometry: np.ndarray,
                            votes: dict[int, tuple[str, float]]) -> _Measurements:
        ex, ey, eyaw = self._pose_at(scan_ns)
        rot = _rotation(eyaw)
        n = len(geometry)
        z = geometry[:, :2] @ rot.T + (ex, ey)
        cov = np.zeros((n, 2, 2))
        cov[:, 0, 0] = cov[:, 1, 1] = self.params.lidar_position_std_m**2
        boxes = [(length, width, yaw + eyaw) for yaw, length, width in geometry[:, 3:6].tolist()]
        labels = [votes.get(i) for i in range(n)]
        return _Measurements("lidar", (stamp_ns - scan_ns) * _NS, z, cov, labels, boxes)

    def _camera_measurements(self, stamp_ns: int, detections: CameraDetections,
                             boxes: list[ObjectDetection]) -> _Measurements | None:
        """Ground positions of the boxes' bottom centres, pushed back by half the class's
        footprint along the viewing ray; covariance from the pixel error through the
        flat-ground geometry (central differences, so it holds for any mount pitch)."""
        camera, p = detections.camera, self.params
        n, sigma = len(boxes), p.camera_pixel_std_px
        bottom = np.array([((d.u_min_px + d.u_max_px) / 2.0, d.v_max_px) for d in boxes])
        steps = np.array([[0.0, 0.0], [sigma, 0.0], [-sigma, 0.0], [0.0, sigma], [0.0, -sigma]])
        ground = image_to_ground((bottom[None] + steps[:, None]).reshape(-1, 2), camera.intrinsics,
                                 camera.mount)[:, :2].reshape(5, n, 2)
        usable = np.isfinite(ground).all(axis=(0, 2))  # near the horizon or beyond range: no position
        if not usable.any():
            return None
        ground = ground[:, usable]
        kept = [d for d, ok in zip(boxes, usable) if ok]
        jac = np.stack([(ground[1] - ground[2]) / 2.0, (ground[3] - ground[4]) / 2.0], axis=-1)  # (M, 2, 2)
        ray = ground[0] - (camera.mount.x_m, camera.mount.y_m)
        ray /= np.linalg.norm(ray, axis=1, keepdims=True)
        extent = np.array([p.prior_size_m(d.label) for d in kept])
        # The box bottom is the object's near edge: its centre lies ~half a footprint
        # farther, by (L + W) / 4 on average over headings, give or take (L - W) / 4.
        centre = ground[0] + ray * ((extent[:, 0] + extent[:, 1]) / 4.0)[:, None]
        ambiguity = ((extent[:, 0] - extent[:, 1]) / 4.0)[:, None, None]
        cov = (jac @ jac.transpose(0, 2, 1) + ambiguity**2 * ray[:, :, None] * ray[:, None, :]
               + np.eye(2) * p.camera_min_position_std_m**2)
        ex, ey, eyaw = self._pose_at(detections.stamp_ns)
        rot = _rotation(eyaw)
        return _Measurements("camera", (stamp_ns - detections.stamp_ns) * _NS, centre @ rot.T + (ex, ey),
                             rot @ cov @ rot.T, [(d.label, d.score) for d in kept], [None] * len(kept))

    # -------------------------------------------------------------- filtering
    def _innovations(self, z: np.ndarray, r: np.ndarray, age_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Innovations (T, M, 2) and their covariances (T, M, 2, 2) of every track against
        measurements ``z`` (M, 2) with covariances ``r``, and P H^T (T, 4, 2).
        H = [I, -age I]: a delayed measurement saw the track where it was ``age_s`` ago."""
        x, cov = self._x, self._P
        pht = cov[:, :, :2]
        hx = x[:, :2]
        if age_s:
            pht = pht - age_s * cov[:, :, 2:]
            hx = hx - age_s * x[:, 2:]
        hpht = pht[:, :2] - age_s * pht[:, 2:] if age_s else pht[:, :2]
        return z[None] - hx[:, None], hpht[:, None] + r[None], pht

    def _associate(self, stamp_ns: int, measured: _Measurements, measured_before: np.ndarray) -> np.ndarray:
        """Update tracks with their assigned measurements and start tracks from the rest;
        returns which tracks (new ones included) this batch or ``measured_before`` updated.

        A measurement that gates with a track ``measured_before`` (by LiDAR, this frame)
        is that track seen again and is dropped: a camera box is not counted twice."""
        n_tracks = len(self._info)
        unmatched = np.ones(len(measured.z), bool)
        if n_tracks:
            y, s, pht = self._innovations(measured.z, measured.cov, measured.age_s)
            d2 = _mahalanobis_sq(y, s)  # (T, M)
            d2 = np.where(self._too_fast(pht, y, s, measured), _INFEASIBLE, d2)
            free = ~measured_before
            if measured_before.any():
                unmatched &= ~(d2[measured_before] <= self.params.gate_mahalanobis_sq).any(axis=0)
            confirmed = np.array([info.confirmed for info in self._info], bool)
            matched_tracks, matched_meas = [], []
            # Confirmed tracks choose first (DeepSORT's matching cascade): a tentative track
            # born beside a confirmed one from a single outlier cannot starve it.
            for stage in (free & confirmed, free & ~confirmed):
                track_idx, meas_idx = stage.nonzero()[0], unmatched.nonzero()[0]
                if len(track_idx) == 0 or len(meas_idx) == 0:
                    continue
                rows, cols = _assign(d2[np.ix_(track_idx, meas_idx)], self.params.gate_mahalanobis_sq)
                matched_tracks.append(track_idx[rows])
                matched_meas.append(meas_idx[cols])
                unmatched[meas_idx[cols]] = False
            if matched_tracks:
                tracks, meas = np.concatenate(matched_tracks), np.concatenate(matched_meas)
                self._kalman_update(tracks, pht[tracks], y[tracks, meas], s[tracks, meas])
                for t, m in zip(tracks.tolist(), meas.tolist()):
                    self._absorb(self._info[t], measured, m, stamp_ns)
                measured_before = measured_before.copy()
                measured_before[tracks] = True
        born = self._birth(stamp_ns, measured.take(unmatched))
        return np.concatenate([measured_before, np.ones(born, bool)])

    def _too_fast(self, pht: np.ndarray, y: np.ndarray, s: np.ndarray, measured: _Measurements) -> np.ndarray:
        """(T, M) pairs whose update would leave the track faster than anything of its size
        moves. A static surface sampled by the LiDAR's fixed ray columns gives a point
        that slides along it as the ego drives or turns (a wall at a grazing angle: several
        times the ego's speed); without this a new track, whose velocity is free, follows
        it and is confirmed moving at 10-30 m/s."""
        v_post = self._x[:, None, 2:] + (pht[:, None, 2:] @ _inv2(s) @ y[..., None])[..., 0]  # (T, M, 2)
        speed = np.hypot(v_post[..., 0], v_post[..., 1])
        track_size = np.array([max(i.length_m, i.width_m) if i.has_lidar_box else np.inf for i in self._info])
        meas_size = np.array([max(b[0], b[1]) if b is not None else np.inf for b in measured.boxes])
        # Small only if both the track's box and this measurement's box are small; camera ones never are.
        size = np.maximum(track_size[:, None], meas_size[None, :])
        return speed > self.params.speed_limit_mps(size)

    def _kalman_update(self, tracks: np.ndarray, pht: np.ndarray, y: np.ndarray, s: np.ndarray) -> None:
        gain = pht @ _inv2(s)  # (K, 4, 2)
        self._x[tracks] += (gain @ y[..., None])[..., 0]
        cov = self._P[tracks] - gain @ pht.transpose(0, 2, 1)  # P - K H P
        self._P[tracks] = (cov + cov.transpose(0, 2, 1)) / 2.0

    def _absorb(self, info: _TrackInfo, measured: _Measurements, m: int, stamp_ns: int) -> None:
        info.hits += 1
        info.confirmed = info.confirmed or info.hits >= self.params.confirm_hits
        info.last_update_ns = stamp_ns
        vote = measured.labels[m]
        if vote is not None:
            info.votes[vote[0]] = info.votes.get(vote[0], 0.0) + vote[1]
            info.last_camera_ns = stamp_ns
        if measured.sensor == "lidar":
            info.last_lidar_ns = stamp_ns
            self._smooth_box(info, measured.boxes[m])
        else:
            info.last_camera_ns = stamp_ns

    def _smooth_box(self, info: _TrackInfo, box: tuple[float, float, float]) -> None:
        length, width, yaw = box
        if not info.has_lidar_box:
            info.length_m, info.width_m, info.yaw_map_rad, info.has_lidar_box = length, width, _wrap_half_pi(yaw), True
            return
        turn = _wrap_half_pi(yaw - info.yaw_map_rad)
        if abs(turn) > math.pi / 4:  # the scan saw the box's width as its length
            length, width, turn = width, length, _wrap_half_pi(turn + math.pi / 2)
        a = self.params.box_smoothing_factor
        info.length_m += a * (length - info.length_m)
        info.width_m += a * (width - info.width_m)
        info.yaw_map_rad = _wrap_half_pi(info.yaw_map_rad + a * turn)

    def _birth(self, stamp_ns: int, measured: _Measurements) -> int:
        n = len(measured.z)
        if n == 0:
            return 0
        state = np.column_stack([measured.z, np.zeros((n, 2))])
        cov = np.zeros((n, 4, 4))
        cov[:, :2, :2] = measured.cov
        cov[:, 2, 2] = cov[:, 3, 3] = self.params.initial_velocity_std_mps**2
        self._x = np.concatenate([self._x, state])
        self._P = np.concatenate([self._P, cov])
        for m in range(n):
            info = _TrackInfo(self._next_id, stamp_ns, stamp_ns, confirmed=self.params.confirm_hits <= 1)
            self._next_id += 1
            vote = measured.labels[m]
            if vote is not None:
                info.votes[vote[0]] = vote[1]
                info.last_camera_ns = stamp_ns
            if measured.sensor == "lidar":
                info.last_lidar_ns = stamp_ns
                self._smooth_box(info, measured.boxes[m])
            self._info.append(info)
        return n

    def _delete_stale(self, stamp_ns: int) -> None:
        p = self.params
        keep = np.array([(stamp_ns - info.last_update_ns) * _NS
                         <= (p.confirmed_max_coast_s if info.confirmed else p.tentative_max_coast_s)
                         for info in self._info], bool)
        if not keep.all():
            self._x, self._P = self._x[keep], self._P[keep]
            self._info = [info for info, k in zip(self._info, keep) if k]

    # ----------------------------------------------------------------- output
    def _report(self, stamp_ns: int, pose: tuple[float, float, float]) -> tuple[Track, ...]:
        idx = [i for i, info in enumerate(self._info) if info.confirmed]
        if not idx:
            return ()
        ex, ey, eyaw = pose
        to_body = _rotation(eyaw).T
        x = self._x[idx]
        body = np.concatenate([(x[:, :2] - (ex, ey)) @ to_body.T, x[:, 2:] @ to_body.T], axis=1).tolist()
        cov = self._P[idx]
        a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
        std = np.sqrt((a + c) / 2.0 + np.sqrt(((a - c) / 2.0) ** 2 + b**2)).tolist()  # major semi-axis
        oldest_ns = stamp_ns - self.params.sources_window_s / _NS
        tracks = []
        for i, (x_m, y_m, vx_mps, vy_mps), (x_map, y_map, vx_map, vy_map), std_m in zip(idx, body, x.tolist(), std):
            info = self._info[i]
            label = info.label
            if info.has_lidar_box:
                length, width, yaw_map = info.length_m, info.width_m, info.yaw_map_rad
            else:  # camera only: the class's size, heading along the velocity
                length, width = self.params.prior_size_m(label)
                moving = vx_map * vx_map + vy_map * vy_map > _HEADING_MIN_SPEED_MPS**2
                yaw_map = math.atan2(vy_map, vx_map) if moving else eyaw
            lidar = info.last_lidar_ns is not None and info.last_lidar_ns >= oldest_ns
            camera = info.last_camera_ns is not None and info.last_camera_ns >= oldest_ns
            sources = ("lidar", "camera") if lidar and camera else ("lidar",) if lidar else ("camera",) if camera else ()
            tracks.append(Track(info.track_id, label, x_m, y_m, vx_mps, vy_mps, length, width,
                                _wrap_half_pi(yaw_map - eyaw), x_map, y_map, vx_map, vy_map, std_m,
                                (stamp_ns - info.born_ns) * _NS, info.hits, sources))
        return tuple(tracks)
