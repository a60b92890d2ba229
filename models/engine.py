"""The training engine every model of the project trains with (perception, policy).

A ``Task`` says what is trained (model, datasets, batch handling, loss, validation);
``train`` does the rest the same way for all: seeded AdamW with a one-cycle schedule,
a rich progress bar, TensorBoard logs, AMP on CUDA, checkpoints that resume exactly
(model, optimizer, scheduler, scaler, epoch, history, arguments) and
DistributedDataParallel when started by ``torchrun`` (gloo on CPU, NCCL on CUDA). Only
rank 0 logs and writes.

``OUT/last.pt`` is written after every epoch, ``OUT/best.pt`` when the task's
validation score improves, ``OUT/history.json`` holds the learning curve.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from drivestack.provenance import git_commit
from models.batch_slots import SlotCollate, slot_batches

CHECKPOINT_FORMAT = 1


class TrainingError(ValueError):
    """A training run cannot start or go on; the message says why (user-facing)."""


@dataclass
class TrainArgs:
    out: Path
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 2
    seed: int = 0
    resume: Path | None = None
    amp: bool = True  # CUDA only; ignored on CPU
    max_steps_per_epoch: int = 0  # 0: the whole dataset
    log_every: int = 10
    warmup_fraction: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)  # the task's own arguments

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        data["resume"] = str(self.resume) if self.resume else None
        return data


class Task(Protocol):
    """What the engine needs from a training task."""

    name: str

    def build_model(self) -> nn.Module: ...

    def model_config(self) -> dict[str, Any]: ...

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        """(train, validation); raise TrainingError if there is nothing to learn from."""

    def collate(self, batch: list) -> Any: ...

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward the batch and return (total loss, named parts)."""

    def validate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        """Validation metrics; the key ``score`` (higher is better) picks the best checkpoint."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"--device {name}: no CUDA device here (use auto or cpu)")
    return device


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), resolve_device(device_name)
    info = _Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a crash while saving leaves the previous checkpoint intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise TrainingError(f"no checkpoint at {path}") from None
    except Exception as exc:  # torch raises several types for damaged files
        raise TrainingError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise TrainingError(f"{path} is not a drivestack training checkpoint")
    return state


def _lr_lambda(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))  # cosine to zero
    return factor


def train(task: Task, args: TrainArgs) -> dict[str, Any]:
    """Train ``task`` as ``args`` say; returns the final history entry (rank 0)."""
    info, device = _init_distributed(args.device)
    try:
        return _train(task, args, info, device)
    finally:
        if info.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(task: Task, args: TrainArgs, info: _Dist, device: torch.device) -> dict[str, Any]:
    seed_everything(args.seed + info.rank)
    commit = git_commit()  # of the code that trains (a resumed run keeps its latest)
    resume = load_checkpoint(args.resume, "cpu") if args.resume else None
    if resume is not None:
        _check_resumable(resume, task, args)
    train_set, val_set = task.datasets()
    if len(train_set) == 0:
        raise TrainingError("the training set is empty")
    model = task.build_model().to(device)
    if resume is not None:
        model.load_state_dict(resume["model"])
    if info.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = (DistributedSampler(train_set, info.world, info.rank, shuffle=True, seed=args.seed) if info.world > 1
               else RandomSampler(train_set, generator=torch.Generator().manual_seed(args.seed)))
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        collate_fn=SlotCollate(task.collate, args.workers) if args.workers else task.collate,
                        drop_last=len(train_set) >= args.batch_size * info.world * 2,
                        persistent_workers=args.workers > 0, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader) if not args.max_steps_per_epoch else min(len(loader), args.max_steps_per_epoch)
    total_steps = steps_per_epoch * args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, max(1, int(args.warmup_fraction * total_steps))))
    use_amp = args.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, step, history, best = 0, 0, [], -math.inf
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume.get("scaler", {}))
        start_epoch, step = resume["epoch"] + 1, resume["step"]
        history, best = list(resume.get("history", [])), resume.get("best_score", -math.inf)
    val_loader = None
    if val_set is not None and len(val_set) and info.main:
        val_loader = DataLoader(val_set, batch_size=args.batch_size, sampler=SequentialSampler(val_set),
                                num_workers=args.workers, collate_fn=task.collate)
    writer = _writer(args.out) if info.main else None
    progress = _progress() if info.main else None
    try:
        if progress is not None:
            progress.start()
        for epoch in range(start_epoch, args.epochs):
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)
            model.train()
            task_id = progress.add_task(f"epoch {epoch + 1}/{args.epochs}", total=steps_per_epoch, loss=math.nan) \
                if progress is not None else None
            started, sums, count = time.perf_counter(), {}, 0
            for i, batch in enumerate(slot_batches(loader)):
                if i >= steps_per_epoch:
                    break
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss, parts = task.loss(model, batch, device)
                if not torch.isfinite(loss):
                    raise TrainingError(f"the loss became {float(loss)} at epoch {epoch + 1}, step {step} "
                                        f"(parts: {parts}); lower --lr or check the data")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                count += 1
                for k, v in {"total": float(loss.detach()), **parts}.items():
                    sums[k] = sums.get(k, 0.0) + v
                if writer is not None and step % args.log_every == 0:
                    writer.add_scalar("train/loss", float(loss.detach()), step)
                    for k, v in parts.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                if progress is not None:
                    progress.update(task_id, advance=1, loss=sums["total"] / count)
            entry = {"epoch": epoch + 1, "step": step, "train_s": round(time.perf_counter() - started, 1),
                     "train_loss": {k: v / max(count, 1) for k, v in sums.items()}}
            if info.main:
                if val_loader is not None:
                    model.eval()
                    with torch.no_grad():
                        entry["val"] = task.validate(_unwrap(model), val_loader, device)
                    for k, v in entry["val"].items():
                        if isinstance(v, (int, float)) and v is not None:
                            writer.add_scalar(f"val/{k}", v, step)
                history.append(entry)
                score = entry.get("val", {}).get("score", -entry["train_loss"]["total"])
                state = {"format": CHECKPOINT_FORMAT, "task": task.name, "model_config": task.model_config(),
                         "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                         "step": step, "args": args.to_json(), "history": history, "commit": commit,
                         "best_score": max(best, score)}
                save_checkpoint(args.out / "last.pt", state)
                if score > best:
                    best = score
                    save_checkpoint(args.out / "best.pt", state)
                (args.out / "history.json").write_text(json.dumps(history, indent=2))
                writer.flush()
            if info.world > 1:
                dist.barrier()
    finally:
        if progress is not None:
            progress.stop()
        if writer is not None:
            writer.close()
    return history[-1] if history else {}


def _check_resumable(state: dict[str, Any], task: Task, args: TrainArgs) -> None:
    if state.get("task") != task.name:
        raise TrainingError(f"{args.resume} is a {state.get('task')!r} checkpoint, not {task.name!r}")
    if state.get("model_config") != task.model_config():
        raise TrainingError(f"{args.resume} was trained with model {state.get('model_config')}, not "
                            f"{task.model_config()}")
    if state["epoch"] + 1 >= args.epochs:
        raise TrainingError(f"{args.resume} has finished epoch {state['epoch'] + 1} of {args.epochs}: "
                            "give more --epochs to go on")
    # More epochs than the first run: the cosine schedule stretches to the new length from
    # the saved step (LambdaLR's state is just the step count).


def _writer(out: Path):
    from torch.utils.tensorboard import SummaryWriter
    out.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(str(out / "tensorboard"))


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
