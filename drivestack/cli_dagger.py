"""`drivestack dagger`: the policy drives, the expert labels, the policy retrains."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def dagger(
    data: list[Path] = typer.Option(..., "--data", help="The initial demonstrations: collection directories "
                                                        "(drivestack collect --out), repeatable."),
    weights: Path = typer.Option(Path("models/weights/policy_cilrs.pt"), help="The policy of iteration 0."),
    iterations: int = typer.Option(..., min=1, help="DAgger iterations K."),
    episodes: int = typer.Option(..., min=1, help="Episodes the policy drives per iteration N."),
    out: Path = typer.Option(Path("out/dagger"), help="Bags, checkpoints and dagger.json (the DS per iteration)."),
    beta: float = typer.Option(0.5, min=0.0, max=1.0, help="Iteration i executes the expert's control with "
                                                           "chance beta**i per step (0: the policy alone)."),
    epochs: int = typer.Option(2, min=1, help="Training epochs per iteration (from the current weights)."),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(3e-4, min=0.0, help="Fine-tuning learning rate."),
    stride: int = typer.Option(2, min=1, help="Keep every n-th frame of each bag."),
    max_steps_per_epoch: int = typer.Option(0, min=0, help="Cap the steps of an epoch (0: the whole set)."),
    device: str = typer.Option("auto", help="Training device: auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(0, min=0, help="Episodes driven at once and data loader workers (0: one per core)."),
    eval_suite: str = typer.Option("holdout", help="Suite (or scenario) the policy is scored on after each "
                                                   "iteration; 'none' to skip."),
    scenario: Optional[str] = typer.Option(None, help="Drive this scenario with new seeds instead of the training "
                                                      "split's towns and weathers."),
    seed: int = typer.Option(0, min=0),
) -> None:
    """DAgger: K iterations of driving N episodes with the policy while the expert labels
    every frame, aggregating the data and training the policy further; the driving
    score of every iteration's policy goes to OUT/dagger.json."""
    import os

    from drivestack.cli import _fail, _user_errors
    from drivestack.dagger import DaggerConfig, run_dagger
    from models.engine import TrainArgs, TrainingError
    from ros_nodes.bag.errors import BagError

    workers = workers or os.cpu_count() or 1
    console = Console(stderr=True)
    try:
        config = DaggerConfig(
            data=data, weights=weights, out=out, iterations=iterations, episodes=episodes, workers=workers, beta=beta,
            train=TrainArgs(out=out, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                            workers=min(workers, 2), seed=seed, max_steps_per_epoch=max_steps_per_epoch),
            task_options={"stride": stride, "seed": seed}, eval_suite=None if eval_suite == "none" else eval_suite,
            eval_workers=workers, scenario=scenario, command="drivestack " + " ".join(sys.argv[1:]))
        report = run_dagger(config, log=console.print)
    except (TrainingError, BagError, *_user_errors()) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to go on where it stopped")
        raise typer.Exit(130)
    Console().print(dagger_table(report))
    console.print(f"report: {out / 'dagger.json'}")


def dagger_table(report: dict) -> Table:
    table = Table(title="DAgger: the policy per iteration")
    for column in ("iteration", "beta", "episodes driven", "their DS", "val steer MAE", "eval DS", "eval RC %",
                   "route ends"):
        table.add_column(column, justify="right" if column != "route ends" else "left")
    for row in report["iterations"]:
        collected, val, ev = row.get("collected", {}), row.get("validation", {}), row.get("eval", {})
        table.add_row(str(row["iteration"]), _fmt(row.get("beta"), ".3f"), str(collected.get("episodes", "")),
                      _fmt(collected.get("driving_score_mean"), ".1f"), _fmt(val.get("steer_mae"), ".3f"),
                      _fmt(ev.get("driving_score"), ".1f"), _fmt(ev.get("route_completion_pct"), ".1f"),
                      ", ".join(f"{k} {v}" for k, v in ev.get("statuses", {}).items()))
    return table


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)
