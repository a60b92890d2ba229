"""`drivestack eval drive`: agents side by side on the benchmark routes, closed loop."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def eval_drive(
    agent: Optional[list[str]] = typer.Option(None, "--agent", help="Who drives: expert, modular, policy, "
                                                                    "policy+safety (repeat the option to compare; "
                                                                    "default: all of them)."),
    suite: Optional[str] = typer.Option(None, help="benchmark (default: training towns and the held-out town), "
                                                   "train, holdout, or one scenario name."),
    scenario: Optional[list[str]] = typer.Option(None, "--scenario", help="Scenario name or YAML file instead of a "
                                                                          "suite (repeatable)."),
    episodes: int = typer.Option(1, min=1, help="Episodes per scenario and agent; episode k uses seed S + k."),
    seed: Optional[int] = typer.Option(None, min=0, help="Seed S (default: each scenario's own)."),
    workers: int = typer.Option(0, min=0, help="Episodes driven at once, one process each (0: one per core)."),
    out: Path = typer.Option(Path("out/eval/drive"), help="Directory for eval_drive.json and the bird's-eye PNGs "
                                                          "(OUT/AGENT/)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout instead of the tables."),
    perception_weights: Optional[Path] = typer.Option(None, help="The modular agent's perception weights (default: "
                                                                 "the shipped models/weights/perception_multitask.pt)."),
    policy_weights: Optional[Path] = typer.Option(None, help="The policy agents' weights (default: the shipped "
                                                             "models/weights/policy_cilrs.pt)."),
    device: str = typer.Option("cpu", help="Where the agents' CNNs run: cpu, cuda or cuda:N."),
    png: bool = typer.Option(True, help="Write a bird's-eye PNG per episode."),
) -> None:
    """Agents side by side, closed loop: driving score, route completion, penalty, infractions per km."""
    from drivestack.agents import BUILTIN_AGENT_NAMES as AGENT_NAMES  # evaluation runs the built-in simulator
    from drivestack.cli import _fail, _user_errors
    from sim.evaluation import EvaluationError, NamedAgents, agents_table, evaluate, scenarios_table
    from sim.scenario import load_scenario, suite as scenario_suite

    agents = list(dict.fromkeys(agent or AGENT_NAMES))
    unknown = [name for name in agents if name not in AGENT_NAMES]
    if unknown:
        _fail(f"unknown agent {unknown[0]!r} (known: {', '.join(AGENT_NAMES)})")
    if perception_weights is not None:
        if not {"modular", "policy+safety"} & set(agents):
            _fail("--perception-weights is for the agents with perception (--agent modular or policy+safety)")
        if not perception_weights.is_file():
            _fail(f"--perception-weights {perception_weights}: no such file")
    if policy_weights is not None:
        if not {"policy", "policy+safety"} & set(agents):
            _fail("--policy-weights is for the policy agents (--agent policy or policy+safety)")
        if not policy_weights.is_file():
            _fail(f"--policy-weights {policy_weights}: no such file")
    if suite is not None and scenario:
        _fail("give --suite or --scenario, not both")
    try:
        chosen = ([load_scenario(name) for name in scenario] if scenario else scenario_suite(suite or "benchmark"))
        if seed is not None:
            chosen = [s.with_seed(seed) for s in chosen]
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot write results to {out}: {exc.strerror or exc}")
    except _user_errors() as exc:
        _fail(str(exc))
    workers = workers or os.cpu_count() or 1
    console = Console(stderr=True)
    # Started once the agents are built, so an agent that cannot be leaves one line.
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console)
    tasks: dict[str, int] = {}

    def on_start(jobs) -> None:
        tasks["all"] = progress.add_task(f"episodes ({min(workers, len(jobs))} at once)", total=len(jobs), note="")
        progress.start()

    def bar(key: str) -> int:
        if key not in tasks:
            tasks[key] = progress.add_task(f"  {key}", total=100, note="")
        return tasks[key]

    def on_result(name: str, result) -> None:
        error = result.extra.get("error")
        note = f"[red]{result.status.value}: {error}[/]" if error else \
            f"DS {result.driving_score:5.1f}, {result.status.value}"
        progress.update(bar(f"{name}/{result.scenario}_seed{result.seed}"), completed=100, note=note)
        progress.update(tasks["all"], advance=1)

    try:
        report = evaluate(agents, chosen, episodes=episodes, workers=workers, out=out,
                          builder=NamedAgents(perception_weights, device, policy_weights), png=png,
                          command="drivestack " + " ".join(sys.argv[1:]), on_start=on_start, on_result=on_result,
                          on_progress=lambda key, pct: progress.update(bar(key), completed=pct))
    except (EvaluationError, *_user_errors()) as exc:
        _fail(str(exc))
    finally:
        progress.stop()
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        stdout = Console(width=None if sys.stdout.isatty() else 200)
        stdout.print(agents_table(report))
        stdout.print(scenarios_table(report))
    for name, payload in report["agents"].items():
        for route in payload["routes"]:
            if route["extra"].get("error"):
                console.print(f"[red]{route['status']}:[/] {name} on {route['scenario']} seed {route['seed']}: "
                              f"{route['extra']['error']}", highlight=False)
    console.print(f"report: {out / 'eval_drive.json'}" + (f", bird's-eye PNGs in {out}/AGENT/" if png else ""))
    if report["interrupted"]:
        console.print("interrupted: the report holds the episodes that finished")
        raise typer.Exit(130)
