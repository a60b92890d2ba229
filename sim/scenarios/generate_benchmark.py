"""Write the benchmark scenario files (sim/scenarios/bench_*.yaml) from seeded routes.

Each route is a seeded random drive on a shipped town, stored as start pose and goal so
the files stay readable and editable; re-run after changing a town:
``python -m sim.scenarios.generate_benchmark``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from sim.builtin import load_town
from sim.route_planner import RoutePlanner

OUT_DIR = Path(__file__).parent
# (town, split, route seeds, NPC vehicles, pedestrians, weather)
SUITE = (
    ("grid_town", "train", (11, 12, 13), 25, 20, "clear_noon"),
    ("multilane_town", "train", (21, 22, 23), 40, 20, "overcast"),
    ("holdout_town", "test", (31, 32, 33), 30, 20, "sunset"),
)
ROUTE_LENGTH_M = 600.0


def _via_points(route, count: int = 4):
    """Route points spread evenly, avoiding junctions where a point is ambiguous."""
    n = len(route.waypoints)
    picks = []
    for k in range(1, count + 1):
        i = k * n // (count + 1)
        while i < n - 1 and route.waypoints[i].option.name in ("LEFT", "RIGHT", "STRAIGHT"):
            i += 1
        picks.append(route.waypoints[i])
    return picks


def main() -> list[Path]:
    written = []
    for town, split, seeds, npcs, peds, weather in SUITE:
        road_map, _ = load_town(town)
        planner = RoutePlanner(road_map)
        for seed in seeds:
            route = planner.random_route(np.random.default_rng(seed), ROUTE_LENGTH_M)
            first, last = route.waypoints[0], route.waypoints[-1]
            scenario = {
                "name": f"bench_{town}_{seed}",
                "description": f"{ROUTE_LENGTH_M:.0f} m seeded route on {town} ({split} split)",
                "town": town,
                "start": [round(first.x_m, 2), round(first.y_m, 2), round(first.yaw_rad, 4)],
                # Via points keep the planned route on the seeded drive, not the shortest path.
                "waypoints": [[round(w.x_m, 2), round(w.y_m, 2)] for w in _via_points(route)],
                "goal": [round(last.x_m, 2), round(last.y_m, 2)],
                "npc_vehicles": npcs,
                "pedestrians": peds,
                "weather": weather,
                "seed": seed,
                "split": split,
                "benchmark": True,
            }
            path = OUT_DIR / f"bench_{town}_{seed}.yaml"
            path.write_text(yaml.safe_dump(scenario, sort_keys=False))
            written.append(path)
    return written


if __name__ == "__main__":
    for p in main():
        print(p)
