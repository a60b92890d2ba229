"""Closed-loop evaluation of agents side by side: every (agent, scenario, seed) episode
of a suite, in worker processes, scored by the CARLA Leaderboard 2.0 rules.

Workers are ``spawn``ed (panda3d and torch are not fork-safe once initialised); each
keeps one built-in simulator across its episodes and builds the agents itself, by
name, so only names and scenarios cross the process boundary. Results stream back as
episodes end. ``OUT/eval_drive.json`` holds, per agent, the global score, the score per
scenario and every episode (rewritten after each one, so an interrupted run keeps what
finished); ``OUT/AGENT/SCENARIO_seedS.png`` is each episode's bird's-eye view.

An agent that raises, while being built or in ``run_step``, ends its episode as the
leaderboard's "Agent crashed", scored on the route driven so far, with the error kept
in the result's ``extra``; the other episodes go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich.table import Table

from drivestack.schema import EpisodeResult, EpisodeStatus, InfractionKind
from sim.driving_score import _SHORT_NAMES, global_score, results_to_json
from sim.episode import Agent, AgentFactory, EpisodeRun, Referee
from sim.protocol import Simulator, SimulatorError
from sim.scenario import Scenario

log = logging.getLogger(__name__)

REPORT = "eval_drive.json"
# Infraction columns the comparison always shows (a zero is worth seeing side by side);
# the rarer kinds get a column only when some agent committed them.
ALWAYS_SHOWN = (InfractionKind.COLLISION_PEDESTRIAN, InfractionKind.COLLISION_VEHICLE, InfractionKind.RED_LIGHT,
                InfractionKind.OUTSIDE_ROUTE_LANES, InfractionKind.ROUTE_DEVIATION, InfractionKind.AGENT_BLOCKED,
                InfractionKind.ROUTE_TIMEOUT)
FAILED = (EpisodeStatus.AGENT_CRASHED, EpisodeStatus.SIMULATION_ERROR)


class EvaluationError(ValueError):
    """The evaluation cannot start (an agent cannot be built, names clash); user-facing."""


@dataclass(frozen=True)
class NamedAgents:
    """Builds the agents of ``drivestack.agents`` by name. Picklable: each worker
    process gets a copy and builds its agents there."""

    perception_weights: Path | None = None
    device: str = "cpu"
    policy_weights: Path | None = None

    def scenario(self, name: str, scenario: Scenario) -> Scenario:
        """The scenario with the sensors the agent drives from."""
        from drivestack.agents import scenario_for_agent
        return scenario_for_agent(name, scenario)

    def __call__(self, name: str, scenario: Scenario) -> AgentFactory:
        from drivestack.agents import agent_factory
        return agent_factory(name, scenario, perception_weights=self.perception_weights, device=self.device,
                             policy_weights=self.policy_weights)


@dataclass(frozen=True)
class EpisodeJob:
    agent: str
    scenario: Scenario  # with the agent's sensors and the episode's seed

    @property
    def key(self) -> str:
        return f"{self.agent}/{self.scenario.name}_seed{self.scenario.seed}"


def plan_episodes(agents: Sequence[str], scenarios: Sequence[Scenario], episodes: int,
                  builder: NamedAgents) -> list[EpisodeJob]:
    """Episode k of a scenario uses its seed + k; every agent drives the same episodes."""
    if not agents:
        raise EvaluationError("no agents to evaluate")
    if episodes < 1:
        raise EvaluationError(f"episodes={episodes}: give at least one episode per scenario")
    for names, what in ((agents, "agent"), ([s.name for s in scenarios], "scenario")):
        twice = sorted({n for n in names if list(names).count(n) > 1})
        if twice:
            raise EvaluationError(f"{what} {', '.join(twice)} given twice")
    jobs = []
    for scenario in scenarios:
        for k in range(episodes):
            for agent in agents:
                try:
                    adapted = builder.scenario(agent, scenario)
                except ValueError as exc:
                    raise EvaluationError(str(exc)) from None
                jobs.append(EpisodeJob(agent, adapted.with_seed(scenario.seed + k)))
    return jobs


# -- one episode -------------------------------------------------------------------

@dataclass(frozen=True)
class ScoredRun:
    run: EpisodeRun
    agent: Agent | None  # None when building it failed
    error: str = ""      # the agent's exception, or the simulator's
    traceback: str = ""  # the agent's, innermost frames


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _innermost_frames() -> str:
    """The traceback being handled, its last frames (where the agent failed)."""
    return traceback.format_exc(limit=-6)


def drive_scored(sim: Simulator, scenario: Scenario, make_agent: AgentFactory,
                 on_step: Callable[[float], None] | None = None) -> ScoredRun:
    """``sim.episode.run_episode`` for evaluations: the same lockstep loop and referee
    (hence the same trajectory), but an agent that raises ends its episode as
    AGENT_CRASHED instead of ending the caller. (``run_episode`` lets the exception
    through: there an agent's bug should stop the command and show its traceback.)"""
    obs = sim.reset(scenario)
    try:
        agent = make_agent(sim.road_map, sim.route, sim)
    except Exception as exc:
        log.exception("building the agent failed")
        return ScoredRun(Referee(sim, scenario, obs).finish(EpisodeStatus.AGENT_CRASHED), None, _describe(exc),
                         _innermost_frames())
    referee = Referee(sim, scenario, obs)
    status, error, frames = None, "", ""
    while not referee.done:
        try:
            control = agent.run_step(obs)
        except Exception as exc:
            log.exception("the agent crashed at t=%.2f s", obs.stamp_ns * 1e-9)
            status, error, frames = EpisodeStatus.AGENT_CRASHED, _describe(exc), _innermost_frames()
            break
        try:
            obs = sim.step(control)
        except SimulatorError as exc:
            log.error("simulator failed: %s", exc)
            status, error = EpisodeStatus.SIMULATION_ERROR, _describe(exc)
            break
        referee.update(obs)
        if on_step is not None:
            on_step(referee.route_completion_pct)
    return ScoredRun(referee.finish(status), agent, error, frames)


def unscored_result(job: EpisodeJob, error: str) -> EpisodeResult:
    """An episode that never drove (the simulator failed to set it up, the worker died):
    a simulation error with nothing completed, so it counts 0 in the agent's mean."""
    scenario = job.scenario
    return EpisodeResult(scenario=scenario.name, town=scenario.town, seed=scenario.seed,
                         status=EpisodeStatus.SIMULATION_ERROR, route_length_m=0.0, route_completion_pct=0.0,
                         infraction_penalty=1.0, driving_score=0.0, infractions=(), duration_s=0.0,
                         distance_driven_m=0.0, extra={"agent": job.agent, "error": error})


# -- worker side -------------------------------------------------------------------

_SIM: Simulator | None = None
_PROGRESS = None


def _worker_init(progress, single_thread: bool) -> None:
    global _PROGRESS
    _PROGRESS = progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    if single_thread:  # before torch is imported: the modular agent's CNN runs one core per episode
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")


def _run_job(job: EpisodeJob, builder: NamedAgents, out: str, png: bool) -> EpisodeResult:
    """Drive one episode in a worker process, on the worker's simulator."""
    global _SIM
    from sim.builtin import BuiltinSimulator
    if _SIM is None:
        _SIM = BuiltinSimulator()
    started = time.perf_counter()
    last = [-1.0]

    def on_step(pct: float) -> None:
        if pct - last[0] >= 1.0 or pct >= 100.0:
            last[0] = pct
            if _PROGRESS is not None:
                _PROGRESS.put((job.key, pct))

    def make_agent(road_map, route, sim):
        return builder(job.agent, job.scenario)(road_map, route, sim)

    try:
        scored = drive_scored(_SIM, job.scenario, make_agent, on_step)
    except Exception as exc:  # the simulator failed outside a step (setting up the route, a bug)
        log.exception("episode %s failed", job.key)
        with contextlib.suppress(Exception):  # it may be broken; the next episode gets a new one
            _SIM.close()
        _SIM = None
        return unscored_result(job, _describe(exc))
    extra: dict[str, Any] = {"agent": job.agent, "error": scored.error,
                             "wall_s": round(time.perf_counter() - started, 2)}
    if scored.agent is not None and callable(getattr(scored.agent, "summary", None)):
        try:
            extra["agent_summary"] = scored.agent.summary()
        except Exception as exc:  # the episode's score stands without it
            extra["agent_summary"] = {"error": _describe(exc)}
    if scored.traceback:
        extra["traceback"] = scored.traceback
    run = scored.run
    if png:
        from sim.birdseye import save_birdseye
        path = Path(out) / job.agent / f"{job.scenario.name}_seed{job.scenario.seed}.png"
        save_birdseye(path, run.road_map, run.route, run.trajectory, run.result)
        extra["birdseye"] = str(path.relative_to(out))
    return replace(run.result, extra={**run.result.extra, **extra})


# -- parent side -------------------------------------------------------------------

@dataclass
class Evaluation:
    """What has finished so far, per agent."""

    agents: Sequence[str]
    scenarios: Sequence[str]
    episodes: int
    command: str = ""
    results: dict[str, list[EpisodeResult]] = field(default_factory=dict)
    interrupted: bool = False
    wall_s: float = 0.0

    def add(self, agent: str, result: EpisodeResult) -> None:
        self.results.setdefault(agent, []).append(result)

    def report(self) -> dict:
        """Per agent: ``results_to_json`` (global score and every episode, as ``drivestack
        drive`` writes them) plus the score per scenario and the failed count."""
        order = {name: i for i, name in enumerate(self.scenarios)}
        agents = {}
        for agent in self.agents:
            results = sorted(self.results.get(agent, []), key=lambda r: (order.get(r.scenario, len(order)), r.seed))
            payload = results_to_json(results, global_score(results))
            payload["scenarios"] = {}
            for name in self.scenarios:
                subset = [r for r in results if r.scenario == name]
                if subset:
                    score = global_score(subset)
                    payload["scenarios"][name] = {"driving_score": score.driving_score,
                                                  "route_completion_pct": score.route_completion_pct,
                                                  "infraction_penalty": score.infraction_penalty,
                                                  "episodes": len(subset)}
            payload["failed"] = sum(r.status in FAILED for r in results)
            agents[agent] = payload
        return {"command": self.command, "agents": agents, "scenarios": list(self.scenarios),
                "episodes_per_scenario": self.episodes, "interrupted": self.interrupted,
                "wall_s": round(self.wall_s, 1)}


def _write_report(out: Path, evaluation: Evaluation) -> dict:
    report = evaluation.report()
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out / REPORT)
    return report


def _preflight(builder: NamedAgents, jobs: Sequence[EpisodeJob]) -> None:
    """Build each agent's factory once here, so missing weights or a broken agent fail
    before any episode starts rather than once per episode."""
    seen = set()
    for job in jobs:
        if job.agent in seen:
            continue
        seen.add(job.agent)
        try:
            builder(job.agent, job.scenario)
        except Exception as exc:
            raise EvaluationError(f"agent {job.agent!r} cannot be built: {_describe(exc)}") from exc


def evaluate(agents: Sequence[str], scenarios: Sequence[Scenario], *, episodes: int, workers: int, out: Path,
             builder: NamedAgents | None = None, png: bool = True, command: str = "",
             on_start: Callable[[Sequence[EpisodeJob]], None] | None = None,
             on_result: Callable[[str, EpisodeResult], None] | None = None,
             on_progress: Callable[[str, float], None] | None = None) -> dict:
    """Drive every agent on every scenario ``episodes`` times (seeds S, S+1, ...) in
    ``workers`` processes; return (and write to ``OUT/eval_drive.json``) the report.

    ``builder`` turns an agent name into its factory inside the workers (default: the
    agents of ``drivestack.agents``); it must be picklable. Callbacks run in this
    process: ``on_start(jobs)`` once the agents are built (nothing has failed yet),
    ``on_progress(episode_key, route_pct)``, ``on_result(agent, result)``.
    Ctrl-C stops the workers and returns what finished, with ``interrupted`` set.
    """
    builder = builder or NamedAgents()
    jobs = plan_episodes(agents, scenarios, episodes, builder)
    _preflight(builder, jobs)
    out.mkdir(parents=True, exist_ok=True)
    if on_start is not None:
        on_start(jobs)
    evaluation = Evaluation(list(agents), [s.name for s in scenarios], episodes, command)
    started = time.perf_counter()
    workers = max(1, min(workers, len(jobs)))
    ctx = get_context("spawn")
    progress = ctx.Queue()
    pending: dict[Future, EpisodeJob] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(progress, workers > 1)) as pool:
        try:
            for job in jobs:
                pending[pool.submit(_run_job, job, builder, str(out), png)] = job
            while pending:
                finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress, on_progress)
                for future in finished:
                    job = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # the worker process died (killed, out of memory)
                        result = unscored_result(job, f"worker died: {_describe(exc)}")
                    evaluation.add(job.agent, result)
                    evaluation.wall_s = time.perf_counter() - started
                    _write_report(out, evaluation)
                    if on_result is not None:
                        on_result(job.agent, result)
        except KeyboardInterrupt:
            evaluation.interrupted = True
            for future in pending:
                future.cancel()
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
    _drain(progress, None)
    evaluation.wall_s = time.perf_counter() - started
    return _write_report(out, evaluation)


def _drain(progress, on_progress: Callable[[str, float], None] | None) -> None:
    while True:
        try:
            key, pct = progress.get_nowait()
        except (queue.Empty, OSError, ValueError):
            return
        if on_progress is not None:
            on_progress(key, pct)


# -- tables ------------------------------------------------------------------------

def _shown_kinds(report: Mapping) -> list[InfractionKind]:
    counts = {kind: sum(a["global"]["infraction_counts"].get(kind.value, 0) for a in report["agents"].values())
              for kind in InfractionKind}
    return [kind for kind in InfractionKind if kind in ALWAYS_SHOWN or counts[kind] > 0]


def agents_table(report: Mapping) -> Table:
    """One row per agent: the global DS, RC and penalty, infractions per km driven."""
    kinds = _shown_kinds(report)
    table = Table(title="Closed-loop evaluation (CARLA Leaderboard 2.0 scores; infractions per km driven)")
    table.add_column("agent")
    for name in ("episodes", "failed", "DS", "RC %", "penalty", "km"):
        table.add_column(name, justify="right")
    for kind in kinds:
        table.add_column(f"{_SHORT_NAMES[kind]}/km", justify="right")
    for agent, payload in report["agents"].items():
        score = payload["global"]
        table.add_row(agent, str(score["num_routes"]), str(payload["failed"]), f"{score['driving_score']:.2f}",
                      f"{score['route_completion_pct']:.2f}", f"{score['infraction_penalty']:.3f}",
                      f"{score['km_driven']:.3f}",
                      *(f"{score['infractions_per_km'][kind.value]:.2f}" for kind in kinds))
    return table


def scenarios_table(report: Mapping) -> Table:
    """One row per scenario, one column per agent: mean DS (RC %) over its seeds."""
    episodes = report["episodes_per_scenario"]
    seeds = f", mean of {episodes} seeds" if episodes > 1 else ""
    table = Table(title=f"Driving score per scenario (route completion %{seeds})")
    table.add_column("scenario")
    table.add_column("town")
    for agent in report["agents"]:
        table.add_column(agent, justify="right")
    for name in report["scenarios"]:
        towns = {r["town"] for a in report["agents"].values() for r in a["routes"] if r["scenario"] == name}
        cells = []
        for payload in report["agents"].values():
            score = payload["scenarios"].get(name)
            cells.append("-" if score is None else
                         f"{score['driving_score']:.1f} ({score['route_completion_pct']:.0f})")
        table.add_row(name, ", ".join(sorted(towns)), *cells)
    return table
