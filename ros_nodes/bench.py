"""Closed-loop rate through the ROS 2 graph against the in-process runner, same episode.

`make bench` runs it after `sim.bench`. Three runs of one scenario with the sensor
issue's suite (`camera_lidar`: a 320x160 RGB + depth + semantic camera and a
32-channel LiDAR):

- in-process: ``run_episode`` with the expert, no ROS;
- ROS collect: launch/collect.yaml (bridge with the autopilot + recorder);
- ROS drive: launch/drive.yaml (bridge + expert agent node + recorder), lockstep.

Rates are simulated steps per wall second of the episode loop (start-up excluded);
drops are per-frame messages the bag is missing against the frames the bridge sent.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ros_nodes.bag.info import bag_info
from ros_nodes.launcher import load_launch, run_launch
from sim.builtin import BuiltinSimulator
from sim.episode import run_episode
from sim.expert import ExpertDriver
from sim.scenario import resolve_scenario

LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"
SCENARIO, SENSORS = "default", "camera_lidar"
PER_FRAME_TOPICS = ("/clock", "/carla/ego_vehicle/odometry", "/carla/ego_vehicle/lidar",
                    "/carla/ego_vehicle/rgb_front/image", "/carla/ego_vehicle/depth_front/image")


def in_process_rate() -> dict:
    scenario = resolve_scenario(SCENARIO, sensors=SENSORS)
    sim = BuiltinSimulator()
    run = run_episode(sim, scenario, lambda m, r, s: ExpertDriver(m, r, s.vehicle, s.dt_s))
    sim.close()
    steps = len(run.trajectory) - 1
    return {"runner": "in-process (no ROS)", "steps": steps, "steps_per_s": 1.0 / (run.real_time_factor * sim.dt_s),
            "dropped": 0, "digest": run.result.trajectory_digest}


def ros_rate(launch_file: str, label: str, work: Path) -> dict:
    out = work / Path(launch_file).stem
    description = load_launch(LAUNCH_DIR / launch_file, {"scenario": SCENARIO, "sensors": SENSORS, "out": str(out)})
    with open(work / f"{label}.log", "w") as log_file:
        code = run_launch(description, stdout=log_file, stderr=log_file)
    if code:
        raise RuntimeError(f"{launch_file} exited with {code}; see {work / (label + '.log')}")
    route = json.loads((out / "results.json").read_text())["routes"][0]
    frames = route["extra"]["frames_published"]
    counts = {t.name: t.count for t in bag_info(out / "bag").topics}
    dropped = sum(frames - counts.get(topic, 0) for topic in PER_FRAME_TOPICS)
    return {"runner": label, "steps": frames - 1, "steps_per_s": route["extra"]["steps_per_s"], "dropped": dropped,
            "digest": route["trajectory_digest"], "control_faults": route["extra"]["control_faults"]}


def main() -> None:
    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="drivestack_ros_bench_") as tmp:
        work = Path(tmp)
        rows = [in_process_rate(),
                ros_rate("collect.yaml", "ROS: bridge (autopilot) + recorder", work),
                ros_rate("drive.yaml", "ROS: bridge + agent node + recorder", work)]
    base = rows[0]["steps_per_s"]
    table = Table(title=f"Closed loop, scenario {SCENARIO}, sensors {SENSORS} ({rows[0]['steps']} steps)")
    for column in ("runner", "steps/s", "vs. in-process", "dropped msgs", "trajectory"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["runner"], f"{r['steps_per_s']:.1f}", f"{r['steps_per_s'] / base:.2f}", str(r["dropped"]),
                      r["digest"])
    console.print(table)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
              "date": time.strftime("%Y-%m-%d"), "ros_closed_loop": rows}
    out = Path("out/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "ros_bench.json").write_text(json.dumps(report, indent=2))
    console.print(f"raw numbers: {out / 'ros_bench.json'}")


if __name__ == "__main__":
    main()
