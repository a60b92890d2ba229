"""`drivestack collect`: record expert episodes as bags for training, in parallel."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def collect(
    scenarios: str = typer.Option("train", help="'train' or 'test' (the held-out town and weather), or a "
                                                "scenario name / YAML file to repeat with seeds S, S+1, ..."),
    episodes: int = typer.Option(..., min=1, help="How many episodes (one bag each)."),
    out: Path = typer.Option(..., help="Collection directory: bags go to OUT/<split>/, the list to "
                                       "OUT/collection.json."),
    workers: int = typer.Option(0, min=0, help="Episodes driven at once (0: one per core)."),
    seed: int = typer.Option(0, min=0, help="Seed of the first episode; episode k uses seed + k."),
    sensors: str = typer.Option("full", help="Shipped sensor suite (sim/config/sensors) to record: full for "
                                             "perception, front_rgb for behaviour cloning."),
    agent: str = typer.Option("expert", help="Who drives: expert, or policy (DAgger: the policy of "
                                             "--policy-weights drives, the expert labels every frame)."),
    noise: bool = typer.Option(False, "--noise", help="CIL noise injection: short steering impulses and brake "
                                                      "taps perturb the executed control while the expert's "
                                                      "correction is recorded as the label."),
    policy_weights: Optional[Path] = typer.Option(None, help="With --agent policy: its weights (default: the "
                                                             "shipped models/weights/policy_cilrs.pt)."),
    beta: float = typer.Option(0.0, min=0.0, max=1.0, help="With --agent policy: chance per step that the "
                                                           "expert's control is executed instead (DAgger's beta)."),
) -> None:
    """Drive the expert (or a policy, for DAgger) and record one MCAP bag per episode."""
    from dataclasses import replace

    from drivestack.cli import _fail, _user_errors
    from ros_nodes.collect import Driver, collect as run_collection
    from sim.collection import SPLITS, collection_scenarios
    from sim.demonstration import NoiseParams
    from sim.scenario import load_scenario
    from sim.sensors.suite import SensorConfigError, load_suite

    console = Console(stderr=True)
    if agent not in ("expert", "policy"):
        _fail(f"--agent {agent}: collect with expert or policy")
    if noise and agent != "expert":
        _fail("--noise is for --agent expert (a policy makes its own mistakes)")
    if agent != "policy" and (policy_weights is not None or beta):
        _fail("--policy-weights and --beta are for --agent policy")
    if agent == "policy":
        from models.driving_policy import DEFAULT_POLICY_WEIGHTS
        policy_weights = policy_weights or DEFAULT_POLICY_WEIGHTS
        if not policy_weights.is_file():
            _fail(f"--policy-weights {policy_weights}: no such file")
    driver = Driver(noise=NoiseParams() if noise else None,
                    policy_weights=str(policy_weights) if agent == "policy" else None, beta=beta)
    try:
        suite = load_suite(sensors)
        if agent == "policy" and not any(c.name == "front" and "rgb" in c.kinds for c in suite.cameras):
            _fail(f"--agent policy drives from the front RGB camera: suite {sensors!r} has none (try front_rgb)")
        if scenarios in SPLITS:
            chosen = collection_scenarios(scenarios, episodes, suite, seed)
        else:
            base = replace(load_scenario(scenarios), sensors=suite)
            chosen = [base.with_seed(seed + k) for k in range(episodes)]
    except (SensorConfigError, *_user_errors()) as exc:
        _fail(str(exc))
    workers = workers or os.cpu_count() or 1
    command = "drivestack collect " + " ".join(sys.argv[2:])
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console) as progress:
        overall = progress.add_task(f"episodes ({workers} at once)", total=len(chosen), note="")
        tasks: dict[str, int] = {}

        def on_start(bag: str, label: str) -> None:
            tasks[bag] = progress.add_task(f"  {bag}", total=100, note=label, visible=False)

        def on_progress(bag: str, pct: float) -> None:
            progress.update(tasks[bag], completed=pct, visible=True)

        def on_done(record) -> None:
            note = (f"[red]{record.error}[/]" if record.error else
                    f"DS {record.driving_score:5.1f}, {record.frames} frames, {record.bytes / 2**20:.0f} MiB")
            progress.update(tasks[record.bag], completed=100, note=note)
            progress.update(overall, advance=1)

        try:
            summary = run_collection(chosen, out, workers=workers, command=command, driver=driver,
                                     on_start=on_start,
                                     on_progress=on_progress, on_done=on_done)
        except _user_errors() as exc:
            _fail(str(exc))
    frames = sum(r.frames for r in summary.done)
    console.print(f"{len(summary.done)} episodes recorded ({frames} frames), {len(summary.skipped)} already there, "
                  f"{len(summary.failed)} failed; list: {out / 'collection.json'}")
    for record in summary.failed:
        console.print(f"[red]failed:[/] {record.bag}: {record.error}")
    if summary.interrupted:
        console.print("interrupted: finished bags are complete; the episodes in progress were closed where they "
                      "stopped (run the same command again to record the rest)")
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(1)
