"""LiDAR obstacle detection with Open3D: ground removal, clustering, upright boxes.

One scan in, obstacles in ``base_link`` out (issue 5)::

    points (sensor frame) -> finite, base_link, range and ego crop -> voxel_down_sample
      -> ground plane (segment_plane RANSAC near the car, checked; else z = 0)
      -> points between the ground threshold and max_point_height_m above the ground,
         less those under higher points (poles, trunks, walls)
      -> cluster_dbscan in bird's-eye view, polar about the sensor
      -> per cluster: upright box; one that fits a pedestrian or a vehicle is grown to
         that size on its hidden side (a vehicle's yaw and length direction chosen
         among a few hypotheses by the rays they would block), and fragments inside
         a completed box join it
      -> drop walls, low debris and specks

Plain numpy and Open3D: no ROS, no simulator. Open3D's RANSAC is seeded on every call
and its plane refitted by least squares to a fixed inlier set; Open3D still runs RANSAC
and DBSCAN on several threads, so under load a border point can change clusters and the
same scan's boxes agree to centimetres rather than to the bit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields, replace

import cv2
import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

from drivestack.schema import Obstacle

logger = logging.getLogger(__name__)
MAX_GROUND_REFITS = 10

# In units of one blocked ray (see _vehicle_box): 0.1 is 2 cm of face misfit.
_CLEARLY_BETTER = 0.1


@dataclass(frozen=True)
class SensorMount:
    """The LiDAR's pose on the car: its origin in ``base_link`` and its yaw about z
    (the sensor frame is REP 103 turned by ``yaw_rad``; no roll or pitch)."""

    x_m: float = 0.0
    y_m: float = 0.0
    z_m: float = 2.4
    yaw_rad: float = 0.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            if not math.isfinite(getattr(self, spec.name)):
                raise ValueError(f"SensorMount.{spec.name} is {getattr(self, spec.name)}; it must be finite")


@dataclass(frozen=True)
class LidarObstacleConfig:
    """Parameters of :class:`LidarObstacleDetector`. Heights are above the fitted
    ground; defaults suit the simulator's full sensor suite (32 channels, 2.4 m up)."""

    max_range_m: float = 50.0  # horizontal, from base_link's origin
    voxel_size_m: float = 0.1
    # The ego's own footprint (roof rack, mirrors): no obstacle can be inside the car.
    ego_length_m: float = 4.5
    ego_width_m: float = 1.9
    ego_margin_m: float = 0.3

    # Ground plane. RANSAC sees only points within ground_fit_range_m and within
    # ground_search_height_m of z = 0: farther the road bends and slopes, and a low
    # wall near the car must not win the vote.
    ground_fit_range_m: float = 20.0
    ground_search_height_m: float = 0.6
    ground_distance_threshold_m: float = 0.2
    ransac_n: int = 3
    ransac_iterations: int = 100
    ransac_seed: int = 0
    min_ground_inliers: int = 30
    max_ground_tilt_rad: float = 0.15
    max_ground_offset_m: float = 0.4  # the fitted plane's height under the car against z = 0

    # Obstacles stand between the ground threshold and max_point_height_m. Higher points
    # pass over a car (tree canopies, signs, light arms) and are not clustered; lower
    # points within structure_radius_m of one of them (seen from above) belong to
    # something that goes on up (a pole, a trunk, a wall) and are dropped.
    max_point_height_m: float = 2.5
    structure_radius_m: float = 0.3
    min_obstacle_height_m: float = 0.3  # lower clusters are kerbs and debris
    max_obstacle_length_m: float = 10.0  # longer ones are walls and fences

    # Clustering in bird's-eye view, polar about the sensor (see _cluster). The azimuth
    # tolerance must exceed the LiDAR's azimuth step, or the columns of rays on one
    # object fall apart; the range tolerance grows with range, as the columns on the
    # slanted side of a far car differ by metres in range.
    dbscan_eps_azimuth_rad: float = 0.12
    dbscan_eps_m: float = 1.0
    dbscan_eps_per_range: float = 0.15
    dbscan_min_points: int = 1
    min_cluster_points: int = 3
    max_cluster_points: int = 20000

    # Size priors complete a box whose far sides the LiDAR cannot see, so that its
    # centre is not pulled towards the sensor (see _complete_hidden_sides).
    complete_with_size_priors: bool = True
    vehicle_length_m: float = 4.4
    vehicle_width_m: float = 1.8
    vehicle_height_m: float = 1.5
    pedestrian_size_m: float = 0.6
    pedestrian_height_m: float = 1.8
    size_prior_margin_m: float = 0.2
    # A cluster narrower than this may be a pedestrian (or a pole): one column of rays,
    # or a pedestrian seen close up (its diagonal). See _is_pedestrian.
    narrow_extent_m: float = 0.9
    # The LiDAR's resolution: the angles between neighbouring columns of rays and
    # between neighbouring channels (the full suite: 360 deg / 88 and 40 deg / 31).
    lidar_azimuth_step_rad: float = 0.0714
    lidar_channel_step_rad: float = 0.0225
    # Points within roof_band_m of a cluster's top are its roof; the faces below give
    # its yaw. Its nearest face is the points within face_depth_m of the nearest one.
    roof_band_m: float = 0.25
    face_depth_m: float = 0.1
    # A cluster inside the completed box of one with at least min_anchor_points (a far
    # car may show as columns of two points), widened by absorb_margin_m, joins it.
    min_anchor_points: int = 2
    absorb_margin_m: float = 0.3
    absorb_rounds: int = 3
    # Vehicle hypotheses (see _vehicle_box): yaws closer than same_yaw_rad are one; a
    # box is shrunk by ray_check_shrink_m before rays are checked against it.
    same_yaw_rad: float = 0.05
    ray_check_shrink_m: float = 0.15
    face_fit_tolerance_m: float = 0.2

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool):
                continue
            if spec.type in ("int", int) and not isinstance(value, (int, np.integer)):
                raise ValueError(f"LidarObstacleConfig.{spec.name}={value!r} must be an integer")
            if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"LidarObstacleConfig.{spec.name}={value!r} must be a finite number >= 0")
        positive = ("max_range_m", "voxel_size_m", "ground_fit_range_m", "ground_search_height_m",
                    "ground_distance_threshold_m", "ransac_iterations", "dbscan_eps_azimuth_rad", "dbscan_eps_m",
                    "dbscan_min_points", "min_cluster_points", "max_obstacle_length_m", "vehicle_length_m",
                    "vehicle_width_m", "pedestrian_size_m", "min_anchor_points",
                    "face_fit_tolerance_m")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"LidarObstacleConfig.{name}={getattr(self, name)} must be > 0")
        if self.ransac_n < 3:
            raise ValueError(f"LidarObstacleConfig.ransac_n={self.ransac_n} must be >= 3 (a plane needs three points)")
        for low, high in (("min_cluster_points", "max_cluster_points"),
                          ("ground_distance_threshold_m", "max_point_height_m"),
                          ("min_obstacle_height_m", "max_point_height_m"),
                          ("vehicle_width_m", "vehicle_length_m")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"LidarObstacleConfig.{low}={getattr(self, low)} exceeds {high}={getattr(self, high)}")


@dataclass(frozen=True)
class DetectionStats:
    """What one ``detect`` call did with the scan, for logs and tests."""

    input_points: int = 0
    nonfinite_points: int = 0  # dropped: NaN or inf in x, y or z
    ground_points: int = 0
    ground_from_ransac: bool = False  # False: the fit failed its checks and z = 0 was used
    obstacle_points: int = 0  # clustered: above the ground, below max_point_height_m
    clusters: int = 0  # after fragments joined their obstacle
    rejected_clusters: int = 0  # specks, walls, low debris


@dataclass(frozen=True)
class Detection:
    obstacles: list[Obstacle]
    stats: DetectionStats


def config_for_lidar(lidar) -> LidarObstacleConfig:
    """The defaults with the scan pattern of this LiDAR (a ``LidarConfig`` of the sensor
    suite): the clustering distances follow the angular steps between neighbouring points."""
    columns = lidar.points_per_second / (lidar.channels * lidar.rotation_frequency_hz)  # points per turn per channel
    channel_step = math.radians(lidar.upper_fov_deg - lidar.lower_fov_deg) / max(lidar.channels - 1, 1)
    defaults = LidarObstacleConfig()
    return replace(defaults, lidar_azimuth_step_rad=2 * math.pi / max(columns, 1.0),
                   lidar_channel_step_rad=channel_step, max_range_m=min(defaults.max_range_m, lidar.range_m))


class LidarObstacleDetector:
    """Obstacles from one LiDAR scan; nothing is kept between scans."""

    def __init__(self, config: LidarObstacleConfig | None = None) -> None:
        self.config = config or LidarObstacleConfig()

    def detect(self, points: np.ndarray, mount: SensorMount) -> list[Obstacle]:
        """Obstacles in ``base_link``, nearest first, from ``points``: an (N, 3+) array
        whose first three columns are x, y, z in the sensor frame (the rest is ignored).
        Points with NaN or inf are dropped (and logged); a bad shape raises ValueError."""
        return self.detect_with_stats(points, mount).obstacles

    def detect_with_stats(self, points: np.ndarray, mount: SensorMount) -> Detection:
        cfg = self.config
        xyz = _checked_xyz(points)
        finite = np.isfinite(xyz).all(axis=1)
        nonfinite = int(len(xyz) - np.count_nonzero(finite))
        if nonfinite:
            logger.warning("dropped %d of %d LiDAR points with NaN or inf coordinates", nonfinite, len(xyz))
        base = sensor_to_base(xyz[finite], mount)
        base = base[_inside_range(base, cfg) & ~_inside_ego(base, cfg)]
        if len(base):
            base = _voxel_down_sample(base, cfg.voxel_size_m)

        normal, offset, from_ransac = _ground_plane(base, cfg)
        height = base @ normal + offset  # above the ground plane, along its normal
        keep = (height > cfg.ground_distance_threshold_m) & (height <= cfg.max_point_height_m)
        keep[keep] = ~_under_structure(base[keep, :2], base[height > cfg.max_point_height_m, :2], cfg)
        above, above_height = base[keep], height[keep]

        sensor = np.array([mount.x_m, mount.y_m, mount.z_m])
        scene = _Scene(sensor[:2], float(sensor @ normal + offset), base[:, :2], height)
        labels = _cluster(above, scene.sensor_xy, cfg)
        footprints: dict[int, _Footprint] = {}
        if cfg.complete_with_size_priors:
            labels, footprints = _absorb_fragments(labels, above[:, :2], above_height, scene, cfg)
        obstacles: list[Obstacle] = []
        clusters = np.unique(labels[labels >= 0])
        for label in clusters:
            member = labels == label
            box = _obstacle(above[member], above_height[member], footprints.get(int(label)), scene, normal, offset,
                            cfg)
            if box is not None:
                obstacles.append(box)
        obstacles.sort(key=lambda o: (math.hypot(o.x_m, o.y_m), o.x_m, o.y_m))
        obstacles = [_with_id(o, i) for i, o in enumerate(obstacles)]
        ground = int(np.count_nonzero(np.abs(height) <= cfg.ground_distance_threshold_m))
        stats = DetectionStats(input_points=len(xyz), nonfinite_points=nonfinite, ground_points=ground,
                               ground_from_ransac=from_ransac, obstacle_points=len(above), clusters=len(clusters),
                               rejected_clusters=len(clusters) - len(obstacles))
        return Detection(obstacles, stats)


def _checked_xyz(points: np.ndarray) -> np.ndarray:
    array = np.asarray(points)
    if array.ndim != 2 or array.shape[1] < 3:
        raise ValueError(f"points must be an (N, 3+) array of x, y, z[, ...] in the sensor frame; "
                         f"got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"points must be numeric; got dtype {array.dtype}")
    return array[:, :3].astype(np.float64)


def sensor_to_base(xyz: np.ndarray, mount: SensorMount) -> np.ndarray:
    """(N, 3) points from the sensor frame into ``base_link``."""
    c, s = math.cos(mount.yaw_rad), math.sin(mount.yaw_rad)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return xyz @ rotation.T + np.array([mount.x_m, mount.y_m, mount.z_m])


def _inside_range(base: np.ndarray, cfg: LidarObstacleConfig) -> np.ndarray:
    return np.hypot(base[:, 0], base[:, 1]) <= cfg.max_range_m


def _inside_ego(base: np.ndarray, cfg: LidarObstacleConfig) -> np.ndarray:
    return ((np.abs(base[:, 0]) <= cfg.ego_length_m / 2 + cfg.ego_margin_m)
            & (np.abs(base[:, 1]) <= cfg.ego_width_m / 2 + cfg.ego_margin_m))


def _cloud(xyz: np.ndarray) -> o3d.geometry.PointCloud:
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(xyz, dtype=np.float64)))


def _voxel_down_sample(base: np.ndarray, voxel_size_m: float) -> np.ndarray:
    down = np.asarray(_cloud(base).voxel_down_sample(voxel_size_m).points)
    # Open3D returns voxels in hash order; sort so the rest of the pipeline sees one order.
    return down[np.lexsort(down.T[::-1])]


def _ground_plane(base: np.ndarray, cfg: LidarObstacleConfig) -> tuple[np.ndarray, float, bool]:
    """Unit normal (z up) and offset of the ground plane (``height = p . n + offset``),
    and whether RANSAC found it.

    The fitted plane is used only if it is nearly horizontal and passes near base_link's
    origin (which is on the ground by definition); otherwise, e.g. with too few ground
    points or a wall taking the vote, the ground is z = 0 in base_link."""
    up = np.array([0.0, 0.0, 1.0])
    near = base[(np.hypot(base[:, 0], base[:, 1]) <= cfg.ground_fit_range_m)
                & (np.abs(base[:, 2]) <= cfg.ground_search_height_m)]
    if len(near) < max(cfg.min_ground_inliers, cfg.ransac_n):
        logger.debug("%d points near the ground: too few to fit it; using z = 0", len(near))
        return up, 0.0, False
    o3d.utility.random.seed(cfg.ransac_seed)
    (a, b, c, d), _ = _cloud(near).segment_plane(cfg.ground_distance_threshold_m, cfg.ransac_n,
                                                 cfg.ransac_iterations)
    norm = math.copysign(math.sqrt(a * a + b * b + c * c), c)  # normal pointing up
    normal, offset = np.array([a, b, c]) / norm, d / norm
    # Open3D runs RANSAC's iterations on several threads, so even seeded its plane
    # varies from run to run; least-squares refits until the inlier set stops changing
    # reach the same fixed point (and the same bits) from any nearby start.
    chosen = None
    for _ in range(MAX_GROUND_REFITS):
        mask = np.abs(near @ normal + offset) <= cfg.ground_distance_threshold_m
        if chosen is not None and np.array_equal(mask, chosen):
            break
        chosen = mask
        inliers = near[mask]
        if len(inliers) < cfg.min_ground_inliers:
            break
        centroid = inliers.mean(axis=0)
        normal = np.linalg.svd(inliers - centroid, full_matrices=False)[2][2]
        normal = normal if normal[2] >= 0 else -normal
        offset = -float(normal @ centroid)
    tilt = math.acos(min(1.0, normal[2]))
    if len(inliers) < cfg.min_ground_inliers or tilt > cfg.max_ground_tilt_rad or abs(offset) > cfg.max_ground_offset_m:
        logger.debug("ground fit rejected (tilt %.3f rad, %.2f m under the car, %d inliers); using z = 0",
                     tilt, -offset, len(inliers))
        return up, 0.0, False
    return normal, float(offset), True


def _under_structure(low_xy: np.ndarray, high_xy: np.ndarray, cfg: LidarObstacleConfig) -> np.ndarray:
    """Which low points have a point above max_point_height_m right over them: they
    belong to something that goes on up (a pole, a trunk, a building's wall), not to an
    obstacle. Dropped before clustering, so that a pedestrian beside a pole stays."""
    if len(low_xy) == 0 or len(high_xy) == 0:
        return np.zeros(len(low_xy), bool)
    distance, _ = cKDTree(high_xy).query(low_xy, distance_upper_bound=cfg.structure_radius_m)
    return np.isfinite(distance)


def _cluster(above: np.ndarray, sensor_xy: np.ndarray, cfg: LidarObstacleConfig) -> np.ndarray:
    """DBSCAN labels (-1 noise) in bird's-eye view, in the sensor's polar coordinates.

    A spinning LiDAR samples in angle, so two points are neighbours when their azimuths
    differ by about dbscan_eps_azimuth_rad and their ranges by about
    max(dbscan_eps_m, dbscan_eps_per_range * range) (an ellipse: both at once count
    quadratically). Open3D's DBSCAN has one eps, so the points are mapped where eps = 1
    is that ellipse: azimuth onto a circle of radius 1 / dbscan_eps_azimuth_rad (no seam
    behind the car), range onto an axis that is range / dbscan_eps_m up to
    r0 = dbscan_eps_m / dbscan_eps_per_range and grows with log(range) beyond.
    Height is left out (bird's-eye clustering, like Autoware's euclidean_cluster by
    default); overhangs are cropped before."""
    if len(above) == 0:
        return np.zeros(0, np.int64)
    dx, dy = above[:, 0] - sensor_xy[0], above[:, 1] - sensor_xy[1]
    rng = np.hypot(dx, dy)
    azimuth = np.arctan2(dy, dx)
    radial = rng
    if cfg.dbscan_eps_per_range > 0:
        r0 = cfg.dbscan_eps_m / cfg.dbscan_eps_per_range
        radial = np.minimum(rng, r0) + r0 * np.log(np.maximum(rng, r0) / r0)
    circle = 1.0 / cfg.dbscan_eps_azimuth_rad
    embedded = np.stack([circle * np.cos(azimuth), circle * np.sin(azimuth), radial / cfg.dbscan_eps_m], axis=1)
    return np.asarray(_cloud(embedded).cluster_dbscan(1.0, cfg.dbscan_min_points), dtype=np.int64)


class _Scene:
    """The whole scan, for checking a box against the rays that passed by it: the
    sensor and every point (ground included) seen from above, heights above the ground,
    indexed by bearing from the sensor."""

    def __init__(self, sensor_xy: np.ndarray, sensor_height_m: float, xy: np.ndarray, height: np.ndarray) -> None:
        self.sensor_xy = sensor_xy
        self.sensor_height_m = sensor_height_m
        bearing = np.arctan2(xy[:, 1] - sensor_xy[1], xy[:, 0] - sensor_xy[0])
        order = np.argsort(bearing, kind="stable")
        self._bearing, self._xy, self._height = bearing[order], xy[order], height[order]

    def _within_bearings(self, low: float, high: float) -> slice | np.ndarray:
        """Indices of the points whose bearing is in [low, high] (wrapping at pi)."""
        if low < -math.pi:
            return np.r_[np.arange(np.searchsorted(self._bearing, low + 2 * math.pi), len(self._bearing)),
                         np.arange(0, np.searchsorted(self._bearing, high, side="right"))]
        if high > math.pi:
            return np.r_[np.arange(np.searchsorted(self._bearing, low), len(self._bearing)),
                         np.arange(0, np.searchsorted(self._bearing, high - 2 * math.pi, side="right"))]
        return slice(np.searchsorted(self._bearing, low), np.searchsorted(self._bearing, high, side="right"))

    def blocked_rays(self, box: _Footprint, top_m: float, shrink_m: float) -> int:
        """How many rays would have hit ``box`` (from the ground to ``top_m``, shrunk by
        ``shrink_m`` so that rays ending on its faces do not count) before their point."""
        half = box.extents / 2 - shrink_m
        if half.min() <= 0 or top_m <= 2 * shrink_m:
            return 0
        corners = box.centre + np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) * half @ box.axes
        towards = box.centre - self.sensor_xy
        if np.all(np.abs(box.axes @ towards) <= half):  # the sensor stands inside the box
            return 0
        centre_bearing = math.atan2(towards[1], towards[0])
        relative = np.arctan2(corners[:, 1] - self.sensor_xy[1], corners[:, 0] - self.sensor_xy[0]) - centre_bearing
        relative = (relative + math.pi) % (2 * math.pi) - math.pi
        near = self._within_bearings(centre_bearing + relative.min(), centre_bearing + relative.max())
        xy, height = self._xy[near], self._height[near]
        if len(xy) == 0:
            return 0
        start = np.array([*(box.axes @ (self.sensor_xy - box.centre)), self.sensor_height_m])
        end = np.column_stack([(xy - box.centre) @ box.axes.T, height])
        low = np.array([-half[0], -half[1], shrink_m])
        high = np.array([half[0], half[1], top_m - shrink_m])
        step = end - start
        with np.errstate(divide="ignore", invalid="ignore"):
            t_low, t_high = (low - start) / step, (high - start) / step
        parallel = step == 0
        outside = parallel & ((start < low) | (start > high))
        t_in = np.where(parallel, np.where(outside, np.inf, -np.inf), np.minimum(t_low, t_high))
        t_out = np.where(parallel, np.where(outside, -np.inf, np.inf), np.maximum(t_low, t_high))
        enter, leave = t_in.max(axis=1), t_out.min(axis=1)
        return int(np.count_nonzero((enter < leave) & (enter < 1.0) & (leave > 0.0)))


@dataclass(frozen=True)
class _Footprint:
    """An upright box seen from above: centre, unit axes (rows, the first along the
    length) and extents along them, metres."""

    centre: np.ndarray
    axes: np.ndarray
    extents: np.ndarray

    def contains(self, xy: np.ndarray, margin_m: float) -> np.ndarray:
        local = np.abs((xy - self.centre) @ self.axes.T)
        return np.all(local <= self.extents / 2 + margin_m, axis=1)

    def turned(self) -> _Footprint:
        """The same box with its axes swapped, so that the first is the longer."""
        if self.extents[0] >= self.extents[1]:
            return self
        return _Footprint(self.centre, self.axes[::-1].copy(), self.extents[::-1].copy())


def _footprint(xy: np.ndarray, height: np.ndarray, scene: _Scene, cfg: LidarObstacleConfig) -> _Footprint:
    seen = _min_area_rectangle(xy)
    if not cfg.complete_with_size_priors:
        return seen
    return _complete_hidden_sides(seen, xy, height, scene, cfg)


def _absorb_fragments(labels: np.ndarray, xy: np.ndarray, height: np.ndarray, scene: _Scene,
                      cfg: LidarObstacleConfig) -> tuple[np.ndarray, dict[int, _Footprint]]:
    """Labels after merging clusters that lie inside a larger cluster's completed box,
    and the completed boxes of the clusters that took part.

    Rays hit a car's roof in rows whose spacing grows with the square of the range
    (about 1 m at 6 m, 2.5 m at 10 m for a sensor 0.9 m above the roof), so the roof
    breaks away from the face below it; the face's completed box covers those rows."""
    labels = labels.copy()
    count = int(labels.max(initial=-1)) + 1
    sizes = np.bincount(labels[labels >= 0], minlength=count)
    # Largest first; ties by label, which follows the (sorted) point order.
    order = np.lexsort((np.arange(count), -sizes))
    settled = np.zeros(count, bool)
    boxes: dict[int, _Footprint] = {}
    for k in order:
        if settled[k] or sizes[k] < cfg.min_anchor_points:
            continue
        settled[k] = True
        for round_ in range(cfg.absorb_rounds + 1):
            member = labels == k
            boxes[int(k)] = box = _footprint(xy[member], height[member], scene, cfg)
            if round_ == cfg.absorb_rounds:
                break
            inside = box.contains(xy, cfg.absorb_margin_m) & (labels >= 0)
            whole = (np.bincount(labels[inside], minlength=count) == sizes) & ~settled & (sizes > 0)
            if not whole.any():
                break
            labels[(labels >= 0) & whole[np.maximum(labels, 0)]] = k
            sizes[k] += sizes[whole].sum()
            sizes[whole] = 0
            settled[whole] = True
    return labels, boxes


def _obstacle(points: np.ndarray, height: np.ndarray, box: _Footprint | None, scene: _Scene, normal: np.ndarray,
              offset: float, cfg: LidarObstacleConfig) -> Obstacle | None:
    """An upright box around one cluster (``box`` if already completed), or None when
    the cluster is no obstacle."""
    top_m = float(height.max())
    if not cfg.min_cluster_points <= len(points) <= cfg.max_cluster_points or top_m < cfg.min_obstacle_height_m:
        return None
    seen = _min_area_rectangle(points[:, :2])
    if seen.extents[0] > cfg.max_obstacle_length_m:
        return None  # a wall or a building's face
    if box is None:
        box = _complete_hidden_sides(seen, points[:, :2], height, scene, cfg) if cfg.complete_with_size_priors else seen
    # The box stands on the ground plane (the lowest ray on it may pass over the ground).
    x, y = box.centre
    ground_z = -(offset + normal[0] * x + normal[1] * y) / normal[2]
    yaw = _half_turn_wrap(math.atan2(box.axes[0][1], box.axes[0][0]))
    return Obstacle(obstacle_id=-1, x_m=float(x), y_m=float(y), z_m=float(ground_z + top_m / 2), yaw_rad=yaw,
                    length_m=float(box.extents[0]), width_m=float(box.extents[1]), height_m=top_m,
                    point_count=len(points))


def _min_area_rectangle(xy: np.ndarray) -> _Footprint:
    """The minimal-area rectangle around ``xy``, its first axis along the longer side.
    Upright boxes, as the ground truth's."""
    (_, _), (_, _), angle_deg = cv2.minAreaRect(xy.astype(np.float32))
    angle = math.radians(angle_deg)
    return _fit_extents(xy, np.array([math.cos(angle), math.sin(angle)])).turned()


def _fit_extents(xy: np.ndarray, direction: np.ndarray) -> _Footprint:
    """The rectangle around ``xy`` with one side along the unit ``direction``."""
    axes = np.array([direction, [-direction[1], direction[0]]])
    # Extents from projections in float64: cv2 works in float32.
    projected = xy @ axes.T
    low, high = projected.min(axis=0), projected.max(axis=0)
    return _Footprint(((low + high) / 2) @ axes, axes, high - low)


def _complete_hidden_sides(seen: _Footprint, xy: np.ndarray, height: np.ndarray, scene: _Scene,
                           cfg: LidarObstacleConfig) -> _Footprint:
    """Grow a box smaller than its class's size to that size, on its hidden sides.

    The LiDAR sees only the faces towards it, often as a few columns of rays: a cluster
    too wide for a pedestrian, or one column whose top is a car's height (see
    _is_pedestrian), is a vehicle, and a vehicle is the best of a few hypotheses (see
    _vehicle_box). Along an axis whose seen span has the sensor beside it, the face
    towards the sensor is seen and the box grows away from it; along an axis whose span
    has the sensor within it (a face seen head on, end to end), it keeps its middle."""
    margin = cfg.size_prior_margin_m
    if seen.extents[0] > cfg.vehicle_length_m + margin or seen.extents[1] > cfg.vehicle_width_m + margin:
        return seen  # larger than any prior: as seen
    distance = max(float(np.linalg.norm(seen.centre - scene.sensor_xy)), 1e-9)
    if _is_pedestrian(seen, xy, height, scene.sensor_xy, distance, cfg):
        return _grown(seen, np.array([cfg.pedestrian_size_m, cfg.pedestrian_size_m]), scene.sensor_xy, cfg)
    return _vehicle_box(seen, xy, height, scene, cfg)


def _grown(box: _Footprint, size: np.ndarray, sensor_xy: np.ndarray, cfg: LidarObstacleConfig) -> _Footprint:
    """``box`` grown to ``size`` (along its axes): away from the sensor along an axis
    on which the sensor lies beyond the full-size box (the near end face is seen),
    evenly otherwise (the object is seen end to end, its ends sampled sparsely: within
    a column gap of the outermost rays)."""
    centre = box.centre.copy()
    column_gap = cfg.lidar_azimuth_step_rad * float(np.linalg.norm(box.centre - sensor_xy))
    for axis, seen_m, full_m in zip(box.axes, box.extents, size):
        offset = float(axis @ (box.centre - sensor_xy))
        if abs(offset) > (max(seen_m, full_m) + column_gap) / 2:
            centre += axis * math.copysign(max(full_m - seen_m, 0.0) / 2, offset)
    return _Footprint(centre, box.axes, np.maximum(box.extents, size)).turned()


def _vehicle_box(seen: _Footprint, xy: np.ndarray, height: np.ndarray, scene: _Scene,
                 cfg: LidarObstacleConfig) -> _Footprint:
    """The vehicle-sized box that best explains a cluster.

    A few columns of rays do not fix a car's yaw, nor which way its length runs. Each
    hypothesis (yaw from the faces, i.e. the points below the roof band; across the line
    of sight; along base_link's axes, as traffic mostly runs; times length along either
    axis) is grown from the points and scored by the rays it would have blocked (a car
    cannot stand where the LiDAR saw through) plus how far the face points lie from
    the box's visible faces, in units of face_fit_tolerance_m. Ties keep that order."""
    margin = cfg.size_prior_margin_m
    ray = seen.centre - scene.sensor_xy
    distance = max(float(np.linalg.norm(ray)), 1e-9)
    top = float(height.max())
    faces = xy[height < top - cfg.roof_band_m]
    if len(faces) < 2:
        faces = xy
    directions = []
    face = _min_area_rectangle(faces)
    if face.extents[0] > cfg.narrow_extent_m:
        directions.append(face.axes[0])
    directions += [np.array([-ray[1], ray[0]]) / distance, np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    best, best_cost = None, math.inf
    tried: list[float] = []
    for direction in directions:
        angle = math.atan2(direction[1], direction[0]) % math.pi
        if any(abs((angle - other + math.pi / 2) % math.pi - math.pi / 2) < cfg.same_yaw_rad for other in tried):
            continue
        tried.append(angle)
        tight = _fit_extents(xy, direction)
        # The length first along the axis nearer the line of sight, unless a face is
        # longer than a car is wide.
        length_first = tight.extents[0] > cfg.vehicle_width_m + margin or (
            tight.extents[1] <= cfg.vehicle_width_m + margin and abs(tight.axes[0] @ ray) > abs(tight.axes[1] @ ray))
        sizes = [np.array([cfg.vehicle_length_m, cfg.vehicle_width_m]),
                 np.array([cfg.vehicle_width_m, cfg.vehicle_length_m])]
        for size in sizes if length_first else sizes[::-1]:
            if np.any(tight.extents > size + margin):
                continue
            box = _grown(tight, size, scene.sensor_xy, cfg)
            cost = (_face_misfit(box, faces, scene.sensor_xy)
                    + np.maximum(tight.extents - size, 0.0).sum()) / cfg.face_fit_tolerance_m
            # A later hypothesis must be clearly better: rounding must not decide a tie.
            if cost >= best_cost - _CLEARLY_BETTER:
                continue
            cost += scene.blocked_rays(box, top, cfg.ray_check_shrink_m)
            if cost < best_cost - _CLEARLY_BETTER:
                best, best_cost = box, cost
    return best if best is not None else seen


def _face_misfit(box: _Footprint, faces: np.ndarray, sensor_xy: np.ndarray) -> float:
    """RMS distance of face points to the nearest face of ``box`` that the sensor sees."""
    local = (faces - box.centre) @ box.axes.T
    sensor = box.axes @ (sensor_xy - box.centre)
    half = box.extents / 2
    visible = np.abs(sensor) > half
    if not visible.any():
        return 0.0
    gaps = np.abs(local - np.sign(sensor) * half)[:, visible]
    return float(np.sqrt(np.mean(gaps.min(axis=1) ** 2)))


def _is_pedestrian(seen: _Footprint, xy: np.ndarray, height: np.ndarray, sensor_xy: np.ndarray, distance_m: float,
                   cfg: LidarObstacleConfig) -> bool:
    """Whether a cluster that fits a vehicle is rather a pedestrian (or a pole).

    Wider than narrow_extent_m: no. Narrower than a vehicle's back could look at this
    range: yes (k columns of rays span k - 1 gaps, and a face of width W gets at least
    floor(W / gap) columns, so its seen span is at least W - 2 gaps). Otherwise its
    height decides, the split halfway between a car's and a pedestrian's:
    - a hit on its top surface (behind the face nearest the sensor, higher than that
      face's top: a car's roof, a head) is its height;
    - else the face's top: a ray hits within one channel gap g = lidar_channel_step_rad
      * range below an object's true top, so a car's face tops out in [H_car - g, H_car]
      and a pedestrian's in [H_ped - g, H_ped]; the split is the middle of the overlap."""
    if seen.extents[0] > cfg.narrow_extent_m:
        return False
    column_gap = cfg.lidar_azimuth_step_rad * distance_m
    if seen.extents[0] + 2 * column_gap < cfg.vehicle_width_m - cfg.size_prior_margin_m:
        return True
    point_range = np.hypot(xy[:, 0] - sensor_xy[0], xy[:, 1] - sensor_xy[1])
    in_face = point_range <= point_range.min() + cfg.face_depth_m
    face_top = float(height[in_face].max())
    top_surface = height[~in_face & (height > face_top)]
    if len(top_surface):
        return float(top_surface.max()) > (cfg.vehicle_height_m + cfg.pedestrian_height_m) / 2
    channel_gap = cfg.lidar_channel_step_rad * distance_m
    return face_top > (cfg.vehicle_height_m + cfg.pedestrian_height_m - channel_gap) / 2


def _half_turn_wrap(angle: float) -> float:
    """An axis direction in (-pi/2, pi/2]."""
    wrapped = (angle + math.pi / 2) % math.pi - math.pi / 2
    return math.pi / 2 if wrapped == -math.pi / 2 else wrapped


def _with_id(obstacle: Obstacle, obstacle_id: int) -> Obstacle:
    return Obstacle(obstacle_id, obstacle.x_m, obstacle.y_m, obstacle.z_m, obstacle.yaw_rad, obstacle.length_m,
                    obstacle.width_m, obstacle.height_m, obstacle.point_count)
