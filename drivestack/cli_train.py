"""`drivestack train ...` and `drivestack eval ...`: thin entry points over the engine
(`models.engine`) and the evaluations."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

train_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train the project's models on recorded bags.")
export_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Export trained models.")
eval_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evaluate trained models.")


def _fail(message: str) -> None:
    from drivestack.cli import _fail as fail
    fail(message)


def _errors() -> tuple[type[Exception], ...]:
    from models.engine import TrainingError
    from ros_nodes.bag.errors import BagError
    return TrainingError, BagError


@train_app.command("perception")
def train_perception(
    data: Path = typer.Option(..., help="Collection directory (drivestack collect --out): trains on DATA/train."),
    out: Path = typer.Option(Path("out/train/perception"), help="Checkpoints, history.json and TensorBoard logs."),
    epochs: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(16, min=1),
    lr: float = typer.Option(2e-3, min=0.0),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(2, min=0, help="Data loader worker processes."),
    seed: int = typer.Option(0, min=0),
    stride: int = typer.Option(2, min=1, help="Keep every n-th frame of each bag (20 Hz frames are near copies)."),
    max_steps_per_epoch: int = typer.Option(0, min=0, help="Cap the steps of an epoch (0: the whole set)."),
    resume: Optional[Path] = typer.Option(None, help="Go on from a checkpoint (OUT/last.pt)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train without colour jitter, blur and crops."),
    model: str = typer.Option("multitask", help="multitask (detection + segmentation + lanes), or a torchvision "
                                                "baseline to compare with: ssdlite (detection), lraspp (segmentation)."),
) -> None:
    """Train the multi-task perception net (detection, segmentation, lanes) or a baseline.
    Under `torchrun --nproc_per_node N` it trains with DistributedDataParallel."""
    from models.engine import TrainArgs, train
    from perception.baseline_task import BASELINES, BaselineTask
    from perception.train_task import PerceptionTask
    if model not in ("multitask", *BASELINES):
        _fail(f"unknown model {model!r} (multitask, {', '.join(BASELINES)})")
    args = TrainArgs(out=out, epochs=epochs, batch_size=batch_size, lr=lr, device=device, workers=workers, seed=seed,
                     resume=resume, max_steps_per_epoch=max_steps_per_epoch,
                     extra={"data": str(data), "stride": stride, "augment": not no_augment, "model": model,
                            "command": "drivestack " + " ".join(sys.argv[1:])})
    try:
        task = (PerceptionTask(data, stride=stride, augment=not no_augment, seed=seed) if model == "multitask" else
                BaselineTask(data, model, stride=stride, augment=not no_augment))
        last = train(task, args)
    except _errors() as exc:
        _fail(str(exc))
    if last:
        Console().print(f"epoch {last['epoch']}: train loss {last['train_loss']['total']:.4f}"
                        + (f", validation score {last['val']['score']:.3f}" if "val" in last else "")
                        + f"; checkpoints in {out}")


@eval_app.command("perception")
def eval_perception(
    weights: Path = typer.Option(..., help="Shipped weights (models/weights/*.pt) or a training checkpoint."),
    data: Path = typer.Option(..., help="A collection (evaluates DATA/test, the held-out town and weather), or bags."),
    out: Path = typer.Option(Path("out/eval/perception.json"), help="Where to write the metrics as JSON."),
    device: str = typer.Option("auto"),
    stride: int = typer.Option(5, min=1, help="Keep every n-th frame of each bag."),
    workers: int = typer.Option(2, min=0),
    ship: Optional[Path] = typer.Option(None, help="Also export the weights there with a manifest holding these "
                                                   "metrics (e.g. models/weights/perception_multitask.pt)."),
    onnx: Optional[Path] = typer.Option(None, help="Run this exported model with ONNX Runtime (CPU) instead of "
                                                   "torch (--weights still names the labels' net config)."),
) -> None:
    """Detection mAP@0.5, semantic mIoU, lane F1 (CULane) and latency per frame, of the
    multi-task net or a baseline (whichever the weights hold)."""
    import torch

    from models.engine import resolve_device
    from models.weights import export_weights
    from perception.evaluate import latency_ms
    try:
        device_ = resolve_device(device)
        loaded = _load_perception_model(weights, device_, onnx)
        root = data / "test" if (data / "test").is_dir() else data
        metrics, dataset = _evaluate_perception(loaded, root, stride, workers)
        torch.set_num_threads(2)  # the latency goal is stated for 2 CPU cores
        sample = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))])
        metrics["latency_cpu_2_threads" if loaded.device.type == "cpu" else f"latency_{loaded.device.type}"] = \
            latency_ms(loaded.predictor, sample)
    except _errors() as exc:
        _fail(str(exc))
    metrics.update(weights=str(weights), data=str(root), device=str(loaded.device), model=loaded.kind,
                   runtime="onnxruntime" if onnx is not None else "torch")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    Console().print(_metrics_table(metrics))
    Console().print(f"metrics: {out}")
    if ship is not None:
        from drivestack.provenance import git_commit
        shipped = export_weights(weights, ship, {"command": "drivestack " + " ".join(sys.argv[1:]),
                                                  "data": _collection_summary(data),
                                                  "held_out_metrics": metrics, "commit": git_commit()})
        Console().print(f"shipped {ship} ({shipped['bytes'] / 2**20:.1f} MiB, sha256 {shipped['sha256'][:16]}...)")


def _collection_summary(data: Path) -> dict:
    """What the weights were trained and evaluated on: the collection's commands and
    episodes (split, town, weather, seed, frames), enough to record it again."""
    summary: dict = {"path": str(data)}
    try:
        manifest = json.loads((data / "collection.json").read_text())
    except (OSError, ValueError):
        return summary
    summary["commands"] = manifest.get("commands") or [manifest.get("command")]
    summary["episodes"] = [{k: e.get(k) for k in ("bag", "split", "town", "weather", "seed", "frames")}
                           for e in manifest.get("episodes", [])]
    return summary


@dataclass
class _Loaded:
    kind: str  # multitask | ssdlite | lraspp
    predictor: object
    encoder: object  # frame -> (image, target, labels)
    collate: object
    device: object
    manifest: dict


def _load_perception_model(weights: Path, device, onnx: Optional[Path]) -> _Loaded:
    """The model the weights hold (multi-task net or a baseline), ready to evaluate."""
    import torch

    from models.perception_net import build_multitask
    from models.weights import WeightsError, load_weights
    from perception.baseline_task import TASK as BASELINE_TASK
    from perception.baseline_task import BaselineEncoder, BaselineTask, baseline_predictor, build_baseline
    from perception.evaluate import multitask_predictor
    from perception.train_task import FrameEncoder, collate_with_labels
    try:
        config, state, manifest = load_weights(weights, "perception")
        kind = "multitask"
    except WeightsError as exc:
        if f"a {BASELINE_TASK!r} model" not in str(exc):
            raise
        config, state, manifest = load_weights(weights, BASELINE_TASK)
        kind = config["kind"]
    model = build_multitask(config) if kind == "multitask" else build_baseline(config)
    model.load_state_dict(state)
    model.to(device).eval()
    if kind != "multitask":
        if onnx is not None:
            raise WeightsError("--onnx runs the multi-task net only")
        task = BaselineTask(Path("."), kind)
        return _Loaded(kind, baseline_predictor(model, kind, device), BaselineEncoder(kind, with_labels=True),
                       task.collate, device, manifest)
    if onnx is not None:
        from models.onnx_export import OnnxMultiTask
        runtime = OnnxMultiTask(onnx)
        if runtime.config != config:
            raise WeightsError(f"{onnx} was exported from a different net than {weights}")
        model, device = runtime, torch.device("cpu")
    return _Loaded(kind, multitask_predictor(model, device), FrameEncoder(config, with_labels=True),
                   collate_with_labels, device, manifest)


def _evaluate_perception(loaded: _Loaded, root: Path, stride: int, workers: int) -> tuple[dict, object]:
    from torch.utils.data import DataLoader

    from models.perception_data import PerceptionDataset
    from perception.evaluate import evaluate
    dataset = PerceptionDataset([root], stride=stride, transform=loaded.encoder)
    loader = DataLoader(dataset, batch_size=16, num_workers=workers, collate_fn=loaded.collate)
    metrics = evaluate(loaded.predictor, loader, dataset.image_size)
    metrics["bags"] = len(dataset.bags)
    return metrics, dataset


def _metrics_table(metrics: dict) -> Table:
    table = Table(title=f"{metrics['model']} on {metrics['data']} ({metrics['frames']} frames)")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.3f}"
    if metrics["model"] in ("multitask", "ssdlite"):
        table.add_row("detection mAP@0.5 (vehicle, pedestrian)", fmt(metrics["map_50_vehicle_pedestrian"]))
        table.add_row("detection mAP@0.5 (all classes)", fmt(metrics["map_50"]))
        for name, ap in metrics["ap_50"].items():
            table.add_row(f"  AP@0.5 {name} ({metrics['num_gt'][name]} objects)", fmt(ap))
    table.add_row("semantic mIoU", fmt(metrics.get("miou")))
    table.add_row("lane F1 (CULane)", fmt(metrics.get("lane_f1")))
    for key, value in metrics.items():
        if key.startswith("latency"):
            table.add_row(f"latency per frame, median ({key[8:]})", f"{value['median_ms']:.1f} ms")
    return table


@export_app.command("perception")
def export_perception(
    weights: Path = typer.Option(..., help="Shipped weights or a training checkpoint."),
    out: Path = typer.Option(Path("out/perception.onnx"), help="The .onnx file (its .json beside it)."),
    width: int = typer.Option(320, min=32),
    height: int = typer.Option(160, min=32),
    check: bool = typer.Option(True, help="Run both runtimes on one image and compare the outputs."),
) -> None:
    """Export the multi-task net to ONNX, for ONNX Runtime (`drivestack eval perception --onnx`)."""
    import torch

    from models.onnx_export import OUTPUT_NAMES, OnnxMultiTask, export_onnx
    from models.perception_net import build_multitask
    from models.weights import load_weights
    try:
        config, state, _ = load_weights(weights, "perception")
        model = build_multitask(config)
        model.load_state_dict(state)
        export_onnx(model.eval(), out, (width, height))
    except (ValueError, *_errors()) as exc:
        _fail(str(exc))
    Console().print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    if check:
        images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            reference = model(images)
        ours = OnnxMultiTask(out)(images)
        worst = max(float((reference[n] - ours[n]).abs().max()) for n in OUTPUT_NAMES)
        Console().print(f"ONNX Runtime vs torch: largest output difference {worst:.2e}")


@train_app.command("policy")
def train_policy(
    data: list[Path] = typer.Option(..., help="Collection directory (drivestack collect --out): trains on "
                                              "DATA/train; repeat to train on several (e.g. DAgger's)."),
    out: Path = typer.Option(Path("out/train/policy"), help="Checkpoints, history.json and TensorBoard logs."),
    epochs: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(5e-4, min=0.0),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(2, min=0, help="Data loader worker processes."),
    seed: int = typer.Option(0, min=0),
    stride: int = typer.Option(2, min=1, help="Keep every n-th frame of each bag (20 Hz frames are near copies)."),
    backbone: Optional[str] = typer.Option(None, help="perception (the perception net's backbone, the default), "
                                                      "resnet18 or resnet34."),
    init_weights: Optional[Path] = typer.Option(None, help="Start from a trained policy (weights or checkpoint; "
                                                           "its net), e.g. to fine-tune it on new data."),
    init_from_perception: Optional[bool] = typer.Option(
        None, "--init-from-perception/--no-init-from-perception",
        help="Start the backbone from the shipped perception weights (default: on for the perception backbone)."),
    max_steps_per_epoch: int = typer.Option(0, min=0, help="Cap the steps of an epoch (0: the whole set)."),
    resume: Optional[Path] = typer.Option(None, help="Go on from a checkpoint (OUT/last.pt)."),
    no_balance: bool = typer.Option(False, "--no-balance", help="Take frames as recorded (no resampling of rare "
                                                                "commands, stops, starts and turns)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train without colour jitter."),
) -> None:
    """Train the behaviour-cloning policy (CILRS with a waypoint head) on the expert's labels.
    Under `torchrun --nproc_per_node N` it trains with DistributedDataParallel."""
    from models.engine import TrainArgs, train
    from models.policy_net import BACKBONES
    from models.policy_task import PolicyTask
    if backbone is not None and backbone not in BACKBONES:
        _fail(f"unknown backbone {backbone!r} ({', '.join(BACKBONES)})")
    args = TrainArgs(out=out, epochs=epochs, batch_size=batch_size, lr=lr, device=device, workers=workers, seed=seed,
                     resume=resume, max_steps_per_epoch=max_steps_per_epoch,
                     extra={"data": [str(d) for d in data], "stride": stride, "backbone": backbone,
                            "balance": not no_balance, "augment": not no_augment,
                            "init_weights": str(init_weights) if init_weights else None,
                            "init_from_perception": init_from_perception,
                            "command": "drivestack " + " ".join(sys.argv[1:])})
    try:
        task = PolicyTask(data, {"backbone": backbone} if backbone else None, stride=stride,
                          balance=not no_balance, augment=not no_augment, init_weights=init_weights,
                          init_from_perception=init_from_perception, seed=seed)
        last = train(task, args)
    except _errors() as exc:
        _fail(str(exc))
    if last:
        Console().print(f"epoch {last['epoch']}: train loss {last['train_loss']['total']:.4f}"
                        + (f", validation steer/throttle/brake MAE {last['val']['steer_mae']:.3f}/"
                           f"{last['val']['throttle_mae']:.3f}/{last['val']['brake_mae']:.3f}" if "val" in last else "")
                        + f"; checkpoints in {out}")
        Console().print("training samples per bin (command/motion/steering, after balancing): "
                        + ", ".join(f"{name} {count}" for name, count in task.bin_counts.items()), highlight=False)


@eval_app.command("policy")
def eval_policy(
    weights: Path = typer.Option(..., help="Shipped weights (models/weights/*.pt) or a training checkpoint."),
    data: Path = typer.Option(..., help="A collection (evaluates DATA/test, the held-out town and weather), or bags."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics there as JSON."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N (the car runs the policy frame by frame)."),
    stride: int = typer.Option(5, min=1, help="Keep every n-th frame of each bag."),
    ship: Optional[Path] = typer.Option(None, help="Also export the weights there with a manifest holding these "
                                                   "metrics (e.g. models/weights/policy_cilrs.pt)."),
    closed_loop: Optional[Path] = typer.Option(None, help="With --ship: an eval_drive.json (drivestack eval drive) "
                                                          "whose closed-loop scores go into the manifest too."),
    dagger_report: Optional[Path] = typer.Option(None, "--dagger", help="With --ship: the dagger.json of the DAgger "
                                                                        "run that made the weights (its command, "
                                                                        "data and curve go into the manifest)."),
) -> None:
    """Replay bags through the driving policy, frame by frame, and compare its steer, throttle
    and brake with the expert's recorded labels: mean absolute errors, overall and per
    route command."""
    if (closed_loop is not None or dagger_report is not None) and ship is None:
        _fail("--closed-loop and --dagger are for --ship (they go into the shipped manifest)")
    closed_loop_scores = _closed_loop_scores(closed_loop) if closed_loop is not None else None
    dagger = None
    if dagger_report is not None:
        try:
            dagger = json.loads(dagger_report.read_text())
            dagger["iterations"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _fail(f"--dagger {dagger_report}: not a dagger.json report ({exc})")
    from models.driving_policy import DrivingPolicy
    from models.engine import resolve_device
    from models.policy_data import PolicyDataset
    from models.policy_task import evaluate_policy
    root = data / "test" if (data / "test").is_dir() else data
    try:
        policy = DrivingPolicy.from_weights(weights, resolve_device(device))
        config = policy.model.config()
        dataset = PolicyDataset([root], stride=stride, balance=False, num_waypoints=config["num_waypoints"],
                                waypoint_dt_s=config["waypoint_dt_s"])
        metrics = evaluate_policy(policy, dataset)
    except _errors() as exc:
        _fail(str(exc))
    metrics.update(weights=str(weights), data=str(root), device=str(policy.device))
    Console().print(_policy_table(metrics))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(metrics, indent=2))
        Console().print(f"metrics: {json_out}")
    if ship is not None:
        from drivestack.provenance import git_commit
        from models.weights import export_weights
        manifest = {"command": "drivestack " + " ".join(sys.argv[1:]), "data": _collection_summary(data),
                    "held_out_offline_metrics": metrics, "commit": git_commit()}
        if closed_loop_scores is not None:
            manifest["closed_loop"] = closed_loop_scores
        if dagger is not None:
            manifest["dagger"] = dagger
        shipped = export_weights(weights, ship, manifest)
        Console().print(f"shipped {ship} ({shipped['bytes'] / 2**20:.1f} MiB, sha256 {shipped['sha256'][:16]}...)")


def _closed_loop_scores(path: Path) -> dict:
    """Each agent's global score and route ends from an `eval drive` report."""
    try:
        report = json.loads(path.read_text())
        agents = {name: {"global": payload["global"],
                         "route_ends": [r["status"] for r in payload["routes"]]}
                  for name, payload in report["agents"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(f"--closed-loop {path}: not an eval_drive.json report ({exc})")
    return {"command": report.get("command", ""), "scenarios": report.get("scenarios", []), "agents": agents}


def _policy_table(metrics: dict) -> Table:
    table = Table(title="policy vs expert: mean absolute error",
                  caption=f"{metrics['data']}: {metrics['frames']} frames of {metrics['bags']} bag(s)")
    for column in ("command", "frames", "steer", "throttle", "brake"):
        table.add_column(column, justify="left" if column == "command" else "right")

    def row(name: str, m: dict) -> None:
        table.add_row(name, str(m["frames"]), *(f"{m[k]:.3f}" for k in ("steer_mae", "throttle_mae", "brake_mae")))
    for name, m in metrics["per_command"].items():
        row(name, m)
    table.add_section()
    row("all", metrics)
    return table


from drivestack.cli_eval_drive import eval_drive  # noqa: E402
eval_app.command("drive")(eval_drive)
