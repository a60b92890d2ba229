"""Policy inference latency: one 320x160 front-camera frame at a time, as the policy agent runs.

``python -m models.bench_policy`` times ``DrivingPolicy`` (normalisation, the net, the
outputs back to floats) at batch 1 on the CPU with 2 and 1 torch threads, for each
backbone, untrained (weights do not change the time). The goal is <= 15 ms per frame on
2 cores. Median and p95 over ``FRAMES`` frames after ``WARMUP`` frames; the best frame
too, which on a machine shared with other work is the closest to the uncontended cost.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch
from rich import box
from rich.console import Console
from rich.table import Table

from drivestack.schema import RoadOption
from models.driving_policy import DrivingPolicy
from models.policy_net import BACKBONES, build_policy

THREADS = (2, 1)
WARMUP = 10
FRAMES = 100
BUDGET_MS = 15.0


def frame_times_ms(policy: DrivingPolicy, frames: int = FRAMES, warmup: int = WARMUP) -> np.ndarray:
    """Per-frame latency (ms) of ``policy`` on random images, speeds and commands."""
    rng = np.random.default_rng(0)
    width, height = policy.image_size
    images = rng.integers(0, 256, (8, height, width, 3), dtype=np.uint8)
    commands = list(RoadOption)
    times = []
    for i in range(warmup + frames):
        image, command = images[i % len(images)], commands[i % len(commands)]
        started = time.perf_counter()
        policy(image, float(rng.uniform(0.0, 15.0)), command)
        times.append(time.perf_counter() - started)
    return 1e3 * np.array(times[warmup:])


def main(backbones: tuple[str, ...] = BACKBONES, threads: tuple[int, ...] = THREADS) -> dict:
    console = Console(width=max(Console().width, 120))  # a markdown table must not wrap
    previous_threads = torch.get_num_threads()
    rows = []
    try:
        for backbone in backbones:
            torch.manual_seed(0)
            policy = DrivingPolicy(build_policy({"backbone": backbone}))
            parameters = sum(p.numel() for p in policy.model.parameters())
            backbone_parameters = sum(p.numel() for p in policy.model.backbone.parameters())
            for count in threads:
                torch.set_num_threads(count)
                times = frame_times_ms(policy)
                rows.append({"backbone": backbone, "threads": count, "parameters": parameters,
                             "backbone_parameters": backbone_parameters, "median_ms": float(np.median(times)),
                             "p95_ms": float(np.percentile(times, 95)), "best_ms": float(times.min())})
    finally:
        torch.set_num_threads(previous_threads)
    width, height = build_policy().image_size
    table = Table(title=f"Policy inference, {width}x{height} image, batch 1, CPU ({FRAMES} frames after "
                        f"{WARMUP} warm-up; goal <= {BUDGET_MS:.0f} ms on 2 threads)", box=box.MARKDOWN)
    for column in ("backbone", "parameters (backbone)", "torch threads", "median ms", "p95 ms", "best ms"):
        table.add_column(column, justify="left" if column == "backbone" else "right")
    for r in rows:
        table.add_row(r["backbone"], f"{r['parameters'] / 1e6:.2f} M ({r['backbone_parameters'] / 1e6:.2f} M)",
                      str(r["threads"]), f"{r['median_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['best_ms']:.1f}")
    console.print(table)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"numpy {np.__version__}")
    console.print(f"machine: {machine}")
    return {"rows": rows, "machine": machine, "budget_ms": BUDGET_MS}


if __name__ == "__main__":
    main()
