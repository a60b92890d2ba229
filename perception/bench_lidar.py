"""LiDAR obstacles on real simulator scans: recall, precision and latency.

``lidar_obstacle_bench()`` is what ``make bench`` runs (about 100 scans);
``python -m perception.bench_lidar --scans 300`` is the larger evaluation.

Scoring (perception.metrics.match_obstacles: one-to-one, centres within 1 m, base_link):
- recall over the vehicles and pedestrians within 40 m that the LiDAR can see: at
  least ``min_points`` of the scan's points carry the object's semantic tag, lie in its
  box and are above the ground threshold (lower ones are indistinguishable from the
  road). The tags are the simulator's labels; the detector never reads them.
- actor precision: detections within 40 m that match a vehicle or pedestrian (any
  range, seeable or not). The rest are mostly poles, fences, bins and hedges, which are
  obstacles too, so also:
- phantom rate: detections within 40 m whose box (widened by 0.5 m) holds no point of
  anything but the ground: obstacles on an empty road; and what the others hit.

Collecting scans drives the simulator, so this module imports ``sim`` (lazily): it is a
benchmark entry point, like the tests, not algorithm code.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from drivestack.schema import SEMANTIC_CLASSES, SEMANTIC_ID, Box3D, ObjectClass, Obstacle
from perception.lidar_obstacles import LidarObstacleConfig, LidarObstacleDetector, SensorMount, sensor_to_base
from perception.metrics import match_obstacles

logger = logging.getLogger(__name__)

TOWNS = ("grid_town", "multilane_town", "holdout_town")
CLASS_TAG = {ObjectClass.VEHICLE: SEMANTIC_ID["car"], ObjectClass.PEDESTRIAN: SEMANTIC_ID["pedestrian"]}
GROUND_TAGS = tuple(SEMANTIC_ID[name] for name in ("road", "sidewalk", "terrain", "road_line"))
RANGE_BANDS_M = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 40.0))
_CLASS_NAME = {c.class_id: c.name for c in SEMANTIC_CLASSES}


@dataclass(frozen=True, eq=False)
class LabelledScan:
    """One simulator LiDAR scan ((N, 5): x, y, z in the sensor frame, intensity,
    semantic tag), its mount and the frame's vehicles and pedestrians (base_link)."""

    points: np.ndarray
    mount: SensorMount
    boxes: tuple[Box3D, ...]
    town: str = ""


def points_in_box(base_xyz: np.ndarray, box: Box3D | Obstacle, margin_m: float) -> np.ndarray:
    """Which base_link points lie in an upright box widened by ``margin_m``."""
    c, s = math.cos(box.yaw_rad), math.sin(box.yaw_rad)
    dx, dy = base_xyz[:, 0] - box.x_m, base_xyz[:, 1] - box.y_m
    along, across = c * dx + s * dy, -s * dx + c * dy
    return ((np.abs(along) <= box.length_m / 2 + margin_m) & (np.abs(across) <= box.width_m / 2 + margin_m)
            & (np.abs(base_xyz[:, 2] - box.z_m) <= box.height_m / 2 + margin_m))


def seeable(scan: LabelledScan, min_points: int, above_ground_m: float = 0.25) -> list[bool]:
    """Per box of ``scan``: whether at least ``min_points`` of its own points are above
    the ground threshold."""
    base = sensor_to_base(scan.points[:, :3].astype(np.float64), scan.mount)
    tags = scan.points[:, 4]
    high = base[:, 2] > above_ground_m
    return [int(np.count_nonzero(points_in_box(base, box, 0.1) & high & (tags == CLASS_TAG[box.object_class])))
            >= min_points for box in scan.boxes]


def hit_class(scan: LabelledScan, obstacle: Obstacle, margin_m: float = 0.5, above_ground_m: float = 0.25) -> str:
    """The semantic class of most points in the obstacle's box, widened, other than the
    ground's; "" when there are none (an obstacle on empty ground)."""
    base = sensor_to_base(scan.points[:, :3].astype(np.float64), scan.mount)
    solid = ~np.isin(scan.points[:, 4], GROUND_TAGS) & (base[:, 2] > above_ground_m)
    tags = scan.points[solid, 4][points_in_box(base[solid], obstacle, margin_m)].astype(np.int64)
    return _CLASS_NAME[int(np.bincount(tags).argmax())] if len(tags) else ""


def on_real_object(scan: LabelledScan, obstacle: Obstacle, margin_m: float = 0.5,
                   above_ground_m: float = 0.25) -> bool:
    """Whether the obstacle's box, widened, holds a point of something other than the ground."""
    return hit_class(scan, obstacle, margin_m, above_ground_m) != ""


def _centres(items: Sequence[Box3D | Obstacle]) -> np.ndarray:
    return np.array([[item.x_m, item.y_m] for item in items], dtype=np.float64).reshape(-1, 2)


def evaluate(detector: LidarObstacleDetector, scans: Sequence[LabelledScan], min_points: Sequence[int] = (3, 5),
             max_range_m: float = 40.0, match_distance_m: float = 1.0) -> dict:
    """Recall (overall, per class, per range band) for each seeability threshold in
    ``min_points``, actor precision, phantom rate and per-scan latency of ``detector``."""
    matched: dict[tuple[int, str], int] = {}
    total: dict[tuple[int, str], int] = {}
    detections = on_actor = 0
    hit: dict[str, int] = {}
    latency_ms = []
    for scan in scans:
        started = time.perf_counter()
        obstacles = detector.detect(scan.points, scan.mount)
        latency_ms.append(1e3 * (time.perf_counter() - started))
        pred = _centres(obstacles)
        for threshold in min_points:
            for name, keep in _groups(scan, seeable(scan, threshold)):
                gt = _centres([box for box, k in zip(scan.boxes, keep) if k])
                match = match_obstacles(pred, gt, max_range_m, match_distance_m)
                key = (threshold, name)
                matched[key] = matched.get(key, 0) + match.matched
                total[key] = total.get(key, 0) + match.num_gt
        anyone = match_obstacles(pred, _centres(scan.boxes), max_range_m, match_distance_m)
        in_range = [o for o in obstacles if math.hypot(o.x_m, o.y_m) <= max_range_m]
        detections += len(in_range)
        on_actor += len(in_range) - anyone.false_positives
        for obstacle in in_range:
            name = hit_class(scan, obstacle) or "nothing (phantom)"
            hit[name] = hit.get(name, 0) + 1
    recall = {f"min_points_{t}": {name: {"recall": round(matched[t, name] / total[t, name], 4) if total[t, name]
                                         else None, "objects": total[t, name]}
                                  for (t2, name) in total if t2 == t} for t in min_points}
    return {
        "scans": len(scans),
        "recall": recall,
        "actor_precision": round(on_actor / detections, 4) if detections else None,
        "phantom_rate": round(hit.get("nothing (phantom)", 0) / detections, 4) if detections else None,
        "detections_per_scan": round(detections / max(len(scans), 1), 2),
        "detections_by_what_they_hit": dict(sorted(hit.items(), key=lambda item: -item[1])),
        "latency_median_ms": round(float(np.median(latency_ms)), 2) if latency_ms else None,
        "latency_p95_ms": round(float(np.percentile(latency_ms, 95)), 2) if latency_ms else None,
    }


def _groups(scan: LabelledScan, visible: Sequence[bool]) -> Iterator[tuple[str, list[bool]]]:
    """(name, which boxes count) for overall, per town, per class and per range band."""
    boxes = scan.boxes
    yield "all", list(visible)
    yield scan.town, list(visible)
    for object_class in CLASS_TAG:
        yield object_class.value, [v and b.object_class == object_class for b, v in zip(boxes, visible)]
    for low, high in RANGE_BANDS_M:
        yield f"{low:.0f}-{high:.0f} m", [v and low <= math.hypot(b.x_m, b.y_m) < high
                                          for b, v in zip(boxes, visible)]


def simulated_scans(towns: Sequence[str] = TOWNS, seeds: Sequence[int] = (7,), scans_per_episode: int = 34,
                    every_steps: int = 12, warmup_steps: int = 20, npc_vehicles: int = 20, pedestrians: int = 20,
                    route_length_m: float = 400.0) -> list[LabelledScan]:
    """Scans of the expert driving each town with traffic: the full suite's LiDAR and
    the labels, no cameras (fast)."""
    from sim.builtin import BuiltinSimulator
    from sim.expert import ExpertDriver
    from sim.scenario import Scenario
    from sim.sensors.suite import SensorSuite, load_suite

    lidar = load_suite("full").lidar
    mount = SensorMount(lidar.x_m, lidar.y_m, lidar.z_m, lidar.yaw_rad)
    suite = SensorSuite(lidar=lidar, ground_truth=True)
    scans = []
    sim = BuiltinSimulator()
    try:
        for town in towns:
            for seed in seeds:
                scenario = Scenario(name=f"lidar_bench_{town}_{seed}", town=town, route_length_m=route_length_m,
                                    npc_vehicles=npc_vehicles, pedestrians=pedestrians, seed=seed, sensors=suite)
                obs = sim.reset(scenario)
                expert = ExpertDriver(sim.road_map, sim.route, sim.vehicle, sim.dt_s)
                for step in range(warmup_steps + scans_per_episode * every_steps):
                    obs = sim.step(expert.run_step(obs))
                    if step >= warmup_steps and (step - warmup_steps) % every_steps == 0:
                        boxes = tuple(b for b in obs.ground_truth.boxes_3d if b.object_class in CLASS_TAG)
                        scans.append(LabelledScan(obs.lidar.points, mount, boxes, town))
    finally:
        sim.close()
    return scans


def lidar_obstacle_bench(seeds: Sequence[int] = (7,), scans_per_episode: int = 34,
                         config: LidarObstacleConfig | None = None) -> dict:
    """``make bench``: about 100 scans over the three towns (20 NPC vehicles, 20
    pedestrians), scored as the module says, for seeability thresholds of 3 and 5 points."""
    started = time.perf_counter()
    scans = simulated_scans(seeds=seeds, scans_per_episode=scans_per_episode)
    collect_s = time.perf_counter() - started
    result = evaluate(LidarObstacleDetector(config), scans)
    result["towns"] = list(TOWNS)
    result["seeds"] = list(seeds)
    result["collect_s"] = round(collect_s, 1)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7])
    parser.add_argument("--scans-per-episode", type=int, default=34)
    args = parser.parse_args(argv)
    result = lidar_obstacle_bench(seeds=args.seeds, scans_per_episode=args.scans_per_episode)
    print(json.dumps(result, indent=2))  # the CLI's own output


if __name__ == "__main__":
    main()
