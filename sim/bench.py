"""`make bench`: simulator speed and the expert's driving score, measured in one run.

Speeds are compared side by side in the same process (ratios), since the machines are
noisy. Results go to stdout as a table and to ``out/bench/bench.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sim.builtin import BuiltinSimulator
from sim.driving_score import format_results_table, global_score
from sim.episode import run_episode
from sim.expert import ExpertDriver
from sim.scenario import Scenario, benchmark_suite
from sim.sensors.camera_model import CameraConfig
from sim.sensors.lidar import LidarConfig
from sim.sensors.suite import SensorSuite, load_suite

STEPS = 4000
SENSOR_STEPS = 400


def _expert(road_map, route, sim):
    return ExpertDriver(road_map, route, sim.vehicle, sim.dt_s)


def simulator_steps_per_s(town: str, npc_vehicles: int, pedestrians: int, steps: int = STEPS,
                          sensors: SensorSuite = SensorSuite()) -> float:
    """Steps per second of ``Simulator.step`` alone; the expert drives but is not timed."""
    sim = BuiltinSimulator()
    scenario = Scenario(name="bench", town=town, route_length_m=3000.0, npc_vehicles=npc_vehicles,
                        pedestrians=pedestrians, seed=1, sensors=sensors)
    obs = sim.reset(scenario)
    expert = _expert(sim.road_map, sim.route, sim)
    stepping_s = 0.0
    for _ in range(steps):
        control = expert.run_step(obs)
        started = time.perf_counter()
        obs = sim.step(control)
        stepping_s += time.perf_counter() - started
    sim.close()
    return steps / stepping_s


def _camera(width_px: int, height_px: int, kinds: tuple[str, ...]) -> CameraConfig:
    return CameraConfig(name="front", width_px=width_px, height_px=height_px, fov_deg=90.0, x_m=1.5, z_m=1.6,
                        kinds=kinds)


# (label, suite): the configuration is one 320x160 RGB + depth + semantic camera
# and a 32-channel LiDAR; the others split its cost and show the larger image.
_THREE_PASSES = ("rgb", "depth", "semantic")
SENSOR_CONFIGS = (
    ("no sensors", SensorSuite()),
    ("LiDAR 32 ch", SensorSuite(lidar=LidarConfig())),
    ("camera 320x160 rgb", SensorSuite(cameras=(_camera(320, 160, ("rgb",)),))),
    ("camera 320x160 rgb+depth+semantic", SensorSuite(cameras=(_camera(320, 160, _THREE_PASSES),))),
    ("camera 320x160 rgb+depth+semantic + LiDAR 32 ch",
     SensorSuite(cameras=(_camera(320, 160, _THREE_PASSES),), lidar=LidarConfig())),
    ("suite 'full' (+ instance, labels, IMU/GNSS noise)", load_suite("full")),
    ("camera 640x360 rgb+depth+semantic + LiDAR 32 ch",
     SensorSuite(cameras=(_camera(640, 360, _THREE_PASSES),), lidar=LidarConfig())),
)


def sensor_rows(console: Console, steps: int = SENSOR_STEPS) -> list[dict]:
    rows = []
    for label, suite in SENSOR_CONFIGS:
        rate = simulator_steps_per_s("grid_town", 20, 0, steps, sensors=suite)
        rows.append({"sensors": label, "steps_per_s": rate, "ms_per_step": 1000.0 / rate})
    table = Table(title=f"Simulator steps/s with sensors (grid_town, 20 NPCs, {steps} steps, one process)")
    for column in ("sensors", "steps/s", "ms/step", "vs. no sensors"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["sensors"], f"{r['steps_per_s']:.0f}", f"{r['ms_per_step']:.2f}",
                      f"{r['steps_per_s'] / rows[0]['steps_per_s']:.3f}")
    console.print(table)
    return rows


def main() -> dict:
    console = Console()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    console.print(f"machine: {machine}")
    rows = []
    for town, npcs, peds in (("multilane_town", 0, 0), ("multilane_town", 20, 0), ("multilane_town", 50, 30),
                             ("grid_town", 20, 0)):
        rate = simulator_steps_per_s(town, npcs, peds)
        rows.append({"town": town, "npc_vehicles": npcs, "pedestrians": peds, "steps_per_s": rate})
    base = rows[0]["steps_per_s"]
    table = Table(title=f"Simulator steps/s without sensors ({STEPS} steps, one process)")
    for column in ("town", "NPC vehicles", "pedestrians", "steps/s", "x real time (dt 0.05 s)", "vs. no traffic"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["town"], str(r["npc_vehicles"]), str(r["pedestrians"]), f"{r['steps_per_s']:.0f}",
                      f"{r['steps_per_s'] * 0.05:.0f}", f"{r['steps_per_s'] / base:.2f}")
    console.print(table)
    sensors = sensor_rows(console)

    started = time.perf_counter()
    results = [run_episode(BuiltinSimulator(), s, _expert).result for s in benchmark_suite()]
    wall_s = time.perf_counter() - started
    summary = global_score(results)
    console.print(format_results_table(results, summary))
    collisions = sum(1 for r in results for e in r.infractions if e.kind.value.startswith("collisions"))
    console.print(f"expert benchmark: DS {summary.driving_score:.2f}, {collisions} collisions, "
                  f"{summary.km_driven:.2f} km in {wall_s:.0f} s wall")
    report = {"machine": machine, "simulator": rows, "sensors": sensors,
              "expert": {"driving_score": summary.driving_score, "route_completion_pct": summary.route_completion_pct,
                         "infraction_penalty": summary.infraction_penalty, "collisions": collisions,
                         "km_driven": summary.km_driven, "wall_s": wall_s,
                         "routes": {r.scenario: r.driving_score for r in results}}}
    out = Path("out/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=float))
    return report


if __name__ == "__main__":
    main()
