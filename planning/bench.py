"""Planning benchmark (`make bench`): what one step of the modular agent costs, and how
it drives beside the expert.

1. Step time on one core (BLAS and torch threads pinned to 1): the modular agent drives
   ``--steps`` steps of a scenario in-process with the real camera net and LiDAR detector;
   per step the planner (tracking, behaviour, control, supervisor) is timed apart from
   the perception it consumes. Goal: planner <= 5 ms.
2. Driving score: ``drivestack eval drive`` with the expert, the modular agent and the
   learned policy alone and under the supervisor (``--agents``) on a suite (default:
   the held-out town), side by side in one run.

Benchmark entry points may import the simulator (docs/architecture.md, section 5).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def step_times(scenario_name: str, steps: int) -> dict:
    import torch
    torch.set_num_threads(1)
    from drivestack.agents import agent_factory, scenario_for_agent
    from sim.builtin import BuiltinSimulator
    from sim.scenario import load_scenario
    scenario = scenario_for_agent("modular", load_scenario(scenario_name))
    sim = BuiltinSimulator()
    try:
        obs = sim.reset(scenario)
        agent = agent_factory("modular", scenario)(sim.road_map, sim.route, sim)
        agent_ms, sim_ms = [], []
        for _ in range(steps):
            started = time.perf_counter()
            control = agent.run_step(obs)
            stepped = time.perf_counter()
            obs = sim.step(control)
            agent_ms.append((stepped - started) * 1e3)
            sim_ms.append((time.perf_counter() - stepped) * 1e3)
    finally:
        sim.close()
    planner = np.array(agent.step_ms)
    total = np.array(agent_ms)
    return {"scenario": scenario.name, "steps": steps,
            "planner_ms_median": float(np.median(planner)), "planner_ms_p95": float(np.percentile(planner, 95)),
            "perception_ms_median": float(np.median(total - planner)),
            "agent_ms_median": float(np.median(total)), "simulator_ms_median": float(np.median(sim_ms))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--suite", default="holdout", help="suite for the driving score ('' to skip)")
    parser.add_argument("--agents", nargs="+", default=["expert", "modular", "policy", "policy+safety"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/bench/planning"))
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "step": step_times(args.scenario, args.steps)}
    s = report["step"]
    print(f"modular agent on {s['scenario']}, {s['steps']} steps, one thread: planner {s['planner_ms_median']:.2f} ms "
          f"median ({s['planner_ms_p95']:.2f} p95), perception {s['perception_ms_median']:.1f} ms, simulator "
          f"{s['simulator_ms_median']:.1f} ms per step")
    if args.suite:
        from rich.console import Console

        from sim.evaluation import agents_table, evaluate, scenarios_table
        from sim.scenario import suite
        started = time.perf_counter()
        result = evaluate(args.agents, suite(args.suite), episodes=1, workers=args.workers, out=args.out / "eval",
                          command=f"python -m planning.bench --suite {args.suite} --agents {' '.join(args.agents)}")
        report["eval_wall_s"] = time.perf_counter() - started
        report["eval"] = {agent: data["global"] for agent, data in result["agents"].items()}
        console = Console(width=160)
        console.print(agents_table(result))
        console.print(scenarios_table(result))
    (args.out / "bench.json").write_text(json.dumps(report, indent=2))
    print(f"raw numbers: {args.out / 'bench.json'}")


if __name__ == "__main__":
    main()
