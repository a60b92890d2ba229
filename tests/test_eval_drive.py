"""`drivestack eval drive`: suites, parallel episodes equal to in-process ones, crashed
agents recorded, the table and JSON, and the errors users see."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drivestack.agents import agent_factory
from drivestack.cli import app
from drivestack.schema import EpisodeStatus
from sim.builtin import BuiltinSimulator
from sim.driving_score import results_from_json
from sim.episode import run_episode
from sim.evaluation import REPORT, EvaluationError, NamedAgents, evaluate
from sim.scenario import ScenarioError, benchmark_suite, load_scenario, suite

SHORT = Path(__file__).parent / "data" / "scenarios" / "eval_short.yaml"


def test_suites_split_the_benchmark_into_training_towns_and_the_held_out_town():
    benchmark = suite("benchmark")
    assert benchmark == benchmark_suite() and len(benchmark) == 9
    train, holdout = suite("train"), suite("holdout")
    assert sorted(s.name for s in train + holdout) == sorted(s.name for s in benchmark)
    assert {s.town for s in holdout} == {"holdout_town"} and not {s.town for s in train} & {"holdout_town"}
    assert [s.name for s in suite("default")] == ["default"]
    assert [s.name for s in suite(str(SHORT))] == ["eval_short"]
    with pytest.raises(ScenarioError, match="unknown suite 'everything' \\(suites: benchmark, train, holdout"):
        suite("everything")


def test_parallel_episodes_equal_in_process_runs(tmp_path):
    scenario = load_scenario(str(SHORT))
    report = evaluate(["expert"], [scenario], episodes=2, workers=2, out=tmp_path)
    assert json.loads((tmp_path / REPORT).read_text()) == report
    expert = report["agents"]["expert"]
    assert [r["seed"] for r in expert["routes"]] == [3, 4]
    assert expert["global"]["num_routes"] == 2 and expert["failed"] == 0
    assert expert["scenarios"]["eval_short"]["episodes"] == 2
    sim = BuiltinSimulator()  # in-process, one episode after the other
    for route in results_from_json(expert):
        reference = run_episode(sim, scenario.with_seed(route.seed), agent_factory("expert", scenario))
        assert route.trajectory_digest == reference.result.trajectory_digest
        assert route.driving_score == reference.result.driving_score
        assert route.extra["agent"] == "expert" and route.extra["error"] == ""
        assert (tmp_path / route.extra["birdseye"]).read_bytes()[:4] == b"\x89PNG"


class CrashOnSeed3(NamedAgents):
    """The expert, but on seed 3 its run_step raises after two seconds of driving."""

    def __call__(self, name, scenario):
        make_expert = super().__call__(name, scenario)
        if scenario.seed != 3:
            return make_expert

        def make_crashing(road_map, route, sim):
            expert = make_expert(road_map, route, sim)
            original = expert.run_step

            def run_step(obs):
                if obs.stamp_ns >= 2_000_000_000:
                    raise RuntimeError("planner exploded")
                return original(obs)
            expert.run_step = run_step
            return expert
        return make_crashing


def test_a_crashing_agent_is_recorded_and_the_other_episodes_go_on(tmp_path):
    report = evaluate(["expert"], [load_scenario(str(SHORT))], episodes=2, workers=1, out=tmp_path,
                      builder=CrashOnSeed3(), png=False)
    crashed, completed = report["agents"]["expert"]["routes"]
    assert crashed["status"] == EpisodeStatus.AGENT_CRASHED.value
    assert crashed["extra"]["error"] == "RuntimeError: planner exploded"
    assert "planner exploded" in crashed["extra"]["traceback"]
    assert 0.0 < crashed["route_completion_pct"] < 100.0  # scored on the route driven before the crash
    assert completed["status"] == EpisodeStatus.COMPLETED.value  # same worker, same simulator, next episode
    assert report["agents"]["expert"]["failed"] == 1


class Unbuildable(NamedAgents):
    def __call__(self, name, scenario):
        raise FileNotFoundError("no weights at nowhere.pt")


def test_an_agent_that_cannot_be_built_fails_before_any_episode(tmp_path):
    with pytest.raises(EvaluationError, match="agent 'expert' cannot be built: FileNotFoundError: no weights"):
        evaluate(["expert"], [load_scenario(str(SHORT))], episodes=1, workers=1, out=tmp_path / "o",
                 builder=Unbuildable())
    assert not (tmp_path / "o").exists()


def test_cli_prints_agents_side_by_side_and_writes_the_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "drivestack.cli", "eval", "drive", "--agent", "expert",
                           "--scenario", str(SHORT), "--seed", "7", "--workers", "1", "--no-png",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Closed-loop evaluation" in proc.stdout and "Driving score per scenario" in proc.stdout
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("│ expert")]
    assert "100.00" in row  # DS of the short route
    report = json.loads((tmp_path / REPORT).read_text())
    (route,) = report["agents"]["expert"]["routes"]
    assert (route["scenario"], route["seed"], route["status"]) == ("eval_short", 7, "Completed")
    assert "report:" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--suite", "everything"], "unknown suite 'everything'"),
    (["--agent", "pilot"], "unknown agent 'pilot' (known: expert, modular, policy, policy+safety)"),
    (["--agent", "modular", "--perception-weights", "{missing}"], "missing.pt: no such file"),
    (["--agent", "modular", "--perception-weights", "{garbage}", "--scenario", "{short}"],
     "agent 'modular' cannot be built"),
    (["--agent", "expert", "--perception-weights", "{garbage}"], "--perception-weights is for the agents with perception"),
    (["--suite", "holdout", "--scenario", "default"], "give --suite or --scenario, not both"),
])
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    args = [a.format(missing=tmp_path / "missing.pt", garbage=garbage, short=SHORT) for a in args]
    result = CliRunner().invoke(app, ["eval", "drive", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / REPORT).exists()
