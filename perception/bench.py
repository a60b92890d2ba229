"""Perception latency side by side, one run: the multi-task net (torch and ONNX Runtime)
against the torchvision baselines, per 320x160 frame on 2 CPU threads; then the LiDAR
obstacle benchmark. `make bench` runs it.

Latency is what a node pays per image: the network and decoding its outputs into
boxes, the mask and lanes. Weights do not change the cost, so untrained nets are timed
when no shipped weights exist (the table says which).
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from models.baselines import (build_detection_baseline, build_segmentation_baseline, run_detection_baseline,
                              run_segmentation_baseline)
from models.onnx_export import OnnxMultiTask, export_onnx
from models.perception_net import build_multitask
from models.weights import load_weights
from perception.camera_pipeline import DEFAULT_WEIGHTS
from perception.evaluate import latency_ms, multitask_predictor

THREADS = 2
RUNS, WARMUP = 40, 5
SIZE = (320, 160)


def _median_ms(predict, images: torch.Tensor) -> float:
    return latency_ms(predict, images, runs=RUNS, warmup=WARMUP)["median_ms"]


def _params(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def camera_rows() -> tuple[list[dict], str]:
    torch.set_num_threads(THREADS)
    if DEFAULT_WEIGHTS.exists():
        config, state, _ = load_weights(DEFAULT_WEIGHTS, "perception")
        net, source = build_multitask(config), f"shipped {DEFAULT_WEIGHTS.name}"
        net.load_state_dict(state)
    else:
        torch.manual_seed(0)
        net, source = build_multitask(), "untrained (no shipped weights yet)"
    net.eval()
    images = torch.randn(8, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(0))
    rows = []
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxMultiTask(export_onnx(net, Path(tmp) / "net.onnx", SIZE), threads=THREADS)
        rows.append({"model": "MultiTaskNet (detection + segmentation + lanes), torch", "params_m": _params(net),
                     "ms": _median_ms(multitask_predictor(net, torch.device("cpu")), images)})
        rows.append({"model": "MultiTaskNet, ONNX Runtime (CPU)", "params_m": _params(net),
                     "ms": _median_ms(multitask_predictor(onnx, torch.device("cpu")), images)})
        detector, segmenter = build_detection_baseline().eval(), build_segmentation_baseline().eval()
        rows.append({"model": "SSDlite320 MobileNetV3 (detection only)", "params_m": _params(detector),
                     "ms": _median_ms(lambda x: run_detection_baseline(detector, x), images)})
        rows.append({"model": "LR-ASPP MobileNetV3 (segmentation only)", "params_m": _params(segmenter),
                     "ms": _median_ms(lambda x: run_segmentation_baseline(segmenter, x), images)})
    rows.append({"model": "SSDlite + LR-ASPP (the two baselines together)",
                 "params_m": rows[2]["params_m"] + rows[3]["params_m"], "ms": rows[2]["ms"] + rows[3]["ms"]})
    return rows, source


def main() -> None:
    console = Console()
    rows, source = camera_rows()
    table = Table(title=f"Camera perception latency per {SIZE[0]}x{SIZE[1]} frame, {THREADS} CPU threads, "
                        f"median of {RUNS} ({source})")
    for column in ("model", "parameters (M)", "ms / frame", "vs. MultiTaskNet torch"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['params_m']:.2f}", f"{r['ms']:.1f}", f"{r['ms'] / rows[0]['ms']:.2f}")
    console.print(table)
    console.print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"torch {torch.__version__}")
    from perception.bench_lidar import lidar_obstacle_bench
    console.print(lidar_obstacle_bench())


if __name__ == "__main__":
    main()
