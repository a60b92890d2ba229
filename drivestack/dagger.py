"""DAgger (Ross, Gordon and Bagnell 2011) for the behaviour-cloning policy.

Iteration i: the current policy drives N new training-split episodes, mixed with the
expert at rate beta_i = beta ** i (Ross's schedule: beta_i -> 0), while the expert
labels every frame (``ros_nodes.collect.Driver``); the new bags join the aggregate
(the initial demonstrations and every earlier iteration's bags); the policy is trained
further on the aggregate, starting from the current weights; then the new policy is
scored closed loop on an evaluation suite (the held-out town by default), so the DS
per iteration is the policy's own, not the mixture's. (The validation figures are not
comparable across iterations: each iteration's validation episodes join the set, and
they hold the states the policy got itself into.)

Everything lands in ``OUT``: ``iter_<i>/`` (the bags and ``collection.json``),
``iter_<i>/train/`` (checkpoints, history, TensorBoard), ``iter_<i>/eval/`` and
``dagger.json``, the curve. A finished step is not redone: the same command resumes an
interrupted run (collection skips complete bags, training skips a finished run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from models.engine import TrainArgs, TrainingError
from ros_nodes.collect import Driver, bag_name, collect, load_manifest

REPORT = "dagger.json"
DAGGER_SEED = 50_000  # new episodes' seeds start here, away from collections' default 0..


@dataclass
class DaggerConfig:
    data: Sequence[Path]  # the initial demonstrations (collection directories)
    weights: Path  # the policy of iteration 0
    out: Path
    iterations: int
    episodes: int
    workers: int = 2
    beta: float = 0.5
    train: TrainArgs = field(default_factory=lambda: TrainArgs(out=Path("unused"), epochs=2))
    task_options: dict = field(default_factory=dict)  # PolicyTask keyword arguments (stride, balance, ...)
    eval_suite: str | None = "holdout"
    eval_workers: int = 2
    sensors: str = "front_rgb"
    scenario: str | None = None  # drive this scenario (name or YAML) with new seeds instead of the train split
    command: str = ""

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.episodes < 1:
            raise TrainingError("DAgger needs at least one iteration of at least one episode")
        if not 0.0 <= self.beta <= 1.0:
            raise TrainingError(f"--beta {self.beta}: a probability in [0, 1]")
        if not Path(self.weights).is_file():
            raise TrainingError(f"{self.weights}: no such weights file (train a first policy: drivestack train "
                                "policy)")


Log = Callable[[str], None]


def run_dagger(config: DaggerConfig, log: Log = print) -> dict:
    """Run (or resume) the iterations; returns the report also written to OUT/dagger.json."""
    from models.policy_task import PolicyTask
    from sim.collection import collection_scenarios
    from sim.scenario import load_scenario
    from sim.sensors.suite import load_suite

    config.out.mkdir(parents=True, exist_ok=True)
    report = {"command": config.command, "data": [str(d) for d in config.data], "beta": config.beta,
              "episodes_per_iteration": config.episodes, "iterations": []}
    weights = Path(config.weights)
    if config.eval_suite:
        report["iterations"].append({"iteration": 0, "weights": str(weights),
                                     "eval": _evaluate(config, weights, config.out / "iter_0" / "eval", log)})
        _save(config.out, report)
    aggregate = list(config.data)
    suite = load_suite(config.sensors)
    for i in range(1, config.iterations + 1):
        folder = config.out / f"iter_{i}"
        beta_i = config.beta ** i
        log(f"DAgger iteration {i}/{config.iterations}: the policy drives {config.episodes} episodes "
            f"(beta {beta_i:.3f}), the expert labels them")
        first_seed = DAGGER_SEED + (i - 1) * config.episodes
        if config.scenario:
            base = replace(load_scenario(config.scenario), sensors=suite)
            scenarios = [base.with_seed(first_seed + k) for k in range(config.episodes)]
        else:
            scenarios = collection_scenarios("train", config.episodes, suite, first_seed)
        collected = collect(scenarios, folder, workers=config.workers, command=config.command,
                            driver=Driver(policy_weights=str(weights), beta=beta_i))
        if collected.interrupted:
            raise KeyboardInterrupt
        # From the manifest: a resumed run finds its episodes recorded, not driven now.
        manifest = load_manifest(folder)
        records = [manifest[bag_name(s)] for s in scenarios if bag_name(s) in manifest]
        driven = [r for r in records if not r.error]
        aggregate.append(folder)
        train_out = folder / "train"
        if not _finished(train_out, config.train.epochs):
            log(f"iteration {i}: training on {len(aggregate)} collections from {weights}")
            task = PolicyTask(aggregate, init_weights=weights, **config.task_options)
            from models.engine import train
            extra = {"data": [str(d) for d in aggregate], "init_weights": str(weights), "dagger_iteration": i,
                     "command": config.command, **config.task_options}
            train(task, replace(config.train, out=train_out, resume=None, extra=extra))
        weights = _best(train_out)
        row = {"iteration": i, "beta": beta_i, "weights": str(weights),
               "collected": {"episodes": len(records), "failed": len(records) - len(driven),
                             "frames": sum(r.frames for r in records),
                             "driving_score_mean": _mean([r.driving_score for r in driven]),
                             "route_completion_pct_mean": _mean([r.route_completion_pct for r in driven])},
               "validation": _last_validation(train_out)}
        if config.eval_suite:
            row["eval"] = _evaluate(config, weights, folder / "eval", log)
        report["iterations"].append(row)
        _save(config.out, report)
    return report


def _evaluate(config: DaggerConfig, weights: Path, out: Path, log: Log) -> dict:
    """The policy alone, closed loop on the evaluation suite: DS, RC and how routes ended."""
    from sim.evaluation import NamedAgents, evaluate
    from sim.scenario import suite

    done = out / "eval_drive.json"
    if done.exists():
        report = json.loads(done.read_text())
    else:
        log(f"scoring {weights} closed loop on the {config.eval_suite} suite")
        report = evaluate(["policy"], suite(config.eval_suite), episodes=1, workers=config.eval_workers, out=out,
                          builder=NamedAgents(policy_weights=weights), png=True, command=config.command)
    score = report["agents"]["policy"]["global"]
    statuses: dict[str, int] = {}
    for route in report["agents"]["policy"]["routes"]:
        statuses[route["status"]] = statuses.get(route["status"], 0) + 1
    return {"suite": config.eval_suite, "driving_score": score["driving_score"],
            "route_completion_pct": score["route_completion_pct"], "statuses": statuses}


def _finished(train_out: Path, epochs: int) -> bool:
    try:
        history = json.loads((train_out / "history.json").read_text())
    except (OSError, ValueError):
        return False
    return len(history) >= epochs and (train_out / "best.pt").is_file()


def _best(train_out: Path) -> Path:
    best = train_out / "best.pt"
    if not best.is_file():
        raise TrainingError(f"{train_out}: training wrote no checkpoint")
    return best


def _last_validation(train_out: Path) -> dict:
    try:
        return json.loads((train_out / "history.json").read_text())[-1].get("val", {})
    except (OSError, ValueError, IndexError):
        return {}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _save(out: Path, report: dict) -> None:
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out / REPORT)
