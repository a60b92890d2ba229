"""Training-data throughput: perception frames decoded per second from recorded bags.

`make bench` runs it. It records one expert episode the way `drivestack collect` does
(full sensor suite, LZ4 chunks of 128 KiB), then reads every frame in random order
through a torch DataLoader with 2 workers, as training does: decoded only (image,
semantic image and labels from the bag index), and decoded plus augmentation. It also
reports the random-access rate of the same episode recorded with 1 MiB zstd chunks,
read in the same run, which is why collection uses small LZ4 chunks.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, RandomSampler

from models.augment import PerceptionAugment
from models.perception_data import PerceptionDataset
from ros_nodes.bag_observer import BagObserver
from ros_nodes.collect import CHUNK_SIZE_BYTES, COMPRESSION
from sim.builtin import BuiltinSimulator
from sim.episode import run_episode
from sim.expert import ExpertDriver
from sim.scenario import resolve_scenario

WORKERS = 2
BATCH = 32


def record_episode(work: Path) -> dict[str, Path]:
    """The default scenario (full sensors, a 150 m route) recorded in two bag layouts."""
    scenario = replace(resolve_scenario("default", sensors="full"), route_length_m=150.0)
    sim = BuiltinSimulator()
    bags = {"lz4, 128 KiB chunks (collect)": (work / "lz4", COMPRESSION, CHUNK_SIZE_BYTES),
            "zstd, 1 MiB chunks": (work / "zstd", "zstd", 1 << 20)}
    observers = [BagObserver(path, scenario, sim.dt_s, compression=c, chunk_size_bytes=size)
                 for path, c, size in bags.values()]
    run_episode(sim, scenario, lambda m, r, s: ExpertDriver(m, r, s.vehicle, s.dt_s), observers=observers)
    sim.close()
    return {label: path for label, (path, _, _) in bags.items()}


def as_tensors(frame) -> tuple:
    semantic = torch.from_numpy(frame.semantic) if frame.semantic is not None else None
    return (torch.from_numpy(frame.image).permute(2, 0, 1), semantic, torch.from_numpy(frame.boxes_px),
            torch.from_numpy(frame.box_classes))


def collate(samples: list[tuple]) -> tuple:
    """Batched in the worker, as training's collate does: a few large shared-memory
    tensors per batch travel to the trainer. Per-frame box tensors would each be a
    shared-memory segment and a file descriptor to pass: measured here, that made the
    main process spend ~1 ms per frame receiving, slower than decoding."""
    images, semantics, boxes, classes = zip(*samples)
    counts = torch.tensor([len(b) for b in boxes])
    return torch.stack(images), torch.stack(semantics), torch.cat(boxes), torch.cat(classes), counts


def loader_rate(dataset: PerceptionDataset, workers: int = WORKERS, epochs: int = 2) -> float:
    """Frames per second through a shuffling DataLoader (first epoch excluded: it warms
    the workers and the page cache)."""
    loader = DataLoader(dataset, batch_size=BATCH, sampler=RandomSampler(dataset), num_workers=workers,
                        collate_fn=collate, persistent_workers=workers > 0)
    rate = 0.0
    for epoch in range(epochs):
        started, frames = time.perf_counter(), 0
        for images, *_ in loader:
            frames += len(images)
        rate = frames / (time.perf_counter() - started)
    return rate


def main() -> list[dict]:
    console = Console()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="drivestack-data-bench-") as tmp:
        bags = record_episode(Path(tmp))
        for label, path in bags.items():
            dataset = PerceptionDataset([path], transform=as_tensors)
            size_mib = sum(f.stat().st_size for f in path.iterdir() if f.name.endswith(".mcap")) / 2**20
            rows.append({"bag": label, "augment": False, "frames": len(dataset),
                         "mib_per_1000_frames": 1000 * size_mib / len(dataset), "frames_per_s": loader_rate(dataset)})
            if label.startswith("lz4"):
                augmented = PerceptionDataset([path], augment=PerceptionAugment(), transform=as_tensors)
                rows.append({**rows[-1], "augment": True, "frames_per_s": loader_rate(augmented)})
    table = Table(title=f"Perception frames from bags: DataLoader, {WORKERS} workers, batch {BATCH}, random order")
    for column in ("bag", "augmentation", "frames", "MiB / 1000 frames", "frames/s"):
        table.add_column(column, justify="left" if column == "bag" else "right")
    for r in rows:
        table.add_row(r["bag"], "yes" if r["augment"] else "no", str(r["frames"]), f"{r['mib_per_1000_frames']:.0f}",
                      f"{r['frames_per_s']:.0f}")
    console.print(table)
    console.print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"torch {torch.__version__}, numpy {np.__version__}")
    return rows


if __name__ == "__main__":
    main()
