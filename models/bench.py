"""Training-data throughput: perception frames decoded per second from recorded bags.

`make bench` runs it. It records one expert episode the way `drivestack collect` does
(full sensor suite, LZ4 chunks of 32 KiB) and, in the same run, with 128 KiB LZ4 and
1 MiB zstd chunks; then reads every frame in random order through a torch DataLoader
with 2 workers, as training does: decoded only (image, semantic image and labels from
the bag index), and decoded plus augmentation. Batches reach the main process through
reusable shared buffers (`models.batch_slots`, as training does); one row shows torch's
default hand-over for comparison.
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
from models.batch_slots import SlotCollate, slot_batches
from models.perception_data import PerceptionDataset
from ros_nodes.bag_observer import BagObserver
from ros_nodes.collect import CHUNK_SIZE_BYTES, COMPRESSION
from sim.builtin import BuiltinSimulator
from sim.episode import run_episode
from sim.expert import ExpertDriver
from sim.scenario import resolve_scenario

WORKERS = 2
BATCH = 32
COLLECT_LAYOUT = "lz4, 32 KiB chunks (collect)"


def record_episode(work: Path) -> dict[str, Path]:
    """The default scenario (full sensors, a 150 m route) recorded in three bag layouts."""
    scenario = replace(resolve_scenario("default", sensors="full"), route_length_m=150.0)
    sim = BuiltinSimulator()
    bags = {COLLECT_LAYOUT: (work / "lz4_32k", COMPRESSION, CHUNK_SIZE_BYTES),
            "lz4, 128 KiB chunks": (work / "lz4_128k", "lz4", 128 << 10),
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
    """Batched in the worker, as training's collate does: a few tensors per batch travel
    to the trainer. Per-frame box tensors would each be a shared segment and a file
    descriptor to pass (measured: ~1 ms per frame in the main process under load)."""
    images, semantics, boxes, classes = zip(*samples)
    counts = torch.tensor([len(b) for b in boxes])
    return torch.stack(images), torch.stack(semantics), torch.cat(boxes), torch.cat(classes), counts


def loader_rate(dataset: PerceptionDataset, workers: int = WORKERS, slots: bool = True, epochs: int = 2) -> float:
    """Frames per second through a shuffling DataLoader (first epoch excluded: it warms
    the workers and the page cache)."""
    loader = DataLoader(dataset, batch_size=BATCH, sampler=RandomSampler(dataset), num_workers=workers,
                        collate_fn=SlotCollate(collate, workers) if slots else collate,
                        persistent_workers=workers > 0)
    rate = 0.0
    for _ in range(epochs):
        started, frames = time.perf_counter(), 0
        for images, *_ in slot_batches(loader):
            frames += len(images)
        rate = frames / (time.perf_counter() - started)
    return rate


def in_process_rate(dataset: PerceptionDataset, frames: int = 2000) -> float:
    """One process decoding frames in random order, no loader."""
    order = np.random.default_rng(0).permutation(len(dataset))[:frames]
    for i in order:  # warm the page cache
        dataset[int(i)]
    started = time.perf_counter()
    for i in order:
        dataset[int(i)]
    return len(order) / (time.perf_counter() - started)


def main() -> list[dict]:
    console = Console()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="drivestack-data-bench-") as tmp:
        bags = record_episode(Path(tmp))
        for label, path in bags.items():
            dataset = PerceptionDataset([path], transform=as_tensors)
            size_mib = sum(f.stat().st_size for f in path.iterdir() if f.name.endswith(".mcap")) / 2**20
            row = {"bag": label, "frames": len(dataset), "mib_per_1000_frames": 1000 * size_mib / len(dataset),
                   "one_process": in_process_rate(dataset)}
            rows.append({**row, "hand_over": "reused buffers", "augment": False, "frames_per_s": loader_rate(dataset)})
            if label == COLLECT_LAYOUT:
                rows.append({**row, "hand_over": "torch default", "augment": False,
                             "frames_per_s": loader_rate(dataset, slots=False)})
                augmented = PerceptionDataset([path], augment=PerceptionAugment(), transform=as_tensors)
                rows.append({**row, "hand_over": "reused buffers", "augment": True,
                             "frames_per_s": loader_rate(augmented)})
    table = Table(title=f"Perception frames from bags: DataLoader, {WORKERS} workers, batch {BATCH}, random order")
    for column in ("bag", "hand-over", "augmentation", "frames", "MiB / 1000 frames", "frames/s, 1 process",
                   "frames/s, DataLoader"):
        table.add_column(column, justify="left" if column in ("bag", "hand-over") else "right")
    for r in rows:
        table.add_row(r["bag"], r["hand_over"], "yes" if r["augment"] else "no", str(r["frames"]),
                      f"{r['mib_per_1000_frames']:.0f}", f"{r['one_process']:.0f}", f"{r['frames_per_s']:.0f}")
    console.print(table)
    console.print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"torch {torch.__version__}, numpy {np.__version__}")
    return rows


if __name__ == "__main__":
    main()
